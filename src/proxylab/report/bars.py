"""Grouped bar charts from plain data (the bar counterpart of :mod:`proxylab.report.panels`).

    draw_bars(path, [BarPanel(title=..., ylabel=..., categories=["adamw", "lion"],
                              groups=[Bars("gpt-s", [1.0, 0.8], err=[0.1, 0.05])])])

A missing value (NaN/None) leaves a gap and is written as "miss" under its category.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proxylab.report.panels import panel_grid, save_grid


@dataclass
class Bars:
    label: str
    values: list[float]
    err: list[float] | None = None        # symmetric error bars (e.g. seed std)


@dataclass
class BarPanel:
    title: str
    ylabel: str
    categories: list[str]
    groups: list[Bars] = field(default_factory=list)
    ylog: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)


def _ok(v) -> bool:
    return v is not None and math.isfinite(float(v))


def draw_bars(path: str | Path, panels: list[BarPanel], *, ncols: int = 1,
              panel_size: tuple[float, float] = (8.0, 3.4), suptitle: str = "") -> dict:
    """Draw the panels; returns ``{"panel | group": {category: value or None}}``."""
    numbers: dict = {}
    fig, axes = panel_grid(len(panels), ncols, panel_size)
    for ax, p in zip(axes.flat, panels):
        k = max(len(p.groups), 1)
        width = 0.8 / k
        x = np.arange(len(p.categories))
        for j, g in enumerate(p.groups):
            vals = [float(v) if _ok(v) else np.nan for v in g.values]
            err = [float(e) if _ok(e) else 0.0 for e in g.err] if g.err else None
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, vals, width, yerr=err, capsize=2, label=g.label)
            for xp, v in zip(pos, vals):
                if not math.isfinite(v):
                    ax.annotate("miss", (xp, 0), xycoords=("data", "axes fraction"),
                                ha="center", va="bottom", fontsize=6, rotation=90)
            numbers[f"{p.title} | {g.label}"] = {c: (float(f"{v:.4g}") if math.isfinite(v) else None)
                                                 for c, v in zip(p.categories, vals)}
        for y, label in p.hlines:
            ax.axhline(y, ls="--", color="grey", lw=1, label=label)
        if p.ylog:
            ax.set_yscale("log")
        ax.set_xticks(x, p.categories, rotation=30, ha="right", fontsize=8)
        ax.set_title(p.title, fontsize=10)
        ax.set_ylabel(p.ylabel)
        ax.grid(alpha=0.3, axis="y")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_grid(fig, axes, len(panels), path, suptitle)
    return numbers
