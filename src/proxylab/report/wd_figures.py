"""Figures of the weight-decay study (studies/weight_decay.py): one question per figure.

Each function draws one PNG into ``out_dir`` and returns ``{file: {"question", "detail",
"numbers"}}`` with the numbers behind the figure. Inputs are the study's DataFrames
(per-run frames and long-form metrics), so nothing here touches the store.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from proxylab.analysis import weight_decay as wa  # noqa: E402

WD, LR, SEED = "optim.weight_decay", "optim.lr", "train.seed"
MODE_TITLES = {"l2": "Adam + L2", "decoupled": "AdamW, torch form (decay η·λ)",
               "independent": "AdamW, L&H form (decay s_t·λ)"}


def _r(x, nd=4):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def _save(fig, out_dir, name: str) -> str:
    fig.tight_layout()
    fig.savefig(Path(out_dir) / name)
    plt.close(fig)
    return name


def _seed_mean(m: pd.DataFrame, runs: pd.DataFrame, by: list[str], key: str) -> pd.DataFrame:
    """Mean over seeds of metric ``key`` per step and group ``by`` (config columns)."""
    d = m[m["key"] == key].merge(runs[["run_id", *by]], on="run_id")
    return d.groupby([*by, "step"], as_index=False)["value"].mean()


# ----------------------------------------------------------------------------------


def heatmaps(optima: dict, tables: dict, out_dir) -> dict:
    """Final validation loss over (η, λ) per weight-decay mode, with λ*(η) drawn on top."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables), 3.9), dpi=120)
    numbers = {}
    for ax, (mode, df) in zip(np.atleast_1d(axes), tables.items()):
        if not len(df):
            continue
        z = df[df[WD] > 0].groupby([WD, LR])["loss"].mean().unstack(LR)
        lrs, lams = list(z.columns), list(z.index)
        # log colours: one diverging corner must not flatten the basin
        im = ax.imshow(z.to_numpy(), origin="lower", aspect="auto", cmap="viridis_r",
                       norm=matplotlib.colors.LogNorm())
        fig.colorbar(im, ax=ax, label="final val loss (nats, log colour scale)")
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
        ax.set_yticks(range(len(lams)), [f"{v:g}" for v in lams])
        ax.set_xlabel("peak LR η (log grid)")
        ax.set_ylabel("weight decay λ (log grid)")
        opt = optima[mode]
        if len(opt):
            xi = np.interp(np.log(opt["lr"]), np.log(lrs), range(len(lrs)))
            yi = np.interp(np.log(opt["wd_opt"]), np.log(lams), range(len(lams)))
            ax.plot(xi, yi, "w-o", ms=4, label="λ*(η)")
            ax.legend(fontsize=7, loc="upper right")
        slope = wa.interior_slope(opt["lr"], opt["wd_opt"], opt["edge"]) if len(opt) else math.nan
        ax.set_title(f"{MODE_TITLES.get(mode, mode)}\nslope d log λ*/d log η = {slope:.2f} "
                     f"({int((~opt['edge']).sum())} interior optima)", fontsize=9)
        numbers[mode] = {"lr": [float(v) for v in opt["lr"]],
                         "wd_opt": [_r(v, 6) for v in opt["wd_opt"]],
                         "edge": [bool(v) for v in opt["edge"]], "slope": _r(slope, 3)}
    name = _save(fig, out_dir, "weight_decay_heatmaps.png")
    return {name: {"question": "Where is the loss-optimal weight decay, and how does it move "
                               "with the LR under Adam + L2 and the two AdamW forms?",
                   "detail": "Final validation loss (digits MLP, scale-invariant hidden layers, "
                             "seeds averaged) over the LR x λ grid; the white line is λ*(η) "
                             "(parabola in log λ around the grid minimum); the slope uses only "
                             "optima inside the grid.",
                   "numbers": numbers}}


def equilibrium(m: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, out_dir) -> dict:
    """Per-neuron norm and one-step angle against time in relaxation times, with the
    predicted equilibrium of each (η, λ) as a dashed line."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4), dpi=120)
    numbers = {}
    if len(runs) and len(table):
        points = sorted({(float(a), float(b)) for a, b in zip(runs[LR], runs[WD])})
        colors = plt.cm.tab10(np.arange(len(points)))
        tensors = sorted(table["tensor"].unique())
        styles = dict(zip(tensors, ("-", ":", "-.", "--")))
        for ax, kind in zip(axes, ("row_norm", "row_angle")):
            for (lr, lam), col in zip(points, colors):
                sub = runs[(runs[LR] == lr) & (runs[WD] == lam)]
                pred = (table[(table[LR] == lr) & (table[WD] == lam)]
                        ["pred_norm" if kind == "row_norm" else "pred_angle"].iloc[0])
                for tensor in tensors:
                    d = _seed_mean(m, sub, [], f"wd/{kind}/{tensor}")
                    ax.plot(d["step"] * lr * lam, d["value"], styles.get(tensor, "-"),
                            color=col, lw=1.2,
                            label=f"η={lr:g}, λ={lam:g}" if tensor == tensors[0] else None)
                ax.axhline(pred, color=col, ls="--", lw=0.9, alpha=0.8)
                numbers[f"{kind} predicted η={lr:g} λ={lam:g}"] = _r(pred, 5)
            ax.axvline(3, color="grey", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("steps × ηλ (relaxation times; grey: 3)")
        axes[0].set_ylabel("mean per-neuron norm ‖w_i‖")
        axes[0].set_title("Per-neuron norm vs sqrt(ηC/2λ) (dashed)", fontsize=9)
        axes[1].set_ylabel("mean one-step angle (radians)")
        axes[1].set_title("Angular update vs sqrt(2ηλ(1-β1)/(1+β1)) (dashed)", fontsize=9)
        axes[0].legend(fontsize=7, title="  ".join(f"{s} {t.rsplit('.', 1)[0]}"
                                                  for t, s in styles.items()), title_fontsize=7)
        g = table.groupby([LR, WD])[["norm_ratio", "angle_ratio"]].mean()
        numbers["measured/predicted (mean over layers and seeds)"] = {
            f"η={a:g} λ={b:g}": {k: _r(v, 3) for k, v in row.items()}
            for (a, b), row in g.iterrows()}
    name = _save(fig, out_dir, "weight_decay_equilibrium.png")
    return {name: {"question": "Do scale-invariant weights settle at the predicted equilibrium "
                               "norm and angular update, and how fast?",
                   "detail": "AdamW at constant LR on the digits MLP with unit-norm rows; "
                             "solid/dotted: hidden layers 0/1, seeds averaged; x in units of "
                             "1/(ηλ) so every (η, λ) should settle by about the same x.",
                   "numbers": numbers}}


def lm_curves(m: pd.DataFrame, runs: pd.DataFrame, out_dir) -> dict:
    """Train loss of λ > 0 minus λ = 0 (seed means, paired data order), constant vs cosine,
    against steps since the LR decay began."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    numbers = {}
    if len(runs):
        loss = _seed_mean(m, runs, ["schedule.name", WD], "train/loss")
        mult = _seed_mean(m, runs, ["schedule.name"], "lr_mult")
        cos = mult[mult["schedule.name"] == "cosine"]
        start = wa.decay_start(cos["step"], cos["value"]) if len(cos) else 0.0
        start = 0.0 if not math.isfinite(start) else start
        lams = sorted(x for x in loss[WD].unique() if x > 0)
        colors = dict(zip(lams, ("tab:blue", "tab:red", "tab:green")))
        for sched, ls in (("cosine", "-"), ("constant", "--")):
            base = loss[(loss["schedule.name"] == sched) & (loss[WD] == 0)].set_index("step")
            for lam in lams:
                d = loss[(loss["schedule.name"] == sched) & (loss[WD] == lam)].set_index("step")
                both = d[["value"]].merge(base[["value"]], left_index=True, right_index=True,
                                          suffixes=("", "_0"))
                if not len(both):
                    continue
                gap = wa.aligned_gap(both.index, both["value"], both["value_0"], start)
                smooth = gap["gap"].rolling(3, center=True, min_periods=1).mean()
                ax.plot(gap["t"], smooth, ls, color=colors.get(lam), label=f"{sched}, λ={lam:g}")
                numbers[f"{sched} λ={lam:g}"] = {
                    "final_gap": _r(wa.tail_mean(gap["t"], gap["gap"], 0.1)),
                    "crossing_t": _r(wa.crossing_step(gap["t"], smooth))}
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        numbers["decay_start_step"] = start
    ax.set_xlabel("steps since the LR started to decay (cosine; constant never decays)")
    ax.set_ylabel("train loss, λ minus λ=0 (nats/byte)")
    ax.set_title("When does weight decay start to pay off? (GPT proxy)", fontsize=10)
    ax.legend(fontsize=7)
    name = _save(fig, out_dir, "weight_decay_lm_curves.png")
    return {name: {"question": "Does weight decay lower the LM's training loss only once the "
                               "LR decays (D'Angelo et al.)?",
                   "detail": "Train-loss difference to the λ = 0 run of the same seed and "
                             "schedule (same batches), seeds averaged, 3-point running mean; "
                             "below 0 = decay helps.", "numbers": numbers}}


def buckets(table: pd.DataFrame, n_buckets: int, out_dir) -> dict:
    """Validation-loss change from λ = 0 per token-frequency bucket (cosine runs)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    numbers = {}
    cos = table[table["schedule"] == "cosine"] if len(table) else table
    if len(cos):
        cols = [f"b{j}" for j in range(n_buckets)]
        base = cos[cos[WD] == 0].set_index(SEED)[cols]
        for lam in sorted(x for x in cos[WD].unique() if x > 0):
            d = cos[cos[WD] == lam].set_index(SEED)[cols] - base
            ax.errorbar(range(n_buckets), d.mean(), yerr=d.std().fillna(0), marker="o",
                        capsize=3, label=f"λ={lam:g}")
            numbers[f"λ={lam:g}"] = {c: _r(v) for c, v in d.mean().items()}
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(n_buckets), ["rarest"] + [f"b{j}" for j in range(1, n_buckets - 1)]
                      + ["most frequent"])
    ax.set_xlabel(f"token-frequency bucket ({n_buckets} quantiles of the training mass)")
    ax.set_ylabel("val loss change vs λ=0 (nats)")
    ax.set_title("Who pays for weight decay? (GPT proxy, cosine; bars: seed std)", fontsize=10)
    ax.legend(fontsize=8)
    name = _save(fig, out_dir, "weight_decay_buckets.png")
    return {name: {"question": "Does raising λ cost the rarest tokens more than the frequent?",
                   "detail": "Final validation loss per bucket minus the λ = 0 run of the same "
                             "seed.", "numbers": numbers}}


def lawn_logits(m: pd.DataFrame, runs: pd.DataFrame, out_dir) -> dict:
    """max|logit| over training, LAWN vs its base, small and large batch."""
    batches = sorted(int(b) for b in runs["train.batch_size"].unique()) if len(runs) else []
    fig, axes = plt.subplots(1, max(len(batches), 1), figsize=(5.2 * max(len(batches), 1), 4),
                             dpi=120, sharey=True)
    numbers = {}
    colors = {"adamw": "tab:blue", "sgd": "tab:orange"}
    for ax, b in zip(np.atleast_1d(axes), batches):
        sub = runs[runs["train.batch_size"] == b]
        d = _seed_mean(m, sub, ["optim.name"], "wd/logit_max")
        for opt, g in d.groupby("optim.name"):
            base = opt.removeprefix("lawn-")
            ax.plot(g["step"], g["value"], "--" if opt.startswith("lawn") else "-",
                    color=colors.get(base), label=opt)
            numbers[f"{opt} batch {b} final max|logit|"] = _r(g["value"].iloc[-1], 3)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"batch {b}", fontsize=9)
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("max |logit| on the training batch")
    fig.suptitle("Does LAWN keep the logits bounded? (digits MLP; dashed: LAWN)", fontsize=10)
    name = _save(fig, out_dir, "weight_decay_lawn_logits.png")
    return {name: {"question": "Does LAWN keep the logit scale bounded where the base "
                               "optimizer's keeps growing?",
                   "detail": "Seed-mean max |logit| per probe step; LAWN freezes the head's "
                             "norm after its free phase.", "numbers": numbers}}
