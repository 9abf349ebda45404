"""The per-point compiled Newton kernel (fastfp._newton_points) against independent references:
its cell evaluation against the NumPy reference step and Jacobian, and the whole solve against the
vectorised NumPy loop of solvers._dense (backend='numpy'), which runs the same algorithm as
batch-wide array operations. Every root either reports is re-evaluated by the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from support import TOL, VARIANT_IDS, VARIANTS, make_params, near_singular_relu, random_inputs, random_states

import fastfp
from fastfp import Status
from fastfp._cells_cpu import _jacobian_serial
from fastfp._cells_ref import jacobian_ref, step_ref
from fastfp._newton_points import _MAX_COEFFS, forward_point

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")


def _ref_residual(params, fp):
    F = fastfp.step(params.astype(np.float64), fp.x.astype(np.float64), fp.inputs.astype(np.float64), backend="numpy")
    return np.abs(F - fp.x).max(axis=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_forward_point_and_its_jacobian_match_the_reference(variant, dtype):
    params = make_params(*variant, H=7, M=3, seed=4, dtype=dtype)
    rng = np.random.default_rng(1)
    h = random_states(rng, params, 9, dtype)
    x = random_inputs(rng, params, 9, dtype)
    w_ih, w_hh, b_ih, b_hh = params.arrays(dtype)
    F_ref = step_ref(params.cell_code, params.nonlinearity_code, h, x, w_ih, w_hh, b_ih, b_hh)
    J_ref = jacobian_ref(params.cell_code, params.nonlinearity_code, h, x, w_ih, w_hh, b_ih, b_hh)
    H, N = w_hh.shape[1], params.state_size
    for b in range(len(h)):
        ax = (x[b] @ w_ih.T + b_ih).astype(dtype)
        out = np.empty(N, dtype)
        d = np.empty((1, _MAX_COEFFS, H), dtype)
        u = np.empty(w_hh.shape[0], dtype)
        forward_point(params.cell_code, params.nonlinearity_code, h[b], ax, w_hh, b_hh, True, out, d[0], u)
        np.testing.assert_allclose(out, F_ref[b], **TOL[np.dtype(dtype)])
        # The coefficients are checked through the Jacobian they assemble.
        J = np.empty((1, N, N), dtype)
        scratch = np.empty((1, H, N) if params.cell == "gru_reset_before" else (1, 0, 0), dtype)
        _jacobian_serial(params.cell_code, d, w_hh, w_hh, True, scratch, J)
        np.testing.assert_allclose(J[0], J_ref[b], **TOL[np.dtype(dtype)])
        out2 = np.empty(N, dtype)
        forward_point(params.cell_code, params.nonlinearity_code, h[b], ax, w_hh, b_hh, False, out2, d[0], u)
        np.testing.assert_array_equal(out2, out)


def _both(params, h0, x=None, **kw):
    return (fastfp.find_fixed_points(params, h0, x, backend="cpu", jacobian="dense", **kw),
            fastfp.find_fixed_points(params, h0, x, backend="numpy", jacobian="dense", **kw))


def _assert_same_solve(fused, ref, *, x_tol=1e-8):
    np.testing.assert_array_equal(fused.status, ref.status)
    # The two evaluate F and solve in different orders of summation, so a point whose chord or
    # Armijo test sits on its threshold may take an iteration more or less, and a long LM crawl
    # towards a slow point (tens of iterations, measured 35-55) drifts by a few. The Newton-
    # dominated points (<= 20 iterations) must agree to one iteration, and mostly exactly (the
    # least: relu, whose kinks make a chord test flip at 4 of 48 points after float32 factors
    # rounded in another order).
    quick = ref.nit <= 20
    assert quick.mean() >= 0.5
    assert np.mean(fused.nit[quick] == ref.nit[quick]) >= 0.9 and np.abs(fused.nit - ref.nit)[quick].max() <= 1
    ok = fused.success
    np.testing.assert_allclose(fused.x[ok], ref.x[ok], atol=x_tol)
    for key in ("n_factorizations", "precise_factors"):
        if key in ref.metadata:
            assert abs(fused.metadata[key] - ref.metadata[key]) <= 0.05 * max(ref.metadata[key], 20), key


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("method", ["hybrid", "newton"])
def test_fused_solve_equals_the_vectorised_reference(variant, method):
    # Gains spread the gates over their non-linear range; starts far from the roots (scale 1.5)
    # make hybrid take LM steps and Newton fail at some points, so every branch is compared.
    params = make_params(*variant, H=6, M=2, seed=11)
    rng = np.random.default_rng(5)
    h0 = random_states(rng, params, 48, scale=1.5)
    x = random_inputs(rng, params, None)
    fused, ref = _both(params, h0, x, method=method)
    _assert_same_solve(fused, ref)
    assert (_ref_residual(params, fused[fused.success]) <= 1e-10).all()
    assert fused.success.mean() >= 0.5


@pytest.mark.parametrize("chord, mixed", [(True, True), (True, False), (False, True), (False, False)])
def test_fused_solve_equals_reference_for_every_chord_and_precision_option(chord, mixed):
    params = make_params("gru", H=10, M=3, seed=2)
    rng = np.random.default_rng(0)
    h0 = random_states(rng, params, 64, scale=1.0)
    X = random_inputs(rng, params, 64)  # one input per point
    fused, ref = _both(params, h0, X, method="hybrid", chord=chord, mixed_precision=mixed)
    _assert_same_solve(fused, ref)
    assert fused.metadata["chord"] == chord and fused.metadata["mixed_precision"] == mixed
    assert (_ref_residual(params, fused[fused.success]) <= 1e-10).all()


def test_fused_solve_lm_and_slow_points_match_reference():
    # tanh(2h + 0.6): one stable root and a ghost (a local minimum of q > 0) where the negative
    # pair of roots vanished; hybrid must take LM steps there and end on a slow point.
    params = fastfp.RNNParams("vanilla", np.zeros((1, 1)), np.array([[2.0]]), np.array([0.6]), np.zeros(1))
    h0 = np.array([[-0.8], [-0.5], [0.5], [-0.95], [0.1]])
    fused, ref = _both(params, h0, method="hybrid", maxiter=500)
    np.testing.assert_array_equal(fused.status, ref.status)
    assert (fused.status[[0, 1, 3]] == Status.SLOW_POINT).all() and fused.status[2] == Status.CONVERGED
    np.testing.assert_allclose(fused.x, ref.x, atol=1e-6)


@pytest.mark.parametrize("maxiter", [0, 1, 2])
def test_fused_solve_iteration_cap_and_q_tolerance_match_reference(maxiter):
    params = make_params("lstm", H=5, M=2, seed=3)
    h0 = random_states(np.random.default_rng(2), params, 32)
    fused, ref = _both(params, h0, method="hybrid", maxiter=maxiter)
    _assert_same_solve(fused, ref)
    assert (fused.status == Status.MAX_ITER).any()
    assert (fused.nit <= maxiter).all()
    fused, ref = _both(params, h0, method="newton", tol_q=1e-6)
    _assert_same_solve(fused, ref)
    assert (fused.status == Status.Q_TOLERANCE).any()


def test_fused_float32_solve_matches_reference():
    params = make_params("gru", H=8, M=2, seed=6, dtype=np.float32)
    h0 = random_states(np.random.default_rng(3), params, 40, np.float32)
    fused, ref = _both(params, h0, method="hybrid", dtype=np.float32)
    _assert_same_solve(fused, ref, x_tol=1e-4)
    assert fused.x.dtype == np.float32 and fused.success.mean() >= 0.5


def test_fused_ill_conditioned_points_get_float64_factors_like_the_reference():
    params, root, h0 = near_singular_relu(6, 1e-9, 4)
    fused, ref = _both(params, h0, method="hybrid", chord=True)
    assert fused.metadata["precise_factors"] == ref.metadata["precise_factors"] >= 1
    assert fused.success.all()
    np.testing.assert_allclose(fused.x, np.broadcast_to(root, fused.x.shape), rtol=1e-6)


def test_fused_singular_and_diverged_statuses_match_reference():
    # h' = tanh(h): J - I = -h^2 / (1 + ...) vanishes at the root 0, so Newton's steps shrink
    # only linearly and some points stop on the iteration cap; relu with a zero row is singular.
    params = fastfp.RNNParams("vanilla", np.zeros((2, 1)), np.eye(2), np.zeros(2), np.zeros(2))
    h0 = np.array([[0.5, -0.3], [0.9, 0.9], [1e-3, 0.2]])
    fused, ref = _both(params, h0, method="newton", maxiter=8)
    _assert_same_solve(fused, ref)
    U = np.array([[1.0, 0.0], [0.0, 0.5]])
    params = fastfp.RNNParams("vanilla", np.zeros((2, 1)), U, np.array([0.3, 0.0]), np.zeros(2), nonlinearity="relu")
    fused, ref = _both(params, np.array([[0.2, 0.1], [1.0, 2.0]]), method="newton")
    _assert_same_solve(fused, ref)
    assert (fused.status == Status.SINGULAR).all()
