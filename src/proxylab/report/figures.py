"""One function per figure, each answering one question and returning a matplotlib Figure.

The functions take the DataFrames of :mod:`proxylab.analysis` (and the store's long-form
metrics) and compute nothing new, so the numbers behind every figure are the analysis
outputs a test can check. Figures are built with ``matplotlib.figure.Figure`` directly (no
pyplot state, no GUI backend); save with ``fig.savefig(path)``.

Colour encodes the learning rate (log scale) wherever LR varies; panels (small multiples)
split the other varied axes, so no panel holds more lines than the LR grid times the seeds.
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker as ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from proxylab.analysis.lr import iter_groups
from proxylab.analysis.runs import LR_KEY, config_columns, varied_axes

LOSS_UNIT = "loss (nats/token)"
MAX_COLS = 4  # small multiples wrap after this many panels
DPI = 120


def short(key: str) -> str:
    """``model.width`` -> ``width`` for labels."""
    return key.rsplit(".", 1)[-1]


def group_label(key: dict) -> str:
    return ", ".join(f"{short(k)}={_fmt(v)}" for k, v in key.items()) or "all runs"


def _fmt(v) -> str:
    """Short label for a config value: 3e-3 rather than 0.003 or 3e-03."""
    if isinstance(v, (float, np.floating)) and v and (abs(v) < 0.1 or abs(v) >= 1e4):
        e = math.floor(math.log10(abs(v)))
        return f"{float(f'{v / 10 ** e:.3g}'):g}e{e}"
    if isinstance(v, (float, np.floating)):
        return f"{v:g}"
    return str(v)


def _plain_log_axis(axis) -> None:
    """Log-axis tick labels as plain numbers (2, 3, 5, 10) instead of 2×10⁰."""
    lo, hi = axis.get_view_interval()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 10.0
    shown = {1, 2, 3, 4, 5, 6, 7, 8, 9} if decades < 0.5 else {1, 2, 5} if decades < 2.5 else {1}

    def label(v, _pos):
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if lead in shown else ""

    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(ticker.FuncFormatter(label))


def _value_colors(values) -> dict:
    """value -> colour: a log-scaled viridis ramp for positive numbers (LR, width), else
    tab10 categories (booleans, names, grids containing 0)."""
    vals = sorted({v for v in values if v is not None and v == v}, key=lambda v: (str(type(v)), v))
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in vals)
    if numeric and vals and min(vals) > 0 and len(vals) > 1:
        lo, hi = math.log10(vals[0]), math.log10(vals[-1])
        cmap = matplotlib.colormaps["viridis"]  # without its palest end
        return {v: cmap(0.88 * (math.log10(v) - lo) / (hi - lo)) for v in vals}
    cmap = matplotlib.colormaps["tab10"]
    return {v: cmap(i % 10) for i, v in enumerate(vals)}


def _layout(final_df: pd.DataFrame, lr_key: str, group_keys: list[str] | None):
    """(colour axis, panel axes): colour by LR when it varies, else by the first varied axis
    that is not a panel axis; one panel per combination of the rest."""
    axes = varied_axes(final_df)
    if group_keys is None:
        color = lr_key if lr_key in axes else (axes[0] if axes else None)
        return color, [a for a in axes if a != color]
    rest = [a for a in axes if a not in group_keys]
    return (lr_key if lr_key in rest else (rest[0] if rest else None)), list(group_keys)


def _run_colors(final_df: pd.DataFrame, color_key: str | None) -> tuple[dict, list[Line2D]]:
    """run_id -> colour and legend handles (at most ~12), by ``color_key`` or by run."""
    if color_key is None:
        cmap = matplotlib.colormaps["tab10"]
        colors = {r: cmap(i % 10) for i, r in enumerate(final_df["run_id"])}
        return colors, [Line2D([], [], color=c, lw=2, label=str(r)[:8])
                        for r, c in list(colors.items())[:12]]
    by_value = _value_colors(final_df[color_key])
    handles = [Line2D([], [], color=c, lw=2, label=f"{short(color_key)} {_fmt(v)}") for v, c in by_value.items()]
    if len(handles) > 12:  # keep the legend short
        handles = handles[::math.ceil(len(handles) / 12)] + handles[-1:]
    grey = (0.5, 0.5, 0.5, 1.0)
    return {r: by_value.get(v, grey) for r, v in zip(final_df["run_id"], final_df[color_key])}, handles


def _diverged_handle(final_df: pd.DataFrame) -> list[Line2D]:
    if not final_df["diverged"].astype(bool).any():
        return []
    return [Line2D([], [], ls="", marker="X", ms=8, color="grey", mec="black",
                   label="diverged (last finite value)")]


def _panel_grid(n_groups: int, rows_per_group: int, panel_w=4.2, panel_h=3.0):
    ncols = min(n_groups, MAX_COLS)
    nrows = rows_per_group * math.ceil(n_groups / ncols)
    fig = Figure(figsize=(panel_w * ncols + 1.6, panel_h * nrows + 0.6), dpi=DPI,
                 layout="constrained")
    axs = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axs.flat:
        ax.set_visible(False)
    return fig, axs, ncols


def _loss_ylim(values: np.ndarray, init: np.ndarray) -> tuple[float, float, bool]:
    """(bottom, top, log) from the losses of runs that did not diverge and the losses at
    init: the bulk stays readable and diverged blow-ups leave through the top. Log scale
    only when the loss falls by more than 10x (memorisation, grokking)."""
    v = values[np.isfinite(values)]
    i = init[np.isfinite(init)]
    if not len(v) and not len(i):
        return 0.0, 1.0, False
    top = max(float(i.max()) if len(i) else -np.inf, float(v.max()) if len(v) else -np.inf)
    bottom = float(v.min()) if len(v) else float(i.min()) * 0.5
    log = bottom > 0 and top / bottom > 10
    top = top * 1.6 if log else top * 1.08
    return (bottom / 1.15 if log else max(0.0, bottom - 0.05 * (top - bottom))), top, log


def loss_curves(metrics_df: pd.DataFrame, final_df: pd.DataFrame, lr_key: str = LR_KEY,
                group_keys: list[str] | None = None, title: str | None = None) -> Figure:
    """How did train and validation loss evolve in every run?

    Top row train loss, bottom row validation loss, against step; one line per run
    coloured by LR (by the first other varied axis when LR is fixed), one panel column per
    combination of the remaining varied axes (``group_keys``). A diverged run ends in a
    cross, drawn at the top edge when its loss left the plot. One y scale for all panels:
    linear, or log when the loss falls more than 10x.
    """
    color_key, group_keys = _layout(final_df, lr_key, group_keys)
    groups = list(iter_groups(final_df, group_keys))
    colors, handles = _run_colors(final_df, color_key)
    if len(groups) == 1:  # one configuration: train and validation side by side
        fig, axs, ncols = _panel_grid(2, 1)
        where = {0: (0, 0), 1: (0, 1)}
    else:  # small multiples: a train row above a validation row per row of groups
        fig, axs, ncols = _panel_grid(len(groups), 2)
        where = None
    loss = metrics_df[metrics_df["key"].isin(["train/loss", "val/loss"])]
    by_run = {r: m.sort_values("step") for r, m in loss.groupby("run_id")}
    # one y scale for the whole figure, set by the runs that did not diverge
    calm = loss[~loss["run_id"].isin(final_df.loc[final_df["diverged"].astype(bool), "run_id"])]
    lo, hi, log = _loss_ylim(calm["value"].to_numpy(dtype=float),
                             final_df["init_loss"].to_numpy(dtype=float))
    edge = lo * (hi / lo) ** 0.96 if log else lo + 0.96 * (hi - lo)  # just below the top
    for gi, (key, sub) in enumerate(groups):
        for qi, (metric, name) in enumerate((("train/loss", "train"), ("val/loss", "validation"))):
            ax = axs[where[qi] if where else (2 * (gi // ncols) + qi, gi % ncols)]
            ax.set_visible(True)
            style = dict(lw=1.0, alpha=0.85) if qi == 0 else dict(lw=1.2, marker="o", ms=2.5)
            for _, run in sub.iterrows():
                m = by_run.get(run["run_id"])
                if m is None:
                    continue
                m = m[m["key"] == metric]
                x, y = m["step"].to_numpy(), m["value"].to_numpy(dtype=float)
                ok = np.isfinite(y)
                c = colors[run["run_id"]]
                ax.plot(x[ok], y[ok], color=c, **style)
                if run["diverged"] and ok.any():  # a cross where it ended, kept inside the axes
                    ax.plot([x[ok][-1]], [min(y[ok][-1], edge)], marker="X", ms=9, color=c,
                            mec="black", mew=0.8, zorder=5)
            if log:
                ax.set_yscale("log")
            ax.set_ylim(lo, hi)
            if log:
                _plain_log_axis(ax.yaxis)
            ax.set_title(f"{name} loss — {group_label(key)}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel(LOSS_UNIT)
            ax.grid(alpha=0.3, which="both")
    fig.legend(handles=handles + _diverged_handle(final_df), loc="outside right upper",
               fontsize=8, frameon=False)
    fig.suptitle(title or "train and validation loss per run", fontsize=11)
    return fig


def loss_vs_lr(curves: pd.DataFrame, optimum: pd.DataFrame | None = None,
               lr_key: str = LR_KEY, title: str | None = None) -> Figure:
    """Which learning rate gives the lowest final validation loss, per configuration?

    ``curves`` from :func:`proxylab.analysis.lr_curves` (seeds averaged, diverged runs
    counted at ℓ0); error bars are the seed std where n > 1. A filled cross marks a point
    where every seed diverged, a hollow marker one where some did; a dotted line in the
    configuration's colour is its ℓ0 (the cap), drawn only when some point was capped. A star marks ``optimum.lr_opt`` (from :func:`~proxylab.analysis.optimal_lr`).
    """
    keys = [c for c in config_columns(curves) if c != lr_key]
    fig = Figure(figsize=(6.8, 4.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    groups = list(iter_groups(curves, keys))
    capped_any = bool((curves["n_capped"] > 0).any())  # no cap in play: keep ℓ0 off the scale
    for gi, (key, sub) in enumerate(groups):
        c = cmap(gi % 10)
        sub = sub.sort_values(lr_key)
        x, y = sub[lr_key].to_numpy(dtype=float), sub["loss_mean"].to_numpy(dtype=float)
        err = np.where(sub["n"] > 1, sub["loss_std"], np.nan)
        ax.errorbar(x, y, yerr=err, color=c, marker="o", ms=5, capsize=3, lw=1.5,
                    label=group_label(key) if keys else "final val loss (seed mean)")
        all_div = (sub["n_diverged"] >= sub["n"]).to_numpy()
        some_div = ((sub["n_diverged"] > 0) & ~all_div).to_numpy()
        ax.plot(x[all_div], y[all_div], ls="", marker="X", ms=11, color=c, mec="black", zorder=4)
        ax.plot(x[some_div], y[some_div], ls="", marker="o", ms=10, mfc="white", mec=c, mew=2,
                zorder=4)
        l0 = sub["init_loss"].astype(float)
        if capped_any and np.isfinite(l0).any():  # the cap, per configuration (ℓ0 moves with width)
            ax.axhline(float(np.average(l0[np.isfinite(l0)], weights=sub["n"][np.isfinite(l0)])),
                       color=c if len(groups) > 1 else "grey", ls=":", lw=1.2, alpha=0.8)
        if optimum is not None and len(optimum):
            o = optimum
            for k, v in key.items():
                o = o[o[k] == v]
            o = o[np.isfinite(o["lr_opt"].astype(float))]
            if len(o):
                ax.plot(o["lr_opt"], o["loss_opt"], ls="", marker="*", ms=15, color=c,
                        mec="black", mew=0.7, zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel(f"peak learning rate ({lr_key})")
    ax.set_ylabel(f"final validation {LOSS_UNIT}")
    ax.grid(alpha=0.3, which="both")
    all_div = curves["n_diverged"] >= curves["n"]
    extra = [Line2D([], [], ls=":", color="grey", label="loss at init ℓ0 (cap)")] if capped_any else []
    if all_div.any():
        extra.append(Line2D([], [], ls="", marker="X", ms=9, color="grey", mec="black",
                            label="all seeds diverged (at ℓ0)"))
    if ((curves["n_diverged"] > 0) & ~all_div).any():
        extra.append(Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="grey", mew=2,
                            label="some seeds diverged"))
    if optimum is not None and len(optimum):
        extra.append(Line2D([], [], ls="", marker="*", ms=11, color="grey", mec="black",
                            label="fitted optimum"))
    h, _ = ax.get_legend_handles_labels()
    fig.legend(handles=h + extra, loc="outside right upper", fontsize=8, frameon=False)
    ax.set_title(title or "final validation loss vs learning rate", fontsize=11)
    return fig


def attn_logit_vs_step(metrics_df: pd.DataFrame, final_df: pd.DataFrame,
                       lr_key: str = LR_KEY, group_keys: list[str] | None = None,
                       title: str | None = None) -> Figure:
    """Does the layer-0 max attention logit grow during training, and with which LR?

    ``attn_logit_max_l0`` against step (log y), one panel per combination of
    ``group_keys``, colours as in :func:`loss_curves`.
    """
    color_key, group_keys = _layout(final_df, lr_key, group_keys)
    groups = list(iter_groups(final_df, group_keys))
    colors, handles = _run_colors(final_df, color_key)
    fig, axs, ncols = _panel_grid(len(groups), 1)
    attn = {r: m.sort_values("step") for r, m in
            metrics_df[metrics_df["key"] == "attn_logit_max_l0"].groupby("run_id")}
    for gi, (key, sub) in enumerate(groups):
        ax = axs[gi // ncols, gi % ncols]
        ax.set_visible(True)
        for rid, diverged in zip(sub["run_id"], sub["diverged"].astype(bool)):
            if rid in attn:
                s = attn[rid]
                x, y = s["step"].to_numpy(), s["value"].to_numpy(dtype=float)
                ok = np.isfinite(y) & (y > 0)
                ax.plot(x[ok], y[ok], color=colors[rid], lw=1.2, alpha=0.85)
                if diverged and ok.any():
                    ax.plot(x[ok][-1:], y[ok][-1:], marker="X", ms=9, color=colors[rid],
                            mec="black", mew=0.8, zorder=5)
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
        ax.set_title(group_label(key), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("max attention logit, layer 0")
        ax.grid(alpha=0.3, which="both")
    fig.legend(handles=handles + _diverged_handle(final_df), loc="outside right upper",
               fontsize=8, frameon=False)
    fig.suptitle(title or "layer-0 max attention logit during training", fontsize=11)
    return fig


def attn_logit_vs_lr(attn: pd.DataFrame, lr_key: str = LR_KEY, title: str | None = None) -> Figure:
    """How large does the layer-0 attention logit get at each learning rate?

    ``attn`` from ``metric_vs_lr(final, "max_attn_logit")``: the largest logit a run
    reached over training, averaged over seeds (error bars = seed std); log-log.
    """
    keys = [c for c in config_columns(attn) if c != lr_key]
    fig = Figure(figsize=(6.8, 4.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    for gi, (key, sub) in enumerate(iter_groups(attn, keys)):
        sub = sub.sort_values(lr_key)
        ok = np.isfinite(sub["mean"].astype(float)) & (sub["mean"] > 0)
        sub = sub[ok]
        err = np.where(sub["n"] > 1, sub["std"], np.nan)
        ax.errorbar(sub[lr_key], sub["mean"], yerr=err, color=cmap(gi % 10), marker="o",
                    ms=5, capsize=3, label=group_label(key) if keys else "seed mean")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel(f"peak learning rate ({lr_key})")
    ax.set_ylabel("max attention logit, layer 0\n(largest over training)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    ax.set_title(title or "layer-0 max attention logit vs learning rate", fontsize=11)
    return fig
