"""The grokking issue's two extra tasks, against known answers: sparse parity and S5 composition."""

from __future__ import annotations

import itertools
import math
from functools import reduce
from pathlib import Path

import pytest
import torch

import proxylab.tasks.parity as parity_mod
from proxylab.cli import main
from proxylab.config import ConfigError, TaskConfig, load_config
from proxylab.models import build_model
from proxylab.tasks import build_task
from proxylab.tasks.groups import composition_table, permutations
from proxylab.tasks.parity import parity_labels, sample_inputs
from proxylab.train.loop import MemoryReporter, train

ROOT = Path(__file__).resolve().parents[1]


def parity_task(seed=0, **kw):
    return build_task(TaskConfig(name="sparse_parity", **kw), seed=seed)


def s5_task(seed=0, **kw):
    return build_task(TaskConfig(name="s5", **kw), seed=seed)


def codes(x: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in x.tolist()}


# ----------------------------------------------------------------------------------
# sparse parity


def test_parity_labels_on_hand_built_bit_strings():
    bits = torch.tensor([[1, 0, 1, 1],
                         [0, 0, 0, 0],
                         [1, 1, 1, 1],
                         [0, 1, 0, 0],
                         [1, 1, 0, 1]])
    # bits 0, 2, 3: 1+1+1, 0, 1+1+1, 0, 1+0+1 -> odd, even, odd, even, even
    assert parity_labels(bits, [0, 2, 3]).tolist() == [1, 0, 1, 0, 0]
    assert parity_labels(bits, [1]).tolist() == [0, 0, 1, 1, 1]
    assert parity_labels(bits, [0, 1, 2, 3]).tolist() == [1, 0, 0, 1, 1]


def test_parity_task_labels_tokens_and_layout():
    t = parity_task(seed=3, parity_n=12, parity_k=4, parity_samples=600, train_frac=0.5)
    d = t.describe()
    S = d["relevant_bits"]
    assert len(S) == 4 == len(set(S)) and S == sorted(S) and all(0 <= i < 12 for i in S)
    assert t.vocab_size == 3 and t.seq_len == 13 == d["seq_len"]
    for x, y in ((t._x_train, t._y_train), (t._x_val, t._y_val)):
        assert x.shape[1] == 13 and set(x[:, :12].unique().tolist()) <= {0, 1}
        assert (x[:, 12] == 2).all()                         # the answer-position token
        assert (y[:, :12] == -100).all()                     # loss on the answer only
        want = [reduce(lambda a, b: a ^ b, (row[i] for i in S)) for row in x.tolist()]
        assert y[:, 12].tolist() == want                     # XOR, computed row by row
    # a label is balanced: the shares describe() reports are the real ones, near 1/2
    assert d["train_label_one_share"] == pytest.approx(t._y_train[:, -1].float().mean().item())
    assert 0.4 < d["val_label_one_share"] < 0.6


def test_parity_relevant_bits_fixed_by_the_seed():
    sets = [tuple(parity_task(seed=s, parity_n=30, parity_k=3).describe()["relevant_bits"])
            for s in range(6)]
    assert sets[0] == tuple(parity_task(seed=0, parity_n=30, parity_k=3).describe()["relevant_bits"])
    assert len(set(sets)) >= 5                               # C(30, 3) = 4060 possible sets


def test_parity_split_sizes_all_inputs_when_small():
    t = parity_task(parity_n=8, parity_k=2, parity_samples=2000, train_frac=0.25)
    assert (len(t._x_train), len(t._x_val)) == (64, 192)     # all 2^8 = 256 inputs
    train, val = codes(t._x_train[:, :8]), codes(t._x_val[:, :8])
    assert len(train) == 64 and len(val) == 192 and not train & val
    assert train | val == set(itertools.product((0, 1), repeat=8))


@pytest.mark.parametrize("n", [16, 30])                      # enumerated codes / random draws
def test_parity_sampled_inputs_distinct_and_split(n):
    t = parity_task(parity_n=n, parity_k=3, parity_samples=501, train_frac=0.5)
    d = t.describe()
    assert (d["n_train_examples"], d["n_val_examples"]) == (250, 251)
    train, val = codes(t._x_train), codes(t._x_val)
    assert len(train) == 250 and len(val) == 251 and not train & val


def test_parity_sampling_removes_duplicate_draws(monkeypatch):
    # force the random-draw branch on 4 bits: 16 distinct strings need many colliding draws
    monkeypatch.setattr(parity_mod, "ENUMERATE_BITS", 0)
    rows = sample_inputs(4, 16, torch.Generator().manual_seed(0))
    assert rows.shape == (16, 4) and codes(rows) == set(itertools.product((0, 1), repeat=4))
    again = sample_inputs(4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)


def test_parity_determinism_and_fingerprint():
    a, b = parity_task(seed=5, parity_n=20, parity_k=3), parity_task(seed=5, parity_n=20, parity_k=3)
    assert torch.equal(a._x_train, b._x_train) and torch.equal(a._y_val, b._y_val)
    assert a.fingerprint == b.fingerprint
    c = parity_task(seed=6, parity_n=20, parity_k=3)
    assert c.fingerprint != a.fingerprint and not torch.equal(a._x_train, c._x_train)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(a.train_batch(32, g1)[0], b.train_batch(32, g2)[0])
    full = parity_task(seed=5, parity_n=20, parity_k=3, full_batch=True)
    assert full.train_batch(7, g1)[0] is full._x_train      # full batch ignores batch_size
    (vx, vy), = full.val_batches(1 << 20, 1)
    assert torch.equal(vx, a._x_val) and torch.equal(vy, a._y_val)   # whole validation set


# ----------------------------------------------------------------------------------
# S5


def lex_index(p: tuple[int, ...]) -> int:
    """Rank of a permutation in lexicographic order (Lehmer code), independent of the task."""
    n = len(p)
    return sum(sum(p[j] < p[i] for j in range(i + 1, n)) * math.factorial(n - 1 - i) for i in range(n))


def test_s5_permutation_indexing():
    perms = permutations(5)
    assert perms.shape == (120, 5) and len(codes(perms)) == 120
    assert perms[0].tolist() == [0, 1, 2, 3, 4] and perms[119].tolist() == [4, 3, 2, 1, 0]
    assert all(lex_index(tuple(p)) == i for i, p in enumerate(perms.tolist()))


def test_s5_hand_computed_compositions():
    table = composition_table(permutations(5))
    swap01 = lex_index((1, 0, 2, 3, 4))       # = 24: the transposition (0 1)
    cyc3 = lex_index((1, 2, 0, 3, 4))         # = 30: 0->1->2->0
    assert (swap01, cyc3) == (24, 30)
    # (a∘b)[i] = a[b[i]], b first. By hand: swap∘cyc = (0, 2, 1, 3, 4), cyc∘swap = (2, 1, 0, 3, 4)
    assert table[24, 30] == 6 == lex_index((0, 2, 1, 3, 4))
    assert table[30, 24] == 54 == lex_index((2, 1, 0, 3, 4))
    cyc5 = lex_index((1, 2, 3, 4, 0))         # = 33: a 5-cycle; its square sends i to i+2
    assert cyc5 == 33 and table[33, 33] == lex_index((2, 3, 4, 0, 1))
    c = 0
    for _ in range(5):
        c = table[c, 33].item()
    assert c == 0                             # order 5
    assert table[119, 119] == 0               # the reversal is an involution


def test_s5_group_axioms():
    t = composition_table(permutations(5))
    assert t.shape == (120, 120) and t.min() >= 0 and t.max() < 120          # closure
    ids = torch.arange(120)
    assert torch.equal(t[0], ids) and torch.equal(t[:, 0], ids)               # identity 0
    assert all(torch.equal(row.sort().values, ids) for row in t)              # Latin square:
    assert all(torch.equal(col.sort().values, ids) for col in t.T)            # inverses exist
    assert torch.equal(t[t], t[ids[:, None, None], t[None]])    # (a∘b)∘c = a∘(b∘c), all triples
    assert not torch.equal(t, t.T)                                            # not abelian


def test_s5_task_labels_split_and_determinism():
    t = s5_task(seed=2, train_frac=0.3)
    assert t.vocab_size == 122 and t.seq_len == 4
    assert (len(t._x_train), len(t._x_val)) == (4320, 10080)                   # int(0.3 * 14400)
    perms = [tuple(p) for p in itertools.permutations(range(5))]
    for x, y in ((t._x_train, t._y_train), (t._x_val, t._y_val)):
        assert (x[:, 1] == 120).all() and (x[:, 3] == 121).all() and (y[:, :3] == -100).all()
        want = [perms.index(tuple(perms[a][perms[b][i]] for i in range(5)))
                for a, b in x[:, [0, 2]].tolist()]
        assert y[:, 3].tolist() == want
    pairs_tr, pairs_va = codes(t._x_train[:, [0, 2]]), codes(t._x_val[:, [0, 2]])
    assert len(pairs_tr) == 4320 and not pairs_tr & pairs_va and len(pairs_tr | pairs_va) == 14400
    again, other = s5_task(seed=2, train_frac=0.3), s5_task(seed=3, train_frac=0.3)
    assert torch.equal(again._x_train, t._x_train) and again.fingerprint == t.fingerprint
    assert other.fingerprint != t.fingerprint and not torch.equal(other._x_train, t._x_train)


# ----------------------------------------------------------------------------------
# bad input: ConfigError naming the key, CLI exit 2 with nothing written


@pytest.mark.parametrize("sets, key", [
    (["task.parity_n=10", "task.parity_k=11"], "task.parity_k"),
    (["task.parity_n=0"], "task.parity_n"),
    (["task.parity_k=0"], "task.parity_k"),
    (["task.parity_samples=1"], "task.parity_samples"),
    (["task.parity_n=2000"], "task.parity_n"),
    (["model.name=quad_mlp"], "model.name"),
])
def test_bad_parity_config_names_the_key(sets, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(sets=["task.name=sparse_parity", *sets])


@pytest.mark.parametrize("name, kw, key", [
    ("s5", {"corrupt_frac": 0.1}, "task.corrupt_frac"),
    ("sparse_parity", {"corrupt_frac": 0.1}, "task.corrupt_frac"),
    ("s5", {"train_frac": 1e-5}, "task.train_frac"),
    ("sparse_parity", {"parity_n": 3, "train_frac": 0.1}, "task.train_frac"),    # 0 of 8 train
    ("sparse_parity", {"parity_n": 1, "parity_k": 1, "train_frac": 1.0}, "task.train_frac"),  # 0 val
    ("sparse_parity", {"parity_n": 4, "parity_k": 5}, "task.parity_k"),          # direct build
])
def test_bad_task_values_raise_at_build(name, kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_task(TaskConfig(name=name, **kw), seed=0)


@pytest.mark.parametrize("sets, key", [
    (["task.name=sparse_parity", "task.parity_n=10", "task.parity_k=50"], "task.parity_k"),
    (["task.name=s5", "task.corrupt_frac=0.1"], "task.corrupt_frac"),
    (["task.name=parity"], "task.name"),
])
def test_cli_exit_2_and_nothing_written(tmp_path, capsys, sets, key):
    db = tmp_path / "x.db"
    argv = ["run", "--db", str(db)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    assert key in capsys.readouterr().err
    assert not db.exists()


# ----------------------------------------------------------------------------------
# every answer-position model takes the tokens; short trainings learn the training set


@pytest.mark.parametrize("task_name, family", [
    ("sparse_parity", "mlp"), ("sparse_parity", "gpt"), ("sparse_parity", "answer_tf"),
    ("s5", "mlp"), ("s5", "gpt"), ("s5", "answer_tf"), ("s5", "quad_mlp")])
def test_model_families_take_the_tokens(task_name, family):
    cfg = load_config(sets=[f"task.name={task_name}", "task.parity_n=9", f"model.name={family}",
                            "model.width=16", "model.heads=2", "model.depth=1"])
    task = build_task(cfg.task, seed=0)
    model = build_model(cfg.model, vocab_size=task.vocab_size, seq_len=task.seq_len)
    x, y = task.train_batch(8, torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape[0] == 8 and logits.shape[-1] == task.vocab_size
    assert torch.isfinite(logits).all()


def _train_acc(sets):
    rep = MemoryReporter()
    cfg = load_config(sets=sets + ["task.full_batch=true", "train.threads=1",
                                   "schedule.name=constant", "schedule.warmup=0",
                                   "train.log_every=1", "train.eval_every=1000",
                                   "train.diverge_factor=1e9"])
    assert train(cfg, rep).status == "done"
    # full batch and a probe every step: train/acc is the whole training set's accuracy under
    # the weights BEFORE that step's update, so step 1's value is the initial network's
    acc = {s: v for s, k, v in rep.rows if k == "train/acc"}
    return acc[1], acc[cfg.train.steps]


def test_parity_training_rises_above_chance():
    # n = 10, k = 3, all 1024 inputs, half train; ~1.5 CPU-s
    first, last = _train_acc(["task.name=sparse_parity", "task.parity_n=10", "task.parity_k=3",
                              "model.name=mlp", "model.width=64", "model.depth=1",
                              "optim.lr=1e-2", "train.steps=100"])
    assert first < 0.7 and last >= 0.9          # chance = 1/2


def test_s5_training_rises_above_chance():
    # 10% of the 14,400 pairs; ~1.2 CPU-s with quad_mlp (the one-hot mlp needs ~4 CPU-s)
    first, last = _train_acc(["task.name=s5", "task.train_frac=0.1", "model.name=quad_mlp",
                              "model.width=128", "optim.lr=1e-2", "train.steps=150"])
    assert first < 0.05 and last >= 0.5         # chance = 1/120


def test_example_sweep_file_expands_and_builds(capsys, tmp_path):
    from proxylab.sweep.driver import preflight
    from proxylab.sweep.spec import load_sweep

    path = ROOT / "examples" / "grokking_tasks.toml"
    assert main(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "x.db")]) == 0
    assert "4 runs in sweep 'grokking-tasks'" in capsys.readouterr().out
    configs = load_sweep(path).expand()
    assert sorted(c.task.name for c in configs) == ["s5", "s5", "sparse_parity", "sparse_parity"]
    assert len(set(preflight(configs).values())) == 2       # one data set per task (seed 0)


def test_readme_sweep_block_is_the_example_file():
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    start = readme.index("### More grokking tasks")
    (block,) = re.findall(r"^```toml\n(.*?)^```$", readme[start:readme.index("\n## ", start)],
                          flags=re.S | re.M)
    example = (ROOT / "examples" / "grokking_tasks.toml").read_text()
    assert tomllib.loads(block) == tomllib.loads(example)
