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
