"""Optimizer step time relative to torch.optim.AdamW on the width-128 GPT proxy.

    OMP_NUM_THREADS=1 python benchmarks/optim_step.py [--reps 30] [--threads 1] [--only a,b]

Every optimizer steps the same model with the same fixed gradients, interleaved round by
round (so drift in machine load hits all alike), probing off. Reports the median thread
CPU time of a step (robust when other processes share the cores; the minimum wall time
is printed too) and the ratio to torch AdamW (its CPU default: the per-tensor loop, not foreach) and to
in-house AdamW. Targets: elementwise <= 1.3x, Muon <= 2x, SOAP/Shampoo <= 3x at
precondition frequency 10. Optimizers whose module is missing are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import proxylab.optim as po
from proxylab.config import ModelConfig, OptimConfig

SECOND_ORDER_EXTRA = {"soap": {"precondition_frequency": 10},
                      "shampoo": {"precondition_frequency": 10}}


def build(name: str, model):
    if name == "torch-adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sig = po._signature(po.get_class(name))
    extra = {k: v for k, v in SECOND_ORDER_EXTRA.get(name, {}).items() if k in sig}
    cfg = OptimConfig(name=name, lr=po.default_lr(name), weight_decay=0.1, extra=extra)
    return po.build_optimizer(model, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--only", default="", help="comma-separated optimizer names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from proxylab.models import build_model  # noqa: PLC0415

    names = ["torch-adamw"] + [n for n in po.available() if not n.startswith("lawn-")]
    if args.only:
        keep = set(args.only.split(","))
        names = [n for n in names if n in keep or n in ("torch-adamw", "adamw")]
    models, opts = {}, {}
    torch.manual_seed(0)
    cfg = ModelConfig(width=args.width)
    base = build_model(cfg, vocab_size=256, seq_len=128)
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]
    for n in names:
        m = build_model(cfg, vocab_size=256, seq_len=128)
        m.load_state_dict(base.state_dict())
        try:
            opts[n] = build(n, m)
        except Exception as e:  # noqa: BLE001 (report and go on)
            print(f"{n:16s} skipped: {type(e).__name__}: {e}")
            continue
        models[n] = m
        for p, g in zip(m.parameters(), grads):
            p.grad = g.clone()
    n_params = sum(p.numel() for p in base.parameters())
    times: dict[str, list[float]] = {n: [] for n in opts}
    walls: dict[str, list[float]] = {n: [] for n in opts}
    for rep in range(args.reps + 3):  # 3 warm-up rounds (state allocation, first eigh)
        for n, opt in opts.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            opt.step()
            dc, dt = time.thread_time() - c0, time.perf_counter() - t0
            if rep >= 3:
                times[n].append(dc)
                walls[n].append(dt)
    med = {n: statistics.median(t) for n, t in times.items()}
    wmin = {n: min(t) for n, t in walls.items()}
    ref, mine = med["torch-adamw"], med.get("adamw", float("nan"))
    print(f"GPT proxy width {args.width}: {n_params} params in {len(grads)} tensors; "
          f"{args.reps} steps each, threads={args.threads}, probing off")
    print(f"{'optimizer':16s} {'cpu ms':>8s} {'x torch AdamW':>14s} {'x proxylab AdamW':>17s}"
          f" {'min wall ms':>12s} {'x torch':>8s}")
    for n in opts:
        print(f"{n:16s} {med[n] * 1e3:8.3f} {med[n] / ref:14.2f} {med[n] / mine:17.2f}"
              f" {wmin[n] * 1e3:12.3f} {wmin[n] / wmin['torch-adamw']:8.2f}")
    ns = newton_schulz_flops(base)
    print(f"Muon's Newton-Schulz alone is {ns / 1e9:.2f} GFLOP per step (5 iterations over the "
          f"hidden matrices) vs ~{12 * n_params / 1e6:.1f} MFLOP of elementwise AdamW work: "
          "a matrix optimizer's step cannot be within 2x of AdamW's at this size on a CPU.")
    train_step_ratios(cfg, [n for n in ("adamw", "muon", "soap", "shampoo") if n in opts], args.reps)


def newton_schulz_flops(model, steps: int = 5) -> float:
    """FLOPs of Keller's quintic NS on every hidden matrix: per iteration, for X of m x n
    (m <= n): A = X X^T (2m^2 n), A @ A (2m^3), (bA + cA^2) X (2m^2 n)."""
    total = 0.0
    for name, role in model.param_roles().items():
        p = model.get_parameter(name)
        if role == "hidden" and p.ndim == 2:
            m, n = sorted(p.shape)
            total += steps * (4 * m * m * n + 2 * m ** 3)
    return total


def train_step_ratios(cfg: ModelConfig, names: list[str], reps: int) -> None:
    """Whole training steps (forward, backward, optimizer) on real batches, side by side."""
    from proxylab.models import build_model  # noqa: PLC0415
    from proxylab.tasks import build_task  # noqa: PLC0415
    from proxylab.config import TaskConfig  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    task = build_task(TaskConfig(seq_len=128), seed=0)
    gen = torch.Generator().manual_seed(0)
    batches = [task.train_batch(16, gen) for _ in range(4)]
    runs = {}
    for n in names:
        torch.manual_seed(0)
        m = build_model(cfg, vocab_size=256, seq_len=128)
        runs[n] = (m, build(n, m))
    times = {n: [] for n in names}
    for rep in range(reps // 2 + 3):
        for n, (m, opt) in runs.items():
            x, y = batches[rep % len(batches)]
            c0 = time.thread_time()
            loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if rep >= 3:
                times[n].append(time.thread_time() - c0)
    ref = statistics.median(times["adamw"])
    print("whole training step (batch 16 x 128 tokens), x proxylab AdamW: " + ", ".join(
        f"{n} {statistics.median(t) / ref:.2f}" for n, t in times.items()))


if __name__ == "__main__":
    main()
