"""Step and Jacobian throughput of the cell kernels: Numba ("cpu") vs the NumPy reference ("numpy").

Run with ``python -m pytest bench/`` (see bench/README.md). Each pytest-benchmark group is one
(op, cell, dtype, B, H) case with its two backends, so the group's table compares them directly.
"""

from __future__ import annotations

import pytest

import _benchlib as bl


def _params(op):
    out = []
    for case in bl.cases(ops=(op,)):
        reason = case.skip_reason()
        for backend in bl.BACKENDS:
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            out.append(pytest.param(case, backend, marks=marks, id=f"{case.id}-{bl.BACKEND_LABELS[backend]}"))
    return out


def _run(benchmark, pinned_threads, case, backend):
    fn = bl.kernel(backend, case.op)
    args = bl.make_args(case)
    seconds = bl.warm_up(fn, args)  # compiles the Numba kernels outside the timing
    rounds, iterations = bl.plan(seconds)
    benchmark.group = case.group
    benchmark.extra_info.update(
        op=case.op, cell=case.cell, dtype=case.dtype, B=case.B, H=case.H, N=case.N, M=bl.M,
        backend=backend, implementation=bl.BACKEND_LABELS[backend],
        output_bytes=case.output_bytes, **pinned_threads,
    )
    benchmark.pedantic(fn, args=args, rounds=rounds, iterations=iterations,
                       warmup_rounds=1 if seconds < 0.1 else 0)


@pytest.mark.parametrize(("case", "backend"), _params("step"))
def test_step(benchmark, pinned_threads, case, backend):
    _run(benchmark, pinned_threads, case, backend)


@pytest.mark.parametrize(("case", "backend"), _params("jacobian"))
def test_jacobian(benchmark, pinned_threads, case, backend):
    _run(benchmark, pinned_threads, case, backend)
