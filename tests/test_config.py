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
