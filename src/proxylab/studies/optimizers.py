"""Which optimizer, really? LR sweeps × seeds over the optimizer zoo, on three CPU workloads.

Zhao et al. 2024 ("Deconstructing What Makes a Good Optimizer for Language Models") find that,
SGD aside, Adam, Adafactor, Lion and Signum are comparable at their best and across the LR
range, and that Adam's adaptivity matters mostly on the last layer and the norm gains
(Adalayer there, SGD elsewhere). Vyas et al. 2024 (SOAP) find that Shampoo degrades as its
preconditioner is refreshed less often while SOAP degrades less, and that SOAP needs fewer
steps than AdamW. Muon (Jordan 2024; Liu et al. 2025, "Muon is Scalable") claims ~2× compute
efficiency over AdamW. Workloads: a byte-level GPT proxy at two widths (gpt-s, gpt-m) and an
MLP on the 8×8 digits (so the AlgoPerf performance profiles have more than one row).

Protocol: every arm is swept over its own LR grid (half-decade steps around its registry
default), seeds averaged; the best LR is chosen on the same seeds (the selection noise is in
the bootstrap, which re-selects per draw). Diverged runs count at the loss at init (ℓ0).
Targets for steps/time/FLOPs are AdamW's best-LR mean final loss on each workload; a miss
is never extrapolated (in ratios it is censored at the run length: a lower bound).
Every verdict uses ``proxylab.analysis.verdict`` with the margins stated below.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd

from proxylab.analysis import capped_loss, final_metrics, lr_curves, lr_sensitivity
from proxylab.analysis.optimizers import (basin_width, best_per_group, cost_ratio, model_flops,
                                          optimizer_flops_per_step, to_target)
from proxylab.analysis.runs import FINISHED
from proxylab.analysis.verdict import (Claim, bootstrap, bootstrap_runs, combine, decide,
                                      not_measured)
from proxylab.optim import default_lr
from proxylab.sweep.spec import SweepSpec

NAME = "optimizers"
CLAIM = ("Except SGD, Adam-like optimizers are comparable at their best and across the LR "
         "range; Shampoo/SOAP/Muon trade extra optimizer compute for fewer steps")

# margins, stated before any run
LOSS_MARGIN = 0.05        # nats: "comparable best loss" / "clearly worse"
BASIN_MARGIN = 0.10       # nats above the best that still counts as inside the LR basin
WIDTH_MARGIN = 0.5        # decades: "comparable basin width"
DEGRADE_MARGIN = 0.02     # nats: "degrades" with the preconditioning interval
MOONLIGHT_FLOP_RATIO = 0.52   # Liu et al. 2025: Muon needs ~52% of AdamW's FLOPs (upper reference)

# ----------------------------------------------------------------------------------
# workloads and arms

_GPT = {"task.name": "text", "task.seq_len": 32, "model.name": "gpt", "model.depth": 2,
        "model.heads": 4, "train.batch_size": 8, "train.eval_batches": 16}
WORKLOADS = {
    "gpt-s": {**_GPT, "model.width": 32},
    "gpt-m": {**_GPT, "model.width": 64},
    "digits": {"task.name": "digits", "model.name": "mlp", "model.width": 64, "model.depth": 2,
               "train.batch_size": 32},
}
COMMON = {"optim.beta1": 0.9, "optim.beta2": 0.95, "optim.eps": 1e-8, "optim.weight_decay": 0.0,
          "schedule.name": "cosine", "schedule.warmup": 0.05, "train.grad_clip": 1.0,
          "train.threads": 1}     # one torch thread per run, inline or in a pool
QK = {"model.qk_norm": True, "train.z_loss": 1e-4}      # Wortsman's mitigations, as Zhao et al.

# arm label -> (optim.name, optim.extra); "factored-adam" is Adafactor's momentum form
FIRST_ORDER = ["sgd", "adamw", "factored-adam", "lion", "signum", "adalayer", "adalayer-sgd"]
ADAM_LIKE = ["adamw", "factored-adam", "lion", "signum"]


def arm_spec(label: str) -> tuple[str, dict]:
    """'soap/f10' -> ('soap', {'precondition_frequency': 10}); 'lion' -> ('lion', {})."""
    name, _, f = label.partition("/f")
    return name, ({"precondition_frequency": int(f)} if f else {})


def arm_label(name: str, extra) -> str:
    extra = json.loads(extra) if isinstance(extra, str) else (extra or {})
    f = extra.get("precondition_frequency")
    return f"{name}/f{f}" if f is not None else name


STEPS = {"smoke": {"gpt-s": 16, "gpt-m": 16, "digits": 16},
         "quick": {"gpt-s": 150, "gpt-m": 200, "digits": 150},
         "full": {"gpt-s": 400, "gpt-m": 400, "digits": 400}}
SEEDS = {"smoke": [0], "quick": [0, 1, 2], "full": [0, 1, 2]}
FEW_SEEDS = {"smoke": [0], "quick": [0, 1], "full": [0, 1, 2]}
# LR grids: default * 10^(k/2), k in these half-decade steps
KS = {"lr": {"smoke": [-1, 0], "quick": range(-3, 4), "full": range(-4, 5)},
      "precond": {"smoke": [0], "quick": range(-1, 3), "full": range(-2, 4)},
      "muon": {"smoke": [0], "quick": range(-2, 3), "full": range(-3, 4)},
      "gpt-m": {"smoke": [0], "quick": range(-1, 3), "full": range(-2, 4)},
      "digits": {"smoke": [0], "quick": range(-2, 4), "full": range(-3, 5)}}
# (the first quick run put the best LR of AdamW, Shampoo and SOAP at the grid's top on gpt-s's
# precond sweep, gpt-m and digits: one more half-decade up there)
EVALS = {"smoke": 2, "quick": 8, "full": 10}   # evaluations per run after step 0
PRECOND_F = {"smoke": [1, 10], "quick": [1, 10, 50], "full": [1, 10, 100]}
PROFILE_ARMS = [a for a in FIRST_ORDER if a != "adalayer"] + ["shampoo/f10", "soap/f10", "muon"]
SMOKE_PROFILE_ARMS = ["adamw", "sgd", "soap/f10", "muon"]
STRIPS = {"optim.beta1": [0.5, 0.8, 0.9, 0.95, 0.98], "optim.beta2": [0.9, 0.95, 0.99, 0.999],
          "optim.eps": [1e-12, 1e-8, 1e-6, 1e-4], "optim.weight_decay": [0.0, 0.1, 0.3, 1.0]}
STRIP_ARMS = {"adamw": list(STRIPS), "lion": ["optim.beta1", "optim.beta2"], "signum": ["optim.beta1"]}


def lr_grid(default: float, ks) -> list[float]:
    return [float(f"{default * 10 ** (k / 2):.3g}") for k in ks]


def _arm_zip(arms: list[str], ks) -> dict[str, list]:
    z: dict[str, list] = {"optim.name": [], "optim.lr": [], "optim.extra": []}
    for label in arms:
        name, extra = arm_spec(label)
        for lr in lr_grid(default_lr(name), ks):
            z["optim.name"].append(name), z["optim.lr"].append(lr), z["optim.extra"].append(extra)
    return z


def _base(workload: str, size: str) -> dict:
    steps = STEPS[size][workload]
    smoke = {"train.eval_batches": 2} if size == "smoke" and workload != "digits" else {}
    return {**WORKLOADS[workload], **COMMON, "train.steps": steps,
            "train.eval_every": max(steps // EVALS[size], 1), **smoke}


def protocol_spec(name: str, arms: list[str], size: str = "quick", workload: str = "gpt-s",
                  extra_base: dict | None = None, seeds: list[int] | None = None) -> SweepSpec:
    """The study's LR protocol for any registered optimizer names (your own too)."""
    return SweepSpec(name=name, base={**_base(workload, size), **(extra_base or {})},
                     zip=_arm_zip(arms, KS["lr"][size]), seeds=seeds or SEEDS[size], description=CLAIM)


def compare(store, spec: SweepSpec, reference: str = "adamw") -> pd.DataFrame:
    """One row per arm of a :func:`protocol_spec` sweep: best LR, best loss and its seed
    std, LR basin width (decades within BASIN_MARGIN), steps to the reference's final loss
    (NaN = missed) and their ratio to the reference's."""
    df, curves = load(store, spec)
    out = best_per_group(df, ["arm"]).set_index("arm")
    out["basin_width"] = _widths(df)
    target = float(out.loc[reference, "best_loss"]) if reference in out.index else math.nan
    out["steps_to_target"] = [to_target(df[df["arm"] == a], curves, target)["steps"] for a in out.index]
    out["steps_ratio"] = out["steps_to_target"] / out["steps_to_target"].get(reference, math.nan)
    return out


def sweeps(size: str) -> list[SweepSpec]:
    sfx = "" if size == "full" else f"-{size}"
    pre = [f"{s}/f{f}" for s in ("shampoo", "soap") for f in PRECOND_F[size]]
    prof = SMOKE_PROFILE_ARMS if size == "smoke" else PROFILE_ARMS
    strip_zip: dict[str, list] = {k: [] for k in ("optim.name", "optim.lr", *STRIPS)}
    arms = {"adamw": ["optim.beta1"]} if size == "smoke" else STRIP_ARMS
    for name, axes in arms.items():
        for axis in axes:
            for v in STRIPS[axis][2:4] if size == "smoke" else STRIPS[axis]:
                point = {**{k: COMMON[k] for k in STRIPS}, axis: v}
                strip_zip["optim.name"].append(name)
                strip_zip["optim.lr"].append(default_lr(name))
                for k in STRIPS:
                    strip_zip[k].append(point[k])
    specs = [
        protocol_spec(f"{NAME}-lr{sfx}", FIRST_ORDER, size),
        SweepSpec(f"{NAME}-precond{sfx}", _base("gpt-s", size), zip=_arm_zip(pre, KS["precond"][size]),
                  seeds=FEW_SEEDS[size], description="Shampoo/SOAP vs preconditioning interval"),
        SweepSpec(f"{NAME}-muon{sfx}", _base("gpt-s", size), zip=_arm_zip(["muon"], KS["muon"][size]),
                  seeds=SEEDS[size], description="Muon LR sweep"),
        SweepSpec(f"{NAME}-gpt-m{sfx}", _base("gpt-m", size), zip=_arm_zip(prof, KS["gpt-m"][size]),
                  seeds=FEW_SEEDS[size], description="the zoo on the wider GPT"),
        SweepSpec(f"{NAME}-digits{sfx}", _base("digits", size),
                  zip=_arm_zip(prof, KS["digits"][size]), seeds=FEW_SEEDS[size],
                  description="the zoo on the digits MLP"),
        SweepSpec(f"{NAME}-strips{sfx}", _base("gpt-s", size), zip=strip_zip,
                  seeds=FEW_SEEDS[size], description="1-D beta/eps/WD strips at the default LR"),
    ]
    if size != "smoke":
        specs.append(protocol_spec(f"{NAME}-lr-qk{sfx}", ADAM_LIKE + ["sgd"], size, extra_base=QK,
                                   seeds=FEW_SEEDS[size]))
    return specs


# ----------------------------------------------------------------------------------
# loading: one row per finished run, plus eval curves


def load(store, spec: SweepSpec) -> tuple[pd.DataFrame, dict]:
    """(runs, curves): per run its arm, LR, seed, capped final loss (``loss``), time per
    step and tokens per step; curves = run_id -> (eval steps, val losses)."""
    runs = store.runs(sweep=spec.name)
    met = store.metrics(sweep=spec.name, keys=["val/loss"])
    fm = final_metrics(runs, met)[["run_id", "final_val_loss", "init_loss", "diverged"]]
    df = runs.drop(columns=[c for c in fm.columns if c != "run_id" and c in runs]).merge(fm, on="run_id")
    df = df[df["status"].isin(FINISHED)].copy()
    df["loss"] = capped_loss(df)
    df["arm"] = [arm_label(n, e) for n, e in zip(df["optim.name"], df["optim.extra"])]
    steps = df["steps_done"].astype(float).clip(lower=1)
    df["s_per_step"] = df["train_time_s"].astype(float) / steps
    df["tokens_per_step"] = df["tokens"].astype(float) / steps
    curves = {rid: (g["step"].to_numpy(float), g["value"].to_numpy(float))
              for rid, g in met.groupby("run_id")}
    return df.reset_index(drop=True), curves


def by_part(specs: list[SweepSpec]) -> dict[str, SweepSpec]:
    """'optimizers-lr-qk-quick' -> 'lr-qk' (the part of the study a sweep answers)."""
    out = {}
    for s in specs:
        part = s.name[len(NAME) + 1:]
        for sfx in ("-quick", "-smoke"):
            part = part[:-len(sfx)] if part.endswith(sfx) else part
        out[part] = s
    return out


class SeedView:
    """Seed-mean loss-vs-LR curves of every arm for one set of seeds (a bootstrap draw)."""

    def __init__(self, means: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.means = means

    @property
    def best(self) -> pd.Series:
        return pd.Series({a: np.nanmin(m) if np.isfinite(m).any() else math.nan
                          for a, (_, m) in self.means.items()}, dtype=float)

    @property
    def widths(self) -> pd.Series:
        return pd.Series({a: basin_width(lrs, m, BASIN_MARGIN)["width"]
                          for a, (lrs, m) in self.means.items()}, dtype=float)


class SeedCube:
    """Final losses as arm -> (LRs, loss[LR, seed]), so a bootstrap over seeds is numpy work."""

    def __init__(self, df: pd.DataFrame):
        self.seeds = np.array(sorted(df["train.seed"].unique()))
        self.arms = {}
        for arm, sub in df.groupby("arm"):
            p = sub.pivot_table(index="optim.lr", columns="train.seed", values="loss",
                                aggfunc="mean").reindex(columns=self.seeds)
            self.arms[arm] = (p.index.to_numpy(float), p.to_numpy(float))

    def view(self, seeds) -> SeedView:
        idx = np.searchsorted(self.seeds, np.asarray(seeds))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # an arm without a drawn seed
            return SeedView({a: (lrs, np.nanmean(L[:, idx], axis=1)) for a, (lrs, L) in self.arms.items()})


def _best(d) -> pd.Series:
    """Best seed-mean loss per arm (the LR chosen on the same seeds)."""
    return d.best if isinstance(d, SeedView) else best_per_group(d, ["arm"]).set_index("arm")["best_loss"]


def _widths(d) -> pd.Series:
    """LR-basin width (decades within BASIN_MARGIN) of each arm's seed-mean curve."""
    return d.widths if isinstance(d, SeedView) else SeedCube(d).view(SeedCube(d).seeds).widths


def _decide(claim: Claim, df: pd.DataFrame, stat, *, per_run: bool = False, **evidence) -> dict:
    """decide() on ``stat`` with a bootstrap over seeds (paired: a draw's seeds are every
    arm's). ``stat`` gets a SeedView, or with ``per_run`` the resampled runs frame."""
    if per_run:
        est, lo, hi, n = bootstrap_runs(df, stat, unit="train.seed", n_boot=200)
    else:
        cube = SeedCube(df)
        n = len(cube.seeds)
        if n < 2:                  # one seed: no interval to draw (decide says inconclusive)
            est, lo, hi = float(stat(cube.view(cube.seeds))), math.nan, math.nan
        else:
            est, lo, hi = bootstrap(lambda s: stat(cube.view(s)), cube.seeds, n_boot=1000)
    seed_std = df.groupby(["arm", "optim.lr"])["loss"].std(ddof=1)
    return decide(claim, est, lo, hi, n=n, evidence={
        "bootstrap_unit": "train.seed", "seeds": sorted(df["train.seed"].unique().tolist()),
        "seed_std_median": float(seed_std.median()) if seed_std.notna().any() else None,
        **evidence})


def _either(text: str, parts: dict[str, dict]) -> dict:
    """One of several parts suffices: reproduced if any is, not_reproduced if all are not."""
    st = [p["status"] for p in parts.values()]
    status = ("reproduced" if "reproduced" in st else
              "not_reproduced" if all(s == "not_reproduced" for s in st) else "inconclusive")
    lead = next((p for p in parts.values() if p["status"] == status), next(iter(parts.values())))
    return {"claim": text, "status": status,
            "reason": "; ".join(f"[{k}: {p['status']}] {p['reason']}" for k, p in parts.items()),
            "evidence": {**lead["evidence"], "alternatives": {k: p["evidence"] for k, p in parts.items()}}}


def _rounded(s: pd.Series) -> dict:
    return {k: (round(float(v), 4) if math.isfinite(v) else None) for k, v in s.items()}


# ----------------------------------------------------------------------------------
# verdicts


def claim1(df: pd.DataFrame, tag: str = "") -> dict:
    four = [a for a in ADAM_LIKE if a in set(df["arm"])]
    best, width = _best(df), _widths(df)
    arms = df.rename(columns={"arm": "optim.arm"})       # analysis.lr groups by config columns
    sens = lr_sensitivity(lr_curves(arms, group_keys=["optim.arm"])).set_index("optim.arm")["lr_sensitivity"]
    ev = {"best_loss": _rounded(best), "basin_width_decades": _rounded(width),
          "basin_margin_nats": BASIN_MARGIN, "lr_sensitivity_wortsman": _rounded(sens),
          "lr_grid_decades": _rounded(df.groupby("arm")["optim.lr"].agg(lambda x: np.log10(x.max() / x.min())))}
    if len(four) < 2 or "sgd" not in best:
        return {"arms": not_measured(Claim(text="the four Adam-like arms and SGD", effect="arms run",
                                           direction="less", margin=0), "arms missing", ev)}
    spread = Claim(text=f"best-loss spread of {'/'.join(four)}{tag}", effect="max - min best loss",
                   direction="less", margin=LOSS_MARGIN, unit="nats")
    wspread = Claim(text=f"basin-width spread of {'/'.join(four)}{tag}",
                    effect="max - min basin width", direction="less", margin=WIDTH_MARGIN, unit="decades")
    sgd_loss = Claim(text="SGD's best loss is worse", effect="SGD - mean(four) best loss",
                     direction="greater", margin=LOSS_MARGIN, unit="nats")
    sgd_width = Claim(text="SGD's basin is narrower", effect="mean(four) - SGD basin width",
                      direction="greater", margin=WIDTH_MARGIN, unit="decades")
    return {
        "best_loss_spread": _decide(spread, df, lambda d: np.ptp(_best(d).reindex(four).to_numpy()), **ev),
        "basin_width_spread": _decide(wspread, df, lambda d: np.ptp(_widths(d).reindex(four).to_numpy())),
        "sgd_worse": _either("SGD is clearly worse in best loss or basin width", {
            "best_loss": _decide(sgd_loss, df, lambda d: _best(d)["sgd"] - _best(d).reindex(four).mean()),
            "basin_width": _decide(sgd_width, df, lambda d: _widths(d).reindex(four).mean() - _widths(d)["sgd"])}),
    }


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    by = by_part(specs)
    lr, _ = load(store, by["lr"])
    out = []
    c1 = claim1(lr)
    if "lr-qk" in by:
        qk, _ = load(store, by["lr-qk"])
        c1.update({f"qk-LN + z-loss: {k}": v for k, v in claim1(qk, " (qk-LN + z-loss)").items()})
    out.append(combine("1. AdamW, Adafactor, Lion and Signum reach best losses within "
                       f"{LOSS_MARGIN} nats of each other and basin widths within {WIDTH_MARGIN} "
                       "decades; SGD is clearly worse in one or both (Zhao et al. 2024)", c1))

    best = _best(lr)
    out.append(combine("2. Signum recovers Adam's best loss and stability (Zhao et al. 2024)", {
        "best_loss": _decide(Claim(text="Signum's best loss is no worse than AdamW's", direction="less",
                                   effect="Signum - AdamW best loss", margin=LOSS_MARGIN, unit="nats"),
                             lr, lambda d: _best(d)["signum"] - _best(d)["adamw"]),
        "stability": _decide(Claim(text="Signum's LR basin is no narrower than AdamW's", direction="less",
                                   effect="AdamW - Signum basin width", margin=WIDTH_MARGIN, unit="decades"),
                             lr, lambda d: _widths(d)["adamw"] - _widths(d)["signum"])}))

    recovered = (best["sgd"] - best["adalayer-sgd"]) / (best["sgd"] - best["adamw"])
    out.append(combine("3. Adalayer on the last layer and norms with SGD elsewhere recovers most of "
                       "Adam's performance; SGD everywhere does not (Zhao et al. 2024)", {
        "adalayer_sgd": _decide(Claim(text="Adalayer(head+norms)+SGD within the margin of AdamW",
                                      direction="less", effect="Adalayer-SGD - AdamW best loss",
                                      margin=LOSS_MARGIN, unit="nats"),
                                lr, lambda d: _best(d)["adalayer-sgd"] - _best(d)["adamw"],
                                recovered_fraction=round(float(recovered), 3),
                                adalayer_everywhere_gap=round(float(best["adalayer"] - best["adamw"]), 4)),
        "sgd": _decide(Claim(text="SGD everywhere is worse than AdamW", direction="greater",
                             effect="SGD - AdamW best loss", margin=LOSS_MARGIN, unit="nats"),
                       lr, lambda d: _best(d)["sgd"] - _best(d)["adamw"])}))

    pre, _ = load(store, by["precond"])
    fs = sorted({int(a.split("/f")[1]) for a in pre["arm"]})
    lo_f, hi_f = fs[0], fs[-1]

    def deg(d, opt):
        b = _best(d)
        return b[f"{opt}/f{hi_f}"] - b[f"{opt}/f{lo_f}"]

    pev = {"best_loss": _rounded(_best(pre)), "intervals": fs}
    out.append(combine(f"4. Shampoo degrades as the preconditioning interval grows ({lo_f} -> {hi_f} "
                       "steps); SOAP degrades less (Vyas et al. 2024)", {
        "shampoo_degrades": _decide(Claim(text="Shampoo's best loss rises with the interval",
                                          direction="greater", effect=f"Shampoo f{hi_f} - f{lo_f}",
                                          margin=DEGRADE_MARGIN, unit="nats"),
                                    pre, lambda d: deg(d, "shampoo"), **pev),
        "soap_less": _decide(Claim(text="SOAP degrades less than Shampoo", direction="greater",
                                   effect="Shampoo degradation - SOAP degradation",
                                   margin=DEGRADE_MARGIN, unit="nats"),
                             pre, lambda d: deg(d, "shampoo") - deg(d, "soap"))}))

    frames = target_frames(store, by)
    out.append(_ratio_claim(
        "5. SOAP reaches AdamW's final loss in fewer steps (Vyas et al. 2024: >40% fewer at 360m); "
        "wall time on CPU reported beside it", frames, "soap/f10", ["steps"], extra=["seconds"]))
    out.append(_ratio_claim(
        "6. Muon reaches AdamW's loss in fewer steps and fewer FLOPs, optimizer FLOPs counted "
        f"(Moonlight: ~{MOONLIGHT_FLOP_RATIO:.0%} of AdamW's FLOPs, an upper reference)",
        frames, "muon", ["steps", "flops"], extra=["seconds"]))
    return out


# ----------------------------------------------------------------------------------
# steps / seconds / FLOPs to target


def target_frames(store, by: dict) -> dict[str, tuple[pd.DataFrame, dict, list]]:
    """workload -> (runs, curves, tensors[(shape, role)]) for the workloads with AdamW."""
    gpt_s = [load(store, by[k]) for k in ("lr", "precond", "muon")]
    frames = {"gpt-s": (pd.concat([f[0] for f in gpt_s], ignore_index=True).drop_duplicates("run_id"),
                        {k: v for f in gpt_s for k, v in f[1].items()}),
              "gpt-m": load(store, by["gpt-m"]), "digits": load(store, by["digits"])}
    specs = {"gpt-s": by["lr"], "gpt-m": by["gpt-m"], "digits": by["digits"]}
    return {w: (*f, _tensors(specs[w])) for w, f in frames.items() if "adamw" in set(f[0]["arm"])}


def _tensors(spec: SweepSpec) -> list[tuple[tuple[int, ...], str]]:
    from proxylab.models import build_model  # noqa: PLC0415
    from proxylab.optim import infer_roles  # noqa: PLC0415
    from proxylab.tasks import build_task  # noqa: PLC0415

    cfg = spec.expand()[0]
    task = build_task(cfg.task, seed=0)
    model = build_model(cfg.model, vocab_size=task.vocab_size, seq_len=task.seq_len,
                        input_shape=getattr(task, "input_shape", None))
    roles = infer_roles(model)
    return [(tuple(p.shape), roles[n]) for n, p in model.named_parameters() if p.requires_grad]


def reach(df: pd.DataFrame, curves: dict, arm: str, target: float, tensors) -> dict:
    """analysis.to_target for one arm, plus what one of its steps costs: measured train
    seconds and FLOPs (model 6·N·tokens + the optimizer's own)."""
    sub = df[df["arm"] == arm]
    r = to_target(sub, curves, target)
    runs = sub[sub["optim.lr"] == r["lr"]]
    name, extra = arm_spec(arm)
    flops = (model_flops(float(runs["n_params"].mean()), float(runs["tokens_per_step"].mean()))
             + optimizer_flops_per_step(name, tensors, frequency=extra.get("precondition_frequency", 1)))
    return {**r, "steps_per_step": 1.0, "seconds_per_step": float(runs["s_per_step"].mean()),
            "flops_per_step": flops}


def _adamw_target(df: pd.DataFrame) -> float:
    return float(_best(df[df["arm"] == "adamw"]).get("adamw", math.nan))


def _ratio(df, curves, tensors, arm: str, unit: str) -> float:
    """arm / AdamW in ``unit`` (steps, seconds, flops) to AdamW's final loss (a miss of the
    arm censored at its run length: a lower bound)."""
    t = _adamw_target(df)
    a, b = reach(df, curves, arm, t, tensors), reach(df, curves, "adamw", t, tensors)
    return cost_ratio(a, b, a[f"{unit}_per_step"], b[f"{unit}_per_step"])


def _ratio_claim(text: str, frames: dict, arm: str, units: list[str], extra: list[str]) -> dict:
    parts = {}
    for w in ("gpt-s", "gpt-m"):
        if w not in frames or arm not in set(frames[w][0]["arm"]):
            continue
        df, curves, tensors = frames[w]
        target = _adamw_target(df)
        got = reach(df, curves, arm, target, tensors)
        ref = reach(df, curves, "adamw", target, tensors)
        ev = {"workload": w, "target_loss": round(target, 4), "reached": bool(math.isfinite(got["steps"])),
              "steps_to_target": got["steps"], "run_steps": got["run_steps"],
              "adamw_steps": ref["steps"], "lr": got["lr"], "adamw_lr": ref["lr"],
              "flops_per_step": got["flops_per_step"], "adamw_flops_per_step": ref["flops_per_step"]}
        for u in extra:
            est, lo, hi, n = bootstrap_runs(df, lambda d, u=u: _ratio(d, curves, tensors, arm, u),
                                            unit="train.seed", n_boot=200)
            ev[f"{u}_ratio"] = {"estimate": est, "interval": [lo, hi], "n": n}
        for u in units:
            parts[f"{w} {u}"] = _decide(
                Claim(text=f"{arm} needs fewer {u} than AdamW to AdamW's final loss ({w})",
                      effect=f"{arm} / AdamW {u} to target", direction="less", margin=1.0, unit="x"),
                df, lambda d, u=u: _ratio(d, curves, tensors, arm, u), per_run=True, **ev)
    if not parts:
        return not_measured(Claim(text=text, effect="ratio", direction="less", margin=1.0),
                            f"no {arm} runs on a GPT workload")
    return combine(text, parts)


# ----------------------------------------------------------------------------------
# figures (drawn in report/optimizers_figures.py: aligned LR curves, basin widths, strips,
# preconditioning interval, steps/seconds/FLOPs to target, performance profiles)


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    from proxylab.report.optimizers_figures import draw  # noqa: PLC0415

    return draw(store, specs, out_dir)
