#!/usr/bin/env python3
"""Step and Jacobian timings of the Numba kernels vs the NumPy reference, as a Markdown table.

Runs the same calls as the pytest-benchmark suite in bench/ (the case grid, inputs and thread
pinning come from bench/_benchlib.py) without pytest: time.perf_counter, best of several repeats.
Both backends run on FASTFP_BENCH_THREADS threads (default 2). Jacobians whose output exceeds
FASTFP_BENCH_MAX_GIB (default 2 GiB) are listed as skipped.

    python tools/bench_table.py                     # full grid; several minutes on 2 cores
    python tools/bench_table.py --cells gru --ops step --batches 256

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import _benchlib as bl  # noqa: E402


def best_time(fn, args, budget: float) -> tuple[float, int, int]:
    """Best seconds per call over the repeats chosen by ``bl.plan``; (seconds, repeats, loops)."""
    seconds = bl.warm_up(fn, args)
    repeats, loops = bl.plan(seconds, budget=budget)
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            if loops == 1:
                t0 = time.perf_counter()
                out = fn(*args)
                elapsed = time.perf_counter() - t0
                del out  # freed outside the timing, as in pytest-benchmark's pedantic mode
            else:
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn(*args)
                elapsed = (time.perf_counter() - t0) / loops
            best = min(best, elapsed)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best, repeats, loops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=list(bl.CELLS))
    p.add_argument("--dtypes", nargs="+", default=list(bl.DTYPES))
    p.add_argument("--batches", nargs="+", type=int, default=list(bl.BATCHES))
    p.add_argument("--hidden", nargs="+", type=int, default=list(bl.HIDDEN))
    p.add_argument("--ops", nargs="+", default=list(bl.OPS), choices=bl.OPS)
    p.add_argument("--budget", type=float, default=0.6,
                   help="seconds of timed calls per case and backend (at least 3 repeats)")
    a = p.parse_args(argv)

    pinned = bl.PinnedThreads(bl.bench_threads())
    info = pinned.info()
    import numba
    import numpy as np

    load_start = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    skipped = []
    todo = bl.cases(ops=a.ops, cells=a.cells, dtypes=a.dtypes, batches=a.batches, hidden=a.hidden)
    for i, case in enumerate(todo, 1):
        reason = case.skip_reason()
        if reason:
            skipped.append((case, reason))
            print(f"[{i}/{len(todo)}] {case.id}: skipped", file=sys.stderr, flush=True)
            continue
        args = bl.make_args(case)
        times = {}
        for backend in bl.BACKENDS:
            times[backend], repeats, loops = best_time(bl.kernel(backend, case.op), args, a.budget)
            print(f"[{i}/{len(todo)}] {case.id} {bl.BACKEND_LABELS[backend]}: {times[backend] * 1e3:.3f} ms "
                  f"(best of {repeats} x {loops})", file=sys.stderr, flush=True)
        del args
        rows.append((case, times["numpy"], times["cpu"]))
    pinned.close()
    load_end = os.getloadavg()
    wall = time.perf_counter() - t_start

    def ms(t):
        return f"{t * 1e3:.3f}" if t < 0.01 else f"{t * 1e3:.1f}"

    print(f"fastfp kernels, {info['threads']} threads for both backends "
          f"(pools: {info['thread_pools']}; numba {info['numba_threads']}); "
          f"numpy {np.__version__}, numba {numba.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
          f"OPENBLAS_CORETYPE={info['openblas_coretype'] or 'unset'}; M = {bl.M}, x shared (1, M); "
          f"best of >= 3 repeats; {wall:.0f} s in all, load average {load_start[0]:.2f} before, "
          f"{load_end[0]:.2f} after (other processes on the machine skew the timings).\n")
    print("| cell | dtype | B | N | op | reference ms | numba ms | speed-up |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for case, t_ref, t_nb in rows:
        n = f"{case.N}" if case.N == case.H else f"{case.N} (H={case.H})"
        print(f"| {case.cell} | {case.dtype} | {case.B} | {n} | {case.op} | {ms(t_ref)} | {ms(t_nb)} | "
              f"{t_ref / t_nb:.2f}x |")
    if skipped:
        print()
        for case, reason in skipped:
            print(f"- skipped {case.id}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
