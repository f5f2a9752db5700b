"""Figures of the batch-size study (one question each), drawn from its tables
(``proxylab.studies.batch_size.tables``); every figure returns the numbers it shows."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from proxylab.analysis.batch_size import steps_law, tradeoff_curve  # noqa: E402
from proxylab.report.panels import Panel, Series, draw_panels  # noqa: E402
from proxylab.studies.batch_size import B, LR, SEED, scaling  # noqa: E402

COLORS = {"D1": "#1f77b4", "D2": "#d62728"}
QUESTIONS = {
    "batch_size_steps_vs_batch.png": "Do steps to a target fall as 1/B and then flatten, as "
                                     "S = S_min(1 + B_crit/B) says?",
    "batch_size_tradeoff.png": "Do steps and examples trade off as (S/S_min - 1)(E/E_min - 1) = 1?",
    "batch_size_b_simple.png": "How does the gradient noise scale B_simple move over training, "
                               "against the fitted B_crit?",
    "batch_size_optimal_lr.png": "How does the optimal Adam LR move with batch size: monotone, "
                                 "or rising then falling?",
    "batch_size_critical_vs_data.png": "Does the critical batch size grow with the data budget, "
                                       "and stay put when the width doubles?",
}


UNITS = {"text": "sequences of 32 bytes", "digits": "images"}


def _label(task, width):
    return f"{task} (width {width})"


def draw(t: dict, out_dir) -> dict:
    notes = {}
    base = {}
    for (task, width) in sorted(t):
        base.setdefault(task, (width, t[(task, width)]))
    sc = {(k, tg): scaling(d["table"], tg) if len(d["table"]) else None
          for k, d in t.items() for tg in ("D1", "D2")}

    panels = []
    for (task, width), d in sorted(t.items()):
        series = []
        for tg in ("D1", "D2"):
            s = sc[((task, width), tg)]
            if s is None:
                continue
            best = s["best"].dropna(subset=["steps"])
            bb, ss = list(best[B]), list(best["steps"])
            lab = f"{tg}: loss {d['targets'][tg]:.3g}"
            series.append(Series(f"{lab} best over LR", bb, ss, "o", COLORS[tg]))
            if bb:
                grid = np.geomspace(min(bb), max(bb), 40)
                series.append(Series(f"{tg} perfect scaling from B={bb[0]:g}", list(grid),
                                     list(ss[0] * bb[0] / grid), ":", COLORS[tg]))
            f = s["fit"]
            if math.isfinite(f["b_crit"]) and bb:
                series.append(Series(f"{tg} fit B_crit={f['b_crit']:.3g} R2={f['r2']:.2f}", list(grid),
                                     list(steps_law(grid, f["s_min"], f["b_crit"])), "-", COLORS[tg]))
                lo, hi = f["b_crit_interval"]
                if math.isfinite(lo) and math.isfinite(hi):
                    for bc, tag in ((lo, "lo"), (hi, "hi")):
                        # S_min held at its fit; the curve through B_crit's 90% bound
                        series.append(Series(f"{tg} B_crit 90% {tag} ({bc:.3g})", list(grid),
                                             list(steps_law(grid, f["s_min"], bc)), "--", COLORS[tg]))
        panels.append(Panel(title=_label(task, width), xlabel=f"batch size B ({UNITS.get(task, 'examples')})",
                            ylabel="steps to target", xlog=True, ylog=True, series=series))
    notes["batch_size_steps_vs_batch.png"] = draw_panels(out_dir / "batch_size_steps_vs_batch.png",
                                                         panels, ncols=2, panel_size=(5.2, 4.0))

    panels = []
    for task, (width, d) in base.items():
        series = []
        for tg in ("D1", "D2"):
            s = sc[((task, width), tg)]
            if s is None or not math.isfinite(s["fit"]["b_crit"]):
                continue
            best = s["best"].dropna(subset=["steps"])
            tr = tradeoff_curve(best[B], best["steps"], s["fit"]["s_min"], s["fit"]["b_crit"])
            series.append(Series(f"{tg} measured", list(tr["S_over_smin"]), list(tr["E_over_emin"]),
                                 "o", COLORS[tg]))
        x = np.geomspace(1.02, 200, 60)
        series.append(Series("law: (S/S_min-1)(E/E_min-1)=1", list(x), list(1 + 1 / (x - 1)), "-", "grey"))
        panels.append(Panel(title=_label(task, width), xlabel="S / S_min", ylabel="E / E_min",
                            xlog=True, ylog=True, series=series))
    notes["batch_size_tradeoff.png"] = draw_panels(out_dir / "batch_size_tradeoff.png", panels)

    panels = []
    for task, (width, d) in base.items():
        m, tab = d["metrics"], d["table"]
        series = []
        noise = m[m["key"] == "noise/b_simple"]
        if len(noise) and len(tab):
            best_lr = sc[((task, width), "D1")]["best"].set_index(B)["lr_best"]
            runs = d["runs"]
            for b, lr in best_lr.items():
                pick = runs[(runs[B] == b) & (runs[LR] == lr)]
                if SEED in pick:
                    pick = pick[pick[SEED] == pick[SEED].min()]
                for rid in pick["run_id"]:
                    c = noise[noise["run_id"] == rid].sort_values("step")
                    if len(c):
                        series.append(Series(f"B={b:g} LR={lr:.2g}", list(c["step"] * b),
                                             list(c["value"]), "-"))
        fits = {tg: sc[((task, width), tg)]["fit"] for tg in ("D1", "D2") if sc[((task, width), tg)]}
        hl = [(f["b_crit"], f"B_crit {tg}") for tg, f in fits.items() if math.isfinite(f["b_crit"])]
        panels.append(Panel(title=f"{_label(task, width)}: B_simple (EMA ratio), best LR, seed 0",
                            xlabel=f"{UNITS.get(task, 'examples')} seen", ylabel="B_simple (examples)",
                            xlog=True, ylog=True,
                            series=series, hlines=hl))
    notes["batch_size_b_simple.png"] = draw_panels(out_dir / "batch_size_b_simple.png", panels)

    panels = []
    for task, (width, d) in base.items():
        series = []
        for tg in ("D1", "D2"):
            s = sc[((task, width), tg)]
            if s is None:
                continue
            best = s["best"].dropna(subset=["lr_opt"])
            series.append(Series(f"{tg} fitted optimum", list(best[B]), list(best["lr_opt"]), "o-",
                                 COLORS[tg]))
        lrs = sorted(d["table"][LR].unique()) if len(d["table"]) else []
        panels.append(Panel(title=f"{_label(task, width)}\nLR grid: {', '.join(f'{v:.2g}' for v in lrs)}",
                            xlabel="batch size B", ylabel="LR with the fewest steps to target",
                            xlog=True, ylog=True, series=series))
    notes["batch_size_optimal_lr.png"] = draw_panels(out_dir / "batch_size_optimal_lr.png", panels)

    notes["batch_size_critical_vs_data.png"] = _critical_vs_data(
        t, sc, out_dir / "batch_size_critical_vs_data.png")
    return {f: {"question": QUESTIONS[f], "numbers": n} for f, n in notes.items()}


def _critical_vs_data(t: dict, sc: dict, path) -> dict:
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    numbers = {}
    for i, ((task, width), d) in enumerate(sorted(t.items())):
        xs, ys, lo, hi = [], [], [], []
        for tg in ("D1", "D2"):
            s = sc[((task, width), tg)]
            if s is None or not math.isfinite(s["fit"]["b_crit"]):
                continue
            f = s["fit"]
            xs.append(d["budgets"][tg] * (1 + 0.04 * i))       # a small offset per line
            ys.append(f["b_crit"])
            lo.append(f["b_crit"] - f["b_crit_interval"][0] if math.isfinite(f["b_crit_interval"][0]) else 0)
            hi.append(f["b_crit_interval"][1] - f["b_crit"] if math.isfinite(f["b_crit_interval"][1]) else 0)
            numbers[f"{_label(task, width)} | {tg}"] = {
                "examples": d["budgets"][tg], "b_crit": round(f["b_crit"], 3),
                "interval_90": [round(v, 3) for v in f["b_crit_interval"]]}
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=_label(task, width))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("data budget D (examples seen at the smallest batch:\ntext sequences or digit images)")
    ax.set_ylabel("B_crit (examples), 90% fit interval")
    ax.set_title("Critical batch size vs data budget and width")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return numbers
