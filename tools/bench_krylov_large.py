"""Matrix-free Newton-Krylov vs dense Newton at large N (issue: GPU backend and matrix-free solvers).

The structured GRU of bench/_krylovlib.py (9 distinct roots, slow directions). Each case runs in its
own process so that its peak RSS is its own.

    python tools/bench_krylov_large.py --n 2048 --b 256 --jacobian matrix_free --eigs 4
    python tools/bench_krylov_large.py --n 2048 --b 256 --jacobian dense
    python tools/bench_krylov_large.py --n 8192 --b 256 --jacobian matrix_free
"""

from __future__ import annotations

import argparse
import os
import sys
import json
import resource
import time

import numpy as np

import fastfp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from _krylovlib import initial_states, structured_gru  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--b", type=int, default=256)
    ap.add_argument("--jacobian", choices=["dense", "matrix_free"], default="matrix_free")
    ap.add_argument("--eigs", type=int, default=0, help="check top-8 eigs against dense eig on this many points")
    ap.add_argument("--ncv", type=int, default=None, help="Krylov dimension of top_eigs")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    p, rng = structured_gru(a.n)
    h0 = initial_states(p, rng, a.b)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    fp = fastfp.find_fixed_points(p, h0, method="newton", jacobian=a.jacobian, batch_size="auto")
    seconds = time.perf_counter() - t
    out = {
        "N": a.n, "B": a.b, "jacobian": a.jacobian, "seconds": round(seconds, 2),
        "converged": int(fp.success.sum()), "max_residual_inf": float(fp.residual.max()),
        "mean_newton_iterations": float(fp.nit.mean()),
        "jv_per_point": fp.metadata.get("n_matvec", 0) / a.b,
        "distinct_roots": len(fp[fp.success].unique(1e-4)),
        "rss_before_solve_MiB": round(base), "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    # Independent check of the residual: the NumPy reference in float64.
    r = fastfp.step(p, fp.x, np.zeros(8), backend="numpy") - fp.x
    out["max_residual_reference"] = float(np.abs(r).max())
    if a.eigs:
        pts = fp[fp.success].unique(1e-4)[: a.eigs]
        t = time.perf_counter()
        te = fastfp.top_eigs(p, pts.x, pts.inputs, k=8, ncv=a.ncv, tol=1e-12)
        out["top8_converged"] = [bool(c) for c in te.converged]
        out["top8_jv_per_point"] = [int(n) for n in te.nit]
        out["top8_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        J = fastfp.jacobian(p, pts.x, pts.inputs)
        lam = np.linalg.eigvals(J)
        out["dense_eig_seconds"] = round(time.perf_counter() - t, 2)
        lam = np.take_along_axis(lam, np.argsort(-np.abs(lam), axis=1), axis=1)
        mags = np.abs(lam[:, :8])
        out["top8_max_abs_diff_magnitudes"] = float(np.abs(-np.sort(-np.abs(te.eigvals), axis=1) - mags).max())
        out["top8_max_dist_to_dense_eigenvalue"] = float(np.abs(te.eigvals[:, :, None] - lam[:, None, :]).min(axis=2).max())
        out["top8_lambda1"] = [float(v) for v in mags[:, 0]]
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
