#!/usr/bin/env python3
"""Where an LSTM's stalled end points still move: the hidden part h or the cell part c of the state.

For each LSTM network of a study folder (``<key>.model.npz``, a spec of the named battery), reruns
the runner's search (same candidates, input ``the``, slow speed 1e-2) and prints, per class region
(argmax of the readout at the end point): the end points, those our acceptance keeps
(||F(s) - s||_inf <= 1e-2 over the joint state s = [h, c]), and the median of the speed over h
alone and over c alone; then the spread (mean per-coordinate standard deviation) of h and of c over
the candidates, and the PR of the end points when each part's speed is measured in units of its
own spread (the c speed times spread(h) / spread(c), the h speed unchanged, limit 1e-2 as ours).
A single-part cell (GRU, UGRNN, vanilla) would be unchanged by that rescaling.

    python tools/lstm_speed_parts.py --battery low-l2 --out runs/low-l2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastfp import analysis, study
from fastfp import study as S
from fastfp.dynamics import rollout, step
from fastfp.model import load_params
from fastfp.solvers import find_fixed_points, sample_states


def probe(spec: study.NetworkSpec, out: Path) -> list[str]:
    model = load_params(out / f"{spec.key}.model.npz")
    params = model.params.astype(np.float64)
    test = spec.make_task(2000, np.random.default_rng([spec.seed, S._TEST]))
    docs = S._subset(test, 256)
    E = np.asarray(model.embedding, dtype=np.float64)
    xs = E[np.asarray(docs.tokens)] * docs.mask()[..., None]
    traj = rollout(params, None, xs, lengths=docs.lengths)
    h0 = sample_states(traj, 512, noise=0.0, mask=docs.mask(), seed=np.random.default_rng([spec.seed, S._SAMPLE]))
    x = S._fp_input("neutral", model, docs)
    ends = find_fixed_points(params, h0, x, slow_ratio=0.05, slow_speed=1e-2)
    X = np.asarray(ends.x)
    ok = np.isfinite(X).all(axis=1)
    X = X[ok]
    H = params.hidden_size
    r = step(params, X, x, backend="numpy") - X
    speed_h, speed_c = np.abs(r[:, :H]).max(axis=1), np.abs(r[:, H:]).max(axis=1)
    ours = np.maximum(speed_h, speed_c) <= 1e-2
    spread_h, spread_c = h0[:, :H].std(axis=0).mean(), h0[:, H:].std(axis=0).mean()
    scaled = np.maximum(speed_h, speed_c * spread_h / spread_c) <= 1e-2
    K = model.readout_weight.shape[0]
    region = np.argmax(model.logits(X[:, :H]), axis=1)
    name = f"categorical N={spec.n_outputs} lstm-{spec.hidden_size} s{spec.seed} (l2 {spec.l2:g})"
    per = "; ".join(f"{k}: {int((region == k).sum())}/{int((ours & (region == k)).sum())} "
                    f"h {np.median(speed_h[region == k]):.4f} c {np.median(speed_c[region == k]):.4f}"
                    for k in range(K) if (region == k).any())
    def pr(keep):
        return analysis.manifold_dimension(X[keep]).participation_ratio if keep.sum() > 1 else float("nan")

    line = (f"| {name} | {per} | {spread_h:.2f} / {spread_c:.2f} | {int(ours.sum())}: {pr(ours):.2f} "
            f"| {int(scaled.sum())}: {pr(scaled):.2f} |")
    return [line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--battery", default="low-l2", choices=study.BATTERIES)
    ap.add_argument("--out", default="runs/low-l2")
    a = ap.parse_args()
    out = Path(a.out)
    specs = [s for s in study.battery(a.battery) if s.cell == "lstm" and s.task == "categorical"
             and (out / f"{s.key}.model.npz").exists()]
    if not specs:
        raise SystemExit(f"{out}: no saved LSTM model of battery {a.battery!r} (run `fastfp study --battery "
                         f"{a.battery} --out {out}` first)")
    print("| network | per class region: end points/kept, median speed of h and of c | spread h / c "
          "| ours: kept, PR | c speed in units of its spread: kept, PR |")
    print("|---|---|---|---|---|")
    for s in specs:
        for line in probe(s, out):
            print(line, flush=True)


if __name__ == "__main__":
    main()
