"""task.name = "digits": scikit-learn's 8x8 digits, MNIST-format (idx) and .npz files, the
fixed seeded split, and accuracy through the training loop."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from proxylab.config import ConfigError, TaskConfig, from_flat
from proxylab.tasks import build_task
from proxylab.tasks.digits import SPLIT_SEED, read_idx, write_idx


def cfg(path="", **kw) -> TaskConfig:
    return TaskConfig(name="digits", path=str(path), **kw)


def test_sklearn_digits_split_and_shapes():
    t = build_task(cfg(train_frac=0.5), seed=3)
    d = t.describe()
    assert d["n_train_examples"] == 898 and d["n_val_examples"] == 899  # int(0.5 * 1797)
    assert t.vocab_size == 10 and t.input_shape == (1, 8, 8) and t.has_accuracy
    assert t._x_train.dtype == torch.float32 and 0.0 <= float(t._x_train.min())
    assert float(t._x_train.max()) == 1.0  # pixels 0..16 scaled by 1/16
    # the split is fixed (SPLIT_SEED), not the run seed: every run validates on the same images
    assert build_task(cfg(train_frac=0.5), seed=7).fingerprint == t.fingerprint
    assert build_task(cfg(train_frac=0.7), seed=3).fingerprint != t.fingerprint
    # it is the seeded permutation it says it is
    from sklearn.datasets import load_digits  # noqa: PLC0415

    full = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(1797)
    assert np.array_equal(t._y_val[:, 0].numpy(), full.target[order[898:]])
    assert np.allclose(t._x_train[5, 0].numpy(), full.images[order[5]] / 16.0)


def test_batches_whole_val_set_and_seeded_train():
    t = build_task(cfg(), seed=0)
    val = t.val_batches(500, n=1)
    assert sum(len(y) for _, y in val) == t.describe()["n_val_examples"]
    x, y = val[0]
    assert x.shape == (500, 1, 8, 8) and y.shape == (500, 1) and y.dtype == torch.int64
    a = t.train_batch(16, torch.Generator().manual_seed(1))
    b = t.train_batch(16, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_idx_reader_on_hand_built_bytes(tmp_path):
    # magic 0x00000803 (ubyte, 3 dims), dims 2 x 1 x 3, then the six pixels
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255])
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        arr = read_idx(tmp_path / name)
        assert arr.shape == (2, 1, 3) and arr.tolist() == [[[1, 2, 3]], [[4, 5, 255]]]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ConfigError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ConfigError, match="data bytes"):
        read_idx(tmp_path / "short")
    lab = np.array([3, 1, 4], dtype=np.uint8)
    write_idx(tmp_path / "l.gz", lab)
    assert read_idx(tmp_path / "l.gz").tolist() == [3, 1, 4]


def test_mnist_format_folder_with_test_split(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (20, 5, 6), dtype=np.uint8)
    ytr = rng.integers(0, 4, 20).astype(np.uint8)
    xte = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
    yte = np.array([0, 1, 2, 3, 0, 1, 2], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", xte)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", yte)
    t = build_task(cfg(tmp_path), seed=0)
    assert t.input_shape == (1, 5, 6) and t.vocab_size == 4
    assert len(t._x_train) == 20 and t._y_val[:, 0].tolist() == yte.tolist()
    assert np.allclose(t._x_val[:, 0].numpy(), xte / 255.0)


def test_mnist_folder_without_test_is_split(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(10, dtype=np.uint8) % 3)
    t = build_task(cfg(tmp_path, train_frac=0.6), seed=0)
    assert len(t._x_train) == 6 and len(t._x_val) == 4
    with pytest.raises(ConfigError, match="neither a .npz file nor a folder"):
        build_task(cfg(tmp_path / "nothing"), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="train-images"):
        build_task(cfg(tmp_path / "empty"), seed=0)


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "keras.npz", x_train=rng.integers(0, 256, (12, 6, 6), dtype=np.uint8),
             y_train=np.arange(12) % 10, x_test=rng.integers(0, 256, (5, 6, 6), dtype=np.uint8),
             y_test=np.arange(5))
    t = build_task(cfg(tmp_path / "keras.npz"), seed=0)
    assert t.describe()["n_val_examples"] == 5 and t.vocab_size == 10
    # channels-last floats are moved to channels-first and kept as they are
    x = rng.random((10, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", images=x, labels=np.arange(10) % 2)
    t = build_task(cfg(tmp_path / "rgb.npz", train_frac=0.5), seed=0)
    assert t.input_shape == (3, 4, 4) and len(t._x_train) == 5
    order = np.random.default_rng(SPLIT_SEED).permutation(10)
    assert np.allclose(t._x_train[0].numpy(), np.moveaxis(x[order[0]], -1, 0))
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(ConfigError, match="x_train"):
        build_task(cfg(tmp_path / "bad.npz"), seed=0)
    np.savez(tmp_path / "uneven.npz", x=np.zeros((4, 2, 2)), y=np.zeros(3, dtype=int))
    with pytest.raises(ConfigError, match="labels"):
        build_task(cfg(tmp_path / "uneven.npz"), seed=0)
    with pytest.raises(ConfigError, match="npz"):
        build_task(cfg(tmp_path / "missing.txt"), seed=0)


def test_digits_run_reports_accuracy():
    from proxylab.train.loop import MemoryReporter, train  # noqa: PLC0415

    rep = MemoryReporter()
    res = train(from_flat({"task.name": "digits", "model.name": "cnn", "model.width": 8,
                           "train.steps": 60, "train.batch_size": 32, "optim.lr": 1e-2,
                           "train.threads": 1, "train.eval_every": 60}), rep)
    acc0 = [v for s, k, v in rep.rows if k == "val/acc" and s == 0][0]
    assert res.status == "done" and 0.0 <= acc0 <= 0.3          # chance is 0.1
    assert res.summary["final_val_acc"] > 0.6                    # 60 steps learn a lot
    # accuracy counts every validation image once: a multiple of 1/899
    assert abs(res.summary["final_val_acc"] * 899 - round(res.summary["final_val_acc"] * 899)) < 1e-6


def test_digits_checkpoint_rebuilds_the_image_model(tmp_path, monkeypatch):
    import proxylab as pl  # noqa: PLC0415

    monkeypatch.setenv("PROXYLAB_CHECKPOINT_DIR", "")  # pl.run points it at its store; undone after

    db = tmp_path / "s.db"
    cfg = from_flat({"task.name": "digits", "model.name": "cnn", "model.width": 4,
                     "model.quant": "bitnet158", "train.steps": 4, "train.batch_size": 8,
                     "train.checkpoint_every": 4, "train.threads": 1})
    pl.run(cfg, db=db)
    ck = pl.load_checkpoint(cfg.id, db=db)
    model = ck.model()
    x, y = ck.task().val_batches(16, 1)[0]
    assert model(x).shape == (16, 1, 10)
