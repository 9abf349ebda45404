"""Speed-up of 2 local Dask workers over 1 on a battery of small fixed-point problems.

The battery: ``--tasks`` random GRUs (hidden size ``--hidden``, input size 8, one weights file
each), every task loading its weights from the file, solving ``--states`` initial states with the
default hybrid solver and merging the points (``unique``), as a study's per-network analysis does.
Each case runs on a LocalCluster of 1 or 2 single-threaded worker processes (fastfp's default
cluster settings). Two timings per case:

* ``battery``: ``run_tasks`` on a cluster already started and warmed up (every worker has imported
  fastfp and loaded the Numba kernels), i.e. the scaling of the tasks themselves;
* ``end to end``: ``run_tasks(..., n_workers=k)`` from nothing, cluster start and warm-up included;

and a control: as many tasks that only sleep 0.5 s each, on the warm cluster. They need no core,
so their ratio shows whether the workers really run tasks side by side, whatever else the machine
is doing.

Run::

    python bench/bench_distributed.py                 # Markdown table on stdout (~1 min on 2 cores)
    python bench/bench_distributed.py --tasks 16 --hidden 48
    python -m pytest bench/bench_distributed.py       # the same battery as pytest-benchmark entries

Run from the repository root with the fastfp under test importable (installed, or
``PYTHONPATH=.``): the worker processes import this file's task function and fastfp.

On a machine whose cores are shared the ratio is indicative only.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import fastfp
from fastfp import distributed as fd

# Defaults of the script and the sizes of the pytest entries (FASTFP_BENCH_DIST_TASKS, _HIDDEN, _STATES).
N_TASKS = int(os.environ.get("FASTFP_BENCH_DIST_TASKS", 8))
HIDDEN = int(os.environ.get("FASTFP_BENCH_DIST_HIDDEN", 64))
STATES = int(os.environ.get("FASTFP_BENCH_DIST_STATES", 1024))
INPUTS = 8
SLEEP_S = 0.5  # the control battery: as many tasks that each sleep this long


@dataclass(frozen=True)
class BenchSpec:
    name: str
    weights: str
    seed: int
    states: int

    @property
    def key(self) -> str:
        return self.name


def bench_task(spec: BenchSpec, out_dir: Path) -> dict:
    params = fastfp.load(spec.weights).params
    h0 = np.random.default_rng(spec.seed).uniform(-1, 1, size=(spec.states, params.state_size))
    t0, c0 = time.perf_counter(), time.process_time()
    fp = fastfp.find_fixed_points(params, h0)
    distinct = fp.unique(1e-3)
    distinct.save(out_dir / f"{spec.key}.npz")
    # CPU time of the whole worker process: above the wall time when the solver's own threads
    # (batched LAPACK solves split across the cores the process may use) ran in parallel.
    return {"points": len(fp), "converged": int(fp.success.sum()), "distinct": len(distinct),
            "task_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


@dataclass(frozen=True)
class SleepSpec:
    name: str
    seconds: float

    @property
    def key(self) -> str:
        return self.name


def sleep_task(spec: SleepSpec, out_dir: Path) -> dict:
    """A task that waits without using a core: the control that shows Dask's own concurrency."""
    time.sleep(spec.seconds)
    return {"slept_s": spec.seconds}


def make_battery(root: Path, n_tasks=N_TASKS, hidden=HIDDEN, states=STATES) -> list:
    weights = root / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    specs = []
    for i in range(n_tasks):
        path = weights / f"gru-{i}.npz"
        fastfp.save_params(path, fastfp.RNNParams.random("gru", hidden, INPUTS, scale=2.5 / np.sqrt(hidden), seed=i))
        specs.append(BenchSpec(f"gru-{i}", str(path), seed=100 + i, states=states))
    return specs


def _warm(weights: str) -> int:
    """Import fastfp and load the solver's kernels in this worker (outside the timing)."""
    params = fastfp.load(weights).params
    fastfp.find_fixed_points(params, np.zeros((2, params.state_size)), maxiter=2).unique(1e-3)
    return os.getpid()


def start_cluster(n_workers: int):
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": "1"},
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(n_workers)
    return cluster, client


def time_battery(specs, n_workers: int, root: Path) -> dict:
    """Warm battery time and end-to-end time for one worker count."""
    cluster, client = start_cluster(n_workers)
    try:
        client.run(_warm, specs[0].weights)
        t0 = time.perf_counter()
        report = fd.run_tasks(specs, bench_task, root / f"warm-{n_workers}", client=client, progress=False)
        battery = time.perf_counter() - t0
        naps = [SleepSpec(f"nap-{i}", SLEEP_S) for i in range(len(specs))]
        t0 = time.perf_counter()
        fd.run_tasks(naps, sleep_task, root / f"sleep-{n_workers}", client=client, progress=False)
        sleep = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    t0 = time.perf_counter()
    fd.run_tasks(specs, bench_task, root / f"cold-{n_workers}", n_workers=n_workers, progress=False)
    cold = time.perf_counter() - t0
    return {"workers": n_workers, "battery_s": battery, "end_to_end_s": cold, "sleep_s": sleep,
            "task_s": sum(r["task_s"] for r in report.rows), "cpu_s": sum(r["cpu_s"] for r in report.rows),
            "rows": report.rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=N_TASKS)
    ap.add_argument("--hidden", type=int, default=HIDDEN)
    ap.add_argument("--states", type=int, default=STATES)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = make_battery(root, args.tasks, args.hidden, args.states)
        results = [time_battery(specs, k, root) for k in (1, 2)]
    load_after = os.getloadavg()[0]
    one, two = results
    rows = one["rows"]
    print(f"{args.tasks} GRUs (H = {args.hidden}, M = {INPUTS}), {args.states} initial states each, hybrid solver + "
          f"unique; {rows[0]['converged']}/{rows[0]['points']} converged and {rows[0]['distinct']} distinct in the "
          f"first task. fastfp {fastfp.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"load average {load_before:.2f} before, {load_after:.2f} after.\n")
    print("| workers | battery s (warm cluster) | sum of task wall s | sum of task CPU s | end to end s (cluster start included) "
          f"| control: {args.tasks} x {SLEEP_S} s sleeps, s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['workers']} | {r['battery_s']:.2f} | {r['task_s']:.2f} | {r['cpu_s']:.2f} | {r['end_to_end_s']:.2f} "
              f"| {r['sleep_s']:.2f} |")
    print(f"\nspeed-up of 2 workers over 1: {one['battery_s'] / two['battery_s']:.2f}x (warm battery), "
          f"{one['end_to_end_s'] / two['end_to_end_s']:.2f}x (end to end), "
          f"{one['sleep_s'] / two['sleep_s']:.2f}x (control: sleeping tasks, no core needed)")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- pytest-benchmark
try:
    import pytest
except ImportError:  # the script needs no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def battery(tmp_path_factory):
        pytest.importorskip("distributed")
        return make_battery(tmp_path_factory.mktemp("battery"))

    @pytest.mark.parametrize("n_workers", [1, 2])
    def test_battery(benchmark, battery, tmp_path, n_workers):
        cluster, client = start_cluster(n_workers)
        try:
            client.run(_warm, battery[0].weights)
            runs = iter(range(100))

            def run():
                fd.run_tasks(battery, bench_task, tmp_path / f"run-{next(runs)}", client=client, progress=False)

            benchmark.group = f"battery of {len(battery)} GRUs (H={HIDDEN}, {STATES} states)"
            benchmark.extra_info.update(workers=n_workers, tasks=len(battery), hidden=HIDDEN, states=STATES)
            benchmark.pedantic(run, rounds=2, iterations=1)
        finally:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
