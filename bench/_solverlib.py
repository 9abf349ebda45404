"""Shared set-up of the fixed-point solver benchmarks (``bench/bench_solvers.py`` and
``tools/bench_solvers_table.py``): networks, initial states, the runs and their quality metrics.

Protocol (issue "fixed-point solvers"): 1024 initial states sampled with noise 0.5 from the
trajectories of 128 test documents of the network's task, input held at zero, float64; an exact
fixed point is a state with ||F(x) - x||_inf < 1e-10 re-evaluated by the NumPy reference; distinct
points are the converged ones merged at 1e-3.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

import fastfp

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
BENCH_DATA = pathlib.Path(__file__).resolve().parent / "data"  # tools/make_classifier_fixtures.py --bench
NETWORKS = ("gru64_cat3", "lstm32_cat3") + tuple(
    name for name in ("gru128_cat3", "gru256_cat3") if (BENCH_DATA / f"{name}.npz").exists()
)
METHODS = ("fpf_baseline", "hybrid", "newton", "adam")  # baseline first: see tools/bench_solvers_table.py
N_STATES = 1024
NOISE = 0.5
ATOL = 1e-10


def setup(network: str, n_states: int = N_STATES):
    """(params float64, initial states (n, N), input (M,)) for a fixture network."""
    path = DATA / f"{network}.npz"
    model = fastfp.load_params(path if path.exists() else BENCH_DATA / f"{network}.npz")
    params = model.params.astype(np.float64)
    task = model.metadata.get("task_params", {})
    data = fastfp.tasks.categorical(128, n_classes=int(task.get("n_classes", 3)), seed=12345)
    traj = fastfp.rollout(params, None, data.one_hot(np.float64), lengths=data.lengths)
    h0 = fastfp.sample_states(traj, n_states, noise=NOISE, seed=0)
    return params, h0, np.zeros(params.input_size)


def run(method: str, params, h0, x):
    """Final states (n, N) of one method; the timed part."""
    if method == "fpf_baseline":
        from _fpf_baseline import fpf_adam

        states, _ = fpf_adam(params, h0, x)
        return states
    return fastfp.find_fixed_points(params, h0, x, method=method, atol=ATOL).x


_BASELINE_SCRIPT = """
import sys, time, numpy as np
import torch  # first: Numba's OpenMP pool, started before torch, slowed torch 3-7x in one process
torch.set_num_threads(int(sys.argv[3]))
sys.path.insert(0, sys.argv[1])
import _solverlib as sl
from _fpf_baseline import fpf_adam
params, h0, x = sl.setup(sys.argv[2])
fpf_adam(params, h0[:8], x, max_iters=5)
t0 = time.perf_counter()
states, iters = fpf_adam(params, h0, x)
seconds = time.perf_counter() - t0
np.savez(sys.argv[4], states=states, seconds=seconds, iters=iters)
"""


def run_baseline_isolated(network: str, threads: int):
    """The baseline in a fresh process that imports only torch (as its users run it).

    Returns (seconds of the solve alone, final states). In one process with Numba's thread pool
    the same run took 3-7x longer, which would flatter fastfp."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "baseline.npz"
        subprocess.run(
            [sys.executable, "-c", _BASELINE_SCRIPT, str(pathlib.Path(__file__).parent), network, str(threads), str(out)],
            check=True,
        )
        with np.load(out) as data:
            return float(data["seconds"]), data["states"]


def quality(params, states, x) -> dict:
    """Fraction of exact fixed points and number of distinct ones, judged by the reference."""
    F = fastfp.step(params, states, x, backend="numpy")
    residual = np.abs(F - states).max(axis=1)
    q = 0.5 * ((F - states) ** 2).sum(axis=1)
    conv = residual < ATOL
    if conv.any():
        n = int(conv.sum())
        pts = fastfp.FixedPoints(
            x=states[conv], x0=states[conv], inputs=np.broadcast_to(x, (n, len(x))).copy(), fx=F[conv],
            residual=residual[conv], q=q[conv], grad_norm=np.zeros(n), status=np.zeros(n, np.int8),
            nit=np.zeros(n, int),
        )
        distinct = len(pts.unique(1e-3))
    else:
        distinct = 0
    return {"frac_converged": float(conv.mean()), "distinct": distinct, "median_q": float(np.median(q))}


def timed(method, params, h0, x):
    t0 = time.perf_counter()
    states = run(method, params, h0, x)
    return time.perf_counter() - t0, states
