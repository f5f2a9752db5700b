"""``make_report``: a sweep's figures, ``index.html`` and ``summary.json`` in one folder.

Everything is written into a fresh temporary folder next to ``out_dir`` and only moved into
place once every file exists, so a report that fails half-way leaves ``out_dir`` as it was.
An existing ``out_dir`` keeps files that are not ours; ours (``REPORT_FILES``) are replaced,
and those this report does not produce (e.g. an attention figure for an MLP sweep) removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from proxylab.analysis import (final_metrics, lr_curves, lr_sensitivity, metric_vs_lr,
                               optimal_lr, varied_axes)
from proxylab.analysis.runs import LR_KEY
from proxylab.config import ConfigError
from proxylab.report import figures
from proxylab.report.files import current_umask, dumps, json_safe
from proxylab.report.html import render_index

STATUSES = ("pending", "running", "done", "diverged", "failed")
METRIC_KEYS = ["train/loss", "val/loss", "val/acc", "attn_logit_max_l0", "tokens", "wall_s"]
CAPTIONS = {
    "loss_curves": "How did training go? Train and validation loss against step, one line "
                   "per run coloured by learning rate (by the first other varied axis when "
                   "LR is fixed); a cross marks where a diverged run ended.",
    "loss_vs_lr": "Which learning rate is best, and how sensitive is the loss to it? Final "
                  "validation loss (seed mean ± std) against peak LR, one line per "
                  "configuration; diverged runs count as the loss at init ℓ0 (dotted line); "
                  "stars mark the fitted optimum.",
    "attn_logit_vs_step": "Does the layer-0 attention logit grow? Its maximum against step "
                          "(log scale), one line per run, coloured as in the loss curves.",
    "attn_logit_vs_lr": "How large does the layer-0 attention logit get at each learning "
                        "rate? Largest value over training, seed mean ± std (log-log).",
}
REPORT_FILES = tuple(f"{k}.png" for k in CAPTIONS) + ("index.html", "summary.json")
CONVENTIONS = {
    "loss_unit": "nats per target token (natural-log cross-entropy)",
    "diverged": "a diverged run, or one whose final val loss is NaN/inf, counts as its loss at "
                "initialization ℓ0 (val/loss at step 0); finite losses above ℓ0 are capped at "
                "ℓ0 too (min(ℓ, ℓ0), Wortsman et al. 2023), per run before averaging seeds",
    "seeds": "seeds are averaged (mean); std is the sample std (ddof = 1), null for one seed",
    "lr_sensitivity": "LR sensitivity = E_η[min(ℓ(η), ℓ0) − ℓ*] with E the mean over the n "
                      "grid LRs (divided by n, as in Wortsman et al. 2023; flxst divides by "
                      "n − 1); a configuration where every LR diverged scores 0 (all_diverged)",
    "optimal_lr": "lr_opt = vertex of a parabola in log10(LR) through the grid argmin and its "
                  "two neighbours, clamped to the grid; the argmin itself (method 'argmin') "
                  "with < 3 LRs, a non-convex fit, or a capped (diverged) point among the three",
}


def _sweep_names(store) -> list[str]:
    sw = store.sweeps()
    if isinstance(sw, pd.DataFrame):
        return [str(n) for n in sw["name"]]
    return [str(n) for n in sw]


def _sweep_spec(store, name: str) -> dict:
    if hasattr(store, "sweep_spec"):
        return store.sweep_spec(name)
    sw = store.sweeps()
    if isinstance(sw, pd.DataFrame) and "spec" in sw.columns:
        spec = sw.loc[sw["name"] == name, "spec"].iloc[0]
        return json.loads(spec) if isinstance(spec, str) else dict(spec or {})
    return {}


def sweep_summary(store, sweep_name: str, lr_key: str = LR_KEY) -> tuple[dict, dict]:
    """(JSON-safe summary, the DataFrames behind it) for one stored sweep.

    Raises :class:`ConfigError` naming the sweep and the stored ones when it is unknown.
    """
    names = _sweep_names(store)
    if sweep_name not in names:
        raise ConfigError(f"sweep {sweep_name!r}: no such sweep in the store; stored sweeps: "
                          f"{', '.join(names) if names else '(none)'}")
    runs = store.runs(sweep=sweep_name)
    metrics = store.metrics(sweep=sweep_name, keys=METRIC_KEYS)
    final = final_metrics(runs, metrics)
    axes = varied_axes(runs)
    frames = {"runs": runs, "metrics": metrics, "final": final}
    counts = {s: 0 for s in STATUSES}
    counts.update({str(k): int(v) for k, v in runs["status"].value_counts().items()})
    group_keys = [a for a in axes if a != lr_key]
    summary: dict[str, Any] = {
        "sweep": sweep_name, "spec": _sweep_spec(store, sweep_name), "n_runs": int(len(runs)),
        "counts": counts, "varied_axes": axes, "lr_key": lr_key, "group_keys": group_keys,
        "conventions": CONVENTIONS, "runs": final,
        "lr_curves": [], "optimal_lr": [], "lr_sensitivity": [], "attn_logit_vs_lr": [],
    }
    if lr_key in final.columns and len(final):
        frames["curves"] = lr_curves(final, lr_key=lr_key, group_keys=group_keys)
        frames["optimum"] = optimal_lr(frames["curves"], lr_key=lr_key)
        frames["sensitivity"] = lr_sensitivity(frames["curves"], lr_key=lr_key)
        frames["attn"] = metric_vs_lr(final, "max_attn_logit", lr_key=lr_key,
                                      group_keys=group_keys)
        summary.update(lr_curves=frames["curves"], optimal_lr=frames["optimum"],
                       lr_sensitivity=frames["sensitivity"], attn_logit_vs_lr=frames["attn"])
    return json_safe(summary), frames


def _figures(frames: dict, sweep_name: str, lr_key: str) -> dict:
    """name -> Figure for every figure this sweep's data can answer."""
    metrics, final = frames["metrics"], frames["final"]
    out = {}
    if metrics["key"].isin(["train/loss", "val/loss"]).any():
        out["loss_curves"] = figures.loss_curves(
            metrics, final, lr_key=lr_key, title=f"{sweep_name}: train and validation loss per run")
    curves = frames.get("curves")
    if curves is not None and curves[lr_key].nunique() > 1 and curves["loss_mean"].notna().any():
        out["loss_vs_lr"] = figures.loss_vs_lr(
            curves, frames["optimum"], lr_key=lr_key,
            title=f"{sweep_name}: final validation loss vs learning rate")
    attn = metrics[metrics["key"] == "attn_logit_max_l0"]["value"]
    if np.isfinite(attn.to_numpy(dtype=float)).any():
        out["attn_logit_vs_step"] = figures.attn_logit_vs_step(
            metrics, final, lr_key=lr_key, title=f"{sweep_name}: layer-0 max attention logit")
        a = frames.get("attn")
        if a is not None and a[lr_key].nunique() > 1 and a["mean"].notna().any():
            out["attn_logit_vs_lr"] = figures.attn_logit_vs_lr(
                a, lr_key=lr_key, title=f"{sweep_name}: max attention logit vs learning rate")
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)  # one atomic rename
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    produced = {p.name for p in tmp.iterdir()}
    for name in REPORT_FILES:  # ours only: other files in out_dir are left alone
        if name in produced:
            os.replace(tmp / name, out / name)
        elif (out / name).is_file():
            (out / name).unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def make_report(store, sweep_name: str, out_dir: str | os.PathLike,
                lr_key: str = LR_KEY) -> dict:
    """Write the report of ``sweep_name`` into ``out_dir``; returns the summary dict.

    Files: ``loss_curves.png``, ``loss_vs_lr.png`` (when LR varies),
    ``attn_logit_vs_step.png`` and ``attn_logit_vs_lr.png`` (when the runs logged
    ``attn_logit_max_l0``), ``index.html`` and ``summary.json`` (the numbers behind every
    figure, NaN as null). ``summary["figures"]`` maps figure name -> file name.
    """
    summary, frames = sweep_summary(store, sweep_name, lr_key=lr_key)  # bad input: nothing written
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would become out_dir's mode
        summary["figures"] = {}
        for name, fig in _figures(frames, sweep_name, lr_key).items():
            fig.savefig(tmp / f"{name}.png", dpi=figures.DPI)
            summary["figures"][name] = f"{name}.png"
        (tmp / "summary.json").write_text(dumps(summary), encoding="utf-8")
        (tmp / "index.html").write_text(render_index(summary, CAPTIONS), encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
