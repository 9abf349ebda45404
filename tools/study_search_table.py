#!/usr/bin/env python3
"""fastfp's search beside the study's own search (`fastfp.study.study_search`), per network.

Reads the ``<key>.row.json`` files of the given study folders (default ``runs/paper`` and
``runs/low-l2``) and prints a markdown table: for fastfp's slow-manifold search the points kept,
PR, n95 and median integration modes at L and L/2, the same for the study's search (Adam lr 0.01
until the batch's mean q < 5e-4, points with q < 5e-4 merged within 0.025) with the steps it ran,
and which of the checks (PR in range, modes (L), modes (L/2) equal to N - 1) each search passes.
Rows measured before the study's search was part of the runner are skipped with a note.

    python tools/study_search_table.py [DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastfp import study


def _f(v, nd=2):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _passes(pr, modes, modes_half, exp):
    lo_hi = exp["pr_range"]
    dim = exp["dimension"]
    marks = []
    if lo_hi is not None:
        marks.append("pr" if pr is not None and lo_hi[0] <= pr <= lo_hi[1] else "~~pr~~")
    marks.append("L" if modes == dim else "~~L~~")
    marks.append("L/2" if modes_half == dim else "~~L/2~~")
    return " ".join(marks)


def main(dirs: list[str]) -> None:
    for d in dirs:
        if not Path(d).is_dir():
            sys.exit(f"{d}: no such folder (give the --out folders of `fastfp study`)")
    print("| network | acc | PR range | fastfp: kept, PR, n95, modes L / L/2 | checks | "
          "study's search: steps, points, PR, n95, modes L / L/2 | checks |")
    print("|---|---|---|---|---|---|---|")
    skipped = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.row.json")):
            r = json.loads(path.read_text())
            if r.get("n_study_procedure") is None:
                skipped.append(path.name)
                continue
            exp = r["expected"]
            name = study._COLUMNS[0][1](r)
            rng = "-" if not exp["pr_range"] else "%.2f-%.2f" % tuple(exp["pr_range"])
            ours = (f"{r['n_kept']}, {_f(r['pr_fixed_points'])}, {_f(r['n95_fixed_points'])}, "
                    f"{_f(r['modes_median'], 1)} / {_f(r['modes_median_half'], 1)}")
            theirs = (f"{r['nit_study_procedure']}, {r['n_study_procedure']}, {_f(r['pr_fixed_points_study_procedure'])}, "
                      f"{_f(r['n95_fixed_points_study_procedure'])}, {_f(r['modes_median_study_procedure'], 1)} / "
                      f"{_f(r['modes_median_half_study_procedure'], 1)}")
            print(f"| {name} | {_f(r['test_accuracy'], 3)} | {rng} | {ours} | "
                  f"{_passes(r['pr_fixed_points'], r['modes_median'], r['modes_median_half'], exp)} | {theirs} | "
                  f"{_passes(r['pr_fixed_points_study_procedure'], r['modes_median_study_procedure'], r['modes_median_half_study_procedure'], exp)} |")
    if skipped:
        print(f"\n({len(skipped)} rows measured without the study's search skipped: rerun `fastfp study` on their folder.)")


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:] or ["runs/paper", "runs/low-l2"])
