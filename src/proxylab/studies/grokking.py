"""Grokking: memorization, the delayed jump to generalization, and what controls it.

Modular addition ``a + b mod p``. (1) Nanda et al. 2023's one-layer transformer (answer
position only, no LayerNorm) with and without weight decay: with decay, validation accuracy
reaches 99% long after training accuracy; without it, not within the budget. (2) The delay
law of Lyu et al. 2024: the generalization step grows with the init scale α and shrinks
with weight decay λ, roughly linear in ln(α)/(ηλ). (3) Nanda's progress measures from the
stored checkpoints: restricted loss falls before test loss, excluded loss rises during
circuit formation, and the embedding's Fourier norms concentrate on a few frequencies.
(4) Doshi et al. 2024's label corruption with their quadratic MLP: without decay the
corrupted labels are memorized beside a perfect rule (coexistence); strong decay gives
inversion (train accuracy ≈ 1 − ξ, the corrupted pairs answered by the rule); pruning the
low-IPR (non-periodic) neurons erases the memorized labels. (5) Minegishi et al. 2023:
lottery tickets — the generalized network's largest weights, rewound to their initial values
and trained alone — reach 99% validation in fewer steps. (6) Zhu et al. 2024: below a
critical train fraction the model memorizes without generalizing in the budget.

Every verdict uses the shared rule (``proxylab.analysis.verdict``): an effect stated in
advance with a margin and a bootstrap interval over seeds (or over grid points, claim 2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis.grokking import (corruption_phase, delay_law_fit, first_step_at, fourier_norms,
                                        grokking_steps, norm_summary)
from proxylab.analysis.grokking_checkpoints import progress_measures, pruned_accuracies
from proxylab.analysis.verdict import Claim, bootstrap, combine, decide, not_measured
from proxylab.report.panels import Panel, Series, draw_panels
from proxylab.sweep.spec import SweepSpec

NAME = "grokking"
CLAIM = ("Weight decay turns memorization into delayed generalization (grokking); the delay "
         "follows ln(α)/(ηλ); corruption gives coexistence or inversion (Nanda 2023, Lyu 2024, "
         "Doshi 2024)")
WD, ALPHA, FRAC, XI = "optim.weight_decay", "model.init_scale", "task.train_frac", "task.corrupt_frac"

# ----------------------------------------------------------------------------------
# sizes. full = Nanda's configuration (p 113, 30% train, d 128, AdamW 1e-3, wd 1);
# quick and smoke are smaller cousins that grok within their budgets on 2 CPU cores.

# stop: train.stop_at_val_acc. Nanda's runs grok at ~4,800 and ~9,500 steps (seeds 1 and 0,
# measured); a 10,000-step budget holds them, and stopping a run once it has generalized (and
# kept its last weights for the tickets and progress measures) keeps the full form in its hour.
# The no-decay controls never reach the goal and run the whole budget.
TF = {"smoke": dict(p=23, frac=0.5, width=32, lr=3e-3, wd=2.0, steps=400, every=20, ckpt=100, stop=0.0),
      "quick": dict(p=59, frac=0.5, width=64, lr=3e-3, wd=1.0, steps=2000, every=25, ckpt=100, stop=0.0),
      "full": dict(p=113, frac=0.3, width=128, lr=1e-3, wd=1.0, steps=10000, every=100, ckpt=250,
                   stop=0.999)}
SEEDS = {"smoke": [0, 1], "quick": [0, 1], "full": [0, 1]}
LOW_FRAC = {"smoke": 0.2, "quick": 0.2, "full": 0.15}
TICKET_SPARSITY = 0.4        # Minegishi et al.'s pruning rate
# claim 2 on the homogeneous quadratic MLP (Lyu et al.'s theory is for homogeneous nets;
# the transformer at α >= 2 starts with a huge loss and never memorizes: no kernel regime)
DELAY = {"smoke": dict(p=23, width=64, steps=300, every=10, alphas=[1.0, 4.0], wds=[1.0, 2.0]),
         "quick": dict(p=59, width=256, steps=1500, every=25, alphas=[1.0, 2.0, 4.0],
                       wds=[0.5, 1.0, 2.0]),
         "full": dict(p=59, width=256, steps=2500, every=25, alphas=[1.0, 2.0, 4.0, 8.0],
                      wds=[0.5, 1.0, 2.0])}
# Doshi et al.: quadratic MLP N=500, p=97, 50% train, AdamW 1e-2, MSE, 2k steps; xi = 0.2
CORRUPT = {"smoke": dict(p=23, width=64, steps=150, every=25, wd=5.0),
           "quick": dict(p=97, width=500, steps=600, every=25, wd=5.0),
           "full": dict(p=97, width=500, steps=2000, every=25, wd=5.0)}


def _tf_base(size: str) -> dict:
    c = TF[size]
    return {"task.name": "modular", "task.op": "+", "task.p": c["p"], "task.train_frac": c["frac"],
            "task.full_batch": True,
            "model.name": "answer_tf", "model.width": c["width"], "model.heads": 4, "model.mlp_ratio": 4,
            "optim.name": "adamw", "optim.lr": c["lr"], "optim.weight_decay": c["wd"],
            "optim.beta1": 0.9, "optim.beta2": 0.98, "optim.decay_embeddings": True,
            "schedule.name": "constant", "schedule.warmup": 10,
            "train.steps": c["steps"], "train.eval_every": c["every"], "train.log_every": c["every"],
            "train.grad_clip": 0.0, "train.stop_at_val_acc": c["stop"],
            # memorizing drives the validation loss far above its initial value: not a divergence
            "train.diverge_factor": 1e9}


def sweeps(size: str) -> list[SweepSpec]:
    sfx = "" if size == "full" else f"-{size}"
    tf, c = _tf_base(size), TF[size]
    cc = CORRUPT[size]
    mlp = {k: v for k, v in tf.items() if k not in ("model.heads", "model.mlp_ratio")}
    corrupt_base = {**mlp, "task.p": cc["p"], "task.train_frac": 0.5, "task.corrupt_frac": 0.2,
                    "model.name": "quad_mlp", "model.width": cc["width"], "optim.lr": 1e-2,
                    "train.loss": "mse", "train.stop_at_val_acc": 0.0,   # read at the end of the budget
                    "train.steps": cc["steps"], "train.eval_every": cc["every"],
                    "train.log_every": cc["every"], "train.checkpoint_every": cc["steps"]}
    d = DELAY[size]
    delay_base = {**mlp, "task.p": d["p"], "task.train_frac": 0.5, "model.name": "quad_mlp",
                  "model.width": d["width"], "optim.lr": 3e-3, "train.steps": d["steps"],
                  "train.eval_every": d["every"], "train.log_every": d["every"]}
    wd_base = {**tf, "train.checkpoint_every": c["ckpt"], "train.checkpoint_keep_every": c["ckpt"]}
    dense = _dense_ids(wd_base, c["wd"], SEEDS[size])
    return [
        SweepSpec(name=f"grokking-wd{sfx}", base=wd_base,
                  grid={WD: [0.0, c["wd"]]}, seeds=SEEDS[size],
                  description="claims 1 and 3: the transformer with and without weight decay"),
        SweepSpec(name=f"grokking-tickets{sfx}",
                  base={**wd_base, WD: c["wd"], "train.ticket_sparsity": TICKET_SPARSITY},
                  zip={"train.seed": SEEDS[size], "train.ticket_from": dense},
                  description="claim 5: the dense weight-decay runs' magnitude tickets, rewound to init"),
        SweepSpec(name=f"grokking-corrupt{sfx}", base=corrupt_base,
                  grid={WD: [0.0, cc["wd"]]}, seeds=SEEDS[size],
                  description="claim 4: 20% corrupted labels, no decay vs strong decay"),
        SweepSpec(name=f"grokking-delay{sfx}", base=delay_base,
                  grid={ALPHA: d["alphas"], WD: d["wds"]},
                  description="claim 2: generalization step vs init scale and weight decay"),
        SweepSpec(name=f"grokking-data{sfx}", base={**tf, FRAC: LOW_FRAC[size]}, seeds=SEEDS[size],
                  description="claim 6: a train fraction below the critical size"),
    ]


def _dense_ids(wd_base: dict, wd: float, seeds: list[int]) -> list[str]:
    """Run ids of the dense weight-decay runs (one per seed) that the tickets come from."""
    from proxylab.config import from_flat  # noqa: PLC0415

    return [from_flat({**wd_base, WD: wd, "train.seed": s}).id for s in seeds]


# ----------------------------------------------------------------------------------
# reading runs


def _runs(store, spec: SweepSpec) -> pd.DataFrame:
    """One row per finished run: its config columns plus grokking numbers from its curves."""
    runs = store.runs(sweep=spec.name)
    runs = runs[runs.status.isin(["done", "diverged"])]
    if not len(runs):
        return runs
    wide = store.curves(list(runs.run_id)).reset_index()
    rows = []
    for _, r in runs.iterrows():
        c = wide[wide.run_id == r.run_id].sort_values("step")
        steps = c.step.to_numpy(float)
        col = lambda k: c[k].to_numpy(float) if k in c else np.full(len(c), np.nan)  # noqa: E731
        g = grokking_steps(steps, col("train/acc"), col("val/acc"))
        last = lambda k: float(c[k].dropna().iloc[-1]) if k in c and c[k].notna().any() else math.nan  # noqa: E731
        rows.append({**r.to_dict(), **g, **norm_summary(steps, col("param_norm"), g["generalization_step"]),
                     "final_train_acc": last("train/acc"), "final_val_acc": last("val/acc"),
                     "final_clean_acc": last("train_clean/acc"),
                     "final_corrupt_acc": last("train_corrupt/acc"),
                     "final_corrupt_true_acc": last("train_corrupt_true/acc"),
                     "steps_budget": float(r["train.steps"])})
    return pd.DataFrame(rows)


def _by_seed(df: pd.DataFrame, col: str) -> list[float]:
    return [float(v) for v in df.sort_values("train.seed")[col]]


def _mean(x) -> float:
    return float(np.mean(x))


def _decide(text, effect, direction, margin, values, unit="", evidence=None, extra=""):
    claim = Claim(text=text, effect=effect, direction=direction, margin=margin, unit=unit)
    est, lo, hi = bootstrap(_mean, values)
    return decide(claim, est, lo, hi, n=len(values),
                  evidence={"per_seed": [_r(v) for v in values], **(evidence or {})}, reason_extra=extra)


def _r(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


# ----------------------------------------------------------------------------------
# claim 1: delayed generalization with weight decay, none without


def claim_wd(store, spec: SweepSpec) -> dict:
    df = _runs(store, spec)
    text = ("1. With weight decay the transformer reaches >= 99% validation accuracy long after "
            ">= 99% train accuracy; without decay it does not within the budget (Nanda et al. 2023)")
    if not len(df):
        return not_measured(Claim(text=text, effect="-", direction="greater", margin=0), "no finished runs")
    wd, no = df[df[WD] > 0], df[df[WD] == 0]
    # the delay as log10(generalization step / memorization step); a run that never
    # generalizes counts at the budget (a lower bound on its delay)
    ratio = [math.log10((g if math.isfinite(g) else b) / m) if m > 0 else math.nan
             for g, m, b in zip(wd.generalization_step, wd.memorization_step, wd.steps_budget)]
    delayed = _decide("with decay, generalization comes >= 3x later than memorization",
                      "log10(generalization step / memorization step), with decay", "greater",
                      math.log10(3), ratio, "decades",
                      {"memorization_step": _by_seed(wd, "memorization_step"),
                       "generalization_step": _by_seed(wd, "generalization_step"),
                       "final_val_acc": _by_seed(wd, "final_val_acc")})
    control = _decide("without decay, validation accuracy stays below 99% in the budget",
                      "final validation accuracy without decay", "less", 0.99,
                      _by_seed(no, "final_val_acc"), "",
                      {"memorization_step": _by_seed(no, "memorization_step"),
                       "steps_budget": float(no.steps_budget.max()) if len(no) else None})
    out = combine(text, {"delayed_with_wd": delayed, "control_without_wd": control})
    out["evidence"]["norm_drop_frac_with_wd"] = [_r(v) for v in _by_seed(wd, "norm_drop_frac")]
    out["evidence"]["norm_drop_frac_without_wd"] = [_r(v) for v in _by_seed(no, "norm_drop_frac")]
    return out


# ----------------------------------------------------------------------------------
# claim 2: the delay law


def claim_delay(store, spec: SweepSpec) -> dict:
    df = _runs(store, spec)
    text = ("2. The generalization step grows with the init scale α and shrinks with weight decay λ, "
            "roughly linear in ln(α)/(ηλ) (Lyu et al. 2024)")
    claim = Claim(text=text, effect="slope of generalization step vs ln(α)/(ηλ)", direction="greater",
                  margin=0.0, unit="steps per unit")
    if len(df) < 3:
        return not_measured(claim, "fewer than three finished grid points")
    g = df.generalization_step.to_numpy(float)
    a, lr, wd = df[ALPHA].to_numpy(float), df["optim.lr"].to_numpy(float), df[WD].to_numpy(float)
    fit = delay_law_fit(g, a, lr, wd)
    idx = np.arange(len(df))
    est, lo, hi = bootstrap(lambda i: delay_law_fit(g[i.astype(int)], a[i.astype(int)],
                                                    lr[i.astype(int)], wd[i.astype(int)])["slope"], idx)
    fit2 = delay_law_fit(g, a, lr, wd, offset=True)
    return decide(claim, fit["slope"], lo, hi, n=fit["n"], evidence={
        "intercept": _r(fit["intercept"]), "r2": _r(fit["r2"]),
        "with_offset_1/(ηλ)": {k: _r(v) for k, v in fit2.items()},   # Omnigrok's ln(α w0/w_c)
        "points": [{"alpha": float(x), "weight_decay": float(w), "lr": float(l),
                    "x": _r(math.log(x) / (l * w)), "generalization_step": _r(s)}
                   for x, w, l, s in zip(a, wd, lr, g)],
        "not_generalized": int((~np.isfinite(g)).sum()),
        "interval_over": "grid points (bootstrap, one seed per point)"},
        reason_extra=f"R² = {fit['r2']:.2f} over {fit['n']} points")


# ----------------------------------------------------------------------------------
# claim 3: progress measures from checkpoints


def claim_progress(store, spec: SweepSpec) -> dict:
    df = _runs(store, spec)
    text = ("3. Restricted loss falls before test loss; excluded loss rises during circuit formation; "
            "the embedding's Fourier norms concentrate on a few frequencies (Nanda et al. 2023)")
    claim = Claim(text=text, effect="-", direction="greater", margin=0)
    wd = df[df[WD] > 0] if len(df) else df
    if not len(wd):
        return not_measured(claim, "no finished runs with weight decay")
    lead, rise, conc, keys = [], [], [], []
    for _, r in wd.sort_values("train.seed").iterrows():
        pm = progress_measures(store, r.run_id)
        if len(pm) < 3:
            continue
        s = pm.step.to_numpy(float)
        # "falls": first checkpoint below 1 nat (log p is ~4-5 nats at chance)
        t_r = first_step_at(s, -pm.restricted_loss.to_numpy(), -1.0)
        t_t = first_step_at(s, -pm.test_loss.to_numpy(), -1.0)
        lead.append((t_t if math.isfinite(t_t) else s[-1] + s[1] - s[0]) - t_r if math.isfinite(t_r)
                    else math.nan)
        mem = r.memorization_step if math.isfinite(r.memorization_step) else s[0]
        gen = r.generalization_step if math.isfinite(r.generalization_step) else s[-1]
        i_mem = int(np.argmin(np.abs(s - mem)))
        window = (s >= s[i_mem]) & (s <= gen)
        rise.append(float(pm.excluded_loss[window].max() - pm.excluded_loss.iloc[i_mem]))
        conc.append(float(pm.gini.iloc[-1] - pm.gini.iloc[i_mem]))
        keys.append(pm.attrs["keys"])
    unit = "steps"
    parts = {
        "restricted_before_test": _decide("restricted loss falls below 1 nat before test loss does",
                                          "step(test < 1 nat) - step(restricted < 1 nat)", "greater",
                                          0.0, lead, unit),
        "excluded_rises": _decide("excluded (train) loss rises between memorization and generalization",
                                  "max excluded loss in [memorization, generalization] - its value "
                                  "at memorization", "greater", 0.0, rise, "nats"),
        "fourier_concentrates": _decide("the Gini coefficient of W_E's Fourier norms rises",
                                        "Gini(final) - Gini(at memorization)", "greater", 0.1, conc, ""),
    }
    out = combine(text, parts)
    out["evidence"]["key_frequencies"] = keys
    return out


# ----------------------------------------------------------------------------------
# claim 4: label corruption (Doshi et al.)


def claim_corrupt(store, spec: SweepSpec) -> dict:
    df = _runs(store, spec)
    text = ("4. With corrupted labels (ξ = 0.2): no weight decay gives coexistence (corrupted labels "
            "memorized, test ≈ 100%); strong decay gives inversion (train ≈ 100(1−ξ)%, the corrupted "
            "pairs answered by the rule); pruning low-IPR neurons erases the memorized labels "
            "(Doshi et al. 2024)")
    if not len(df):
        return not_measured(Claim(text=text, effect="-", direction="greater", margin=0), "no finished runs")
    no, wd = df[df[WD] == 0], df[df[WD] > 0]
    xi = float(df[XI].iloc[0])
    prune = [pruned_accuracies(store, rid) for rid in no.sort_values("train.seed").run_id]
    drop = [d["train_corrupt_before"] - d["train_corrupt_after"] for d in prune if d]
    parts = {
        "coexistence_test": _decide("no decay: test accuracy >= 90%", "final val acc, wd 0", "greater",
                                    0.9, _by_seed(no, "final_val_acc")),
        "coexistence_memorized": _decide("no decay: corrupted labels memorized (>= 50%)",
                                         "final acc on corrupted labels, wd 0", "greater", 0.5,
                                         _by_seed(no, "final_corrupt_acc")),
        "inversion_rule": _decide("strong decay: corrupted pairs answered by the rule (>= 50%)",
                                  "final acc of corrupted pairs vs the TRUE rule, strong wd", "greater",
                                  0.5, _by_seed(wd, "final_corrupt_true_acc")),
        "inversion_train_acc": _decide("strong decay: train accuracy within 5 points of 1 - ξ",
                                       "final train acc - (1 - ξ), strong wd", "within", 0.05,
                                       [v - (1 - xi) for v in _by_seed(wd, "final_train_acc")]),
        "ipr_pruning": _decide("pruning IPR < 0.5 neurons (wd 0) lowers corrupted-label accuracy "
                               "by >= 20 points", "corrupted acc before - after pruning", "greater",
                               0.2, drop, "", {"pruning": prune}),
    }
    out = combine(text, parts)
    out["evidence"]["phases"] = {f"wd={w:g} seed={int(s)}": corruption_phase(
        r.final_val_acc, r.final_corrupt_acc, r.final_corrupt_true_acc, r.final_clean_acc)
        for _, r in df.iterrows() for w, s in [(r[WD], r["train.seed"])]}
    return out


# ----------------------------------------------------------------------------------
# claim 6: critical data size


def claim_data(store, spec: SweepSpec) -> dict:
    df = _runs(store, spec)
    text = ("6. Below a critical train fraction the model memorizes without generalizing in the "
            "budget (Zhu et al. 2024)")
    if not len(df):
        return not_measured(Claim(text=text, effect="-", direction="greater", margin=0), "no finished runs")
    frac = float(df[FRAC].iloc[0])
    parts = {
        "memorizes": _decide(f"train fraction {frac:g}: train accuracy >= 99%", "final train acc",
                             "greater", 0.99 - 1e-9, _by_seed(df, "final_train_acc")),
        "does_not_generalize": _decide(f"train fraction {frac:g}: validation accuracy < 50% at the "
                                       "end of the budget", "final val acc", "less", 0.5,
                                       _by_seed(df, "final_val_acc")),
    }
    out = combine(text, parts)
    out["evidence"]["train_frac"] = frac
    return out


def claim_tickets(store, wd_spec: SweepSpec, ticket_spec: SweepSpec) -> dict:
    text = ("5. Lottery tickets (global magnitude pruning of the generalized network, survivors "
            "rewound to init) reach 99% validation accuracy in fewer steps than the dense network "
            "(Minegishi et al. 2023)")
    claim = Claim(text=text, effect="generalization step, dense - ticket (paired by seed)",
                  direction="greater", margin=0.0, unit="steps")
    dense, tickets = _runs(store, wd_spec), _runs(store, ticket_spec)
    if not len(dense) or not len(tickets):
        return not_measured(claim, "no finished dense or ticket runs")
    by_id = {r.run_id: r for _, r in dense.iterrows()}
    diffs, pairs = [], []
    for _, t in tickets.sort_values("train.seed").iterrows():
        d = by_id.get(t["train.ticket_from"])
        if d is None:
            continue
        # a run that never generalizes counts at its budget (its step is at least that)
        gd = d.generalization_step if math.isfinite(d.generalization_step) else d.steps_budget
        gt = t.generalization_step if math.isfinite(t.generalization_step) else t.steps_budget
        diffs.append(gd - gt)
        pairs.append({"seed": int(t["train.seed"]), "dense": _r(d.generalization_step),
                      "ticket": _r(t.generalization_step)})
    est, lo, hi = bootstrap(_mean, diffs) if diffs else (math.nan,) * 3
    return decide(claim, est, lo, hi, n=len(diffs), evidence={
        "pairs": pairs, "sparsity": float(tickets["train.ticket_sparsity"].iloc[0])})


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    wd, tickets, corrupt, delay, data = specs
    return [claim_wd(store, wd), claim_delay(store, delay), claim_progress(store, wd),
            claim_corrupt(store, corrupt), claim_tickets(store, wd, tickets), claim_data(store, data)]


# ----------------------------------------------------------------------------------
# figures


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    wd_spec, ticket_spec, corrupt_spec, delay_spec, data_spec = specs
    out: dict = {}
    runs = store.runs(sweep=wd_spec.name)
    curves = store.curves(list(runs.run_id)).reset_index() if len(runs) else pd.DataFrame()
    acc, norm = [], []
    palette = {0: ["#1f77b4", "#17becf"], 1: ["#d62728", "#ff7f0e"]}   # blues: no decay; reds: decay
    for i, (_, r) in enumerate(runs.sort_values([WD, "train.seed"]).iterrows() if len(runs) else []):
        c = curves[curves.run_id == r.run_id].sort_values("step") if len(curves) else curves
        if not len(c):
            continue
        lab = f"wd={r[WD]:g} seed={r['train.seed']}"
        color = palette[int(r[WD] > 0)][i % 2]
        for k, style in (("train/acc", "--"), ("val/acc", "-")):
            cc = c[["step", k]].dropna()
            acc.append(Series(f"{lab} {k.split('/')[0]}", list(cc.step), list(cc[k]), style, color))
        cc = c[["step", "param_norm"]].dropna()
        norm.append(Series(lab, list(cc.step), list(cc.param_norm), "-", color))
    draw_panels(out_dir / "grokking_curves.png", [
        Panel("Accuracy (dashed: train, solid: validation)", "step", "accuracy", acc, xlog=True,
              hlines=[(0.99, "99%")]),
        Panel("Weight norm", "step", "‖θ‖₂ (all parameters)", norm, xlog=True)])
    g = _runs(store, wd_spec)
    out["grokking_curves.png"] = {
        "question": "Does validation accuracy jump long after train accuracy, and only with weight decay?",
        "detail": "Train (dashed) and validation (solid) accuracy and the weight norm, log step axis.",
        "numbers": {f"wd={r[WD]:g} seed={r['train.seed']}": {
            "memorization_step": _r(r.memorization_step), "generalization_step": _r(r.generalization_step),
            "norm_peak": _r(r.norm_peak), "norm_final": _r(r.norm_final)} for _, r in g.iterrows()}}
    wd_runs = runs[runs[WD] > 0] if len(runs) else runs
    if len(wd_runs):
        rid = wd_runs.iloc[0].run_id
        pm = progress_measures(store, rid)
        if len(pm):
            from proxylab.train.checkpoint import list_steps, load_checkpoint  # noqa: PLC0415

            ck = load_checkpoint(rid, list_steps(rid, store.path)[-1], db=store.path)
            p = ck.config.task.p
            norms = fourier_norms(ck.model_state["tok_emb.weight"].numpy(), p)
            draw_panels(out_dir / "progress_measures.png", [
                Panel(f"Progress measures (keys {pm.attrs['keys']})", "step", "loss (nats)",
                      [Series(k, list(pm.step), list(pm[k]), "o-") for k in
                       ("train_loss", "test_loss", "restricted_loss", "excluded_loss")], ylog=True),
                Panel("Fourier norms of the embedding (final)", "frequency k", "‖W_E component‖",
                      [Series("final", list(range(1, len(norms))), list(norms[1:]), "o-")])])
            out["progress_measures.png"] = {
                "question": "Does restricted loss fall before test loss, and is the embedding sparse "
                            "in Fourier space?",
                "detail": f"run {rid}, from its checkpoints; key frequencies {pm.attrs['keys']}.",
                "numbers": {"steps": [int(v) for v in pm.step],
                            **{k: [_r(v) for v in pm[k]] for k in
                               ("restricted_loss", "excluded_loss", "test_loss", "gini")}}}
    df = _runs(store, delay_spec)
    if len(df):
        series = []
        for w, sub in df.groupby(WD):
            sub = sub.sort_values(ALPHA)
            x = np.log(sub[ALPHA]) / (sub["optim.lr"] * w)
            series.append(Series(f"wd={w:g}", list(x), list(sub.generalization_step), "o"))
        fit = delay_law_fit(df.generalization_step, df[ALPHA], df["optim.lr"], df[WD])
        xs = np.log(df[ALPHA]) / (df["optim.lr"] * df[WD])
        xs = [float(xs.min()), float(xs.max())]
        if math.isfinite(fit["slope"]):
            series.append(Series(f"fit: {fit['intercept']:.0f} + {fit['slope']:.2f}·x, R²={fit['r2']:.2f}",
                                 xs, [fit["intercept"] + fit["slope"] * x for x in xs], "-", "grey"))
        draw_panels(out_dir / "delay_law.png", [Panel("Delay law", "ln(α)/(ηλ)  (steps)",
                                                      "generalization step", series)])
        out["delay_law.png"] = {"question": "Is the generalization step linear in ln(α)/(ηλ)?",
                                "detail": "One point per (α, λ); a least-squares line in verdict 2.",
                                "numbers": {k: _r(v) for k, v in fit.items()}}
    runs = store.runs(sweep=corrupt_spec.name)
    if len(runs):
        curves = store.curves(list(runs.run_id)).reset_index()
        panels = []
        for w, sub in runs.groupby(WD):
            r = sub.iloc[0]
            c = curves[curves.run_id == r.run_id].sort_values("step")
            panels.append(Panel(f"ξ=0.2, wd={w:g}", "step", "accuracy", [
                Series(k, list(c[["step", k]].dropna().step), list(c[k].dropna()), "-")
                for k in ("val/acc", "train_clean/acc", "train_corrupt/acc", "train_corrupt_true/acc")
                if k in c]))
        draw_panels(out_dir / "corruption.png", panels)
        c = _runs(store, corrupt_spec)
        out["corruption.png"] = {
            "question": "Coexistence without decay, inversion with it?",
            "detail": "Accuracy on validation, clean train pairs, corrupted pairs (their wrong labels) "
                      "and corrupted pairs scored against the true rule; first seed per arm.",
            "numbers": {f"wd={r[WD]:g} seed={r['train.seed']}": {
                k: _r(r[k]) for k in ("final_val_acc", "final_clean_acc", "final_corrupt_acc",
                                      "final_corrupt_true_acc")} for _, r in c.iterrows()}}
    return out
