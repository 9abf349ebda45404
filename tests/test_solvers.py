"""Fixed-point solvers against independent truth: closed forms, scalar root finders, constructions
with known roots/slow points, and the NumPy reference re-evaluating every reported root."""

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

import fastfp
from fastfp import Status
from support import linear_relu, q_linear, textbook_adam

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")

DENSE = ("hybrid", "newton", "lm")


def _reference_residual(params, x, inputs):
    """||F(x) - x||_inf re-evaluated by the float64 NumPy reference."""
    x = np.asarray(x, np.float64)
    F = fastfp.step(params.astype(np.float64), x, np.asarray(inputs, np.float64), backend="numpy")
    return np.abs(F - x).max(axis=1)


@pytest.mark.parametrize("method", DENSE)
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_linear_rnn_closed_form(method, backend):
    params, U, b = linear_relu(8, 0.8, seed=1)
    h_star = np.linalg.solve(np.eye(8) - U, b)
    assert (h_star > 0).all()  # the construction really is linear at the root
    h0 = np.random.default_rng(2).uniform(0.1, 2.0, (16, 8))
    fp = fastfp.find_fixed_points(params, h0, method=method, backend=backend)
    assert fp.success.all(), fp.status
    np.testing.assert_allclose(fp.x, np.broadcast_to(h_star, fp.x.shape), atol=1e-9)
    assert (_reference_residual(params, fp.x, fp.inputs) <= 1e-10).all()
    if method == "newton":
        # An affine map is solved by one Newton step (the second iteration only confirms it).
        assert fp.nit.max() <= 2


def test_linear_rnn_with_input_per_point():
    params, U, b = linear_relu(5, 0.6, seed=3)
    W = np.random.default_rng(4).uniform(0, 1, (5, 2))
    params = fastfp.RNNParams("vanilla", W, U, b, np.zeros(5), nonlinearity="relu")
    X = np.random.default_rng(5).uniform(0, 1, (7, 2))
    fp = fastfp.find_fixed_points(params, np.ones((7, 5)), X)
    expected = np.linalg.solve(np.eye(5) - U, (X @ W.T + b).T).T
    np.testing.assert_allclose(fp.x, expected, atol=1e-9)
    np.testing.assert_array_equal(fp.inputs, X)


def _scalar_tanh(w, b):
    return fastfp.RNNParams("vanilla", np.zeros((1, 1)), np.array([[w]]), np.array([b]), np.zeros(1))


@pytest.mark.parametrize("method", DENSE)
def test_bistable_scalar_roots_and_stability(method):
    params = _scalar_tanh(2.0, 0.0)
    h_star = brentq(lambda h: np.tanh(2 * h) - h, 0.5, 1.0)
    h0 = np.array([[-0.9], [-0.6], [0.6], [0.9], [0.05]])
    fp = fastfp.find_fixed_points(params, h0, method=method).decompose(params)
    assert fp.success.all()
    roots = np.sort(np.unique(np.round(fp.x.ravel(), 9)))
    expected = np.array([-h_star, 0.0, h_star])
    assert all(np.min(np.abs(expected - r)) < 1e-9 for r in roots)
    # eigenvalue of tanh(2h) at a root is 2 (1 - h^2); |lambda| < 1 is stable
    lam = fp.eigvals[:, 0].real
    np.testing.assert_allclose(lam, 2 * (1 - fp.x.ravel() ** 2), atol=1e-12)
    np.testing.assert_array_equal(fp.is_stable, np.abs(fp.x.ravel()) > 0.5)


def test_saddle_in_two_dimensions():
    U = np.diag([2.0, 0.5])
    params = fastfp.RNNParams("vanilla", np.zeros((2, 1)), U)
    fp = fastfp.find_fixed_points(params, np.array([[0.01, 0.3], [0.8, -0.4], [-0.7, 0.2]]), method="newton")
    fp = fp.decompose(params)
    assert fp.success.all()
    h_star = brentq(lambda h: np.tanh(2 * h) - h, 0.5, 1.0)
    np.testing.assert_allclose(fp.x, [[0, 0], [h_star, 0], [-h_star, 0]], atol=1e-10)
    np.testing.assert_array_equal(fp.n_unstable, [1, 0, 0])  # the origin is a saddle


@pytest.mark.parametrize("method", ["lm", "hybrid"])
def test_ghost_is_reported_as_slow_point(method):
    # Past the saddle-node bifurcation (b > 0.5328) the negative pair of roots of tanh(2h + b) = h
    # has vanished, leaving a local minimum of q with q > 0.
    params = _scalar_tanh(2.0, 0.6)
    q = lambda h: 0.5 * (np.tanh(2 * h + 0.6) - h) ** 2  # noqa: E731
    ghost = minimize_scalar(q, bounds=(-1.0, -0.3), method="bounded", options={"xatol": 1e-12}).x
    fp = fastfp.find_fixed_points(params, np.array([[-0.8], [-0.5], [0.5]]), method=method, maxiter=500)
    assert fp.status[0] == Status.SLOW_POINT and fp.status[1] == Status.SLOW_POINT
    np.testing.assert_allclose(fp.x[:2, 0], ghost, atol=1e-5)
    np.testing.assert_allclose(fp.q[:2], q(ghost), rtol=1e-6)
    assert not fp.success[:2].any() and fp.is_slow_point[:2].all()
    assert fp.status[2] == Status.CONVERGED  # the surviving stable root


def test_float32_stall_that_is_not_stationary_in_float64_is_no_decrease():
    """A high-gain GRU: float32 LM stalls at |r| ~ 3e-4 against the root box, where float32
    rounding makes |grad q| / |r| look like 1e-3; in float64 (the oracle: the reference Jacobian)
    it is 1.1e-2 and q still decreases, so it is no slow point."""
    p = fastfp.RNNParams.random("gru", 24, 3, scale=3.0, seed=1)
    rng = np.random.default_rng(1)
    h0, x = rng.uniform(-1, 1, (200, 24))[[143]], rng.normal(size=3) * 0.5
    fp = fastfp.find_fixed_points(p, h0, x, dtype=np.float32, method="lm")
    h = fp.x.astype(np.float64)
    r = fastfp.step(p, h, x[None], backend="numpy") - h
    g = np.einsum("bij,bi->bj", fastfp.jacobian(p, h, x[None], backend="numpy") - np.eye(24), r)
    assert np.abs(g).max() / np.abs(r).max() > 5e-3  # not stationary in float64
    # q still goes down from here in float64 (below), so no slow point, nor heading out of the box
    assert fp.status[0] == Status.NO_DECREASE and not fp.on_slow_manifold(1e-2)[0]
    assert fp.metadata["float32_slow_points_demoted"] == 1
    f64 = fastfp.find_fixed_points(p, h, x, method="lm", maxiter=2000)
    assert f64.q[0] < 0.9 * fp.q[0]  # float64 LM from there still decreases q


def _stalls(method, jacobian, backend):
    """High-gain vanilla RNN: many starts stall. Returns (fp, h, r, g, pressed, g_free) with r, g
    re-evaluated by the float64 reference (g = (J - I)^T r from the reference Jacobian)."""
    p = fastfp.RNNParams.random("vanilla", 24, 3, scale=2.0, seed=1)
    rng = np.random.default_rng(1)
    h0, x = rng.uniform(-1, 1, (100, 24)), rng.normal(size=3) * 0.5
    fp = fastfp.find_fixed_points(p, h0, x, method=method, jacobian=jacobian, maxiter=300, backend=backend)
    h = fp.x
    r = fastfp.step(p, h, x, backend="numpy") - h
    g = np.einsum("bij,bi->bj", fastfp.jacobian(p, h, x, backend="numpy") - np.eye(24), r)
    pressed_coord = ((h <= -1) & (g > 0)) | ((h >= 1) & (g < 0))  # q decreases outward there
    return p, x, fp, h, r, g, pressed_coord.any(axis=1), np.where(pressed_coord, 0.0, g)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("jacobian", ["dense", "matrix_free"])
def test_newton_stalls_that_could_still_descend_are_no_decrease(backend, jacobian):
    """Plain Newton stalls where its direction fails; q still goes down along the face of the root
    box (a small projected steepest-descent step, checked by the reference cells): NO_DECREASE,
    neither a slow point nor divergent."""
    p, x, fp, h, r, g, pressed, g_free = _stalls("newton", jacobian, backend)
    no_dec = np.flatnonzero(fp.status == Status.NO_DECREASE)
    assert len(no_dec) >= 50 and not (fp.status == Status.DIVERGED).any(), np.bincount(fp.status)
    assert (np.abs(g_free[no_dec]).max(axis=1) > 0.1 * np.abs(r[no_dec]).max(axis=1)).all()
    t = (1e-3 * np.abs(r[no_dec]).max(axis=1) / np.abs(g_free[no_dec]).max(axis=1))[:, None]
    h2 = np.clip(h[no_dec] - t * g_free[no_dec], -1, 1)
    r2 = fastfp.step(p, h2, x, backend="numpy") - h2
    assert ((r2 ** 2).sum(axis=1) < (r[no_dec] ** 2).sum(axis=1)).all()
    assert not fp.on_slow_manifold(1e-2)[no_dec].any()
    assert "no decrease" in Status.NO_DECREASE.message


@pytest.mark.parametrize("jacobian", ["dense", "matrix_free"])
def test_lm_stalls_pressed_against_the_root_box_are_diverged(jacobian):
    """LM settles on the face of the root box where q decreases only outward: DIVERGED (pressed
    coordinates, q stationary on the free ones, by the reference cells)."""
    p, x, fp, h, r, g, pressed, g_free = _stalls("lm", jacobian, "cpu")
    div = np.flatnonzero(fp.status == Status.DIVERGED)
    assert len(div) >= 30, np.bincount(fp.status)
    assert pressed[div].all()
    assert (np.abs(g_free[div]).max(axis=1) <= np.maximum(1e-12, 1e-5 * np.abs(r[div]).max(axis=1))).all()
    assert (np.abs(g[div]).max(axis=1) > 1e-3 * np.abs(r[div]).max(axis=1)).all()  # not stationary overall


def test_float32_slow_point_at_the_speed_limit_keeps_its_status():
    """A float32 slow point stopped by the slow-manifold test with slow_speed between its float32
    and float64 speeds: the solver's own test explains it, so the float64 re-check leaves it."""
    p = fastfp.RNNParams.random("lstm", 16, 3, scale=2.0, seed=7)
    h0, x = np.random.default_rng(0).uniform(-1, 1, (300, 32)), np.zeros(3)
    fp = fastfp.find_fixed_points(p, h0, x, dtype=np.float32, method="lm", slow_ratio=0.05, slow_speed=1e-3)
    i = np.flatnonzero(fp.status == Status.SLOW_POINT)
    h32 = fp.x[i]
    s32 = np.abs(fastfp.step(p.astype(np.float32), h32, np.zeros((len(i), 3), np.float32)) - h32).max(1)
    s64 = np.abs(fastfp.step(p, h32.astype(float), np.zeros((len(i), 3))) - h32.astype(float)).max(1)
    j = np.argmax(s64 - s32)
    assert s64[j] > s32[j]  # the float64 speed is above the float32 one
    limit = 0.5 * (s32[j] + s64[j])
    one = fastfp.find_fixed_points(p, h32[j], x, dtype=np.float32, method="lm", slow_ratio=0.05, slow_speed=limit)
    assert one.status[0] == Status.SLOW_POINT and one.nit[0] == 0
    assert one.metadata["float32_slow_points_demoted"] == 0
    empty = fastfp.find_fixed_points(p, np.zeros((0, 32)), x, dtype=np.float32)
    assert empty.metadata["float32_slow_points_rechecked"] == 0


def test_on_slow_manifold_drops_a_fast_stationary_point():
    """The ghost is a local minimum of q, reported SLOW_POINT whatever its speed; the slow-manifold
    test keeps it only when its speed |tanh(2h + 0.6) - h| is within slow_speed."""
    params = _scalar_tanh(2.0, 0.6)
    fp = fastfp.find_fixed_points(params, np.array([[-0.8], [0.5]]), slow_ratio=0.05, slow_speed=1e-3, maxiter=500)
    assert fp.status.tolist() == [Status.SLOW_POINT, Status.CONVERGED]
    ghost_speed = abs(np.tanh(2 * fp.x[0, 0] + 0.6) - fp.x[0, 0])
    assert ghost_speed > 0.03  # 30x the slow-manifold test: a stationary point of q
    np.testing.assert_allclose(fp.speed(), [ghost_speed, fp.residual[1]], rtol=1e-12)
    assert fp.on_slow_manifold(1e-3).tolist() == [False, True]
    assert fp.on_slow_manifold(2 * ghost_speed).tolist() == [True, True]
    # in units of 4x its speed the ghost moves by 0.25
    assert fp.on_slow_manifold(0.3, speed_scale=4 * ghost_speed).tolist() == [True, True]
    assert fp.on_slow_manifold(0.2, speed_scale=np.array([4 * ghost_speed])).tolist() == [False, True]
    with pytest.raises(fastfp.ShapeError, match="'speed_scale'.*shape \\(1,\\)"):
        fp.speed(np.ones(3))
    with pytest.raises(fastfp.InvalidOptionError, match="'speed_scale'"):
        fp.speed(0.0)
    with pytest.raises(fastfp.InvalidOptionError, match="'slow_speed'"):
        fp.on_slow_manifold(-1.0)
    with pytest.raises(fastfp.InvalidOptionError, match="argument 'speed_scale': got 'abc'"):
        fp.speed("abc")


def _line_attractor(lam, N=6, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.5, 1.5, N)
    P = np.outer(v, v) / (v @ v)
    U = lam * P + 0.5 * (np.eye(N) - P)  # U h > 0 for h > 0: linear on the positive orthant
    params = fastfp.RNNParams("vanilla", np.zeros((N, 1)), U, nonlinearity="relu")
    return params, v, P


@pytest.mark.parametrize("method", DENSE)
def test_line_attractor_roots_lie_on_the_line(method):
    params, v, P = _line_attractor(1.0)
    h0 = np.random.default_rng(1).uniform(0.2, 1.0, (30, 6))
    fp = fastfp.find_fixed_points(params, h0, method=method)
    conv = fp[fp.success]
    assert len(conv) >= 25
    off_line = np.linalg.norm(conv.x - conv.x @ P, axis=1)
    assert off_line.max() < 1e-8
    assert len(conv.unique(1e-3)) > 5  # a continuum, not one point
    # Off relu's kink at 0 (where the slope is 0) the Jacobian is U, whose top eigenvalue is 1.
    interior = conv[conv.x.min(axis=1) > 1e-8]
    assert len(interior) > 5
    dec = interior.decompose(params)
    np.testing.assert_allclose(np.abs(dec.eigvals[:, 0]), 1.0, atol=1e-10)


def test_lm_keeps_points_where_they_project_on_a_line_attractor():
    params, v, P = _line_attractor(1.0)
    h0 = np.random.default_rng(1).uniform(0.2, 1.0, (30, 6))
    fp = fastfp.find_fixed_points(params, h0, method="lm")
    assert fp.success.all()
    np.testing.assert_allclose(fp.x, h0 @ P, atol=1e-6)  # Gauss-Newton never moves along the null space


def test_slow_manifold_mode_keeps_points_spread():
    params, v, P = _line_attractor(0.999)  # a slow line with a single root at 0
    h0 = np.random.default_rng(1).uniform(0.2, 1.0, (30, 6))
    exact = fastfp.find_fixed_points(params, h0)
    assert exact.success.all() and np.abs(exact.x).max() < 1e-9
    slow = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=1e-2)
    assert (slow.status == Status.SLOW_POINT).all()
    along = slow.x @ v / (v @ v)
    np.testing.assert_allclose(along, h0 @ v / (v @ v), rtol=2e-2)
    assert np.linalg.norm(slow.x - slow.x @ P, axis=1).max() < 1e-3
    assert len(slow.unique(1e-3)) >= 25  # (two starts may project within 1e-3 of each other)


def test_newton_converges_quadratically():
    params = fastfp.RNNParams.random("gru", 12, 3, seed=7, scale=1.0)
    start = fastfp.find_fixed_points(params, np.zeros((1, 12)), method="newton", atol=1e-15)
    assert start.success.all()
    root = start.x
    h0 = root + 0.05 * np.random.default_rng(0).normal(size=root.shape)
    errors = []
    for k in range(6):
        fp = fastfp.find_fixed_points(params, h0, method="newton", maxiter=k, atol=1e-300)
        errors.append(np.abs(fp.x - root).max())
    errors = np.array(errors)
    usable = errors > 1e-12
    e = errors[usable]
    assert len(e) >= 3
    # e_{k+1} <= C e_k^2: the log-error roughly doubles at each step
    ratios = np.log(e[1:]) / np.log(e[:-1])
    assert (ratios[1:] > 1.7).all(), errors


@pytest.mark.parametrize("cell", ["gru", "lstm", "ugrnn", "gru_reset_before", "vanilla"])
def test_every_converged_point_is_a_root_by_the_reference(cell):
    params = fastfp.RNNParams.random(cell, 16, 3, seed=3, scale=1.5 / 4)
    rng = np.random.default_rng(0)
    h0 = rng.uniform(-0.9, 0.9, (64, params.state_size))
    x = rng.normal(size=3) * 0.3
    fp = fastfp.find_fixed_points(params, h0, x)
    assert fp.success.mean() > 0.9, np.bincount(fp.status)
    res = _reference_residual(params, fp.x[fp.success], fp.inputs[fp.success])
    assert (res <= 1e-10).all()
    np.testing.assert_allclose(fp.residual[fp.success], res, atol=1e-14)


def test_float32_solve():
    params = fastfp.RNNParams.random("gru", 16, 3, seed=3)
    fp = fastfp.find_fixed_points(params, np.zeros((4, 16)), dtype=np.float32, atol=1e-5)
    assert fp.x.dtype == np.float32 and fp.success.all()
    assert (_reference_residual(params, fp.x, fp.inputs) <= 1e-5).all()


def test_max_iter_status_and_nit():
    params = fastfp.RNNParams.random("gru", 16, 3, seed=3)
    fp = fastfp.find_fixed_points(params, np.full((3, 16), 0.9), maxiter=1)
    assert (fp.status == Status.MAX_ITER).all()
    assert (fp.nit == 1).all()


def test_adam_reaches_q_tolerance_on_a_contracting_map():
    params, U, b = linear_relu(4, 0.5, seed=1)
    fp = fastfp.find_fixed_points(params, np.ones((8, 4)), method="adam", maxiter=3000)
    assert np.isin(fp.status, [Status.CONVERGED, Status.Q_TOLERANCE]).all()
    assert (fp.q <= 1e-12).all()
    h_star = np.linalg.solve(np.eye(4) - U, b)
    np.testing.assert_allclose(fp.x, np.broadcast_to(h_star, fp.x.shape), atol=1e-5)


def test_adam_constant_schedule_is_textbook_adam():
    params, U, b = linear_relu(4, 0.5, seed=1)
    h0 = np.random.default_rng(3).uniform(1.0, 2.0, (6, 4))
    # lr 1.0: large enough steps for the plateau rule to fire, which the constant schedule must not do
    kw = dict(method="adam", adam_lr=1.0, tol_q=1e-30, maxiter=100)
    fp = fastfp.find_fixed_points(params, h0, adam_schedule="constant", **kw)
    expected = textbook_adam(U, b, h0, 1.0, 100)
    assert (expected > 0).all()  # still on the orthant where the map is linear
    np.testing.assert_allclose(fp.x, expected, rtol=0, atol=1e-12)
    assert (fp.status == Status.MAX_ITER).all() and (fp.nit == 100).all()
    plateau = fastfp.find_fixed_points(params, h0, adam_schedule="plateau", **kw)
    assert np.abs(plateau.x - expected).max() > 1e-4


def test_adam_mean_stop_rule_takes_the_step_then_stops():
    # renn's optimize: the mean q of the states before a step is tested after the step is taken,
    # and the stepped states are returned; so a batch already below the tolerance takes one step.
    params, U, b = linear_relu(4, 0.5, seed=1)
    h_star = np.linalg.solve(np.eye(4) - U, b)
    h0 = np.vstack([np.tile(h_star, (4, 1)), h_star + np.outer([0.01, 0.02, 0.2, 0.4], np.ones(4))])
    tol = 1.01 * q_linear(U, b, h0).mean()
    fp = fastfp.find_fixed_points(params, h0, method="adam", adam_lr=0.01, adam_stop="mean", tol_q=tol)
    assert (fp.nit == 1).all()
    x1 = textbook_adam(U, b, h0, 0.01, 1)
    # at the roots Adam's first step is lr * g / (|g| + 1e-8) of a rounding-level g: ~1e-10 either way
    np.testing.assert_allclose(fp.x, x1, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fp.x[4:], x1[4:], rtol=0, atol=1e-14)
    np.testing.assert_allclose(fp.x[:4], h0[:4], rtol=0, atol=1e-9)  # gradient ~1e-16: the roots barely move
    q1 = q_linear(U, b, x1)
    expected = np.where(q1 > tol, Status.BATCH_STOPPED, Status.Q_TOLERANCE)
    expected[:4] = Status.CONVERGED
    np.testing.assert_array_equal(fp.status, expected)
    assert (expected == Status.BATCH_STOPPED).sum() == 2 and (expected == Status.Q_TOLERANCE).sum() == 2
    assert not fp.is_slow_point[q1 > tol].any()
    # FixedPointFinder's rule waits for every point, so the same call runs on
    fp_all = fastfp.find_fixed_points(params, h0, method="adam", adam_lr=0.01, tol_q=tol, maxiter=200)
    assert (fp_all.nit > 1).all()


def test_adam_mean_stop_after_iterations():
    params, U, b = linear_relu(4, 0.5, seed=1)
    h_star = np.linalg.solve(np.eye(4) - U, b)
    h0 = h_star + np.random.default_rng(0).uniform(0.05, 0.6, (16, 4))
    fp = fastfp.find_fixed_points(params, h0, method="adam", adam_lr=0.01, adam_stop="mean",
                                  adam_schedule="constant", tol_q=1e-4, tol_dq=0.0, maxiter=5000)
    n = int(fp.nit[0])
    assert 1 < n < 5000
    # the n-th step was taken from states whose mean q was at most the tolerance; the step before not
    assert q_linear(U, b, textbook_adam(U, b, h0, 0.01, n - 1)).mean() <= 1e-4
    assert q_linear(U, b, textbook_adam(U, b, h0, 0.01, n - 2)).mean() > 1e-4
    expected = textbook_adam(U, b, h0, 0.01, n)
    np.testing.assert_allclose(fp.x, expected, rtol=0, atol=1e-12)
    q = q_linear(U, b, expected)
    np.testing.assert_array_equal(fp.status == Status.BATCH_STOPPED, q > 1e-4)
    assert (fp.status[q <= 1e-4] == Status.Q_TOLERANCE).all()


def test_adam_mean_stop_per_chunk_and_empty_batch():
    params, U, b = linear_relu(4, 0.5, seed=1)
    h_star = np.linalg.solve(np.eye(4) - U, b)
    h0 = h_star + np.random.default_rng(1).uniform(0.05, 0.6, (9, 4))
    kw = dict(method="adam", adam_lr=0.01, adam_stop="mean", adam_schedule="constant", tol_q=1e-4, tol_dq=0.0)
    fp = fastfp.find_fixed_points(params, h0, batch_size=4, **kw)
    for lo in (0, 4, 8):  # each chunk is a batch of its own
        alone = fastfp.find_fixed_points(params, h0[lo:lo + 4], **kw)
        np.testing.assert_array_equal(fp.x[lo:lo + 4], alone.x)
        np.testing.assert_array_equal(fp.nit[lo:lo + 4], alone.nit)
    assert len(set(fp.nit.tolist())) > 1
    empty = fastfp.find_fixed_points(params, np.zeros((0, 4)), **kw)
    assert len(empty) == 0


def test_adam_stall_is_batch_stopped_not_max_iter():
    # The tol_dq rule (FixedPointFinder's |d mean q| < tol_dq * lr) stops the batch early: the points
    # that met no tolerance are 'batch stopped', not 'max iterations'.
    params, U, b = linear_relu(4, 0.5, seed=1)
    h0 = np.random.default_rng(3).uniform(1.0, 2.0, (6, 4))
    fp = fastfp.find_fixed_points(params, h0, method="adam", adam_lr=1e-6, tol_dq=1.0, maxiter=1000)
    assert (fp.nit < 1000).all() and (fp.status == Status.BATCH_STOPPED).all()
    assert (q_linear(U, b, fp.x) > 1e-12).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="adam", adam_stop="any"), "argument 'adam_stop': got 'any', expected one of 'all', 'mean'"),
    (dict(method="adam", adam_schedule=0.95), "argument 'adam_schedule': got 0.95, expected one of"),
    (dict(method="hybrid", adam_stop="mean"), "argument 'adam_stop': got 'mean' with method='hybrid'"),
    (dict(method="lm", adam_schedule="constant"), "argument 'adam_schedule': got 'constant' with method='lm'"),
])
def test_adam_option_errors(kwargs, match):
    params, _, _ = linear_relu(4, 0.5, seed=1)
    with pytest.raises(fastfp.InvalidOptionError, match=match):
        fastfp.find_fixed_points(params, np.ones((2, 4)), **kwargs)


def test_study_q_tolerance_rule():
    params = fastfp.RNNParams.random("gru", 16, 3, seed=3)
    fp = fastfp.find_fixed_points(params, np.full((3, 16), 0.5), tol_q=1e-4, method="lm")
    assert np.isin(fp.status, [Status.Q_TOLERANCE, Status.CONVERGED]).all()
    assert (fp.q <= 1e-4).all()


def test_sample_states():
    traj = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    mask = np.zeros((2, 5), bool)
    mask[0, :2] = True
    s = fastfp.sample_states(traj, 10, mask=mask, seed=0)
    assert s.shape == (10, 3)
    valid = traj[mask]
    assert all(any(np.array_equal(row, v) for v in valid) for row in s)
    a = fastfp.sample_states(traj, 4, noise=0.5, seed=1)
    b = fastfp.sample_states(traj, 4, noise=0.5, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.isin(a, traj).all()


# ------------------------------------------------------------------------------ bad input
@pytest.fixture
def gru():
    return fastfp.RNNParams.random("gru", 8, 2, seed=0)


def test_nonfinite_initial_state(gru):
    h0 = np.zeros((3, 8))
    h0[1, 2] = np.nan
    with pytest.raises(fastfp.NonFiniteError, match="'h0'"):
        fastfp.find_fixed_points(gru, h0)


def test_wrong_input_dimension(gru):
    with pytest.raises(fastfp.ShapeError, match="'x'.*M = 2"):
        fastfp.find_fixed_points(gru, np.zeros((3, 8)), np.zeros(5))


def test_wrong_state_dimension(gru):
    with pytest.raises(fastfp.ShapeError, match="'h0'"):
        fastfp.find_fixed_points(gru, np.zeros((3, 7)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(atol=-1.0), "'atol'"),
        (dict(atol=0.0, rtol=0.0), "'atol' and 'rtol'"),
        (dict(gtol=np.nan), "'gtol'"),
        (dict(maxiter=-3), "'maxiter'"),
        (dict(maxiter=2.5), "'maxiter'"),
        (dict(method="bfgs"), "'method'"),
        (dict(tol_q=0.0), "'tol_q'"),
        (dict(max_step=0), "'max_step'"),
        (dict(dtype=np.int32), "'dtype'"),
        (dict(method="newton", slow_ratio=0.1), "'slow_ratio'"),
        (dict(batch_size=0), "'batch_size'"),
        (dict(backend="tpu"), "'backend'"),
    ],
)
def test_nonsensical_options(gru, kwargs, match):
    with pytest.raises(fastfp.InvalidOptionError, match=match):
        fastfp.find_fixed_points(gru, np.zeros((3, 8)), **kwargs)


def test_request_that_cannot_fit_in_memory(gru):
    with pytest.raises(fastfp.MemoryLimitError, match=r"GiB.*batch_size=\d+"):
        fastfp.find_fixed_points(gru, np.zeros((1000, 8)), memory_limit=100_000)
    with pytest.raises(fastfp.MemoryLimitError, match="even one point"):
        fastfp.find_fixed_points(gru, np.zeros((2, 8)), memory_limit=100)
    # the matrix-free path is suggested: Newton-Krylov, or matrix-free LM in slow-manifold mode
    with pytest.raises(fastfp.MemoryLimitError, match=r"9.31e-05 GiB; pass batch_size=\d+.*jacobian='matrix_free' \(Newton-Krylov"):
        fastfp.find_fixed_points(gru, np.zeros((1000, 8)), memory_limit=100_000)
    with pytest.raises(fastfp.MemoryLimitError, match=r"batch_size=\d+.*jacobian='matrix_free' \(matrix-free LM"):
        fastfp.find_fixed_points(gru, np.zeros((1000, 8)), memory_limit=100_000, slow_ratio=0.05)
    with pytest.raises(fastfp.MemoryLimitError, match="even one point does not fit: raise memory_limit, or use jacobian='matrix_free' \\(matrix-free LM"):
        fastfp.find_fixed_points(gru, np.zeros((2, 8)), memory_limit=100, slow_ratio=0.05, jacobian="dense")
    with pytest.raises(fastfp.MemoryLimitError, match="even one point does not fit: raise memory_limit$"):
        fastfp.find_fixed_points(gru, np.zeros((2, 8)), memory_limit=100, slow_ratio=0.05)  # auto: matrix-free LM
    # and taken, the slow-manifold solve fits where the dense one does not (2 x 4 kB dense, 2 x 2.5 kB)
    fp = fastfp.find_fixed_points(gru, np.zeros((2, 8)), memory_limit=6000, slow_ratio=0.05, jacobian="matrix_free")
    assert fp.metadata["jacobian"] == "matrix_free" and len(fp) == 2


def test_chunked_solve_equals_one_batch(gru):
    h0 = np.random.default_rng(0).uniform(-0.5, 0.5, (40, 8))
    whole = fastfp.find_fixed_points(gru, h0)
    chunked = fastfp.find_fixed_points(gru, h0, batch_size=7)
    np.testing.assert_allclose(chunked.x, whole.x, atol=1e-12)
    auto = fastfp.find_fixed_points(gru, h0, batch_size="auto", memory_limit=40_000)
    np.testing.assert_allclose(auto.x, whole.x, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=0), fastfp.InvalidOptionError, "'n'"),
        (dict(n=3, noise=-1), fastfp.InvalidOptionError, "'noise'"),
        (dict(n=3, mask=np.ones(4, bool)), fastfp.ShapeError, "'mask'"),
        (dict(n=3, mask=np.zeros((2, 5), bool)), fastfp.InvalidOptionError, "'mask'"),
    ],
)
def test_sample_states_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastfp.sample_states(np.zeros((2, 5, 3)), **kwargs)


# ------------------------------------------------------------------------------ trained classifiers
@pytest.fixture(scope="module", params=["gru64_cat3", "lstm32_cat3"])
def trained(request):
    import pathlib

    model = fastfp.load_params(pathlib.Path(__file__).parent / "data" / f"{request.param}.npz")
    params = model.params.astype(np.float64)
    data = fastfp.tasks.categorical(48, n_classes=3, seed=77)
    traj = fastfp.rollout(params, None, data.one_hot(np.float64), lengths=data.lengths)
    h0 = fastfp.sample_states(traj, 256, noise=0.5, seed=1)
    return request.param, model, params, h0


def test_trained_classifier_exact_roots(trained):
    name, model, params, h0 = trained
    x = np.zeros(params.input_size)
    fp = fastfp.find_fixed_points(params, h0, x)
    assert fp.success.mean() >= 0.95, np.bincount(fp.status)
    assert (_reference_residual(params, fp.x[fp.success], fp.inputs[fp.success]) <= 1e-10).all()
    roots = fp[fp.success].unique(1e-3).decompose(params)
    # A 3-class integrator has few isolated roots (the anchors saw 7): stable corners and saddles.
    assert 3 <= len(roots) <= 15
    assert roots.is_stable.sum() >= 3
    # Each stable root sits in a different class region of the readout.
    stable = roots[roots.is_stable]
    assert len(set(np.argmax(model.logits(stable.x), axis=1))) == 3


def test_trained_classifier_slow_manifold_is_two_dimensional(trained):
    """Claim 2 of the study: 3 classes -> a 2-D attractor manifold (participation ratio ~2)."""
    name, model, params, h0 = trained
    fp = fastfp.find_fixed_points(params, h0, np.zeros(params.input_size), slow_ratio=0.05, slow_speed=1e-3)
    kept = fp[fp.success | fp.is_slow_point]
    assert len(kept) >= 0.6 * len(fp), np.bincount(fp.status)
    X = kept.x - kept.x.mean(axis=0)
    v = np.linalg.svd(X, compute_uv=False) ** 2
    v /= v.sum()
    pr = v.sum() ** 2 / (v ** 2).sum()
    assert 1.6 <= pr <= 2.5, (pr, v[:4])
    assert v[:2].sum() >= 0.9


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_float32_slow_points_are_not_reported_diverged(trained, backend):
    """At the neutral word the trained classifiers have a plane of slow points. In float32 the LM
    damping runs out at them with ||grad q|| / ||r|| ~ 1e-5..1e-3, rounding noise of float32
    (a fixed 1e-6 threshold called them DIVERGED); each must be a stationary point of q when
    re-checked in float64 by the reference Jacobian."""
    name, model, params, h0 = trained
    x = model.inputs(np.array([model.vocab.index("the")]))[0].astype(np.float64)
    f64 = fastfp.find_fixed_points(params, h0, x)
    f32 = fastfp.find_fixed_points(params, h0, x, dtype=np.float32, backend=backend)
    assert f64.is_slow_point.sum() >= 50, f64  # the case exercises the stalled-LM path
    assert not (f32.status == Status.DIVERGED).any(), f32
    slow = f32.is_slow_point
    assert slow.sum() >= 0.8 * f64.is_slow_point.sum(), (f32, f64)
    h = f32.x[slow].astype(np.float64)
    xi = np.broadcast_to(x, (len(h), len(x)))
    r = fastfp.step(params, h, xi, backend="numpy") - h
    A = fastfp.jacobian(params, h, xi, backend="numpy") - np.eye(params.state_size)
    g = np.einsum("bij,bi->bj", A, r)
    ratio = np.abs(g).max(axis=1) / np.abs(r).max(axis=1)
    assert ratio.max() <= 3e-3, np.sort(ratio)[-5:]
    # the float64 search from the same starts stops about as slow
    assert np.abs(r).max(axis=1).max() <= 1.5 * f64.residual[f64.is_slow_point].max()


@pytest.mark.parametrize("method", ["hybrid", "adam"])
def test_progress_callable_counts_finished_points(method):
    """progress=callable gets (n_done, n_total): non-decreasing, over every chunk, ending full."""
    params = fastfp.RNNParams.random("gru", hidden_size=6, input_size=2, seed=3)
    h0 = 0.5 * np.random.default_rng(0).standard_normal((20, 6))
    calls = []
    fp = fastfp.find_fixed_points(params, h0, method=method, batch_size=7, maxiter=200 if method == "adam" else None,
                                  progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {20} and done == sorted(done) and calls[-1] == (20, 20)
    assert {7, 14} <= set(done)  # each chunk's end is reported
    if method == "hybrid":
        assert len(calls) > 3 and fp.success.all()  # per-iteration updates inside the chunks too


def test_progress_must_be_bool_or_callable():
    params = fastfp.RNNParams.random("gru", hidden_size=3, input_size=1, seed=0)
    with pytest.raises(fastfp.InvalidOptionError, match="'progress'"):
        fastfp.find_fixed_points(params, np.zeros((2, 3)), progress="yes")


# ------------------------------------------------------------------ speed units of the slow test
def test_uniform_speed_scale_is_a_scaled_slow_speed():
    params, v, P = _line_attractor(0.999)
    h0 = np.random.default_rng(1).uniform(0.2, 1.0, (30, 6))
    scaled = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=3e-4, speed_scale=np.full(6, 4.0))
    plain = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=1.2e-3)
    np.testing.assert_array_equal(scaled.status, plain.status)
    np.testing.assert_allclose(scaled.x, plain.x, rtol=0, atol=1e-12)
    assert scaled.metadata["speed_scale"] == [4.0] * 6 and plain.metadata["speed_scale"] is None


def test_speed_scale_per_coordinate_decides_which_points_are_slow():
    # On the slow line (lambda = 0.999) the remaining speed of a settled point h is
    # (1 - 0.999) |(P h)_i| per coordinate, and slow-manifold mode barely moves h along the line,
    # so a point is slow exactly when max_i 1e-3 |(P h0)_i| / s_i is below the limit.
    params, v, P = _line_attractor(0.999)
    h0 = np.random.default_rng(1).uniform(0.2, 1.0, (200, 6))
    scale = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    limit = 6e-4
    fp = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=limit, speed_scale=scale)
    expected = (1e-3 * np.abs(h0 @ P) / scale).max(axis=1)
    slow = fp.status == Status.SLOW_POINT
    clear_in, clear_out = expected < 0.9 * limit, expected > 1.1 * limit
    assert clear_in.sum() > 20 and clear_out.sum() > 20  # the scale splits this set
    assert slow[clear_in].all() and not slow[clear_out].any()
    # the same limit without the scale: fewer slow points (the scale only loosens here)
    unscaled = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=limit)
    assert (unscaled.status == Status.SLOW_POINT).sum() < slow.sum()
    # residual stays the unscaled ||F(h) - h||_inf, re-evaluated by the reference
    np.testing.assert_allclose(fp.residual, _reference_residual(params, fp.x, fp.inputs), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad, match", [
    (np.ones(5), r"expected \(6,\)"),
    (np.array([1, 1, 1, 0, 1, 1.0]), "0.0 at index 3, expected units > 0"),
    (np.array([1, 1, 1, np.inf, 1, 1.0]), "NaN or Inf"),
    (2.0, r"expected \(6,\)"),
])
def test_speed_scale_rejects_bad_units(bad, match):
    params, _, _ = _line_attractor(0.999)
    with pytest.raises(fastfp.FastFPError, match="speed_scale"):
        fastfp.find_fixed_points(params, np.ones((2, 6)), slow_ratio=0.05, speed_scale=bad)
    with pytest.raises(fastfp.FastFPError, match=match):
        fastfp.find_fixed_points(params, np.ones((2, 6)), slow_ratio=0.05, speed_scale=bad)


def test_speed_scale_needs_slow_manifold_mode():
    params, _, _ = _line_attractor(0.999)
    with pytest.raises(fastfp.InvalidOptionError, match="speed_scale.*slow_ratio"):
        fastfp.find_fixed_points(params, np.ones((2, 6)), speed_scale=np.ones(6))


def test_part_speed_scale_units_each_part_by_its_spread():
    params = fastfp.RNNParams.random("lstm", 4, 2, seed=0)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 4)) * np.array([0.1, 0.2, 0.3, 0.4])
    c = 3.0 * h[:, ::-1] + 7.0  # every coordinate of c spreads 3x a coordinate of h
    scale = fastfp.part_speed_scale(params, np.concatenate([h, c], axis=1))
    np.testing.assert_allclose(scale, [1, 1, 1, 1, 3, 3, 3, 3], rtol=1e-12)
    gru = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    np.testing.assert_array_equal(fastfp.part_speed_scale(gru, h), np.ones(4))
    with pytest.raises(fastfp.ShapeError, match="'states'.*8"):
        fastfp.part_speed_scale(params, h)
    with pytest.raises(fastfp.InvalidOptionError, match="'states'.*the same in every state"):
        fastfp.part_speed_scale(params, np.full((5, 8), 0.1))  # std of a constant column: ~1e-17, not 0
    # a constant c keeps unit 1, not a unit made of rounding noise
    np.testing.assert_array_equal(fastfp.part_speed_scale(params, np.concatenate([h, np.full((500, 4), 0.1)], 1)),
                                  np.ones(8))
    np.testing.assert_array_equal(fastfp.part_speed_scale(gru, np.full((5, 4), 0.1)), np.ones(4))
    with pytest.raises(fastfp.ShapeError, match="2 or more states"):
        fastfp.part_speed_scale(params, np.ones((1, 8)))
    # (B, T, N) trajectories, as rollout returns them, are the same states
    hc = np.concatenate([h, c], axis=1)
    np.testing.assert_array_equal(fastfp.part_speed_scale(params, hc.reshape(50, 10, 8)),
                                  fastfp.part_speed_scale(params, hc))
    with pytest.raises(fastfp.NonFiniteError, match="'states'"):
        fastfp.part_speed_scale(params, np.concatenate([h, c], axis=1) * np.array([np.nan] + [1.0] * 7))



def test_finite_values_beyond_float32_are_named_not_called_nan():
    params = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    h0 = np.zeros((2, 4))
    h0[1, 2] = 1e39
    with pytest.raises(fastfp.DTypeError, match=r"'h0': holds 1e\+39 \(at index \(1, 2\)\), beyond float32's largest 3.4e\+38"):
        fastfp.find_fixed_points(params, h0, dtype=np.float32)
    # NaN stays what it is
    h0[1, 2] = np.nan
    with pytest.raises(fastfp.NonFiniteError, match="'h0': holds NaN or Inf"):
        fastfp.find_fixed_points(params, h0, dtype=np.float32)
