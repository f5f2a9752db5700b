"""Language-model tasks: byte-level text and nanoGPT-style token files.

``task.path`` picks the source:

* ``""`` -- the built-in corpus: the Python standard library's own ``.py`` sources, which
  every Python installation carries, so a run needs no download. Its exact bytes depend on
  the Python version (reported by ``describe()``; the fingerprint tells runs apart).
* a UTF-8 text file, or a folder of them (recursive) -- byte-level, vocab 256.
* a ``.bin`` token file, or a folder holding ``train*.bin`` and ``val*.bin`` files (shards
  allowed) -- see :mod:`proxylab.tasks.tokenfile`. ``vocab_size`` is ``task.vocab_size``
  when > 0, else the largest token id in train or val plus one.
* ``hf:NAME`` -- a Hugging Face ``datasets`` dataset with a ``text`` column, from a
  ``save_to_disk`` folder or the local cache (optional dependency, imported lazily; set
  ``HF_DATASETS_OFFLINE=1`` to be sure nothing is downloaded).

Splits never depend on the run seed, so every run of a sweep sees the same data. Documents
(files) are split whole, by a hash of their relative name, so no text is shared between
train and val; a single document is split by its tail (the last ``val_frac`` of it is val).
Text sources are held in memory; use ``.bin`` token files for corpora larger than RAM.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks.base import Batch, Task, TokenStream
from proxylab.tasks.tokenfile import open_token_file, summarize_token_file

BUILTIN_CAP_BYTES = 4_000_000  # loads in ~0.1 s and is plenty for CPU-scale proxy runs
# generated data tables (codec maps, pydoc topics), not code anyone wrote: poor LM text
BUILTIN_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests",
                     "encodings", "pydoc_data"}
PATH_KINDS = ("a UTF-8 text file, a folder of text files, a .bin token file, a folder with "
              "train*.bin and val*.bin, or hf:NAME ('' = the built-in corpus)")

Doc = tuple[str, bytes]  # (relative name, content)


class TextTask(Task):
    """Next-token prediction on windows of a token stream: y is x shifted left by one."""

    has_accuracy = False

    def __init__(self, *, train: list[np.ndarray], val: list[np.ndarray], seq_len: int,
                 vocab_size: int, fingerprint: str, info: dict[str, Any]):
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.fingerprint = fingerprint
        self._train = TokenStream(train, seq_len)
        self._val = TokenStream(val, seq_len)
        self._info = info
        self._val_cache: dict[tuple[int, int], list[Batch]] = {}
        label = info.get("path") or info["source"]
        for name, stream in (("train", self._train), ("val", self._val)):
            if stream.n_windows < 1:
                raise ConfigError(
                    f"task.path: {label}: the {name} split has {stream.n_tokens} tokens with no "
                    f"stretch of task.seq_len + 1 = {seq_len + 1}; use a longer corpus, a larger "
                    f"task.val_frac, or a smaller task.seq_len")

    def describe(self) -> dict[str, Any]:
        return {**self._info, "task": "text", "vocab_size": self.vocab_size,
                "seq_len": self.seq_len, "n_train_tokens": self._train.n_tokens,
                "n_val_tokens": self._val.n_tokens, "fingerprint": self.fingerprint}

    def train_batch(self, batch_size: int, gen: torch.Generator) -> Batch:
        return self._train.random_batch(batch_size, gen)

    def val_batches(self, batch_size: int, n: int) -> list[Batch]:
        """``n`` batches of windows spread evenly over the whole val split; no randomness,
        built once per (batch_size, n) and the same tensors on every call."""
        key = (batch_size, n)
        if key not in self._val_cache:
            self._val_cache[key] = self._val.spread_batches(batch_size, n)
        return list(self._val_cache[key])

    def token_counts(self) -> np.ndarray:
        """How often each token id occurs in the train split (int64, length vocab_size);
        read in chunks, so token files larger than RAM work too."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for seg in self._train.segments:
            for i in range(0, len(seg), 1 << 24):
                chunk = np.asarray(seg[i:i + (1 << 24)])
                counts += np.bincount(chunk, minlength=self.vocab_size)[:self.vocab_size]
        return counts


# ----------------------------------------------------------------------------------
# documents and splits


def _unit_hash(name: str) -> float:
    """A stable number in [0, 1) for a document name (salted: independent of other uses)."""
    return int(hashlib.sha256(b"proxylab-val:" + name.encode()).hexdigest()[:16], 16) / 2**64


def split_documents(docs: list[Doc], val_frac: float) -> tuple[list[Doc], list[Doc]]:
    """Whole documents to val where their name hashes below ``val_frac``.

    With few documents the hash may leave a side empty; then the document nearest the
    threshold crosses over, so both sides always hold at least one (given two or more).
    A single document is split by its tail instead.
    """
    if len(docs) == 1:
        name, data = docs[0]
        cut = len(data) - int(len(data) * val_frac)
        return [(name, data[:cut])], [(name, data[cut:])]
    score = {name: _unit_hash(name) for name, _ in docs}
    val = [d for d in docs if score[d[0]] < val_frac]
    if not val:
        val = [min(docs, key=lambda d: score[d[0]])]
    elif len(val) == len(docs):
        val.remove(max(val, key=lambda d: score[d[0]]))
    val_names = {name for name, _ in val}
    return [d for d in docs if d[0] not in val_names], val


def _walk_text_files(root: Path, skip_dirs: set[str] = frozenset()) -> list[str]:
    """Relative posix names of the files under ``root``, sorted; hidden entries skipped."""
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip_dirs]
        rel = Path(dirpath).relative_to(root)
        names += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(names)


def _read_utf8(path: Path) -> bytes | None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


@functools.lru_cache(maxsize=1)
def builtin_documents() -> tuple[tuple[Doc, ...], str]:
    """The built-in corpus (cached per process) and the stdlib folder it came from.

    Files are taken in the order of a hash of their relative name until the cap: a fixed,
    deterministic sample spread over the whole library, where alphabetical order would fill
    the cap with whatever packages sort first. The chosen files are then sorted by name.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise ConfigError(f"task.path: '' (built-in corpus) needs the standard library sources "
                          f"at {root}, which this Python lacks; set task.path to {PATH_KINDS}")
    names = [n for n in _walk_text_files(root, BUILTIN_SKIP_DIRS)
             if n.endswith(".py") and not n.rsplit("/", 1)[-1].startswith("test_")
             and not any(part.endswith("_test") for part in n.split("/")[:-1])]
    names.sort(key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    docs, total = [], 0
    for name in names:
        data = _read_utf8(root / name)
        if not data:
            continue  # not UTF-8, or empty
        if total + len(data) > BUILTIN_CAP_BYTES:
            continue  # a smaller file further on may still fit
        docs.append((name, data))
        total += len(data)
    docs.sort()
    return tuple(docs), str(root)


def _folder_documents(root: Path) -> tuple[list[Doc], int]:
    docs, skipped = [], 0
    for name in _walk_text_files(root):
        data = _read_utf8(root / name)
        if data:
            docs.append((name, data))
        else:
            skipped += 1
    if not docs:
        raise ConfigError(f"task.path: {root}: the folder holds no non-empty UTF-8 text files; "
                          f"expected {PATH_KINDS}")
    return docs, skipped


def _hf_documents(name: str) -> tuple[list[Doc], list[Doc] | None]:
    """(train docs, val docs or None) from a ``datasets`` dataset with a ``text`` column."""
    try:
        import datasets  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ConfigError(f"task.path: hf:{name} needs the optional `datasets` package, which "
                          f"is not installed (pip install datasets)") from None
    try:
        local = Path(name).expanduser()
        ds = datasets.load_from_disk(str(local)) if local.exists() else datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 (any loader failure is a bad task.path)
        raise ConfigError(f"task.path: hf:{name}: could not load it from local disk or the "
                          f"datasets cache ({type(e).__name__}: {e})") from None
    splits = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"train": ds}

    def docs(split: str) -> list[Doc]:
        if "text" not in splits[split].column_names:
            raise ConfigError(f"task.path: hf:{name}: split {split!r} has no 'text' column "
                              f"(columns: {splits[split].column_names})")
        return [(f"{split}/{i}", t.encode()) for i, t in enumerate(splits[split]["text"]) if t]

    if "train" not in splits:
        raise ConfigError(f"task.path: hf:{name}: no 'train' split (has {sorted(splits)})")
    val_split = next((s for s in ("validation", "val", "test") if s in splits), None)
    return docs("train"), (docs(val_split) if val_split else None)


# ----------------------------------------------------------------------------------
# building


def _byte_task(cfg: TaskConfig, train: list[Doc], val: list[Doc], info: dict) -> TextTask:
    """A byte-level task from documents; the fingerprint covers names and exact bytes."""
    vocab = cfg.vocab_size or 256
    h = hashlib.sha256(b"proxylab-bytes\0")
    streams = []
    for split, docs in (("train", train), ("val", val)):
        h.update(f"{split}\0".encode() + "\0".join(n for n, _ in docs).encode() + b"\0\0")
        data = b"".join(d for _, d in docs)
        h.update(len(data).to_bytes(8, "little") + data)
        streams.append([np.frombuffer(data, dtype=np.uint8)])
    top = max((int(s[0].max()) for s in streams if len(s[0])), default=0)
    if top >= vocab:
        raise ConfigError(f"task.vocab_size: {vocab} is too small for byte-level text from "
                          f"{info.get('path') or info['source']} (byte {top} occurs); use 0 (= 256)")
    info = {**info, "n_documents": len({n for n, _ in train + val}),
            "n_train_documents": len(train), "n_val_documents": len(val)}
    return TextTask(train=streams[0], val=streams[1], seq_len=cfg.seq_len, vocab_size=vocab,
                    fingerprint=h.hexdigest(), info=info)


def _token_task(cfg: TaskConfig, path: Path, train_files: list[Path], val_files: list[Path]
                ) -> TextTask:
    """A task from token files: whole files per split, or one file split by its tail."""
    h = hashlib.sha256(b"proxylab-tokens\0")
    top = 0
    for split, files in (("train", train_files), ("val", val_files)):
        h.update(f"{split}\0".encode())
        for f in files:
            file_top, digest = summarize_token_file(f)
            top = max(top, file_top)
            h.update(f"{f.name}\0{digest}\0".encode())
    if train_files == val_files:  # one file, split by its tail
        arr = open_token_file(train_files[0])
        cut = len(arr) - int(len(arr) * cfg.val_frac)
        h.update(f"tail-split\0{cut}\0".encode())
        train, val = [arr[:cut]], [arr[cut:]]
    else:
        train = [open_token_file(f) for f in train_files]
        val = [open_token_file(f) for f in val_files]
    vocab = cfg.vocab_size or top + 1
    if top >= vocab:
        raise ConfigError(f"task.vocab_size: {vocab} is too small for {path}: token id {top} "
                          f"occurs; expected ids < task.vocab_size (0 = largest id + 1)")
    info = {"source": "tokens", "path": str(path),
            "train_files": [f.name for f in train_files], "val_files": [f.name for f in val_files]}
    return TextTask(train=train, val=val, seq_len=cfg.seq_len, vocab_size=vocab,
                    fingerprint=h.hexdigest(), info=info)


def build_text_task(cfg: TaskConfig) -> TextTask:
    if cfg.path == "":
        docs, root = builtin_documents()
        train, val = split_documents(list(docs), cfg.val_frac)
        info = {"source": "builtin:python-stdlib", "path": "", "stdlib": root,
                "python": ".".join(map(str, sys.version_info[:3]))}
        return _byte_task(cfg, train, val, info)
    if cfg.path.startswith("hf:"):
        name = cfg.path[3:]
        train, val = _hf_documents(name)
        if val is None:
            train, val = split_documents(train, cfg.val_frac)
        return _byte_task(cfg, train, val, {"source": "hf", "path": cfg.path})
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"task.path: {path}: no such file or folder; expected {PATH_KINDS}")
    if path.is_dir():
        bins = sorted(p for p in path.glob("*.bin") if p.is_file())
        if bins:
            train_files = [p for p in bins if "train" in p.name]
            val_files = [p for p in bins if "val" in p.name]
            if not train_files or not val_files:
                raise ConfigError(f"task.path: {path}: a token folder needs train*.bin and val*.bin "
                                  f"files (e.g. train.bin and val.bin); found "
                                  f"{[p.name for p in bins]}")
            return _token_task(cfg, path, train_files, val_files)
        docs, skipped = _folder_documents(path)
        train, val = split_documents(docs, cfg.val_frac)
        return _byte_task(cfg, train, val, {"source": "text-folder", "path": str(path),
                                            "n_skipped_files": skipped})
    if path.suffix == ".bin":
        return _token_task(cfg, path, [path], [path])
    data = _read_utf8(path)
    if data is None:
        raise ConfigError(f"task.path: {path}: not UTF-8 text; expected {PATH_KINDS}")
    train, val = split_documents([(path.name, data)], cfg.val_frac)
    return _byte_task(cfg, train, val, {"source": "text-file", "path": str(path)})
