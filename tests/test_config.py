"""Config validation, --set parsing, hashing."""

import pytest

from proxylab.config import ConfigError, RunConfig, from_flat, load_config, parse_set, run_id


def test_defaults_validate_and_hash_is_stable():
    a, b = RunConfig(), from_flat({})
    assert a == b and run_id(a) == run_id(b) and len(run_id(a)) == 12


def test_hash_changes_with_any_key_and_ignores_spelling():
    base = from_flat({})
    assert run_id(base.replace(**{"optim.lr": 1e-2})) != run_id(base)
    # 3e-3 given as a string-parsed float or as an int-valued float gives the same id
    assert run_id(load_config(sets=["optim.lr=0.003"])) == run_id(load_config(sets=["optim.lr=3e-3"]))
    assert run_id(load_config(sets=["train.steps=100.0"])) == run_id(load_config(sets=["train.steps=100"]))


def test_set_parses_toml_literals_and_bare_words():
    assert parse_set("optim.lr=3e-3") == ("optim.lr", 3e-3)
    assert parse_set("model.qk_norm=true") == ("model.qk_norm", True)
    assert parse_set("model.pos=rope") == ("model.pos", "rope")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set("optim.lr")


@pytest.mark.parametrize("sets, match", [
    (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["foo.bar=1"], "unknown config key 'foo.bar'"),
    (["train.steps=abc"], "train.steps: expected an integer"),
    (["train.steps=0"], "train.steps: 0 is out of range"),
    (["optim.lr=-1e-3"], "optim.lr: -0.001 is out of range"),
    (["model.norm=batchnorm"], "model.norm: 'batchnorm' is not allowed; choose one of"),
    (["optim.wd_mode=fixed"], "optim.wd_mode: 'fixed' is not allowed"),
    (["model.width=100", "model.heads=3"], "model.heads: 3 must divide"),
    (["task.name=modular", "task.op=/", "task.p=12"], "prime"),
    (["model.qk_norm=1"], "expected true or false"),
])
def test_bad_values_name_the_key(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(sets=sets)


def test_toml_file_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nwidth = 64\n[optim]\nlr = 1e-2\n[optim.extra]\n')
    cfg = load_config(p, ["optim.lr=3e-3"])
    assert cfg.model.width == 64 and cfg.optim.lr == 3e-3


def test_missing_and_corrupt_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nwidth=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_to_dict_round_trip():
    from proxylab.config import from_dict

    cfg = load_config(sets=["model.width=64", "schedule.name=wsd"])
    assert from_dict(cfg.to_dict()) == cfg


# ids issued before any `added=True` key existed (config.py at commit 42e2d1b): they must
# keep resolving to the same runs in old stores and golden files
OLD_IDS = {(): "386451b26de2",
           ("model.width=64", "optim.lr=1e-2", "schedule.name=wsd"): "00b9a42d3ca4"}


@pytest.mark.parametrize("sets", list(OLD_IDS))
def test_ids_issued_before_added_keys_are_unchanged(sets):
    assert run_id(load_config(sets=list(sets))) == OLD_IDS[sets]


def test_a_new_added_key_at_its_default_keeps_every_id(monkeypatch):
    """Add a key to TrainConfig the way a new feature does: with `added=True` an existing
    config (the key at its default) keeps its id; a non-default value gets a new id; the same
    key without `added=True` would have changed every id."""
    import dataclasses

    import proxylab.config as C

    sets = ("model.width=64", "optim.lr=1e-2", "schedule.name=wsd")
    cfg = load_config(sets=list(sets))

    def with_new_key(added):
        new = dataclasses.make_dataclass(
            "TrainConfig", [("new_knob", float, C._opt(0.5, lo=0.0, added=added, doc="test"))],
            bases=(C.TrainConfig,), frozen=True, kw_only=True)
        monkeypatch.setitem(C.SECTIONS, "train", new)
        old = dataclasses.asdict(cfg.train)
        return (C.RunConfig(**{**{s: getattr(cfg, s) for s in C.SECTIONS if s != "train"},
                               "train": new(**old)}),
                C.RunConfig(**{**{s: getattr(cfg, s) for s in C.SECTIONS if s != "train"},
                               "train": new(**old, new_knob=2.0)}))

    at_default, moved = with_new_key(added=True)
    assert at_default.flat()["train.new_knob"] == 0.5
    assert run_id(at_default) == OLD_IDS[sets]
    assert run_id(moved) != run_id(at_default)
    at_default, _ = with_new_key(added=False)
    assert run_id(at_default) != OLD_IDS[sets]
