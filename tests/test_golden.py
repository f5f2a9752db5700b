"""Golden tiny runs: seeded CPU runs must reproduce stored numbers.

Each case is a tiny seeded run (< 2 s) whose losses (and, where named, probes) are stored in
``tests/golden/<case>.json``; the test reruns it and compares value by value.

Regenerate after an intended numerical change, ONE case at a time, and say why in the commit::

    PROXYLAB_REGEN_GOLDEN=gpt_text pytest tests/test_golden.py        # or a,b for two cases

A regenerating run writes the case's file, reports every value that changed (old -> new) in
its skip reason (shown by ``-ra``), and skips that case's comparison: a file is never checked
against what the same run just wrote. ``1`` / ``all`` are refused so that a regression cannot
be absorbed wholesale. Run ids stay fixed when config keys are added (``added=True`` keys are
left out of the id at their default), so a new key needs no regeneration.

What each case pins, and the deliberate breaks it was checked against (each fails a case):
- ``gpt_zloss``: z-loss at 0.1 moves val loss by 0.19 nats and log Z from 6.0 to 3.7 at step 30;
  deleting the term (``total = ce``) fails it.
- ``gpt_probes``: the optimizer probes at default Adam eps = 1e-8; eps x 100 moves
  ``opt/cos_update_grad`` by ~1e-3 relative (> the 2e-4 tolerance) and fails it.
- ``gpt_mup`` (width 32, base width 16): the same run under SP differs by 0.15 nats.
- ``gpt_lion`` (a sign optimizer), ``gpt_muon`` (a matrix optimizer, with its own probe),
  ``gpt_bf16`` (autocast precision; a no-op autocast fails it through the gradient probes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from proxylab.config import load_config
from proxylab.train.loop import MemoryReporter, train

GOLDEN = Path(__file__).parent / "golden"
REGEN_ENV = "PROXYLAB_REGEN_GOLDEN"

TINY = ["model.width=32", "model.depth=1", "model.heads=2", "task.seq_len=32",
        "train.batch_size=4", "train.steps=30", "train.eval_every=10", "train.log_every=10",
        "train.eval_batches=2"]
LOSSES = ("train/loss", "val/loss", "val/acc")
OPT_PROBES = ("opt/update_rms", "opt/applied_rms", "opt/decay_rms", "opt/rel_change",
              "opt/cos_update_grad", "opt/frac_v_below_eps", "opt/grad_rms", "opt/param_rms",
              "grad_norm", "param_norm", "logz_train")

# name -> (config overrides, recorded metric keys)
CASES = {
    "gpt_text": (["model.width=32", "model.depth=2", "model.heads=2", "task.seq_len=32",
                  "train.batch_size=4", "train.steps=30", "train.eval_every=10",
                  "train.log_every=10", "train.eval_batches=2", "optim.lr=1e-2"], LOSSES),
    # z = 1e-4 here is below the tolerance's reach: gpt_zloss is the case that pins z-loss
    "gpt_qknorm_rope_zloss_wd": (["model.width=32", "model.depth=1", "model.heads=2",
                                  "model.qk_norm=true", "model.pos=rope", "model.norm=rmsnorm",
                                  "task.seq_len=32", "train.batch_size=4", "train.steps=30",
                                  "train.eval_every=10", "train.eval_batches=2",
                                  "train.z_loss=1e-4", "optim.weight_decay=0.1",
                                  "optim.wd_mode=independent", "schedule.name=wsd"], LOSSES),
    "mlp_modular": (["task.name=modular", "task.p=23", "task.op=-", "task.train_frac=0.5",
                     "model.name=mlp", "model.width=64", "model.depth=1", "train.batch_size=64",
                     "train.steps=30", "train.eval_every=10", "optim.lr=3e-3",
                     "optim.weight_decay=1.0"], LOSSES),
    "gpt_zloss": (TINY + ["optim.lr=1e-2", "train.z_loss=0.1"],
                  LOSSES + ("logz_mean", "logz_train")),
    "gpt_probes": (TINY + ["optim.lr=1e-2", "optim.weight_decay=0.1"], LOSSES + OPT_PROBES),
    "gpt_mup": (TINY + ["optim.lr=1e-2", "model.param=mup", "model.base_width=16"], LOSSES),
    "gpt_lion": (TINY + ["optim.name=lion", "optim.lr=1e-3", "optim.weight_decay=0.1"],
                 LOSSES + ("opt/update_rms",)),
    "gpt_muon": (TINY + ["optim.name=muon", "optim.lr=2e-2"],
                 LOSSES + ("opt/update_rms", "opt/muon_sv_ratio")),
    # bf16 moves the losses by only ~2e-4 relative here (inside the tolerance); the gradient
    # probes move by 1e-3 to 3e-3, so they are what pins autocast
    "gpt_bf16": (TINY + ["optim.lr=1e-2", "train.precision=bf16"],
                 LOSSES + ("grad_norm", "opt/cos_update_grad", "attn_logit_max_l0")),
}


def run_case(name, extra_sets=()):
    torch.set_num_threads(1)
    sets, keys = CASES[name]
    rep = MemoryReporter()
    res = train(load_config(sets=[*sets, *extra_sets]), rep)
    return res, {f"{k}@{s}": v for s, k, v in rep.rows if k in keys}


def regen_cases() -> set[str]:
    """The case names in $PROXYLAB_REGEN_GOLDEN (comma separated); unknown names, ``1`` and
    ``all`` are an error: regeneration is one deliberate case at a time."""
    raw = os.environ.get(REGEN_ENV, "").strip()
    if not raw:
        return set()
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(CASES)
    if unknown:
        raise pytest.UsageError(f"{REGEN_ENV}={raw!r}: unknown case(s) {sorted(unknown)}; name "
                                f"the cases to regenerate, one of {sorted(CASES)}")
    return names


def value_diff(old: dict, new: dict) -> list[str]:
    """One line per value that changed, appeared or disappeared: 'key: old -> new'."""
    lines = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "absent"), new.get(k, "absent")
        if a != b:
            lines.append(f"{k}: {a} -> {b}")
    return lines


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_run(name):
    res, values = run_case(name)
    assert res.status == "done"
    path = GOLDEN / f"{name}.json"
    if name in regen_cases():
        old = json.loads(path.read_text()) if path.exists() else {"run_id": None, "values": {}}
        path.write_text(json.dumps({"run_id": res.run_id, "values": values}, indent=1) + "\n")
        changes = value_diff(old["values"], values)
        msg = (f"regenerated {path.name} (not compared in this run): {len(changes)} of "
               f"{len(values)} values changed")
        if old["run_id"] != res.run_id:
            changes.insert(0, f"run_id: {old['run_id']} -> {res.run_id}")
        pytest.skip(msg + "".join(f"\n  {c}" for c in changes))
    want = json.loads(path.read_text())
    assert res.run_id == want["run_id"], "config hashing changed: regenerate deliberately"
    assert values.keys() == want["values"].keys()
    bad = [f"{k}: golden {v}, got {values[k]}" for k, v in want["values"].items()
           if values[k] != pytest.approx(v, rel=2e-4, abs=1e-5)]
    assert not bad, "\n".join(bad)


def test_seeded_run_is_reproducible_and_seed_matters():
    a = run_case("gpt_text")[1]
    b = run_case("gpt_text")[1]
    assert a == b
    c = run_case("gpt_text", ["train.seed=1"])[1]
    assert c["val/loss@30"] != a["val/loss@30"]


def test_regen_names_cases_one_at_a_time(monkeypatch):
    for raw in ("1", "all", "gpt_text,nope"):
        monkeypatch.setenv(REGEN_ENV, raw)
        with pytest.raises(pytest.UsageError, match="unknown case"):
            regen_cases()
    monkeypatch.setenv(REGEN_ENV, " gpt_text , gpt_mup ")
    assert regen_cases() == {"gpt_text", "gpt_mup"}
    monkeypatch.delenv(REGEN_ENV)
    assert regen_cases() == set()
    assert value_diff({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.5, "c": 3.0}) == [
        "b: 2.0 -> 2.5", "c: absent -> 3.0"]
