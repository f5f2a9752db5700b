"""Weight-decay analyses against known answers: closed forms checked by simulation,
synthetic grids, trajectories and bucket losses computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from proxylab.analysis import weight_decay as wd
from proxylab.optim import AdamW

# ----------------------------------------------------------------------------------
# equilibrium formulas


def test_closed_forms_by_hand():
    assert wd.equilibrium_norm_adamw(1e-2, 0.5, 64) == pytest.approx(math.sqrt(0.01 * 64 / 1.0))
    assert wd.equilibrium_angle_adamw(1e-2, 0.5) == pytest.approx(0.1)
    assert wd.equilibrium_angle_adamw(1e-2, 0.5, beta1=0.9) == pytest.approx(
        0.1 * math.sqrt(0.1 / 1.9))
    assert wd.equilibrium_norm_sgd(0.1, 1e-3, 2.0) == pytest.approx((0.1 * 4 / 2e-3) ** 0.25)
    assert wd.equilibrium_angle_sgd(0.1, 1e-3, momentum=0.9) == pytest.approx(
        math.sqrt(2e-4 / 1.9))
    assert wd.relaxation_time(1e-2, 0.5) == pytest.approx(200.0)


def test_sgd_equilibrium_matches_the_exact_recurrence():
    """SGD on a scale-invariant weight: the gradient is G/‖w‖ times a unit vector ⊥ w.
    The norm then follows a deterministic recurrence; the formulas hold to O(ηλ)."""
    gen = torch.Generator().manual_seed(0)
    lr, lam, G = 0.1, 1e-2, 2.0
    w = torch.randn(50, generator=gen, dtype=torch.float64) * 3.0
    steps = int(10 * wd.relaxation_time(lr, lam))
    angles = []
    for _ in range(steps):
        d = torch.randn(50, generator=gen, dtype=torch.float64)
        d -= (d @ w) / (w @ w) * w
        g = G / w.norm() * d / d.norm()
        new = (1 - lr * lam) * w - lr * g
        angles.append(float(torch.acos(torch.clamp(new @ w / (new.norm() * w.norm()), -1, 1))))
        w = new
    exact = (lr * G**2 / (lam * (2 - lr * lam))) ** 0.25
    assert float(w.norm()) == pytest.approx(exact, rel=1e-3)
    assert float(w.norm()) == pytest.approx(wd.equilibrium_norm_sgd(lr, lam, G), rel=1e-3)
    assert np.mean(angles[-100:]) == pytest.approx(wd.equilibrium_angle_sgd(lr, lam), rel=0.01)


def test_adamw_equilibrium_in_a_random_walk_simulation():
    """proxylab's AdamW on 64 scale-invariant rows fed pure noise orthogonal to each row:
    mean row norm -> sqrt(ηC/2λ), one-step row angle -> sqrt(2ηλ(1-β1)/(1+β1))."""
    torch.manual_seed(0)
    C, lr, lam, b1 = 64, 1e-2, 0.5, 0.9
    p = torch.nn.Parameter(torch.randn(64, C) * 0.05)
    opt = AdamW([p], lr=lr, betas=(b1, 0.95), weight_decay=lam)   # β2 as optim.beta2 defaults
    norms, angles = [], []
    for t in range(1800):
        with torch.no_grad():
            noise = torch.randn(64, C)
            w = p.detach()
            noise -= (noise * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w
            p.grad = noise / w.norm(dim=1, keepdim=True)
            old = w.clone()
        opt.step()
        if t >= 1400:                             # 7 relaxation times
            new = p.detach()
            cos = (old * new).sum(1) / (old.norm(dim=1) * new.norm(dim=1))
            angles.append(float(torch.acos(cos.clamp(-1, 1)).mean()))
            norms.append(float(new.norm(dim=1).mean()))
    assert np.mean(norms) == pytest.approx(wd.equilibrium_norm_adamw(lr, lam, C), rel=0.05)
    assert np.mean(angles) == pytest.approx(wd.equilibrium_angle_adamw(lr, lam, b1), rel=0.05)


def test_fit_relaxation_recovers_a_synthetic_trajectory():
    t = np.arange(0, 400, 10.0)
    v = 2.0 + 3.0 * np.exp(-t / 50.0)
    v_inf, a, tau = wd.fit_relaxation(t + 100, v, taus=[10, 25, 50, 100, 200])
    assert (v_inf, a, tau) == pytest.approx((2.0, 3.0, 50.0))
    v_inf, a, tau = wd.fit_relaxation(t, v)          # default grid: within its resolution
    assert tau == pytest.approx(50.0, rel=0.05) and v_inf == pytest.approx(2.0, abs=0.02)
    assert all(math.isnan(x) for x in wd.fit_relaxation([1, 2], [1, 2]))


def test_tail_ratio():
    assert wd.tail_ratio([0, 10, 20, 30], [9, 9, 2, 4], 2.0, start=20) == pytest.approx(1.5)
    assert math.isnan(wd.tail_ratio([0, 10], [1, 1], 2.0, start=50))
    assert math.isnan(wd.tail_ratio([0, 10], [1, 1], 0.0, start=0))


# ----------------------------------------------------------------------------------
# LR × λ grid


def _grid(slope, a=-1.0, seeds=(0, 1)):
    """loss = (log10 λ - (a + slope·log10 η))² + 2: λ* = 10^(a + slope log10 η)."""
    rows = []
    for eta in (1e-3, 1e-2, 1e-1):
        for lam in (1e-3, 1e-2, 1e-1, 1.0, 10.0):
            for s in seeds:
                centre = a + slope * (math.log10(eta) + 2)
                rows.append({"optim.lr": eta, "optim.weight_decay": lam, "train.seed": s,
                             "loss": (math.log10(lam) - centre) ** 2 + 2 + 0.01 * s})
    rows.append({"optim.lr": 1e-2, "optim.weight_decay": 0.0, "train.seed": 0, "loss": 0.0})
    return pd.DataFrame(rows)


def test_optimal_wd_finds_the_vertex_and_its_slope():
    opt = wd.optimal_wd(_grid(slope=-0.5))
    assert list(opt["lr"]) == [1e-3, 1e-2, 1e-1]
    # centres -0.5, -1, -1.5 decades (between grid points: the parabola is exact)
    assert np.log10(opt["wd_opt"]).tolist() == pytest.approx([-0.5, -1.0, -1.5])
    assert opt["loss_opt"].tolist() == pytest.approx([2.005] * 3)   # λ = 0 row ignored
    assert not opt["edge"].any()
    assert wd.log_slope(opt["lr"], opt["wd_opt"]) == pytest.approx(-0.5)


def test_optimal_wd_flags_grid_edges():
    opt = wd.optimal_wd(_grid(slope=-2.0))          # centres 1, -1, -3 decades
    assert opt["edge"].tolist() == [True, False, True]
    assert opt["wd_opt"].tolist() == pytest.approx([10.0, 0.1, 1e-3])


def test_interior_slope_ignores_optima_at_the_grid_edge():
    opt = wd.optimal_wd(_grid(slope=-2.0))          # only the middle LR is interior
    assert math.isnan(wd.interior_slope(opt["lr"], opt["wd_opt"], opt["edge"]))
    assert wd.interior_slope([1, 10, 100], [9.0, 1.0, 0.1], [True, False, False]) == \
        pytest.approx(-1.0)


def test_log_slope_and_best_loss():
    assert wd.log_slope([1, 10, 100], [5, 0.5, 0.05]) == pytest.approx(-1.0)
    assert math.isnan(wd.log_slope([1, 1], [2, 3]))
    assert math.isnan(wd.log_slope([1], [2]))
    df = pd.DataFrame({"k": [1, 1, 2, 2], "loss": [3.0, 1.0, 2.5, 2.5]})
    assert wd.best_loss(df, keys=["k"]) == pytest.approx(2.0)


# ----------------------------------------------------------------------------------
# buckets and aligned curves


def test_bucket_gap_by_hand():
    df = pd.DataFrame({"optim.weight_decay": [0.0, 0.3, 0.0, 0.3],
                       "train.seed": [0, 0, 1, 1],
                       "b0": [4.0, 4.5, 4.2, 4.4], "b3": [1.0, 1.1, 1.2, 1.1]})
    g = wd.bucket_gap(df)
    assert g["d_rare"].tolist() == pytest.approx([0.5, 0.2])
    assert g["d_frequent"].tolist() == pytest.approx([0.1, -0.1])
    assert g["gap"].tolist() == pytest.approx([0.4, 0.3])


def test_aligned_gap_and_crossing():
    steps = [0, 10, 20, 30, 40, 50]
    a = wd.aligned_gap(steps, [3, 3, 2.9, 2.5, 2.4, 2.3], [2.9, 2.9, 2.9, 2.6, 2.5, 2.4],
                       decay_step=20)
    assert a["t"].tolist() == [-20, -10, 0, 10, 20, 30]
    assert a["gap"].tolist() == pytest.approx([0.1, 0.1, 0.0, -0.1, -0.1, -0.1])
    assert wd.crossing_step(a["t"], a["gap"]) == 10
    assert wd.crossing_step([0, 1, 2], [-1, 1, -1]) == 2
    assert wd.crossing_step([0, 1], [-1, -1]) == 0
    assert math.isnan(wd.crossing_step([0, 1], [-1, 0.5]))


def test_decay_start_and_tail_mean():
    assert wd.decay_start([0, 10, 20, 30], [0.5, 1.0, 1.0, 0.2]) == 30     # wsd-like
    assert wd.decay_start([0, 10, 20], [0.5, 1.0, 0.9]) == 20              # cosine after warmup
    assert math.isnan(wd.decay_start([0, 10], [1.0, 1.0]))                 # constant
    assert wd.tail_mean([0, 50, 90, 100], [9, 9, 1, 3], frac=0.1) == pytest.approx(2.0)
