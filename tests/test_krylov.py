"""Matrix-free path: linearisation, batched GMRES, batched Krylov-Schur eigs, Newton-Krylov.

Oracles: the NumPy reference JVP/VJP and dense Jacobians (``_cells_ref``), ``numpy.linalg.solve``
and ``numpy.linalg.eig`` on the same matrices, and the dense Newton solver's roots.
"""

import numpy as np
import pytest

import fastfp
from fastfp import _cells_ref as ref
from fastfp._krylov import batched_eigs, batched_gmres
from fastfp._linearize import linearize, linearize_cpu
from fastfp.errors import InvalidOptionError, MemoryLimitError, ShapeError
from fastfp.spectra import top_eigs

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")

CELLS = ["vanilla", "gru", "gru_reset_before", "ugrnn", "lstm"]


def _matvec(A):
    return lambda idx, V: np.einsum("bij,bj->bi", A[idx], V)


def _assert_top_eigenvalues(found, dense, atol):
    """found (B, k) are the k largest-|lambda| eigenvalues among dense (B, N): the magnitudes agree
    in order and each found value is an eigenvalue (a conjugate pair may be cut at k either way)."""
    k = found.shape[1]
    mags = -np.sort(-np.abs(dense), axis=1)[:, :k]
    np.testing.assert_allclose(-np.sort(-np.abs(found), axis=1), mags, atol=atol)
    dist = np.abs(found[:, :, None] - dense[:, None, :]).min(axis=2)
    assert dist.max() < atol


# ----------------------------------------------------------------------------- linearisation
@pytest.mark.parametrize("make", [linearize, linearize_cpu], ids=["ref", "cpu"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shared_input", [True, False])
def test_linearization_matches_reference_jvp_vjp(cell, shared_input, make):
    rng = np.random.default_rng(3)
    p = fastfp.RNNParams.random(cell, hidden_size=9, input_size=4, seed=2, nonlinearity="tanh")
    w = p.arrays(np.float64)
    B, N = 6, p.state_size
    h = rng.standard_normal((B, N)) * 0.7
    x = rng.standard_normal((1 if shared_input else B, 4))
    v, u = rng.standard_normal((2, B, N))
    lin = make(p.cell_code, p.nonlinearity_code, h, x, *w)
    J = ref.jacobian_ref(p.cell_code, p.nonlinearity_code, h, x, *w)
    np.testing.assert_allclose(lin.jvp(v), np.einsum("bij,bj->bi", J, v), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lin.vjp(u), np.einsum("bi,bij->bj", u, J), rtol=1e-12, atol=1e-13)
    sub = lin.take(np.array([4, 1]))
    np.testing.assert_allclose(sub.jvp(v[[4, 1]]), np.einsum("bij,bj->bi", J[[4, 1]], v[[4, 1]]), atol=1e-13)


@pytest.mark.parametrize("make", [linearize, linearize_cpu], ids=["ref", "cpu"])
def test_linearization_relu(make):
    p = fastfp.RNNParams.random("vanilla", hidden_size=8, input_size=3, seed=1, nonlinearity="relu")
    w = p.arrays(np.float64)
    rng = np.random.default_rng(0)
    h, x, v = rng.standard_normal((4, 8)), rng.standard_normal((1, 3)), rng.standard_normal((4, 8))
    lin = make(p.cell_code, p.nonlinearity_code, h, x, *w)
    J = ref.jacobian_ref(p.cell_code, p.nonlinearity_code, h, x, *w)
    np.testing.assert_allclose(lin.jvp(v), np.einsum("bij,bj->bi", J, v), atol=1e-13)


# ----------------------------------------------------------------------------- GMRES
@pytest.fixture(params=[False, True], ids=["rotation-loop", "rotation-matrix"])
def rotations(request, monkeypatch):
    """GMRES's Givens rotations one by one (the host's way) or as one matrix (the device's)."""
    import fastfp._krylov as krylov

    monkeypatch.setattr(krylov, "_DENSE_ROTATIONS", request.param)
    return request.param


def test_gmres_rotation_forms_take_the_same_steps(monkeypatch):
    # 40 systems of mixed difficulty: points stop at different columns, the block is compacted
    # mid-cycle and restarted; both forms of the rotations give the same iterates to rounding.
    import fastfp._krylov as krylov

    rng = np.random.default_rng(5)
    B, N = 40, 50
    spread = np.linspace(0.2, 3.0, B)[:, None, None]
    A = 2 * np.eye(N) + spread * rng.standard_normal((B, N, N)) / np.sqrt(N)
    b = rng.standard_normal((B, N))
    out = {}
    for dense in (False, True):
        monkeypatch.setattr(krylov, "_DENSE_ROTATIONS", dense)
        out[dense] = batched_gmres(_matvec(A), b, rtol=1e-10, restart=12, maxiter=600)
    np.testing.assert_array_equal(out[True].nit, out[False].nit)
    assert len(np.unique(out[False].nit)) > 5  # the points did stop at different columns
    np.testing.assert_allclose(out[True].x, out[False].x, rtol=1e-9, atol=1e-11)
    truth = np.linalg.solve(A, b[..., None])[..., 0]
    np.testing.assert_allclose(out[True].x[out[True].converged], truth[out[True].converged], atol=1e-8)


def test_gmres_solves_batched_systems_with_restarts(rotations):
    rng = np.random.default_rng(0)
    B, N = 7, 60
    A = 2 * np.eye(N) + rng.standard_normal((B, N, N)) / np.sqrt(N)
    b = rng.standard_normal((B, N))
    res = batched_gmres(_matvec(A), b, rtol=1e-12, restart=8, maxiter=2000)
    truth = np.linalg.solve(A, b[..., None])[..., 0]
    assert res.converged.all()
    np.testing.assert_allclose(res.x, truth, atol=1e-10)
    # The reported residual is the true one, recomputed.
    np.testing.assert_allclose(res.residual, np.linalg.norm(b - np.einsum("bij,bj->bi", A, res.x), axis=1), rtol=1e-6)
    assert (res.nit > 8).all()  # restarted at least once


def test_gmres_per_point_stopping_and_x0(rotations):
    rng = np.random.default_rng(1)
    N = 30
    easy = np.eye(N) * 3.0  # one iteration: the Krylov space is invariant (happy breakdown)
    hard = 2 * np.eye(N) + rng.standard_normal((N, N)) / np.sqrt(N)
    A = np.stack([easy, hard])
    b = rng.standard_normal((2, N))
    res = batched_gmres(_matvec(A), b, rtol=1e-11, restart=40)
    assert res.converged.all()
    assert res.nit[0] == 1 and res.nit[1] > 5
    np.testing.assert_allclose(res.x[0], b[0] / 3.0, rtol=1e-12)
    # Starting at the solution costs nothing.
    again = batched_gmres(_matvec(A), b, x0=res.x, rtol=1e-6, restart=40)
    assert (again.nit == 0).all()


def test_gmres_reports_non_convergence_at_maxiter(rotations):
    rng = np.random.default_rng(2)
    N = 80
    A = (np.eye(N) + 3 * rng.standard_normal((N, N)) / np.sqrt(N))[None]
    b = rng.standard_normal((1, N))
    res = batched_gmres(_matvec(A), b, rtol=1e-14, restart=5, maxiter=10)
    assert not res.converged[0]
    assert res.nit[0] == 10
    assert res.residual[0] < np.linalg.norm(b)  # GMRES never increases the residual


# ----------------------------------------------------------------------------- eigs
@pytest.mark.parametrize("k", [1, 4, 9])
def test_eigs_random_matrices_match_dense_eig(k):
    rng = np.random.default_rng(k)
    B, N = 5, 70
    A = rng.standard_normal((B, N, N)) / np.sqrt(N) + 0.3 * np.eye(N)
    res = batched_eigs(_matvec(A), B, N, k, tol=1e-11)
    assert res.converged.all()
    dense = np.linalg.eigvals(A)
    dense = np.take_along_axis(dense, np.argsort(-np.abs(dense), axis=1), axis=1)[:, :k]
    np.testing.assert_allclose(np.abs(res.eigvals), np.abs(dense), atol=1e-9)
    # Every returned pair is an eigenpair of A, checked independently of the method's estimate.
    V = np.asarray(res.vectors)
    resid = np.einsum("bij,bjk->bik", A, V) - V * res.eigvals[:, None, :]
    assert np.abs(resid).max() < 1e-8
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=1e-12)


def test_eigs_rejects_bad_krylov_dimension():
    A = np.eye(5)[None]
    with pytest.raises(ValueError, match="ncv"):
        batched_eigs(_matvec(A), 1, 5, 4, ncv=4)


@pytest.mark.parametrize("cell", ["gru", "lstm", "ugrnn"])
def test_top_eigs_match_dense_decomposition(cell):
    p = fastfp.RNNParams.random(cell, hidden_size=24, input_size=3, scale=2.5 / np.sqrt(24), seed=4)
    rng = np.random.default_rng(5)
    h = rng.uniform(-0.8, 0.8, size=(6, p.state_size))
    te = top_eigs(p, h, k=6, left=True, tol=1e-12)
    J = fastfp.jacobian(p, h, np.zeros(3), backend="numpy")
    dense = np.linalg.eigvals(J)
    assert te.converged.all()
    # Compare as multisets per point (conjugate pairs may come in either order).
    _assert_top_eigenvalues(te.eigvals, dense, 1e-9)
    Rv, Lv, lam = te.right, te.left, te.eigvals
    assert np.abs(np.einsum("bij,bjk->bik", J, Rv) - Rv * lam[:, None, :]).max() < 1e-9
    assert np.abs(np.einsum("bji,bjk->bik", J, Lv) - Lv * lam[:, None, :]).max() < 1e-7
    np.testing.assert_allclose(np.einsum("bnk,bnk->bk", Lv, Rv), 1.0, atol=1e-10)
    assert te.time_constants.shape == (6, 6)


def test_top_eigs_errors():
    p = fastfp.RNNParams.random("gru", hidden_size=5, input_size=2, seed=0)
    h = np.zeros((2, 5))
    with pytest.raises(InvalidOptionError, match="'k'"):
        top_eigs(p, h, k=5)
    with pytest.raises(InvalidOptionError, match="'ncv'"):
        top_eigs(p, h, k=2, ncv=2)
    with pytest.raises(InvalidOptionError, match="'tol'"):
        top_eigs(p, h, k=2, tol=-1.0)
    with pytest.raises(InvalidOptionError, match="'maxiter'"):
        top_eigs(p, h, k=2, maxiter=0)
    with pytest.raises(ShapeError, match="'h'"):
        top_eigs(p, np.zeros((2, 4)), k=2)
    with pytest.raises(fastfp.NonFiniteError, match="'h'"):
        top_eigs(p, np.full((1, 5), np.nan), k=2)


def test_decompose_top_k_matches_dense():
    p = fastfp.RNNParams.random("gru", hidden_size=20, input_size=3, scale=3.0 / np.sqrt(20), seed=7)
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (16, 20))
    fp = fastfp.find_fixed_points(p, h0)
    fp = fp[fp.success]
    full = fp.decompose(p)
    top = fp.decompose(p, k=5)
    assert top.jacobian is None and top.eigvals.shape == (len(fp), 5)
    assert top.eigvecs_right.shape == (len(fp), 20, 5)
    _assert_top_eigenvalues(top.eigvals, full.eigvals, 1e-9)
    np.testing.assert_allclose(top.input_jacobian, full.input_jacobian, atol=1e-13)
    assert (top.is_stable == full.is_stable).all()
    empty = fp[np.zeros(len(fp), bool)].decompose(p, k=5)
    assert empty.eigvals.shape == (0, 5)


# ----------------------------------------------------------------------------- Newton-Krylov
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("method", ["newton", "hybrid"])
def test_newton_krylov_finds_the_dense_roots(cell, method):
    p = fastfp.RNNParams.random(cell, hidden_size=12, input_size=3, scale=2.0 / np.sqrt(12), seed=11)
    rng = np.random.default_rng(0)
    h0 = rng.uniform(-0.9, 0.9, (40, p.state_size))
    x = rng.standard_normal(3) * 0.3
    mf = fastfp.find_fixed_points(p, h0, x, method=method, jacobian="matrix_free")
    dense = fastfp.find_fixed_points(p, h0, x, method=method, jacobian="dense")
    assert mf.metadata["jacobian"] == "matrix_free" and dense.metadata["jacobian"] == "dense"
    assert mf.metadata["n_matvec"] > 0
    # Random cells with gain 2 have far starts that no Newton variant brings home (dense Newton
    # converges 36/40 on ugrnn, dense hybrid 21/40); most must converge.
    assert mf.success.mean() >= 0.8
    # Independent truth: re-evaluate F with the NumPy reference in float64.
    r = fastfp.step(p, mf.x[mf.success], x, backend="numpy") - mf.x[mf.success]
    assert np.abs(r).max() <= 1e-10
    # Every matrix-free root is one of the dense solver's roots (the set of roots, not the pairing).
    roots = dense[dense.success].unique(1e-6).x
    d = np.linalg.norm(mf.x[mf.success][:, None, :] - roots[None], axis=2).min(axis=1)
    assert d.max() < 1e-6


def test_newton_krylov_linear_rnn_closed_form():
    # relu vanilla with positive pre-activations is linear: h* = (I - W)^-1 (W_ih x + b).
    rng = np.random.default_rng(4)
    N, M = 15, 2
    W = rng.uniform(0, 1, (N, N)) / (2 * N)
    w_ih = rng.uniform(0, 1, (N, M))
    b = rng.uniform(0.5, 1, N)
    p = fastfp.RNNParams("vanilla", w_ih, W, b, np.zeros(N), nonlinearity="relu")
    x = np.array([0.3, 0.1])
    fp = fastfp.find_fixed_points(p, rng.uniform(0, 2, (5, N)), x, method="newton", jacobian="matrix_free")
    truth = np.linalg.solve(np.eye(N) - W, w_ih @ x + b)
    assert fp.success.all()
    np.testing.assert_allclose(fp.x, np.broadcast_to(truth, fp.x.shape), atol=1e-10)


def test_newton_krylov_reports_slow_point():
    # relu vanilla with W = I and bias c > 0: in the positive orthant F(h) = h + c, so q = |c|^2 / 2
    # is constant (grad q = (J - I)^T r = 0) and there is no root: a slow point, not a fixed point.
    N = 3
    p = fastfp.RNNParams("vanilla", np.zeros((N, 1)), np.eye(N), np.full(N, 0.1), np.zeros(N), nonlinearity="relu")
    for method in ("newton", "hybrid"):
        fp = fastfp.find_fixed_points(p, np.full((2, N), 0.5), method=method, jacobian="matrix_free", maxiter=20)
        assert (fp.status == fastfp.Status.SLOW_POINT).all()
        np.testing.assert_allclose(fp.q, 0.5 * 3 * 0.01)


def test_jacobian_planner_and_errors():
    p = fastfp.RNNParams.random("gru", hidden_size=64, input_size=2, seed=0)
    h0 = np.zeros((3, 64))
    with pytest.raises(InvalidOptionError, match="'jacobian'"):
        fastfp.find_fixed_points(p, h0, jacobian="sparse")
    with pytest.raises(InvalidOptionError, match="'gmres_restart'"):
        fastfp.find_fixed_points(p, h0, gmres_restart=0)
    with pytest.raises(InvalidOptionError, match="'matrix_free' works with method 'newton', 'hybrid' or 'lm'"):
        fastfp.find_fixed_points(p, h0, method="adam", jacobian="matrix_free")
    for kw in (dict(method="lm"), dict(slow_ratio=0.05)):  # matrix-free LM
        assert fastfp.find_fixed_points(p, h0, jacobian="matrix_free", **kw).metadata["jacobian"] == "matrix_free"
    assert fastfp.find_fixed_points(p, h0).metadata["jacobian"] == "dense"  # small N: dense
    # 'auto' goes matrix-free when not even one dense point fits in memory_limit.
    limit = 5 * 64 * 64 * 8  # < 5 N^2 + 16 N doubles: one dense point does not fit; 3 matrix-free ones do
    fp = fastfp.find_fixed_points(p, h0, memory_limit=limit)
    assert fp.metadata["jacobian"] == "matrix_free" and fp.success.all()
    with pytest.raises(MemoryLimitError, match="jacobian='matrix_free'"):
        fastfp.find_fixed_points(p, h0, jacobian="dense", memory_limit=limit, batch_size="auto")
    with pytest.raises(MemoryLimitError, match="gmres_restart"):
        fastfp.find_fixed_points(p, h0, jacobian="matrix_free", memory_limit=100.0, batch_size="auto")


def test_auto_picks_matrix_free_for_large_n():
    from fastfp.solvers import MATRIX_FREE_MIN_N

    N = MATRIX_FREE_MIN_N
    p = fastfp.RNNParams.random("vanilla", hidden_size=N, input_size=1, seed=0)
    fp = fastfp.find_fixed_points(p, np.zeros((1, N)), maxiter=3)
    assert fp.metadata["jacobian"] == "matrix_free"


def test_auto_takes_dense_where_a_pilot_finds_gmres_too_costly():
    # A chaotic vanilla RNN (gain 2): restarted GMRES needs more products per Newton step than a
    # dense step costs (matrix-free took 49 s against dense 1 s at 256 starts); a GRU of the same
    # width stays matrix-free. The choice counts products, not seconds: it is deterministic.
    from fastfp.solvers import MATRIX_FREE_MIN_N

    N = MATRIX_FREE_MIN_N
    rng = np.random.default_rng(0)
    chaotic = fastfp.RNNParams.random("vanilla", N, 8, scale=2.0 / np.sqrt(N), seed=1)
    h0 = fastfp.sample_states(fastfp.rollout(chaotic, None, rng.normal(size=(16, 30, 8))), 64, noise=0.5, seed=0)
    fp = fastfp.find_fixed_points(chaotic, h0, method="newton")
    pilot = fp.metadata["auto_pilot"]
    assert fp.metadata["jacobian"] == "dense" and pilot["chose"] == "dense"
    assert pilot["matvec_per_iteration"] > pilot["dense_break_even"] and pilot["points"] == 8  # an eighth of 64
    assert fp.success.sum() >= 48  # (the others: no decrease, as matrix-free's own stalls)
    gru = fastfp.RNNParams.random("gru", N, 8, seed=1)
    fp = fastfp.find_fixed_points(gru, rng.uniform(-0.5, 0.5, (64, N)), method="newton")
    assert fp.metadata["jacobian"] == "matrix_free" and fp.metadata["auto_pilot"]["chose"] == "matrix_free"
    # No pilot below AUTO_PILOT_MIN_B starts, for an explicit choice, or for a probe of no iterations.
    for kw in (dict(), dict(jacobian="matrix_free")):
        few = fastfp.find_fixed_points(chaotic, h0[:8] if not kw else h0, method="newton", maxiter=2, **kw)
        assert "auto_pilot" not in few.metadata and few.metadata["jacobian"] == "matrix_free"
    # Dense must take the solve as asked: with room for 10 dense points of 64 and batch_size None
    # the pilot does not run (matrix-free, as before); batch_size='auto' lets dense go in chunks.
    ten = 10 * (6 * N * N + 16 * N) * 8
    whole = fastfp.find_fixed_points(chaotic, h0, method="newton", memory_limit=ten, maxiter=3)
    assert whole.metadata["jacobian"] == "matrix_free" and "auto_pilot" not in whole.metadata
    chunked = fastfp.find_fixed_points(chaotic, h0, method="newton", memory_limit=ten, batch_size="auto")
    assert chunked.metadata["jacobian"] == "dense" and chunked.metadata["auto_pilot"]["chose"] == "dense"
    assert fp.metadata["wall_time_s"] >= fp.metadata["auto_pilot"]["time_s"] > 0  # the pilot's time counted
    with pytest.raises(InvalidOptionError, match="'batch_size': got 'big'"):  # not a ValueError from the pilot
        fastfp.find_fixed_points(chaotic, h0, method="newton", batch_size="big")
    probe = fastfp.find_fixed_points(gru, rng.uniform(-0.5, 0.5, (64, N)), maxiter=0)
    assert "auto_pilot" not in probe.metadata and probe.metadata["dense_retries"] == 0


def test_auto_retries_matrix_free_failures_with_dense(monkeypatch):
    import fastfp.solvers as solvers

    # The trained LSTM (N = 64): matrix-free hybrid leaves a few points at max iterations; 'auto'
    # (made to pick matrix-free at this N) must solve those again with dense hybrid (LM).
    monkeypatch.setattr(solvers, "MATRIX_FREE_MIN_N", 64)
    model = fastfp.load_params(__import__("pathlib").Path(__file__).parent / "data" / "lstm32_cat3.npz")
    p = model.params.astype(np.float64)
    data = fastfp.tasks.categorical(128, n_classes=3, seed=12345)
    traj = fastfp.rollout(p, None, data.one_hot(np.float64), lengths=data.lengths)
    h0 = fastfp.sample_states(traj, 1024, noise=0.5, seed=0)
    mf = fastfp.find_fixed_points(p, h0, jacobian="matrix_free")
    auto = fastfp.find_fixed_points(p, h0, jacobian="auto")
    n_failed = int(np.isin(mf.status, (2, 3, 5)).sum())
    assert n_failed > 0  # otherwise this test checks nothing
    assert auto.metadata["jacobian"] == "matrix_free" and auto.metadata["dense_retries"] == n_failed
    assert auto.success.sum() == mf.success.sum() + auto.metadata["dense_retries_converged"]
    assert auto.success.sum() > mf.success.sum()
    ok = mf.success
    np.testing.assert_array_equal(auto.x[ok], mf.x[ok])  # converged points are left as they were
    r = fastfp.step(p, auto.x[auto.success], np.zeros(p.input_size), backend="numpy") - auto.x[auto.success]
    assert np.abs(r).max() <= 1e-10


def test_eigs_low_rank_jacobian_invariant_subspace():
    # relu RNN with 5 of 64 units active at h = 0: J = diag(slope) W has rank 5 < ncv, so Arnoldi
    # meets an invariant subspace; the method must restart with a fresh direction, not normalise noise.
    N = 64
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N, N)) / np.sqrt(N)
    b = np.full(N, -1.0)
    b[:5] = 1.0
    p = fastfp.RNNParams("vanilla", np.zeros((N, 1)), W, b, np.zeros(N), nonlinearity="relu")
    h = np.zeros((1, N))
    te = top_eigs(p, h, k=6, left=True)
    J = fastfp.jacobian(p, h)
    _assert_top_eigenvalues(te.eigvals, np.linalg.eigvals(J), 1e-10)
    assert np.abs(np.einsum("bij,bjk->bik", J, te.right) - te.right * te.eigvals[:, None, :]).max() < 1e-10
    A = np.diag([2.0] * 10 + [1.0] * 10)[None]
    res = batched_eigs(_matvec(A), 1, 20, 3, ncv=8)
    np.testing.assert_allclose(res.eigvals, 2.0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_left_vectors_with_a_magnitude_tie(seed):
    # J = W with eigenvalues +-0.9 (a tie in |lambda|): the left run may settle on the other member;
    # the left vectors must still be left eigenvectors of the right eigenvalues, scaled l^T r = 1.
    N = 6
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((N, N)))[0]
    W = Q @ np.diag([0.9, -0.9, 0.5, 0.3, 0.2, 0.1]) @ Q.T
    p = fastfp.RNNParams("vanilla", np.zeros((N, 1)), W, np.full(N, 10.0), np.zeros(N), nonlinearity="relu")
    h = np.ones((1, N))  # pre-activations W h + 10 > 0: every unit active, J = W
    J = fastfp.jacobian(p, h)
    np.testing.assert_allclose(J[0], W, atol=1e-15)
    te = top_eigs(p, h, k=1, left=True, seed=seed)
    L, lam = te.left, te.eigvals
    assert abs(abs(lam[0, 0]) - 0.9) < 1e-10
    if te.converged[0]:
        assert np.abs(np.einsum("bji,bjk->bik", J, L) - L * lam[:, None, :]).max() < 1e-9
        np.testing.assert_allclose(np.einsum("bnk,bnk->bk", L, te.right), 1.0, atol=1e-10)
    else:
        assert np.isnan(L).all()  # never a wrong vector


def test_auto_does_not_retry_dense_when_dense_does_not_fit():
    p = fastfp.RNNParams.random("gru", hidden_size=64, input_size=2, seed=0)
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (4, 64))
    fp = fastfp.find_fixed_points(p, h0, memory_limit=4 * 64 * 64 * 8, maxiter=1, batch_size="auto")
    assert fp.metadata["jacobian"] == "matrix_free" and fp.metadata["dense_retries"] == 0
    assert (fp.status == fastfp.Status.MAX_ITER).any()


def test_steepest_descent_backtracking_uses_its_own_slope():
    from fastfp._newton_krylov import _backtrack

    # r(h) = r0 - 1e-3 h: grad q = -1e-3 r is tiny next to r; a steepest-descent step decreases q by
    # about 1e-6 q, which the Newton-step rule (1 - 2c alpha) q would reject.
    r0 = np.array([[1.0, -0.5]])

    def step(h, X):
        return h + (r0 - 1e-3 * h)

    h = np.zeros((1, 2))
    r = step(h, None) - h
    q = 0.5 * (r * r).sum(axis=1)
    g = -1e-3 * r
    gn = np.linalg.norm(g, axis=1)
    _, r_new, ok, _ = _backtrack(np, step, lambda i: None, np.arange(1), h, r, q, -g, -gn * gn,
                              np.full(2, -np.inf), np.full(2, np.inf))
    assert ok.all() and 0.5 * (r_new ** 2).sum() < q[0]


def test_top_eigs_in_chunks_equals_one_batch():
    p = fastfp.RNNParams.random("gru", hidden_size=24, input_size=3, scale=2.5 / np.sqrt(24), seed=4)
    h = np.random.default_rng(5).uniform(-0.8, 0.8, size=(7, 24))
    whole = top_eigs(p, h, k=4, left=True)
    per_point = ((24 + 1) + 4 * 6 + 16) * 24 * 8  # ncv = N = 24 here
    chunked = top_eigs(p, h, k=4, left=True, memory_limit=3 * per_point)  # chunks of 3, 3, 1
    np.testing.assert_allclose(chunked.eigvals, whole.eigvals, atol=1e-10)
    assert chunked.right.shape == whole.right.shape and chunked.converged.all()
    with pytest.raises(MemoryLimitError, match="top_eigs needs"):
        top_eigs(p, h, k=4, memory_limit=100.0)


def test_operator_takes_each_subset_even_of_equal_size():
    # GMRES finishes the points it drops with products on their rows: a subset of the same size as
    # the one before but other rows must get its own linearisation (a cache keyed on the size alone
    # would apply the previous rows' J).
    rng = np.random.default_rng(4)
    p = fastfp.RNNParams.random("gru", hidden_size=7, input_size=2, seed=5)
    w = p.arrays(np.float64)
    B, N = 8, p.state_size
    h, x = rng.standard_normal((B, N)) * 0.7, rng.standard_normal((1, 2))
    J = ref.jacobian_ref(p.cell_code, p.nonlinearity_code, h, x, *w)
    op = linearize(p.cell_code, p.nonlinearity_code, h, x, *w).operator(shift=1.0)
    V = rng.standard_normal((3, N))
    for idx in (np.array([0, 2, 5]), np.array([1, 3, 7]), np.array([1, 3, 7]), np.arange(B)[:3], np.arange(B)):
        Vi = V if len(idx) == 3 else rng.standard_normal((B, N))
        expected = np.einsum("bij,bj->bi", J[idx], Vi) - Vi
        np.testing.assert_allclose(op(idx, Vi), expected, atol=1e-13)
        np.testing.assert_allclose(op(idx, Vi), expected, atol=1e-13)  # the same index array again


def test_top_eigs_warns_where_an_exactly_repeated_eigenvalue_may_be_short():
    # J = diag(1 x10, 0.8 .. 0.1) planted at h = 0 (tanh'(0) = 1, no input): one start vector
    # spans one direction of the ten-fold eigenvalue 1, and Krylov-Schur finds only some copies.
    N = 100
    W = np.diag(np.r_[[1.0] * 10, np.linspace(0.8, 0.1, N - 10)])
    p = fastfp.RNNParams("vanilla", np.zeros((N, 1)), W)
    with pytest.warns(UserWarning, match=r"an eigenvalue comes out repeated \(state 0: 1 x\d+\).*ncv=N finds every copy"):
        te = top_eigs(p, np.zeros((1, N)), k=12)
    assert 1 < np.isclose(np.abs(te.eigvals[0]), 1.0).sum() < 10  # the shortfall the warning is about
    full = top_eigs(p, np.zeros((1, N)), k=12, ncv=N)  # no warning: the whole space
    assert np.isclose(np.abs(full.eigvals[0]), 1.0).sum() == 10
    # distinct eigenvalues: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_eigs(fastfp.RNNParams("vanilla", np.zeros((N, 1)), np.diag(np.linspace(0.99, 0.1, N))), np.zeros((1, N)), k=8)


def test_top_eigs_left_vectors_are_dual_to_the_right_ones_in_a_repeated_eigenspace():
    # A GRU with three update gates saturated to exactly 1 (J rows e_i there: the eigenvalue 1 x3).
    # Each Krylov run returns some basis of that eigenspace; L^T R = I needs the left basis made
    # dual to the right one (l_i^T r_i = 1 alone left |L^T R - I| ~ 1-4 off the diagonal).
    H, M = 120, 2
    w_ih, w_hh, b_ih, b_hh = (np.array(a) for a in
                              fastfp.RNNParams.random("gru", H, M, scale=2.0 / np.sqrt(H), seed=4).arrays(np.float64))
    b_hh[H:H + 3] = 60.0
    p = fastfp.RNNParams("gru", w_ih, w_hh, b_ih, b_hh)
    h = np.random.default_rng(0).standard_normal((2, H)) * 0.3
    with pytest.warns(UserWarning, match="comes out repeated"):
        te = top_eigs(p, h, k=6, left=True)
    J = fastfp.jacobian(p, h)
    for b in range(2):
        assert np.isclose(te.eigvals[b], 1.0, atol=1e-12).sum() == 3
        L, R, lam = te.left[b], te.right[b], te.eigvals[b]
        np.testing.assert_allclose(L.T @ R, np.eye(6), atol=1e-10)
        np.testing.assert_allclose(L.T @ J[b], lam[:, None] * L.T, atol=1e-10)  # still left eigenvectors
