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


def test_points_at_the_default_cap_still_moving_fast_are_restarted_and_others_not(monkeypatch):
    # A contracting GRU from far starts, its newton cap made 2 as if it were the default: points
    # still moving by more than 1e-2 per step are carried by the map towards its attractor and
    # solved again; points at the cap moving slower, a cap the caller lowered, and maxiter=0 (an
    # evaluation) are left as they are.
    import fastfp.solvers

    params = fastfp.RNNParams.random("gru", 8, 2, scale=0.5, seed=1)
    h0 = np.random.default_rng(3).uniform(-1, 1, (40, 8))
    raw = fastfp.find_fixed_points(params, h0, method="newton", maxiter=2, restart_steps=0)
    capped = raw.status == Status.MAX_ITER
    fast = capped & (raw.residual > 1e-2)
    assert fast.any()
    lowered = fastfp.find_fixed_points(params, h0, method="newton", maxiter=2)
    assert lowered.metadata["restarts"] == 0
    monkeypatch.setitem(fastfp.solvers._DEFAULT_MAXITER, "newton", 2)
    fp = fastfp.find_fixed_points(params, h0, method="newton")
    assert fp.metadata["maxiter"] == 2
    assert fp.metadata["restarts"] == fast.sum() == fp.metadata["restarts_converged"]
    np.testing.assert_array_equal(fp.status[capped & ~fast], Status.MAX_ITER)
    np.testing.assert_array_equal(fp.x[capped & ~fast], raw.x[capped & ~fast])
    res = np.abs(fastfp.step(params, fp.x[fast], backend="numpy") - fp.x[fast]).max(axis=1)
    assert (res <= 1e-10).all()
    evaluated = fastfp.find_fixed_points(params, h0, method="newton", maxiter=0)
    assert evaluated.metadata["restarts"] == 0 and (evaluated.status == Status.MAX_ITER).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_slow_manifold_restarts_settle_the_capped_points_and_keep_the_settled_ones(dtype):
    # The trained LSTM-32 at the neutral word: 18 of 256 slow-point searches reach the cap still
    # moving fast; after the restart they are slow points too, within the slow-speed limit, and the
    # points that settled the first time are unchanged.
    from pathlib import Path

    model = fastfp.load(Path(__file__).parent / "data" / "lstm32_cat3.npz")
    params = model.params.astype(np.float64)
    docs = fastfp.tasks.categorical(64, n_classes=3, length=50, seed=0)
    traj = fastfp.rollout(params, None, model.inputs(docs.tokens).astype(np.float64), lengths=docs.lengths)
    h0 = fastfp.sample_states(traj, 256, noise=0.5, mask=docs.mask(), seed=0)
    x = model.inputs(np.array([model.vocab.index("the")]))[0].astype(np.float64)
    opts = dict(slow_ratio=0.05, slow_speed=1e-2, dtype=dtype)
    raw = fastfp.find_fixed_points(params, h0, x, restart_steps=0, **opts)
    fp = fastfp.find_fixed_points(params, h0, x, **opts)
    capped = raw.status == Status.MAX_ITER
    assert capped.sum() >= 10 and fp.metadata["restarts"] >= capped.sum() // 2
    settled = raw.status == Status.SLOW_POINT
    np.testing.assert_array_equal(fp.x[settled], raw.x[settled])
    again = capped & (fp.status == Status.SLOW_POINT)
    assert again.sum() >= capped.sum() // 2
    speed = np.abs(fastfp.step(params, fp.x[again].astype(np.float64), x, backend="numpy")
                   - fp.x[again].astype(np.float64)).max(axis=1)
    assert (speed <= 1e-2 + (1e-5 if dtype == np.float32 else 1e-12)).all()
