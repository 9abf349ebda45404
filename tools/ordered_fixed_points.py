#!/usr/bin/env python3
"""Where the fixed points of the ordered 5-class GRU (3-word bank, L2 5e-4) lie, and why.

With the saved model of ``--out`` (the last network of ``fastfp.study.battery("paper")``):

* reruns the study runner's search (``fastfp.study._solve``: slow_ratio 0.05, slow speed 1e-2) from
  two candidate sets, the runner's 512 states visited on 256 test documents (all time steps) and
  512 final states of 2000 test documents (spread over the whole score range), with the input held
  at ``the``, the mean one-hot input (1/V each) and zero; prints the points accepted by ours
  (||F(h) - h||_inf <= 1e-2), by the study's tightest q < 5e-4 and its loosest q < 1e-2, with PR,
  n95 and the points per class region (argmax of the readout);
* the speed ||F(h, x) - h||_inf at the final states, by true class;
* the final states of 2000 test documents held at each input: the share still in their own
  class after n steps, and where they end after 500 steps.

    python tools/ordered_fixed_points.py [--out runs/paper]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastfp import analysis, study
from fastfp import study as S
from fastfp.dynamics import rollout, step
from fastfp.model import load_params
from fastfp.solvers import sample_states

INPUTS = ("neutral", "mean", "zero")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/paper")
    args = ap.parse_args()
    spec = [s for s in study.battery("paper") if s.task == "ordered" and s.l2 == 5e-4][0]
    model = load_params(f"{args.out}/{spec.key}.model.npz")
    params = model.params.astype(np.float64)
    H, K = params.hidden_size, spec.n_outputs
    E = np.asarray(model.embedding, dtype=np.float64)
    roll = lambda d: rollout(params, None, E[np.asarray(d.tokens)] * d.mask()[..., None], lengths=d.lengths)  # noqa: E731
    region = lambda P: np.bincount(np.argmax(model.logits(P[:, :H]), axis=1), minlength=K).tolist()  # noqa: E731

    test = spec.make_task(2000, np.random.default_rng([spec.seed, S._TEST]))
    docs = S._subset(test, 256)
    traj = roll(docs)
    visited = sample_states(traj, 512, noise=0.0, mask=docs.mask(), seed=np.random.default_rng([spec.seed, S._SAMPLE]))
    traj_all = roll(test)
    final = traj_all[np.arange(len(test.lengths)), np.asarray(test.lengths) - 1]
    labels = np.asarray(test.labels)
    finals = final[np.random.default_rng(1).choice(len(final), 512, replace=False)]
    vocab = list(model.vocab or test.vocab)
    n_the = (np.asarray(test.tokens) == vocab.index("the")).sum(axis=1)
    print("'the' tokens per document, mean by class:", [round(float(n_the[labels == k].mean()), 1) for k in range(K)],
          "max:", [int(n_the[labels == k].max()) for k in range(K)])

    def pr(P):
        return analysis.manifold_dimension(P) if len(P) >= 2 else None

    print("| candidates | input | accepted (ours) | PR | n95 | PR equalised | points per class region | "
          "q < 5e-4: n, PR, regions | q < 1e-2: n, PR, regions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cname, h0 in (("512 visited (runner)", visited), ("512 final states", finals)):
        print(f"| {cname} | (the candidates) | - | {pr(h0).participation_ratio:.2f} | {pr(h0).n_components_95} | - | {region(h0)} | - | - |")
        for name in INPUTS:
            x = S._fp_input(name, model, docs)
            _, kept, _, ends = S._solve(params, h0, x, 0.05, 1e-2)
            P = np.asarray(kept.x)
            _, q = S._study_accepted(params, ends, x, 5e-4)
            Xe = np.asarray(ends.x)
            tight, loose = Xe[q < 5e-4], Xe[q < 1e-2]
            d, dt, dl = pr(P), pr(tight), pr(loose)
            eq = analysis.equalized_dimension(P, resolution=0.1).participation_ratio if len(P) >= 2 else float("nan")
            f = lambda r: f"{r.participation_ratio:.2f}" if r else "-"  # noqa: E731
            print(f"| {cname} | {name} | {len(P)} | {f(d)} | {d.n_components_95 if d else '-'} | {eq:.2f} | "
                  f"{region(P) if len(P) else '-'} | {len(tight)}, {f(dt)}, {region(tight) if len(tight) else '-'} | {len(loose)}, {f(dl)}, {region(loose) if len(loose) else '-'} |")

    for name in INPUTS:
        x = S._fp_input(name, model, test)
        sp = np.abs(step(params, final, x, backend="numpy") - final).max(axis=1)
        print(f"speed_inf at the final states, median by class, x = {name}:",
              [round(float(np.median(sp[labels == k])), 3) for k in range(K)])
    for name in INPUTS:
        x = S._fp_input(name, model, test)
        h, kept_share = final.copy(), {}
        for n in range(1, 501):
            h = step(params, h, x, backend="numpy")
            if n in (10, 25, 50, 500):
                c = np.argmax(model.logits(h[:, :H]), axis=1)
                kept_share[n] = [int(round(100 * np.mean(c[labels == k] == k))) for k in range(K)]
        spread = float(np.linalg.norm(h - h.mean(axis=0), axis=1).max())
        last_speed = float(np.abs(step(params, h, x, backend="numpy") - h).max())
        print(f"held at x = {name}: % in own class after n steps {kept_share}; after 500 steps: regions "
              f"{region(h)}, max distance to their mean {spread:.1e}, speed_inf {last_speed:.1e}")


if __name__ == "__main__":
    main()
