"""Critical batch size and the gradient noise scale.

How large can the batch grow before more data parallelism stops buying fewer steps? Batch
sizes x peak LRs (AdamW, constant LR after a 5% warmup, an exponential weight average
evaluated beside the raw weights: Zhang et al. 2024's protocol) on two proxies: the byte-level
GPT on the built-in corpus, and a ReLU MLP on scikit-learn's 8x8 digits. Each batch size runs
for its own number of steps (Zhang's batch/max-steps pairs). For every run the steps to
reach a target validation loss are read off the evaluation curve (interpolated, never
extrapolated; the best of the raw and the averaged weights at each evaluation); the LR is
re-tuned per batch size (Shallue et al. 2019: the best over LR). Targets are set by data
budgets: the loss the smallest batch reaches after D1 and after D2 = 4 D1 examples (Zhang).
Runs with B >= 32 carry the two-batch gradient-noise-scale probe (B_small = B/8).

Claims (research brief §2): [1] S(B) falls as 1/B, then flattens, and
S = S_min(1 + B_crit/B) fits (McCandlish et al. 2018; Shallue et al. 2019); [2] B_crit and
B_simple agree within a factor 3 (McCandlish: O(1)); [3] B_simple grows as the loss falls;
[4] the critical batch size grows with the data budget and hardly changes when the width
doubles at fixed data (Zhang et al. 2024); [5] the optimal Adam LR rises then falls with B
(Li et al. 2024, "Surge"), or is monotone. Every verdict bootstraps over seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis.batch_size import (b_simple_at_loss, b_star_from_law, best_curve,
                                          best_over_lr, critical_batch_20pct, fit_steps_law,
                                          log_ratio, lr_trend, run_targets, targets_at_budgets)
from proxylab.analysis.verdict import Claim, bootstrap_runs, combine, decide, not_measured
from proxylab.sweep.spec import SweepSpec

NAME = "batch-size"
CLAIM = ("Steps to a target fall as 1/B up to a critical batch size near the gradient noise "
         "scale, which grows as the loss falls (McCandlish 2018, Shallue 2019, Zhang 2024)")
LR, B, SEED = "optim.lr", "train.batch_size", "train.seed"
CURVE = "val_best/loss"
PROBE_MIN_BATCH = 32          # the noise probe runs where B_small = B/8 >= 4

# per size and task: the widths (the second one doubled), (batch size, steps) pairs, the LR
# grid, the first data budget D1 in examples (D2 = 4 D1), seeds, evaluations per run (the
# size's default unless the task sets its own: the digits' whole-set evaluation is cheap);
# ``wide_lrs``: a narrower grid for the doubled width (muP: the optimum stays put).
# The smallest batch runs >= 1.2 D2 examples: the seed MEAN of its best LR reaches the D2
# target at D2 exactly (by definition), so its seeds need room beyond D2 to reach it too.
SIZES = {
    "smoke": dict(evals=6, text=dict(
        widths=[16], batches=[(4, 40), (16, 20), (32, 16)], lrs=[3e-3, 1e-2], d1=30, val_seqs=32,
        seeds=[0, 1]),
        digits=dict(widths=[32], batches=[(4, 40), (16, 20), (64, 16)], lrs=[3e-3, 1e-2], d1=30,
                    seeds=[0, 1])),
    "quick": dict(evals=20, text=dict(
        widths=[32], batches=[(4, 1200), (8, 700), (16, 400), (32, 300), (64, 230), (128, 190)],
        lrs=[3e-3, 1e-2, 3e-2, 1e-1], d1=1000, val_seqs=128, seeds=[0, 1]),
        digits=dict(widths=[64, 128], batches=[(4, 1200), (8, 700), (16, 450), (32, 300), (64, 250),
                                               (128, 200), (256, 200)],
                    lrs=[6e-3, 1.2e-2, 2.4e-2, 4.8e-2, 9.6e-2, 0.19], d1=1000, seeds=[0, 1, 2],
                    evals=40)),
    "full": dict(evals=24, text=dict(
        widths=[32, 64], batches=[(4, 2000), (8, 1100), (16, 650), (32, 440), (64, 330), (128, 270),
                                  (256, 230)],
        lrs=[2e-3, 4.5e-3, 1e-2, 2.2e-2, 4.5e-2, 1e-1], wide_lrs=[4.5e-3, 1e-2, 2.2e-2, 4.5e-2],
        d1=1500, val_seqs=256, seeds=[0, 1, 2]),
        digits=dict(widths=[64, 128], batches=[(4, 1600), (8, 900), (16, 550), (32, 360), (64, 280),
                                               (128, 240), (256, 220), (512, 220)],
                    lrs=[4.2e-3, 8.5e-3, 1.7e-2, 3.4e-2, 6.8e-2, 0.135, 0.27], d1=1000,
                    seeds=[0, 1, 2], evals=40)),
}
TASKS = ("text", "digits")
TOKENS_PER_EXAMPLE = {"text": None, "digits": 1}     # text: task.seq_len


def _base(task: str, width: int, base_width: int) -> dict:
    common = {"optim.name": "adamw", "optim.beta1": 0.9, "optim.beta2": 0.95,
              "optim.weight_decay": 0.0, "schedule.name": "constant", "schedule.warmup": 0.05,
              "train.grad_clip": 1.0, "train.ema_decay": 0.95, "train.noise_scale_ema": 0.8,
              "model.param": "mup", "model.base_width": base_width, "model.width": width,
              "train.threads": 1}
    if task == "text":
        return {**common, "task.name": "text", "task.seq_len": 32, "model.name": "gpt",
                "model.depth": 2, "model.heads": max(width // 16, 1)}
    return {**common, "task.name": "digits", "task.train_frac": 0.5, "model.name": "mlp",
            "model.depth": 1}


def sweeps(size: str) -> list[SweepSpec]:
    s = SIZES[size]
    specs = []
    for task in TASKS:
        t = s[task]
        for width in t["widths"]:
            zip_ = {B: [b for b, _ in t["batches"]], "train.steps": [n for _, n in t["batches"]],
                    "train.eval_every": [max(n // t.get("evals", s["evals"]), 1) for _, n in t["batches"]],
                    "train.noise_scale_every": [max(5, n // 25) if b >= PROBE_MIN_BATCH else 0
                                                for b, n in t["batches"]]}
            if task == "text":   # one fixed validation set: val_seqs sequences for every B
                zip_["train.eval_batches"] = [max(t["val_seqs"] // b, 1) for b, _ in t["batches"]]
            specs.append(SweepSpec(
                name=_name(task, width, size), base=_base(task, width, t["widths"][0]),
                zip=zip_, grid={LR: t["lrs"] if width == t["widths"][0] else t.get("wide_lrs", t["lrs"])},
                seeds=t["seeds"],
                description=f"{task}, width {width}: batch size (with its steps) x peak LR"))
    return specs


def _name(task: str, width: int, size: str) -> str:
    return f"{NAME}-{task}-w{width}" + ("" if size == "full" else f"-{size}")


def _size_of(specs: list[SweepSpec]) -> str:
    last = specs[0].name.rsplit("-", 1)[-1]
    return last if last in ("smoke", "quick") else "full"


# ----------------------------------------------------------------------------------
# per-sweep tables: steps to each target, B_simple at each target


def load(store, spec: SweepSpec, task: str, d1: float) -> dict:
    """Targets (the loss at D1 and D2 = 4 D1 examples of the smallest batch), and one row
    per (run, target): steps, examples, tokens, reached, and B_simple at the target."""
    runs = store.runs(sweep=spec.name)
    runs = runs[runs["status"].isin(["done", "diverged"])]
    metrics = store.metrics(sweep=spec.name, keys=["val/loss", "val_ema/loss", "noise/b_simple"])
    curve = best_curve(metrics)
    budgets = {"D1": float(d1), "D2": 4.0 * float(d1)}
    targets = targets_at_budgets(runs, curve, budgets) if len(runs) else {k: math.nan for k in budgets}
    cols = ["run_id", B, LR, SEED, "train.steps", "task.seq_len"]
    tpe = TOKENS_PER_EXAMPLE[task] or int(runs["task.seq_len"].iloc[0]) if len(runs) else 1
    tab = run_targets(runs[[c for c in cols if c in runs]], curve, targets, key=CURVE,
                      tokens_per_example=tpe) if len(runs) else pd.DataFrame()
    if len(tab):
        noise = dict(tuple(metrics[metrics["key"] == "noise/b_simple"].groupby("run_id")))
        ev = dict(tuple(curve.groupby("run_id")))
        tab["b_simple"] = [
            b_simple_at_loss(noise[r.run_id]["step"], noise[r.run_id]["value"], ev[r.run_id]["step"],
                             ev[r.run_id]["value"], r.target_loss)
            if r.run_id in noise and r.run_id in ev else math.nan for r in tab.itertuples()]
        if SEED not in tab:
            tab[SEED] = 0
    return {"targets": targets, "budgets": budgets, "table": tab, "metrics": metrics,
            "runs": runs, "curve": curve}


def scaling(tab: pd.DataFrame, target: str) -> dict:
    """Best over LR per batch size at ``target``, the law's fit, B* (20%), the slopes."""
    sub = tab[tab["target"] == target]
    best = best_over_lr(sub, [B]).sort_values(B) if len(sub) else pd.DataFrame(
        columns=[B, "steps", "lr_opt", "lr_best", "at_edge"])
    b, s = best[B].to_numpy(dtype=float), best["steps"].to_numpy(dtype=float)
    fit = fit_steps_law(b, s)
    ok = np.isfinite(s) & (s > 0)
    bo, so = b[ok], s[ok]

    def slope(i, j):
        return float(np.log(so[j] / so[i]) / np.log(bo[j] / bo[i])) if bo.size >= 2 else math.nan

    return {"best": best, "fit": fit, "b_star": critical_batch_20pct(b, s),
            "b_star_law": b_star_from_law(fit["b_crit"], b.min()) if b.size else math.nan,
            "slope_small": slope(0, 1), "slope_large": slope(-2, -1),
            "b_simple": float(np.nanmedian(sub["b_simple"])) if sub["b_simple"].notna().any() else math.nan}


def _cached(fn):
    """Memoise a bootstrap statistic on the multiset of seeds in the resampled frame (the
    draws of a few seeds repeat; curve fits are the slow part)."""
    memo: dict = {}

    def wrapped(d: pd.DataFrame) -> float:
        key = tuple(sorted(d[SEED].value_counts().items()))
        if key not in memo:
            memo[key] = fn(d)
        return memo[key]
    return wrapped


def _verdict(claim: Claim, tab: pd.DataFrame, stat, evidence: dict) -> dict:
    est, lo, hi, n = bootstrap_runs(tab, _cached(stat), unit=SEED, n_boot=300)
    return decide(claim, est, lo, hi, n=n, evidence={"bootstrap_unit": SEED, **evidence},
                  reason_extra=f"bootstrap over {n} seed(s)")


def _r(x, nd=4):
    return None if x is None or not np.isfinite(x) else float(f"{float(x):.{nd}g}")


def _scaling_evidence(sc: dict, targets: dict, target: str) -> dict:
    best = sc["best"]
    return {"target_loss": _r(targets[target]), "batch": [int(b) for b in best[B]],
            "steps_best_over_lr": [_r(v) for v in best["steps"]],
            "lr_opt": [_r(v) for v in best["lr_opt"]], "lr_at_grid_edge": [bool(v) for v in best["at_edge"]],
            "s_min": _r(sc["fit"]["s_min"]), "b_crit": _r(sc["fit"]["b_crit"]),
            "b_crit_cov_interval_90": [_r(v) for v in sc["fit"]["b_crit_interval"]],
            "fit_r2": _r(sc["fit"]["r2"]), "b_star_20pct": _r(sc["b_star"]),
            "b_star_from_fit": _r(sc["b_star_law"]), "b_simple_at_target": _r(sc["b_simple"])}


# ----------------------------------------------------------------------------------
# the verdicts


def tables(store, specs: list[SweepSpec]) -> dict:
    """{(task, width): load(...)} for every sweep of the study."""
    size = _size_of(specs)
    out = {}
    for task in TASKS:
        for width in SIZES[size][task]["widths"]:
            spec = next(s for s in specs if s.name == _name(task, width, size))
            out[(task, width)] = load(store, spec, task, SIZES[size][task]["d1"])
    return out


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    t = tables(store, specs)
    base = {task: t[(task, min(w for k, w in t if k == task))] for task in TASKS}
    return [claim_scaling(base), claim_noise_agrees(base), claim_noise_grows(base),
            claim_data_and_width(t), claim_surge(base)]


def claim_scaling(base: dict) -> dict:
    text = ("Steps to a target fall as 1/B at small B and flatten at large B, and "
            "S = S_min(1 + B_crit/B) fits (McCandlish et al. 2018; Shallue et al. 2019)")
    parts = {}
    for task, d in base.items():
        tab, ev = d["table"], _scaling_evidence(scaling(d["table"], "D1"), d["targets"], "D1")
        parts[f"{task}_flattens"] = _verdict(
            Claim(text=f"{task}: the log-log slope of S(B) is flatter at the two largest than at the "
                       "two smallest batch sizes (target D1)",
                  effect="slope(largest pair) - slope(smallest pair)", direction="greater",
                  margin=0.3, unit="decades per decade"),
            tab, lambda x: (lambda sc: sc["slope_large"] - sc["slope_small"])(scaling(x, "D1")), ev)
        parts[f"{task}_fit"] = _verdict(
            Claim(text=f"{task}: S = S_min(1 + B_crit/B) fits the best-over-LR steps (target D1)",
                  effect="R^2 of log S", direction="greater", margin=0.9, unit=""),
            tab, lambda x: scaling(x, "D1")["fit"]["r2"], ev)
    return combine(text, parts)


def claim_noise_agrees(base: dict) -> dict:
    text = ("The critical batch size B_crit and the measured gradient noise scale B_simple agree "
            "within a factor 3 (McCandlish et al. 2018: O(1))")
    parts = {}
    for task, d in base.items():
        for target in ("D1", "D2"):
            sc = scaling(d["table"], target)
            parts[f"{task}_{target}"] = _verdict(
                Claim(text=f"{task}, target {target}: |log10(B_crit / B_simple at the target)| <= log10 3",
                      effect="log10(B_crit / median B_simple of the probed runs at the target)",
                      direction="within", margin=math.log10(3), unit="decades"),
                d["table"], lambda x, tg=target: (lambda sc: log_ratio(sc["fit"]["b_crit"], sc["b_simple"]))(
                    scaling(x, tg)),
                {**_scaling_evidence(sc, d["targets"], target), "probed_batches": f">= {PROBE_MIN_BATCH}"})
    return combine(text, parts)


def _b_simple_growth(tab: pd.DataFrame) -> float:
    w = tab.pivot_table(index="run_id", columns="target", values="b_simple")
    if not {"D1", "D2"} <= set(w.columns):
        return math.nan
    r = [log_ratio(a, b) for a, b in zip(w["D2"], w["D1"])]
    r = [v for v in r if np.isfinite(v)]
    return float(np.mean(r)) if r else math.nan


def claim_noise_grows(base: dict) -> dict:
    text = "The gradient noise scale B_simple grows as the loss falls (McCandlish et al. 2018)"
    parts = {}
    for task, d in base.items():
        tab = d["table"]
        per = tab.groupby("target")["b_simple"].median()
        parts[task] = _verdict(
            Claim(text=f"{task}: B_simple at the lower target (D2) exceeds B_simple at the higher (D1)",
                  effect="mean over probed runs of log10(B_simple at D2 / at D1)", direction="greater",
                  margin=0.05, unit="decades"),
            tab, _b_simple_growth,
            {"targets": {k: _r(v) for k, v in d["targets"].items()},
             "median_b_simple": {k: _r(v) for k, v in per.items()},
             "n_probed_runs_reaching_both": int(tab.pivot_table(index="run_id", columns="target",
                                                                values="b_simple").dropna().shape[0])
             if tab["b_simple"].notna().any() else 0})
    return combine(text, parts)


def claim_data_and_width(t: dict) -> dict:
    text = ("The critical batch size grows with the data budget (the lower target) and changes "
            "little when the width doubles at fixed data (Zhang et al. 2024)")
    parts = {}
    for task in TASKS:
        widths = sorted(w for k, w in t if k == task)
        d = t[(task, widths[0])]
        parts[f"{task}_data"] = _verdict(
            Claim(text=f"{task}: B_crit at D2 = 4 D1 exceeds B_crit at D1",
                  effect="log10(B_crit(D2) / B_crit(D1))", direction="greater", margin=0.1,
                  unit="decades"),
            d["table"], lambda x: log_ratio(_b_crit(x, "D2"), _b_crit(x, "D1")),
            {k: _scaling_evidence(scaling(d["table"], k), d["targets"], k) for k in ("D1", "D2")})
        claim_w = Claim(text=f"{task}: B_crit at D2 changes by less than x1.5 when the width doubles",
                        effect="log10(B_crit(2w) / B_crit(w)) at D2", direction="within",
                        margin=math.log10(1.5), unit="decades")
        if len(widths) < 2:
            parts[f"{task}_width"] = not_measured(
                claim_w, f"{task} runs one width in this form (the full form doubles it)")
            continue
        wide = t[(task, widths[1])]
        both = pd.concat([d["table"].assign(_w=widths[0]), wide["table"].assign(_w=widths[1])])

        def stat(x, w0=widths[0], w1=widths[1]):
            return log_ratio(scaling(x[x._w == w1], "D2")["fit"]["b_crit"],
                             scaling(x[x._w == w0], "D2")["fit"]["b_crit"])
        parts[f"{task}_width"] = _verdict(claim_w, both, stat, {
            f"width_{w}": _scaling_evidence(scaling(dd["table"], "D2"), dd["targets"], "D2")
            for w, dd in ((widths[0], d), (widths[1], wide))})
    return combine(text, parts)


def _b_crit(tab: pd.DataFrame, target: str) -> float:
    return scaling(tab, target)["fit"]["b_crit"]


def _lr_fall(tab: pd.DataFrame) -> float:
    best = scaling(tab, "D1")["best"]
    return lr_trend(best[B], best["lr_opt"])["fall"]


def claim_surge(base: dict, margin: float = 0.15) -> dict:
    text = ("The loss-optimal Adam LR rises then falls as the batch grows (Li et al. 2024, "
            "'Surge'); SGD's would be monotone")
    parts = {}
    for task, d in base.items():
        best = scaling(d["table"], "D1")["best"]
        trend = lr_trend(best[B], best["lr_opt"])
        grid = sorted(float(v) for v in d["table"][LR].unique()) if len(d["table"]) else []
        claim = Claim(text=f"{task}: the optimal LR (fewest steps to D1) falls after its peak by more "
                           "than a factor 1.4 by the largest batch",
                      effect="log10(peak optimal LR / optimal LR at the largest B)", direction="greater",
                      margin=margin, unit="decades")
        evidence = {"shape": trend["shape"], "rise_decades": _r(trend["rise"]),
                    "fall_decades": _r(trend["fall"]), "peak_batch": _r(trend["peak_batch"]),
                    "batch": [int(b) for b in best[B]], "lr_opt": [_r(v) for v in best["lr_opt"]],
                    "lr_at_grid_edge": [bool(v) for v in best["at_edge"]], "lr_grid": grid}
        top = [int(b) for b, lr in zip(best[B], best["lr_best"]) if grid and lr == grid[-1]]
        last, peak = (int(best[B].iloc[-1]), trend["peak_batch"]) if len(best) else (None, None)
        # an optimum at the top of the grid is censored: only "at least the top" is known
        if (last in top and len(top) > 1) or (peak in top and not trend["fall"] > margin):
            parts[task] = not_measured(claim, f"the optimal LR is at the top of the grid ({grid[-1]:g}) "
                                              f"for B = {top}: the grid does not bracket it, so the fall "
                                              "after the peak is not measured", evidence)
            continue
        parts[task] = _verdict(
            claim, d["table"], _lr_fall,
            evidence)
    return combine(text, parts)


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    from proxylab.report.batch_size_figures import draw  # noqa: PLC0415

    return draw(tables(store, specs), out_dir)
