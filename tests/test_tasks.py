"""proxylab.tasks: text corpora, token files and modular arithmetic (docs/internals.md)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from proxylab.config import ConfigError, TaskConfig
from proxylab.tasks import IGNORE, build_task, open_token_file, write_token_file
from proxylab.tasks.text import builtin_documents, split_documents


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def text_cfg(path="", **kw) -> TaskConfig:
    return TaskConfig(name="text", path=str(path), **kw)


@pytest.fixture
def text_folder(tmp_path):
    """A tiny corpus: eight documents in two levels, plus files that must be skipped."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        (root / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox " * (10 + i))
    (root / "sub" / "notes.md").write_text("# notes\n" + "jumps over the lazy dog\n" * 12)
    (root / "sub" / "code.py").write_text("def f(x):\n    return x + 1\n" * 10)
    (root / "blob.dat").write_bytes(b"\xff\xfe\x00\x81" * 50)  # not UTF-8: skipped
    (root / ".hidden").write_text("never read")
    return root


# ----------------------------------------------------------------------------------
# text: built-in corpus


def test_builtin_corpus_shapes_shift_and_determinism():
    task = build_task(text_cfg(seq_len=32), seed=0)
    assert (task.vocab_size, task.seq_len, task.has_accuracy) == (256, 32, False)
    x, y = task.train_batch(8, gen(1))
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted left by one
    x2, y2 = task.train_batch(8, gen(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, task.train_batch(8, gen(2))[0])
    v1, v2 = task.val_batches(4, 3), build_task(text_cfg(seq_len=32), seed=5).val_batches(4, 3)
    assert len(v1) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                for a, b in zip(v1, v2))
    d = task.describe()
    json.dumps(d)
    assert d["source"] == "builtin:python-stdlib" and d["python"]
    assert d["n_documents"] == d["n_train_documents"] + d["n_val_documents"] > 50
    assert 2_000_000 < d["n_train_tokens"] + d["n_val_tokens"] <= 6_000_000


def test_builtin_split_by_document_and_fingerprint():
    docs, _ = builtin_documents()
    names = [n for n, _ in docs]
    assert names == sorted(names) and all(n.endswith(".py") for n in names)
    assert not any("site-packages" in n or n.split("/")[0] in ("test", "tests") for n in names)
    train, val = split_documents(list(docs), 0.1)
    tn, vn = {n for n, _ in train}, {n for n, _ in val}
    assert not tn & vn and tn | vn == set(names)
    assert 0.03 < len(vn) / len(names) < 0.25
    a, b = build_task(text_cfg(), seed=0), build_task(text_cfg(), seed=1)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert build_task(text_cfg(val_frac=0.2), seed=0).fingerprint != a.fingerprint


# ----------------------------------------------------------------------------------
# text: files and folders


def test_text_folder_source(text_folder):
    task = build_task(text_cfg(text_folder, seq_len=16, val_frac=0.25), seed=0)
    d = task.describe()
    assert d["source"] == "text-folder" and d["n_skipped_files"] == 1
    assert d["n_documents"] == 8 and d["n_val_documents"] >= 1 and d["n_train_documents"] >= 1
    x, y = task.train_batch(64, gen(0))
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < 128  # ASCII only: the non-UTF-8 file was skipped
    fp = task.fingerprint
    assert build_task(text_cfg(text_folder, seq_len=16, val_frac=0.25), seed=3).fingerprint == fp
    (text_folder / "doc0.txt").write_text("changed " * 40)
    assert build_task(text_cfg(text_folder, seq_len=16, val_frac=0.25), seed=0).fingerprint != fp


def test_text_folder_windows_come_from_the_right_split(text_folder):
    task = build_task(text_cfg(text_folder, seq_len=8, val_frac=0.25), seed=0)
    docs = [(p.relative_to(text_folder).as_posix(), p.read_bytes())
            for p in sorted(text_folder.rglob("*")) if p.is_file() and p.suffix != ".dat"
            and not p.name.startswith(".")]
    train, val = split_documents(docs, 0.25)
    train_bytes, val_bytes = b"".join(d for _, d in train), b"".join(d for _, d in val)
    x, y = task.train_batch(32, gen(0))
    assert all(bytes(r.tolist()) in train_bytes for r in torch.cat([x, y[:, -1:]], 1))
    vx, vy = task.val_batches(4, 2)[0]
    assert all(bytes(r.tolist()) in val_bytes for r in torch.cat([vx, vy[:, -1:]], 1))
    # evenly spread: the first val window starts at the start of the val split
    assert bytes(vx[0].tolist()) == val_bytes[:8]


def test_single_text_file_split_by_tail(tmp_path):
    path = tmp_path / "one.txt"
    data = bytes(range(32, 127)) * 20
    path.write_bytes(data)
    task = build_task(text_cfg(path, seq_len=10, val_frac=0.2), seed=0)
    d = task.describe()
    assert d["n_val_tokens"] == int(len(data) * 0.2)
    assert d["n_train_tokens"] + d["n_val_tokens"] == len(data)
    batches = task.val_batches(3, 2)
    first_x, last_y = batches[0][0][0], batches[-1][1][-1]
    tail = data[len(data) - d["n_val_tokens"]:]
    assert bytes(first_x.tolist()) == tail[:10]   # first window at the val start ...
    assert bytes(last_y.tolist()) == tail[-10:]   # ... last window at the val end


def test_text_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="task.path.*nope.*no such file"):
        build_task(text_cfg(missing), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="task.path.*empty.*no non-empty UTF-8"):
        build_task(text_cfg(tmp_path / "empty"), seed=0)
    short = tmp_path / "short.txt"
    short.write_text("tiny text")
    with pytest.raises(ConfigError, match="task.path.*short.txt.*seq_len"):
        build_task(text_cfg(short, seq_len=64), seed=0)
    binary = tmp_path / "b.dat"
    binary.write_bytes(b"\xff\xfe\xfd" * 10)
    with pytest.raises(ConfigError, match="b.dat.*not UTF-8"):
        build_task(text_cfg(binary), seed=0)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None,
                    reason="datasets installed: the missing-package message cannot be seen")
def test_hf_source_without_datasets_is_a_config_error():
    with pytest.raises(ConfigError, match="task.path: hf:tiny.*datasets"):
        build_task(text_cfg("hf:tiny"), seed=0)


# ----------------------------------------------------------------------------------
# token files


def test_token_file_formats_round_trip(tmp_path):
    small = np.random.default_rng(0).integers(0, 50_000, size=3000)
    big = np.random.default_rng(1).integers(0, 200_000, size=3000)
    write_token_file(tmp_path / "v1.bin", small)
    write_token_file(tmp_path / "v2.bin", big)
    write_token_file(tmp_path / "raw.bin", small, headered=False)
    small.astype("<u2").tofile(tmp_path / "hand.bin")  # nanoGPT's own way of writing
    assert open_token_file(tmp_path / "v1.bin").dtype == np.uint16
    assert open_token_file(tmp_path / "v2.bin").dtype == np.uint32
    for name, ref in (("v1", small), ("v2", big), ("raw", small), ("hand", small)):
        arr = open_token_file(tmp_path / f"{name}.bin")
        assert isinstance(arr, np.memmap) and np.array_equal(arr, ref), name
    header = np.fromfile(tmp_path / "v1.bin", dtype="<i4", count=3)
    assert header.tolist() == [20240520, 1, 3000]
    with pytest.raises(ValueError):
        write_token_file(tmp_path / "x.bin", big, headered=False)


def test_token_folder_task(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 500, size=5000), rng.integers(0, 500, size=800)
    val[3] = 700  # the largest id sits in val: vocab must still cover it
    for fmt, headered in (("h", True), ("r", False)):
        (tmp_path / fmt).mkdir()
        write_token_file(tmp_path / fmt / "train.bin", train, headered=headered)
        write_token_file(tmp_path / fmt / "val.bin", val, headered=headered)
    task = build_task(text_cfg(tmp_path / "h", seq_len=20), seed=0)
    assert task.vocab_size == 701 and task.describe()["n_val_tokens"] == 800
    x, y = task.train_batch(6, gen(0))
    assert x.shape == (6, 20) and torch.equal(x[:, 1:], y[:, :-1])
    flat = train.tolist()
    for row in x.tolist():  # each row is a contiguous window of train.bin
        starts = [i for i in range(len(flat) - 20) if flat[i:i + 20] == row]
        assert starts
    # the fingerprint is of the tokens, not the file layout
    assert build_task(text_cfg(tmp_path / "r", seq_len=20), seed=0).fingerprint == task.fingerprint
    val[0] += 1
    write_token_file(tmp_path / "h" / "val.bin", val)
    assert build_task(text_cfg(tmp_path / "h", seq_len=20), seed=0).fingerprint != task.fingerprint
    with pytest.raises(ConfigError, match="task.vocab_size.*token id 700"):
        build_task(text_cfg(tmp_path / "h", seq_len=20, vocab_size=600), seed=0)
    assert build_task(text_cfg(tmp_path / "h", seq_len=20, vocab_size=1024), seed=0).vocab_size == 1024


def test_single_bin_and_shards(tmp_path):
    tokens = np.arange(1000) % 97
    write_token_file(tmp_path / "all.bin", tokens)
    task = build_task(text_cfg(tmp_path / "all.bin", seq_len=8, val_frac=0.1), seed=0)
    d = task.describe()
    assert (d["n_train_tokens"], d["n_val_tokens"], task.vocab_size) == (900, 100, 97)
    assert task.val_batches(1, 1)[0][0][0].tolist() == tokens[900:908].tolist()
    shards = tmp_path / "shards"
    for i in range(3):
        write_token_file(shards / f"fineweb_train_{i:06d}.bin", np.full(50, i))
    write_token_file(shards / "fineweb_val_000000.bin", np.full(50, 9))
    task = build_task(text_cfg(shards, seq_len=8), seed=0)
    x, _ = task.train_batch(64, gen(0))
    # windows never straddle two shards, and every shard is drawn from
    assert all(len(set(r)) == 1 for r in x.tolist()) and set(x[:, 0].tolist()) == {0, 1, 2}


def test_token_file_errors(tmp_path):
    good = write_token_file(tmp_path / "good.bin", np.arange(600))
    raw = good.read_bytes()
    header = np.frombuffer(raw[:1024], dtype="<i4").copy()
    cases = {}
    bad_magic = header.copy()
    bad_magic[0] = 12345
    cases["magic"] = (bad_magic.tobytes() + raw[1024:], "header magic is 12345, expected 20240520")
    bad_version = header.copy()
    bad_version[1] = 3
    cases["version"] = (bad_version.tobytes() + raw[1024:], "version 3 is not supported")
    cases["size"] = (raw[:-2], "header says 600 tokens.*file has")
    cases["odd"] = (b"\x01\x02\x03", "not a whole number of uint16 tokens")
    cases["empty"] = (b"", "empty")
    for name, (data, msg) in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=f"task.path: .*{name}.bin: .*{msg}"):
            build_task(text_cfg(path, seq_len=4), seed=0)
    with pytest.raises(ConfigError, match="task.path.*missing.bin"):
        open_token_file(tmp_path / "missing.bin")
    only_train = tmp_path / "only_train"
    write_token_file(only_train / "train.bin", np.arange(100))
    with pytest.raises(ConfigError, match="only_train.*train\\*.bin and val\\*.bin"):
        build_task(text_cfg(only_train), seed=0)


# ----------------------------------------------------------------------------------
# modular arithmetic


def oracle(a: int, b: int, p: int, op: str) -> int:
    if op == "/":
        return a * pow(b, p - 2, p) % p
    return {"+": a + b, "-": a - b, "*": a * b, "x2+y2": a * a + b * b}[op] % p


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "x2+y2"])
def test_modular_answers_and_split(op):
    p = 13
    task = build_task(TaskConfig(name="modular", p=p, op=op, train_frac=0.4), seed=0)
    assert (task.vocab_size, task.seq_len, task.has_accuracy) == (p + 2, 4, True)
    xt, yt = task.train_batch(10_000, gen(0))  # with replacement: covers the train set
    val = task.val_batches(7, 1)
    xv, yv = torch.cat([v[0] for v in val]), torch.cat([v[1] for v in val])
    assert all(len(v[0]) <= 7 for v in val)  # chunks of batch_size; n is ignored
    all_pairs = {(a, b) for a in range(p) for b in range(p) if op != "/" or b}
    d = task.describe()
    assert d["n_train_examples"] + d["n_val_examples"] == len(all_pairs)
    assert d["n_train_examples"] == int(0.4 * len(all_pairs))
    train_pairs = {(a, b) for a, _, b, _ in xt.tolist()}
    val_pairs = [(a, b) for a, _, b, _ in xv.tolist()]
    assert len(train_pairs) == d["n_train_examples"] and len(set(val_pairs)) == len(val_pairs)
    assert not train_pairs & set(val_pairs) and train_pairs | set(val_pairs) == all_pairs
    for x, y in ((xt, yt), (xv, yv)):
        assert (x[:, 1] == p).all() and (x[:, 3] == p + 1).all()
        assert (y[:, :3] == IGNORE).all()
        for (a, _, b, _), c in zip(x.tolist(), y[:, 3].tolist()):
            assert c == oracle(a, b, p, op), (a, b, c)


def test_modular_seed_full_batch_and_errors():
    cfg = TaskConfig(name="modular", p=11, op="+", train_frac=0.5)
    a, b, c = build_task(cfg, seed=0), build_task(cfg, seed=0), build_task(cfg, seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert torch.equal(a.train_batch(5, gen(3))[0], b.train_batch(5, gen(3))[0])
    # the held-out set is a function of the seed: equal across builds, different across seeds,
    # and whole whatever n says (n = 1 batch of 16 still yields every validation example)
    val = [torch.cat([x for x, _ in t.val_batches(16, 1)]) for t in (a, b, c)]
    assert torch.equal(val[0], val[1]) and not torch.equal(val[0], val[2])
    assert len(val[0]) == a.describe()["n_val_examples"] > 16
    full = build_task(TaskConfig(name="modular", p=11, op="+", train_frac=0.5, full_batch=True),
                      seed=0)
    x, y = full.train_batch(4, gen(0))
    assert x.shape == (60, 4) and y.shape == (60, 4)  # int(0.5 * 121), whatever batch_size says
    assert full.fingerprint == a.fingerprint
    with pytest.raises(ConfigError, match="task.p: division needs a prime"):
        build_task(TaskConfig(name="modular", p=12, op="/"), seed=0)
    with pytest.raises(ConfigError, match="task.train_frac"):
        build_task(TaskConfig(name="modular", p=5, train_frac=1.0), seed=0)
