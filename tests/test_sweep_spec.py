"""Sweep file expansion: grid x zip x seeds, validation, overrides."""

import pytest

from proxylab.config import ConfigError
from proxylab.sweep.spec import load_sweep, spec_from_dict
from proxylab.train.schedules import lr_multiplier
from proxylab.config import ScheduleConfig


def test_grid_zip_seeds_expand_in_order():
    spec = spec_from_dict({
        "name": "s", "base": {"train": {"steps": 10}},
        "grid": {"optim.lr": [1e-3, 1e-2], "model.width": [32, 64]},
        "zip": {"model.depth": [1, 2], "model.heads": [1, 2]},
        "seeds": [0, 1],
    })
    runs = spec.expand()
    assert len(runs) == 2 * 2 * 2 * 2
    assert {(r.model.depth, r.model.heads) for r in runs} == {(1, 1), (2, 2)}
    assert runs[0].optim.lr == 1e-3 and runs[0].model.width == 32 and runs[0].train.seed == 0
    assert all(r.train.steps == 10 for r in runs)
    assert len({r.id for r in runs}) == len(runs)
    assert spec.axes == ["optim.lr", "model.width", "model.depth", "model.heads", "train.seed"]


def test_design_md_example_parses_verbatim(tmp_path):
    """The sweep block of DESIGN.md (seeds after [zip], so inside it in TOML) is valid."""
    from pathlib import Path

    design = (Path(__file__).parents[1] / "docs" / "DESIGN.md").read_text()
    block = design.split("Sweep file:\n```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "verbatim.toml").write_text(block)
    verbatim = load_sweep(tmp_path / "verbatim.toml")
    assert verbatim.seeds == [0, 1, 2] and verbatim.zip == {} and len(verbatim.expand()) == 24
    block = block.replace("[zip]                       # optional: axes that move together "
                          "(equal lengths)", '[zip]\n"model.depth" = [1, 2]\n"model.heads" = [2, 4]')
    p = tmp_path / "design.toml"
    p.write_text(block)
    spec = load_sweep(p)
    assert spec.seeds == [0, 1, 2] and spec.grid["optim.lr"] == [1e-3, 3e-3, 1e-2, 3e-2]
    assert len(spec.expand()) == 4 * 2 * 2 * 3


def test_bare_dotted_axis_keys(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[grid]\noptim.lr = [1e-3, 1e-2]\nseeds = [0, 1]\n')
    spec = load_sweep(p)
    assert spec.grid == {"optim.lr": [1e-3, 1e-2]} and spec.seeds == [0, 1]


def test_duplicate_points_collapse():
    spec = spec_from_dict({"name": "d", "grid": {"optim.lr": [1e-3, 0.001]}})
    assert len(spec.expand()) == 1


@pytest.mark.parametrize("d, match", [
    ({"name": "x", "grid": {"optim.lrr": [1]}}, "unknown config key 'optim.lrr'"),
    ({"name": "x", "grid": {"optim.lr": []}}, "is empty"),
    ({"name": "x", "grid": {"optim.lr": 1e-3}}, "must be a list"),
    ({"name": "x", "zip": {"optim.lr": [1, 2], "model.width": [32]}}, "equal lengths"),
    ({"name": "x", "seeds": []}, "seeds"),
    ({"name": "bad name!"}, "'name'"),
    ({"grid": {}}, "'name'"),
    ({"name": "x", "grids": {}}, "unknown top-level"),
    ({"name": "x", "grid": {"optim.lr": [-1.0]}}, "optim.lr"),
])
def test_bad_sweeps(d, match):
    with pytest.raises(ConfigError, match=match):
        spec_from_dict(d, source="f.toml").expand()


def test_overrides_apply_to_base_but_not_axes(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[base]\n"train.steps" = 5\n[grid]\n"optim.lr" = [1e-3, 1e-2]\n')
    spec = load_sweep(p).with_overrides(["train.steps=7"])
    assert all(r.train.steps == 7 for r in spec.expand())
    with pytest.raises(ConfigError, match="sweep axis"):
        load_sweep(p).with_overrides(["optim.lr=1"])


def test_schedules_closed_forms():
    cos = ScheduleConfig(name="cosine", warmup=10, min_lr_frac=0.1)
    assert lr_multiplier(cos, 0, 110) == pytest.approx(1 / 11)
    assert lr_multiplier(cos, 9, 110) == pytest.approx(10 / 11)
    assert lr_multiplier(cos, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(cos, 109, 110) == pytest.approx(0.1)
    assert lr_multiplier(cos, 10 + 99 // 2, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 49 / 99)))
    lin = ScheduleConfig(name="linear", warmup=0.0, min_lr_frac=0.0)
    assert lr_multiplier(lin, 0, 11) == 1.0 and lr_multiplier(lin, 10, 11) == 0.0
    assert lr_multiplier(lin, 5, 11) == pytest.approx(0.5)
    wsd = ScheduleConfig(name="wsd", warmup=0.0, decay_frac=0.2, min_lr_frac=0.0)
    assert [lr_multiplier(wsd, s, 10) for s in range(10)] == pytest.approx([1] * 8 + [0.5, 0.0])
    const = ScheduleConfig(name="constant", warmup=0.1)
    assert lr_multiplier(const, 0, 100) == pytest.approx(1 / 11) and lr_multiplier(const, 50, 100) == 1.0


def test_schedule_edges_floors_and_integer_warmup():
    """Edges the closed forms above do not reach (each found by a surviving mutant)."""
    from proxylab.train.schedules import warmup_steps

    # warmup = 1 is one step, not the whole run; 0.5 is half of it
    assert warmup_steps(ScheduleConfig(warmup=1.0), 100) == 1
    assert warmup_steps(ScheduleConfig(warmup=0.5), 100) == 50
    assert warmup_steps(ScheduleConfig(warmup=500), 100) == 100  # clipped to the run
    # a non-zero floor: the decays end at it (1 - (1 - floor)·frac, not 1 - (1 + floor)·frac)
    for name in ("linear", "cosine"):
        s = ScheduleConfig(name=name, warmup=0.0, min_lr_frac=0.1)
        assert lr_multiplier(s, 10, 11) == pytest.approx(0.1), name
    assert lr_multiplier(ScheduleConfig(name="linear", warmup=0.0, min_lr_frac=0.1), 5, 11) \
        == pytest.approx(0.55)
    wsd = ScheduleConfig(name="wsd", warmup=0.0, decay_frac=0.2, min_lr_frac=0.1)
    assert [lr_multiplier(wsd, s, 10) for s in (7, 8, 9)] == pytest.approx([1.0, 0.55, 0.1])
    # a decay of one step lands on the floor at the last step
    one = ScheduleConfig(name="wsd", warmup=0.0, decay_frac=0.1, min_lr_frac=0.0)
    assert [lr_multiplier(one, s, 10) for s in (8, 9)] == [1.0, 0.0]
    # decay over the whole run after warmup: the first post-warmup step already decays
    whole = ScheduleConfig(name="wsd", warmup=2, decay_frac=1.0, min_lr_frac=0.0)
    assert [lr_multiplier(whole, s, 10) for s in range(10)] == pytest.approx(
        [1 / 3, 2 / 3] + [1 - k / 8 for k in range(1, 9)])
    # two steps of cosine after warmup: start at the peak, end at the floor
    cos2 = ScheduleConfig(name="cosine", warmup=0.0, min_lr_frac=0.1)
    assert [lr_multiplier(cos2, s, 2) for s in (0, 1)] == pytest.approx([1.0, 0.1])
