"""float32 linear solves inside float64 Newton (mixed_precision): the roots must be the float64
roots, to float64 tolerance, re-evaluated by the float64 NumPy reference."""

import pathlib

import numpy as np
import pytest

import fastfp
from support import near_singular_relu
from fastfp import InvalidOptionError

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")

DATA = pathlib.Path(__file__).parent / "data"


def _setup(name, n, seed):
    params = fastfp.load_params(DATA / f"{name}.npz").params.astype(np.float64)
    data = fastfp.tasks.categorical(32, n_classes=3, seed=seed)
    traj = fastfp.rollout(params, None, data.one_hot(np.float64), lengths=data.lengths)
    return params, fastfp.sample_states(traj, n, noise=0.5, seed=seed)


def _reference_residual(params, x, inputs):
    return np.abs(fastfp.step(params, x, inputs, backend="numpy") - x).max(axis=1)


@pytest.mark.parametrize("name", ["gru64_cat3", "lstm32_cat3"])
@pytest.mark.parametrize("method", ["hybrid", "newton"])
def test_matrix_free_float32_gmres_reaches_float64_roots(name, method):
    params, h0 = _setup(name, 64, seed=5)
    mixed = fastfp.find_fixed_points(params, h0, method=method, jacobian="matrix_free", mixed_precision=True)
    plain = fastfp.find_fixed_points(params, h0, method=method, jacobian="matrix_free", mixed_precision=False)
    assert mixed.metadata["mixed_precision"] and not plain.metadata["mixed_precision"]
    assert mixed.success.mean() >= plain.success.mean() - 0.03
    ok = mixed.success
    assert ok.mean() > 0.9
    assert (_reference_residual(params, mixed.x[ok], mixed.inputs[ok]) <= 1e-10).all()
    both = ok & plain.success
    # Where both converge from the same start they found the same root (distinct roots are far apart).
    assert np.abs(mixed.x[both] - plain.x[both]).max() < 1e-8


def test_defaults_hybrid_mixed_newton_exact():
    params, h0 = _setup("gru64_cat3", 8, seed=6)
    assert fastfp.find_fixed_points(params, h0).metadata["mixed_precision"] is True
    assert fastfp.find_fixed_points(params, h0, method="newton").metadata["mixed_precision"] is False


def test_dense_float32_factors_without_chord_still_exact_roots():
    params, h0 = _setup("gru64_cat3", 48, seed=7)
    fp = fastfp.find_fixed_points(params, h0, method="newton", jacobian="dense", chord=False, mixed_precision=True)
    assert fp.success.all() and "chord_contraction" not in fp.metadata
    assert fp.metadata["precise_factors"] == 0  # float32 factors were used (and sufficed)
    assert (_reference_residual(params, fp.x, fp.inputs) <= 1e-10).all()


@pytest.mark.parametrize("kwargs, needle", [
    (dict(mixed_precision=1), "'mixed_precision'"),
    (dict(mixed_precision=True, method="lm"), "method='lm'"),
    (dict(mixed_precision=True, method="adam"), "method='adam'"),
])
def test_bad_mixed_precision_option(kwargs, needle):
    params = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    with pytest.raises(InvalidOptionError, match=needle):
        fastfp.find_fixed_points(params, np.zeros((2, 4)), **kwargs)


def test_mixed_mode_really_runs_float32_gmres(monkeypatch):
    import fastfp._newton_krylov as nk

    seen = []
    real = nk.batched_gmres

    def spy(matvec, b, **kw):
        seen.append(b.dtype)
        return real(matvec, b, **kw)

    monkeypatch.setattr(nk, "batched_gmres", spy)
    params, h0 = _setup("gru64_cat3", 16, seed=8)
    fastfp.find_fixed_points(params, h0, method="hybrid", jacobian="matrix_free")
    assert np.dtype(np.float32) in seen
    seen.clear()
    fastfp.find_fixed_points(params, h0, method="hybrid", jacobian="matrix_free", mixed_precision=False)
    assert seen and all(d == np.float64 for d in seen)


def test_float32_gmres_that_stalls_hands_over_to_float64():
    # Review regression: at cond(J - I) ~ 1e4..1e6 float32 GMRES cannot reach its forcing term;
    # it used to spend its whole budget (400 products) every Newton step. Now one restart cycle,
    # then float64 for that point: products stay within a small factor of the float64 run.
    params, root, h0 = near_singular_relu(160, 1e-5, 4)
    mixed = fastfp.find_fixed_points(params, h0, method="hybrid", jacobian="matrix_free")
    plain = fastfp.find_fixed_points(params, h0, method="hybrid", jacobian="matrix_free", mixed_precision=False)
    assert mixed.success.all() and plain.success.all()
    np.testing.assert_allclose(mixed.x, np.broadcast_to(root, mixed.x.shape), atol=1e-6 * np.abs(root).max())
    assert mixed.metadata["n_matvec"] <= 4 * plain.metadata["n_matvec"]


def test_metadata_records_the_options_used():
    params, h0 = _setup("gru64_cat3", 8, seed=9)
    mf = fastfp.find_fixed_points(params, h0, jacobian="matrix_free")
    assert mf.metadata["chord"] is False and mf.metadata["mixed_precision"] is True
    f32 = fastfp.find_fixed_points(params.astype(np.float32), h0.astype(np.float32), dtype=np.float32)
    assert f32.metadata["mixed_precision"] is False
    slow = fastfp.find_fixed_points(params, h0, slow_ratio=0.05, slow_speed=1e-2)
    assert slow.metadata["chord"] is False and slow.metadata["mixed_precision"] is False


def test_mixed_solve_pairs_rows_with_their_linearisation_after_stalls():
    # Some rows float64 from the start, all others stalling in float32 (restart 1, so one
    # product): every row must still be solved with its own J. Oracle: dense numpy.linalg.solve.
    from fastfp._linearize import linearize
    from fastfp._newton_krylov import _mixed_solve

    params = fastfp.RNNParams.random("gru", 12, 3, seed=11)
    rng = np.random.default_rng(12)
    h = rng.uniform(-0.5, 0.5, (5, 12))
    x = rng.normal(size=(1, 3))
    w = params.arrays(np.float64)
    lin = linearize(params.cell_code, params.nonlinearity_code, h, x, *w)
    r = rng.normal(size=(5, 12))
    precise = np.array([False, True, False, False, True])
    active = np.arange(5)
    delta, spent = _mixed_solve(np, lin, r, np.linalg.norm(r, axis=1), np.full(5, 1e-10), active, precise,
                                1, {"krylov_maxiter": 200}, np.float64)
    assert precise.all()  # the float32 rows stalled and were handed over
    A = fastfp.jacobian(params, h, x[0]) - np.eye(12)
    exact = np.linalg.solve(A, -r[..., None])[..., 0]
    np.testing.assert_allclose(delta, exact, atol=1e-7 * np.abs(exact).max())
