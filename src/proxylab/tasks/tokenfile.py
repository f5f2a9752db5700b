"""nanoGPT-style token files (``*.bin``): reading as memmaps, writing, summarising.

Two layouts are read, told apart by the first int32:

* raw: little-endian uint16 tokens and nothing else (nanoGPT's ``prepare.py`` output);
* headered (modded-nanogpt): 256 little-endian int32 -- ``[0]`` = 20240520 (magic),
  ``[1]`` = version, ``[2]`` = number of tokens -- then the tokens. Version 1 stores uint16
  tokens (the original format); version 2 stores uint32 tokens, our extension for
  vocabularies beyond 65535.

Files are opened with ``np.memmap``: a multi-GB shard costs no RAM until windows are read.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from proxylab.config import ConfigError
from proxylab.tasks.base import hash_tokens

MAGIC = 20240520
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
VERSION_DTYPE = {1: np.dtype("<u2"), 2: np.dtype("<u4")}


def _bad(path: Path, what: str) -> ConfigError:
    return ConfigError(f"task.path: {path}: {what}")


def open_token_file(path: str | Path) -> np.ndarray:
    """The tokens of one ``.bin`` file as a read-only 1-D memmap (uint16 or uint32)."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "no such token file")
    size = path.stat().st_size
    if size >= HEADER_BYTES:
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
        magic, version, n = (int(v) for v in header[:3])
        dtype = VERSION_DTYPE.get(version)
        if magic == MAGIC:
            if dtype is None:
                raise _bad(path, f"header version {version} is not supported; expected 1 "
                                 "(uint16 tokens) or 2 (uint32 tokens)")
            expected = HEADER_BYTES + n * dtype.itemsize
            if n <= 0 or size != expected:
                raise _bad(path, f"header says {n} tokens of {dtype.itemsize} bytes, i.e. a file "
                                 f"of {expected} bytes, but the file has {size} bytes")
            return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(n,))
        # A header whose version and count describe this file's size exactly, but whose
        # magic is wrong, is a damaged headered file: raw uint16 data virtually never does that.
        if dtype is not None and n > 0 and size == HEADER_BYTES + n * dtype.itemsize:
            raise _bad(path, f"header magic is {magic}, expected {MAGIC} (modded-nanogpt format)")
    if size == 0:
        raise _bad(path, "the token file is empty")
    if size % 2:
        raise _bad(path, f"{size} bytes is not a whole number of uint16 tokens; expected raw "
                         f"uint16 tokens or a 256-int32 header starting with magic {MAGIC}")
    return np.memmap(path, dtype="<u2", mode="r")


def write_token_file(path: str | Path, tokens, *, headered: bool = True) -> Path:
    """Write ``tokens`` (ints >= 0) as a ``.bin`` file that :func:`open_token_file` reads.

    ``headered=True`` writes the modded-nanogpt layout, version 1 (uint16) when every token
    fits, else version 2 (uint32). ``headered=False`` writes raw uint16 (nanoGPT).
    """
    path = Path(path)
    arr = np.asarray(tokens).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    top = int(arr.max()) if arr.size else 0
    if arr.size and int(arr.min()) < 0:
        raise ValueError("tokens must be >= 0")
    if top >= 2**32:
        raise ValueError(f"token id {top} does not fit in uint32")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if headered:
            version = 1 if top < 2**16 else 2
            header = np.zeros(HEADER_INTS, dtype="<i4")
            header[:3] = (MAGIC, version, arr.size)
            f.write(header.tobytes())
            f.write(arr.astype(VERSION_DTYPE[version]).tobytes())
        else:
            if top >= 2**16:
                raise ValueError(f"token id {top} does not fit in raw uint16; use headered=True")
            f.write(arr.astype("<u2").tobytes())
    return path


@functools.lru_cache(maxsize=64)
def _summary(path: str, size: int, mtime_ns: int) -> tuple[int, str]:
    """(max token id, sha256 of the tokens) of one file; cached on (path, size, mtime)
    because both need a full pass over data that may be gigabytes."""
    arr = open_token_file(path)
    top, h, chunk = 0, hashlib.sha256(), 1 << 24
    for i in range(0, len(arr), chunk):
        top = max(top, int(arr[i:i + chunk].max()))
    hash_tokens(h, arr)
    return top, h.hexdigest()


def summarize_token_file(path: str | Path) -> tuple[int, str]:
    p = Path(path).resolve()
    st = p.stat()
    return _summary(str(p), st.st_size, st.st_mtime_ns)
