"""Learning-rate schedules as multipliers s_t in [0, 1] of the peak LR.

The optimizer applies lr_t = peak_lr * s_t per group; `independent` weight decay follows the
same s_t. Warmup is linear from s = 1/(warmup+1) ... 1 so that step 0 never takes a zero step.
"""

from __future__ import annotations

import math

from proxylab.config import ScheduleConfig


def warmup_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """`schedule.warmup` is a step count, or a fraction of the run when below 1."""
    w = cfg.warmup * total_steps if cfg.warmup < 1 else cfg.warmup
    return min(int(round(w)), total_steps)


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int) -> float:
    """s_t for the update taken at 0-based `step` of `total_steps`."""
    warm = warmup_steps(cfg, total_steps)
    if step < warm:
        return (step + 1) / (warm + 1)
    if cfg.name == "constant":
        return 1.0
    floor = cfg.min_lr_frac
    if cfg.name == "wsd":  # warmup-stable-decay: flat, then a linear decay over the last part
        decay_len = int(round(cfg.decay_frac * total_steps))
        if decay_len == 0:
            return 1.0
        decay_start = max(warm, total_steps - decay_len)
        if step < decay_start:
            return 1.0
        frac = (step - decay_start + 1) / max(1, total_steps - decay_start)
        return 1.0 - (1.0 - floor) * min(frac, 1.0)
    # cosine / linear from the end of warmup to the floor at the last step
    span = max(1, total_steps - warm - 1)
    frac = min(1.0, (step - warm) / span)
    if cfg.name == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return 1.0 - (1.0 - floor) * frac  # linear
