"""find_fixed_points' restarts: stalled points moved along the map's flow and solved again
(restart_steps). The tests of the first attempt alone pin restart_steps to 0 (conftest.first_pass)."""

import numpy as np
import pytest

import fastfp
from fastfp import Status


@pytest.mark.parametrize("method,jacobian", [("hybrid", "dense"), ("newton", "dense"), ("lm", "dense"),
                                             ("newton", "matrix_free")])
def test_stalled_points_are_restarted_along_the_maps_flow(method, jacobian):
    # A high-gain GRU: many starts stall on the face of the root box (a saturated unit with q
    # decreasing outward); the map's own flow from there reaches an attractor, and the second
    # solve converges there. The oracle for the roots is the NumPy reference step.
    params = fastfp.RNNParams.random("gru", 6, 2, scale=3 / np.sqrt(6), seed=2)
    h0 = np.random.default_rng(0).uniform(-1, 1, (64, 6))
    opts = dict(method=method, jacobian=jacobian)
    raw = fastfp.find_fixed_points(params, h0, restart_steps=0, **opts)
    stalled = np.isin(raw.status, (Status.DIVERGED, Status.NO_DECREASE, Status.SINGULAR))
    assert stalled.any() and "restarts" not in raw.metadata
    fp = fastfp.find_fixed_points(params, h0, **opts)
    assert fp.metadata["restart_steps"] == 100 and fp.metadata["restarts"] == stalled.sum()
    assert fp.success.sum() == raw.success.sum() + fp.metadata["restarts_converged"]
    assert fp.metadata["restarts_converged"] >= stalled.sum() // 2
    np.testing.assert_array_equal(fp.x[raw.success], raw.x[raw.success])  # the first attempt's roots stay
    np.testing.assert_array_equal(fp.x0, h0)  # each row is still its caller's start
    res = np.abs(fastfp.step(params, fp.x[fp.success], backend="numpy") - fp.x[fp.success]).max(axis=1)
    assert (res <= 1e-10).all()
    # The restarted points are where the flow goes: their roots attract (every |lambda| < 1).
    restarted = fp[stalled & fp.success].decompose(params)
    assert (np.abs(restarted.eigvals).max(axis=1) < 1).all()
    assert (fp.nit[stalled & fp.success] > raw.nit[stalled & fp.success]).all()


def test_restart_steps_option():
    params = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    h0 = np.zeros((2, 4))
    for bad in (-1, True, 1.5, "100"):
        with pytest.raises(fastfp.InvalidOptionError, match="argument 'restart_steps': got"):
            fastfp.find_fixed_points(params, h0, restart_steps=bad)
    with pytest.raises(fastfp.InvalidOptionError, match="restarts are for newton, hybrid and lm; got method='adam'"):
        fastfp.find_fixed_points(params, h0, method="adam", restart_steps=10)
    # On by default in the slow-manifold mode too; off for adam.
    assert fastfp.find_fixed_points(params, h0, slow_ratio=0.05).metadata["restart_steps"] == 100
    assert fastfp.find_fixed_points(params, h0, method="adam", maxiter=5).metadata["restart_steps"] == 0


def test_points_at_the_cap_still_moving_fast_are_restarted_and_slow_ones_not():
    # A contracting GRU from far starts with a cap of 2 Newton iterations: points still moving by
    # more than 1e-2 per step are carried by the map towards its attractor and solved again; points
    # at the cap moving slower, and every point of maxiter=0 (an evaluation), are left as they are.
    params = fastfp.RNNParams.random("gru", 8, 2, scale=0.5, seed=1)
    h0 = np.random.default_rng(3).uniform(-1, 1, (40, 8))
    raw = fastfp.find_fixed_points(params, h0, method="newton", maxiter=2, restart_steps=0)
    capped = raw.status == Status.MAX_ITER
    fast = capped & (raw.residual > 1e-2)
    assert fast.any()
    fp = fastfp.find_fixed_points(params, h0, method="newton", maxiter=2)
    assert fp.metadata["restarts"] == fast.sum()
    assert fp.metadata["restarts_converged"] == fast.sum()
    np.testing.assert_array_equal(fp.status[capped & ~fast], Status.MAX_ITER)
    np.testing.assert_array_equal(fp.x[capped & ~fast], raw.x[capped & ~fast])
    res = np.abs(fastfp.step(params, fp.x[fast], backend="numpy") - fp.x[fast]).max(axis=1)
    assert (res <= 1e-10).all()
    evaluated = fastfp.find_fixed_points(params, h0, method="newton", maxiter=0)
    assert evaluated.metadata["restarts"] == 0 and (evaluated.status == Status.MAX_ITER).all()
