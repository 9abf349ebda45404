"""Matrix-free Levenberg-Marquardt: the slow-manifold mode without N x N matrices.

The dense slow-manifold search (``solvers._lm_step``) solves (A^T A + mu I) delta = -A^T r with
A = J - I and mu >= slow_ratio^2 from a formed A^T A: O(N^3) per point and iteration and 8 N^2
bytes per point. Here the same damped normal equations are solved by batched conjugate gradients on
products A v = J v - v and A^T w = J^T w - w (one forward and one transposed GEMM with the
recurrent kernel per CG iteration), so memory is O(N) per point and the work is GEMMs. The LM
outer iteration is the dense one's: the same projection onto the coordinates not pressed against
the root box, gain ratio, Nielsen's update of mu and nu, damping floor, slow-point test and
stall labels. Only the solve is inexact (CG to a relative residual of ``_CG_RTOL``), which the
gain ratio absorbs: a poor step is rejected like any other.

Written against the array namespace of the states: the same code runs on NumPy (the CPU tests)
and CuPy.
"""

from __future__ import annotations

import sys

import numpy as np

from . import status as st
from ._cells_ref import _xp
from ._krylov import batched_cg
from ._linearize import linearize
from ._newton_krylov import _stop_finished
from .solvers import _MU_MAX, _is_slow, _stall_status

__all__ = ["lm_krylov"]

# CG stops at ||residual|| <= _CG_RTOL ||rhs||: the LM step is a trial that the gain ratio checks,
# so a loose solve costs at most a rejected step (measured on trained GRUs: 1e-2 takes 15-25% more
# outer iterations than 1e-4 for half the products; 1e-3 between).
_CG_RTOL = 1e-3
# The damped normal matrix has condition number <= (s_max^2 + mu) / mu; with mu >= slow_ratio^2 =
# 2.5e-3 and s_max ~ 2-3 that is ~4e3, where CG needs ~60-120 iterations for 1e-3.
_CG_MAXITER = 200


def lm_krylov(step, params_arrays, cell, act, H0, X, bounds, opts, *, progress=False, linearize_fn=linearize,
              preconditioner=None):
    """Slow-manifold LM from H0 (B, N) with inputs X (1 or B, M); arrays in one namespace.

    ``preconditioner`` (a ``RootPreconditioner`` holding (A^T A + mu0 I)^-1 at known slow points,
    float32) preconditions CG with the inverse at the point nearest each state, restricted to its
    free coordinates; CG's stopping test stays on the true residual.

    Returns (h, status, nit, n_matvec), status per ``fastfp.status`` (no RUNNING left); n_matvec
    counts J v and J^T w products per point.
    """
    xp = _xp(H0)
    B, N = H0.shape
    dtype = H0.dtype
    lower = xp.asarray(bounds[0], dtype=dtype)
    upper = xp.asarray(bounds[1], dtype=dtype)
    slow_ratio = opts["slow_ratio"]
    mu_floor = 0.0 if slow_ratio is None else slow_ratio ** 2
    rows = (lambda idx: X) if X.shape[0] == 1 else (lambda idx: X[idx])
    h = xp.clip(H0, lower, upper)
    r = step(h, X) - h
    status = xp.full(B, st.RUNNING, dtype=xp.int64)
    nit = xp.zeros(B, dtype=xp.int64)
    n_matvec = xp.zeros(B, dtype=xp.int64)
    mu = xp.full(B, np.nan, dtype=dtype)
    nu = xp.full(B, 2.0, dtype=dtype)
    active = xp.arange(B)
    for it in range(opts["maxiter"] + 1):
        active, ha, ra = _stop_finished(xp, h, r, active, status, opts)
        if active.size == 0:
            break
        lin = linearize_fn(cell, act, ha, rows(active), *params_arrays)
        g = lin.vjp(ra) - ra  # grad q = A^T r
        n_matvec[active] += 1
        slow = _is_slow(ra, g, opts)
        if bool(slow.any()):
            status[active[slow]] = st.SLOW_POINT
            keep = xp.flatnonzero(~slow)
            active, ha, ra, g = active[keep], ha[keep], ra[keep], g[keep]
            lin = lin.take(keep)
        if active.size == 0:
            break
        if it == opts["maxiter"]:
            status[active] = st.MAX_ITER
            break
        if callable(progress):
            progress(B - int(active.size))
        elif progress:
            print(f"fastfp[lm, matrix-free] iteration {it}: {int(active.size)}/{B} points active", file=sys.stderr)
        nit[active] += 1
        qa = 0.5 * xp.einsum("bi,bi->b", ra, ra)

        # Coordinates pressed against the root box with q decreasing outward are held fixed (the
        # dense solver's projected step): the system lives on the free coordinates.
        pinned = ((ha <= lower) & (g > 0)) | ((ha >= upper) & (g < 0))
        free = (~pinned).astype(dtype)
        m = mu[active]
        fresh = ~xp.isfinite(m)
        if bool(fresh.any()):
            # The dense solver starts at 1e-3 max diag(A^T A); without A^T A, the Rayleigh quotient
            # of A^T A along the gradient (a lower bound of its largest eigenvalue) stands in.
            gf = g[fresh]
            Ag = lin.take(xp.flatnonzero(fresh)).jvp(gf) - gf
            n_matvec[active[fresh]] += 1
            ray = xp.einsum("bi,bi->b", Ag, Ag) / xp.maximum(xp.einsum("bi,bi->b", gf, gf), np.finfo(dtype).tiny)
            m[fresh] = xp.maximum(1e-3 * ray, 1e-12)
        m = xp.maximum(m, mu_floor)
        fwd = lin.operator()
        bwd = lin.operator(transpose=True)

        def normal(idx, V, m=m, free=free, fwd=fwd, bwd=bwd):
            fv = free[idx] * V
            AV = fwd(idx, fv) - fv
            return free[idx] * (bwd(idx, AV) - AV) + (m[idx, None] + (1.0 - free[idx])) * V

        precond = None
        if preconditioner is not None:
            group = preconditioner.assign(ha)

            def precond(idx, R, free=free, group=group):
                # P M^-1 P, P the free coordinates: CG's residuals are zero on the pinned ones
                # (the rhs -g * free is, and the system keeps vectors that are), so P M^-1 P is
                # positive definite on the subspace CG works in, as CG needs.
                f = free[idx]
                return f * preconditioner.apply_rows(group[idx], (f * R).astype(xp.float32)).astype(dtype)

        sol = batched_cg(normal, -g * free, rtol=_CG_RTOL, maxiter=_CG_MAXITER, precond=precond)
        n_matvec[active] += 2 * sol.nit
        delta = sol.x
        trial = xp.clip(ha + delta, lower, upper)
        taken = trial - ha
        r_trial = step(trial, rows(active)) - trial
        q_trial = 0.5 * xp.einsum("bi,bi->b", r_trial, r_trial)
        # Decrease predicted by the linear model r + A s at the step actually taken (clipped or not).
        r_model = ra + (lin.jvp(taken) - taken)
        n_matvec[active] += 1
        predicted = qa - 0.5 * xp.einsum("bi,bi->b", r_model, r_model)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = (qa - q_trial) / predicted
        short = xp.abs(taken).max(axis=1) <= opts["max_step"]
        accept = xp.isfinite(delta).all(axis=1) & short & xp.isfinite(q_trial) & (predicted > 0) & (rho > 0)
        v = nu[active]
        m_new = xp.where(accept, m * xp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), m * v)
        nu[active] = xp.where(accept, 2.0, v * 2.0)
        mu[active] = xp.maximum(m_new, mu_floor)
        h[active] = xp.where(accept[:, None], trial, ha)
        r[active] = xp.where(accept[:, None], r_trial, ra)
        stuck = ~accept & (m_new > _MU_MAX)
        if bool(stuck.any()):
            s = xp.flatnonzero(stuck)
            status[active[s]] = _stall_status(xp, ha[s], ra[s], g[s], lower, upper, opts)
        active = active[status[active] == st.RUNNING]
    status = xp.where(status == st.RUNNING, st.MAX_ITER, status)
    return h, status, nit, n_matvec

