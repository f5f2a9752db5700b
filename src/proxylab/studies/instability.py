"""Small-scale proxies for Transformer training instabilities (Wortsman et al. 2023).

Byte-level GPT proxies (0.02–0.2M non-embedding parameters) on the built-in corpus, swept
over the peak LR with and without each intervention of the paper: qk-layernorm, z-loss,
warmup length, independent vs coupled weight decay, μP(simple), depth vs width; plus the
κ transplant (the attention-logit scale imposed), the AdamW-ε regime (gradients scaled
below ε) and the early-warning extrapolation of the layer-0 max logit to a larger size.
Every verdict is computed from the stored runs with the shared rule of
``proxylab.analysis.verdict`` (a margin stated here, a bootstrap interval over seeds, or
over LR grid points where a sweep has one seed).

At this scale divergence rarely means NaN: the logit blow-up degrades the loss (research
brief §9), so "unstable" is judged by the loss (see ``analysis.instability.unstable_runs``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from proxylab.analysis import final_metrics
from proxylab.analysis.instability import (add_run_stats, bigram_counts, bigram_loss,
                                           coord_check, early_warning, log_ratio,
                                           loglog_slope, norm_share, sensitivity,
                                           sensitivity_gap, unstable_runs)
from proxylab.analysis.lr import lr_curves, lr_sensitivity
from proxylab.analysis.transfer import transfer_verdict
from proxylab.analysis.verdict import Claim, bootstrap_runs, combine, decide, not_measured
from proxylab.sweep.spec import SweepSpec

NAME = "instability"
CLAIM = ("Small Transformers show the instabilities of large ones at high LR, and the "
         "paper's mitigations cure them (Wortsman et al. 2023)")
PAPER = "Wortsman et al. 2023"
LR = "optim.lr"
HIGH_LR = 3e-2            # "high LR": the part of the grid where the instabilities live
FULL_ONLY = "measured only in the full form (`proxylab study instability`)"

# ----------------------------------------------------------------------------------
# the sweeps: one per question, at three sizes (smoke for tests, quick, full)

# (width, heads): head dimension 16 throughout; depth 2 unless a sweep says otherwise
SIZES = {"smoke": [(16, 1), (32, 2)], "quick": [(32, 2), (64, 4)],
         "full": [(32, 2), (48, 3), (64, 4), (96, 6)]}
LRS = {"smoke": [1e-2, 1e-1], "quick": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
       "full": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]}
STEPS = {"smoke": 20, "quick": 200, "full": 400}
SEEDS = {"smoke": None, "quick": [0, 1], "full": [0, 1]}
KAPPAS = [1.0, 10.0, 100.0, 1e3, 1e4]
LOSS_SCALE = 1e-6          # pushes gradient RMS (~1e-3) far below AdamW's eps = 1e-8
EPS_LRS = {"smoke": [1e-2], "quick": [3e-3, 1e-2, 3e-2], "full": [3e-3, 1e-2, 3e-2]}


def _base(size: str) -> dict:
    """The paper's defaults (§2.1) at proxy scale: pre-LN, RoPE, no biases, qk-LN off
    (it is the intervention), AdamW β2 0.95 eps 1e-8, clip 1, independent wd 1e-4,
    z-loss 1e-4, 5% warmup then cosine."""
    steps = STEPS[size]
    return {
        "task.name": "text", "task.seq_len": 64,
        "model.name": "gpt", "model.depth": 2, "model.pos": "rope", "model.norm": "layernorm",
        "optim.name": "adamw", "optim.beta1": 0.9, "optim.beta2": 0.95, "optim.eps": 1e-8,
        "optim.weight_decay": 1e-4, "optim.wd_mode": "independent",
        "schedule.name": "cosine", "schedule.warmup": 0.05, "schedule.min_lr_frac": 0.01,
        "train.steps": steps, "train.batch_size": 16 if size != "smoke" else 8,
        "train.z_loss": 1e-4, "train.grad_clip": 1.0,
        "train.eval_every": max(steps // 4, 1), "train.eval_batches": 16 if size != "smoke" else 2,
        "train.log_every": 10 if size != "smoke" else 5,
    }


def _spec(size: str, name: str, base: dict | None = None, grid: dict | None = None,
          zip_: dict | None = None, seeds="default", description: str = "") -> SweepSpec:
    suffix = "" if size == "full" else f"-{size}"
    return SweepSpec(name=f"{NAME}-{name}{suffix}", base={**_base(size), **(base or {})},
                     grid=grid or {}, zip=zip_ or {},
                     seeds=SEEDS[size] if seeds == "default" else seeds, description=description)


def _sizes(size: str, which=None) -> dict:
    pairs = SIZES[size] if which is None else which
    return {"model.width": [w for w, _ in pairs], "model.heads": [h for _, h in pairs]}


def sweeps(size: str) -> list[SweepSpec]:
    lrs, full = LRS[size], size == "full"
    specs = [
        _spec(size, "qk", grid={"model.qk_norm": [False, True], LR: lrs}, zip_=_sizes(size),
              description="claims 1, 2, 8, 10, 11: qk-layernorm x LR x size"),
        _spec(size, "zloss", base={"model.qk_norm": True, "model.width": SIZES[size][-1][0],
                                   "model.heads": SIZES[size][-1][1], "optim.weight_decay": 0.0},
              grid={"train.z_loss": [0.0, 1e-4], LR: lrs,
                    **({"optim.weight_decay": [0.0, 1e-4]} if full else {})},
              seeds=None if size != "full" else [0, 1],
              description="claim 3: z-loss (and weight decay) x LR"),
        _spec(size, "mup", base={"model.qk_norm": True, "model.base_width": 32 if size != "smoke" else 16},
              grid={"model.param": ["sp", "mup-simple"], LR: lrs},
              zip_=_sizes(size, {"smoke": [(16, 1), (32, 2)], "quick": [(32, 2), (96, 6)],
                                 "full": [(32, 2), (64, 4), (128, 8)]}[size]),
              seeds=None if size == "smoke" else [0, 1],
              description="claim 6: SP vs muP(simple) x LR x width, and the coord check"),
        _spec(size, "kappa", base={"model.width": 64 if size != "smoke" else 16,
                                   "model.heads": 4 if size != "smoke" else 1, LR: 1e-2},
              grid={"model.qk_kappa": KAPPAS if size != "smoke" else [1.0, 1e4]},
              description="claim 9: the attention-logit scale imposed (kappa transplant)"),
        # no clipping here: a clip at norm 1 acts on unscaled gradients only and would make
        # the scaled and unscaled runs differ for a reason other than eps
        _spec(size, "eps", base={"model.qk_norm": True, "model.width": SIZES[size][0][0],
                                 "model.heads": SIZES[size][0][1], "train.grad_clip": 0.0},
              grid={LR: EPS_LRS[size]},
              zip_={"optim.name": ["adamw", "adamw", "adamw", "adam-atan2", "adam-atan2"],
                    "optim.eps": [1e-8, 1e-8, 1e-15, 1e-8, 1e-8],
                    "train.loss_scale": [1.0, LOSS_SCALE, LOSS_SCALE, 1.0, LOSS_SCALE]},
              seeds=None if size != "full" else [0, 1],
              description="claim 10: gradients below AdamW's eps; eps 1e-15 and Adam-atan2"),
    ]
    if full:
        largest = {"model.qk_norm": True, "model.width": 96, "model.heads": 6}
        specs += [
            _spec(size, "warmup", base=largest, grid={"schedule.warmup": [0.05, 0.25], LR: lrs},
                  description="claim 4: warmup length x LR"),
            _spec(size, "wd", base={"model.qk_norm": True, "model.width": 64, "model.heads": 4},
                  grid={LR: lrs},
                  zip_={"optim.wd_mode": ["independent", "decoupled"],
                        "optim.weight_decay": [1e-4, 0.1]},
                  description="claim 5: independent (1e-4) vs coupled torch (0.1) weight decay"),
            _spec(size, "shape", base={"model.qk_norm": True}, grid={LR: lrs},
                  zip_={"model.width": [64, 128, 64], "model.depth": [2, 2, 8],
                        "model.heads": [4, 8, 4]},
                  seeds=None, description="claim 7: 4x N by width (128x2) or by depth (64x8)"),
        ]
    return specs


# ----------------------------------------------------------------------------------
# per-run numbers the verdicts and figures use


def n_params(width, depth) -> float:
    """Non-embedding, non-head parameters (Wortsman's N): 12 d^2 L with no biases."""
    return 12.0 * width ** 2 * depth


PROBES = {   # column: (metric key, how to summarise the trajectory)
    "peak_logit": ("attn/max_logit/l0", "max"),
    "late_logit": ("attn/max_logit/l0", "tail_mean"),
    "qk_norm": ("attn/qk_norm/l0", "tail_mean"),
    "qk_cos": ("attn/qk_cos/l0", "tail_mean"),
    "entropy": ("attn/entropy/l0", "tail_mean"),
    "early_logit": ("attn/max_logit/l0", "first"),
    "logz_late": ("logz_train", "tail_mean"),
    "grad_rms": ("opt/grad_rms/blocks.0.mlp.fc.weight", "tail_mean"),
    "update_rms": ("opt/update_rms/blocks.0.mlp.fc.weight", "tail_mean"),
}


# the coord check: mean |residual| after each block at the first probe ("after a few steps")
COORD = {f"coord/l{i}": (f"resid_l1/l{i}", "first") for i in range(2)}


def load(store, spec: SweepSpec, extra: dict | None = None) -> pd.DataFrame:
    """final_metrics of a sweep plus the probe summaries of PROBES (and ``extra``)."""
    runs = store.runs(sweep=spec.name)
    metrics = store.metrics(sweep=spec.name)
    df = add_run_stats(final_metrics(runs, metrics), metrics, {**PROBES, **(extra or {})})
    for key in ("model.width", "model.depth"):
        if key not in df:
            df[key] = runs[key].iloc[0] if len(runs) else math.nan
    df["N"] = n_params(df["model.width"].astype(float), df["model.depth"].astype(float))
    return df


def _unit(df: pd.DataFrame) -> str:
    """Bootstrap over seeds where there are several, else over LR grid points."""
    return "train.seed" if "train.seed" in df and df["train.seed"].nunique() >= 2 else LR


def _verdict(claim: Claim, df: pd.DataFrame, stat, *, unit: str | None = None,
             evidence: dict | None = None) -> dict:
    unit = unit or _unit(df)
    est, lo, hi, n = bootstrap_runs(df, stat, unit=unit)
    return decide(claim, est, lo, hi, n=n, evidence={"bootstrap_unit": unit, **(evidence or {})},
                  reason_extra=f"bootstrap over {n} {'seeds' if unit == 'train.seed' else 'values of ' + unit}")


def _sens_table(df: pd.DataFrame, keys: list[str]) -> dict:
    """LR sensitivity per group, for the evidence ({group: value})."""
    out = lr_sensitivity(lr_curves(df, group_keys=keys))
    return {" ".join(f"{k.split('.')[-1]}={r[k]}" for k in keys): round(float(r["lr_sensitivity"]), 4)
            for _, r in out.iterrows()}


def _sens_claim(text: str, effect: str, df: pd.DataFrame, arm: str, a, b, *,
                margin: float = 0.02, direction: str = "greater", keys=None) -> dict:
    claim = Claim(text=text, effect=effect, direction=direction, margin=margin, unit="nats")
    return _verdict(claim, df, lambda d: sensitivity_gap(d, arm, a, b),
                    evidence={"lr_sensitivity": _sens_table(df, keys or [arm]),
                              "lrs": sorted(float(x) for x in df[LR].unique())})


def _largest(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["N"] == df["N"].max()]


# ----------------------------------------------------------------------------------
# the verdicts, one per claim of the issue, in its order


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    by = {s.name.split("-")[1]: s for s in specs}
    qk = load(store, by["qk"])
    return [claim_logit_growth(qk), claim_qk_sensitivity(qk), claim_zloss(load(store, by["zloss"])),
            claim_sensitivity_arm(store, by, "warmup", "schedule.warmup", 0.05, 0.25,
                                  "Longer warmup (25% vs 5% of training) lowers LR sensitivity"),
            claim_sensitivity_arm(store, by, "wd", "optim.wd_mode", "decoupled", "independent",
                                  "Independent weight decay (1e-4) gives lower LR sensitivity "
                                  "than coupled torch decay (0.1)"),
            claim_mup(load(store, by["mup"], extra=COORD)), claim_depth_width(store, by), claim_norm_not_cos(qk),
            claim_kappa(load(store, by["kappa"]), bigram_baseline(by["kappa"])),
            claim_eps(qk, load(store, by["eps"])), claim_early_warning(qk)]


def claim_logit_growth(qk: pd.DataFrame) -> dict:
    text = (f"Without qk-layernorm the layer-0 max attention logit grows by orders of magnitude "
            f"with LR and grows with size; with it, it stays small ({PAPER} §3.1.1)")
    off = qk[~qk["model.qk_norm"].astype(bool)]
    big, sizes = _largest(off), sorted(off["N"].unique())
    high = qk[LR] >= HIGH_LR
    parts = {
        "grows_with_lr": _verdict(
            Claim(text="peak max logit rises with LR (no qk-LN, largest size)",
                  effect="slope of log10 peak max logit vs log10 LR", direction="greater",
                  margin=0.5, unit="decades per decade"),
            big, lambda d: loglog_slope(*_seed_mean(d, "peak_logit"))),
        "qk_ln_keeps_it_small": _verdict(
            Claim(text=f"qk-LN keeps it orders of magnitude smaller at LR >= {HIGH_LR:g}",
                  effect="mean over high LRs and sizes of log10(peak logit no qk-LN / qk-LN)",
                  direction="greater", margin=1.0, unit="decades"),
            qk[high], lambda d: np.nanmean([log_ratio(d[d["N"] == n], "peak_logit",
                                                      "model.qk_norm", False, True)
                                            for n in sizes])),
        "grows_with_size": _verdict(
            Claim(text="peak max logit grows with size (no qk-LN, LR >= 1e-2)",
                  effect="mean over LRs of log10(peak logit largest / smallest size)",
                  direction="greater", margin=0.1, unit="decades"),
            off[off[LR] >= 1e-2], lambda d: log_ratio(d, "peak_logit", "N", sizes[-1], sizes[0])),
    }
    out = combine(text, parts)
    out["evidence"]["peak_logit"] = _table(qk, ["model.qk_norm", "N"], "peak_logit")
    return out


def claim_qk_sensitivity(qk: pd.DataFrame) -> dict:
    return _sens_claim(f"qk-layernorm lowers LR sensitivity ({PAPER} Fig. 1)",
                       "LR sensitivity without qk-LN minus with it (largest size)",
                       _largest(qk), "model.qk_norm", False, True)


def claim_zloss(z: pd.DataFrame) -> dict:
    text = (f"z-loss keeps log Z near 0 at high LR without weight decay, and lowers LR "
            f"sensitivity ({PAPER} §3.1.2)")
    if "optim.weight_decay" in z:
        z = z[z["optim.weight_decay"] == 0.0]
    high = z[z[LR] >= HIGH_LR]

    def drift(d):
        a = d[d["train.z_loss"] == 0.0]["logz_late"].abs().mean()
        b = d[d["train.z_loss"] > 0]["logz_late"].abs().mean()
        return a - b

    parts = {
        "log_z_pinned": _verdict(
            Claim(text=f"|log Z| late in training is larger without z-loss (LR >= {HIGH_LR:g})",
                  effect="mean |log Z| without z-loss minus with it", direction="greater",
                  margin=0.5, unit="nats"), high, drift,
            evidence={"logz_late": _table(z, ["train.z_loss"], "logz_late")}),
        "sensitivity": _sens_claim("z-loss lowers LR sensitivity",
                                   "LR sensitivity without z-loss minus with it",
                                   z, "train.z_loss", 0.0, 1e-4),
    }
    return combine(text, parts)


def claim_sensitivity_arm(store, by: dict, name: str, arm: str, worse, better, text: str) -> dict:
    claim = Claim(text=f"{text} ({PAPER} §3.2)", effect=f"LR sensitivity {arm}={worse} minus "
                  f"{arm}={better}", direction="greater", margin=0.02, unit="nats")
    if name not in by:
        return not_measured(claim, FULL_ONLY)
    return _sens_claim(claim.text, claim.effect, load(store, by[name]), arm, worse, better)


def claim_mup(m: pd.DataFrame) -> dict:
    text = (f"muP(simple) keeps the optimal LR across widths where SP moves it, but does not "
            f"lower LR sensitivity ({PAPER} §3.2, Fig. 8)")
    cols = ["run_id", "status", "model.param", "model.width", LR, "train.seed",
            "final_val_loss", "init_loss", "diverged"]
    transfer = transfer_verdict(m[[c for c in cols if c in m]], mup="mup-simple")
    widest = m[m["model.width"] == m["model.width"].max()]
    no_gain = _sens_claim("muP(simple) does not lower LR sensitivity (widest model)",
                          "LR sensitivity SP minus muP(simple)", widest, "model.param", "sp",
                          "mup-simple", direction="less", margin=0.02)
    out = combine(text, {"optimum_transfers": transfer, "no_sensitivity_gain": no_gain})
    early = add_coord_check(m)
    out["evidence"]["coord_check_slopes"] = {
        f"{r['model.param']} {r['layer']}": round(r["slope"], 3) for _, r in early.iterrows()}
    return out


def add_coord_check(m: pd.DataFrame, lr: float = 1e-2) -> pd.DataFrame:
    """The coord check at one LR (the grid point nearest ``lr``): activation size against
    width after a few steps; averaging over LRs would let the unstable ones dominate."""
    layers = sorted(c for c in m.columns if c.startswith("coord/"))
    if not layers or m.empty:
        return pd.DataFrame(columns=["model.param", "layer", "slope", "widths", "values"])
    grid = np.array(sorted(m[LR].unique()))
    at = grid[np.argmin(np.abs(np.log(grid / lr)))]
    return coord_check(m[m[LR] == at], layer_cols=layers)


def claim_depth_width(store, by: dict) -> dict:
    claim = Claim(text=f"Depth raises LR sensitivity faster than width at matched N ({PAPER} §3.2, Fig. 7)",
                  effect="LR sensitivity of 64x8 minus 128x2 (both 4x the 64x2 base)",
                  direction="greater", margin=0.01, unit="nats")
    if "shape" not in by:
        return not_measured(claim, FULL_ONLY)
    df = load(store, by["shape"])
    # a config-like column name, so the LR-curve helpers group by it
    df["model.shape"] = (df["model.width"].astype(int).astype(str) + "x"
                         + df["model.depth"].astype(int).astype(str))
    return _sens_claim(claim.text, claim.effect, df, "model.shape", "64x8", "128x2", margin=0.01)


def claim_norm_not_cos(qk: pd.DataFrame) -> dict:
    off = _largest(qk[~qk["model.qk_norm"].astype(bool)])
    claim = Claim(text=f"The attention-logit growth comes from |q||k|, not the q-k cosine "
                       f"({PAPER} Fig. E.1)",
                  effect="share of the late max-logit growth (lowest to highest LR, no qk-LN) "
                         "that the growth of mean |q||k| accounts for",
                  direction="greater", margin=0.5, unit="fraction of decades")
    cos = off.groupby(LR)["qk_cos"].mean()
    return _verdict(claim, off, lambda d: norm_share(d, logit="late_logit"),
                    evidence={"qk_cos_by_lr": {f"{k:g}": round(v, 3) for k, v in cos.items()},
                              "qk_norm_by_lr": _table(off, [], "qk_norm"),
                              "late_logit_by_lr": _table(off, [], "late_logit")})


def bigram_baseline(spec: SweepSpec, n_batches: int = 400) -> float:
    """The zero-layer bigram model's validation loss on the sweep's task and eval batches."""
    import torch  # noqa: PLC0415

    from proxylab.config import from_flat  # noqa: PLC0415
    from proxylab.tasks import build_task  # noqa: PLC0415

    cfg = from_flat(spec.base)
    task = build_task(cfg.task, seed=0)
    gen = torch.Generator().manual_seed(0)
    train = [tuple(t.numpy() for t in task.train_batch(64, gen)) for _ in range(n_batches)]
    val = [tuple(t.numpy() for t in b) for b in task.val_batches(cfg.train.batch_size,
                                                                 cfg.train.eval_batches)]
    return bigram_loss(bigram_counts(train, task.vocab_size), val)


def claim_kappa(k: pd.DataFrame, bigram: float) -> dict:
    text = (f"Loss degrades once the imposed attention-logit scale kappa reaches ~1e3 and "
            f"approaches the zero-layer bigram baseline by 1e4 ({PAPER} §3.4, Fig. 10)")
    loss = "final_val_loss"

    def at(d, kappa):
        return d[d["model.qk_kappa"] == kappa][loss].mean()

    kmax = k["model.qk_kappa"].max()
    parts = {
        "degrades_by_1e3": _verdict(
            Claim(text="loss at kappa 1e3 is worse than at kappa 1", effect="loss(1e3) - loss(1)",
                  direction="greater", margin=0.05, unit="nats"),
            k, lambda d: at(d, 1e3) - at(d, 1.0)),
        "near_bigram_at_1e4": _verdict(
            Claim(text="loss at kappa 1e4 is no better than the bigram baseline minus 0.1 nats",
                  effect="loss(kappa max) - bigram loss", direction="greater", margin=-0.1,
                  unit="nats"),
            k, lambda d: at(d, kmax) - bigram),
    }
    out = combine(text, parts)
    out["evidence"].update(bigram_loss=round(bigram, 4),
                           loss_by_kappa=_table(k, ["model.qk_kappa"], loss),
                           realised_max_logit=_table(k, ["model.qk_kappa"], "late_logit"))
    return out


def claim_eps(qk: pd.DataFrame, e: pd.DataFrame) -> dict:
    text = (f"Gradient RMS falls with LR and size; once it is below eps the update RMS "
            f"collapses and loss suffers; eps = 1e-15 or Adam-atan2 restore it ({PAPER} §3.4)")
    on = qk[qk["model.qk_norm"].astype(bool)]
    sizes = sorted(on["N"].unique())
    e = e.copy()
    e["variant"] = (e["optim.name"] + " eps=" + e["optim.eps"].map(lambda x: f"{x:g}")
                    + " scale=" + e["train.loss_scale"].map(lambda x: f"{x:g}"))
    ref, col = "adamw eps=1e-08 scale=1", "adamw eps=1e-08 scale=1e-06"
    fix, atan, atan_ref = ("adamw eps=1e-15 scale=1e-06", "adam-atan2 eps=1e-08 scale=1e-06",
                           "adam-atan2 eps=1e-08 scale=1")

    def diff(column, a, b, log=False):
        def stat(d):
            va, vb = (d[d["variant"] == v].groupby(LR)[column].mean() for v in (a, b))
            return float(np.mean(np.log10(va / vb) if log else va - vb))
        return stat

    parts = {
        "grad_rms_falls_with_lr": _verdict(
            Claim(text="gradient RMS (block 0 MLP, last 20%) falls with LR (qk-LN, largest size)",
                  effect="slope of log10 grad RMS vs log10 LR", direction="less", margin=0.0,
                  unit="decades per decade"),
            _largest(on), lambda d: loglog_slope(*_seed_mean(d, "grad_rms"))),
        "grad_rms_falls_with_size": _verdict(
            Claim(text="gradient RMS falls with size (qk-LN)", effect="mean over LRs of "
                  "log10(grad RMS largest / smallest size)", direction="less", margin=0.0,
                  unit="decades"),
            on, lambda d: log_ratio(d, "grad_rms", "N", sizes[-1], sizes[0])),
        "update_rms_collapses": _verdict(
            Claim(text=f"with gradients x{LOSS_SCALE:g} (below eps) AdamW's update RMS collapses",
                  effect="log10(update RMS scaled / unscaled)", direction="less", margin=-0.3,
                  unit="decades"), e, diff("update_rms", col, ref, log=True)),
        "loss_suffers": _verdict(
            Claim(text="and its loss suffers", effect="loss scaled minus unscaled",
                  direction="greater", margin=0.05, unit="nats"), e, diff("final_val_loss", col, ref)),
        "eps_1e-15_restores": _verdict(
            Claim(text="eps = 1e-15 restores the unscaled loss", effect="loss (eps 1e-15, scaled) "
                  "minus loss (eps 1e-8, unscaled)", direction="within", margin=0.05,
                  unit="nats"), e, diff("final_val_loss", fix, ref)),
        "atan2_restores": _verdict(
            Claim(text="Adam-atan2 is unaffected by the scale", effect="loss atan2 scaled minus "
                  "unscaled", direction="within", margin=0.02, unit="nats"),
            e, diff("final_val_loss", atan, atan_ref)),
    }
    out = combine(text, parts)
    out["evidence"].update(grad_rms=_table(on, ["N"], "grad_rms"),
                           loss_by_variant=_table(e, ["variant"], "final_val_loss"),
                           update_rms_by_variant=_table(e, ["variant"], "update_rms"))
    return out


def claim_early_warning(qk: pd.DataFrame, delta: float = 0.1) -> dict:
    claim = Claim(text=f"Fitting the early layer-0 max logit against size predicts which runs of "
                       f"the next size become unstable ({PAPER} §3.3)",
                  effect="balanced accuracy of the predicted unstable (size, LR) points at the "
                         "largest size", direction="greater", margin=0.6, unit="")
    off = qk[~qk["model.qk_norm"].astype(bool)].copy()
    if off["N"].nunique() < 3:
        return not_measured(claim, FULL_ONLY + " (needs at least three sizes)")
    off["unstable"] = unstable_runs(off, size_key="model.width", delta=delta)

    def stat(d):
        d = d.copy()
        d["unstable"] = unstable_runs(d, size_key="model.width", delta=delta)
        return early_warning(d, size_key="N")["balanced_accuracy"]

    ew = early_warning(off, size_key="N")
    return _verdict(claim, off, stat, evidence={
        "precision": ew["precision"], "recall": ew["recall"],
        "threshold_log10_logit": ew["threshold_log10"], "degree": ew["degree"],
        "instability_rule": f"above the size's optimal LR and > {delta} nats worse than its best",
        "predicted": ew["table"].to_dict("records")})


def _seed_mean(d: pd.DataFrame, column: str):
    m = d.groupby(LR)[column].mean()
    return m.index.to_numpy(dtype=float), m.to_numpy(dtype=float)


def _table(df: pd.DataFrame, keys: list[str], column: str) -> dict:
    """{"key=value ... lr=x": seed-mean of column} for the evidence."""
    m = df.groupby([*keys, LR])[column].mean()
    out = {}
    for idx, v in m.items():
        idx = idx if isinstance(idx, tuple) else (idx,)
        label = " ".join(f"{k.split('.')[-1]}={x:g}" if isinstance(x, float) else f"{k.split('.')[-1]}={x}"
                         for k, x in zip([*keys, "lr"], idx))
        out[label] = None if not np.isfinite(v) else round(float(v), 4)
    return out


# ----------------------------------------------------------------------------------
# figures (drawn in report/instability_figures.py: LR curves per mitigation, max logit vs LR and
# size, norm vs cosine, log Z over training, muP and the coord check, kappa, eps, early warning)


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    from proxylab.report.instability_figures import draw  # noqa: PLC0415

    return draw(store, specs, out_dir)
