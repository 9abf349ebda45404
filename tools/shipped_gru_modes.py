#!/usr/bin/env python3
"""Integration modes of the shipped GRU-64 3-class classifier under each fixed-point input.

Why `fastfp run` reports a median of 0 integration modes where the study expects N - 1 = 2: prints,
for the inputs x* = 0, the neutral word 'the' and the mean one-hot input, the exact roots, the slow
points (slow-manifold mode as `fastfp run`, without its restarts (restart_steps=0, as the table was measured), slow speed 1e-3 and 1e-2), their PR, the median top |lambda| and the median number
of integration modes (one- and two-sided, horizon L = 50 and L/2 = 25).

    python tools/shipped_gru_modes.py            # markdown table on stdout
"""

from __future__ import annotations

from importlib.resources import as_file

import numpy as np

import fastfp
from fastfp import analysis
from fastfp.cli import default_model_resource


def main() -> None:
    with as_file(default_model_resource()) as path:
        model = fastfp.load_params(path)
    p = model.params.astype(np.float64)
    data = fastfp.tasks.categorical(256, n_classes=3, length=50, seed=0)
    traj = fastfp.rollout(p, None, data.one_hot(np.float64), lengths=data.lengths)
    h0 = fastfp.sample_states(traj, 1024, noise=0.0, mask=data.mask(), seed=0)
    V = p.input_size
    inputs = {"zero": np.zeros(V), "the": np.eye(V)[list(model.vocab).index("the")], "mean": np.full(V, 1 / V)}
    print("| input x* | slow speed | exact roots (stable) | slow points (distinct) | PR | median top abs(lambda) "
          "| modes L=50 one-sided | two-sided | modes L/2=25 two-sided |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, x), speed in ((item, s) for item in inputs.items() for s in (1e-3, 1e-2)):
        exact = fastfp.find_fixed_points(p, h0, x, restart_steps=0)  # as the documented table was measured
        roots = exact[exact.success].unique(1e-3).decompose(p)
        slow = fastfp.find_fixed_points(p, h0, x, slow_ratio=0.05, slow_speed=speed, restart_steps=0)
        kept = slow[(slow.success | slow.is_slow_point) & (slow.residual <= speed)]
        d = kept.unique(1e-3).decompose(p)
        pr = analysis.manifold_dimension(kept).participation_ratio
        top = np.median(np.abs(d.eigvals[:, :3]), axis=0)
        m1 = analysis.integration_modes(d, horizon=50).median
        m2 = analysis.integration_modes(d, horizon=50, two_sided=True).median
        m3 = analysis.integration_modes(d, horizon=25, two_sided=True).median
        print(f"| {name} | {speed:g} | {len(roots)} ({int(roots.is_stable.sum())}) | {len(kept)} ({len(d)}) | {pr:.2f} | "
              f"{' '.join(f'{v:.3f}' for v in top)} | {m1:g} | {m2:g} | {m3:g} |")


if __name__ == "__main__":
    main()
