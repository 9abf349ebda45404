"""The structured GRU of the matrix-free benchmarks (bench_krylov.py, tools/bench_krylov_large.py).

PyTorch-like uniform weights at gain 2 plus a rank-2 term of strength 4 in the candidate's
recurrent kernel: 9 distinct roots (4 stable, the rest saddles) and slow directions, instead of
the single stable root of a default random GRU. Initial states: rollouts of 30 random input steps,
sampled with noise 0.5.
"""

from __future__ import annotations

import numpy as np

import fastfp


def structured_gru(N: int, M: int = 8, seed: int = 0):
    """(params float64, numpy Generator) for hidden size N."""
    rng = np.random.default_rng(seed)
    p = fastfp.RNNParams.random("gru", hidden_size=N, input_size=M, scale=2 / np.sqrt(N), seed=seed)
    w_ih, w_hh, b_ih, b_hh = [a.copy() for a in p.arrays(np.float64)]
    U = rng.choice([-1.0, 1.0], size=(N, 2))
    w_hh[2 * N:] += 4.0 * U @ U.T / N
    return fastfp.RNNParams("gru", w_ih, w_hh, b_ih, b_hh), rng


def initial_states(params, rng, B: int):
    xs = rng.standard_normal((B, 30, params.input_size))
    return fastfp.sample_states(fastfp.rollout(params, None, xs), B, noise=0.5, seed=0)
