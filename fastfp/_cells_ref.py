"""NumPy reference twins of the cell kernels: slow, vectorised, obviously correct.

Every function here has the same signature as its compiled twin in ``_cells_cpu`` (and, later,
``_cells_gpu``)::

    op_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh[, v]) -> array

``cell`` and ``act`` are the integer codes of ``fastfp.params``; ``h`` is (B, N); ``x`` is (Bx, M)
with Bx = 1 (input shared by all states) or Bx = B; weights are in ``RNNParams``'s layout and all
arrays share one float dtype. The code only uses the array namespace of ``h`` (``xp``) so that it
runs unchanged on CuPy arrays.

Jacobians are written out with the chain rule in matrix form, diag(d) @ U == d[:, :, None] * U,
so that each line can be checked against the equations in ``fastfp.params``.
"""

from __future__ import annotations

import numpy as np

from .params import GRU, GRU_RESET_BEFORE, LSTM, RELU, UGRNN, VANILLA

__all__ = ["step_ref", "jacobian_ref", "input_jacobian_ref", "jvp_ref", "vjp_ref", "residual_grad_ref"]


def _xp(a):
    """The array namespace of ``a`` (numpy, or cupy for cupy arrays)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    return np


def _sigmoid(xp, a):
    # exp(-log(1 + exp(-a))) never overflows, unlike 1 / (1 + exp(-a)) for a << 0.
    return xp.exp(-xp.logaddexp(0.0, -a))


def _blocks(a, G):
    """Split the last axis of ``a`` into G equal gate blocks."""
    H = a.shape[-1] // G
    return [a[..., k * H:(k + 1) * H] for k in range(G)]


def _diag_mul(d, M):
    """diag(d_b) @ M for every batch row b: (B, P) x (P, Q) -> (B, P, Q)."""
    return d[:, :, None] * M[None, :, :]


def _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """Gate values and the new state: a dict of (B, H) arrays plus 'out' (B, N)."""
    xp = _xp(h)
    ax = x @ w_ih.T + b_ih  # (Bx, G*H); broadcasts against (B, G*H) when Bx == 1
    if cell == VANILLA:
        pre = ax + h @ w_hh.T + b_hh
        out = xp.maximum(pre, 0.0) if act == RELU else xp.tanh(pre)
        return {"pre": pre, "out": out}
    if cell == GRU:
        xr, xz, xn = _blocks(ax, 3)
        hr, hz, hn = _blocks(h @ w_hh.T + b_hh, 3)
        r = _sigmoid(xp, xr + hr)
        z = _sigmoid(xp, xz + hz)
        n = xp.tanh(xn + r * hn)
        return {"r": r, "z": z, "n": n, "hn": hn, "out": (1.0 - z) * n + z * h}
    if cell == GRU_RESET_BEFORE:
        xr, xz, xn = _blocks(ax, 3)
        Ur, Uz, Un = _blocks(w_hh.T, 3)  # (H, H) each, already transposed
        br, bz, bn = _blocks(b_hh, 3)
        r = _sigmoid(xp, xr + h @ Ur + br)
        z = _sigmoid(xp, xz + h @ Uz + bz)
        n = xp.tanh(xn + (r * h) @ Un + bn)
        return {"r": r, "z": z, "n": n, "out": (1.0 - z) * n + z * h}
    if cell == UGRNN:
        xu, xc = _blocks(ax, 2)
        hu, hc = _blocks(h @ w_hh.T + b_hh, 2)
        u = _sigmoid(xp, xu + hu)
        c = xp.tanh(xc + hc)
        return {"u": u, "c": c, "out": u * h + (1.0 - u) * c}
    if cell == LSTM:
        H = w_hh.shape[1]
        hh, cc = h[:, :H], h[:, H:]
        pi, pf, pg, po = _blocks(ax + hh @ w_hh.T + b_hh, 4)
        i, f, g, o = _sigmoid(xp, pi), _sigmoid(xp, pf), xp.tanh(pg), _sigmoid(xp, po)
        c2 = f * cc + i * g
        tc = xp.tanh(c2)
        h2 = o * tc
        return {"i": i, "f": f, "g": g, "o": o, "c": cc, "tc": tc, "out": xp.concatenate([h2, c2], axis=1)}
    raise ValueError(f"unknown cell code {cell}")


def step_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) for B states: (B, N)."""
    return _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)["out"]


def _vanilla_slope(xp, act, fw):
    if act == RELU:
        return (fw["pre"] > 0).astype(fw["pre"].dtype)
    return 1.0 - fw["out"] ** 2


def _jac(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, wrt_state):
    """dF/dh (wrt_state) or dF/dx, by the chain rule; (B, N, N) or (B, N, M)."""
    xp = _xp(h)
    fw = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    B = h.shape[0]
    # K_k is the kernel through which the variable reaches gate block k's pre-activation.
    K = w_hh if wrt_state else w_ih
    if cell == VANILLA:
        return _diag_mul(_vanilla_slope(xp, act, fw), K)
    if cell == GRU:
        r, z, n, hn = fw["r"], fw["z"], fw["n"], fw["hn"]
        Kr, Kz, Kn = _blocks(K.T, 3)
        Kr, Kz, Kn = Kr.T, Kz.T, Kn.T
        dn = (1.0 - z) * (1.0 - n ** 2)  # dF / d pre_n
        J = (
            _diag_mul(dn * hn * r * (1.0 - r), Kr)
            + _diag_mul((h - n) * z * (1.0 - z), Kz)
            + _diag_mul(dn * r if wrt_state else dn, Kn)
        )
        if wrt_state:
            J = J + _diag_embed(xp, z)
        return J
    if cell == GRU_RESET_BEFORE:
        r, z, n = fw["r"], fw["z"], fw["n"]
        Kr, Kz, Kn = [k.T for k in _blocks(K.T, 3)]
        Un = _blocks(w_hh.T, 3)[2].T  # (H, H)
        dn = (1.0 - z) * (1.0 - n ** 2)
        # d pre_n = Un d(r * h);  d(r * h) = diag(r) dh + diag(h) dr;  dr = diag(r(1-r)) K_r d.
        through_r = xp.einsum("ij,bjk->bik", Un, _diag_mul(h * r * (1.0 - r), Kr))
        dpre_n = through_r + (Un[None, :, :] * r[:, None, :] if wrt_state else Kn[None, :, :])
        J = dn[:, :, None] * dpre_n + _diag_mul((h - n) * z * (1.0 - z), Kz)
        if wrt_state:
            J = J + _diag_embed(xp, z)
        return J
    if cell == UGRNN:
        u, c = fw["u"], fw["c"]
        Ku, Kc = [k.T for k in _blocks(K.T, 2)]
        J = _diag_mul((h - c) * u * (1.0 - u), Ku) + _diag_mul((1.0 - u) * (1.0 - c ** 2), Kc)
        if wrt_state:
            J = J + _diag_embed(xp, u)
        return J
    if cell == LSTM:
        H = w_hh.shape[1]
        i, f, g, o, c, tc = fw["i"], fw["f"], fw["g"], fw["o"], fw["c"], fw["tc"]
        Ki, Kf, Kg, Ko = [k.T for k in _blocks(K.T, 4)]
        # c' = f c + i g;  h' = o tanh(c').  Derivatives through the gates' pre-activations:
        dc_dvar = (
            _diag_mul(g * i * (1.0 - i), Ki) + _diag_mul(c * f * (1.0 - f), Kf) + _diag_mul(i * (1.0 - g ** 2), Kg)
        )
        dh_dc = o * (1.0 - tc ** 2)
        dh_dvar = _diag_mul(tc * o * (1.0 - o), Ko) + dh_dc[:, :, None] * dc_dvar
        if not wrt_state:
            return xp.concatenate([dh_dvar, dc_dvar], axis=1)
        J = xp.zeros((B, 2 * H, 2 * H), dtype=h.dtype)
        J[:, :H, :H] = dh_dvar
        J[:, :H, H:] = _diag_embed(xp, dh_dc * f)
        J[:, H:, :H] = dc_dvar
        J[:, H:, H:] = _diag_embed(xp, f)
        return J
    raise ValueError(f"unknown cell code {cell}")


def _diag_embed(xp, d):
    """(B, P) -> (B, P, P) with d on the diagonals."""
    B, P = d.shape
    out = xp.zeros((B, P, P), dtype=d.dtype)
    idx = xp.arange(P)
    out[:, idx, idx] = d
    return out


def jacobian_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out=None):
    """dF/dh at each state: (B, N, N), written into ``out`` when given."""
    J = _jac(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, wrt_state=True)
    if out is None:
        return J
    out[...] = J
    return out


def input_jacobian_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """dF/dx at each state: (B, N, M)."""
    return _jac(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, wrt_state=False)


def jvp_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, v):
    """J v for each state without forming J: v (B, N) -> (B, N)."""
    xp = _xp(h)
    fw = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    if cell == VANILLA:
        return _vanilla_slope(xp, act, fw) * (v @ w_hh.T)
    if cell == GRU:
        r, z, n, hn = fw["r"], fw["z"], fw["n"], fw["hn"]
        ur, uz, un = _blocks(v @ w_hh.T, 3)
        dn = (1.0 - z) * (1.0 - n ** 2)
        return dn * (hn * r * (1.0 - r) * ur + r * un) + (h - n) * z * (1.0 - z) * uz + z * v
    if cell == GRU_RESET_BEFORE:
        r, z, n = fw["r"], fw["z"], fw["n"]
        Ur, Uz, Un = _blocks(w_hh.T, 3)
        dr = r * (1.0 - r) * (v @ Ur)
        dpre_n = (r * v + h * dr) @ Un
        return (1.0 - z) * (1.0 - n ** 2) * dpre_n + (h - n) * z * (1.0 - z) * (v @ Uz) + z * v
    if cell == UGRNN:
        u, c = fw["u"], fw["c"]
        uu, uc = _blocks(v @ w_hh.T, 2)
        return (h - c) * u * (1.0 - u) * uu + (1.0 - u) * (1.0 - c ** 2) * uc + u * v
    if cell == LSTM:
        H = w_hh.shape[1]
        i, f, g, o, c, tc = fw["i"], fw["f"], fw["g"], fw["o"], fw["c"], fw["tc"]
        vh, vc = v[:, :H], v[:, H:]
        ui, uf, ug, uo = _blocks(vh @ w_hh.T, 4)
        dc = g * i * (1.0 - i) * ui + c * f * (1.0 - f) * uf + i * (1.0 - g ** 2) * ug + f * vc
        dh = tc * o * (1.0 - o) * uo + o * (1.0 - tc ** 2) * dc
        return xp.concatenate([dh, dc], axis=1)
    raise ValueError(f"unknown cell code {cell}")


def vjp_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
    """w^T J for each state without forming J: w (B, N) -> (B, N)."""
    xp = _xp(h)
    fw = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    if cell == VANILLA:
        return (w * _vanilla_slope(xp, act, fw)) @ w_hh
    if cell == GRU:
        r, z, n, hn = fw["r"], fw["z"], fw["n"], fw["hn"]
        gn = w * (1.0 - z) * (1.0 - n ** 2)  # gradient at pre_n
        g_pre = xp.concatenate([gn * hn * r * (1.0 - r), w * (h - n) * z * (1.0 - z), gn * r], axis=1)
        return g_pre @ w_hh + w * z
    if cell == GRU_RESET_BEFORE:
        r, z, n = fw["r"], fw["z"], fw["n"]
        Ur, Uz, Un = [k.T for k in _blocks(w_hh.T, 3)]  # (H, H) row blocks of w_hh
        g_rh = (w * (1.0 - z) * (1.0 - n ** 2)) @ Un  # gradient at the product r * h
        return g_rh * r + (g_rh * h * r * (1.0 - r)) @ Ur + (w * (h - n) * z * (1.0 - z)) @ Uz + w * z
    if cell == UGRNN:
        u, c = fw["u"], fw["c"]
        g_pre = xp.concatenate([w * (h - c) * u * (1.0 - u), w * (1.0 - u) * (1.0 - c ** 2)], axis=1)
        return g_pre @ w_hh + w * u
    if cell == LSTM:
        H = w_hh.shape[1]
        i, f, g, o, c, tc = fw["i"], fw["f"], fw["g"], fw["o"], fw["c"], fw["tc"]
        wh, wc = w[:, :H], w[:, H:]
        g_c2 = wh * o * (1.0 - tc ** 2) + wc  # gradient at c'
        g_pre = xp.concatenate(
            [g_c2 * g * i * (1.0 - i), g_c2 * c * f * (1.0 - f), g_c2 * i * (1.0 - g ** 2), wh * tc * o * (1.0 - o)],
            axis=1,
        )
        return xp.concatenate([g_pre @ w_hh, g_c2 * f], axis=1)
    raise ValueError(f"unknown cell code {cell}")


def residual_grad_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """r = F(h) - h and grad q = (J - I)^T r for q = |r|^2 / 2: ((B, N), (B, N))."""
    r = step_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh) - h
    return r, vjp_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, r) - r
