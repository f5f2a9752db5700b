"""Every registered optimizer trains the GPT proxy (width 128, built-in corpus) at its
documented default LR without diverging, to a val loss within 10% of AdamW's.

Slow: one 200-step run per optimizer (~25-60 s each on one CPU core). Set
PROXYLAB_OPTIM_TRAIN_STEPS to shorten it (the 10% band is meant for 200 steps).
"""

import math
import os

import pytest

import proxylab.optim as po
from proxylab.config import from_flat

pytestmark = pytest.mark.slow

STEPS = int(os.environ.get("PROXYLAB_OPTIM_TRAIN_STEPS", "200"))
NAMES = [n for n in po.available() if not n.startswith(po.LAWN_PREFIX)]
if "lawn-adamw" in po.available():
    NAMES.append("lawn-adamw")


def run(name):
    from proxylab.train.loop import train  # noqa: PLC0415

    cfg = from_flat({"optim.name": name, "optim.lr": po.default_lr(name),
                     "model.name": "gpt", "model.width": 128, "train.steps": STEPS,
                     "train.eval_every": STEPS, "train.threads": 1, "train.seed": 0})
    return train(cfg)


@pytest.fixture(scope="module")
def adamw_loss():
    r = run("adamw")
    assert r.status == "done"
    return r.summary["final_val_loss"]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adamw"])
def test_trains_at_default_lr_close_to_adamw(name, adamw_loss):
    r = run(name)
    loss = r.summary.get("final_val_loss", math.nan)
    assert r.status == "done", (name, r.status, r.error)
    assert math.isfinite(loss)
    assert loss <= 1.10 * adamw_loss, (name, loss, adamw_loss)
