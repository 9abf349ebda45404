"""Matrix-free Levenberg-Marquardt (``fastfp._lm_krylov``) and its batched CG, against independent
truth: dense linear solves, a closed-form root, the reference cells re-checking every slow point,
and the dense LM on the same starts."""

import numpy as np
import pytest

import fastfp
from fastfp import Status
from fastfp._krylov import batched_cg
from support import linear_relu

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_batched_cg_solves_spd_systems_like_a_dense_solve():
    rng = np.random.default_rng(0)
    B, N = 9, 24
    Q = np.linalg.qr(rng.standard_normal((B, N, N)))[0]
    spectra = np.geomspace(1e-3, 1.0, N)[None, :] * rng.uniform(0.5, 2.0, (B, 1))  # condition numbers ~1e3
    A = np.einsum("bij,bj,bkj->bik", Q, spectra, Q)
    A[5:] = np.eye(N)  # four systems CG solves in one step: the working set shrinks after it
    b = rng.standard_normal((B, N))
    b[3] = 0.0
    calls = []

    def matvec(idx, V):
        calls.append(len(idx))
        return np.einsum("bij,bj->bi", A[idx], V)

    sol = batched_cg(matvec, b, rtol=1e-10, maxiter=500)
    exact = np.linalg.solve(A, b[:, :, None])[:, :, 0]
    assert sol.converged.all()
    np.testing.assert_allclose(sol.x, exact, rtol=1e-6, atol=1e-8)
    assert (sol.x[3] == 0).all() and sol.nit[3] == 0
    assert (sol.nit[5:] == 1).all() and max(sol.nit) <= 500
    assert calls[0] == B - 1 and calls[-1] < calls[0] // 2 + 1  # finished points leave the working set
    short = batched_cg(matvec, b, rtol=1e-10, maxiter=3)
    assert not short.converged[:5][np.arange(5) != 3].any() and (short.nit <= 3).all()


def test_preconditioned_cg_solves_the_same_systems_in_fewer_iterations():
    rng = np.random.default_rng(3)
    B, N = 6, 30
    Q = np.linalg.qr(rng.standard_normal((B, N, N)))[0]
    spectra = np.geomspace(1e-3, 1.0, N)[None, :] * rng.uniform(0.5, 2.0, (B, 1))
    A = np.einsum("bij,bj,bkj->bik", Q, spectra, Q)
    b = rng.standard_normal((B, N))
    b[2] = 0.0
    exact = np.linalg.solve(A, b[:, :, None])[:, :, 0]

    def matvec(idx, V):
        return np.einsum("bij,bj->bi", A[idx], V)

    plain = batched_cg(matvec, b, rtol=1e-10, maxiter=500)
    # The inverse of a nearby SPD matrix (each eigenvalue off by up to 30%): what a preconditioner
    # from a neighbouring point gives.
    near = np.einsum("bij,bj,bkj->bik", Q, spectra * rng.uniform(0.7, 1.3, (B, N)), Q)
    M_inv = np.linalg.inv(near)
    pre = batched_cg(matvec, b, rtol=1e-10, maxiter=500, precond=lambda idx, R: np.einsum("bij,bj->bi", M_inv[idx], R))
    assert plain.converged.all() and pre.converged.all()
    np.testing.assert_allclose(pre.x, exact, rtol=1e-6, atol=1e-8)
    assert (pre.x[2] == 0).all() and pre.nit[2] == 0
    live = np.arange(B) != 2
    assert (pre.nit[live] < plain.nit[live] // 2).all(), (pre.nit, plain.nit)
    # the exact inverse: one step
    one = batched_cg(matvec, b, rtol=1e-8, maxiter=500,
                     precond=lambda idx, R: np.linalg.solve(A[idx], R[:, :, None])[:, :, 0])
    assert (one.nit[live] == 1).all() and one.converged.all()


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_matrix_free_lm_finds_the_closed_form_root(backend):
    params, U, b = linear_relu(8, 0.8, seed=1)
    h_star = np.linalg.solve(np.eye(8) - U, b)
    h0 = np.random.default_rng(2).uniform(0.1, 2.0, (16, 8))
    fp = fastfp.find_fixed_points(params, h0, method="lm", jacobian="matrix_free", backend=backend)
    assert fp.metadata["jacobian"] == "matrix_free" and fp.success.all(), fp.status
    np.testing.assert_allclose(fp.x, np.broadcast_to(h_star, fp.x.shape), atol=1e-9)


def _trained(name, B=96):
    m = fastfp.load(DATA / name)
    p = m.params.astype(np.float64)
    d = fastfp.tasks.categorical(48, n_classes=3, length=50, seed=0)
    traj = fastfp.rollout(p, None, m.inputs(d.tokens).astype(np.float64), lengths=d.lengths)
    h0 = fastfp.sample_states(traj, B, mask=d.mask(), seed=0)
    return p, h0, m.inputs(np.array([m.vocab.index("the")]))[0].astype(np.float64)


@pytest.mark.parametrize("name", ["gru64_cat3.npz", "lstm32_cat3.npz"])
def test_matrix_free_slow_manifold_matches_dense_and_the_reference(name):
    p, h0, x = _trained(name)
    kw = dict(slow_ratio=0.05, slow_speed=1e-2)
    mf = fastfp.find_fixed_points(p, h0, x, jacobian="matrix_free", **kw)
    dense = fastfp.find_fixed_points(p, h0, x, jacobian="dense", **kw)
    assert mf.metadata["jacobian"] == "matrix_free" and mf.metadata["n_matvec"] > 0
    assert (mf.status == dense.status).mean() >= 0.95, (np.bincount(mf.status), np.bincount(dense.status))
    # Every slow point, re-checked by the float64 reference cells: below the speed limit and moving
    # along slow directions (||grad q||_2 <= slow_ratio ||r||_2), or q stationary.
    slow = mf[mf.status == Status.SLOW_POINT]
    assert len(slow) >= 0.8 * len(mf)
    r = fastfp.step(p, slow.x, x, backend="numpy") - slow.x
    J = fastfp.jacobian(p, slow.x, x, backend="numpy")
    g = np.einsum("bij,bi->bj", J - np.eye(p.state_size), r)
    along = np.linalg.norm(g, axis=1) <= 0.05 * np.linalg.norm(r, axis=1) * (1 + 1e-9)
    assert ((along & (np.abs(r).max(axis=1) <= 1e-2 * (1 + 1e-9))) | (np.abs(g).max(axis=1) <= 1e-10)).all()
    pr = [fastfp.analysis.manifold_dimension(f[f.on_slow_manifold(1e-2)]).participation_ratio for f in (mf, dense)]
    assert abs(pr[0] - pr[1]) < 0.02, pr


def test_preconditioned_lm_finds_the_slow_points_of_the_plain_one_with_fewer_products(monkeypatch):
    from fastfp import solvers

    p, h0, x = _trained("gru64_cat3.npz", B=4 * solvers.PILOT_POINTS)
    kw = dict(slow_ratio=0.05, slow_speed=1e-2, jacobian="matrix_free")
    pre = fastfp.find_fixed_points(p, h0, x, **kw)
    assert pre.metadata["preconditioner_points"] >= 1 and pre.metadata["pilot_matvec"] > 0
    monkeypatch.setattr(solvers, "_lm_preconditioner", lambda *a, **k: (None, 0))
    plain = fastfp.find_fixed_points(p, h0, x, **kw)
    assert plain.metadata["preconditioner_points"] == 0
    assert (pre.status == plain.status).mean() >= 0.95
    slow = pre[pre.status == Status.SLOW_POINT]
    assert len(slow) >= 0.9 * len(pre)
    r = fastfp.step(p, slow.x, x, backend="numpy") - slow.x  # the reference cells' speed
    assert (np.abs(r).max(axis=1) <= 1e-2 * (1 + 1e-9)).all()
    # The same plane of slow points: inexact CG steps end each search elsewhere on it.
    pr = [fastfp.analysis.manifold_dimension(f[f.status == Status.SLOW_POINT].x).participation_ratio
          for f in (pre, plain)]
    assert abs(pr[0] - pr[1]) < 0.02, pr
    assert np.median(np.abs(pre.x - plain.x).max(axis=1)) < 1e-2
    # Measured on these 128 starts: 4.9k products after the pilot's 2.8k, against 19.2k without.
    assert pre.metadata["n_matvec"] < 0.5 * plain.metadata["n_matvec"], (pre.metadata["n_matvec"],
                                                                         plain.metadata["n_matvec"])


def test_preconditioned_lm_finds_a_closed_form_root_with_units_off():
    # relu(U h + b) with three units held off (b very negative) at the root: h* is 0 there and
    # (I - U_AA)^-1 b_A on the others. The damping floor is 0 (method 'lm', no slow_ratio), so
    # the preconditioner's damping is the dense LM's first; the starts put the off units above
    # the lower bound, where the projected step presses them against it (measured: 435 pinned
    # coordinates over the CG solves).
    from fastfp import solvers

    N, off = 10, [2, 5, 7]
    rng = np.random.default_rng(4)
    U = rng.uniform(-0.2, 0.4, (N, N))
    on = np.setdiff1d(np.arange(N), off)
    U *= 0.8 / np.max(np.abs(np.linalg.eigvals(U[np.ix_(on, on)])))
    b = rng.uniform(0.5, 1.0, N)
    b[off] = -20.0
    h_star = np.zeros(N)
    h_star[on] = np.linalg.solve(np.eye(len(on)) - U[np.ix_(on, on)], b[on])
    assert (h_star[on] > 0).all() and (U @ h_star + b)[off].max() < 0
    params = fastfp.RNNParams("vanilla", np.zeros((N, 1)), U, b, np.zeros(N), nonlinearity="relu")
    h0 = h_star + rng.uniform(-0.3, 0.3, (4 * solvers.PILOT_POINTS, N))
    h0[:, off] = rng.uniform(0.0, 1.0, (len(h0), len(off)))
    fp = fastfp.find_fixed_points(params, h0, method="lm", jacobian="matrix_free")
    assert fp.metadata["preconditioner_points"] >= 1
    assert fp.success.all(), np.bincount(fp.status)
    np.testing.assert_allclose(fp.x, np.broadcast_to(h_star, fp.x.shape), atol=1e-9)


def test_auto_takes_the_matrix_free_lm_from_its_size_on():
    from fastfp.solvers import MATRIX_FREE_LM_MIN_N

    for N, expected in ((MATRIX_FREE_LM_MIN_N, "matrix_free"), (MATRIX_FREE_LM_MIN_N // 2, "dense")):
        p = fastfp.RNNParams.random("gru", hidden_size=N, input_size=2, seed=0)
        for kw in (dict(slow_ratio=0.05), dict(method="lm")):
            assert fastfp.find_fixed_points(p, np.zeros((2, N)), maxiter=2, **kw).metadata["jacobian"] == expected


def test_lm_krylov_with_device_composition_matches_cpu_path():
    """The GPU backend's composition (DeviceCells on NumPy with the CUDA kernels' NumPy twins) runs
    the same matrix-free LM as the CPU path."""
    from fastfp._cells_gpu import DeviceCells, HostOps
    from fastfp._lm_krylov import lm_krylov
    from fastfp.solvers import state_bounds

    p, h0, x = _trained("gru64_cat3.npz", B=24)
    w = p.arrays(np.float64)
    dev = DeviceCells(np, HostOps())
    cpu = fastfp.find_fixed_points(p, h0, x, jacobian="matrix_free", slow_ratio=0.05, slow_speed=1e-2)
    opts = dict(cpu.metadata)  # the solver's options, as find_fixed_points resolved them
    h, status, nit, _ = lm_krylov(lambda hh, Xr: dev.step(p.cell_code, 0, hh, Xr, *w), w, p.cell_code, 0, h0,
                                  x[None], state_bounds(p), opts, linearize_fn=dev.linearize)
    np.testing.assert_array_equal(status, cpu.status)
    np.testing.assert_array_equal(nit, cpu.nit)
    np.testing.assert_allclose(h, cpu.x, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not fastfp.backends.gpu_available(), reason="needs a CUDA GPU and cupy")
def test_gpu_slow_manifold_matches_cpu():
    p, h0, x = _trained("gru64_cat3.npz", B=64)
    kw = dict(slow_ratio=0.05, slow_speed=1e-2, jacobian="matrix_free")
    gpu = fastfp.find_fixed_points(p, h0, x, backend="gpu", **kw)
    cpu = fastfp.find_fixed_points(p, h0, x, **kw)
    assert (gpu.status == cpu.status).mean() >= 0.95
    np.testing.assert_allclose(np.median(np.abs(gpu.x - cpu.x)), 0.0, atol=1e-6)


def test_auto_retries_dense_where_the_matrix_free_lm_stopped_short(monkeypatch):
    """'auto' (N <= 1024): points the matrix-free LM leaves at max iterations are solved again by
    the dense LM; in slow-manifold mode a slow point counts as done. Stubbing the matrix-free
    solve to stop every point at once, the result is the dense solve's."""
    from fastfp import _lm_krylov, solvers

    p, h0, x = _trained("gru64_cat3.npz", B=6)  # a plane attractor: dense LM ends at slow points
    monkeypatch.setattr(solvers, "MATRIX_FREE_LM_MIN_N", 64)  # 'auto' takes the matrix-free LM at N = 64

    def stopped(step, params_arrays, cell, act, H0, X, bounds, opts, **kw):
        B = H0.shape[0]
        return H0.copy(), np.full(B, Status.MAX_ITER), np.zeros(B, np.int64), np.zeros(B, np.int64)

    monkeypatch.setattr(_lm_krylov, "lm_krylov", stopped)
    auto = fastfp.find_fixed_points(p, h0, x, slow_ratio=0.05)
    dense = fastfp.find_fixed_points(p, h0, x, slow_ratio=0.05, jacobian="dense")
    assert auto.metadata["jacobian"] == "matrix_free" and auto.metadata["dense_retries"] == 6
    took = dense.status == Status.SLOW_POINT
    assert took.any()
    np.testing.assert_array_equal(auto.status[took], dense.status[took])  # replaced by the dense result
    np.testing.assert_allclose(auto.x[took], dense.x[took], atol=1e-12)
    assert (auto.status[~took] == Status.MAX_ITER).all()  # the others keep the first attempt's
    np.testing.assert_array_equal(auto.x[~took], np.clip(h0[~took], -1, 1))
