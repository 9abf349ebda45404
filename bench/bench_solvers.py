"""Time to solution of the fixed-point solvers on the trained fixture classifiers, against a
re-implementation of FixedPointFinder's PyTorch algorithm (skipped when torch is absent).

Each pytest-benchmark group is one network; extra_info records the fraction of exact fixed points
(residual < 1e-10 by the NumPy reference) and the number of distinct ones after merging at 1e-3.
"""

from __future__ import annotations

import pytest

import _solverlib as sl


@pytest.fixture(scope="module", params=sl.NETWORKS)
def network(request):
    return request.param, sl.setup(request.param)


@pytest.mark.parametrize("method", sl.METHODS)
def test_time_to_solution(benchmark, pinned_threads, network, method):
    name, (params, h0, x) = network
    benchmark.group = f"solve {name} B={len(h0)}"
    if method == "fpf_baseline":
        pytest.importorskip("torch")
        # In a fresh torch-only process (see _solverlib.run_baseline_isolated): the benchmark's
        # own time includes that process's start-up; extra_info["solve_seconds"] is the solve.
        result = {}

        def baseline():
            result["seconds"], result["states"] = sl.run_baseline_isolated(name, pinned_threads["threads"])

        benchmark.pedantic(baseline, rounds=1, iterations=1)
        states = result["states"]
        benchmark.extra_info["solve_seconds"] = result["seconds"]
    else:
        sl.run(method, params, h0[:8], x)  # warm-up: Numba compilation
        states = benchmark.pedantic(sl.run, args=(method, params, h0, x), rounds=1 if method == "adam" else 3,
                                    iterations=1)
    benchmark.extra_info.update(network=name, method=method, **sl.quality(params, states, x), **pinned_threads)
