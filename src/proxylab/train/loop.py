"""The training loop: one run = a pure function of its config (and seed).

Reads top to bottom: build task, model and optimizer; evaluate at step 0 (the loss at
initialization); then step, probe and evaluate. Every number goes out through a
:class:`Reporter` (the store writer lives in the driver, not here). A run whose loss turns
NaN/inf or exceeds ``train.diverge_factor`` times its initial loss stops and is returned as
``diverged``: a result, not a crash.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from proxylab.config import RunConfig, run_id
from proxylab.models import build_model
from proxylab.models.bitlinear import bitlinear_probes
from proxylab.optim import build_optimizer
from proxylab.tasks import build_task
from proxylab.train.checkpoint import LOOP_STATE, Checkpointer
from proxylab.train.ema import WeightAverage
from proxylab.train.noise_scale import NoiseScaleProbe
from proxylab.train.schedules import lr_multiplier
from proxylab.train.tickets import Ticket
from proxylab.train.wd_probes import WDProbes

Rows = list[tuple[int, str, float]]


class Reporter(Protocol):
    """Where a run's numbers go. The driver's implementation writes them to the store."""

    def started(self, meta: dict) -> None: ...
    def metrics(self, rows: Rows) -> None: ...
    def progress(self, step: int, total: int) -> None: ...


class NullReporter:
    def started(self, meta: dict) -> None: pass
    def metrics(self, rows: Rows) -> None: pass
    def progress(self, step: int, total: int) -> None: pass


class MemoryReporter(NullReporter):
    """Keeps every metric row in ``rows`` (tests, notebooks, benchmarks)."""

    def __init__(self):
        self.rows: Rows = []

    def metrics(self, rows: Rows) -> None:
        self.rows += rows

    def last(self, key: str) -> float:
        """The value of ``key`` at the last step that logged it."""
        return [v for _, k, v in self.rows if k == key][-1]


@dataclass
class RunResult:
    run_id: str
    status: str                      # done | diverged | failed
    summary: dict = field(default_factory=dict)
    error: str | None = None


# ----------------------------------------------------------------------------------
# device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but torch sees no CUDA device")
    return torch.device(name)


# ----------------------------------------------------------------------------------
# losses and probes


def lm_loss(logits: torch.Tensor, y: torch.Tensor, z_loss: float, loss: str = "ce",
            dtype: str = "fp32"):
    """Cross-entropy on positions with a target, plus z_loss * mean(log Z^2) (PaLM form).

    Returns (total loss, cross-entropy, mean log Z over counted positions). With
    ``loss="mse"`` (train.loss) the second value is instead the mean squared error between
    the logits and one-hot targets (Doshi et al. 2024); evaluation always reports CE.
    ``dtype="fp64"`` (train.loss_dtype) computes all of it from float64 logits: in float32 a
    fitted example's probability rounds to 1 once its margin passes ~16 nats, so its loss and
    its gradient on the right answer become exactly 0.
    """
    y = y[:, -logits.shape[1]:]                 # models may emit only the last positions
    logits = (logits.double() if dtype == "fp64" else logits.float()).flatten(0, 1)
    y = y.flatten()
    keep = y != -100
    ce = F.cross_entropy(logits, y, ignore_index=-100)
    if loss == "mse":
        ce = F.mse_loss(logits[keep], F.one_hot(y[keep], logits.shape[-1]).to(logits.dtype))
    logz = torch.logsumexp(logits[keep], dim=-1)
    total = ce + z_loss * (logz**2).mean() if z_loss > 0 else ce
    return total, ce, logz.mean()


@torch.no_grad()
def _logz_min(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Smallest log Z over the positions that carry a target (output-logit drift shows here)."""
    y = y[:, -logits.shape[1]:]
    return float(torch.logsumexp(logits.detach().float()[y != -100], dim=-1).min())


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    y = y[:, -logits.shape[1]:]
    keep = y != -100
    correct = (logits.argmax(-1) == y) & keep
    return int(correct.sum()), int(keep.sum())


@torch.no_grad()
def evaluate(model, batches, *, has_accuracy: bool, autocast, extra=None) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total_ce = total_logz = 0.0
    n_tok = n_correct = 0
    for x, y in batches:
        with autocast():
            logits = model(x)
        _, ce, logz = lm_loss(logits, y, 0.0)
        correct, k = accuracy(logits, y)          # k: positions that carry a target
        total_ce += float(ce) * k
        total_logz += float(logz) * k
        n_tok += k
        n_correct += correct
    out = {"val/loss": total_ce / n_tok, "logz_mean": total_logz / n_tok}
    if has_accuracy:
        out["val/acc"] = n_correct / n_tok
    attn = model.max_attention_logit(batches[0][0])
    if not math.isnan(attn):
        out["attn_logit_max_l0"] = attn
    for name, sub in (extra or {}).items():    # named training subsets (task.eval_sets())
        ev = evaluate(model, sub, has_accuracy=has_accuracy, autocast=autocast)
        out.update({f"{name}/loss": ev["val/loss"], f"{name}/acc": ev.get("val/acc", math.nan)})
    model.train(was_training)
    return out


def global_norm(tensors) -> float:
    norms = [t.detach().float().norm() for t in tensors if t is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


# ----------------------------------------------------------------------------------
# the loop


def train(cfg: RunConfig, reporter: Reporter | None = None) -> RunResult:
    """Train one run to completion (or divergence). Exceptions propagate to the caller."""
    rep = reporter or NullReporter()
    tc = cfg.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)

    task = build_task(cfg.task, seed=tc.seed)
    model = build_model(cfg.model, vocab_size=task.vocab_size, seq_len=task.seq_len,
                        input_shape=getattr(task, "input_shape", None)).to(device)  # images
    opt = build_optimizer(model, cfg.optim)
    ticket = Ticket.from_config(cfg, model)      # train.ticket_from: a fixed sparse mask, or None
    wdp = WDProbes.from_config(cfg, model, task)  # train.wd_probes / train.freq_buckets (None: off)
    if ticket:
        ticket.apply(model)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    # algorithmic tasks validate on their whole held-out set: big chunks keep that fast
    val_bs = max(tc.batch_size, 1024) if task.has_accuracy else tc.batch_size
    val = [(x.to(device), y.to(device)) for x, y in task.val_batches(val_bs, tc.eval_batches)]
    extra = {k: [(x.to(device), y.to(device)) for x, y in b]          # e.g. train_clean /
             for k, b in getattr(task, "eval_sets", dict)().items()}   # train_corrupt
    use_bf16 = tc.precision == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    ckpt = Checkpointer(cfg, task.fingerprint, rep)      # train.checkpoint_every (0: a no-op)
    rep = ckpt.reporter                                  # keeps the rows a checkpoint carries
    resumed = ckpt.restore(model, opt, gen, device)      # newest checkpoint of this run, or None
    noise = NoiseScaleProbe.from_config(cfg)             # train.noise_scale_every (None: off)
    ema = WeightAverage.from_config(cfg, model)          # train.ema_decay (None: off)

    def ema_eval(ev: dict) -> dict:                      # val_ema/* beside val/*
        return ev | (ema.metrics(lambda m: evaluate(m, val, has_accuracy=task.has_accuracy,
                                                    autocast=autocast)) if ema else {})

    # What only the worker knows; the store adds versions, git commit and platform
    # (proxylab.store.meta) when it records the start.
    rep.started({
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "worker_host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "data_fingerprint": task.fingerprint,
        "data": task.describe(),
        "n_params": n_params,
    })

    t_start = time.perf_counter()
    train_time = 0.0          # seconds spent in training steps (excludes evaluation)
    tokens = 0
    if resumed is None:
        ev = ema_eval(evaluate(model, val, has_accuracy=task.has_accuracy, autocast=autocast, extra=extra))
        init_loss = ev["val/loss"]
        rep.metrics([(0, k, v) for k, v in ev.items()] + [(0, "tokens", 0.0), (0, "wall_s", 0.0)])
        last_eval = ev
        best_val = init_loss
    status, diverged_at, interval_losses, stopped_early = "done", None, [], False
    step = 0
    if resumed is not None:   # continue right after the checkpoint's step
        step, tokens, train_time, init_loss, best_val, last_eval, interval_losses, ce_val = (
            resumed[k] for k in LOOP_STATE)
        t_start -= resumed["elapsed_s"]
        stopped_early = resumed.get("stopped_early", False)   # saved at its goal: nothing left

    for step in range(step + 1, step + 1 if stopped_early else tc.steps + 1):
        t0 = time.perf_counter()
        s_t = lr_multiplier(cfg.schedule, step - 1, tc.steps)
        for g in opt.param_groups:
            g["lr"] = g["peak_lr"] * s_t
            if step - 1 >= cfg.optim.wd_until * tc.steps:  # optim.wd_until: decay off from here
                g["weight_decay"] = 0.0
        x, y = task.train_batch(tc.batch_size, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        probe = step % tc.log_every == 0 or step == tc.steps
        if probe and hasattr(model, "probe_next_forward"):
            model.probe_next_forward()      # per-layer attention / residual probes
        with autocast():
            logits = model(x)
        loss, ce, logz = lm_loss(logits, y, tc.z_loss, tc.loss, tc.loss_dtype)
        opt.zero_grad(set_to_none=True)
        # train.loss_scale: gradients (and so Adam's view of them) scaled, numbers reported unscaled
        (loss * tc.loss_scale if tc.loss_scale != 1.0 else loss).backward()
        if noise is not None and noise.due(step):   # |G_big|^2 from p.grad (unclipped) + one small pass
            rep.metrics(noise.measure(step, model, params, x, y, lambda lg, t: lm_loss(lg, t, tc.z_loss, tc.loss, tc.loss_dtype)[0],
                                      autocast=autocast, grad_scale=tc.loss_scale))
        if tc.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        else:
            grad_norm = global_norm(p.grad for p in params) if probe else float("nan")
        if probe and hasattr(opt, "probe_next_step"):
            opt.probe_next_step()
        if probe and wdp:
            wdp.before_step()                   # keeps θ_{t-1} for the one-step angle
        opt.step()
        if ticket:
            ticket.apply(model)
        if ema is not None:
            ema.update()
        ce_val = float(ce.detach())
        train_time += time.perf_counter() - t0
        tokens += int((y != -100).sum()) if task.has_accuracy else x.numel()
        interval_losses.append(ce_val)

        bad = not math.isfinite(ce_val) or ce_val > tc.diverge_factor * init_loss
        rows: Rows = []
        if probe or bad:
            rows += [(step, "train/loss", sum(interval_losses) / len(interval_losses)),
                     (step, "lr", opt.param_groups[0]["lr"]),
                     (step, "lr_mult", s_t),
                     (step, "grad_norm", grad_norm),
                     (step, "param_norm", global_norm(params)),
                     (step, "logz_train", float(logz.detach())),
                     (step, "logz_train_min", float(_logz_min(logits, y))),
                     (step, "tokens", float(tokens)),
                     (step, "wall_s", time.perf_counter() - t_start)]
            if task.has_accuracy:
                c, n = accuracy(logits.detach(), y)
                rows.append((step, "train/acc", c / max(n, 1)))
            if hasattr(model, "pop_probes"):
                rows += [(step, k, v) for k, v in model.pop_probes().items()]
            rows += [(step, k, float(v)) for k, v in getattr(opt, "last_stats", {}).items()]
            rows += [(step, f"opt/{k}/{name}", float(v))           # per tensor, e.g.
                     for name, stats in getattr(opt, "last_tensor_stats", {}).items()  # opt/update_rms/head.weight
                     for k, v in stats.items()]
            if wdp:   # wd/*: weight and row norms, angular updates, effective LR, logit scale
                rows += wdp.rows(step, logits, opt)
            if cfg.model.quant != "none":  # quant/<stat>/<layer>: ternary shares, flips, ...
                rows += [(step, k, v) for k, v in bitlinear_probes(model).items()]
            interval_losses = []
        if bad:
            rows.append((step, "train/loss_last", ce_val))
            rep.metrics(rows)
            status, diverged_at = "diverged", step
            break
        if step % tc.eval_every == 0 or step == tc.steps:
            last_eval = ema_eval(evaluate(model, val, has_accuracy=task.has_accuracy, autocast=autocast,
                                          extra=extra))
            if not math.isfinite(last_eval["val/loss"]) or last_eval["val/loss"] > tc.diverge_factor * init_loss:
                status, diverged_at = "diverged", step
            best_val = min(best_val, last_eval["val/loss"]) if math.isfinite(last_eval["val/loss"]) else best_val
            rows += [(step, k, v) for k, v in last_eval.items()]
            # train.stop_at_val_acc: the run has reached its goal (e.g. grokked); the rest of
            # the budget would only spend CPU
            stopped_early = 0 < tc.stop_at_val_acc <= last_eval.get("val/acc", -1.0) and step < tc.steps
            if wdp:   # val_bucket/*: validation loss per token-frequency bucket
                rows += wdp.eval_rows(step, model, val, autocast)
        if rows:
            rep.metrics(rows)
        rep.progress(step, tc.steps)
        if status == "diverged":
            break
        loop_state = {
            "tokens": tokens, "train_time": train_time, "init_loss": init_loss, "best_val": best_val,
            "last_eval": last_eval, "interval_losses": interval_losses, "ce_val": ce_val,
            "elapsed_s": time.perf_counter() - t_start, "stopped_early": stopped_early}
        # a run stopped at its goal keeps its last weights too (tickets and analyses read them)
        ckpt.maybe_save(step, model, opt, gen, loop_state, last=stopped_early)
        if stopped_early:
            break

    summary = {
        "steps_done": step,
        "init_loss": init_loss,
        "final_train_loss": ce_val,
        "final_val_loss": last_eval["val/loss"] if status == "done" else float("nan"),
        "best_val_loss": best_val,
        "final_val_acc": last_eval.get("val/acc"),
        "max_attn_logit_l0": last_eval.get("attn_logit_max_l0"),
        "tokens": tokens,
        "tokens_per_s": tokens / train_time if train_time > 0 else float("nan"),
        "train_time_s": train_time,
        "wall_s": time.perf_counter() - t_start,
        "n_params": n_params,
        "diverged_step": diverged_at,
        "stopped_early": stopped_early,
    }
    return RunResult(run_id=run_id(cfg), status=status, summary=summary)
