"""LR × width under SP and μP: does the optimal Adam LR stay put as width grows?

A GPT proxy on the built-in byte-level corpus is swept over peak LR and width, once in
standard parameterization and once in μP (base width = the narrowest width). The claim
(Yang et al. 2022, "Tensor Programs V"; Wortsman et al. 2023 §3.2) is that μP pins the
loss-optimal LR across width while SP's optimum shrinks as width grows.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from proxylab.analysis import final_metrics, lr_curves, optimal_lr  # noqa: E402
from proxylab.analysis.transfer import transfer_verdict  # noqa: E402
from proxylab.sweep.spec import SweepSpec  # noqa: E402

NAME = "lr-width"
CLAIM = "muP keeps the loss-optimal Adam LR fixed across width; SP's optimum shrinks with width"


def sweeps(size: str) -> list[SweepSpec]:
    quick = size != "full"
    widths = {"smoke": [16, 32], "quick": [32, 128], "full": [32, 64, 128, 256]}[size]
    lrs = {"smoke": [3e-3, 1e-2, 3e-2],
           "quick": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
           "full": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]}[size]
    base = {
        "task.name": "text", "task.seq_len": 64,
        "model.name": "gpt", "model.depth": 2, "model.heads": 4, "model.base_width": widths[0],
        "optim.name": "adamw", "optim.beta2": 0.95, "optim.weight_decay": 0.0,
        "schedule.name": "cosine", "schedule.warmup": 0.1,
        "train.batch_size": 16 if size != "smoke" else 8,
        "train.steps": {"smoke": 30, "quick": 150, "full": 600}[size],
        "train.eval_every": 50 if quick else 100, "train.eval_batches": 4,
    }
    return [SweepSpec(name=NAME + ("" if size == "full" else f"-{size}"), base=base,
                      grid={"model.param": ["sp", "mup"], "model.width": widths, "optim.lr": lrs},
                      seeds=None if size == "smoke" else [0, 1],
                      description=CLAIM)]


def _final(store, spec: SweepSpec):
    return final_metrics(store.runs(sweep=spec.name), store.metrics(sweep=spec.name))


def _optima(store, spec: SweepSpec):
    return optimal_lr(lr_curves(_final(store, spec)))


def verdicts(store, specs: list[SweepSpec]) -> list[dict]:
    return [transfer_verdict(_final(store, specs[0]))]


def figures(store, specs: list[SweepSpec], out_dir) -> dict:
    """Optimal LR against width, one line per parameterization (log-log)."""
    opt = _optima(store, specs[0])
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for param, sub in opt.groupby("model.param"):
        sub = sub.sort_values("model.width")
        ax.plot(sub["model.width"], sub["lr_opt"], marker="o", label=param.upper())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width (d_model)")
    ax.set_ylabel("loss-optimal peak LR")
    ax.set_title("Optimal LR vs width")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "optimal_lr_vs_width.png")
    plt.close(fig)
    numbers = {}
    for param, sub in opt.sort_values("model.width").groupby("model.param"):
        numbers[f"{param} widths"] = [int(w) for w in sub["model.width"]]
        numbers[f"{param} optimal LR"] = [float(v) for v in sub["lr_opt"]]
    return {"optimal_lr_vs_width.png": {
        "question": "Does the loss-optimal LR stay put as width grows?",
        "detail": "Fitted optimal peak LR against width (log-log), one line per "
                  "parameterization: flat under muP and falling under SP is the claim.",
        "numbers": numbers}}
