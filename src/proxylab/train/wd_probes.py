"""Weight-decay probes: what decay does to weights, updates, logits and rare tokens.

Two switches, both off by default (the training loop calls nothing when they are off):

``train.wd_probes`` — on probe steps (every ``train.log_every``), for every trainable
tensor with >= 2 dims (name = parameter name):

    wd/norm/<name>            ‖W‖_F
    wd/row_norm/<name>        mean over neurons (rows) of ‖W_i‖          (hidden matrices)
    wd/row_norm_std/<name>    std over neurons of ‖W_i‖                   (hidden matrices)
    wd/angle/<name>           angle(θ_{t-1}, θ_t) of this one step, radians
    wd/row_angle/<name>       mean over rows of the one-step angle       (hidden matrices)
    wd/angle_k/<name>         angle(θ_{t-k}, θ_t) / k, k = steps since the last probe
    wd/eff_lr/<name>          η_t / mean_i ‖W_i‖², the effective LR of a row-wise
                              scale-invariant weight (model.scale_inv)
    wd/logit_max              max |logit| on the training batch
    wd/head_norm              ‖W_head‖_F

The one-step angle needs θ_{t-1}: ``before_step()`` copies the tracked tensors right
before ``opt.step()`` on probe steps only. Angles use atan2(‖b⊥‖, b∥) in float64, exact
for the small angles of interest where acos(cos) loses precision.

``train.freq_buckets = K`` — at every evaluation, the validation loss per token-frequency
bucket: ``val_bucket/loss/b<j>`` (b0 = rarest) and ``val_bucket/share/b<j>`` (the share of
validation targets in it). Buckets are quantiles of the training tokens' mass
(:func:`frequency_buckets`); this costs one more forward pass over the validation set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from proxylab.config import ConfigError

# ----------------------------------------------------------------------------------
# pure helpers (tested on hand-built inputs)


def frequency_buckets(counts, n_buckets: int) -> np.ndarray:
    """Bucket id (0 = rarest .. n_buckets-1 = most frequent) of every token id.

    Token types are sorted by training count (ascending; ties by id) and cut where the
    cumulative share of the training mass crosses j/n_buckets: a type goes to the bucket
    that holds the midpoint of its own mass interval, so each bucket holds about 1/K of the
    training tokens (a single type heavier than 1/K fills its bucket alone, and may leave
    a neighbour empty). Types never seen in training are in bucket 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    total = counts.sum()
    out = np.zeros(len(counts), dtype=np.int64)
    if total <= 0:
        return out
    order = np.argsort(counts, kind="stable")
    cum = np.cumsum(counts[order]) / total
    mid = cum - counts[order] / total / 2
    out[order] = np.minimum((mid * n_buckets).astype(np.int64), n_buckets - 1)
    out[counts == 0] = 0
    return out


def bucket_mean_losses(token_losses, targets, bucket_of, n_buckets: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(mean loss per bucket, share of targets per bucket); nan for an empty bucket.
    ``token_losses`` and ``targets`` are flat arrays of the same length; targets < 0 are
    ignored (the loop's -100)."""
    loss = np.asarray(token_losses, dtype=np.float64).ravel()
    tgt = np.asarray(targets).ravel()
    keep = tgt >= 0
    b = np.asarray(bucket_of)[tgt[keep]]
    sums = np.bincount(b, weights=loss[keep], minlength=n_buckets)
    ns = np.bincount(b, minlength=n_buckets).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ns > 0, sums / np.maximum(ns, 1), np.nan)
    return means, ns / max(ns.sum(), 1)


def angle(a: torch.Tensor, b: torch.Tensor, dim=None) -> torch.Tensor:
    """Angle between a and b (over all elements, or along ``dim``), float64 radians:
    atan2(‖b - proj_a b‖, <a, b>/‖a‖), accurate for small angles."""
    a, b = a.detach().double(), b.detach().double()
    kw = {} if dim is None else {"dim": dim, "keepdim": True}
    aa = (a * a).sum(**kw).clamp_min(1e-300)
    ab = (a * b).sum(**kw)
    perp = b - ab / aa * a
    out = torch.atan2(perp.pow(2).sum(**kw).sqrt(), ab / aa.sqrt())
    return out if dim is None else out.squeeze(dim)


# ----------------------------------------------------------------------------------
# the probe the loop calls


class WDProbes:
    """Built by :meth:`from_config` (None when both switches are off)."""

    def __init__(self, model, *, weights: bool, n_buckets: int, bucket_of=None):
        from proxylab.models.scale_inv import scale_invariant_names  # noqa: PLC0415
        from proxylab.optim import infer_roles  # noqa: PLC0415

        self.weights, self.n_buckets = weights, n_buckets
        roles = infer_roles(model)
        self.tensors = {n: p for n, p in model.named_parameters()
                        if p.requires_grad and p.ndim >= 2}
        self.hidden = {n for n in self.tensors if roles.get(n) == "hidden"}
        self.head = [n for n in self.tensors if roles.get(n) == "head"]
        self.invariant = set(scale_invariant_names(model)) & set(self.tensors)
        self.prev: dict[str, torch.Tensor] = {}    # θ_{t-1}, filled by before_step
        self.snap: dict[str, torch.Tensor] = {}    # θ at the last probe
        self.snap_step = 0
        self.bucket_of = None if bucket_of is None else torch.as_tensor(bucket_of)

    @classmethod
    def from_config(cls, cfg, model, task) -> "WDProbes | None":
        tc = cfg.train
        if not tc.wd_probes and tc.freq_buckets == 0:
            return None
        bucket_of = None
        if tc.freq_buckets > 0:
            counts = getattr(task, "token_counts", None)
            if counts is None:
                raise ConfigError(f"train.freq_buckets: needs a text task (token counts); "
                                  f"task.name = {cfg.task.name!r} has none; use 0")
            bucket_of = frequency_buckets(counts(), tc.freq_buckets)
        return cls(model, weights=tc.wd_probes, n_buckets=tc.freq_buckets, bucket_of=bucket_of)

    @torch.no_grad()
    def before_step(self) -> None:
        if self.weights:
            self.prev = {n: p.detach().clone() for n, p in self.tensors.items()}

    @torch.no_grad()
    def rows(self, step: int, logits: torch.Tensor, opt) -> list[tuple[int, str, float]]:
        """The wd/* rows of a probe step (after opt.step()); η_t is each tensor's group LR."""
        if not self.weights:
            return []
        lr_of = {id(q): float(g["lr"]) for g in opt.param_groups for q in g["params"]}
        out: dict[str, float] = {}
        k = step - self.snap_step
        for n, p in self.tensors.items():
            w = p.detach()
            out[f"wd/norm/{n}"] = float(w.double().norm())
            if n in self.prev:
                out[f"wd/angle/{n}"] = float(angle(self.prev[n], w))
            if n in self.snap and k > 0:
                out[f"wd/angle_k/{n}"] = float(angle(self.snap[n], w)) / k
            if n in self.hidden and w.ndim == 2:
                rn = w.double().norm(dim=1)
                out[f"wd/row_norm/{n}"] = float(rn.mean())
                out[f"wd/row_norm_std/{n}"] = float(rn.std()) if len(rn) > 1 else 0.0
                if n in self.prev:
                    out[f"wd/row_angle/{n}"] = float(angle(self.prev[n], w, dim=1).mean())
                if n in self.invariant:
                    out[f"wd/eff_lr/{n}"] = lr_of.get(id(p), math.nan) / float((rn * rn).mean())
        out["wd/logit_max"] = float(logits.detach().abs().max())
        if self.head:
            out["wd/head_norm"] = math.sqrt(sum(float(self.tensors[n].double().pow(2).sum())
                                                for n in self.head))
        self.snap = {n: p.detach().clone() for n, p in self.tensors.items()}
        self.snap_step, self.prev = step, {}
        return [(step, key, v) for key, v in out.items()]

    @torch.no_grad()
    def eval_rows(self, step: int, model, batches, autocast) -> list[tuple[int, str, float]]:
        """val_bucket/* rows: the validation loss per token-frequency bucket."""
        if self.n_buckets == 0:
            return []
        was = model.training
        model.eval()
        losses, targets = [], []
        for x, y in batches:
            with autocast():
                logits = model(x)
            y = y[:, -logits.shape[1]:]
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                          ignore_index=-100, reduction="none").cpu())
            targets.append(y.flatten().cpu())
        model.train(was)
        means, shares = bucket_mean_losses(torch.cat(losses).numpy(), torch.cat(targets).numpy(),
                                           self.bucket_of.numpy(), self.n_buckets)
        return ([(step, f"val_bucket/loss/b{j}", float(v)) for j, v in enumerate(means)]
                + [(step, f"val_bucket/share/b{j}", float(v)) for j, v in enumerate(shares)])
