"""Figures of the instability study (``proxylab study instability``), one question each.

Numbers come from the study's loaders (:mod:`proxylab.studies.instability`) and
:mod:`proxylab.analysis.instability`; drawing from :mod:`proxylab.report.panels`.
"""

from __future__ import annotations

import pandas as pd

from proxylab.analysis import lr_curves as curves_of
from proxylab.analysis import optimal_lr
from proxylab.analysis.instability import early_warning, unstable_runs
from proxylab.report.panels import Panel, Series, draw_panels
from proxylab.studies.instability import (COORD, LR, _largest, _seed_mean, add_coord_check,
                                          bigram_baseline, load)
from proxylab.sweep.spec import SweepSpec

FIGURES = {
    "lr_curves.png": "How does the final loss depend on the LR, with and without each mitigation?",
    "max_logit.png": "Does the layer-0 max attention logit grow with LR and size, and does qk-LN stop it?",
    "norm_vs_cos.png": "Is the logit growth a growth of |q||k| or of the q-k cosine?",
    "logz.png": "Does log Z drift at high LR without z-loss, and does z-loss pin it?",
    "mup.png": "Does muP(simple) keep the optimal LR across width, and are activations width-independent (coord check)?",
    "kappa.png": "How does the loss respond to an imposed attention-logit scale, against the bigram baseline?",
    "eps.png": "What happens when gradients fall below AdamW's eps?",
    "early_warning.png": "Does the early max logit of small models predict the next size's unstable runs?",
}


def _lr_series(df: pd.DataFrame, arm: str, label, y: str = "final_val_loss", style="o-"):
    out = []
    for value, sub in df.groupby(arm):
        m = sub.groupby(LR)[y].mean()
        out.append(Series(f"{label(value)}", list(m.index), list(m.to_numpy()), style))
    return out


def draw(store, specs: list[SweepSpec], out_dir) -> dict:
    """Draw FIGURES; returns {file: {"question", "numbers"}} for the report's index."""
    by = {s.name.split("-")[1]: s for s in specs}
    notes: dict[str, dict] = {}
    qk, z = load(store, by["qk"]), load(store, by["zloss"])
    m = load(store, by["mup"], extra=COORD)
    qk["arm"] = qk["model.qk_norm"].map({True: "qk-LN", False: "no qk-LN"}).astype(str) \
        + " N=" + qk["N"].map(lambda n: f"{n / 1e3:.0f}k")
    loss_axes = dict(xlabel="peak LR", ylabel="final val loss (nats/byte)", xlog=True)

    panels = [Panel(title="qk-layernorm, per size", series=_lr_series(qk, "arm", str), **loss_axes)]
    zl = z.copy()
    zl["arm"] = "z-loss " + zl["train.z_loss"].map(lambda x: f"{x:g}") + (
        " wd " + zl["optim.weight_decay"].map(lambda x: f"{x:g}") if "optim.weight_decay" in zl else "")
    panels.append(Panel(title="z-loss (no weight decay unless stated)", series=_lr_series(zl, "arm", str),
                        **loss_axes))
    for name, arm, title in (("warmup", "schedule.warmup", "warmup share"),
                             ("wd", "optim.wd_mode", "weight decay mode"),
                             ("shape", None, "4x N by width or depth")):
        if name in by:
            d = load(store, by[name])
            if arm is None:
                d["shape"] = d["model.width"].astype(str) + "x" + d["model.depth"].astype(str)
                arm = "shape"
            panels.append(Panel(title=title, series=_lr_series(d, arm, lambda v: f"{arm.split('.')[-1]}={v}"),
                                **loss_axes))
    notes["lr_curves.png"] = draw_panels(out_dir / "lr_curves.png", panels, ncols=3)

    high = qk[qk[LR] >= 1e-2]
    size_series = []
    for qk_on, sub in high.groupby("model.qk_norm"):
        for lr, s2 in sub.groupby(LR):
            g = s2.groupby("N")["peak_logit"].mean()
            size_series.append(Series(f"{'qk-LN' if qk_on else 'no qk-LN'} LR {lr:g}",
                                      list(g.index), list(g.to_numpy()), "o-" if not qk_on else "s--"))
    notes["max_logit.png"] = draw_panels(out_dir / "max_logit.png", [
        Panel(title="peak layer-0 max logit vs LR", xlabel="peak LR", ylabel="max logit",
              xlog=True, ylog=True, series=_lr_series(qk, "arm", str, y="peak_logit")),
        Panel(title="peak layer-0 max logit vs size (LR >= 1e-2)", xlabel="N (non-embedding params)",
              ylabel="max logit", xlog=True, ylog=True, series=size_series)])

    off = _largest(qk[~qk["model.qk_norm"].astype(bool)])
    lrs_, late = _seed_mean(off, "late_logit")
    _, norm = _seed_mean(off, "qk_norm")
    _, cos = _seed_mean(off, "qk_cos")
    notes["norm_vs_cos.png"] = draw_panels(out_dir / "norm_vs_cos.png", [
        Panel(title="no qk-LN, largest size, last 20% of training", xlabel="peak LR",
              ylabel="logit scale", xlog=True, ylog=True,
              series=[Series("max logit", list(lrs_), list(late)),
                      Series("mean scale*|q||k|", list(lrs_), list(norm), "s--")]),
        Panel(title="mean q-k cosine", xlabel="peak LR", ylabel="cosine", xlog=True,
              series=[Series("mean cos(q_i, k_j)", list(lrs_), list(cos))])])

    metrics = store.metrics(sweep=by["zloss"].name, keys="logz_train")
    top = sorted(z[LR].unique())[-2:]
    series = []
    for _, run in z[z[LR].isin(top)].iterrows():
        if run.get("train.seed", 0) not in (0, None):
            continue
        tr = metrics[metrics["run_id"] == run["run_id"]].sort_values("step")
        wd = f" wd {run['optim.weight_decay']:g}" if "optim.weight_decay" in z else ""
        series.append(Series(f"LR {run[LR]:g} z {run['train.z_loss']:g}{wd}", list(tr["step"]),
                             list(tr["value"]), "-" if run["train.z_loss"] > 0 else "--"))
    notes["logz.png"] = draw_panels(out_dir / "logz.png", [Panel(
        title="mean log Z of the training batch (seed 0, two highest LRs)", xlabel="step",
        ylabel="mean log Z (nats)", series=series, hlines=[(0.0, "log Z = 0")])], ncols=1,
        panel_size=(7, 4))

    opt = optimal_lr(curves_of(m[["run_id", "status", "model.param", "model.width", LR,
                                  "final_val_loss", "init_loss", "diverged"]],
                               group_keys=["model.param", "model.width"]))
    cc = add_coord_check(m)
    notes["mup.png"] = draw_panels(out_dir / "mup.png", [
        Panel(title="loss-optimal LR vs width", xlabel="width", ylabel="optimal peak LR",
              xlog=True, ylog=True, series=[
                  Series(p, list(g["model.width"]), list(g["lr_opt"]))
                  for p, g in opt.groupby("model.param")]),
        Panel(title="coord check (step 10, LR 1e-2)", xlabel="width",
              ylabel="mean |activation|", xlog=True, ylog=True, series=[
                  Series(f"{r['model.param']} {r['layer'].split('/')[-1]}", r["widths"], r["values"],
                         "o-" if r["model.param"] == "sp" else "s--") for _, r in cc.iterrows()])])

    k = load(store, by["kappa"])
    kg = k.groupby("model.qk_kappa")[["final_val_loss", "late_logit"]].mean()
    notes["kappa.png"] = draw_panels(out_dir / "kappa.png", [
        Panel(title="imposed logit scale (kappa transplant)", xlabel="kappa",
              ylabel="final val loss (nats/byte)", xlog=True,
              series=[Series("GPT, LR 1e-2", list(kg.index), list(kg["final_val_loss"]))],
              hlines=[(bigram_baseline(by["kappa"]), "zero-layer bigram")]),
        Panel(title="realised layer-0 max logit", xlabel="kappa", ylabel="max logit",
              xlog=True, ylog=True, series=[Series("max logit", list(kg.index), list(kg["late_logit"]))])])

    e = load(store, by["eps"])
    e["variant"] = (e["optim.name"] + " eps " + e["optim.eps"].map(lambda x: f"{x:g}")
                    + " x" + e["train.loss_scale"].map(lambda x: f"{x:g}"))
    on = qk[qk["model.qk_norm"].astype(bool)].copy()
    on["size"] = "N=" + on["N"].map(lambda n: f"{n / 1e3:.0f}k")
    notes["eps.png"] = draw_panels(out_dir / "eps.png", [
        Panel(title="gradient RMS, block 0 MLP (qk-LN runs)", xlabel="peak LR", ylabel="grad RMS",
              xlog=True, ylog=True, series=_lr_series(on, "size", str, y="grad_rms"),
              hlines=[(1e-8, "AdamW eps 1e-8")]),
        Panel(title="gradient RMS as Adam sees it (loss-scaled runs: x1e-6)", xlabel="peak LR",
              ylabel="grad RMS", xlog=True, ylog=True,
              series=_lr_series(e, "variant", str, y="grad_rms"), hlines=[(1e-8, "AdamW eps 1e-8")]),
        Panel(title="unscaled update RMS, block 0 MLP", xlabel="peak LR", ylabel="update RMS",
              xlog=True, ylog=True, series=_lr_series(e, "variant", str, y="update_rms")),
        Panel(title="final loss", xlabel="peak LR", ylabel="final val loss (nats/byte)", xlog=True,
              series=_lr_series(e, "variant", str))], ncols=2)

    off = qk[~qk["model.qk_norm"].astype(bool)].copy()
    panels = []
    if off["N"].nunique() >= 3:
        off["unstable"] = unstable_runs(off, size_key="model.width", delta=0.1)
        t = early_warning(off, size_key="N")["table"]
        panels.append(Panel(
            title="largest size: predicted vs observed early max logit", diagonal=True,
            xlabel="observed log10 max logit (first probe)", ylabel="predicted log10 max logit",
            series=[Series("observed unstable", list(t[t.observed_unstable]["observed_log_score"]),
                           list(t[t.observed_unstable]["predicted_log_score"]), "rx"),
                    Series("observed stable", list(t[~t.observed_unstable]["observed_log_score"]),
                           list(t[~t.observed_unstable]["predicted_log_score"]), "go")]))
    panels.append(Panel(title="early max logit vs size (no qk-LN)", xlabel="N", ylabel="max logit at the first probe",
                        xlog=True, ylog=True, series=[
                            Series(f"LR {lr:g}", list(g.groupby("N")["early_logit"].mean().index),
                                   list(g.groupby("N")["early_logit"].mean().to_numpy()))
                            for lr, g in off.groupby(LR)]))
    notes["early_warning.png"] = draw_panels(out_dir / "early_warning.png", panels)
    return {f: {"question": FIGURES[f], "numbers": n} for f, n in notes.items()}
