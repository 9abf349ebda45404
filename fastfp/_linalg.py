"""Batched dense solves through LAPACK (NumPy's stacked ``linalg.solve``), per-point robust.

For small systems LAPACK runs single-threaded and NumPy loops over the stack serially, so the
stack is split across a few Python threads (NumPy releases the GIL inside ``linalg``): measured
2x on 2 cores for 1024 systems of 64 x 64. From N = 128 up OpenBLAS already uses every core for
each system and splitting gains nothing, so it is not done.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["batched_solve", "split_rows", "SPLIT_BELOW_N"]

SPLIT_BELOW_N = 128
_MIN_PER_THREAD = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    # A forked child inherits the executor but not its threads: jobs would never run.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _solve_stack(A, b):
    """Solve one stack; returns (y, ok). A singular member makes NumPy raise for the whole
    stack, so then the members are solved one by one to find it."""
    n = len(A)
    if n == 0:
        return np.zeros_like(b), np.ones(0, bool)
    try:
        y = np.linalg.solve(A, b[..., None])[..., 0]
        ok = np.isfinite(y).all(axis=1)
    except np.linalg.LinAlgError:
        y = np.zeros_like(b)
        ok = np.zeros(n, dtype=bool)
        for i in range(n):
            try:
                y[i] = np.linalg.solve(A[i], b[i])
                ok[i] = np.isfinite(y[i]).all()
            except np.linalg.LinAlgError:
                pass
    y[~ok] = 0.0
    return y, ok


def batched_solve(A, b):
    """Solve A[i] y[i] = b[i]; A (B, N, N), b (B, N). Returns (y, ok): ok False where singular."""
    global _pool
    B, N = b.shape
    workers = min(_threads(), B // _MIN_PER_THREAD)
    if N >= SPLIT_BELOW_N or workers < 2:
        return _solve_stack(A, b)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="fastfp-solve")
    bounds = np.linspace(0, B, workers + 1).astype(int)
    futures = [_pool.submit(_solve_stack, A[lo:hi], b[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    parts = [f.result() for f in futures]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def split_rows(fn, n, *, min_rows=_MIN_PER_THREAD, chunks_per_thread=4):
    """Run fn(lo, hi) over consecutive row ranges covering range(n) on fastfp's thread pool.

    ``fn`` must release the GIL for most of its time (a ``nogil`` Numba kernel, NumPy's LAPACK).
    The rows go out in ``chunks_per_thread`` times as many chunks as threads, handed to whichever
    thread is free: on a loaded machine a thread that loses its core delays one small chunk, not
    half the batch (an OpenMP ``prange`` measured 3-4x slower than serial with another process
    busy on one of 2 cores). Returns the results of fn in row order.
    """
    global _pool
    threads = _threads()
    n_chunks = min(threads * chunks_per_thread, n // max(1, min_rows))
    if threads < 2 or n_chunks < 2:
        return [fn(0, n)]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fastfp-solve")
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    futures = [_pool.submit(fn, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return [f.result() for f in futures]
