"""Numba CPU twins of the cell kernels in ``_cells_ref`` (same signatures, same results).

Each operation runs the dense products through BLAS (``np.dot`` on the whole batch, one GEMM per
call) and fuses everything element-wise into one parallel loop over the batch, so that a step costs
one pass over memory instead of the dozen temporaries NumPy creates. Kernels are compiled lazily per
dtype (float32, float64) and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .params import GRU, GRU_RESET_BEFORE, LSTM, RELU, UGRNN, VANILLA

__all__ = ["step_cpu", "jacobian_cpu", "input_jacobian_cpu", "jvp_cpu", "vjp_cpu"]


@njit(cache=True, inline="always")
def _sig(a):
    # Branch so that exp never overflows (no inf intermediates for large |a|).
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def _act(a, act):
    if act == RELU:
        return a if a > 0 else 0.0 * a
    return math.tanh(a)


@njit(cache=True, inline="always")
def _act_slope(a, y, act):
    if act == RELU:
        return 1.0 if a > 0 else 0.0
    return 1.0 - y * y


# --------------------------------------------------------------------------------------- step
@njit(cache=True, parallel=True)
def _step_kernel(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out):
    B = h.shape[0]
    H = w_hh.shape[1]
    ax = np.dot(x, w_ih.T)
    sx = 1 if ax.shape[0] > 1 else 0  # row stride: 0 broadcasts a shared input
    if cell == LSTM:
        ah = np.dot(np.ascontiguousarray(h[:, :H]), w_hh.T)
    elif cell == GRU_RESET_BEFORE:
        ah = np.dot(h, w_hh[: 2 * H].T)  # r, z blocks only; n needs r first
    else:
        ah = np.dot(h, w_hh.T)
    if cell == GRU_RESET_BEFORE:
        rh = np.empty((B, H), dtype=h.dtype)
        for b in prange(B):
            xb = b * sx
            for j in range(H):
                r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                rh[b, j] = r * h[b, j]
        an = np.dot(rh, w_hh[2 * H:].T)
    else:
        an = ah  # unused placeholder of the right type
    for b in prange(B):
        xb = b * sx
        for j in range(H):
            if cell == VANILLA:
                out[b, j] = _act(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j], act)
            elif cell == GRU:
                r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                n = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + r * (ah[b, 2 * H + j] + b_hh[2 * H + j]))
                out[b, j] = (1.0 - z) * n + z * h[b, j]
            elif cell == GRU_RESET_BEFORE:
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                n = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + an[b, j] + b_hh[2 * H + j])
                out[b, j] = (1.0 - z) * n + z * h[b, j]
            elif cell == UGRNN:
                u = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                c = math.tanh(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                out[b, j] = u * h[b, j] + (1.0 - u) * c
            else:  # LSTM
                i = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                f = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                g = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + ah[b, 2 * H + j] + b_hh[2 * H + j])
                o = _sig(ax[xb, 3 * H + j] + b_ih[3 * H + j] + ah[b, 3 * H + j] + b_hh[3 * H + j])
                c2 = f * h[b, H + j] + i * g
                out[b, j] = o * math.tanh(c2)
                out[b, H + j] = c2


def step_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) for B states: (B, N). Twin of ``step_ref``."""
    out = np.empty_like(h)
    _step_kernel(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out)
    return out


# ------------------------------------------------------------------ local derivatives (shared)
@njit(cache=True, parallel=True)
def _local_derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, d):
    """Per-unit derivative coefficients of F, written into d (B, K, H).

    The rows of d hold, per cell (primes mean derivatives of the activation):
      vanilla: [phi']
      gru:     [dF/dpre_r, dF/dpre_z, dF/dpre_n, z, r]       (dF/d hn = dF/dpre_n * r)
      gru_rb:  [dF/dpre_n, dF/dpre_z, z, r, h r (1 - r)]
      ugrnn:   [dF/dpre_u, dF/dpre_c, u]
      lstm:    [dc'/dpre_i, dc'/dpre_f, dc'/dpre_g, dh'/dpre_o, dh'/dc', f]
    from which J, dF/dx, J v and w^T J follow by sums of scaled kernel rows.
    """
    B = h.shape[0]
    H = w_hh.shape[1]
    ax = np.dot(x, w_ih.T)
    sx = 1 if ax.shape[0] > 1 else 0
    if cell == LSTM:
        ah = np.dot(np.ascontiguousarray(h[:, :H]), w_hh.T)
    elif cell == GRU_RESET_BEFORE:
        ah = np.dot(h, w_hh[: 2 * H].T)
    else:
        ah = np.dot(h, w_hh.T)
    if cell == GRU_RESET_BEFORE:
        rh = np.empty((B, H), dtype=h.dtype)
        for b in prange(B):
            for j in range(H):
                r = _sig(ax[b * sx, j] + b_ih[j] + ah[b, j] + b_hh[j])
                rh[b, j] = r * h[b, j]
        an = np.dot(rh, w_hh[2 * H:].T)
    else:
        an = ah
    for b in prange(B):
        xb = b * sx
        for j in range(H):
            if cell == VANILLA:
                a = ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j]
                d[b, 0, j] = _act_slope(a, _act(a, act), act)
            elif cell == GRU:
                r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                hn = ah[b, 2 * H + j] + b_hh[2 * H + j]
                n = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + r * hn)
                dn = (1.0 - z) * (1.0 - n * n)
                d[b, 0, j] = dn * hn * r * (1.0 - r)
                d[b, 1, j] = (h[b, j] - n) * z * (1.0 - z)
                d[b, 2, j] = dn
                d[b, 3, j] = z
                d[b, 4, j] = r
            elif cell == GRU_RESET_BEFORE:
                r = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                z = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                n = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + an[b, j] + b_hh[2 * H + j])
                d[b, 0, j] = (1.0 - z) * (1.0 - n * n)
                d[b, 1, j] = (h[b, j] - n) * z * (1.0 - z)
                d[b, 2, j] = z
                d[b, 3, j] = r
                d[b, 4, j] = h[b, j] * r * (1.0 - r)
            elif cell == UGRNN:
                u = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                c = math.tanh(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                d[b, 0, j] = (h[b, j] - c) * u * (1.0 - u)
                d[b, 1, j] = (1.0 - u) * (1.0 - c * c)
                d[b, 2, j] = u
            else:  # LSTM
                i = _sig(ax[xb, j] + b_ih[j] + ah[b, j] + b_hh[j])
                f = _sig(ax[xb, H + j] + b_ih[H + j] + ah[b, H + j] + b_hh[H + j])
                g = math.tanh(ax[xb, 2 * H + j] + b_ih[2 * H + j] + ah[b, 2 * H + j] + b_hh[2 * H + j])
                o = _sig(ax[xb, 3 * H + j] + b_ih[3 * H + j] + ah[b, 3 * H + j] + b_hh[3 * H + j])
                c2 = f * h[b, H + j] + i * g
                tc = math.tanh(c2)
                d[b, 0, j] = g * i * (1.0 - i)
                d[b, 1, j] = h[b, H + j] * f * (1.0 - f)
                d[b, 2, j] = i * (1.0 - g * g)
                d[b, 3, j] = tc * o * (1.0 - o)
                d[b, 4, j] = o * (1.0 - tc * tc)
                d[b, 5, j] = f


_N_COEFFS = {VANILLA: 1, GRU: 5, GRU_RESET_BEFORE: 5, UGRNN: 3, LSTM: 6}


def _derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    d = np.empty((h.shape[0], _N_COEFFS[cell], w_hh.shape[1]), dtype=h.dtype)
    _local_derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, d)
    return d


# ----------------------------------------------------------------------------- dense Jacobians
@njit(cache=True, parallel=True)
def _jacobian_kernel(cell, d, K, w_hh, wrt_state, out):
    """Assemble dF/dh (wrt_state) or dF/dx (K = w_ih) from the coefficients d; out (B, N, Q)."""
    B = d.shape[0]
    H = w_hh.shape[1]
    Q = K.shape[1]
    if cell == GRU_RESET_BEFORE:
        # The reset path couples through U_n diag(h r (1 - r)) K_r: one small GEMM per state.
        Un = np.ascontiguousarray(w_hh[2 * H:])
        Kr = np.ascontiguousarray(K[:H])
        scaled = np.empty((B, H, Q), dtype=K.dtype)
        for b in prange(B):
            for j in range(H):
                s = d[b, 4, j]
                for q in range(Q):
                    scaled[b, j, q] = s * Kr[j, q]
            out[b, :, :] = np.dot(Un, scaled[b])
    for b in prange(B):
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
            elif cell == GRU_RESET_BEFORE:
                dn, sz = d[b, 0, j], d[b, 1, j]
                if wrt_state:
                    for q in range(Q):
                        out[b, j, q] = dn * (out[b, j, q] + w_hh[2 * H + j, q] * d[b, 3, q]) + sz * K[H + j, q]
                    out[b, j, j] += d[b, 2, j]
                else:
                    for q in range(Q):
                        out[b, j, q] = dn * (out[b, j, q] + K[2 * H + j, q]) + sz * K[H + j, q]
            elif cell == UGRNN:
                su, sc = d[b, 0, j], d[b, 1, j]
                for q in range(Q):
                    out[b, j, q] = su * K[j, q] + sc * K[H + j, q]
                if wrt_state:
                    out[b, j, j] += d[b, 2, j]
            else:  # LSTM: rows j (h') and H + j (c')
                si, sf, sg, so, shc = d[b, 0, j], d[b, 1, j], d[b, 2, j], d[b, 3, j], d[b, 4, j]
                for q in range(Q):
                    dc = si * K[j, q] + sf * K[H + j, q] + sg * K[2 * H + j, q]
                    out[b, H + j, q] = dc
                    out[b, j, q] = so * K[3 * H + j, q] + shc * dc
                if wrt_state:
                    # K = w_hh filled columns :H (the h part); the c part has only dc'/dc = f.
                    for q in range(H, 2 * H):
                        out[b, j, q] = 0.0
                        out[b, H + j, q] = 0.0
                    out[b, j, H + j] = shc * d[b, 5, j]
                    out[b, H + j, H + j] = d[b, 5, j]


def jacobian_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """dF/dh at each state: (B, N, N). Twin of ``jacobian_ref``."""
    d = _derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    N = h.shape[1]
    out = np.empty((h.shape[0], N, N), dtype=h.dtype)
    _jacobian_kernel(cell, d, w_hh, w_hh, True, out)
    return out


def input_jacobian_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """dF/dx at each state: (B, N, M). Twin of ``input_jacobian_ref``."""
    d = _derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    out = np.empty((h.shape[0], h.shape[1], w_ih.shape[1]), dtype=h.dtype)
    _jacobian_kernel(cell, d, w_ih, w_hh, False, out)
    return out


# ----------------------------------------------------------------------------- JVP and VJP
@njit(cache=True, parallel=True)
def _jvp_kernel(cell, d, h, w_hh, v, out):
    B = h.shape[0]
    H = w_hh.shape[1]
    if cell == LSTM:
        u = np.dot(np.ascontiguousarray(v[:, :H]), w_hh.T)
    elif cell == GRU_RESET_BEFORE:
        u = np.dot(v, w_hh[: 2 * H].T)
        s = np.empty((B, H), dtype=h.dtype)
        for b in prange(B):
            for j in range(H):
                # d(r h) = r dh + h dr, dr = r (1 - r) U_r v
                s[b, j] = d[b, 3, j] * v[b, j] + d[b, 4, j] * u[b, j]
        un = np.dot(s, w_hh[2 * H:].T)
    else:
        u = np.dot(v, w_hh.T)
    if cell != GRU_RESET_BEFORE:
        un = u
    for b in prange(B):
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
    d = _derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    out = np.empty_like(h)
    _jvp_kernel(cell, d, h, w_hh, v, out)
    return out


@njit(cache=True, parallel=True)
def _vjp_kernel(cell, d, h, w_hh, w, out):
    B = h.shape[0]
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    g = np.empty((B, G * H), dtype=h.dtype)  # gradient at the gates' recurrent pre-activations
    for b in prange(B):
        for j in range(H):
            if cell == VANILLA:
                g[b, j] = w[b, j] * d[b, 0, j]
            elif cell == GRU:
                g[b, j] = w[b, j] * d[b, 0, j]
                g[b, H + j] = w[b, j] * d[b, 1, j]
                g[b, 2 * H + j] = w[b, j] * d[b, 2, j] * d[b, 4, j]
            elif cell == GRU_RESET_BEFORE:
                g[b, H + j] = w[b, j] * d[b, 1, j]
                g[b, 2 * H + j] = w[b, j] * d[b, 0, j]
            elif cell == UGRNN:
                g[b, j] = w[b, j] * d[b, 0, j]
                g[b, H + j] = w[b, j] * d[b, 1, j]
            else:
                gc = w[b, j] * d[b, 4, j] + w[b, H + j]
                g[b, j] = gc * d[b, 0, j]
                g[b, H + j] = gc * d[b, 1, j]
                g[b, 2 * H + j] = gc * d[b, 2, j]
                g[b, 3 * H + j] = w[b, j] * d[b, 3, j]
                out[b, H + j] = gc * d[b, 5, j]
    if cell == GRU_RESET_BEFORE:
        g_rh = np.dot(np.ascontiguousarray(g[:, 2 * H:]), w_hh[2 * H:])  # gradient at r * h
        for b in prange(B):
            for j in range(H):
                g[b, j] = g_rh[b, j] * d[b, 4, j]
        back = np.dot(np.ascontiguousarray(g[:, : 2 * H]), w_hh[: 2 * H])
        for b in prange(B):
            for j in range(H):
                out[b, j] = back[b, j] + g_rh[b, j] * d[b, 3, j] + w[b, j] * d[b, 2, j]
    else:
        back = np.dot(g, w_hh)
        for b in prange(B):
            for j in range(H):
                if cell == VANILLA:
                    out[b, j] = back[b, j]
                elif cell == GRU:
                    out[b, j] = back[b, j] + w[b, j] * d[b, 3, j]
                elif cell == UGRNN:
                    out[b, j] = back[b, j] + w[b, j] * d[b, 2, j]
                else:
                    out[b, j] = back[b, j]


def vjp_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
    """w^T J for each state without forming J: (B, N). Twin of ``vjp_ref``."""
    d = _derivs(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    out = np.empty_like(h)
    _vjp_kernel(cell, d, h, w_hh, w, out)
    return out
