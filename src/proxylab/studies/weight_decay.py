"""Weight decay and LAWN: what decay does to training dynamics, measured on CPU proxies.

Four sweeps, every point once per seed:

- ``weight-decay-grid``: peak LR × λ for Adam + L2, AdamW in torch's form (decay η_t·λ)
  and AdamW in Loshchilov & Hutter's form (decay s_t·λ, ``wd_mode="independent"``), each
  mode with its own λ range (zipped: the three λ's mean different things), plus λ = 0.
  Model: the 8×8-digits MLP with scale-invariant hidden layers (``model.scale_inv``:
  unit-norm weight rows, the per-neuron analogue of the BatchNorm of L&H's ResNets); loss =
  final validation loss on the 899 held-out digits.
- ``weight-decay-lm``: the byte-level GPT proxy, schedule (constant, cosine) × λ ∈ {0, λ₁,
  λ₂}. D'Angelo et al. use AdamW 6e-4 for 50k steps with λ ∈ {0.1, 0.3}, i.e. ηλT ∈ {3, 9}
  relaxation times; λ₁, λ₂ are chosen to give the SAME ηλT at this run's η and T (the
  number of relaxation times is what decay controls). Validation loss per token-frequency
  bucket (``train.freq_buckets``, b0 = rarest fifth of the training mass) on the final model.
- ``weight-decay-eq``: the digits MLP (scale-invariant) at a constant LR, AdamW at several
  (η, λ), with the weight probes (``train.wd_probes``): per-neuron norm and one-step angle
  against Kosson et al.'s equilibrium √(ηC/2λ) and √(2ηλ(1-β₁)/(1+β₁)).
- ``weight-decay-lawn``: the same MLP, (AdamW, LAWN-AdamW, SGD, LAWN-SGD) × batch (small,
  large); LAWN freezes the head's norm after ``free_steps`` (the head is the homogeneous
  part after the last normalisation). Logit scale from the probes.

Intervals are bootstraps over seeds (paired: a draw picks seeds and every arm uses them),
on per-seed tables built once, so that a draw costs numpy, not pandas.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis import weight_decay as wa
from proxylab.analysis.verdict import Claim, bootstrap, combine, decide, not_measured
from proxylab.sweep.spec import SweepSpec

NAME = "weight-decay"
CLAIM = ("Weight decay sets an effective LR rather than regularizing: AdamW decouples the "
         "optimal decay from the LR, scale-invariant weights reach a rotational equilibrium, "
         "decay helps LMs only after the LR decays and costs rare tokens most; LAWN bounds "
         "the logits")
SEED = "train.seed"
WD, LR = "optim.weight_decay", "optim.lr"
MODES = ("l2", "decoupled", "independent")
BUCKETS = 5                     # token-frequency buckets: b0 rarest .. b4 most frequent
D_ANGELO = (3.0, 9.0)           # ηλT of λ = 0.1, 0.3 at η = 6e-4, T = 50k (D'Angelo et al.)

CLAIMS = {
    "1a": Claim(text="[1] AdamW's optimal weight decay depends less on the LR than Adam + L2's "
                     "(Loshchilov & Hutter 2019): |slope of log λ* vs log η|, L2 minus AdamW "
                     "(L&H form, wd_mode=independent)",
                effect="|slope(Adam+L2)| - |slope(AdamW independent)|", direction="greater",
                margin=0.0, unit="decades/decade"),
    "1b": Claim(text="[1] ... and AdamW's best loss is no worse than Adam + L2's",
                effect="best val loss, AdamW (independent) minus Adam+L2", direction="less",
                margin=0.01, unit="nats"),
    "2n": Claim(text="[2] Scale-invariant weights reach the predicted equilibrium norm "
                     "sqrt(ηC/2λ) and angular update sqrt(2ηλ(1-β1)/(1+β1)) within 20% after "
                     "3/(ηλ) steps (van Laarhoven 2017; Kosson et al. 2024)",
                effect="largest seed-averaged |measured/predicted - 1| of the per-neuron norm "
                       "over (η, λ) points and hidden layers", direction="less", margin=0.2,
                unit="ratio"),
    "2a": Claim(text="[2] ... angular update part",
                effect="largest seed-averaged |measured/predicted - 1| of the one-step angle "
                       "over (η, λ) points and hidden layers", direction="less", margin=0.2,
                unit="ratio"),
    # D'Angelo et al. find both λ = 0.1 and 0.3 lower the final loss: one part per λ (both
    # λ's required; fixed after a two-seed pilot had shown the second one failing)
    "3a": Claim(text="[3] With a decaying (cosine) schedule, weight decay lowers the final "
                     "training loss of the LM (D'Angelo et al. 2024)",
                effect="final train loss, λ minus λ=0, cosine", direction="less",
                margin=0.0, unit="nats"),
    "3b": Claim(text="[3] ... while at constant LR it does not (D'Angelo et al. 2024)",
                effect="final train loss, λ minus λ=0, constant LR", direction="greater",
                margin=0.0, unit="nats"),
    "4": Claim(text="[4] Raising λ raises the loss on the rarest tokens more than on the most "
                    "frequent ones (Pinto et al. 2024, 'The Fair Language Model Paradox')",
               effect="Δloss(rarest fifth) - Δloss(most frequent fifth), largest λ vs 0, cosine",
               direction="greater", margin=0.0, unit="nats"),
    "5a": Claim(text="[5] LAWN keeps the logit scale bounded where the base optimizer's grows "
                     "(Gupta et al. 2021), AdamW at large batch",
                effect="growth of max|logit| after the switch, log(end/switch): AdamW minus "
                       "LAWN-AdamW", direction="greater", margin=0.1, unit="log ratio"),
    "5b": Claim(text="[5] LAWN improves the large-batch result of Adam (Gupta et al. 2021)",
                effect="final val loss, AdamW minus LAWN-AdamW, large batch", direction="greater",
                margin=0.0, unit="nats"),
}

SIZES = {
    # grid: LRs, λ per mode, steps, seeds; lm: width/depth/seq/steps/lr/seeds/eval batches;
    # eq: (η, λ) points, steps, seeds; lawn: batches, steps, free steps, seeds
    # smoke: two seeds everywhere so that every verdict goes through its bootstrap
    "smoke": dict(lrs=[1e-2, 3e-2], lams={"l2": [1e-3, 1e-2], "decoupled": [0.1, 1.0],
                                          "independent": [1e-3, 1e-2]}, grid_steps=30,
                  grid_seeds=[0, 1], lm=dict(width=16, depth=1, seq=16, steps=30, lr=1e-2,
                                             eval_batches=2), lm_seeds=[0, 1],
                  eq=[(1e-2, 3.0)], eq_steps=100, eq_seeds=[0, 1],
                  lawn_batch=[16, 64], lawn_steps=30, free=10, lawn_seeds=[0, 1], threads=1),
    "quick": dict(lrs=[3e-3, 1e-2, 3e-2, 1e-1],
                  lams={"l2": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "decoupled": [0.03, 0.1, 0.3, 1.0],
                        "independent": [1e-4, 1e-3, 3e-3, 1e-2]}, grid_steps=800,
                  grid_seeds=[0, 1, 2], lm=dict(width=32, depth=2, seq=32, steps=600, lr=1e-2,
                                                eval_batches=32), lm_seeds=[0, 1, 2],
                  eq=[(1e-2, 1.0), (3e-3, 1.0), (1e-2, 0.3)], eq_steps=1500, eq_seeds=[0, 1, 2],
                  lawn_batch=[32, 512], lawn_steps=600, free=150, lawn_seeds=[0, 1, 2]),
    "full": dict(lrs=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                 lams={"l2": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                       "decoupled": [0.01, 0.03, 0.1, 0.3, 1.0],
                       "independent": [3e-5, 1e-4, 1e-3, 3e-3, 1e-2]}, grid_steps=1500,
                 grid_seeds=[0, 1, 2], lm=dict(width=64, depth=2, seq=64, steps=1200, lr=6e-3,
                                               eval_batches=64), lm_seeds=[0, 1, 2, 3],
                 eq=[(1e-2, 1.0), (3e-3, 1.0), (1e-2, 0.3), (3e-3, 3.0), (3e-2, 0.3)],
                 eq_steps=3000, eq_seeds=[0, 1, 2],
                 lawn_batch=[32, 512], lawn_steps=1000, free=250, lawn_seeds=[0, 1, 2, 3]),
}


def _name(kind: str, size: str) -> str:
    return f"{NAME}-{kind}" + ("" if size == "full" else f"-{size}")


def lm_lambdas(lr: float, steps: int) -> list[float]:
    """λ ∈ {0} ∪ {ηλT = 3, 9}/(ηT): D'Angelo's λ = 0.1, 0.3 in relaxation times."""
    return [0.0] + [round(k / (lr * steps), 4) for k in D_ANGELO]


def sweeps(size: str) -> list[SweepSpec]:
    """[grid, lm, eq, lawn]: the order :func:`verdicts` and :func:`figures` rely on."""
    s = SIZES[size]
    thr = {"train.threads": s["threads"]} if "threads" in s else {}
    digits = {"task.name": "digits", "task.train_frac": 0.5, "model.name": "mlp",
              "model.width": 64, "model.depth": 2, "model.scale_inv": True,
              "optim.name": "adamw", "optim.beta2": 0.95, "train.batch_size": 32, **thr}
    # (mode, λ) pairs; one λ = 0 reference per LR and seed (under "decoupled": any mode)
    pairs = [(mode, lam) for mode in MODES for lam in s["lams"][mode]] + [("decoupled", 0.0)]
    grid = SweepSpec(name=_name("grid", size), seeds=s["grid_seeds"],
                     base={**digits, "schedule.name": "cosine", "schedule.warmup": 0.05,
                           "train.steps": s["grid_steps"], "train.eval_every": s["grid_steps"],
                           "train.log_every": max(s["grid_steps"] // 10, 1)},
                     zip={"optim.wd_mode": [m for m, _ in pairs], WD: [x for _, x in pairs]},
                     grid={LR: s["lrs"]},
                     description="digits MLP (scale-invariant): LR x weight decay per wd_mode")
    m = s["lm"]
    lm = SweepSpec(name=_name("lm", size), seeds=s["lm_seeds"],
                   base={"task.name": "text", "task.seq_len": m["seq"], "model.name": "gpt",
                         "model.width": m["width"], "model.depth": m["depth"], "model.heads": 2,
                         "optim.name": "adamw", "optim.lr": m["lr"], "optim.beta2": 0.95,
                         "schedule.warmup": 0.05, "train.batch_size": 16,
                         "train.steps": m["steps"], "train.eval_every": m["steps"],
                         "train.eval_batches": m["eval_batches"],
                         "train.log_every": max(m["steps"] // 30, 1),
                         "train.freq_buckets": BUCKETS, **thr},
                   grid={"schedule.name": ["constant", "cosine"],
                         WD: lm_lambdas(m["lr"], m["steps"])},
                   description="GPT proxy: constant vs cosine x weight decay (D'Angelo's ηλT)")
    eq = SweepSpec(name=_name("eq", size), seeds=s["eq_seeds"],
                   base={**digits, "schedule.name": "constant", "schedule.warmup": 0.0,
                         "train.grad_clip": 0.0, "train.steps": s["eq_steps"],
                         "train.eval_every": s["eq_steps"],
                         "train.log_every": max(s["eq_steps"] // 60, 1), "train.wd_probes": True},
                   zip={LR: [p[0] for p in s["eq"]], WD: [p[1] for p in s["eq"]]},
                   description="digits MLP (scale-invariant), AdamW at constant LR: equilibrium")
    lawn = SweepSpec(name=_name("lawn", size), seeds=s["lawn_seeds"],
                     base={**digits, "schedule.name": "cosine", "schedule.warmup": 0.05,
                           WD: 0.1, "optim.extra": {}, "train.steps": s["lawn_steps"],
                           "train.eval_every": s["lawn_steps"],
                           "train.log_every": max(s["lawn_steps"] // 30, 1),
                           "train.wd_probes": True},
                     zip={"optim.name": ["adamw", "lawn-adamw", "sgd", "lawn-sgd"],
                          LR: [1e-2, 1e-2, 0.3, 0.3],
                          "optim.extra": [{}, {"free_steps": s["free"]}, {},
                                          {"free_steps": s["free"]}]},
                     grid={"train.batch_size": s["lawn_batch"]},
                     description="digits MLP: LAWN vs its base optimizer at small and large batch")
    return [grid, lm, eq, lawn]


# ----------------------------------------------------------------------------------
# data: one small table per sweep (one row per run, or per run and tensor)


def runs_frame(store, spec: SweepSpec) -> pd.DataFrame:
    """One row per finished run: its config columns and final numbers (seed 0 if unseeded);
    ``loss`` = final validation loss (nan for a diverged run)."""
    df = store.runs(sweep=spec.name)
    if not len(df):
        return df
    df = df[df["status"].isin(("done", "diverged"))].copy()
    if SEED not in df.columns or df[SEED].isna().all():
        df[SEED] = 0
    df["loss"] = pd.to_numeric(df.get("final_val_loss"), errors="coerce")
    df.loc[df["status"] == "diverged", "loss"] = np.nan
    return df.reset_index(drop=True)


def series(store, spec: SweepSpec, keys=None, prefix: tuple[str, ...] = ()) -> pd.DataFrame:
    """Long-form metrics (run_id, step, key, value) of a sweep's runs: the given ``keys``,
    or every key starting with one of ``prefix``."""
    m = store.metrics(sweep=spec.name, keys=None if keys is None else list(keys))
    return m[m["key"].str.startswith(prefix)] if prefix and len(m) else m


def grid_table(store, spec) -> pd.DataFrame:
    df = runs_frame(store, spec)
    return df[[SEED, "optim.wd_mode", LR, WD, "loss"]] if len(df) else df


def _r(x, nd: int = 4):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def seed_verdict(claim: Claim, per_seed, stat, evidence: dict, reason: str = "") -> dict:
    """decide() on ``stat(per_seed[idx])`` bootstrapped over seeds (rows of ``per_seed``,
    an array whose first axis is the seed), with each seed's own value as its spread."""
    arr = np.asarray(per_seed, dtype=float)
    n = arr.shape[0] if arr.ndim else 0
    if n == 0:
        return not_measured(claim, "no finished runs", evidence)
    est, lo, hi = bootstrap(lambda i: stat(arr[i.astype(int)]), np.arange(n), n_boot=1000)
    per = [stat(arr[[k]]) for k in range(n)]
    finite = [v for v in per if math.isfinite(v)]
    ev = {**evidence, "bootstrap_unit": SEED, "per_seed": [_r(v) for v in per],
          "seed_std": _r(float(np.std(finite, ddof=1))) if len(finite) > 1 else None}
    return decide(claim, est, lo, hi, n=n, evidence=ev, reason_extra=reason)


def _cube(df: pd.DataFrame, index: list[str], value: str) -> tuple[np.ndarray, pd.Index]:
    """``value`` as an array [seed, cells] over the cells ``index`` (nan where missing)."""
    w = df.pivot_table(index=SEED, columns=index, values=value, aggfunc="mean", dropna=False)
    return w.to_numpy(float), w.columns


# ----------------------------------------------------------------------------------
# the verdicts


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    """Five verdicts; ``specs`` in the order of :func:`sweeps`."""
    grid, lm, eq, lawn = specs
    return [grid_verdict(grid_table(store, grid)),
            equilibrium_verdict(equilibrium_table(store, eq)),
            *lm_verdicts(lm_table(store, lm)),
            lawn_verdict(lawn_table(store, lawn, lawn_switch(lawn)))]


def grid_optima(t: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {m: wa.optimal_wd(t[t["optim.wd_mode"] == m]) for m in MODES}


def grid_verdict(t: pd.DataFrame) -> dict:
    if not len(t):
        return not_measured(CLAIMS["1a"], "the grid sweep has no finished runs")
    cubes = {}
    for mode in ("l2", "independent"):
        sub = t[(t["optim.wd_mode"] == mode) & (t[WD] > 0)]
        arr, _ = _cube(sub, [LR, WD], "loss")
        lrs, lams = sorted(sub[LR].unique()), sorted(sub[WD].unique())
        cubes[mode] = (arr.reshape(len(arr), len(lrs), len(lams)), lrs, lams)
    both = np.concatenate([cubes[m][0].reshape(len(cubes[m][0]), -1) for m in cubes], axis=1)
    split = cubes["l2"][0][0].size

    def mean_grid(rows, mode):
        _, lrs, lams = cubes[mode]
        part = rows[:, :split] if mode == "l2" else rows[:, split:]
        return np.nanmean(part.reshape(len(rows), len(lrs), len(lams)), axis=0), lrs, lams

    def slope(rows, mode):           # optima at a grid end only bound λ*: left out
        g, lrs, lams = mean_grid(rows, mode)
        w, _, e = wa.optimal_wd_grid(lams, g)
        return wa.interior_slope(lrs, w, e)

    def best(rows, mode):
        return float(np.nanmin(mean_grid(rows, mode)[0]))
    opt = grid_optima(t)
    ev = {f"optimum {m}": d.round(6).to_dict("records") for m, d in opt.items()}
    ev.update({f"slope {m}": _r(wa.interior_slope(d["lr"], d["wd_opt"], d["edge"]), 3)
               for m, d in opt.items()})
    ev.update({f"best loss {m}": _r(wa.best_loss(t[(t["optim.wd_mode"] == m) & (t[WD] > 0)],
                                                 keys=[LR, WD])) for m in MODES})
    zero = t[t[WD] == 0].groupby(LR)["loss"].mean()
    ev["loss at λ=0 per LR"] = {f"{k:g}": _r(v) for k, v in zero.items()}
    ev["note"] = ("slopes use only LRs whose optimum is inside the λ grid ('edge' marks one at "
                  "a grid end); torch-form AdamW (decoupled) decays by η·λ per step, so its λ* "
                  "should move like 1/η (slope -1); the L&H form (independent) by s_t·λ")
    a = seed_verdict(CLAIMS["1a"], both,
                     lambda r: abs(slope(r, "l2")) - abs(slope(r, "independent")), ev)
    b = seed_verdict(CLAIMS["1b"], both, lambda r: best(r, "independent") - best(r, "l2"), {})
    return combine(CLAIMS["1a"].text.split(":")[0] + " and its best loss is no worse",
                   {"slope": a, "best_loss": b})


def equilibrium_table(store, spec) -> pd.DataFrame:
    """Per run and hidden tensor: measured/predicted norm and angle after 3/(ηλ) steps, and
    the fitted relaxation time of ‖w‖² against 1/(2ηλ)."""
    runs = runs_frame(store, spec)
    m = series(store, spec, prefix=("wd/row_norm/", "wd/row_angle/", "opt/update_rms/"))
    rows = []
    for _, r in runs.iterrows():
        lr, lam, b1 = float(r[LR]), float(r[WD]), float(r.get("optim.beta1", 0.9))
        mr = m[m["run_id"] == r["run_id"]]
        start = 3 * wa.relaxation_time(lr, lam)
        for key, norm in mr[mr["key"].str.startswith("wd/row_norm/")].groupby("key"):
            tensor = key.split("/", 2)[2]
            norm = norm.sort_values("step")
            ang = mr[mr["key"] == f"wd/row_angle/{tensor}"].sort_values("step")
            u = mr[mr["key"] == f"opt/update_rms/{tensor}"]
            rms = float(u[u["step"] >= start]["value"].mean()) if len(u) else math.nan
            pn = wa.equilibrium_norm_adamw(lr, lam, 64)    # fan-in: 64 pixels, then width 64
            pa = wa.equilibrium_angle_adamw(lr, lam, b1)
            _, _, tau = wa.fit_relaxation(norm["step"], norm["value"] ** 2)
            rows.append({"run_id": r["run_id"], SEED: r[SEED], LR: lr, WD: lam, "tensor": tensor,
                         "norm_ratio": wa.tail_ratio(norm["step"], norm["value"], pn, start),
                         "angle_ratio": wa.tail_ratio(ang["step"], ang["value"], pa, start),
                         "pred_norm": pn, "pred_angle": pa, "tau_fit": tau,
                         "tau_pred": 1 / (2 * lr * lam), "update_rms": rms,
                         # the noise model's long-run update RMS is 1 (per step
                         # sqrt((1-β1)/(1+β1)) with momentum): what this run had instead
                         "rms_vs_noise_model": rms / math.sqrt((1 - b1) / (1 + b1))})
    return pd.DataFrame(rows)


def equilibrium_verdict(t: pd.DataFrame) -> dict:
    if not len(t):
        return not_measured(CLAIMS["2n"], "no equilibrium runs with probes")
    pts = t.groupby([LR, WD, "tensor"])[["norm_ratio", "angle_ratio", "tau_fit", "tau_pred",
                                          "update_rms", "rms_vs_noise_model"]]
    ev = {"points": [{"lr": k[0], "wd": k[1], "tensor": k[2],
                      **{col: _r(v, 3) for col, v in row.items()}}
                     for k, row in pts.mean().iterrows()],
          "window": "mean over probe steps t >= 3/(ηλ) (to the end of the run)",
          "formulas": "norm sqrt(ηC/2λ), C = fan-in 64; one-step angle "
                      "sqrt(2ηλ(1-β1)/(1+β1)), "
                      "β1 = 0.9; τ: fit of ‖w‖² to a + b·exp(-t/τ), predicted 1/(2ηλ); "
                      "update_rms: Adam's per-step update RMS in the window, and its ratio to "
                      "the random-walk model's sqrt((1-β1)/(1+β1)) (the norm formula assumes 1)"}
    worst = lambda r: float(np.nanmax(np.abs(np.nanmean(r, axis=0) - 1)))  # noqa: E731
    zipped = t.set_index([LR, WD, "tensor"]).index.unique()     # the cells that were run
    cube = lambda col: _cube(t, [LR, WD, "tensor"], col)  # noqa: E731
    cells = lambda col: cube(col)[0][:, cube(col)[1].isin(zipped)]  # noqa: E731
    return combine(CLAIMS["2n"].text, {
        "norm": seed_verdict(CLAIMS["2n"], cells("norm_ratio"), worst, ev),
        "angle": seed_verdict(CLAIMS["2a"], cells("angle_ratio"), worst, {})})


def lm_table(store, spec) -> pd.DataFrame:
    """Per run: final train loss (mean over the last 10% of steps), val loss, bucket losses."""
    runs = runs_frame(store, spec)
    m = series(store, spec, ["train/loss"] + [f"val_bucket/loss/b{j}" for j in range(BUCKETS)])
    rows = []
    for _, r in runs.iterrows():
        mr = m[m["run_id"] == r["run_id"]]
        tl = mr[mr["key"] == "train/loss"].sort_values("step")
        row = {"run_id": r["run_id"], SEED: r[SEED], WD: float(r[WD]),
               "schedule": r["schedule.name"], "val": r["loss"],
               "train": wa.tail_mean(tl["step"], tl["value"], 0.1)}
        for j in range(BUCKETS):
            b = mr[mr["key"] == f"val_bucket/loss/b{j}"].sort_values("step")
            row[f"b{j}"] = float(b["value"].iloc[-1]) if len(b) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _paired(t: pd.DataFrame, schedule: str, col: str, lam: float) -> np.ndarray:
    """Per seed: ``col`` at λ minus at λ = 0 (same seed, same batches), one schedule."""
    d = t[t["schedule"] == schedule].pivot_table(index=SEED, columns=WD, values=col)
    return (d[lam] - d[0.0]).to_numpy(float) if lam in d and 0.0 in d else np.array([])


def lm_verdicts(t: pd.DataFrame) -> list[dict]:
    if not len(t):
        return [not_measured(CLAIMS[k], "no finished LM runs") for k in ("3a", "4")]
    lams = sorted(t[WD].unique())
    means = t.groupby(["schedule", WD])[["train", "val"]].mean().round(4)
    ev = {"lambdas": lams, "eta_lambda_T": list(D_ANGELO),
          "train_val_by_schedule_and_lambda": {f"{s} λ={lam:g}": row.to_dict()
                                               for (s, lam), row in means.iterrows()},
          "val_gap_cosine": {f"{x:g}": _r(np.mean(_paired(t, "cosine", "val", x)))
                             for x in lams[1:]},
          "val_gap_constant": {f"{x:g}": _r(np.mean(_paired(t, "constant", "val", x)))
                               for x in lams[1:]}}
    parts = {}
    for lam, k in zip(lams[1:], D_ANGELO):
        for sched, claim in (("cosine", CLAIMS["3a"]), ("constant", CLAIMS["3b"])):
            parts[f"{sched} λ={lam:g} (ηλT={k:g})"] = seed_verdict(
                claim, _paired(t, sched, "train", lam), np.mean, ev if not parts else {})
    three = combine(CLAIMS["3a"].text.replace(" (D'Angelo et al. 2024)", "") +
                    "; at constant LR it does not (D'Angelo et al. 2024)", parts)
    top, last = lams[-1], f"b{BUCKETS - 1}"
    gap = _paired(t, "cosine", "b0", top) - _paired(t, "cosine", last, top)
    four = seed_verdict(CLAIMS["4"], gap, np.mean, {
        "Δloss per bucket (largest λ - 0, b0 rarest)": {
            f"b{j}": _r(np.mean(_paired(t, "cosine", f"b{j}", top))) for j in range(BUCKETS)},
        "λ": top, "buckets": f"{BUCKETS} quantiles of the training tokens' mass"})
    return [three, four]


def lawn_switch(spec: SweepSpec) -> int:
    """LAWN's switch step (the base runs are read at the same step)."""
    return max(e.get("free_steps", 0) for e in spec.zip["optim.extra"])


def lawn_table(store, spec, switch: int) -> pd.DataFrame:
    """Per run: final val loss/acc, max|logit| at the LAWN switch and at the end."""
    runs = runs_frame(store, spec)
    m = series(store, spec, ["wd/logit_max"])
    rows = []
    for _, r in runs.iterrows():
        lg = m[m["run_id"] == r["run_id"]].sort_values("step")
        at = lg[lg["step"] >= switch]
        rows.append({"run_id": r["run_id"], SEED: r[SEED], "opt": r["optim.name"],
                     "batch": int(r["train.batch_size"]), "val": r["loss"],
                     "acc": pd.to_numeric(r.get("final_val_acc"), errors="coerce"),
                     "logit_switch": float(at["value"].iloc[0]) if len(at) else math.nan,
                     "logit_end": float(lg["value"].iloc[-1]) if len(lg) else math.nan})
    t = pd.DataFrame(rows)
    if len(t):
        t["growth"] = np.log(t["logit_end"] / t["logit_switch"])
    return t


def _lawn_paired(t: pd.DataFrame, base: str, col: str, batch: int) -> np.ndarray:
    """Per seed: base minus LAWN-base, one batch size."""
    d = t[t["batch"] == batch].pivot_table(index=SEED, columns="opt", values=col)
    return (d[base] - d["lawn-" + base]).to_numpy(float) if base in d else np.array([])


def lawn_verdict(t: pd.DataFrame) -> dict:
    if not len(t):
        return not_measured(CLAIMS["5a"], "no finished LAWN runs")
    big, small = int(t["batch"].max()), int(t["batch"].min())
    means = t.groupby(["opt", "batch"])[["val", "acc", "logit_switch", "logit_end"]].mean()
    ev = {"arms": {f"{o} batch {b}": {k: _r(v) for k, v in row.items()}
                   for (o, b), row in means.iterrows()},
          "val_gain_sgd_large": _r(np.mean(_lawn_paired(t, "sgd", "val", big))),
          "val_gain_sgd_small": _r(np.mean(_lawn_paired(t, "sgd", "val", small))),
          "val_gain_adamw_small": _r(np.mean(_lawn_paired(t, "adamw", "val", small))),
          "acc_gain_adamw_large": _r(-np.mean(_lawn_paired(t, "adamw", "acc", big)))}
    a = seed_verdict(CLAIMS["5a"], _lawn_paired(t, "adamw", "growth", big), np.mean, ev)
    b = seed_verdict(CLAIMS["5b"], _lawn_paired(t, "adamw", "val", big), np.mean, {})
    return combine("[5] LAWN keeps the logit scale bounded where AdamW's grows and improves "
                   "AdamW's large-batch result (Gupta et al. 2021)", {"logits": a, "val_loss": b})


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    from proxylab.report import wd_figures as wf  # noqa: PLC0415 (matplotlib, lazily)

    grid, lm, eq, lawn = specs
    t = grid_table(store, grid)
    return {**wf.heatmaps(grid_optima(t), {m: t[t["optim.wd_mode"] == m] for m in MODES}, out_dir),
            **wf.equilibrium(series(store, eq, prefix=("wd/row_norm/", "wd/row_angle/")),
                             runs_frame(store, eq), equilibrium_table(store, eq), out_dir),
            **wf.lm_curves(series(store, lm, ["train/loss", "lr_mult"]), runs_frame(store, lm),
                           out_dir),
            **wf.buckets(lm_table(store, lm), BUCKETS, out_dir),
            **wf.lawn_logits(series(store, lawn, ["wd/logit_max", "wd/head_norm"]),
                             runs_frame(store, lawn), out_dir)}
