"""`fastfp bench`: a quick timing table of step, Jacobian and solve on this machine.

Each case is run once untimed (Numba compiles or loads its cache there, BLAS spins up), then timed
with ``time.perf_counter``: a repeat calls the operation enough times to last about
``min_time`` seconds and the per-call time is the repeat's total divided by the calls; the table
reports the median (and the minimum) over the repeats. The pytest-benchmark grid in ``bench/``
is the thorough version; this one answers "how fast is it here" in seconds.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InvalidOptionError

__all__ = ["SIZES", "BenchRow", "gpu_status", "machine_info", "run_bench"]

# size -> cells, hidden sizes, batch of step/jacobian, batch of solve (by state size), repeats
SIZES = {
    "quick": {"cells": ("gru",), "hidden": (64,), "batch": 256, "solve_batch": {64: 64}, "repeats": 3},
    "default": {"cells": ("gru", "lstm"), "hidden": (64, 128), "batch": 256,
                "solve_batch": {64: 128, 128: 32, 256: 8}, "repeats": 5},
    "full": {"cells": ("vanilla", "gru", "ugrnn", "lstm"), "hidden": (64, 256, 512), "batch": 1024,
             "solve_batch": {64: 512, 128: 256, 256: 64, 512: 16, 1024: 4}, "repeats": 7},
}
INPUT_SIZE = 8
# The Jacobian batch is capped so that the (B, N, N) output stays near 64 MB in float64.
JACOBIAN_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class BenchRow:
    """One timed case.

    Attributes
    ----------
    op : {'step', 'jacobian', 'solve'}
    cell : str
    backend : str
    dtype : str
    batch : int
        States per call (B; smaller for large Jacobians, whose output is B N^2 numbers).
    hidden_size, state_size : int
        H and N (N = 2H for the LSTM).
    median_s, min_s : float
        Seconds per call, median and minimum over the repeats.
    per_state_us : float
        ``median_s / batch`` in microseconds.
    repeats, calls : int
        Repeats, and calls per repeat.
    note : str
        For 'solve': how many points converged and the most iterations.
    """

    op: str
    cell: str
    backend: str
    dtype: str
    batch: int
    hidden_size: int
    state_size: int
    median_s: float
    min_s: float
    per_state_us: float
    repeats: int
    calls: int
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _time(fn, repeats, min_time):
    """(median, min) seconds per call after one untimed warm-up call; calls per repeat."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(min_time / once))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times)), float(np.min(times)), calls


def gpu_status() -> str:
    """'available: <name>' or why the GPU backend cannot be timed here (e.g. 'no GPU: ...')."""
    from .backends import get_kernels
    from .errors import BackendUnavailableError, MissingDependencyError

    try:
        import cupy
    except ImportError:
        return "no GPU: CuPy is not installed (pip install 'fastfp-rnn[gpu]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # the CUDA driver is missing or broken
        return f"no GPU: CUDA reports {type(exc).__name__}: {exc}"
    if n == 0:
        return "no GPU: CUDA sees no device"
    try:
        get_kernels("gpu")
    except (BackendUnavailableError, MissingDependencyError) as exc:
        return f"GPU present but not usable: {exc}"
    return "available"


def machine_info() -> dict:
    import numba

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def run_bench(size: str = "default", *, repeats: int | None = None, min_time: float = 0.02,
              backends=("cpu",), dtype=np.float64, on_case=None) -> list[BenchRow]:
    """Time step, Jacobian and solve on random layers.

    Parameters
    ----------
    size : {'quick', 'default', 'full'}
        Which grid of cells and sizes (see ``SIZES``).
    repeats : int, optional
        Repeats per case (default per size).
    min_time : float
        Seconds a repeat lasts at least (cheap operations are called several times per repeat).
    backends : sequence of {'cpu', 'numpy', 'gpu'}
        Backends timed for step and Jacobian; the solve runs on the first.
    dtype : float32 or float64
    on_case : callable, optional
        Called as ``on_case(done, total)`` after every case (a progress bar).

    Returns
    -------
    list of BenchRow
    """
    import fastfp

    if size not in SIZES:
        raise InvalidOptionError(f"argument 'size': got {size!r}, expected one of {', '.join(map(repr, SIZES))}")
    grid = SIZES[size]
    repeats = grid["repeats"] if repeats is None else repeats
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InvalidOptionError(f"argument 'repeats': got {repeats!r}, expected an integer >= 1")
    if not (isinstance(min_time, (int, float)) and 0 < min_time <= 10):
        raise InvalidOptionError(f"argument 'min_time': got {min_time!r}, expected seconds in (0, 10]")
    backends = tuple(backends)
    for b in backends:
        fastfp.backends.get_kernels(b)  # fails now, naming what is missing
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    cases = [(cell, H) for cell in grid["cells"] for H in grid["hidden"]]
    total = len(cases) * (2 * len(backends) + 1)
    rows: list[BenchRow] = []

    def add(op, cell, backend, B, H, N, timing, note=""):
        med, mn, calls = timing
        rows.append(BenchRow(op, cell, backend, dtype.name, B, H, N, med, mn, med / B * 1e6, int(repeats), calls, note))
        if on_case is not None:
            on_case(len(rows), total)

    for cell, H in cases:
        params = fastfp.RNNParams.random(cell, hidden_size=H, input_size=INPUT_SIZE, seed=0, dtype=dtype)
        N = params.state_size
        B = grid["batch"]
        h = (0.5 * rng.standard_normal((B, N))).astype(dtype)
        x = (0.5 * rng.standard_normal(INPUT_SIZE)).astype(dtype)
        for backend in backends:
            add("step", cell, backend, B, H, N,
                _time(lambda: fastfp.step(params, h, x, backend=backend), repeats, min_time))
            Bj = min(B, max(4, JACOBIAN_ELEMENTS // (N * N)))
            add("jacobian", cell, backend, Bj, H, N,
                _time(lambda: fastfp.jacobian(params, h[:Bj], x, backend=backend), repeats, min_time))
        Bs = grid["solve_batch"].get(N) or grid["solve_batch"][min(grid["solve_batch"], key=lambda k: abs(k - N))]
        h0 = h[:Bs] if Bs <= B else (0.5 * rng.standard_normal((Bs, N))).astype(dtype)
        result = {}

        def solve():
            result["fp"] = fastfp.find_fixed_points(params, h0, x, backend=backends[0], dtype=dtype)

        timing = _time(solve, repeats, min_time)
        fp = result["fp"]
        add("solve", cell, backends[0], Bs, H, N, timing,
            f"hybrid: {int(fp.success.sum())}/{len(fp)} converged, <= {int(fp.nit.max())} iterations")
    return rows
