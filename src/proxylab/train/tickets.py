"""Lottery tickets for grokking (Minegishi et al. 2023): train a fixed sparse subnetwork.

``train.ticket_from = RUN_ID`` (a finished dense run in the same store, trained with
``train.checkpoint_every`` so that its final weights are on disk) and
``train.ticket_sparsity = s``: the run's model is built and initialised exactly as the dense
run's was (same seed: the rewind to initialisation), then the ``s`` share of weights with the
smallest magnitude in the dense run's NEWEST checkpoint — global magnitude pruning over every
weight matrix (tensors of 2+ dimensions; biases and gains are kept) — are set to zero and
kept at zero after every optimizer step. The mask is a pure function of the dense run, so a
ticket run is still a pure function of its config.
"""

from __future__ import annotations

import torch


class Ticket:
    def __init__(self, masks: dict[str, torch.Tensor], source_step: int):
        self.masks, self.source_step = masks, source_step

    @classmethod
    def from_config(cls, cfg, model) -> "Ticket | None":
        tc = cfg.train
        if not tc.ticket_from:
            return None
        from proxylab.config import ConfigError  # noqa: PLC0415
        from proxylab.train.checkpoint import list_steps, run_dir  # noqa: PLC0415

        steps = list_steps(tc.ticket_from)
        if not steps:
            raise ConfigError(f"train.ticket_from: run {tc.ticket_from!r} has no checkpoints in "
                              f"{run_dir(tc.ticket_from)}; train it first with train.checkpoint_every > 0")
        ck = torch.load(run_dir(tc.ticket_from) / f"step_{steps[-1]:08d}.pt", map_location="cpu",
                        weights_only=False)
        return cls(magnitude_masks(ck["model"], tc.ticket_sparsity), steps[-1])

    @torch.no_grad()
    def apply(self, model) -> None:
        """Zero the pruned weights (after init and after every optimizer step)."""
        for name, p in model.named_parameters():
            m = self.masks.get(name)
            if m is not None:
                p.mul_(m.to(p.device, p.dtype))


def magnitude_masks(state: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning: 1 = kept, 0 = pruned, over every tensor of 2+ dimensions.

    Exactly round(sparsity * n) of the n weights are pruned (ties broken by position)."""
    names = [k for k, v in state.items() if v.ndim >= 2 and v.is_floating_point()]
    flat = torch.cat([state[k].detach().abs().flatten().float() for k in names])
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    out, i = {}, 0
    for k in names:
        n = state[k].numel()
        out[k] = keep[i:i + n].view(state[k].shape).float()
        i += n
    return out
