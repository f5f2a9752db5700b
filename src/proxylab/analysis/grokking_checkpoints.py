"""Grokking analyses that read a run's stored checkpoints (``train.checkpoint_every``).

- :func:`progress_measures`: Nanda et al.'s restricted / excluded / train / test loss and the
  Gini of the embedding's Fourier norms at every stored step of an ``answer_tf`` run on
  ``a + b mod p`` (key frequencies from the last checkpoint's embedding).
- :func:`pruned_accuracies`: Doshi et al.'s IPR pruning of a ``quad_mlp``: zero the neurons
  whose IPR is below a threshold, accuracies before and after.

The numerics are the pure functions of :mod:`proxylab.analysis.grokking` (tested there);
these wrappers only load weights and build the full (a, b) grid.
"""

from __future__ import annotations

import pandas as pd
import torch

from proxylab.analysis.grokking import (fourier_norms, gini, ipr, key_frequencies,
                                        restricted_excluded_loss)

IPR_THRESHOLD = 0.5          # Doshi et al.: neurons with IPR < 0.5 are the memorizing ones


def progress_measures(store, run_id: str) -> pd.DataFrame:
    """Per stored checkpoint step: restricted/excluded/train/test loss and the Gini of the
    embedding's Fourier norms, with the key frequencies of the LAST checkpoint."""
    from proxylab.train.checkpoint import list_steps, load_checkpoint  # noqa: PLC0415

    steps = list_steps(run_id, store.path)
    if not steps:
        return pd.DataFrame()
    last = load_checkpoint(run_id, steps[-1], db=store.path)
    p = last.config.task.p
    keys = key_frequencies(fourier_norms(last.model_state["tok_emb.weight"].numpy(), p))
    task = last.task()
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.ravel(), torch.full((p * p,), p), b.ravel(), torch.full((p * p,), p + 1)], 1)
    train_pairs = task._x_train[:, 0] * p + task._x_train[:, 2]
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[train_pairs] = True
    rows = []
    for s in steps:
        ck = load_checkpoint(run_id, s, db=store.path)
        model = ck.model()
        with torch.no_grad():
            logits = model(x)[:, -1, :p].double().numpy().reshape(p, p, p)
        m = restricted_excluded_loss(logits, p, keys, mask.numpy().reshape(p, p))
        m["gini"] = gini(fourier_norms(ck.model_state["tok_emb.weight"].numpy(), p)[1:])
        rows.append({"step": s, **m})
    out = pd.DataFrame(rows)
    out.attrs["keys"] = keys
    return out


def pruned_accuracies(store, run_id: str, threshold: float = IPR_THRESHOLD) -> dict[str, float]:
    """Zero the quad_mlp neurons whose IPR (mean over their U and V rows) is below
    ``threshold`` in the run's last checkpoint; accuracies before and after."""
    from proxylab.train.checkpoint import list_steps, load_checkpoint  # noqa: PLC0415

    steps = list_steps(run_id, store.path)
    if not steps:
        return {}
    ck = load_checkpoint(run_id, steps[-1], db=store.path)
    model, task = ck.model(), ck.task()
    p = ck.config.task.p
    u, v = model.u.weight.detach()[:, :p].numpy(), model.v.weight.detach()[:, :p].numpy()
    scores = (ipr(u) + ipr(v)) / 2
    sets = {"val": task.val_batches(1 << 20, 1), **task.eval_sets()}

    def accs() -> dict[str, float]:
        out = {}
        with torch.no_grad():
            for name, batches in sets.items():
                (xb, yb), = batches[:1]
                out[name] = float((model(xb)[:, -1].argmax(-1) == yb[:, -1]).double().mean())
        return out

    before = accs()
    low = torch.from_numpy(scores < threshold)
    with torch.no_grad():
        model.head.weight[:, low] = 0.0
    after = accs()
    return {"ipr_mean": float(scores.mean()), "frac_low_ipr": float(low.float().mean()),
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}
