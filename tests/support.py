"""Helpers shared by the test modules (imported as ``support``)."""

from __future__ import annotations

import numpy as np

import fastfp
from fastfp import RNNParams

# (cell, nonlinearity): every cell of fastfp.CELLS, and the vanilla cell with both activations.
VARIANTS = [
    ("vanilla", "tanh"),
    ("vanilla", "relu"),
    ("gru", "tanh"),
    ("gru_reset_before", "tanh"),
    ("ugrnn", "tanh"),
    ("lstm", "tanh"),
]
VARIANT_IDS = ["vanilla-tanh", "vanilla-relu", "gru", "gru_reset_before", "ugrnn", "lstm"]

OPS = ("step", "jacobian", "input_jacobian", "jvp", "vjp")

# Tolerances for Numba vs reference (same dtype), and for float32 results vs the float64 reference.
TOL = {
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
    np.dtype(np.float32): dict(rtol=1e-5, atol=5e-6),
}


def make_params(cell, nonlinearity="tanh", H=5, M=3, *, scale=None, seed=0, dtype=np.float64) -> RNNParams:
    """Random params whose gates are spread over their non-linear range.

    The default scale 2.5/sqrt(H) is well above PyTorch's 1/sqrt(H) so that sigmoids are not all near
    0.5 and tanh's are not all in their linear part.
    """
    if scale is None:
        scale = 2.5 / np.sqrt(H)
    return RNNParams.random(cell, H, M, scale=scale, nonlinearity=nonlinearity, seed=seed, dtype=dtype)


def random_states(rng, params, B, dtype=np.float64, scale=1.0):
    """B random states (B, N), or one state (N,) when B is None."""
    shape = (params.state_size,) if B is None else (B, params.state_size)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def random_inputs(rng, params, B, dtype=np.float64):
    """Shared input (M,) when B is None, else one per state (B, M)."""
    shape = (params.input_size,) if B is None else (B, params.input_size)
    return rng.standard_normal(shape).astype(dtype)


def call(op, params, h, x, vec=None, backend="cpu"):
    """Call fastfp.<op>; ``vec`` is the tangent (jvp) or cotangent (vjp)."""
    f = getattr(fastfp, op)
    if op in ("jvp", "vjp"):
        return f(params, h, x, vec, backend=backend)
    return f(params, h, x, backend=backend)


def expected_shape(op, params, h_shape):
    N, M = params.state_size, params.input_size
    lead = h_shape[:-1]
    return {
        "step": lead + (N,),
        "jvp": lead + (N,),
        "vjp": lead + (N,),
        "jacobian": lead + (N, N),
        "input_jacobian": lead + (N, M),
    }[op]


def vanilla_preactivation(params, h, x):
    """W x + b_ih + U h + b_hh for the vanilla cell, written out here (float64)."""
    h = np.atleast_2d(np.asarray(h, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    w_ih, w_hh = params.w_ih.astype(np.float64), params.w_hh.astype(np.float64)
    return x @ w_ih.T + params.b_ih + h @ w_hh.T + params.b_hh


def relu_margin(params, h, x):
    """Smallest |pre-activation| of a vanilla relu cell (finite differences need it away from 0)."""
    return float(np.min(np.abs(vanilla_preactivation(params, h, x))))


def near_singular_relu(N, gap, n_starts, seed=0):
    """relu(U h + b) with U > 0 elementwise and spectral radius 1 - gap, so cond(J - I) ~ 1 / gap
    at the root (I - U)^-1 b; b ~ gap keeps the root O(1). Returns (params, root, h0 (n_starts, N))."""
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.0, 1.0, (N, N))
    U *= (1 - gap) / np.max(np.abs(np.linalg.eigvals(U)))
    b = rng.uniform(0.5, 1.0, N) * gap
    params = RNNParams("vanilla", np.zeros((N, 1)), U, b, np.zeros(N), nonlinearity="relu")
    root = np.linalg.solve(np.eye(N) - U, b)
    h0 = rng.uniform(0.0, 1.0, (n_starts, N)) * np.abs(root).max()
    return params, root, h0


def linear_relu(N, rho, seed, b_scale=1.0):
    """relu(U h + b) with U > 0 elementwise, b > 0: linear on the positive orthant, where
    q(h) = 1/2 ||(U - I) h + b||^2 in closed form. Returns (params, U, b)."""
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.0, 1.0, (N, N))
    U *= rho / np.max(np.abs(np.linalg.eigvals(U)))
    b = rng.uniform(0.5, 1.0, N) * b_scale
    params = fastfp.RNNParams("vanilla", np.zeros((N, 1)), U, b, np.zeros(N), nonlinearity="relu")
    return params, U, b


def q_linear(U, b, h):
    """q(h) = 1/2 ||(U - I) h + b||^2 per row of h: the speed of :func:`linear_relu` on its orthant."""
    return 0.5 * ((h @ (U - np.eye(len(b))).T + b) ** 2).sum(axis=1)


def textbook_adam(U, b, h0, lr, steps):
    """Adam (beta 0.9 / 0.999, eps 1e-8, bias-corrected, constant lr) on the mean over points of
    q(h) = 1/2 ||(U - I) h + b||^2, the map relu(U h + b) on the positive orthant."""
    A = U - np.eye(len(b))
    h = np.array(h0, float)
    m = np.zeros_like(h)
    v = np.zeros_like(h)
    for t in range(1, steps + 1):
        g = ((h @ A.T + b) @ A) / len(h)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        h = h - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return h
