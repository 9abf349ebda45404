#!/usr/bin/env python3
"""Mean, standard deviation and range over seeds of the study's measures, per (task, classes, cell, size).

Reads the ``<key>.row.json`` files of the given study folders (default ``runs/paper`` and
``runs/extra``), groups the rows that differ only by seed, and prints a markdown table for the
groups with at least two seeds: test accuracy, PR of the fixed points (raw, equalised, study-q),
n95, PR of the states, median integration modes at L/2 and L, word-count dimension and the largest deviation of the
readout angles from the simplex angle.

    python tools/seed_spread.py [DIR ...]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from fastfp import study

FIELDS = [
    ("acc", "test_accuracy", 3),
    ("PR fixed points", "pr_fixed_points", 2),
    ("PR fp equalised", "pr_fixed_points_equalized", 2),
    ("PR fp study-q", "pr_fixed_points_study_q", 2),
    ("n95 fp", "n95_fixed_points", 1),
    ("PR states", "pr_states", 2),
    ("modes (L/2)", "modes_median_half", 1),
    ("modes (L)", "modes_median", 1),
    ("word-count dim", "wordcount_dimension", 1),
    ("readout max dev (deg)", "readout_max_deviation", 1),
    ("order inv", "order_invariance", 3),
]


def main(dirs: list[str]) -> None:
    groups = defaultdict(dict)
    for d in dirs:
        for path in sorted(Path(d).glob("*.row.json")):
            row = json.loads(path.read_text())
            spec = dict(row["spec"])
            seed = spec.pop("seed")
            # only rows measured with this version's options (others are stale leftovers)
            if row.get("options") != study._measure_options({}):
                continue
            groups[json.dumps(spec, sort_keys=True)][seed] = row
    print("| network | seeds | " + " | ".join(h for h, _, _ in FIELDS) + " |")
    print("|---|---|" + "---|" * len(FIELDS))
    for key, by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        rows = [by_seed[s] for s in sorted(by_seed)]
        r0 = dict(rows[0], seed="*")
        name = study._COLUMNS[0][1](r0).replace("s*", "").strip()
        cells = []
        for _, field, nd in FIELDS:
            v = np.array([np.nan if r.get(field) is None else float(r[field]) for r in rows])
            if np.isnan(v).all():
                cells.append("-")
                continue
            cells.append(f"{np.nanmean(v):.{nd}f} ± {np.nanstd(v, ddof=1):.{nd}f} "
                         f"({np.nanmin(v):.{nd}f}-{np.nanmax(v):.{nd}f})")
        print(f"| {name} | {','.join(str(s) for s in sorted(by_seed))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:] or ["runs/paper", "runs/extra"])
