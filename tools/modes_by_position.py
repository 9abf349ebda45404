#!/usr/bin/env python3
"""Where on the attractor manifold the integration modes are lost: slow modes by distance from its centre.

For each network of the given study folders (``<key>.row.json`` with its ``<key>.fixed_points.npz``,
the distinct points of the runner's search with their eigenvalues), splits the points into thirds by
their distance from the centroid of the points and prints, per third, the median of the d
largest |lambda| (d: the row's expected dimension, N - 1 for N categorical classes) and the share
of points with at least d modes of tau = 1/|ln|lambda|| >=
L (the runner's two-sided count at horizon L); then the median count over all points at L and L/2
(the table's "modes (L)" and "modes (L/2)", recomputed here from the eigenvalues as a check).

    python tools/modes_by_position.py runs/paper runs/low-l2 [--all]

Without ``--all`` only the categorical networks are listed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _counts(eigvals: np.ndarray, horizon: float) -> np.ndarray:
    mag = np.abs(eigvals)
    with np.errstate(divide="ignore"):
        tau = 1.0 / np.abs(np.log(mag))
    return (tau >= horizon).sum(axis=1)


def _network(row: dict, folder: Path) -> str | None:
    path = folder / row["files"]["fixed_points"]
    if not path.exists():  # the runner writes no file when no point was kept
        return None
    f = np.load(path)
    if "eigvals" not in f.files:
        return None
    # integration_modes leaves points with non-finite eigenvalues out of its median: so does this
    ok = np.isfinite(np.abs(f["eigvals"])).all(axis=1)
    X, ev = f["x"][ok], f["eigvals"][ok]
    if len(X) < 3:
        return None
    d = int(row["expected"]["dimension"])
    L = float(row["horizon"])
    mag = -np.sort(-np.abs(ev), axis=1)[:, :d]
    r = np.linalg.norm(X - X.mean(axis=0), axis=1)
    edges = np.quantile(r, [0, 1 / 3, 2 / 3, 1])
    at_l = _counts(ev, L)
    cells = []
    for i in range(3):
        s = (r >= edges[i]) & ((r < edges[i + 1]) if i < 2 else (r <= edges[i + 1]))
        med = " ".join(f"{v:.3f}" for v in np.median(mag[s], axis=0))
        cells.append(f"{med} ({np.mean(at_l[s] >= d):.0%})")
    half = _counts(ev, L / 2)
    l2 = row["spec"].get("l2")
    return (f"| {row['key'].rsplit('-', 1)[0]} | {l2:g} | {len(X)} | " + " | ".join(cells)
            + f" | {np.median(at_l):.1f} | {np.median(half):.1f} | {row['modes_median']} | {row['modes_median_half']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", default=["runs/paper"])
    ap.add_argument("--all", action="store_true", help="also the ordered, multi-label and correlated networks")
    a = ap.parse_args()
    for folder in map(Path, a.folders):
        if not folder.is_dir():
            raise SystemExit(f"{folder}: no such study folder (run `fastfp study --battery ... --out {folder}` first)")
    print("| network | L2 | points | inner third: top abs(lambda) (share >= N-1 modes at L) | middle third | outer third "
          "| modes (L) here | modes (L/2) here | modes (L) row | modes (L/2) row |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in map(Path, a.folders):
        for p in sorted(folder.glob("*.row.json")):
            row = json.loads(p.read_text())
            if row["task"] != "categorical" and not a.all:
                continue
            line = _network(row, folder)
            if line:
                print(line)


if __name__ == "__main__":
    main()
