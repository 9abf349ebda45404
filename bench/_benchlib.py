"""Shared set-up of fastfp's benchmarks: the case grid, inputs, thread pinning and round planning.

Used by the pytest-benchmark suite (``bench/bench_cells.py``, through ``bench/conftest.py``) and by
``tools/bench_table.py``, so that both measure exactly the same calls. Kernels are called directly
(``fastfp.backends.get_kernels(name).<op>(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)``): the public
functions' input validation is not timed.

Environment variables
---------------------
FASTFP_BENCH_THREADS
    Threads given to *both* backends (default 2): the BLAS pools (NumPy's and SciPy's OpenBLAS,
    through threadpoolctl) and Numba's parallel pool (``numba.set_num_threads``).
FASTFP_BENCH_MAX_GIB
    Largest Jacobian output, in GiB, that is still measured (default 2); larger cases are skipped.
    The NumPy reference needs several times the output size in temporaries.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

M = 8  # input size; x is one shared input of shape (1, M)
CELLS = ("gru", "lstm", "vanilla")
DTYPES = ("float32", "float64")
BATCHES = (256, 4096)
HIDDEN = (64, 256, 1024)
OPS = ("step", "jacobian")
BACKENDS = ("numpy", "cpu")  # reference first, then Numba
BACKEND_LABELS = {"numpy": "reference", "cpu": "numba"}

THREADS_ENV = "FASTFP_BENCH_THREADS"
DEFAULT_THREADS = 2
MAX_GIB_ENV = "FASTFP_BENCH_MAX_GIB"
DEFAULT_MAX_GIB = 2.0
GIB = 1024 ** 3


def bench_threads() -> int:
    """The thread count from FASTFP_BENCH_THREADS (default 2)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
    return n


def max_output_bytes() -> int:
    """The largest Jacobian output measured, from FASTFP_BENCH_MAX_GIB (default 2 GiB)."""
    raw = os.environ.get(MAX_GIB_ENV, "").strip()
    try:
        gib = float(raw) if raw else DEFAULT_MAX_GIB
    except ValueError:
        gib = -1.0
    if not gib > 0:
        raise ValueError(f"{MAX_GIB_ENV}={raw!r}: expected a positive number of GiB")
    return int(gib * GIB)


class PinnedThreads:
    """Both backends on ``n`` threads: BLAS pools via threadpoolctl, Numba via set_num_threads.

    Call ``close()`` (or use as a context manager) to restore the previous limits.
    """

    def __init__(self, n: int):
        self.n = n
        if "numba.core.config" not in sys.modules:
            # Numba reads its pool size when its config is imported (under pytest that is at start-up,
            # for pyproject's filterwarnings); make room for n threads (set_num_threads can only
            # lower it). Without this, n above the core count would be refused.
            current = int(os.environ.get("NUMBA_NUM_THREADS", "0") or 0)
            if current and current < n:
                raise ValueError(f"NUMBA_NUM_THREADS={current} is below {THREADS_ENV}={n}")
            if not current and n > (os.cpu_count() or 1):
                os.environ["NUMBA_NUM_THREADS"] = str(n)
        import numba
        import scipy.linalg  # noqa: F401  loads SciPy's BLAS (the one Numba's np.dot calls) so it is pinned too
        from threadpoolctl import threadpool_limits

        if n > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"{THREADS_ENV}={n} exceeds Numba's pool of {numba.config.NUMBA_NUM_THREADS} threads "
                f"(Numba was configured first); set NUMBA_NUM_THREADS={n} in the environment as well"
            )
        self._numba = numba
        self._previous_numba = numba.get_num_threads()
        self._limits = threadpool_limits(limits=n)
        numba.set_num_threads(n)

    def info(self) -> dict:
        """What the benches record in extra_info."""
        from threadpoolctl import threadpool_info

        pools = sorted(f"{p.get('prefix')}={p.get('num_threads')}" for p in threadpool_info())
        return {
            "threads": self.n,
            "numba_threads": self._numba.get_num_threads(),
            "thread_pools": ",".join(pools),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        }

    def close(self) -> None:
        self._limits.restore_original_limits()
        self._numba.set_num_threads(self._previous_numba)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class Case:
    """One measured call: op on B states of a cell with hidden size H in dtype."""

    op: str
    cell: str
    dtype: str
    B: int
    H: int

    @property
    def N(self) -> int:
        """State size: H, or 2H for lstm ([h, c])."""
        return 2 * self.H if self.cell == "lstm" else self.H

    @property
    def output_bytes(self) -> int:
        n_out = self.B * self.N * (self.N if self.op == "jacobian" else 1)
        return n_out * np.dtype(self.dtype).itemsize

    def skip_reason(self, limit: int | None = None) -> str | None:
        limit = max_output_bytes() if limit is None else limit
        if self.output_bytes <= limit:
            return None
        return (
            f"{self.op} output (B, N, N) = ({self.B}, {self.N}, {self.N}) {self.dtype} is "
            f"{self.output_bytes / GIB:.1f} GiB, above the {limit / GIB:g} GiB limit "
            f"({MAX_GIB_ENV}); the NumPy reference needs several times that in memory"
        )

    @property
    def id(self) -> str:
        return f"{self.op}-{self.cell}-{self.dtype}-B{self.B}-H{self.H}"

    @property
    def group(self) -> str:
        return f"{self.op} {self.cell} {self.dtype} B={self.B} H={self.H} (N={self.N})"


def cases(ops=OPS, cells=CELLS, dtypes=DTYPES, batches=BATCHES, hidden=HIDDEN):
    return [Case(op, c, d, b, h) for op in ops for c in cells for d in dtypes for b in batches for h in hidden]


def make_args(case: Case, seed: int = 0) -> tuple:
    """(cell_code, act_code, h, x, w_ih, w_hh, b_ih, b_hh) as the kernels take them."""
    from fastfp import RNNParams

    dtype = np.dtype(case.dtype)
    params = RNNParams.random(case.cell, case.H, M, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    h = np.ascontiguousarray(rng.uniform(-1.0, 1.0, size=(case.B, case.N)).astype(dtype))
    x = np.ascontiguousarray(rng.uniform(-1.0, 1.0, size=(1, M)).astype(dtype))
    return (params.cell_code, params.nonlinearity_code, h, x, *params.arrays(dtype))


def kernel(backend: str, op: str):
    from fastfp.backends import get_kernels

    return getattr(get_kernels(backend), op)


def warm_up(fn, args, max_calls: int = 5, max_seconds: float = 0.2) -> float:
    """Call fn once to compile the Numba kernels, then time up to max_calls more calls (stopping
    once max_seconds are spent); return the fastest, in seconds."""
    fn(*args)
    best, spent = float("inf"), 0.0
    for _ in range(max_calls):
        t0 = time.perf_counter()
        out = fn(*args)
        elapsed = time.perf_counter() - t0
        del out
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= max_seconds:
            break
    return best


def plan(seconds_per_call: float, budget: float = 0.6, min_round: float = 2e-3,
         min_rounds: int = 3, max_rounds: int = 200) -> tuple[int, int]:
    """(rounds, iterations): iterations calls per round so a round lasts >= min_round, and as many
    rounds as fit in ``budget`` seconds (at least min_rounds)."""
    t = max(seconds_per_call, 1e-7)
    iterations = max(1, math.ceil(min_round / t))
    rounds = int(budget / (t * iterations))
    return max(min_rounds, min(max_rounds, rounds)), iterations
