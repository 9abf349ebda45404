"""Regressions found by review: each test reproduces a failure seen once."""

import dataclasses
import multiprocessing as mp
import threading

import numpy as np
import pytest

import fastfp
from fastfp import Status

# What the solvers' first attempt does: no restart of stalled points (see conftest.first_pass).
pytestmark = pytest.mark.usefixtures("first_pass")


def test_lstm_h1_float32_batch_matches_reference():
    # np.negative(a, out=a) is wrong in NumPy 2.4 on single-column strided views (the o gate).
    params = fastfp.RNNParams.random("lstm", 1, 2, seed=0, scale=2.0)
    h = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    np.testing.assert_allclose(fastfp.step(params, h), fastfp.step(params, h.astype(np.float64), backend="numpy"),
                               atol=1e-6)


_FORK_SCRIPT = """
import multiprocessing as mp, numpy as np, fastfp

def child(queue):
    params = fastfp.RNNParams.random("gru", 16, 2, seed=0)
    queue.put(int(fastfp.find_fixed_points(params, np.zeros((64, 16))).success.sum()))

if __name__ == "__main__":
    params = fastfp.RNNParams.random("gru", 16, 2, seed=0)
    assert fastfp.find_fixed_points(params, np.zeros((64, 16))).success.all()  # starts the solve pool
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        raise SystemExit("child hung")
    print(queue.get(timeout=5))
"""


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_solver_works_in_a_forked_child_after_a_solve_in_the_parent(tmp_path):
    # In a fresh interpreter: the test process may have loaded JAX, which must not be forked.
    import subprocess
    import sys

    script = tmp_path / "fork_after_solve.py"
    script.write_text(_FORK_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "64"


@pytest.mark.parametrize("method", fastfp.METHODS)
def test_empty_batch(method):
    params = fastfp.RNNParams.random("gru", 8, 2, seed=0)
    fp = fastfp.find_fixed_points(params, np.zeros((0, 8)), method=method)
    assert len(fp) == 0 and fp.x.shape == (0, 8)


def test_float32_default_tolerance_reports_roots():
    params = fastfp.RNNParams.random("gru", 6, 2, seed=1)
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (64, 6))
    fp = fastfp.find_fixed_points(params, h0, dtype=np.float32)
    assert fp.metadata["atol"] == 1e-5
    assert fp.success.all(), np.bincount(fp.status)


def test_nonfinite_rows_in_unique_and_decompose():
    params = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    fp = fastfp.find_fixed_points(params, np.zeros((3, 4)))
    x = fp.x.copy()
    x[1] = np.nan
    bad = dataclasses.replace(fp, x=x, status=np.array([0, Status.NONFINITE, 0], np.int8))
    assert len(bad.unique(1e-3)) == 2  # the two equal roots merge; the NaN row is kept as it is
    dec = bad.decompose(params)
    assert np.isnan(dec.eigvals[1]).all() and np.isfinite(dec.eigvals[[0, 2]]).all()


def test_unique_keeps_roots_and_slow_points_apart():
    x = np.zeros((2, 2))
    fp = fastfp.FixedPoints(
        x=x, x0=x, inputs=np.zeros((2, 1)), fx=x, residual=np.zeros(2), q=np.array([0.0, 1e-9]),
        grad_norm=np.zeros(2), status=np.array([Status.CONVERGED, Status.SLOW_POINT], np.int8), nit=np.zeros(2, int),
    )
    assert len(fp.unique(1e-3)) == 2


def test_adam_reports_divergence_instead_of_max_iter():
    params = fastfp.RNNParams.random("vanilla", 4, 2, seed=0, nonlinearity="relu", scale=1.0)
    fp = fastfp.find_fixed_points(params, np.ones((5, 4)), method="adam", adam_lr=1e300, maxiter=20)
    assert not (fp.status == Status.MAX_ITER).any(), fp.status
    assert np.isin(fp.status, [Status.DIVERGED, Status.NONFINITE]).all()


def test_blas_thread_count_restored_after_concurrent_use():
    from fastfp import _blas

    with _blas.blas_threads(1):
        pass
    controls = _blas._controls
    if not controls:
        pytest.skip("no OpenBLAS found to control")
    before = {name: getter() for name, (setter, getter) in controls.items()}
    barrier = threading.Barrier(4)
    seen = []

    def work():
        with _blas.blas_threads(1):
            barrier.wait()
            seen.extend(getter() for _, getter in controls.values())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and all(n == 1 for n in seen)
    assert {name: getter() for name, (setter, getter) in controls.items()} == before


def test_points_pinned_to_the_root_box_stop_instead_of_burning_maxiter():
    # High-gain GRU: some starts slide to the box |h| = 1 with q decreasing outward, where no root
    # can lie. A projected LM step settles them and they stop as DIVERGED well before maxiter.
    params = fastfp.RNNParams.random("gru", 6, 2, scale=3 / np.sqrt(6), seed=2)
    h0 = np.random.default_rng(0).uniform(-1, 1, (64, 6))
    fp = fastfp.find_fixed_points(params, h0, method="lm", maxiter=1000, restart_steps=0)
    assert not (fp.status == Status.MAX_ITER).any(), np.bincount(fp.status)
    pinned = fp[fp.status == Status.DIVERGED]
    assert len(pinned) > 0 and (np.abs(pinned.x).max(axis=1) >= 1.0).all()
    assert pinned.nit.max() < 200
    roots = fp[fp.success]
    res = np.abs(fastfp.step(params, roots.x, backend="numpy") - roots.x).max(axis=1)
    assert (res <= 1e-10).all()
    # With restarts (find_fixed_points' default) the stopped points are moved along the map's flow
    # and solved again.
    again = fastfp.find_fixed_points(params, h0, method="lm", maxiter=1000, restart_steps=100)
    assert again.metadata["restarts"] == len(pinned) + int((fp.status == Status.NO_DECREASE).sum())
    assert again.success.sum() == fp.success.sum() + again.metadata["restarts_converged"] > fp.success.sum()
    res = np.abs(fastfp.step(params, again.x[again.success], backend="numpy") - again.x[again.success]).max(axis=1)
    assert (res <= 1e-10).all()
