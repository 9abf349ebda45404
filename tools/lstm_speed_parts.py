#!/usr/bin/env python3
"""Where an LSTM's stalled end points still move: the hidden part h or the cell part c of the state.

For each LSTM network of a study folder (``<key>.model.npz`` and ``<key>.row.json``, a spec of the
named battery), reruns the runner's search with the options stored in its row (candidates, input,
slow speed) and prints, per class region (argmax of the readout at the end point): the end points,
those the runner keeps (a root or slow point with ||F(s) - s||_inf <= the slow speed over the joint
state s = [h, c]), and for the dropped ones the median speed over h alone and over c alone; the
largest h speed of a dropped point; the spread (mean per-coordinate standard deviation) of h and of
c over the candidates and the largest abs(c) among them; the PR of the kept points; and the PR of
the end points whose speed, with c's speed measured in units of its spread (times spread(h) /
spread(c); h unchanged), is within the same limit, whatever the solver's status (as the study's q
test). A single-part cell (GRU, UGRNN, vanilla) would be unchanged by that rescaling. Last, the
search run again with that scale in the solver (``find_fixed_points(speed_scale=part_speed_scale(...))``,
so points stop as slow once their part-scaled speed is within the limit): kept points, their PR and
the median integration modes at horizon L and L/2 (two-sided, as the runner).

    python tools/lstm_speed_parts.py --battery low-l2 --out runs/low-l2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastfp import analysis
from fastfp import study as S
from fastfp.dynamics import step
from fastfp.model import load_params
from fastfp.solvers import find_fixed_points, part_speed_scale


def probe(spec: S.NetworkSpec, out: Path) -> list[str]:
    # the runner's own options, so the search is the one the row measured
    opts = json.loads((out / f"{spec.key}.row.json").read_text())["options"]
    model = load_params(out / f"{spec.key}.model.npz")
    params = model.params.astype(np.float64)
    _, docs, _, _, h0 = S._candidates(spec, model, params, opts["n_test"], opts["n_rollout"], opts["n_states"])
    x = S._fp_input(opts["fp_input"], model, docs)
    limit = opts["slow_speed"]
    ends = find_fixed_points(params, h0, x, slow_ratio=opts["slow_ratio"], slow_speed=limit, restart_steps=0)
    X = np.asarray(ends.x)
    ok = np.isfinite(X).all(axis=1)
    X = X[ok]
    ours = S._kept_mask(ends, limit)[ok]
    H = params.hidden_size
    r = step(params, X, x, backend="numpy") - X
    speed_h, speed_c = np.abs(r[:, :H]).max(axis=1), np.abs(r[:, H:]).max(axis=1)
    spread_h, spread_c = h0[:, :H].std(axis=0).mean(), h0[:, H:].std(axis=0).mean()
    scale = part_speed_scale(params, h0)  # c's unit: spread_c / spread_h
    # status-agnostic, as the study's q test: the end point's speed with c in units of h's spread
    scaled = np.abs(r / scale).max(axis=1) <= limit
    K = model.readout_weight.shape[0]
    region = np.argmax(model.logits(X[:, :H]), axis=1)
    # the study table's network label: the settings that differ from the defaults (l2, init, ...)
    name = f"categorical N={spec.n_outputs} lstm-{spec.hidden_size} s{spec.seed}" + S._training(
        {"spec": spec.to_dict()})
    cells = []
    for k in range(K):
        inside = region == k
        if not inside.any():
            continue
        dropped = inside & ~ours
        tail = (f" h {np.median(speed_h[dropped]):.4f} c {np.median(speed_c[dropped]):.4f}" if dropped.any() else "")
        cells.append(f"{k}: {int(inside.sum())}/{int((ours & inside).sum())}{tail}")
    dropped = ~ours

    def pr(keep):
        return analysis.manifold_dimension(X[keep]).participation_ratio if keep.sum() > 1 else float("nan")

    top_h = f"{speed_h[dropped].max():.4f}" if dropped.any() else "-"
    # the solver itself in part units: a point stops once its part-scaled speed is within the limit
    ends_p = find_fixed_points(params, h0, x, slow_ratio=opts["slow_ratio"], slow_speed=limit, speed_scale=scale,
                               restart_steps=0)
    speed_p = np.abs((ends_p.fx - ends_p.x) / scale).max(axis=1)
    kept_p = ends_p[(ends_p.success | ends_p.is_slow_point) & (speed_p <= limit)]
    pr_p = analysis.manifold_dimension(kept_p).participation_ratio if len(kept_p) > 1 else float("nan")
    distinct_p = kept_p.unique(1e-3).decompose(params)
    modes_p = [analysis.integration_modes(distinct_p, horizon=hz, two_sided=True).median
               for hz in (spec.length, spec.length / 2)]
    line = (f"| {name} | {'; '.join(cells)} | {top_h} | {spread_h:.2f} / {spread_c:.2f} | "
            f"{np.abs(h0[:, H:]).max():.1f} | {int(ours.sum())}: {pr(ours):.2f} | {int(scaled.sum())}: {pr(scaled):.2f} | "
            f"{len(kept_p)}: {pr_p:.2f}, {modes_p[0]:g} / {modes_p[1]:g} |")
    return [line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--battery", default="low-l2", choices=S.BATTERIES)
    ap.add_argument("--out", default="runs/low-l2")
    a = ap.parse_args()
    out = Path(a.out)
    specs = [s for s in S.battery(a.battery) if s.cell == "lstm" and s.task == "categorical"
             and (out / f"{s.key}.row.json").exists()]
    specs.sort(key=lambda s: (s.seed, s.n_outputs))
    if not specs:
        raise SystemExit(f"{out}: no saved LSTM model of battery {a.battery!r} (run `fastfp study --battery "
                         f"{a.battery} --out {out}` first)")
    print("| network | per class region: end points/kept, median speed of h and of c of the dropped ones "
          "| largest h speed of a dropped point | spread h / c | max abs(c) | ours: kept, PR "
          "| c speed in units of its spread: kept, PR | solver in part units: kept, PR, modes L / L/2 |")
    print("|---|---|---|---|---|---|---|---|")
    for s in specs:
        for line in probe(s, out):
            print(line, flush=True)


if __name__ == "__main__":
    main()
