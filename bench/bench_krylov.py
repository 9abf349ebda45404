"""Matrix-free Newton-Krylov vs dense Newton, and Krylov-Schur top-8 eigs vs dense eig, on the
structured GRU of _krylovlib (pytest-benchmark groups; compare within a group).

The large-N record (N = 2048 and 8192) is tools/bench_krylov_large.py -> bench/RESULTS-krylov.md.
"""

from __future__ import annotations

import numpy as np
import pytest

import _krylovlib as kl
import fastfp


@pytest.fixture(scope="module", params=[256, 512, 1024])
def problem(request):
    N = request.param
    params, rng = kl.structured_gru(N)
    return N, params, kl.initial_states(params, rng, 64)


@pytest.mark.parametrize("jacobian", ["dense", "matrix_free"])
def test_newton_time_to_solution(benchmark, pinned_threads, problem, jacobian):
    N, params, h0 = problem
    benchmark.group = f"newton structured GRU N={N} B={len(h0)}"
    fastfp.find_fixed_points(params, h0[:2], method="newton", jacobian=jacobian)  # compile
    fp = benchmark.pedantic(fastfp.find_fixed_points, args=(params, h0), rounds=2, iterations=1,
                            kwargs=dict(method="newton", jacobian=jacobian))
    benchmark.extra_info.update(converged=int(fp.success.sum()), n_matvec=fp.metadata.get("n_matvec", 0),
                                **pinned_threads)


@pytest.mark.parametrize("how", ["dense_eig", "top8_krylov"])
def test_top_eigenvalues(benchmark, pinned_threads, problem, how):
    N, params, h0 = problem
    pts = fastfp.find_fixed_points(params, h0[:16], method="newton", jacobian="matrix_free").x[:8]
    benchmark.group = f"top-8 eigenvalues N={N}, 8 points"

    def dense():
        return np.linalg.eigvals(fastfp.jacobian(params, pts))

    def krylov():
        return fastfp.top_eigs(params, pts, k=8).eigvals

    benchmark.pedantic(dense if how == "dense_eig" else krylov, rounds=2, iterations=1)
    benchmark.extra_info.update(**pinned_threads)


def _trained_slow_problem(name, B):
    """A trained classifier of bench/data, its visited states and the neutral word's input."""
    from pathlib import Path

    model = fastfp.load(Path(__file__).parent / "data" / f"{name}.npz")
    params = model.params.astype(np.float64)
    docs = fastfp.tasks.categorical(64, n_classes=3, length=50, seed=0)
    traj = fastfp.rollout(params, None, model.inputs(docs.tokens).astype(np.float64), lengths=docs.lengths)
    h0 = fastfp.sample_states(traj, B, mask=docs.mask(), seed=0)
    return params, h0, model.inputs(np.array([model.vocab.index("the")]))[0].astype(np.float64)


@pytest.mark.parametrize("network", ["gru128_cat3", "gru256_cat3", "structured-512"])
@pytest.mark.parametrize("jacobian", ["dense", "matrix_free"])
def test_slow_manifold_time_to_solution(benchmark, pinned_threads, network, jacobian):
    """Slow-manifold mode (slow_ratio 0.05, slow_speed 1e-2): dense LM against matrix-free LM (CG
    on the damped normal equations) from the same starts; compare within a group."""
    if network.startswith("structured"):
        N = int(network.split("-")[1])
        params, rng = kl.structured_gru(N)
        h0, x = kl.initial_states(params, rng, 32), np.zeros(params.input_size)
    else:
        params, h0, x = _trained_slow_problem(network, 64)
    benchmark.group = f"slow-manifold mode {network} B={len(h0)}"
    kw = dict(slow_ratio=0.05, slow_speed=1e-2, jacobian=jacobian)
    fastfp.find_fixed_points(params, h0[:2], x, maxiter=3, **kw)  # compile
    fp = benchmark.pedantic(fastfp.find_fixed_points, args=(params, h0, x), kwargs=kw, rounds=2, iterations=1)
    benchmark.extra_info.update(kept=int(fp.on_slow_manifold(1e-2).sum()), nit=float(fp.nit.mean()),
                                n_matvec=fp.metadata.get("n_matvec", 0), **pinned_threads)


@pytest.mark.parametrize("network", ["gru128_cat3", "gru256_cat3", "structured-512"])
@pytest.mark.parametrize("preconditioner", ["pilot", "none"])
def test_slow_manifold_lm_preconditioner(benchmark, pinned_threads, monkeypatch, network, preconditioner):
    """Matrix-free LM in slow-manifold mode with CG preconditioned from a pilot's slow points
    (the default from 128 points on) against plain CG, from the same starts; restarts off, so
    both solve the same first attempt. Compare within a group; n_matvec includes the pilot's."""
    from fastfp import solvers

    if network.startswith("structured"):
        params, rng = kl.structured_gru(int(network.split("-")[1]))
        h0, x = kl.initial_states(params, rng, 128), np.zeros(params.input_size)
    else:
        params, h0, x = _trained_slow_problem(network, 256)
    if preconditioner == "none":
        monkeypatch.setattr(solvers, "_lm_preconditioner", lambda *a, **k: (None, 0))
    benchmark.group = f"slow-manifold matrix-free LM {network} B={len(h0)}"
    kw = dict(slow_ratio=0.05, slow_speed=1e-2, jacobian="matrix_free", restart_steps=0)
    fastfp.find_fixed_points(params, h0[:2], x, maxiter=3, **kw)  # compile
    fp = benchmark.pedantic(fastfp.find_fixed_points, args=(params, h0, x), kwargs=kw, rounds=2, iterations=1)
    benchmark.extra_info.update(kept=int(fp.on_slow_manifold(1e-2).sum()), nit=float(fp.nit.mean()),
                                n_matvec=fp.metadata["n_matvec"], pilot_matvec=fp.metadata.get("pilot_matvec", 0),
                                preconditioner_points=fp.metadata.get("preconditioner_points", 0),
                                **pinned_threads)
