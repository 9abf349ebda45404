"""The linearisation of a cell at B states, for many J v and w^T J products at the same states.

``jvp_ref`` / ``jvp_cpu`` recompute the forward pass on every call; a Krylov method (GMRES,
Arnoldi) applies J dozens of times at the same states, so here the forward pass runs once and
each product costs one GEMM with the recurrent kernel plus an element-wise epilogue. The code
uses only the array namespace of the states (NumPy or CuPy): the CPU tests run the very code
the GPU backend runs.

Per cell, with u = v W_hh^T split into gate blocks (``fastfp.params`` has the equations)::

    vanilla, gru, ugrnn:  J v = sum_k C_k * u_k + D * v          (C: (B, G*H), D: (B, N) or None)
    gru_reset_before:     J v = dn * ((r * v + h * dr) Un) + az * (v Uz) + z * v,  dr = ar * (v Ur)
    lstm ([h, c]):        dc = ci*ui + cf*uf + cg*ug + f*vc;  dh = co*uo + e*dc
"""

from __future__ import annotations

from dataclasses import dataclass

from ._cells_ref import _blocks, _forward, _vanilla_slope, _xp
from .params import GRU, GRU_RESET_BEFORE, LSTM, UGRNN, VANILLA

__all__ = ["Linearization", "linearize", "forward_linearize", "linearize_cpu", "forward_linearize_cpu"]


@dataclass(frozen=True)
class Linearization:
    """Coefficients of J at B states (see the module docstring); arrays in the states' namespace."""

    cell: int
    w_hh: object  # (G*H, H)
    coef: dict  # name -> (B, ...) array

    @property
    def batch(self) -> int:
        return next(iter(self.coef.values())).shape[0]

    def astype(self, dtype) -> "Linearization":
        """The same linearisation with weights and coefficients cast to ``dtype``."""
        return Linearization(self.cell, self.w_hh.astype(dtype), {k: v.astype(dtype) for k, v in self.coef.items()})

    def take(self, idx) -> "Linearization":
        """The linearisation at a subset of the states (rows ``idx``)."""
        return self.with_coef({k: v[idx] for k, v in self.coef.items()})

    def with_coef(self, coef) -> "Linearization":
        """The same kind of linearisation (the same weights and products) with other coefficients."""
        return Linearization(self.cell, self.w_hh, coef)

    def operator(self, *, transpose: bool = False, shift: float = 0.0):
        """``matvec(idx, V)``: (J - shift I) V, or (J^T - shift I) V, for the rows ``idx``, as the
        batched Krylov methods of ``fastfp._krylov`` call it. Their working set only shrinks, so
        the subset changes seldom, and its linearisation is taken once per subset (the last one
        is kept; a call on other rows, e.g. GMRES finishing the points it drops, takes its own)."""
        cache = []  # [(idx, Linearization)] of the last call
        xp = _xp(next(iter(self.coef.values())))

        def matvec(idx, V):
            # The same index array as the last call (GMRES passes one per cycle): no comparison,
            # which on a GPU would be a host synchronisation per product. Callers never modify an
            # index array they have passed.
            if cache and cache[0][0] is idx:
                sub = cache[0][1]
            else:
                n = int(idx.shape[0])
                if n == self.batch and bool((idx == xp.arange(n)).all()):
                    sub = self
                elif cache and cache[0][0].shape == idx.shape and bool((cache[0][0] == idx).all()):
                    sub = cache[0][1]
                else:
                    sub = self.take(idx)
                cache[:] = [(idx, sub)]
            out = sub.vjp(V) if transpose else sub.jvp(V)
            return out - shift * V if shift else out

        return matvec

    def jvp(self, v):
        """J v: (B, N) -> (B, N)."""
        c, W, cell = self.coef, self.w_hh, self.cell
        xp = _xp(v)
        if cell == VANILLA:
            return c["slope"] * (v @ W.T)
        if cell in (GRU, UGRNN):
            G = 3 if cell == GRU else 2
            u = v @ W.T
            C = c["C"]
            H = W.shape[1]
            out = c["D"] * v
            for k in range(G):
                out += C[:, k * H:(k + 1) * H] * u[:, k * H:(k + 1) * H]
            return out
        if cell == GRU_RESET_BEFORE:
            H = W.shape[1]
            u = v @ W[: 2 * H].T  # (B, 2H): the r and z blocks
            dr = c["ar"] * u[:, :H]
            pre_n = (c["r"] * v + c["h"] * dr) @ W[2 * H:].T
            return c["dn"] * pre_n + c["az"] * u[:, H:] + c["z"] * v
        if cell == LSTM:
            H = W.shape[1]
            vh, vc = v[:, :H], v[:, H:]
            ui, uf, ug, uo = _blocks(vh @ W.T, 4)
            dc = c["ci"] * ui + c["cf"] * uf + c["cg"] * ug + c["f"] * vc
            dh = c["co"] * uo + c["e"] * dc
            return xp.concatenate([dh, dc], axis=1)
        raise ValueError(f"unknown cell code {cell}")

    def vjp(self, w):
        """w^T J: (B, N) -> (B, N)."""
        c, W, cell = self.coef, self.w_hh, self.cell
        xp = _xp(w)
        if cell == VANILLA:
            return (c["slope"] * w) @ W
        if cell in (GRU, UGRNN):
            G = 3 if cell == GRU else 2
            g = c["C"] * xp.concatenate([w] * G, axis=1)
            return g @ W + c["D"] * w
        if cell == GRU_RESET_BEFORE:
            H = W.shape[1]
            g_rh = (w * c["dn"]) @ W[2 * H:]  # gradient at the product r * h
            g_rz = xp.concatenate([g_rh * c["h"] * c["ar"], w * c["az"]], axis=1)
            return g_rh * c["r"] + g_rz @ W[: 2 * H] + w * c["z"]
        if cell == LSTM:
            H = W.shape[1]
            wh, wc = w[:, :H], w[:, H:]
            g_c2 = wh * c["e"] + wc
            g = xp.concatenate([g_c2 * c["ci"], g_c2 * c["cf"], g_c2 * c["cg"], wh * c["co"]], axis=1)
            return xp.concatenate([g @ W, g_c2 * c["f"]], axis=1)
        raise ValueError(f"unknown cell code {cell}")


def linearize(cell, act, h, x, w_ih, w_hh, b_ih, b_hh) -> Linearization:
    """Run the forward pass once at ``h`` (B, N) and keep what J v and w^T J need."""
    return forward_linearize(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)[1]


def forward_linearize(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) (B, N) and :func:`linearize`'s Linearization, from one forward pass."""
    xp = _xp(h)
    fw = _forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
    if cell == VANILLA:
        coef = {"slope": _vanilla_slope(xp, act, fw)}
    elif cell == GRU:
        r, z, n, hn = fw["r"], fw["z"], fw["n"], fw["hn"]
        dn = (1.0 - z) * (1.0 - n * n)
        coef = {"C": xp.concatenate([dn * hn * r * (1.0 - r), (h - n) * z * (1.0 - z), dn * r], axis=1), "D": z}
    elif cell == UGRNN:
        u, cc = fw["u"], fw["c"]
        coef = {"C": xp.concatenate([(h - cc) * u * (1.0 - u), (1.0 - u) * (1.0 - cc * cc)], axis=1), "D": u}
    elif cell == GRU_RESET_BEFORE:
        r, z, n = fw["r"], fw["z"], fw["n"]
        coef = {
            "r": r, "z": z, "h": h,
            "ar": r * (1.0 - r),
            "az": (h - n) * z * (1.0 - z),
            "dn": (1.0 - z) * (1.0 - n * n),
        }
    elif cell == LSTM:
        i, f, g, o, cc, tc = fw["i"], fw["f"], fw["g"], fw["o"], fw["c"], fw["tc"]
        coef = {
            "ci": g * i * (1.0 - i), "cf": cc * f * (1.0 - f), "cg": i * (1.0 - g * g),
            "f": f, "co": tc * o * (1.0 - o), "e": o * (1.0 - tc * tc),
        }
    else:
        raise ValueError(f"unknown cell code {cell}")
    return fw["out"], Linearization(cell, w_hh, coef)


def linearize_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh) -> Linearization:
    """:func:`linearize` from the Numba forward pass (``_cells_cpu``), for NumPy states: the same
    coefficients (its derivative coefficients map one to one onto these), at a fraction of the
    reference's cost (measured: 0.15 of 1.1 s of a GRU-256 matrix-free solve went to it)."""
    return forward_linearize_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)[1]


def forward_linearize_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    """F(h, x) (B, N) and :func:`linearize_cpu`'s Linearization, from one forward pass."""
    import numpy as np

    from ._cells_cpu import _forward as forward_cpu

    F, d = forward_cpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, True)
    if cell == VANILLA:
        coef = {"slope": d[:, 0]}
    elif cell == GRU:  # d = [dF/dpre_r, dF/dpre_z, dF/dpre_n, z, r]
        coef = {"C": np.concatenate([d[:, 0], d[:, 1], d[:, 2] * d[:, 4]], axis=1), "D": d[:, 3]}
    elif cell == UGRNN:  # d = [dF/dpre_u, dF/dpre_c, u]
        coef = {"C": np.concatenate([d[:, 0], d[:, 1]], axis=1), "D": d[:, 2]}
    elif cell == GRU_RESET_BEFORE:  # d = [dF/dpre_n, dF/dpre_z, z, r, h r (1 - r)]
        r = d[:, 3]
        coef = {"r": r, "z": d[:, 2], "h": h, "ar": r * (1.0 - r), "az": d[:, 1], "dn": d[:, 0]}
    elif cell == LSTM:  # d = [dc'/dpre_i, dc'/dpre_f, dc'/dpre_g, dh'/dpre_o, dh'/dc', f]
        coef = {"ci": d[:, 0], "cf": d[:, 1], "cg": d[:, 2], "f": d[:, 5], "co": d[:, 3], "e": d[:, 4]}
    else:
        raise ValueError(f"unknown cell code {cell}")
    return F, Linearization(cell, w_hh, {k: np.ascontiguousarray(v) for k, v in coef.items()})
