"""The training loop's own behaviour: divergence is a result, probes and schedules land."""

import math

import pytest

from proxylab.config import ScheduleConfig, load_config
from proxylab.train.loop import MemoryReporter, accuracy, lm_loss, train
from proxylab.train.schedules import lr_multiplier

TINY = ["model.width=32", "model.depth=1", "model.heads=2", "task.seq_len=32",
        "train.batch_size=4", "train.eval_batches=2"]


class Collect(MemoryReporter):
    """Rows (MemoryReporter) and the run's meta."""

    meta = None

    def started(self, meta):
        self.meta = meta


def test_divergence_is_recorded_not_raised():
    rep = Collect()
    res = train(load_config(sets=TINY + ["optim.lr=30", "train.grad_clip=0", "train.steps=50",
                                         "schedule.warmup=0"]), rep)
    assert res.status == "diverged"
    step = res.summary["diverged_step"]
    assert 1 <= step < 50 and res.summary["steps_done"] == step
    assert math.isnan(res.summary["final_val_loss"])
    last = [v for s, k, v in rep.rows if k == "train/loss_last"]
    assert len(last) == 1 and (not math.isfinite(last[0]) or last[0] > 3 * res.summary["init_loss"])
    assert max(s for s, _, _ in rep.rows) == step       # nothing recorded after the stop


def test_probes_and_lr_schedule_are_recorded():
    rep = Collect()
    cfg = load_config(sets=TINY + ["train.steps=20", "train.log_every=5", "train.eval_every=10",
                                   "schedule.name=linear", "schedule.warmup=5"])
    train(cfg, rep)
    by_key = {}
    for s, k, v in rep.rows:
        by_key.setdefault(k, {})[s] = v
    assert sorted(by_key["train/loss"]) == [5, 10, 15, 20]
    assert sorted(by_key["val/loss"]) == [0, 10, 20]
    for s, mult in by_key["lr_mult"].items():
        assert mult == pytest.approx(lr_multiplier(cfg.schedule, s - 1, 20))
        assert by_key["lr"][s] == pytest.approx(cfg.optim.lr * mult)
    for k in ("grad_norm", "param_norm", "opt/update_rms", "attn_logit_max_l0", "logz_mean"):
        assert all(math.isfinite(v) for v in by_key[k].values()), k
    assert by_key["tokens"][20] == 20 * 4 * 32
    assert rep.meta["data_fingerprint"] and rep.meta["n_params"] > 0


def test_z_loss_and_masked_accuracy_closed_form():
    import torch

    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])           # B=1, T=2, V=2
    y = torch.tensor([[-100, 0]])                                 # only position 1 counts
    total, ce, logz = lm_loss(logits, y, z_loss=0.5)
    lz = math.log(math.exp(2) + 1)
    assert float(ce) == pytest.approx(lz - 2) and float(logz) == pytest.approx(lz)
    assert float(total) == pytest.approx(lz - 2 + 0.5 * lz ** 2)
    assert accuracy(logits, y) == (1, 1)


def test_z_loss_is_the_mean_of_squares_over_counted_positions():
    """PaLM's z-loss, z · mean_i (log Z_i)², over the positions that carry a target; not
    z · (mean_i log Z_i)² (open_lm's bug until 2023-11). The log Z here have mixed signs, so
    the two forms differ by a factor > 10; a masked position with a huge log Z must not count."""
    import torch

    rows = [[3.0, 1.0, -2.0], [-4.0, -5.0, -6.0], [0.5, 0.5, 0.5], [50.0, 0.0, 0.0]]
    logits = torch.tensor(rows).reshape(2, 2, 3)                  # B=2, T=2, V=3
    y = torch.tensor([[0, 2], [1, -100]])                         # the last position is masked
    z = 0.01
    lzs = [math.log(sum(math.exp(v) for v in r)) for r in rows[:3]]
    ces = [lzs[0] - 3.0, lzs[1] + 6.0, lzs[2] - 0.5]
    mean_sq = sum(v * v for v in lzs) / 3
    sq_mean = (sum(lzs) / 3) ** 2
    assert mean_sq > 10 * sq_mean                                  # the test can tell them apart
    total, ce, logz = lm_loss(logits, y, z_loss=z)
    assert float(ce) == pytest.approx(sum(ces) / 3, rel=1e-6)
    assert float(logz) == pytest.approx(sum(lzs) / 3, rel=1e-6)
    assert float(total) == pytest.approx(sum(ces) / 3 + z * mean_sq, rel=1e-6)
    assert float(lm_loss(logits, y, z_loss=0.0)[0]) == pytest.approx(sum(ces) / 3, rel=1e-6)
    # a model that emits only the last position: targets are aligned from the right
    total1, ce1, _ = lm_loss(logits[:, 1:], y, z_loss=z)            # only rows 1 and 3 (masked)
    assert float(ce1) == pytest.approx(ces[1], rel=1e-6)
    assert float(total1) == pytest.approx(ces[1] + z * lzs[1] ** 2, rel=1e-6)
    assert accuracy(logits, y) == (1, 3)  # argmax 0, 0 | 0 vs targets 0, 2 | 1
    assert accuracy(logits[:, 1:], y) == (0, 1)  # last position only: row 1 (wrong), row 3 masked
    # train.loss = "mse" (Doshi et al. 2024): mean over counted positions and the vocabulary
    # of (logit - one-hot)², z-loss added on top; "ce" (the default) is cross-entropy
    onehot = [[1.0 if j == t else 0.0 for j in range(3)] for t in (0, 2, 1)]
    mse = sum((v - o) ** 2 for r, h in zip(rows[:3], onehot) for v, o in zip(r, h)) / 9
    total, second, logz = lm_loss(logits, y, z_loss=z, loss="mse")
    assert float(second) == pytest.approx(mse, rel=1e-6)
    assert float(total) == pytest.approx(mse + z * mean_sq, rel=1e-6)
    assert float(logz) == pytest.approx(sum(lzs) / 3, rel=1e-6)
    assert float(lm_loss(logits, y, z_loss=z, loss="ce")[1]) == pytest.approx(sum(ces) / 3, rel=1e-6)
    # the one-hot has the vocabulary's width even when no target is its last token
    y01 = torch.tensor([[0, 1], [0, -100]])
    want = sum((v - o) ** 2 for r, t in zip(rows[:3], (0, 1, 0))
               for j, v in enumerate(r) for o in [1.0 if j == t else 0.0]) / 9
    assert float(lm_loss(logits, y01, z_loss=0.0, loss="mse")[1]) == pytest.approx(want, rel=1e-6)


def test_wsd_without_decay_stays_flat():
    wsd = ScheduleConfig(name="wsd", warmup=0.0, decay_frac=0.0)
    assert [lr_multiplier(wsd, s, 10) for s in range(10)] == [1.0] * 10
