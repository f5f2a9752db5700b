"""The README recipe "compare your own optimizer": one registered class, the study's protocol."""

import math

import pytest

import proxylab as pl
from proxylab.optim import REGISTRY, Entry
from proxylab.studies.optimizers import compare, lr_grid, protocol_spec

MY_OPT = '''
from proxylab.optim.base import ProxyOptimizer


class SignSGD(ProxyOptimizer):
    """signSGD: the sign of the gradient, no momentum."""

    def __init__(self, params, lr=1e-3, weight_decay=0.0, wd_mode="decoupled"):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, wd_mode=wd_mode))

    def direction(self, p, g, state, hp):
        return g.sign()
'''


@pytest.mark.slow
def test_compare_your_own_optimizer(tmp_path, monkeypatch):
    (tmp_path / "my_opt.py").write_text(MY_OPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(REGISTRY, "sign-sgd", Entry("my_opt:SignSGD", 1e-3))
    spec = protocol_spec("my-compare", ["adamw", "sign-sgd"], size="smoke")
    assert sorted(set(spec.zip["optim.lr"])) == sorted(set(lr_grid(3e-3, [-1, 0]) + lr_grid(1e-3, [-1, 0])))
    pl.sweep(spec, db=tmp_path / "cmp.db", workers=1)
    store = pl.load(tmp_path / "cmp.db")
    runs = store.runs(sweep="my-compare")
    assert (runs["status"] == "done").all() and set(runs["optim.name"]) == {"adamw", "sign-sgd"}
    table = compare(store, spec)
    assert list(table.index) == ["adamw", "sign-sgd"]
    for col in ("lr_best", "best_loss", "basin_width", "steps_to_target", "steps_ratio"):
        assert col in table.columns
    assert table.loc["sign-sgd", "lr_best"] in lr_grid(1e-3, [-1, 0])
    # the reference reaches its own final loss, so its ratio is exactly 1
    assert table.loc["adamw", "steps_ratio"] == 1.0
    # the two optimizers really trained differently (not the same runs twice)
    assert not math.isclose(table.loc["adamw", "best_loss"], table.loc["sign-sgd", "best_loss"])
