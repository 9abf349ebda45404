"""Print a Markdown table of the solver benchmark (same protocol as bench/bench_solvers.py).

    python tools/bench_solvers_table.py [--repeats 3] [--threads 2]

Columns: network, method, seconds (best of --repeats for the fastfp Newton methods and the
FixedPointFinder baseline, one run for fastfp's Adam), speed-up over the FixedPointFinder baseline, fraction of exact fixed points
(residual < 1e-10 by the NumPy reference), distinct fixed points after merging at 1e-3, median q.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba
    from threadpoolctl import threadpool_limits

    import _solverlib as sl

    numba.set_num_threads(args.threads)
    rows = []
    with threadpool_limits(limits=args.threads):
        try:
            import torch

            torch.set_num_threads(args.threads)
            methods = sl.METHODS
        except ImportError:
            methods = tuple(m for m in sl.METHODS if m != "fpf_baseline")
        # The baseline runs in a fresh process that imports only torch (see run_baseline_isolated).
        setups = {network: sl.setup(network) for network in sl.NETWORKS}
        results = {network: {} for network in sl.NETWORKS}
        order = [m for m in methods if m == "fpf_baseline"] + [m for m in methods if m != "fpf_baseline"]
        for method in order:
            for network in sl.NETWORKS:
                params, h0, x = setups[network]
                if method == "fpf_baseline":
                    # Best of the repeats too: single runs of it varied 4.2-6.6 s here.
                    best, states = min((sl.run_baseline_isolated(network, args.threads) for _ in range(args.repeats)),
                                       key=lambda t: t[0])
                else:
                    sl.run(method, params, h0[:8], x)
                    reps = 1 if method == "adam" else args.repeats
                    best, states = min((sl.timed(method, params, h0, x) for _ in range(reps)), key=lambda t: t[0])
                results[network][method] = (best, sl.quality(params, states, x))
                print(f"{network} {method}: {best:.3f} s", file=sys.stderr)
        for network in sl.NETWORKS:
            base = results[network].get("fpf_baseline", (None,))[0]
            for method in methods:
                sec, q = results[network][method]
                speed = f"{base / sec:.1f}x" if base else "n/a"
                rows.append(f"| {network} | {method} | {sec:.3f} | {speed} | {q['frac_converged']:.3f} | "
                            f"{q['distinct']} | {q['median_q']:.2e} |")
    print(f"{len(sl.NETWORKS)} networks, {sl.N_STATES} initial states (noise {sl.NOISE}), x = 0, float64, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}\n")
    print("| network | method | seconds | vs baseline | frac exact (<1e-10) | distinct (1e-3) | median q |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
