"""Numba CPU twins of the cell kernels in ``_cells_ref`` (same signatures, same results).

Design, from measurements on 2 cores:

* The dense products go through NumPy's BLAS (one GEMM per weight block for the whole batch).
* Transcendentals (exp for the logistic gates, tanh) run as NumPy ufuncs in place on whole gate
  blocks: they are SIMD-vectorised (0.4-0.9 ns per element here) where a scalar ``exp`` or
  ``tanh`` inside a Numba loop costs 3.5-13 ns and blocks vectorisation of the loop.
* The arithmetic that combines gates (and the derivative coefficients) is fused into serial
  Numba passes, so no NumPy temporaries are created for it. Measured for a GRU step with
  B = 256, H = 64: 0.12 ms (float32) / 0.21 ms (float64) against 0.58 / 0.70 ms for the reference.
* Element-wise passes are serial on purpose: OpenBLAS worker threads keep spinning after a
  GEMM, and a Numba thread pool started right after them fights them for the cores (measured:
  +8 ms on a 256 x 64 step that takes 0.2 ms). Only the dense Jacobian assembly, which is
  O(B N^2) and so long enough to amortise that, runs in parallel, and only for large batches:
  Python threads over row chunks of a ``nogil`` kernel (``_linalg.split_rows``), not an OpenMP
  ``prange``, which measured 3-4x slower than serial with another process busy on one core.

Kernels compile lazily per dtype (float32, float64) and are cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._blas import single_threaded_blas
from ._linalg import split_rows
from .params import GRU, GRU_RESET_BEFORE, LSTM, RELU, UGRNN, VANILLA

__all__ = ["step_cpu", "jacobian_cpu", "input_jacobian_cpu", "jvp_cpu", "vjp_cpu", "residual_grad_cpu"]


# Coefficients per unit written by the forward pass when derivatives are requested
# (d has shape (B, K, H); primes are derivatives of the activation):
#   vanilla: [phi']
#   gru:     [dF/dpre_r, dF/dpre_z, dF/dpre_n, z, r]           (dF/d h_n = dF/dpre_n * r)
#   gru_rb:  [dF/dpre_n, dF/dpre_z, z, r, h r (1 - r)]
#   ugrnn:   [dF/dpre_u, dF/dpre_c, u]
#   lstm:    [dc'/dpre_i, dc'/dpre_f, dc'/dpre_g, dh'/dpre_o, dh'/dc', f]
# J, dF/dx, J v and w^T J are sums of kernel rows scaled by these.
N_COEFFS = {VANILLA: 1, GRU: 5, GRU_RESET_BEFORE: 5, UGRNN: 3, LSTM: 6}


def _sigmoid_(a):
    """Logistic function in place (a may be a strided view). exp(-a) = inf for a << 0 gives the
    correct limit 0."""
    with np.errstate(over="ignore"):
        # Not np.negative(a, out=a): NumPy 2.4 computes it wrongly in place on single-column
        # strided views (e.g. the o block of an LSTM with H = 1); multiply is correct there.
        np.multiply(a, -1.0, out=a)
        np.exp(a, out=a)
    a += 1.0
    np.reciprocal(a, out=a)


# Combination passes: g holds activated gate blocks; ax rows are shared when ax has one row.
@njit(cache=True)
def _gru_pre_n(g, hn, ax, H, out):
    """n's pre-activation x_n + r * h_n (reset after the matmul)."""
    shared = ax.shape[0] == 1
    for b in range(out.shape[0]):
        xb = 0 if shared else b
        for j in range(H):
            out[b, j] = ax[xb, 2 * H + j] + g[b, j] * hn[b, j]


@njit(cache=True)
def _gru_combine(rb, h, g, hn, n, want_d, out, d):
    """h' = (1 - z) n + z h and, with want_d, the coefficients (gru or gru_reset_before)."""
    B, H = out.shape
    for b in range(B):
        for j in range(H):
            r = g[b, j]
            z = g[b, H + j]
            nn = n[b, j]
            hj = h[b, j]
            out[b, j] = (1.0 - z) * nn + z * hj
            if want_d:
                dn = (1.0 - z) * (1.0 - nn * nn)
                if rb:
                    d[b, 0, j] = dn
                    d[b, 1, j] = (hj - nn) * z * (1.0 - z)
                    d[b, 2, j] = z
                    d[b, 3, j] = r
                    d[b, 4, j] = hj * r * (1.0 - r)
                else:
                    d[b, 0, j] = dn * hn[b, j] * r * (1.0 - r)
                    d[b, 1, j] = (hj - nn) * z * (1.0 - z)
                    d[b, 2, j] = dn
                    d[b, 3, j] = z
                    d[b, 4, j] = r


@njit(cache=True)
def _ugrnn_combine(h, g, want_d, out, d):
    B, H = out.shape
    for b in range(B):
        for j in range(H):
            u = g[b, j]
            c = g[b, H + j]
            hj = h[b, j]
            out[b, j] = u * hj + (1.0 - u) * c
            if want_d:
                d[b, 0, j] = (hj - c) * u * (1.0 - u)
                d[b, 1, j] = (1.0 - u) * (1.0 - c * c)
                d[b, 2, j] = u


@njit(cache=True)
def _lstm_cell_state(h, g, out):
    """c' = f c + i g into out[:, H:]."""
    B = out.shape[0]
    H = out.shape[1] // 2
    for b in range(B):
        for j in range(H):
            out[b, H + j] = g[b, H + j] * h[b, H + j] + g[b, j] * g[b, 2 * H + j]


@njit(cache=True)
def _lstm_combine(h, g, tc, want_d, out, d):
    """h' = o tanh(c') (tc = tanh(c')) and, with want_d, the coefficients."""
    B = out.shape[0]
    H = out.shape[1] // 2
    for b in range(B):
        for j in range(H):
            i = g[b, j]
            f = g[b, H + j]
            gg = g[b, 2 * H + j]
            o = g[b, 3 * H + j]
            t = tc[b, j]
            out[b, j] = o * t
            if want_d:
                d[b, 0, j] = gg * i * (1.0 - i)
                d[b, 1, j] = h[b, H + j] * f * (1.0 - f)
                d[b, 2, j] = i * (1.0 - gg * gg)
                d[b, 3, j] = t * o * (1.0 - o)
                d[b, 4, j] = o * (1.0 - t * t)
                d[b, 5, j] = f


def _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, want_d):
    """F(h, x) (B, N) and, with want_d, the coefficients d (B, K, H) (empty otherwise)."""
    B = h.shape[0]
    H = w_hh.shape[1]
    out = np.empty_like(h)
    d = np.empty((B if want_d else 0, N_COEFFS[cell], H), dtype=h.dtype)
    ax = x @ w_ih.T
    ax += b_ih
    if cell == VANILLA:
        pre = h @ w_hh.T
        pre += ax
        pre += b_hh
        if act == RELU:
            np.maximum(pre, 0, out=out)
            if want_d:
                d[:, 0, :] = pre > 0
        else:
            np.tanh(pre, out=out)
            if want_d:
                np.multiply(out, out, out=d[:, 0, :])
                np.subtract(1.0, d[:, 0, :], out=d[:, 0, :])
        return out, d
    if cell in (GRU, GRU_RESET_BEFORE):
        rb = cell == GRU_RESET_BEFORE
        ah = h @ (w_hh[: 2 * H] if rb else w_hh).T
        ah += b_hh[: ah.shape[1]]
        g = ah[:, : 2 * H]  # r, z pre-activations, activated in place
        g += ax[:, : 2 * H]
        _sigmoid_(g)
        n = np.empty((B, H), dtype=h.dtype)
        if rb:
            np.multiply(g[:, :H], h, out=n)  # r * h
            n = n @ w_hh[2 * H:].T
            n += ax[:, 2 * H:]
            n += b_hh[2 * H:]
            hn = n  # unused by the reset-before coefficients
        else:
            hn = ah[:, 2 * H:]
            _gru_pre_n(g, hn, ax, H, n)
        np.tanh(n, out=n)
        _gru_combine(rb, h, g, hn, n, want_d, out, d)
        return out, d
    if cell == UGRNN:
        g = h @ w_hh.T
        g += b_hh
        g += ax
        _sigmoid_(g[:, :H])
        np.tanh(g[:, H:], out=g[:, H:])
        _ugrnn_combine(h, g, want_d, out, d)
        return out, d
    # LSTM, state [h, c]
    g = h[:, :H] @ w_hh.T
    g += b_hh
    g += ax
    _sigmoid_(g[:, : 2 * H])  # i, f
    np.tanh(g[:, 2 * H: 3 * H], out=g[:, 2 * H: 3 * H])  # g
    _sigmoid_(g[:, 3 * H:])  # o
    _lstm_cell_state(h, g, out)
    tc = np.tanh(out[:, H:])
    _lstm_combine(h, g, tc, want_d, out, d)
    return out, d


def step_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) for B states: (B, N). Twin of ``step_ref``."""
    return _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, False)[0]


# ----------------------------------------------------------------------------- dense Jacobians
def _jacobian_body(cell, d, K, w_hh, wrt_state, scratch, out):
    """Assemble dF/dh (wrt_state, K = w_hh) or dF/dx (K = w_ih) from d into out (B, N, Q).

    ``scratch`` is (B, H, Q) for reset-before, else empty.
    """
    B = d.shape[0]
    H = w_hh.shape[1]
    Q = K.shape[1]
    rb = cell == GRU_RESET_BEFORE
    Un = w_hh[2 * H:]
    Kr = K[:H]
    for b in range(B):
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


_jacobian_serial = njit(cache=True, nogil=True)(_jacobian_body)
# Below this many output entries splitting the batch over threads costs more than it saves.
PARALLEL_MIN_ENTRIES = 1 << 21


def _jacobian(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, wrt_state, out=None):
    _, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    K = w_hh if wrt_state else w_ih
    B, N, Q = h.shape[0], h.shape[1], (h.shape[1] if wrt_state else w_ih.shape[1])
    if out is None:
        out = np.empty((B, N, Q), dtype=h.dtype)
    H = w_hh.shape[1]
    scratch = np.empty((B, H, K.shape[1]) if cell == GRU_RESET_BEFORE else (0, 0, 0), dtype=h.dtype)
    with single_threaded_blas():  # the reset-before GEMMs run inside the threads
        if out.size >= PARALLEL_MIN_ENTRIES:
            # Python threads over a nogil kernel, not a prange: chunks go to whichever thread is
            # free, so a loaded machine does not stall the whole batch (see _linalg.split_rows).
            rb = cell == GRU_RESET_BEFORE
            split_rows(lambda lo, hi: _jacobian_serial(cell, d[lo:hi], K, w_hh, wrt_state,
                                                       scratch[lo:hi] if rb else scratch, out[lo:hi]), B)
        else:
            _jacobian_serial(cell, d, K, w_hh, wrt_state, scratch, out)
    return out


def jacobian_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out=None):
    """dF/dh at each state: (B, N, N), written into ``out`` when given (C-contiguous, same dtype):
    solvers reuse one buffer, since a fresh array of this size costs more in page faults than the
    assembly itself. Twin of ``jacobian_ref``."""
    return _jacobian(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True, out)


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


def _vjp_from(cell, d, w_hh, w):
    """w^T J from the forward coefficients d."""
    H = w_hh.shape[1]
    if cell == GRU_RESET_BEFORE:
        g_rh = (w * d[:, 0, :]) @ w_hh[2 * H:]  # gradient at the product r * h
        w_rec = w_hh[: 2 * H]
    else:
        g_rh = w[:0]
        w_rec = w_hh
    g = np.empty((w.shape[0], w_rec.shape[0]), dtype=w.dtype)
    out = np.empty((w.shape[0], w.shape[1]), dtype=w.dtype)
    _vjp_gates(cell, d, w, g_rh, g, out)
    back = g @ w_rec
    _vjp_epilogue(cell, d, w, g_rh, back, out)
    return out


def vjp_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
    """w^T J for each state without forming J: (B, N). Twin of ``vjp_ref``."""
    _, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    return _vjp_from(cell, d, w_hh, w)


def residual_grad_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """r = F(h) - h and grad q = (J - I)^T r for q = |r|^2 / 2, from one forward pass.
    Twin of ``residual_grad_ref``."""
    F, d = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    r = F - h
    g = _vjp_from(cell, d, w_hh, r)
    g -= r
    return r, g
