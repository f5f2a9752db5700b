"""One helper that draws a figure of line panels from plain data, so a study's figure code
says what is plotted (series of numbers, axes, units) and nothing about matplotlib.

    draw_panels(path, [Panel(title=..., xlabel=..., ylabel=..., xlog=True,
                             series=[Series("qk-LN", xs, ys), ...], hlines=[(y, "label")])])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    style: str = "o-"            # a matplotlib format string
    color: str | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlog: bool = False
    ylog: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)   # (y, label)
    diagonal: bool = False       # draw y = x (predicted-vs-observed panels)
    ylim: tuple[float, float] | None = None   # (bottom, top); None = matplotlib's choice


def draw_panels(path: str | Path, panels: list[Panel], *, ncols: int = 2,
                suptitle: str = "", panel_size: tuple[float, float] = (4.6, 3.4)) -> dict:
    """Draw ``panels`` on a grid of ``ncols`` columns and save a PNG at ``path``.

    Returns the numbers drawn, ``{"panel title | series label": [[x, y], ...]}`` (and
    each horizontal line's value), for the report to show beside the figure."""
    numbers: dict[str, list | float] = {}
    fig, axes = panel_grid(len(panels), ncols, panel_size)
    for ax, panel in zip(axes.flat, panels):
        for s in panel.series:
            pts = [(x, y) for x, y in zip(s.x, s.y)
                   if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
                   and (not panel.xlog or x > 0) and (not panel.ylog or y > 0)]
            if pts:
                numbers[f"{panel.title} | {s.label}"] = [[_r(x), _r(y)] for x, y in pts]
                xs, ys = zip(*pts)
                ax.plot(xs, ys, s.style, label=s.label, color=s.color, ms=4)
        for y, label in panel.hlines:
            numbers[f"{panel.title} | {label}"] = _r(y)
            ax.axhline(y, ls="--", color="grey", lw=1, label=label)
        if panel.xlog:
            ax.set_xscale("log")
        if panel.ylog:
            ax.set_yscale("log")
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        if panel.diagonal:
            lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
            ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=1)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_grid(fig, axes, len(panels), path, suptitle)
    return numbers


def panel_grid(n: int, ncols: int, panel_size: tuple[float, float]):
    """A figure with ``n`` panels on ``ncols`` columns: ``(fig, axes)`` with axes 2-D."""
    n = max(n, 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    return plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                        dpi=110, squeeze=False)


def save_grid(fig, axes, n_used: int, path: str | Path, suptitle: str = "") -> None:
    """Blank the unused panels, title, lay out, save the PNG at ``path`` and free the figure."""
    for ax in list(axes.flat)[n_used:]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(Path(path))
    plt.close(fig)


def _r(v: float) -> float:
    """4 significant digits: enough to read a figure's numbers, short enough to show."""
    return float(f"{float(v):.4g}")
