"""BitNet b1.58 at small scale: 16-bit vs 1.58-bit (absmean, absmedian) at 1x and 2x width.

Ma et al. 2024 ("The Era of 1-bit LLMs", arXiv 2402.17764) train Transformers with ternary
weights {-1, 0, +1}·γ and 8-bit activations and match full precision at 3B parameters;
Nielsen & Schneider-Kamp 2024 ("BitNet b1.58 Reloaded", arXiv 2407.09527) ask what happens
at 100K-48M parameters. Four sweeps, every point once per seed:

- ``bitnet-lm``: the GPT proxy on the built-in byte-level corpus, variant (16-bit, absmean,
  absmedian) x width (1x, 2x) x peak LR, no weight decay;
- ``bitnet-wd``: the same proxy at 1x width, 16-bit and absmean, weight decay x peak LR (its
  wd = 0 runs are the bitnet-lm runs: same configs, same ids, trained once);
- ``bitnet-mlp`` / ``bitnet-cnn``: scikit-learn's 8x8 digits, variant x width x peak LR.

"16-bit" is this repository's full-precision float32 training (the papers' 16-bit baseline).
Every loss is the final validation loss on a fixed set (``train.eval_batches`` batches), every
accuracy the final accuracy on the whole held-out half of the digits; "best" is the best
seed-averaged grid point over the LR grid (Wortsman's cap for diverged runs). Intervals are
bootstraps over seeds (pairs kept: a draw picks seeds and every arm uses them).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from proxylab.analysis import final_metrics  # noqa: E402
from proxylab.analysis import quant as q  # noqa: E402
from proxylab.analysis.verdict import Claim, bootstrap_runs, decide, not_measured  # noqa: E402
from proxylab.sweep.spec import SweepSpec  # noqa: E402

NAME = "bitnet"
CLAIM = ("BitNet b1.58 at small scale: 1.58-bit needs 2x width to match 16-bit on a language "
         "model, matches it on small vision models, wants a higher LR and less weight decay")

FP = {"model.quant": "none"}
MEAN = {"model.quant": "bitnet158", "model.quant_scale": "absmean"}
MEDIAN = {"model.quant": "bitnet158", "model.quant_scale": "absmedian"}
VARIANTS = {"16-bit": FP, "1.58-bit absmean": MEAN, "1.58-bit absmedian": MEDIAN}
VARIANT_ZIP = {"model.quant": ["none", "bitnet158", "bitnet158"],
               "model.quant_scale": ["absmean", "absmean", "absmedian"]}
SEED = "train.seed"

# The claims, each an effect with a direction and a margin fixed before any run (1x / 2x are
# the sweep's two widths; "best" is over the LR grid; see the module docstring).
CLAIMS = {
    "1a": Claim(text="[1a] LM: 1.58-bit (absmean) at the same width is worse than 16-bit "
                     "(Nielsen & Schneider-Kamp 2024; the gap closes only at 3B in Ma et al. 2024)",
                effect="best val loss, 1.58-bit absmean minus 16-bit, both at 1x width",
                direction="greater", margin=0.0, unit="nats"),
    "1b": Claim(text="[1b] LM: 1.58-bit (absmean) at 2x hidden width reaches 16-bit at 1x, "
                     "within 0.02 nats (Nielsen & Schneider-Kamp 2024)",
                effect="best val loss, 1.58-bit absmean at 2x width minus 16-bit at 1x",
                direction="less", margin=0.02, unit="nats"),
    "2a": Claim(text="[2a] digits MLP: 1.58-bit (absmean) matches or beats 16-bit at the same "
                     "size, within 1 accuracy point (Nielsen & Schneider-Kamp 2024)",
                effect="best val accuracy, 1.58-bit absmean minus 16-bit, mean over widths",
                direction="greater", margin=-0.01, unit="accuracy"),
    "2b": Claim(text="[2b] digits CNN (BitLinear fc, fp convs): 1.58-bit (absmean) matches or "
                     "beats 16-bit at the same size, within 1 accuracy point "
                     "(Nielsen & Schneider-Kamp 2024)",
                effect="best val accuracy, 1.58-bit absmean minus 16-bit, mean over widths",
                direction="greater", margin=-0.01, unit="accuracy"),
    "3": Claim(text="[3] absmedian scaling beats absmean at these sizes (Nielsen & "
                    "Schneider-Kamp 2024; 'median >= mean mostly', arXiv 2411.05882)",
               effect="best LM val loss, absmean minus absmedian, mean over both widths",
               direction="greater", margin=0.0, unit="nats"),
    "4": Claim(text="[4] LM: the loss-optimal LR of 1.58-bit is higher than 16-bit's "
                    "(BitNet FAQ: 1.5e-3 vs 2.5e-4 at 700M)",
               effect="log10 lr_opt(1.58-bit absmean) - log10 lr_opt(16-bit), 1x width",
               direction="greater", margin=0.0, unit="decades"),
    "5": Claim(text="[5] Weight decay helps 1.58-bit less than 16-bit (BitNet FAQ: decay makes "
                    "ternary weights flip-flop, so it is switched off halfway)",
               effect="LM best-loss gain from the largest weight decay of the grid, "
                      "16-bit minus 1.58-bit absmean (1x width)",
               direction="greater", margin=0.0, unit="nats"),
    "6": Claim(text="[6] The ternary weights end up roughly balanced over {-1, 0, +1}, each "
                    "share within 1/3 +- 0.1 (Ma et al. 2024 / FAQ)",
               effect="max |share - 1/3| at the end of training, LM 1.58-bit runs at each "
                      "variant's best LR", direction="within", margin=0.1, unit="share"),
}
KEYS = ["model.quant", "model.quant_scale", "model.width", "optim.lr", "optim.weight_decay", SEED]

SIZES = {
    # LM widths (1x, 2x) and steps, the peak-LR grid (LM and digits), seeds, the weight decays
    # of the LR x wd sweep, digits widths and steps, validation batches of the LM
    "smoke": dict(lm_widths=[16, 32], lm_steps=20, lrs=[3e-3, 3e-2], seeds=None,
                  wds=[0.0, 1.0], mlp_widths=[16, 32], cnn_widths=[4, 8], img_steps=30,
                  eval_batches=2, threads=1),  # one thread: tests run it inline (--workers 1)
    "quick": dict(lm_widths=[32, 64], lm_steps=250, lrs=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                  seeds=[0, 1],
                  wds=[0.0, 0.1, 1.0], mlp_widths=[32, 64], cnn_widths=[8, 16], img_steps=300,
                  eval_batches=16),
    "full": dict(lm_widths=[64, 128], lm_steps=500,
                 lrs=[2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2],
                 seeds=[0, 1, 2], wds=[0.0, 0.1, 1.0], mlp_widths=[32, 64], cnn_widths=[8, 16],
                 img_steps=400, eval_batches=32),
}


def _name(kind: str, size: str) -> str:
    return f"{NAME}-{kind}" + ("" if size == "full" else f"-{size}")


def sweeps(size: str) -> list[SweepSpec]:
    s = SIZES[size]
    lm = {
        "task.name": "text", "task.seq_len": 64,
        "model.name": "gpt", "model.depth": 2, "model.heads": 4,
        "optim.name": "adamw", "optim.beta2": 0.95, "optim.weight_decay": 0.0,
        "schedule.name": "cosine", "schedule.warmup": 0.1,
        "train.batch_size": 16, "train.steps": s["lm_steps"],
        "train.eval_every": s["lm_steps"], "train.eval_batches": s["eval_batches"],
        "train.log_every": max(s["lm_steps"] // 10, 1),
        **({"train.threads": s["threads"]} if "threads" in s else {}),
    }
    img = {
        "task.name": "digits", "task.train_frac": 0.5,
        "model.depth": 2, "optim.name": "adamw", "optim.beta2": 0.95, "optim.weight_decay": 0.0,
        "schedule.name": "cosine", "schedule.warmup": 0.1,
        "train.batch_size": 64, "train.steps": s["img_steps"],
        "train.eval_every": s["img_steps"], "train.log_every": max(s["img_steps"] // 10, 1),
        **({"train.threads": s["threads"]} if "threads" in s else {}),
    }
    return [
        SweepSpec(name=_name("lm", size), base=lm, seeds=s["seeds"], zip=VARIANT_ZIP,
                  grid={"model.width": s["lm_widths"], "optim.lr": s["lrs"]},
                  description="GPT proxy: 16-bit vs 1.58-bit (absmean, absmedian) x width x LR"),
        SweepSpec(name=_name("wd", size), base={**lm, "model.width": s["lm_widths"][0]},
                  seeds=s["seeds"], zip={"model.quant": ["none", "bitnet158"]},
                  grid={"optim.weight_decay": s["wds"], "optim.lr": s["lrs"]},
                  description="GPT proxy at 1x width: weight decay x LR, 16-bit vs absmean"),
        SweepSpec(name=_name("mlp", size), base={**img, "model.name": "mlp"}, seeds=s["seeds"],
                  zip=VARIANT_ZIP, grid={"model.width": s["mlp_widths"], "optim.lr": s["lrs"]},
                  description="digits MLP: 16-bit vs 1.58-bit x width x LR"),
        SweepSpec(name=_name("cnn", size), base={**img, "model.name": "cnn"}, seeds=s["seeds"],
                  zip=VARIANT_ZIP, grid={"model.width": s["cnn_widths"], "optim.lr": s["lrs"]},
                  description="digits CNN: 16-bit vs 1.58-bit (fc layer) x width x LR"),
    ]


# ----------------------------------------------------------------------------------
# data


def _frame(store, spec: SweepSpec) -> pd.DataFrame:
    """final_metrics of a sweep with every KEYS column (constant ones too), and each run's
    last quant probe (frac_neg, frac_zero, frac_pos, gamma, flip_rate, act_err)."""
    runs = store.runs(sweep=spec.name)
    metrics = store.metrics(sweep=spec.name)
    fm = final_metrics(runs, metrics)
    for k in KEYS:
        if k not in fm.columns and k in runs.columns:
            fm[k] = runs[k].to_numpy()
    if SEED not in fm.columns or fm[SEED].isna().all():
        fm[SEED] = 0
    probes = q.last_probe(metrics)
    if len(probes):
        fm = fm.merge(probes.drop(columns=["step"]), on="run_id", how="left")
    return fm[fm["status"].isin(("done", "diverged"))].reset_index(drop=True)


def _frames(store, specs) -> dict[str, pd.DataFrame]:
    return {s.name.split("-")[1]: _frame(store, s) for s in specs}


def _widths(df: pd.DataFrame) -> list[int]:
    return sorted(int(w) for w in df["model.width"].unique())


def _per_seed_best(df: pd.DataFrame, variant: dict, metric: str) -> list[float]:
    sub = q.select(df, variant)
    return [q.best_score(s, metric) for _, s in sub.groupby(SEED)]


def _spread(df: pd.DataFrame, variant: dict, metric: str) -> dict:
    vals = _per_seed_best(df, variant, metric)
    return {"best": _r(q.best_score(q.select(df, variant), metric)),
            "per_seed_best": [_r(v) for v in vals],
            "seed_std": _r(float(np.std(vals, ddof=1))) if len(vals) > 1 else None}


def _r(x: float, nd: int = 4):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def _verdict(claim: Claim, df: pd.DataFrame, stat, evidence: dict, reason: str = "") -> dict:
    if not len(df):
        return not_measured(claim, "no finished runs")
    est, lo, hi, n = bootstrap_runs(df, stat, unit=SEED)
    return decide(claim, est, lo, hi, n=n, evidence={**evidence, "bootstrap_unit": SEED},
                  reason_extra=reason)


# ----------------------------------------------------------------------------------
# the verdicts


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    f = _frames(store, specs)
    lm, wd, mlp, cnn = f["lm"], f["wd"], f["mlp"], f["cnn"]
    if not len(lm):
        return [not_measured(c, "no finished runs in the LM sweep") for c in CLAIMS.values()]
    w1, w2 = _widths(lm)[0], _widths(lm)[-1]
    at = lambda v, w: {**v, "model.width": w}  # noqa: E731
    lm_ev = {f"{name} @ width {w}": _spread(lm, at(v, w), "loss")
             for w in (w1, w2) for name, v in VARIANTS.items()}
    out = []

    # 1a. same width: 1.58-bit is worse
    lm_ev["widths (1x, 2x)"] = [w1, w2]
    c = CLAIMS["1a"]
    out.append(_verdict(c, lm, lambda d: q.best_gap(d, at(MEAN, w1), at(FP, w1)), lm_ev))
    # 1b. 2x width reaches 16-bit at 1x
    c = CLAIMS["1b"]
    ev = {**lm_ev, "absmedian_2x_minus_fp_1x": _r(q.best_gap(lm, at(MEDIAN, w2), at(FP, w1)))}
    out.append(_verdict(c, lm, lambda d: q.best_gap(d, at(MEAN, w2), at(FP, w1)), ev))

    # 2. digits: 1.58-bit matches or beats 16-bit at the same size
    for tag, df in (("2a", mlp), ("2b", cnn)):
        ws = _widths(df) if len(df) else []
        c = CLAIMS[tag]
        pairs = [(at(MEAN, w), at(FP, w)) for w in ws]
        ev = {f"{name} @ width {w}": _spread(df, at(v, w), "acc")
              for w in ws for name, v in VARIANTS.items()}
        out.append(_verdict(c, df, lambda d, p=pairs: q.mean_best_gap(d, p, "acc"), ev))

    # 3. absmedian vs absmean
    c = CLAIMS["3"]
    pairs = [(at(MEAN, w), at(MEDIAN, w)) for w in (w1, w2)]
    ev = {"lm_gap_per_width": {str(w): _r(q.best_gap(lm, at(MEAN, w), at(MEDIAN, w)))
                               for w in (w1, w2)},
          "digits_acc_median_minus_mean": {
              name: {str(w): _r(q.best_gap(df, at(MEDIAN, w), at(MEAN, w), "acc"))
                     for w in _widths(df)} for name, df in (("mlp", mlp), ("cnn", cnn)) if len(df)}}
    out.append(_verdict(c, lm, lambda d: q.mean_best_gap(d, pairs), ev))

    # 4. the loss-optimal LR of 1.58-bit is higher
    c = CLAIMS["4"]
    ev = {f"lr_opt {name} @ width {w}": _r(10 ** q.log10_lr_opt(q.select(lm, at(v, w))), 6)
          for w in (w1, w2) for name, v in VARIANTS.items()}
    ev["shift_at_2x_decades"] = _r(q.lr_opt_shift(lm, at(MEAN, w2), at(FP, w2)))
    ev["lr_grid"] = sorted(float(x) for x in lm["optim.lr"].unique())
    out.append(_verdict(c, lm, lambda d: q.lr_opt_shift(d, at(MEAN, w1), at(FP, w1)), ev))

    # 5. weight decay helps 1.58-bit less than 16-bit
    out.append(_wd_verdict(wd))

    # 6. ternary weights end up roughly balanced
    out.append(_balance_verdict(lm, mlp, cnn))
    return out


def _wd_verdict(wd: pd.DataFrame) -> dict:
    wds = sorted(float(x) for x in wd["optim.weight_decay"].unique()) if len(wd) else []
    top = wds[-1] if wds else math.nan
    c = CLAIMS["5"]
    if len(wds) < 2:
        return not_measured(c, "the weight-decay sweep has fewer than two decay values")
    bit = {"model.quant": "bitnet158"}
    ev = {"wd_grid": wds, "wd compared": top}
    for name, v in (("16-bit", FP), ("1.58-bit absmean", bit)):
        t = q.wd_table(wd, v)
        ev[name] = {f"wd={r['optim.weight_decay']:g}": {
            "best_loss": _r(r["best_loss"]), "best_lr": _r(r["best_lr"], 6),
            "lr_sensitivity": _r(r["lr_sensitivity"])} for _, r in t.iterrows()}
        if t["best_loss"].notna().any():
            ev[f"{name} optimal wd"] = float(t.loc[t["best_loss"].idxmin(), "optim.weight_decay"])
        sens = dict(zip(t["optim.weight_decay"], t["lr_sensitivity"]))
        # robustness: how decay changes Wortsman's LR sensitivity (< 0: flatter LR curve)
        ev[f"{name} lr_sensitivity change wd={top:g} vs 0"] = _r(sens.get(top, math.nan)
                                                                  - sens.get(0.0, math.nan))
    if "flip_rate" in wd.columns:
        ev["final flip rate 1.58-bit by wd"] = {
            f"wd={w:g}": _r(q.select(wd, {**bit, "optim.weight_decay": w})["flip_rate"].mean(), 5)
            for w in wds}
    return _verdict(c, wd, lambda d: q.wd_benefit_gap(d, bit, FP, top), ev,
                    reason="robustness: compare lr_sensitivity per wd in the evidence")


def _balance_verdict(lm: pd.DataFrame, mlp: pd.DataFrame, cnn: pd.DataFrame) -> dict:
    c = CLAIMS["6"]
    if "frac_zero" not in lm.columns:
        return not_measured(c, "no quant probes stored")

    def at_best(d: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for _, sub in d[d["model.quant"] == "bitnet158"].groupby(["model.quant_scale", "model.width"]):
            lr = q.best_lr(sub)
            parts.append(sub[sub["optim.lr"] == lr])
        return pd.concat(parts) if parts else d.iloc[0:0]

    ev = {}
    for name, df in (("lm", lm), ("mlp", mlp), ("cnn", cnn)):
        if len(df) and "frac_zero" in df.columns:
            best = at_best(df)
            ev[f"{name} shares (-1, 0, +1)"] = [_r(v) for v in q.ternary_shares(best).values()]
            ev[f"{name} final flip rate"] = _r(best["flip_rate"].mean(), 5)
    return _verdict(c, lm, lambda d: q.ternary_imbalance(at_best(d)), ev)


# ----------------------------------------------------------------------------------
# figures

COLORS = {"16-bit": "C0", "1.58-bit absmean": "C3", "1.58-bit absmedian": "C2"}


def _lr_axis(ax, lrs) -> None:
    """Log LR axis ticked at the grid values only (matplotlib's minor labels collide)."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(lrs), [f"{x:g}" for x in sorted(lrs)], fontsize=7)
    ax.minorticks_off()


def _curve(df, variant, metric):
    sub = q.select(df, variant)
    s = q.run_scores(sub, metric)
    g = s.groupby(sub["optim.lr"].to_numpy())
    return g.mean().sort_index(), g.std(ddof=1).sort_index()


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    f = _frames(store, specs)
    out = {}
    # 1. LM loss vs LR: 16-bit and 1.58-bit at 1x and 2x width
    lm = f["lm"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    numbers = {}
    for name, v in VARIANTS.items():
        for w, ls in zip(_widths(lm), ("-", "--")):
            m, sd = _curve(lm, {**v, "model.width": w}, "loss")
            if len(m):
                ax.errorbar(m.index, m.values, yerr=sd.fillna(0).values, ls=ls, marker="o",
                            ms=3, color=COLORS[name], capsize=2, label=f"{name}, width {w}")
                numbers[f"{name} width {w}"] = {f"{k:g}": _r(x) for k, x in m.items()}
    _lr_axis(ax, lm["optim.lr"].unique())
    ax.set_xlabel("peak learning rate (AdamW)")
    ax.set_ylabel("final validation loss (nats / byte)")
    ax.set_title("Byte-level GPT proxy: 16-bit vs 1.58-bit (BitNet b1.58)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "lm_loss_vs_lr.png")
    plt.close(fig)
    out["lm_loss_vs_lr.png"] = {
        "question": "Is 1.58-bit worse at the same width, and does 2x width close the gap? "
                    "Where is each variant's best LR?",
        "detail": "Final validation loss against peak LR, seeds averaged (bars: seed std); "
                  "solid 1x width, dashed 2x.", "numbers": numbers}

    # 2. digits accuracy vs LR
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharey=True)
    numbers = {}
    for ax, kind in zip(axes, ("mlp", "cnn")):
        df = f[kind]
        for name, v in VARIANTS.items():
            for w, ls in zip(_widths(df) if len(df) else [], ("-", "--")):
                m, sd = _curve(df, {**v, "model.width": w}, "acc")
                if len(m):
                    ax.errorbar(m.index, 100 * m.values, yerr=100 * sd.fillna(0).values, ls=ls,
                                marker="o", ms=3, color=COLORS[name], capsize=2,
                                label=f"{name}, width {w}")
                    numbers[f"{kind} {name} width {w}"] = {f"{k:g}": _r(x) for k, x in m.items()}
        if len(df):
            _lr_axis(ax, df["optim.lr"].unique())
        ax.set_xlabel("peak learning rate (AdamW)")
        ax.set_title(f"8x8 digits, {kind.upper()}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("final validation accuracy (%)")
    fig.tight_layout()
    fig.savefig(out_dir / "digits_acc_vs_lr.png")
    plt.close(fig)
    out["digits_acc_vs_lr.png"] = {
        "question": "Does 1.58-bit match 16-bit on small vision models at the same size?",
        "detail": "Final accuracy on the 899 held-out digits against peak LR (bars: seed std).",
        "numbers": numbers}

    # 3. LR x weight-decay heatmaps
    wd = f["wd"]
    if len(wd) and wd["optim.weight_decay"].nunique() > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
        numbers = {}
        maps = {name: q.heatmap(q.select(wd, v), "optim.weight_decay", "optim.lr")
                for name, v in (("16-bit", FP), ("1.58-bit absmean", {"model.quant": "bitnet158"}))}
        lo = min(np.nanmin(h.values) for h in maps.values())
        hi = max(np.nanmax(h.values) for h in maps.values())
        for ax, (name, h) in zip(axes, maps.items()):
            im = ax.imshow(h.values, origin="lower", aspect="auto", cmap="viridis_r", vmin=lo, vmax=hi)
            ax.set_xticks(range(h.shape[1]), [f"{c:g}" for c in h.columns], fontsize=7)
            ax.set_yticks(range(h.shape[0]), [f"{r:g}" for r in h.index])
            for i in range(h.shape[0]):
                for j in range(h.shape[1]):
                    ax.text(j, i, f"{h.values[i, j]:.3f}", ha="center", va="center", fontsize=7,
                            color="w")
            ax.set_xlabel("peak learning rate")
            ax.set_ylabel("weight decay (decoupled)")
            ax.set_title(name)
            numbers[name] = {f"wd={r:g}": {f"{c:g}": _r(h.loc[r, c]) for c in h.columns} for r in h.index}
        fig.colorbar(im, ax=axes, label="final val loss (nats)")
        fig.savefig(out_dir / "lr_wd_heatmap.png", bbox_inches="tight")
        plt.close(fig)
        out["lr_wd_heatmap.png"] = {
            "question": "How do the LR x weight-decay landscapes of 16-bit and 1.58-bit differ?",
            "detail": "Final validation loss (seeds averaged) over peak LR and decoupled weight "
                      "decay, GPT proxy at 1x width.", "numbers": numbers}

    # 4. ternary shares and flip rate over training (LM, 1x width, each scale at its best LR)
    metrics = {s.name.split("-")[1]: s for s in specs}
    runs_lm = lm[lm["model.quant"] == "bitnet158"] if "model.quant" in lm.columns else lm.iloc[0:0]
    if len(runs_lm):
        m = store.metrics(sweep=metrics["lm"].name, keys=[f"quant/{k}" for k in
                                                          (*q.TERNARY, "flip_rate")])
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
        numbers = {}
        w1 = _widths(lm)[0]
        for scale, ls in (("absmean", "-"), ("absmedian", "--")):
            sub = q.select(runs_lm, {"model.quant_scale": scale, "model.width": w1})
            if not len(sub):
                continue
            lr = q.best_lr(sub)
            ids = set(sub[sub["optim.lr"] == lr]["run_id"])
            mm = m[m["run_id"].isin(ids)]
            for k, color in zip(q.TERNARY, ("C0", "C7", "C3")):
                h = mm[mm["key"] == f"quant/{k}"].groupby("step")["value"].mean()
                axes[0].plot(h.index, h.values, ls=ls, color=color, label=f"{k} ({scale})")
                numbers[f"{scale} {k}"] = _r(h.iloc[-1]) if len(h) else None
            h = mm[mm["key"] == "quant/flip_rate"].groupby("step")["value"].mean()
            axes[1].plot(h.index, h.values, ls=ls, color="k", label=f"{scale}, lr {lr:g}")
            numbers[f"{scale} final flip rate"] = _r(h.iloc[-1], 5) if len(h) else None
        axes[0].axhline(1 / 3, color="gray", lw=0.8, ls=":")
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("share of weights")
        axes[0].set_title(f"Ternary weight shares, LM width {w1}, best LR")
        axes[0].legend(fontsize=6, ncol=2)
        axes[1].set_yscale("log")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("flip rate per probe interval")
        axes[1].set_title("Flip rate (share changed since last probe)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "ternary_over_training.png")
        plt.close(fig)
        out["ternary_over_training.png"] = {
            "question": "Do the ternary weights end up balanced, and do they settle?",
            "detail": "Shares of weights at -1 / 0 / +1 (size-weighted over BitLinear layers) "
                      "and the flip rate, over training.", "numbers": numbers}
    return out
