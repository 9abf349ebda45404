"""Numba CPU twins of the cell kernels in ``_cells_ref`` (same signatures, same results).

Design, from measurements on 2 cores:

* The dense products go through NumPy's multi-threaded BLAS (one GEMM per weight block for the
  whole batch); everything element-wise after them is fused into one serial Numba pass, so a step
  costs a few GEMMs and one sweep over memory instead of the dozen temporaries NumPy creates.
* The element-wise passes are serial on purpose: OpenBLAS worker threads keep spinning after a
  GEMM, and a Numba thread pool started right after them fights them for the cores (measured:
  +8 ms on a 256 x 64 step that takes 0.2 ms). Only the dense Jacobian assembly, which is
  O(B N^2) and so long enough to amortise that, runs in parallel, and only for large batches.
* ``tanh`` and the logistic function come from one ``exp`` each, branch-free (three times faster
  than libm's ``tanh`` here; absolute error about one ulp). The ``vanilla`` tanh/relu step is left to NumPy's vectorised
  ufuncs, which beat any scalar loop.

Kernels compile lazily per dtype (float32, float64) and are cached on disk.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._blas import single_threaded_blas
from .params import GRU, GRU_RESET_BEFORE, LSTM, RELU, UGRNN, VANILLA

__all__ = ["step_cpu", "jacobian_cpu", "input_jacobian_cpu", "jvp_cpu", "vjp_cpu"]


@njit(cache=True, inline="always")
def _sig(a):
    # Branch-free (mispredicted branches doubled the cost on random data); exp(-a) = inf for
    # a << 0 gives the correct limit 0, never NaN.
    return 1.0 / (1.0 + math.exp(-a))


@njit(cache=True, inline="always")
def _tanh(a):
    # From exp(-2|a|) in (0, 1]: no overflow, absolute error ~1 ulp (libm's tanh costs 13 ns here,
    # expm1 11 ns, exp 3.5 ns).
    e = math.exp(-(abs(a) + abs(a)))  # a + a keeps float32 inputs in float32 math
    return math.copysign((1.0 - e) / (1.0 + e), a)


# Coefficients per unit written by the forward kernel when derivatives are requested
# (d has shape (B, K, H); primes are derivatives of the activation):
#   vanilla: [phi']
#   gru:     [dF/dpre_r, dF/dpre_z, dF/dpre_n, z, r]           (dF/d h_n = dF/dpre_n * r)
#   gru_rb:  [dF/dpre_n, dF/dpre_z, z, r, h r (1 - r)]
#   ugrnn:   [dF/dpre_u, dF/dpre_c, u]
#   lstm:    [dc'/dpre_i, dc'/dpre_f, dc'/dpre_g, dh'/dpre_o, dh'/dc', f]
# J, dF/dx, J v and w^T J are sums of kernel rows scaled by these.
N_COEFFS = {VANILLA: 1, GRU: 5, GRU_RESET_BEFORE: 5, UGRNN: 3, LSTM: 6}


@njit(cache=True)
def _reset_product(h, ax, ah, b_ih, b_hh, rh):
    """gru_reset_before: r * h, the argument of the n block's recurrent matmul."""
    H = rh.shape[1]
    shared = ax.shape[0] == 1
    for b in range(h.shape[0]):
        xb = 0 if shared else b
        for j in range(H):
            rh[b, j] = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j]) * h[b, j]


@njit(cache=True)
def _forward_epilogue(cell, act, h, ax, ah, an, b_ih, b_hh, want_d, out, d):
    """Everything after the GEMMs, fused: F(h, x) into out (B, N) and, with want_d, the
    coefficients above into d. ax = x W^T (Bx rows), ah = h U^T, an = (r h) U_n^T (reset-before)."""
    H = out.shape[1] // 2 if cell == LSTM else out.shape[1]
    shared = ax.shape[0] == 1
    for b in range(h.shape[0]):
        xb = 0 if shared else b
        for j in range(H):
            if cell == VANILLA:
                a = ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j]
                if act == RELU:
                    y = a if a > 0 else 0.0 * a
                    slope = 1.0 if a > 0 else 0.0
                else:
                    y = _tanh(a)
                    slope = 1.0 - y * y
                out[b, j] = y
                if want_d:
                    d[b, 0, j] = slope
            elif cell == GRU:
                r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                hn = ah[b, 2 * H + j] + b_hh[2 * H + j]
                n = _tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + r * hn)
                out[b, j] = (1.0 - z) * n + z * h[b, j]
                if want_d:
                    dn = (1.0 - z) * (1.0 - n * n)
                    d[b, 0, j] = dn * hn * r * (1.0 - r)
                    d[b, 1, j] = (h[b, j] - n) * z * (1.0 - z)
                    d[b, 2, j] = dn
                    d[b, 3, j] = z
                    d[b, 4, j] = r
            elif cell == GRU_RESET_BEFORE:
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                n = _tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + an[b, j] + b_hh[2 * H + j])
                out[b, j] = (1.0 - z) * n + z * h[b, j]
                if want_d:
                    r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                    d[b, 0, j] = (1.0 - z) * (1.0 - n * n)
                    d[b, 1, j] = (h[b, j] - n) * z * (1.0 - z)
                    d[b, 2, j] = z
                    d[b, 3, j] = r
                    d[b, 4, j] = h[b, j] * r * (1.0 - r)
            elif cell == UGRNN:
                u = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                cc = _tanh(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                out[b, j] = u * h[b, j] + (1.0 - u) * cc
                if want_d:
                    d[b, 0, j] = (h[b, j] - cc) * u * (1.0 - u)
                    d[b, 1, j] = (1.0 - u) * (1.0 - cc * cc)
                    d[b, 2, j] = u
            else:  # LSTM, state [h, c]
                i = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                f = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                g = _tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + ah[b, 2 * H + j] + b_hh[2 * H + j])
                o = _sig(ax[xb, 3 * H + j] + b_ih[3 * H + j] + ah[b, 3 * H + j] + b_hh[3 * H + j])
                c_old = h[b, H + j]
                c2 = f * c_old + i * g
                tc = _tanh(c2)
                out[b, j] = o * tc
                out[b, H + j] = c2
                if want_d:
                    d[b, 0, j] = g * i * (1.0 - i)
                    d[b, 1, j] = c_old * f * (1.0 - f)
                    d[b, 2, j] = i * (1.0 - g * g)
                    d[b, 3, j] = tc * o * (1.0 - o)
                    d[b, 4, j] = o * (1.0 - tc * tc)
                    d[b, 5, j] = f


def _gemms(cell, h, x, w_ih, w_hh, b_ih, b_hh):
    """The dense products of one step: ax = x W^T, ah = h U^T (reset-before: r, z blocks only)."""
    H = w_hh.shape[1]
    ax = x @ w_ih.T
    if cell == LSTM:
        ah = h[:, :H] @ w_hh.T
    elif cell == GRU_RESET_BEFORE:
        ah = h @ w_hh[: 2 * H].T
    else:
        ah = h @ w_hh.T
    if cell == GRU_RESET_BEFORE:
        rh = np.empty((h.shape[0], H), dtype=h.dtype)
        _reset_product(h, ax, ah, b_ih, b_hh, rh)
        an = rh @ w_hh[2 * H:].T
    else:
        an = ah[:0]  # unused; keeps the kernel's argument types fixed
    return ax, ah, an


def _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, want_d):
    ax, ah, an = _gemms(cell, h, x, w_ih, w_hh, b_ih, b_hh)
    out = np.empty_like(h)
    d = np.empty((h.shape[0] if want_d else 0, N_COEFFS[cell], w_hh.shape[1]), dtype=h.dtype)
    _forward_epilogue(cell, act, h, ax, ah, an, b_ih, b_hh, want_d, out, d)
    return out, d


def step_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) for B states: (B, N). Twin of ``step_ref``."""
    if cell == VANILLA:
        out = h @ w_hh.T
        out += x @ w_ih.T
        out += b_ih + b_hh
        return np.maximum(out, 0, out=out) if act == RELU else np.tanh(out, out=out)
    return _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, False)[0]


# ----------------------------------------------------------------------------- dense Jacobians
def _jacobian_body(cell, d, K, w_hh, wrt_state, scratch, out):
    """Assemble dF/dh (wrt_state, K = w_hh) or dF/dx (K = w_ih) from d into out (B, N, Q).

    Compiled twice below, parallel and serial; ``scratch`` is (B, H, Q) for reset-before, else empty.
    """
    B = d.shape[0]
    H = w_hh.shape[1]
    Q = K.shape[1]
    rb = cell == GRU_RESET_BEFORE
    Un = w_hh[2 * H:]
    Kr = K[:H]
    for b in prange(B):
        if rb:
            # The reset path couples through U_n diag(h r (1 - r)) K_r: one GEMM per state.
            sc = scratch[b]
            for j in range(H):
                s = d[b, 4, j]
                for q in range(Q):
                    sc[j, q] = s * Kr[j, q]
            np.dot(Un, sc, out[b, :H])
        for j in range(H):
            if cell == VANILLA:
                s0 = d[b, 0, j]
                for q in range(Q):
                    out[b, j, q] = s0 * K[j, q]
            elif cell == GRU:
                sr, sz = d[b, 0, j], d[b, 1, j]
                sn = d[b, 2, j] * d[b, 4, j] if wrt_state else d[b, 2, j]
                for q in range(Q):
                    out[b, j, q] = sr * K[j, q] + sz * K[H + j, q] + sn * K[2 * H + j, q]
                if wrt_state:
                    out[b, j, j] += d[b, 3, j]
            elif rb:
                dn, sz = d[b, 0, j], d[b, 1, j]
                if wrt_state:
                    for q in range(Q):
                        out[b, j, q] = dn * (out[b, j, q] + Un[j, q] * d[b, 3, q]) + sz * K[H + j, q]
                    out[b, j, j] += d[b, 2, j]
                else:
                    for q in range(Q):
                        out[b, j, q] = dn * (out[b, j, q] + K[2 * H + j, q]) + sz * K[H + j, q]
            elif cell == UGRNN:
                su, sc_ = d[b, 0, j], d[b, 1, j]
                for q in range(Q):
                    out[b, j, q] = su * K[j, q] + sc_ * K[H + j, q]
                if wrt_state:
                    out[b, j, j] += d[b, 2, j]
            else:  # LSTM: rows j (h') and H + j (c'); K acts on h (or x) only
                si, sf, sg, so, shc = d[b, 0, j], d[b, 1, j], d[b, 2, j], d[b, 3, j], d[b, 4, j]
                for q in range(Q):
                    dc = si * K[j, q] + sf * K[H + j, q] + sg * K[2 * H + j, q]
                    out[b, H + j, q] = dc
                    out[b, j, q] = so * K[3 * H + j, q] + shc * dc
                if wrt_state:  # the c part of the state enters only through dc'/dc = f
                    for q in range(H, 2 * H):
                        out[b, j, q] = 0.0
                        out[b, H + j, q] = 0.0
                    out[b, j, H + j] = shc * d[b, 5, j]
                    out[b, H + j, H + j] = d[b, 5, j]


_jacobian_serial = njit(cache=True)(_jacobian_body)
_jacobian_parallel = njit(cache=True, parallel=True)(_jacobian_body)
# Below this many output entries the parallel pool's start-up (and its contention with BLAS's
# spinning threads) costs more than it saves.
PARALLEL_MIN_ENTRIES = 1 << 21


def _jacobian(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, wrt_state):
    _, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    K = w_hh if wrt_state else w_ih
    B, N, Q = h.shape[0], h.shape[1], (h.shape[1] if wrt_state else w_ih.shape[1])
    out = np.empty((B, N, Q), dtype=h.dtype)
    H = w_hh.shape[1]
    scratch = np.empty((B, H, K.shape[1]) if cell == GRU_RESET_BEFORE else (0, 0, 0), dtype=h.dtype)
    kernel = _jacobian_parallel if out.size >= PARALLEL_MIN_ENTRIES else _jacobian_serial
    with single_threaded_blas():  # the reset-before GEMMs run inside the parallel loop
        kernel(cell, d, K, w_hh, wrt_state, scratch, out)
    return out


def jacobian_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """dF/dh at each state: (B, N, N). Twin of ``jacobian_ref``."""
    return _jacobian(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)


def input_jacobian_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """dF/dx at each state: (B, N, M). Twin of ``input_jacobian_ref``."""
    return _jacobian(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, False)


# ----------------------------------------------------------------------------- JVP and VJP
@njit(cache=True)
def _jvp_reset_argument(d, v, u, s):
    """reset-before: d(r h) = r dh + h dr with dr = r (1 - r) U_r v."""
    for b in range(v.shape[0]):
        for j in range(s.shape[1]):
            s[b, j] = d[b, 3, j] * v[b, j] + d[b, 4, j] * u[b, j]


@njit(cache=True)
def _jvp_epilogue(cell, d, v, u, un, out):
    H = d.shape[2]
    for b in range(v.shape[0]):
        for j in range(H):
            if cell == VANILLA:
                out[b, j] = d[b, 0, j] * u[b, j]
            elif cell == GRU:
                out[b, j] = (d[b, 0, j] * u[b, j] + d[b, 1, j] * u[b, H + j]
                             + d[b, 2, j] * d[b, 4, j] * u[b, 2 * H + j] + d[b, 3, j] * v[b, j])
            elif cell == GRU_RESET_BEFORE:
                out[b, j] = d[b, 0, j] * un[b, j] + d[b, 1, j] * u[b, H + j] + d[b, 2, j] * v[b, j]
            elif cell == UGRNN:
                out[b, j] = d[b, 0, j] * u[b, j] + d[b, 1, j] * u[b, H + j] + d[b, 2, j] * v[b, j]
            else:
                dc = (d[b, 0, j] * u[b, j] + d[b, 1, j] * u[b, H + j] + d[b, 2, j] * u[b, 2 * H + j]
                      + d[b, 5, j] * v[b, H + j])
                out[b, H + j] = dc
                out[b, j] = d[b, 3, j] * u[b, 3 * H + j] + d[b, 4, j] * dc


def jvp_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, v):
    """J v for each state without forming J: (B, N). Twin of ``jvp_ref``."""
    _, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    H = w_hh.shape[1]
    if cell == LSTM:
        u = v[:, :H] @ w_hh.T
    elif cell == GRU_RESET_BEFORE:
        u = v @ w_hh[: 2 * H].T
    else:
        u = v @ w_hh.T
    if cell == GRU_RESET_BEFORE:
        s = np.empty((v.shape[0], H), dtype=v.dtype)
        _jvp_reset_argument(d, v, u, s)
        un = s @ w_hh[2 * H:].T
    else:
        un = u[:0]
    out = np.empty_like(h)
    _jvp_epilogue(cell, d, v, u, un, out)
    return out


@njit(cache=True)
def _vjp_gates(cell, d, w, g_rh, g, out):
    """Gradient at the recurrent pre-activations into g (B, G'H); the c part of an LSTM's
    cotangent goes straight to out[:, H:]."""
    H = d.shape[2]
    for b in range(w.shape[0]):
        for j in range(H):
            if cell == VANILLA:
                g[b, j] = w[b, j] * d[b, 0, j]
            elif cell == GRU:
                g[b, j] = w[b, j] * d[b, 0, j]
                g[b, H + j] = w[b, j] * d[b, 1, j]
                g[b, 2 * H + j] = w[b, j] * d[b, 2, j] * d[b, 4, j]
            elif cell == GRU_RESET_BEFORE:
                g[b, j] = g_rh[b, j] * d[b, 4, j]
                g[b, H + j] = w[b, j] * d[b, 1, j]
            elif cell == UGRNN:
                g[b, j] = w[b, j] * d[b, 0, j]
                g[b, H + j] = w[b, j] * d[b, 1, j]
            else:
                gc = w[b, j] * d[b, 4, j] + w[b, H + j]  # gradient at c'
                g[b, j] = gc * d[b, 0, j]
                g[b, H + j] = gc * d[b, 1, j]
                g[b, 2 * H + j] = gc * d[b, 2, j]
                g[b, 3 * H + j] = w[b, j] * d[b, 3, j]
                out[b, H + j] = gc * d[b, 5, j]


@njit(cache=True)
def _vjp_epilogue(cell, d, w, g_rh, back, out):
    H = d.shape[2]
    for b in range(w.shape[0]):
        for j in range(H):
            if cell == GRU:
                out[b, j] = back[b, j] + w[b, j] * d[b, 3, j]
            elif cell == GRU_RESET_BEFORE:
                out[b, j] = back[b, j] + g_rh[b, j] * d[b, 3, j] + w[b, j] * d[b, 2, j]
            elif cell == UGRNN:
                out[b, j] = back[b, j] + w[b, j] * d[b, 2, j]
            else:
                out[b, j] = back[b, j]


def vjp_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
    """w^T J for each state without forming J: (B, N). Twin of ``vjp_ref``."""
    _, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    H = w_hh.shape[1]
    if cell == GRU_RESET_BEFORE:
        g_rh = (w * d[:, 0, :]) @ w_hh[2 * H:]  # gradient at the product r * h
        w_rec = w_hh[: 2 * H]
    else:
        g_rh = w[:0]
        w_rec = w_hh
    g = np.empty((w.shape[0], w_rec.shape[0]), dtype=w.dtype)
    out = np.empty_like(h)
    _vjp_gates(cell, d, w, g_rh, g, out)
    back = g @ w_rec
    _vjp_epilogue(cell, d, w, g_rh, back, out)
    return out
