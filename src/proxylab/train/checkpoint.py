"""Checkpoints: save a run every ``train.checkpoint_every`` steps, resume it after a crash.

Where: next to the store, one folder per run id::

    proxylab.db                       the store
    proxylab.db-checkpoints/<run_id>/step_00000250.pt

The driver (``proxylab.sweep.driver``) names the folder through the environment variable
``PROXYLAB_CHECKPOINT_DIR`` before it starts any worker, so inline runs and spawned pool
workers find it alike; without it the folder sits next to the default store
(``$PROXYLAB_DB`` or ``./proxylab.db``).

What: model and optimizer state dicts, the step (the schedule is a pure function of it),
every RNG state (torch global, the data generator, numpy, python, CUDA when present), the
loop's own running numbers, and every metric row the run has emitted so far. On resume the
loop re-emits those rows (the store drops an earlier attempt's metrics when a run starts
again) and continues at step + 1, so a resumed run's metrics equal an uninterrupted run's
bit for bit on CPU (timings aside: ``wall_s``, ``tokens_per_s``).

Atomic: each file is written to a temporary name in the same folder, flushed and fsynced,
then ``os.replace``d; a kill at any moment leaves either the old set or the new one.
Retention: the newest ``train.checkpoint_keep`` files stay, plus every step that is a
multiple of ``train.checkpoint_keep_every`` (0 = none; set it equal to checkpoint_every to
keep them all, as progress-measure analyses want).

Analyses read them by (run id, step): ``proxylab.load_checkpoint(run_id, step, db=...)``.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENV = "PROXYLAB_CHECKPOINT_DIR"
FORMAT = 1
# the loop's running variables a checkpoint carries, in the order ``train`` unpacks them
LOOP_STATE = ("step", "tokens", "train_time", "init_loss", "best_val", "last_eval",
              "interval_losses", "ce_val")
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_root(db_path: str | os.PathLike | None = None) -> Path:
    """The folder that holds the checkpoints of the store at ``db_path`` (default store when None)."""
    if db_path is None:
        from proxylab.store.schema import default_db_path  # noqa: PLC0415

        db_path = default_db_path()
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + "-checkpoints")


def use_store(db_path: str | os.PathLike) -> None:
    """Point runs started from now on (this process and workers it spawns) at ``db_path``'s folder."""
    os.environ[ENV] = str(checkpoint_root(db_path))


def run_dir(run_id: str, db_path: str | os.PathLike | None = None) -> Path:
    if db_path is None and os.environ.get(ENV):
        return Path(os.environ[ENV]) / run_id
    return checkpoint_root(db_path) / run_id


def list_steps(run_id: str, db: str | os.PathLike | None = None) -> list[int]:
    """Steps with a stored checkpoint for ``run_id``, ascending."""
    d = run_dir(run_id, db)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for f in d.iterdir() if (m := _NAME.match(f.name)))


def _path(d: Path, step: int) -> Path:
    return d / f"step_{step:08d}.pt"


# ----------------------------------------------------------------------------------
# RNG states


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    out = {"torch": torch.get_rng_state(), "data": gen.get_state(),
           "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------
# the loop's side


class RecordingReporter:
    """Passes every call on to the run's reporter and keeps the metric rows for checkpoints.

    After a restore, ``started`` also re-emits the checkpoint's rows (the store drops an
    earlier attempt's metrics when the run starts again) and notes the step in the meta.
    """

    def __init__(self, inner):
        self.inner, self.rows = inner, []
        self.resumed_from: int | None = None

    def started(self, meta):
        if self.resumed_from is None:
            self.inner.started(meta)
            return
        self.inner.started({**meta, "resumed_from_step": self.resumed_from})
        self.inner.metrics(list(self.rows))

    def metrics(self, rows):
        rows = list(rows)
        self.rows.extend(rows)
        self.inner.metrics(rows)

    def progress(self, step, total):
        self.inner.progress(step, total)


class Checkpointer:
    """The loop's handle: ``restore`` once before the first step, ``maybe_save`` after each.

    With ``train.checkpoint_every = 0`` it does nothing (and records nothing).
    """

    def __init__(self, cfg, fingerprint: str, reporter):
        from proxylab.config import run_id  # noqa: PLC0415

        tc = cfg.train
        self.every = tc.checkpoint_every
        self.keep = tc.checkpoint_keep
        self.keep_every = tc.checkpoint_keep_every
        self.cfg, self.fingerprint, self.run_id = cfg, fingerprint, run_id(cfg)
        self.dir = run_dir(self.run_id)
        self.reporter = RecordingReporter(reporter) if self.every > 0 else reporter

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def restore(self, model, opt, gen: torch.Generator, device) -> dict[str, Any] | None:
        """Load the newest usable checkpoint into model, optimizer and RNGs; re-emit its
        metric rows. Returns the loop's saved variables (``step`` included), or None."""
        if not self.enabled:
            return None
        for step in reversed(self._steps()):
            try:
                ck = torch.load(_path(self.dir, step), map_location=device, weights_only=False)
            except Exception:  # noqa: BLE001 -- a damaged file: fall back to an older one
                continue
            if ck.get("format") != FORMAT or ck.get("fingerprint") != self.fingerprint:
                continue   # another data set behind the same config: start over
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"], gen)
            self.reporter.rows = list(ck["rows"])     # re-emitted by reporter.started
            self.reporter.resumed_from = ck["step"]
            return {**ck["loop"], "step": ck["step"]}
        return None

    def _steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for f in self.dir.iterdir() if (m := _NAME.match(f.name)))

    def maybe_save(self, step: int, model, opt, gen: torch.Generator, loop: dict[str, Any],
                   last: bool = False) -> None:
        """Save on every ``every``-th step, and on a run's ``last`` step whatever its number."""
        if not self.enabled or (step % self.every and not last):
            return
        self.save(step, model, opt, gen, loop)

    def save(self, step: int, model, opt, gen: torch.Generator, loop: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        ck = {"format": FORMAT, "run_id": self.run_id, "step": step,
              "config": self.cfg.to_dict(), "fingerprint": self.fingerprint,
              "model": model.state_dict(), "optimizer": opt.state_dict(),
              "rng": rng_state(gen), "loop": dict(loop), "rows": list(self.reporter.rows)}
        path = _path(self.dir, step)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(ck, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._retain(step)
        return path

    def _retain(self, newest: int) -> None:
        steps = self._steps()
        keep = set(steps[-self.keep:]) if self.keep > 0 else set()
        keep.add(newest)
        for s in steps:
            if s not in keep and not (self.keep_every > 0 and s % self.keep_every == 0):
                _path(self.dir, s).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------
# analyses' side


@dataclass
class Checkpoint:
    """One stored checkpoint: its config, step, state dicts and the metric rows up to it."""

    run_id: str
    step: int
    config: Any            # RunConfig
    model_state: dict
    optimizer_state: dict
    rows: list
    loop: dict

    def model(self, device: str = "cpu") -> torch.nn.Module:
        """The model rebuilt from the config with this checkpoint's weights (eval mode)."""
        from proxylab.models import build_model  # noqa: PLC0415

        task = self.task()
        m = build_model(self.config.model, vocab_size=task.vocab_size, seq_len=task.seq_len,
                        input_shape=getattr(task, "input_shape", None))  # image tasks
        m.load_state_dict(self.model_state)
        return m.to(device).eval()

    def task(self):
        from proxylab.tasks import build_task  # noqa: PLC0415

        return build_task(self.config.task, seed=self.config.train.seed)


def load_checkpoint(run_id: str, step: int | None = None, *, db=None) -> Checkpoint:
    """The checkpoint of ``run_id`` at ``step`` (None = the newest) of the store at ``db``."""
    from proxylab.config import ConfigError, from_dict  # noqa: PLC0415

    steps = list_steps(run_id, db)
    if not steps:
        raise ConfigError(f"run {run_id}: no checkpoints in {run_dir(run_id, db)} "
                          "(train with train.checkpoint_every > 0)")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise ConfigError(f"run {run_id}: no checkpoint at step {step}; stored steps: "
                          f"{', '.join(map(str, steps))}")
    ck = torch.load(_path(run_dir(run_id, db), step), map_location="cpu", weights_only=False)
    return Checkpoint(run_id=run_id, step=step, config=from_dict(ck["config"]),
                      model_state=ck["model"], optimizer_state=ck["optimizer"],
                      rows=ck["rows"], loop=ck["loop"])
