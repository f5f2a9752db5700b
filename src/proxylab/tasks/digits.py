"""Image classification: scikit-learn's 8x8 digits, or MNIST-format / ``.npz`` image files.

``task.name = "digits"``. The data:

- ``task.path = ""``: scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels
  with values 0..16, 10 classes; shipped inside the package, no download), scaled to [0, 1].
- ``task.path`` = a ``.npz`` file with ``x_train, y_train, x_test, y_test`` (the layout of
  Keras' ``mnist.npz``; the test arrays become the validation set) or with ``x, y``
  (``images, labels`` also accepted), split as below.
- ``task.path`` = a folder holding MNIST-format (idx) files: ``*train-images*`` and
  ``*train-labels*`` (``.gz`` or not), and optionally ``*t10k-images*`` / ``*t10k-labels*``
  (or ``*test-images*`` / ``*test-labels*``) as the validation set.

Images are float32 [N, C, H, W]: [N, H, W] gains a channel, [N, H, W, C] with C in (1, 3) is
moved to channels-first; unsigned 8-bit pixels are divided by 255, other integers by their
maximum, floats are kept. Without a test split the images are split ONCE with a fixed seed
(``SPLIT_SEED``, not the run seed, so every run of a sweep validates on the same images):
the first ``task.train_frac`` of a seeded permutation train, the rest validate.

x is the image batch, y the label as a [B, 1] "sequence" of one target, so the loop's loss
and accuracy (modular task) apply unchanged; ``val_batches`` returns the whole validation set.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import Batch, Task

SPLIT_SEED = 0  # the one train/val split of a data set without a test split
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ----------------------------------------------------------------------------------
# readers


def read_idx(path: str | Path) -> np.ndarray:
    """One MNIST-format (idx) file, gzipped or not, as a numpy array of its stored shape."""
    p = Path(path)
    raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ConfigError(f"task.path: {p} is not an idx file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dt = np.dtype(IDX_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    if len(raw) - start != dt.itemsize * int(np.prod(dims)):
        raise ConfigError(f"task.path: {p}: {len(raw) - start} data bytes, expected "
                          f"{dt.itemsize * int(np.prod(dims))} for shape {dims}")
    return np.frombuffer(raw, dtype=dt, offset=start).reshape(dims).astype(dt.newbyteorder("="))


def write_idx(path: str | Path, arr: np.ndarray) -> None:
    """Write ``arr`` as an idx file (gzipped when the name ends in .gz); for tests and users."""
    code = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}[arr.dtype.newbyteorder("=")]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = head + np.ascontiguousarray(arr, dtype=np.dtype(IDX_DTYPES[code])).tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def _find(folder: Path, *patterns: str) -> Path | None:
    for pat in patterns:
        hits = sorted(folder.glob(f"*{pat}*"))
        if hits:
            return hits[0]
    return None


def _load_idx_folder(folder: Path):
    tr_x, tr_y = _find(folder, "train-images"), _find(folder, "train-labels")
    if tr_x is None or tr_y is None:
        raise ConfigError(f"task.path: {folder} has no '*train-images*' and '*train-labels*' "
                          "idx files (MNIST format)")
    te_x = _find(folder, "t10k-images", "test-images")
    te_y = _find(folder, "t10k-labels", "test-labels")
    test = (read_idx(te_x), read_idx(te_y)) if te_x is not None and te_y is not None else None
    return (read_idx(tr_x), read_idx(tr_y)), test


def _load_npz(path: Path):
    with np.load(path) as z:
        keys = set(z.files)
        if {"x_train", "y_train"} <= keys:
            test = (z["x_test"], z["y_test"]) if {"x_test", "y_test"} <= keys else None
            return (z["x_train"], z["y_train"]), test
        for xk, yk in (("x", "y"), ("images", "labels")):
            if {xk, yk} <= keys:
                return (z[xk], z[yk]), None
    raise ConfigError(f"task.path: {path} holds {sorted(keys)}; expected x_train, y_train "
                      "(and x_test, y_test), or x, y, or images, labels")


def _load_sklearn_digits():
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise ConfigError("task.name = 'digits' with no task.path needs scikit-learn "
                          "(pip install scikit-learn)") from None
    d = load_digits()
    return (d.images.astype(np.float32) / 16.0, d.target), None  # pixels 0..16


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """float32 [N, C, H, W] in the documented scaling."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.moveaxis(x, -1, 1)
    elif x.ndim != 4:
        raise ConfigError(f"task.path: {where}: images of shape {x.shape}; expected "
                          "[N, H, W], [N, C, H, W] or [N, H, W, C]")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / max(int(x.max()), 1)
    return x.astype(np.float32)


def load_images(path: str, train_frac: float):
    """(x_train, y_train, x_val, y_val) as float32 images and int64 labels."""
    if path == "":
        (x, y), test = _load_sklearn_digits()
        where = "scikit-learn digits"
    else:
        p = Path(path)
        if p.is_dir():
            (x, y), test = _load_idx_folder(p)
        elif p.is_file() and p.suffix == ".npz":
            (x, y), test = _load_npz(p)
        else:
            raise ConfigError(f"task.path: {path!r} is neither a .npz file nor a folder of "
                              "MNIST-format (idx) files")
        where = str(p)
    x, y = _as_images(np.asarray(x), where), np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ConfigError(f"task.path: {where}: {len(x)} images but {len(y)} labels")
    if test is not None:
        xv, yv = _as_images(np.asarray(test[0]), where), np.asarray(test[1]).astype(np.int64).reshape(-1)
        if len(xv) != len(yv) or xv.shape[1:] != x.shape[1:]:
            raise ConfigError(f"task.path: {where}: the test images/labels do not match the "
                              "training ones in count or shape")
        return x, y, xv, yv
    n_train = int(train_frac * len(x))
    if not 1 <= n_train < len(x):
        raise ConfigError(f"task.train_frac: {train_frac} gives {n_train} training images of "
                          f"{len(x)}; both train and validation need at least one")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    tr, va = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[va], y[va]


# ----------------------------------------------------------------------------------
# the task


class DigitsTask(Task):
    has_accuracy = True
    seq_len = 1

    def __init__(self, cfg: TaskConfig, *, seed: int = 0):
        xt, yt, xv, yv = load_images(cfg.path, cfg.train_frac)
        if (yt < 0).any() or (yv < 0).any():
            raise ConfigError(f"task.path: {cfg.path!r}: labels must be 0, 1, 2, ...")
        self.source = cfg.path or "sklearn-digits"
        self.vocab_size = int(max(yt.max(), yv.max())) + 1  # the number of classes
        self.input_shape = tuple(int(d) for d in xt.shape[1:])
        self._x_train, self._y_train = torch.from_numpy(xt), torch.from_numpy(yt)[:, None]
        self._x_val, self._y_val = torch.from_numpy(xv), torch.from_numpy(yv)[:, None]
        h = hashlib.sha256(b"proxylab-images\0")
        for a in (xt, yt, xv, yv):
            h.update(np.ascontiguousarray(a).tobytes())
        self.fingerprint = h.hexdigest()
        self._val_cache: dict[int, list[Batch]] = {}

    def describe(self) -> dict[str, Any]:
        return {"task": "digits", "source": self.source, "classes": self.vocab_size,
                "input_shape": list(self.input_shape), "n_train_examples": len(self._x_train),
                "n_val_examples": len(self._x_val), "fingerprint": self.fingerprint}

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        """Images drawn with replacement."""
        idx = torch.randint(len(self._x_train), (batch_size,), generator=gen)
        return self._x_train[idx], self._y_train[idx]

    def val_batches(self, batch_size: int, n: int) -> list[Batch]:
        """The WHOLE validation set in chunks of ``batch_size`` (``n`` is ignored): exact
        validation loss and accuracy."""
        if batch_size not in self._val_cache:
            self._val_cache[batch_size] = [
                (self._x_val[i:i + batch_size], self._y_val[i:i + batch_size])
                for i in range(0, len(self._x_val), batch_size)]
        return list(self._val_cache[batch_size])
