#!/usr/bin/env python3
"""Integration modes counted with and without a limit on how far each mode turns over the horizon.

The study runner counts a mode when |ln|lambda|| * horizon <= 1 (two-sided). A complex pair with
|lambda| ~ 1 passes that test whatever its angle, although a pair turning by 0.7 rad per step is a
9-step oscillation, not an integrator. This tool reads the saved distinct points of every network
of the given study folders (``<key>.fixed_points.npz`` with their eigenvalues, ``<key>.row.json``)
and prints, for the horizons L and L/2, the median count of the runner and the median count with
``integration_modes(..., max_rotation=1.0)`` (also |arg lambda| * horizon <= 1), with the median
modulus and angle of the top two eigenvalues. No network is retrained or re-solved.

    python tools/rotation_modes.py runs/paper runs/low-l2 runs/study-cell
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastfp import FixedPoints, analysis


def _median(fp, horizon, max_rotation):
    return analysis.integration_modes(fp, horizon=horizon, two_sided=True, max_rotation=max_rotation).median


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="study output folders (fastfp study --out)")
    ap.add_argument("--changed", action="store_true", help="only the networks whose counts change")
    args = ap.parse_args(argv)
    print("| folder | network | modes L: runner / rotation-limited | modes L/2: runner / rotation-limited "
          "| top two abs(lambda) | top two abs(arg lambda) (rad) |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        for fp_path in sorted(folder.glob("*.fixed_points.npz")):
            row = json.loads(fp_path.with_name(fp_path.name.replace(".fixed_points.npz", ".row.json")).read_text())
            fp = FixedPoints.load(fp_path)
            if len(fp) == 0:
                continue
            L = row["horizon"]
            counts = [(_median(fp, h, None), _median(fp, h, 1.0)) for h in (L, L / 2)]
            if args.changed and all(a == b for a, b in counts):
                continue
            lam = fp.eigvals[:, :2]
            mod = np.median(np.abs(lam), axis=0)
            ang = np.median(np.abs(np.angle(lam)), axis=0)
            print(f"| {folder.name} | {row['key']} | {counts[0][0]:g} / {counts[0][1]:g} | {counts[1][0]:g} / "
                  f"{counts[1][1]:g} | {mod[0]:.3f} {mod[1]:.3f} | {ang[0]:.3f} {ang[1]:.3f} |")


if __name__ == "__main__":
    main()
