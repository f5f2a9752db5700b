"""Shared test set-up: one torch thread per test process (the CI box has 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "proxylab.db"
