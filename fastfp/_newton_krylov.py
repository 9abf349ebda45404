"""Matrix-free Newton-Krylov: Newton on r(h) = F(h, x) - h with (J - I) delta = -r solved by
batched GMRES on J v products; no N x N matrix is ever formed.

Memory per point is O(restart * N) instead of O(N^2), and each GMRES iteration is one GEMM of the
(B, N) block with the recurrent kernel, so large hidden sizes fit and run at GEMM speed. Written
against the array namespace of the states: the same code runs on NumPy (CPU tests) and CuPy.

Inexact Newton (Dembo, Eisenstat & Steihaug 1982) with Eisenstat & Walker's (1996) choice 2
forcing terms: GMRES only solves as accurately as the outer iteration can use, then tighter as the
residual falls (superlinear convergence). Per-point backtracking on q = ||r||^2 / 2; where the
Newton direction gives no decrease, a steepest-descent step on q (one w^T J product) is tried,
and a point where neither decreases q with grad q ~ 0 is a slow point.
"""

from __future__ import annotations

import sys

import numpy as np

from . import status as st
from ._cells_ref import _xp
from ._krylov import _to_host, batched_gmres
from ._linearize import linearize
from .solvers import _stall_status

__all__ = ["newton_krylov"]

_ARMIJO = 1e-4
_HALVINGS = 12
# The first forcing term and the cap of later ones: 0.1 (Eisenstat-Walker's) cost one Newton
# iteration more on the trained GRUs (measured: 6.0 against 5.1 per point, 12% of the time).
_ETA_MAX = 0.01
_ETA_MIN_MIXED = 1e-4
_EW_GAMMA = 0.9


def newton_krylov(step, params_arrays, cell, act, H0, X, bounds, opts, *, restart=40, progress=False, method="newton",
                  linearize_fn=linearize, preconditioner=None, forward_fn=None):
    """Solve F(h, x) = h from H0 (B, N) with inputs X (1 or B, M); arrays in one namespace.

    Returns (h, status, nit, n_matvec) with status per ``fastfp.status`` (no RUNNING left).
    ``step(h, X)`` evaluates F; ``bounds`` is the (lower, upper) box holding every root;
    ``linearize_fn(cell, act, h, X, *params_arrays)`` gives the Linearization (the GPU backend
    passes its fused one). With ``forward_fn(h, X) -> (F, Linearization)`` the line search's
    evaluations also linearise, and the next iteration reuses the linearisation at the accepted
    states instead of running the forward pass again there (one forward pass per iteration).
    """
    xp = _xp(H0)
    B, N = H0.shape
    dtype = H0.dtype
    mixed = bool(opts.get("mixed_precision")) and dtype == np.float64
    precise = xp.zeros(B, dtype=bool)  # points whose float32 GMRES stalled: float64 from then on
    lower = xp.asarray(bounds[0], dtype=dtype)
    upper = xp.asarray(bounds[1], dtype=dtype)
    h = xp.clip(H0, lower, upper)
    rows = (lambda idx: X) if X.shape[0] == 1 else (lambda idx: X[idx])
    r = step(h, X) - h
    status = xp.full(B, st.RUNNING, dtype=xp.int64)
    nit = xp.zeros(B, dtype=xp.int64)
    n_matvec = xp.zeros(B, dtype=xp.int64)
    rn_prev = xp.full(B, np.nan, dtype=dtype)
    eta_prev = xp.full(B, _ETA_MAX, dtype=dtype)
    active = xp.arange(B)
    store, store_lin = None, None  # with forward_fn: the linearisation at every point's current state
    for it in range(opts["maxiter"] + 1):
        active, ha, ra = _stop_finished(xp, h, r, active, status, opts)
        if active.size == 0:
            break
        Xa = rows(active)
        if store is not None:
            lin = store_lin.with_coef({k: v[active] for k, v in store.items()})
        else:
            lin = linearize_fn(cell, act, ha, Xa, *params_arrays)
        grad = lin.vjp(ra) - ra  # grad q = (J - I)^T r
        slow = xp.abs(grad).max(axis=1) <= opts["gtol"]
        if bool(slow.any()):
            status[active[slow]] = st.SLOW_POINT
            keep = ~slow
            active, ha, ra, grad = active[keep], ha[keep], ra[keep], grad[keep]
            lin = lin.take(xp.flatnonzero(keep))
            Xa = rows(active)
        if it == opts["maxiter"]:
            status[active] = st.MAX_ITER
            break
        if active.size == 0:
            break
        if callable(progress):  # a progress bar's hook: points finished in this chunk
            progress(B - int(active.size))
        elif progress:
            print(f"fastfp[{method}, matrix-free] iteration {it}: {int(active.size)}/{B} points active", file=sys.stderr)
        nit[active] += 1
        rn = xp.sqrt(xp.einsum("bi,bi->b", ra, ra))
        # Eisenstat-Walker choice 2 with its safeguard; never solve below what atol needs.
        prev = rn_prev[active]
        eta = xp.where(xp.isfinite(prev), _EW_GAMMA * (rn / prev) ** 2, _ETA_MAX)
        guard = _EW_GAMMA * eta_prev[active] ** 2
        eta = xp.where(guard > 0.1, xp.maximum(eta, guard), eta)
        floor = 0.5 * opts["atol"] / xp.maximum(rn, np.finfo(dtype).tiny)
        eta = xp.minimum(_ETA_MAX, xp.maximum(eta, xp.minimum(floor, _ETA_MAX)))
        eta = xp.maximum(eta, 8 * np.finfo(dtype).eps)
        rn_prev[active], eta_prev[active] = rn, eta

        if mixed:
            group = None if preconditioner is None else preconditioner.assign(ha)
            delta, spent = _mixed_solve(xp, lin, ra, rn, eta, active, precise, restart, opts, dtype,
                                        preconditioner, group)
        else:
            sol = batched_gmres(lin.operator(shift=1.0), -ra, rtol=eta, restart=restart,
                                maxiter=opts.get("krylov_maxiter", 10 * restart))
            delta, spent = sol.x, sol.nit
        n_matvec[active] += spent + 2
        # Trust radius: a near-singular J - I gives huge steps into the saturated region.
        hn = xp.maximum(1.0, xp.abs(ha).max(axis=1))
        dn = xp.abs(delta).max(axis=1)
        scale = xp.minimum(1.0, opts["max_step"] * hn / xp.maximum(dn, np.finfo(dtype).tiny))
        delta = delta * scale[:, None]
        qa = 0.5 * rn * rn
        # Directional derivative of q along delta, r^T (J - I) delta: -2q for an exact Newton step,
        # less in size for an inexact or trust-clipped one (one more J v product).
        slope = xp.minimum(xp.einsum("bi,bi->b", ra, lin.jvp(delta) - delta), 0.0)
        new_h, new_r, ok, coef = _backtrack(xp, step, rows, active, ha, ra, qa, delta, slope, lower, upper,
                                            forward_fn)
        if forward_fn is not None:
            if store is None:
                store = {k: xp.empty((B,) + v.shape[1:], dtype=v.dtype) for k, v in lin.coef.items()}
                store_lin = lin.with_coef({})  # its kind (the device's fused products) and weights only
            acc = xp.flatnonzero(ok)
            for k, v in store.items():
                v[active] = lin.coef[k]  # where the state stays, its linearisation stays
                if coef is not None:
                    v[active[acc]] = coef[k][acc]
        bad = xp.flatnonzero(~ok)
        if bad.size and method == "hybrid":
            # Steepest descent on q where Newton gave nothing, length min(1, ||r|| / ||g||).
            g = grad[bad]
            gn = xp.sqrt(xp.einsum("bi,bi->b", g, g))
            t = xp.minimum(1.0, rn[bad] / xp.maximum(gn, np.finfo(dtype).tiny))
            sd_h, sd_r, sd_ok, sd_coef = _backtrack(xp, step, rows, active[bad], ha[bad], ra[bad], qa[bad],
                                                    -t[:, None] * g, -t * gn * gn, lower, upper, forward_fn)
            new_h[bad], new_r[bad] = sd_h, sd_r
            if sd_coef is not None:
                acc = xp.flatnonzero(sd_ok)
                for k, v in store.items():
                    v[active[bad[acc]]] = sd_coef[k][acc]
            bad = bad[~sd_ok]
        if bad.size:
            # No decrease at all (plain Newton: along the Newton direction, as the dense solver).
            status[active[bad]] = _stall_status(xp, ha[bad], ra[bad], grad[bad], lower, upper, opts)
        h[active], r[active] = new_h, new_r
        active = active[status[active] == st.RUNNING]
    status = xp.where(status == st.RUNNING, st.MAX_ITER, status)
    return h, status, nit, n_matvec


def _mixed_solve(xp, lin, ra, rn, eta, active, precise, restart, opts, dtype, pre=None, group=None):
    """(J - I) delta = -r by float32 GMRES (rows not yet ``precise``), finished in float64 where it
    stalls. float32 products reach a relative residual of only ~ cond(J - I) * 6e-8; above the
    forcing term that GMRES would spend its whole budget (found in review: 400 products per solve
    at cond 1e4), so float32 gets one restart cycle, and a point it leaves short is solved in
    float64 from the float32 answer and stays float64. With ``pre`` (a RootPreconditioner) and
    ``group`` (its assignment of the rows), float32 GMRES is right-preconditioned. Returns
    (delta, products per point)."""
    maxiter = opts.get("krylov_maxiter", 10 * restart)
    delta = xp.zeros_like(ra)
    spent = xp.zeros(ra.shape[0], dtype=xp.int64)
    lo = xp.flatnonzero(~precise[active])
    short = xp.flatnonzero(precise[active])
    if lo.size:
        if pre is not None:
            # Rows in order of their root, so that each root's rows stay one slice in every
            # subset GMRES works on (its subsets keep the order).
            lo = lo[xp.argsort(group[lo], kind="stable")]
        sub = lin if (lo.size == ra.shape[0] and pre is None) else lin.take(lo)
        scale = xp.maximum(rn[lo], np.finfo(dtype).tiny)[:, None]
        rhs = (-ra[lo] / scale).astype(np.float32)
        eta32 = xp.maximum(eta[lo], _ETA_MIN_MIXED).astype(np.float32)
        op = sub.astype(np.float32).operator(shift=1.0)
        if pre is not None:
            g_lo = group[lo]
            base = op

            def op(idx, V):  # right preconditioning: GMRES on (J - I) M^-1, x = M^-1 u
                return base(idx, pre.apply(g_lo[idx], V))

        sol = batched_gmres(op, rhs, rtol=eta32, restart=restart, maxiter=min(maxiter, restart))
        x32 = sol.x if pre is None else pre.apply(g_lo, sol.x)
        delta[lo] = x32.astype(dtype) * scale
        spent[lo] = sol.nit
        stalled = lo[~sol.converged]
        if stalled.size:
            precise[active[stalled]] = True
            short = xp.sort(xp.concatenate([short, stalled]))  # sorted: all rows means the identity order
    if short.size:
        sub = lin if short.size == ra.shape[0] else lin.take(short)
        sol = batched_gmres(sub.operator(shift=1.0), -ra[short], x0=delta[short], rtol=eta[short], restart=restart,
                            maxiter=maxiter)
        delta[short] = sol.x
        spent[short] += sol.nit
    return delta, spent


def _stop_finished(xp, h, r, active, status, opts):
    """Residual checks on the active points: those finished (converged, q tolerance, non-finite,
    too far) get their status and leave. Returns (active, h[active], r[active]) of the rest."""
    ha, ra = h[active], r[active]
    done = _classify(xp, ha, ra, opts)
    stop = done >= 0
    if bool(stop.any()):
        status[active[stop]] = done[stop]
        active, ha, ra = active[~stop], ha[~stop], ra[~stop]
    return active, ha, ra


def _classify(xp, h, r, opts):
    """As solvers._classify_residual, in the namespace of h: RUNNING (-1) where the point goes on."""
    out = xp.full(h.shape[0], st.RUNNING, dtype=xp.int64)
    finite = xp.isfinite(r).all(axis=1) & xp.isfinite(h).all(axis=1)
    hnorm = xp.abs(h).max(axis=1)
    rnorm = xp.abs(r).max(axis=1)
    out = xp.where(hnorm > opts["max_norm"], st.DIVERGED, out)
    if opts.get("tol_q") is not None:
        q = 0.5 * xp.einsum("bi,bi->b", r, r)
        out = xp.where(q <= opts["tol_q"], st.Q_TOLERANCE, out)
    out = xp.where(rnorm <= opts["atol"] + opts["rtol"] * hnorm, st.CONVERGED, out)
    out = xp.where(~finite, st.NONFINITE, out)
    return out


def _backtrack(xp, step, rows, ids, h, r, q, delta, slope, lower, upper, forward=None):
    """Per-point Armijo backtracking on q along delta (directional derivative ``slope`` <= 0),
    inside the root box: accept the first alpha = 1, 1/2, ... with q(h + alpha delta) <= q + c alpha slope.

    Returns (new_h, new_r, ok, coef): with ``forward`` (see newton_krylov), coef holds the
    linearisation coefficients at the accepted states (rows where ok), else None."""
    new_h, new_r = h.copy(), r.copy()
    ok = xp.zeros(h.shape[0], dtype=bool)
    coef = None
    pending = xp.arange(h.shape[0])
    alpha = 1.0
    for _ in range(_HALVINGS + 1):
        if pending.size == 0:
            break
        trial = xp.clip(h[pending] + alpha * delta[pending], lower, upper)
        if forward is None:
            F = step(trial, rows(ids[pending]))
        else:
            F, lin = forward(trial, rows(ids[pending]))
        r_trial = F - trial
        q_trial = 0.5 * xp.einsum("bi,bi->b", r_trial, r_trial)
        accept = xp.isfinite(q_trial) & (q_trial <= q[pending] + _ARMIJO * alpha * slope[pending])
        acc = pending[accept]
        new_h[acc], new_r[acc] = trial[accept], r_trial[accept]
        if forward is not None:
            if coef is None:
                coef = {k: xp.empty((h.shape[0],) + v.shape[1:], dtype=v.dtype) for k, v in lin.coef.items()}
            for k, v in lin.coef.items():
                coef[k][acc] = v[accept]
        ok[acc] = True
        pending = pending[~accept]
        alpha *= 0.5
    return new_h, new_r, ok, coef


class RootPreconditioner:
    """Right preconditioner for the Newton systems from inverses of J - I at known roots.

    (The matrix-free LM uses the same class with the inverses of its damped normal matrices
    A^T A + mu I at known slow points: see ``solvers._lm_preconditioner``.)

    Near a root h*, J(h) - I is close to J(h*) - I, so GMRES on (J(h) - I) M^-1 with
    M = J(h*) - I converges in a few iterations where unpreconditioned GMRES needs one per slow
    mode and more; a point farther than ``radius`` (2-norm) from every root is left
    unpreconditioned. Right preconditioning leaves GMRES's residual the true one, so the
    Newton step is as accurate as without (only cheaper). Arrays in one namespace.
    """

    def __init__(self, roots, inverses, radius):
        self.roots = roots  # (R, N)
        self.inverses = inverses  # (R, N, N) float32: (J - I)^-1 at each root
        self.radius = radius

    def assign(self, h):
        """The root index of each state (B,): the nearest root, -1 where none is within radius."""
        xp = _xp(h)
        # Squared distances through one product (B x N x R), not a (B, R, N) difference.
        d2 = (h * h).sum(axis=1)[:, None] - 2.0 * (h @ self.roots.T) + (self.roots * self.roots).sum(axis=1)[None, :]
        near = xp.argmin(d2, axis=1)
        ok = d2[xp.arange(h.shape[0]), near] <= self.radius ** 2
        return xp.where(ok, near, -1)

    def apply_rows(self, group, V):
        """M^-1 V per row for a ``group`` in any order (as :meth:`apply`, through a sort)."""
        xp = _xp(V)
        order = xp.argsort(group)
        out = xp.empty_like(V)
        out[order] = self.apply(group[order], V[order])
        return out

    def apply(self, group, V):
        """M^-1 V per row: rows of V (len(group), N) whose ``group`` (non-decreasing, from
        :meth:`assign` sorted) names a root are multiplied by its inverse, the others kept.
        Sorted groups make each root's rows one slice: a product on a view, no gather."""
        xp = _xp(V)
        R = self.roots.shape[0]
        ends = _to_host(xp.searchsorted(group, xp.arange(-1, R), side="right"))
        out = xp.empty_like(V)
        out[: ends[0]] = V[: ends[0]]
        for c in range(R):
            lo, hi = int(ends[c]), int(ends[c + 1])
            if hi > lo:
                out[lo:hi] = V[lo:hi] @ self.inverses[c].T
        return out
