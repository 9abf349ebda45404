"""The root preconditioner of the matrix-free hybrid solver (fastfp._newton_krylov.RootPreconditioner):
its application against explicit matrix products, and preconditioned solves against unpreconditioned
ones and the NumPy reference."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import fastfp
import fastfp.solvers as solvers
from fastfp._newton_krylov import RootPreconditioner

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")

DATA = pathlib.Path(__file__).parent / "data"


def test_assign_and_apply_match_explicit_products():
    rng = np.random.default_rng(0)
    R, N, B = 3, 5, 12
    roots = 3 * rng.standard_normal((R, N))
    inv = rng.standard_normal((R, N, N)).astype(np.float32)
    pre = RootPreconditioner(roots, inv, radius=1.0)
    near = rng.integers(0, R, B)
    h = roots[near] + rng.uniform(-0.3, 0.3, (B, N))
    h[-2:] += 10.0  # farther than the radius from every root: no preconditioning
    dist = np.linalg.norm(h[:, None, :] - roots[None], axis=2)
    expected_group = np.where(dist.min(axis=1) <= 1.0, dist.argmin(axis=1), -1)
    group = pre.assign(h)
    np.testing.assert_array_equal(group, expected_group)
    np.testing.assert_array_equal(group[-2:], [-1, -1])
    order = np.argsort(group, kind="stable")
    V = rng.standard_normal((B, N)).astype(np.float32)
    out = pre.apply(group[order], V[order])
    for k, b in enumerate(order):
        expected = V[b] if group[b] < 0 else inv[group[b]] @ V[b]
        np.testing.assert_allclose(out[k], expected, rtol=1e-5, atol=1e-6)


def _trained_starts(n):
    model = fastfp.load_params(DATA / "gru64_cat3.npz")
    params = model.params.astype(np.float64)
    data = fastfp.tasks.categorical(64, n_classes=3, seed=7)
    traj = fastfp.rollout(params, None, data.one_hot(np.float64), lengths=data.lengths)
    return params, fastfp.sample_states(traj, n, noise=0.5, seed=1)


def test_preconditioned_solve_finds_the_same_roots_with_fewer_products(monkeypatch):
    params, h0 = _trained_starts(4 * solvers.PILOT_POINTS)
    x = np.zeros(params.input_size)
    pre = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free")
    assert pre.metadata["preconditioner_roots"] >= 1
    monkeypatch.setattr(solvers, "_root_preconditioner", lambda *a, **k: (None, 0))
    plain = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free")
    assert plain.metadata["preconditioner_roots"] == 0
    ok = pre.success & plain.success
    assert ok.mean() >= 0.95
    F = fastfp.step(params, pre.x[pre.success], x, backend="numpy")
    assert (np.abs(F - pre.x[pre.success]).max(axis=1) <= 1e-10).all()
    # Other (inexact) Newton steps: a start between basins may end at another root, but the
    # roots are the same set and most starts reach the same one.
    same = np.abs(pre.x[ok] - plain.x[ok]).max(axis=1) <= 1e-8
    assert same.mean() >= 0.9
    a, b = pre[pre.success].unique(1e-6).x, plain[plain.success].unique(1e-6).x
    dist = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    assert dist.min(axis=1).max() < 1e-8 and dist.min(axis=0).max() < 1e-8
    # Measured on these 128 starts: 2.6k products after the pilot's 2.0k (its 32 starts solved
    # unpreconditioned), against 7.3k without; the pilot pays off with more starts (GRU-256, 1024
    # starts: 25k against 62k).
    assert 0 < pre.metadata["pilot_matvec"] < pre.metadata["n_matvec"]
    assert pre.metadata["n_matvec"] - pre.metadata["pilot_matvec"] < 0.5 * plain.metadata["n_matvec"]
    assert pre.metadata["n_matvec"] < 0.8 * plain.metadata["n_matvec"]


@pytest.mark.parametrize("kwargs", [dict(method="newton"), dict(mixed_precision=False)])
def test_no_preconditioner_without_mixed_precision(kwargs):
    params, h0 = _trained_starts(4 * solvers.PILOT_POINTS)
    fp = fastfp.find_fixed_points(params, h0, np.zeros(params.input_size), jacobian="matrix_free", **kwargs)
    assert fp.metadata["preconditioner_roots"] == 0 and fp.success.mean() >= 0.95


def test_no_preconditioner_with_one_input_per_point():
    params, h0 = _trained_starts(4 * solvers.PILOT_POINTS)
    X = np.zeros((len(h0), params.input_size))
    fp = fastfp.find_fixed_points(params, h0, X, jacobian="matrix_free")
    assert fp.metadata["preconditioner_roots"] == 0 and fp.success.mean() >= 0.95


def test_matrix_free_solve_split_over_threads_equals_one_solve():
    # Without progress the points go to the threads in shares of at least 128, each solved with
    # single-threaded BLAS; with a progress hook they are solved as one batch.
    params, h0 = _trained_starts(2 * solvers._MF_MIN_PER_THREAD + 11)
    x = np.zeros(params.input_size)
    split = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free")
    calls = []
    whole = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free", progress=lambda d, t: calls.append(d))
    assert calls and calls[-1] == len(h0)
    np.testing.assert_array_equal(split.status, whole.status)
    same = np.abs(split.x - whole.x).max(axis=1) <= 1e-8
    assert same.mean() >= 0.98  # GEMMs sum in another order single-threaded: a start between basins may flip
    assert split.success.mean() >= 0.95


def test_no_preconditioner_above_its_size_limit(monkeypatch):
    params, h0 = _trained_starts(4 * solvers.PILOT_POINTS)
    monkeypatch.setattr(solvers, "PRECONDITION_MAX_N", params.state_size - 1)
    fp = fastfp.find_fixed_points(params, h0, np.zeros(params.input_size), jacobian="matrix_free")
    assert fp.metadata["preconditioner_roots"] == 0 and fp.success.mean() >= 0.95


def test_no_preconditioner_from_ill_conditioned_roots(monkeypatch):
    # Every root's J - I is better conditioned than 1e6 here; a limit below theirs drops them all.
    params, h0 = _trained_starts(4 * solvers.PILOT_POINTS)
    x = np.zeros(params.input_size)
    fp = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free")
    A = fastfp.jacobian(params, fp[fp.success].unique(1e-6).x, x, backend="numpy") - np.eye(params.state_size)
    cond = [np.linalg.norm(a, 1) * np.linalg.norm(np.linalg.inv(a), 1) for a in A]
    assert max(cond) < solvers.PRECONDITION_MAX_COND and fp.metadata["preconditioner_roots"] >= 1
    monkeypatch.setattr(solvers, "PRECONDITION_MAX_COND", 0.5 * min(cond))
    fp = fastfp.find_fixed_points(params, h0, x, jacobian="matrix_free")
    assert fp.metadata["preconditioner_roots"] == 0 and fp.metadata["pilot_matvec"] > 0
    assert fp.success.mean() >= 0.95
