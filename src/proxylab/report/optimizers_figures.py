"""Figures of the optimizer study (``proxylab study optimizers``), one question each.

Numbers come from the study's loaders and :mod:`proxylab.analysis.optimizers`; drawing from
:mod:`proxylab.report.panels` and :mod:`proxylab.report.bars`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from proxylab.analysis.optimizers import (aligned_curves, basin_widths, best_per_group,
                                          performance_profile, profile_score, strip)
from proxylab.report.bars import BarPanel, Bars, draw_bars
from proxylab.report.panels import Panel, Series, draw_panels
from proxylab.studies.optimizers import (BASIN_MARGIN, COMMON, FIRST_ORDER, LOSS_MARGIN,
                                         PROFILE_ARMS, STRIPS,
                                         _adamw_target, _rounded, by_part, load, reach,
                                         target_frames)
from proxylab.sweep.spec import SweepSpec

# The figures' target: AdamW's best-LR final loss + this slack (the claims use the slack-free
# target). With a cosine schedule every run reaches its own best loss at the end, so at zero
# slack every optimizer a hair worse than AdamW "misses" and the profile says little more.
PROFILE_SLACK = LOSS_MARGIN


def target_table(frames: dict, unit: str) -> pd.DataFrame:
    """workload × arm: ``unit`` (steps, seconds, flops) to AdamW's final loss + PROFILE_SLACK;
    NaN = missed. Arms run on every workload only."""
    rows = {}
    arms = [a for a in PROFILE_ARMS if all(a in set(f[0]["arm"]) for f in frames.values())]
    for w, (df, curves, tensors) in frames.items():
        target = _adamw_target(df) + PROFILE_SLACK
        rows[w] = {}
        for arm in arms:
            r = reach(df, curves, arm, target, tensors)
            rows[w][arm] = r["steps"] * r[f"{unit}_per_step"]
    return pd.DataFrame(rows).T


def _lr_series(df: pd.DataFrame, x: str = "optim.lr", y: str = "loss_mean") -> list[Series]:
    return [Series(arm, sub[x].tolist(), sub[y].tolist()) for arm, sub in df.groupby("arm")]


def _curves(df: pd.DataFrame) -> pd.DataFrame:
    c = df.groupby(["arm", "optim.lr"])["loss"].agg(loss_mean="mean", loss_std="std").reset_index()
    c = aligned_curves(c, ["arm"])
    c["lr_rel"] = 10 ** c["log10_lr_rel"]
    return c


FIGURES = {
    "optimizers_aligned_lr.png": "Aligned at each optimizer's optimum, do the loss-vs-LR curves of the Adam-like optimizers coincide, and is SGD's worse?",
    "optimizers_basin.png": "How wide is each optimizer's LR basin, and how far is its best loss from AdamW's (seed spread as error bars)?",
    "optimizers_strips.png": "How sensitive is the loss to beta1, beta2, eps and weight decay around the defaults?",
    "optimizers_precond.png": "Does Shampoo degrade as the preconditioner is refreshed less often, and SOAP less?",
    "optimizers_to_target.png": "How many steps, seconds and FLOPs does each optimizer need to come within 0.05 nats of AdamW's final loss (ratio to AdamW)?",
    "optimizers_profiles.png": "Across workloads, how often is each optimizer within tau x the fastest to the target (AlgoPerf profile)?",
}


def draw(store, specs: list[SweepSpec], out_dir) -> dict:
    """Draw FIGURES into ``out_dir``; returns {file: {"question", "numbers"}}."""
    by = by_part(specs)
    notes: dict[str, dict] = {}
    lr_df, _ = load(store, by["lr"])
    muon_df, _ = load(store, by["muon"])
    c = _curves(pd.concat([lr_df, muon_df], ignore_index=True))
    panels = [Panel("gpt-s: final loss vs peak LR", "peak LR", "final val loss (nats/byte)",
                    _lr_series(c), xlog=True),
              Panel("aligned at each optimum", "LR / LR* (optimum)", "loss - best loss (nats)",
                    _lr_series(c, "lr_rel", "loss_gap"), xlog=True, ylim=(-0.02, 0.6),
                    hlines=[(BASIN_MARGIN, "basin margin")])]
    qk = None
    if "lr-qk" in by:
        qk, _ = load(store, by["lr-qk"])
        cq = _curves(qk)
        panels.append(Panel("aligned, qk-LN + z-loss", "LR / LR* (optimum)", "loss - best loss (nats)",
                            _lr_series(cq, "lr_rel", "loss_gap"), xlog=True, ylim=(-0.02, 0.6),
                            hlines=[(BASIN_MARGIN, "basin margin")]))
    notes["optimizers_aligned_lr.png"] = draw_panels(out_dir / "optimizers_aligned_lr.png", panels,
                                                     ncols=3, panel_size=(5.0, 3.8))

    arms = FIRST_ORDER + ["muon"]
    groups_w, groups_l, open_edge = [], [], {}
    for label, frame in (("no qk-LN", pd.concat([lr_df, muon_df])), ("qk-LN + z-loss", qk)):
        if frame is None:
            continue
        bw = basin_widths(frame, ["arm"], BASIN_MARGIN).set_index("arm").reindex(arms)
        bl = best_per_group(frame, ["arm"]).set_index("arm").reindex(arms)
        groups_w.append(Bars(label, bw["width"].tolist(), bw["width_seed_std"].tolist()))
        groups_l.append(Bars(label, (bl["best_loss"] - bl.loc["adamw", "best_loss"]).tolist(),
                             bl["seed_std"].tolist()))
        open_edge[label] = [a for a in arms if bool(bw.loc[a, "open"]) is True]
    notes["optimizers_basin.png"] = draw_bars(out_dir / "optimizers_basin.png", [
        BarPanel(f"LR basin width (loss within {BASIN_MARGIN} nats of the best), gpt-s; "
                 "seed std of per-seed widths as error bars", "width (decades of LR)", arms, groups_w),
        BarPanel("best final loss minus AdamW's (seed std at the best LR as error bars), gpt-s",
                 "loss - AdamW's (nats)", arms, groups_l, hlines=[(0.0, "AdamW")])])
    notes["optimizers_basin.png"]["basin reaches the LR grid's edge (a lower bound)"] = open_edge

    st, _ = load(store, by["strips"])
    panels = []
    for axis in STRIPS:
        series = []
        for arm, sub in st.groupby("arm"):
            others = [k for k in STRIPS if k != axis]
            on = sub[np.logical_and.reduce([np.isclose(sub[k].astype(float), COMMON[k]) for k in others])]
            s = strip(on, axis, COMMON[axis])
            if len(s) > 1:
                series.append(Series(arm, s[axis].tolist(), s["gap"].tolist()))
        panels.append(Panel(axis.split(".")[1], axis, "loss - loss at default (nats)", series,
                            xlog=axis == "optim.eps"))
    notes["optimizers_strips.png"] = draw_panels(out_dir / "optimizers_strips.png", panels, ncols=4,
                                                 panel_size=(3.6, 3.2))

    pre, _ = load(store, by["precond"])
    bp = best_per_group(pre, ["arm"])
    bp["opt"], bp["f"] = zip(*[(a.split("/f")[0], int(a.split("/f")[1])) for a in bp["arm"]])
    adam = best_per_group(lr_df[lr_df["arm"] == "adamw"], ["arm"])["best_loss"]
    notes["optimizers_precond.png"] = draw_panels(out_dir / "optimizers_precond.png", [
        Panel("gpt-s: best loss vs preconditioning interval", "interval f (steps)",
              "best final val loss (nats/byte)",
              [Series(o, s["f"].tolist(), s["best_loss"].tolist()) for o, s in bp.groupby("opt")],
              xlog=True, hlines=[(float(adam.iloc[0]), "AdamW best")] if len(adam) else [])], ncols=1)

    frames = target_frames(store, by)
    tables = {u: target_table(frames, u) for u in ("steps", "seconds", "flops")}
    bar_panels = []
    for u, tab in tables.items():
        rel = tab.div(tab["adamw"], axis=0)
        bar_panels.append(BarPanel(f"{u} to AdamW's final loss + {PROFILE_SLACK} nats, relative to AdamW",
                                   f"{u} / AdamW's",
                                   list(rel.columns), [Bars(w, rel.loc[w].tolist()) for w in rel.index],
                                   ylog=True, hlines=[(1.0, "AdamW")]))
    notes["optimizers_to_target.png"] = draw_bars(out_dir / "optimizers_to_target.png", bar_panels)

    taus = np.linspace(1, 4, 121)
    panels = []
    for u in ("steps", "seconds"):
        rho = performance_profile(tables[u], taus)
        score = profile_score(tables[u])
        panels.append(Panel(f"profile: {u} to AdamW + {PROFILE_SLACK} nats ({len(tables[u])} workloads)",
                            "tau (x the best)",
                            "share of workloads within tau", [Series(f"{a} ({score[a]:.2f})", taus.tolist(),
                                                                     rho[a].tolist(), "-") for a in rho]))
    notes["optimizers_profiles.png"] = draw_panels(out_dir / "optimizers_profiles.png", panels)
    notes["optimizers_profiles.png"]["scores"] = {u: _rounded(profile_score(tables[u])) for u in ("steps", "seconds")}
    return {f: {"question": FIGURES[f], "numbers": n} for f, n in notes.items()}
