#!/usr/bin/env python3
"""Why some networks of the study's battery miss the PR range of their fixed points.

For each network named (default: the misses of ``runs/paper``: LSTM N = 4, 5, ordered 5-class, and
the vanilla RNN at N = 3, 4, 5 that ``paper`` trained from PyTorch's init before it took the
orthogonal start, whose models stay in ``runs/paper``), with the saved model of ``--out``:

* reruns the search exactly as ``fastfp.study.run_network`` (same candidates, input ``the``, slow
  speed 1e-2) and prints the PR of the end points accepted at several speed limits
  ||F(h) - h||_inf <= 1e-2 (ours), 1.1e-2, 3e-2, and by the study's q < 5e-4, with how many
  end points land in each class region (argmax of the readout at the point), against the
  candidates' class regions: a class region with no accepted point is a corner of the simplex
  missing from the PR;
* the density-equalised PR (``fastfp.analysis.equalized_dimension``, resolution 0.1);
* curvature: the fraction of the variance of the N-th principal component of the accepted points
  (the first beyond N - 1) explained by a quadratic polynomial of the first N - 1 (R^2). Near 1, the
  extra dimension is the bending of an (N-1)-dimensional sheet, not scatter off it.

    python tools/pr_misses.py [--out runs/paper] [--all]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastfp import analysis, study
from fastfp import study as S
from fastfp.model import load_params
from fastfp.solvers import find_fixed_points


def _curvature_r2(X: np.ndarray, d: int) -> float:
    p = analysis.pca(X)
    Z = (X - p.mean) @ p.components.T
    if Z.shape[1] <= d:
        return float("nan")
    Y, extra = Z[:, :d], Z[:, d]
    cols = [np.ones(len(Y))] + [Y[:, i] for i in range(d)] + [Y[:, i] * Y[:, j] for i in range(d) for j in range(i, d)]
    F = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(F, extra, rcond=None)
    return float(1 - ((extra - F @ coef) ** 2).sum() / ((extra - extra.mean()) ** 2).sum())


def former_paper_vanilla(n: int) -> study.NetworkSpec:
    """The vanilla RNN 'paper' trained before it took the orthogonal start (PyTorch's init, lr 0.01,
    Adam eps 0.1, up to 12000 steps); its models stay in runs/paper under their keys."""
    return study.NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell="vanilla", hidden_size=64,
                             steps=12000, target_accuracy=0.995, eval_docs=2000, lr=0.01)


def probe(spec: study.NetworkSpec, out: str) -> list[str]:
    model = load_params(f"{out}/{spec.key}.model.npz")
    params = model.params.astype(np.float64)
    _, docs, _, _, h0 = S._candidates(spec, model, params, 2000, 256, 512)
    x = S._fp_input("neutral", model, docs)
    ends = find_fixed_points(params, h0, x, slow_ratio=0.05, slow_speed=1e-2, restart_steps=0)  # as the runner
    res = np.asarray(ends.residual)
    X = np.asarray(ends.x)
    H = params.hidden_size
    K = model.readout_weight.shape[0]
    _, q = S._study_accepted(params, ends, x, 5e-4)
    region = lambda P: np.bincount(np.argmax(model.logits(P[:, :H]), axis=1), minlength=K).tolist()  # noqa: E731
    dim = study.expectations(spec)["dimension"]
    name = S._COLUMNS[0][1](dict(task=spec.task, task_params=spec.task_params, cell=spec.cell,
                                 hidden=spec.hidden_size, seed=spec.seed, spec=spec.to_dict()))
    lines = [f"| {name} | candidates | {len(h0)} | {analysis.manifold_dimension(h0).participation_ratio:.2f} | "
             f"{analysis.equalized_dimension(h0, resolution=0.1).participation_ratio:.2f} | - | {region(h0)} |"]
    for label, keep in (("speed <= 1e-2 (ours)", res <= 1e-2), ("speed <= 1.1e-2", res <= 1.1e-2),
                        ("speed <= 3e-2", res <= 3e-2), ("q < 5e-4 (study)", q < 5e-4)):
        P = X[keep & np.isfinite(X).all(axis=1)]
        if len(P) < 2:
            lines.append(f"| {name} | {label} | {len(P)} | - | - | - | - |")
            continue
        pr = analysis.manifold_dimension(P).participation_ratio
        eq = analysis.equalized_dimension(P, resolution=0.1).participation_ratio
        lines.append(f"| {name} | {label} | {len(P)} | {pr:.2f} | {eq:.2f} | {_curvature_r2(P, dim):.2f} | {region(P)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/paper")
    ap.add_argument("--all", action="store_true", help="every network of the 'paper' battery, not only the misses")
    args = ap.parse_args()
    specs = study.battery("paper")
    if not args.all:
        # the misses: paper's LSTM at N = 4, 5 and ordered task at L2 5e-4, and its former vanilla RNN
        specs = [s for s in specs if (s.task == "categorical" and s.cell == "lstm" and s.n_outputs in (4, 5))
                 or (s.task == "ordered" and s.l2 == 5e-4)]
        specs[2:2] = [former_paper_vanilla(n) for n in (3, 4, 5)]
    print("| network | accepted | points | PR | PR equalised | curvature R^2 | points per class region |")
    print("|---|---|---|---|---|---|---|")
    for s in specs:
        for line in probe(s, args.out):
            print(line, flush=True)


if __name__ == "__main__":
    main()
