"""Dense Newton / chord iterations run per point in one compiled loop (the CPU dense solver).

The vectorised loop of ``solvers._dense`` spends each iteration in a dozen batch-wide passes
(classification, chord trials, Jacobians, factorisations, line-search trials), each over every
active point and each with its own temporaries and Python overhead; at N = 64 those passes cost
more than the arithmetic. Here one ``nogil`` kernel takes a point through all of its iterations
while its state, Jacobian and LU factors stay in cache, and callers spread the points over
threads (``_linalg.split_rows``). The algorithm is the one of ``solvers._dense`` for ``newton``
and ``hybrid`` (same classification order, chord rule, float32 factors with the float64 retry,
Armijo backtracking, trust test, and for a ``hybrid`` point whose Newton step fails the same
Levenberg-Marquardt step), whose vectorised NumPy form (``backend='numpy'``) is the reference
the tests hold this kernel to.

Per-point cell evaluations (:func:`forward_point`) are scalar loops: a matrix-vector product with
the recurrent kernel plus the gate arithmetic. Their twin is ``_cells_ref.step_ref`` on one row.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import status as st
from ._batched_lu import PIVOT_DTYPE, factor_one, solve_one
from ._cells_cpu import _jacobian_serial
from .params import GRU, GRU_RESET_BEFORE, RELU, UGRNN, VANILLA

__all__ = ["newton_points_cpu", "forward_point", "TOLS", "FLAGS"]

# Layout of the option vectors (one compiled signature whatever the options).
TOLS = ("atol", "rtol", "tol_q", "max_norm", "gtol", "max_step", "armijo", "chord_contraction", "mu_max",
        "stuck_rtol")
FLAGS = ("maxiter", "max_halvings", "chord", "mixed", "lm_fallback", "chord_max_steps")
_PIV = np.dtype(PIVOT_DTYPE).type
_MAX_COEFFS = 6


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _matvec_rows(W, lo, hi, v, out):
    """out[i] = W[i, :] . v for lo <= i < hi (reassociated so the dot products vectorise)."""
    n = v.shape[0]
    for i in range(lo, hi):
        s = 0.0
        for j in range(n):
            s += W[i, j] * v[j]
        out[i] = s


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))  # exp overflows to inf for a << 0: the correct limit 0


@njit(cache=True, nogil=True, error_model="numpy")
def forward_point(cell, act, h, ax, w_hh, b_hh, want_d, out, d, u):
    """F(h, x) for one state into ``out`` (N,) and, with ``want_d``, the derivative coefficients
    into ``d`` (at least (K, H), the layout of ``_cells_cpu.N_COEFFS``).

    ``ax`` (G*H,) is the input projection W_ih x + b_ih; ``u`` (G*H,) is scratch for the
    recurrent projections.
    """
    H = w_hh.shape[1]
    if cell == VANILLA:
        _matvec_rows(w_hh, 0, H, h, u)
        for j in range(H):
            pre = u[j] + ax[j] + b_hh[j]
            if act == RELU:
                out[j] = pre if pre > 0 else 0.0
                if want_d:
                    d[0, j] = 1.0 if pre > 0 else 0.0
            else:
                t = math.tanh(pre)
                out[j] = t
                if want_d:
                    d[0, j] = 1.0 - t * t
    elif cell == GRU:
        _matvec_rows(w_hh, 0, 3 * H, h, u)
        for j in range(H):
            r = _sigmoid(ax[j] + u[j] + b_hh[j])
            z = _sigmoid(ax[H + j] + u[H + j] + b_hh[H + j])
            hn = u[2 * H + j] + b_hh[2 * H + j]
            n = math.tanh(ax[2 * H + j] + r * hn)
            hj = h[j]
            out[j] = (1.0 - z) * n + z * hj
            if want_d:
                dn = (1.0 - z) * (1.0 - n * n)
                d[0, j] = dn * hn * r * (1.0 - r)
                d[1, j] = (hj - n) * z * (1.0 - z)
                d[2, j] = dn
                d[3, j] = z
                d[4, j] = r
    elif cell == GRU_RESET_BEFORE:
        _matvec_rows(w_hh, 0, 2 * H, h, u)
        for j in range(H):
            r = _sigmoid(ax[j] + u[j] + b_hh[j])
            u[j] = r
            u[H + j] = _sigmoid(ax[H + j] + u[H + j] + b_hh[H + j])
            out[j] = r * h[j]  # the reset state, consumed by the next product
        _matvec_rows(w_hh, 2 * H, 3 * H, out, u)
        for j in range(H):
            r = u[j]
            z = u[H + j]
            n = math.tanh(ax[2 * H + j] + u[2 * H + j] + b_hh[2 * H + j])
            hj = h[j]
            out[j] = (1.0 - z) * n + z * hj
            if want_d:
                d[0, j] = (1.0 - z) * (1.0 - n * n)
                d[1, j] = (hj - n) * z * (1.0 - z)
                d[2, j] = z
                d[3, j] = r
                d[4, j] = hj * r * (1.0 - r)
    elif cell == UGRNN:
        _matvec_rows(w_hh, 0, 2 * H, h, u)
        for j in range(H):
            g = _sigmoid(ax[j] + u[j] + b_hh[j])
            c = math.tanh(ax[H + j] + u[H + j] + b_hh[H + j])
            hj = h[j]
            out[j] = g * hj + (1.0 - g) * c
            if want_d:
                d[0, j] = (hj - c) * g * (1.0 - g)
                d[1, j] = (1.0 - g) * (1.0 - c * c)
                d[2, j] = g
    else:  # LSTM, state [h, c]
        _matvec_rows(w_hh, 0, 4 * H, h[:H], u)
        for j in range(H):
            i = _sigmoid(ax[j] + u[j] + b_hh[j])
            f = _sigmoid(ax[H + j] + u[H + j] + b_hh[H + j])
            gg = math.tanh(ax[2 * H + j] + u[2 * H + j] + b_hh[2 * H + j])
            o = _sigmoid(ax[3 * H + j] + u[3 * H + j] + b_hh[3 * H + j])
            c = h[H + j]
            c2 = f * c + i * gg
            t = math.tanh(c2)
            out[j] = o * t
            out[H + j] = c2
            if want_d:
                d[0, j] = gg * i * (1.0 - i)
                d[1, j] = c * f * (1.0 - f)
                d[2, j] = i * (1.0 - gg * gg)
                d[3, j] = t * o * (1.0 - o)
                d[4, j] = o * (1.0 - t * t)
                d[5, j] = f


@njit(cache=True, nogil=True, error_model="numpy")
def _trial_residual(cell, act, h, delta, alpha, ax, w_hh, b_hh, lower, upper, trial, rt, d, u):
    """trial = clip(h + alpha delta) to the root box, rt = F(trial) - trial; returns q(trial)."""
    n = h.shape[0]
    for j in range(n):
        v = h[j] + alpha * delta[j]
        if v < lower[j]:
            v = lower[j]
        if v > upper[j]:
            v = upper[j]
        trial[j] = v
    forward_point(cell, act, trial, ax, w_hh, b_hh, False, rt, d, u)
    q = 0.0
    for j in range(n):
        rt[j] -= trial[j]
        q += rt[j] * rt[j]
    return 0.5 * q


@njit(cache=True, nogil=True, error_model="numpy")
def _classify(h, r, atol, rtol, tol_q, max_norm):
    """Status from the residual alone (RUNNING where the point goes on); as solvers._classify_residual."""
    hnorm = 0.0
    rnorm = 0.0
    q = 0.0
    finite = True
    for j in range(h.shape[0]):
        if not (math.isfinite(h[j]) and math.isfinite(r[j])):
            finite = False
        hnorm = max(hnorm, abs(h[j]))
        rnorm = max(rnorm, abs(r[j]))
        q += r[j] * r[j]
    if not finite:
        return st.NONFINITE
    if rnorm <= atol + rtol * hnorm:
        return st.CONVERGED
    if tol_q == tol_q and 0.5 * q <= tol_q:  # tol_q is NaN when not set
        return st.Q_TOLERANCE
    if hnorm > max_norm:
        return st.DIVERGED
    return st.RUNNING


@njit(cache=True, nogil=True, error_model="numpy")
def _stall_status(h, r, g, gnorm, lower, upper, gtol, stuck_rtol):
    """solvers._stall_status for one point: no step decreased q here. SLOW_POINT if q is
    numerically stationary, DIVERGED if pressed against the root box with q decreasing outward
    and stationary on the free coordinates, else NO_DECREASE."""
    rnorm = 0.0
    free_g = 0.0
    at_box = False
    for j in range(h.shape[0]):
        rnorm = max(rnorm, abs(r[j]))
        if (h[j] <= lower[j] and g[j] > 0) or (h[j] >= upper[j] and g[j] < 0):
            at_box = True
        else:
            free_g = max(free_g, abs(g[j]))
    tol = max(gtol, stuck_rtol * rnorm)
    if gnorm <= tol:
        return st.SLOW_POINT
    return st.DIVERGED if at_box and free_g <= tol else st.NO_DECREASE


@njit(cache=True, nogil=True, error_model="numpy")
def _direction(A, r, precise, LU, LU32, piv, delta, y32):
    """delta = -(A)^-1 r from fresh factors (float64 store if precise, else float32); returns
    True where the factorisation is regular and delta finite."""
    n = r.shape[0]
    if precise:
        info = factor_one(A, LU, piv)
        for j in range(n):
            delta[j] = -r[j]
        solve_one(LU, piv, delta)
    else:
        info = factor_one(A, LU32, piv)
        for j in range(n):
            y32[j] = -r[j]
        solve_one(LU32, piv, y32)
        for j in range(n):
            delta[j] = y32[j]
    if info != 0:
        return False
    for j in range(n):
        if not math.isfinite(delta[j]):
            return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _lm_point(cell, act, h, r, g, A, AtA, ax, w_hh, b_hh, lower, upper, mu_b, nu_b, max_step, mu_max,
              LU, piv, delta, trial, rt, d, u, free):
    """One Levenberg-Marquardt trial at one point, as ``solvers._lm_step`` (Nielsen's update);
    h, r updated where accepted. Returns (mu, nu, stuck)."""
    n = h.shape[0]
    # Coordinates pressed against the root box with q decreasing outward are held fixed.
    for j in range(n):
        pinned = (h[j] <= lower[j] and g[j] > 0) or (h[j] >= upper[j] and g[j] < 0)
        free[j] = 0.0 if pinned else 1.0
    np.dot(A.T, A, AtA)
    diag_max = -np.inf
    for i in range(n):
        for j in range(n):
            AtA[i, j] *= free[i] * free[j]
        diag_max = max(diag_max, AtA[i, i])
    m = mu_b
    if not math.isfinite(m):
        m = max(1e-3 * diag_max, 1e-12)
    for j in range(n):
        AtA[j, j] += m + (1.0 - free[j])
        delta[j] = -g[j] * free[j]
    solved = factor_one(AtA, LU, piv) == 0
    solve_one(LU, piv, delta)
    for j in range(n):
        if not math.isfinite(delta[j]):
            solved = False
    if not solved:
        for j in range(n):
            delta[j] = 0.0
    q_trial = _trial_residual(cell, act, h, delta, 1.0, ax, w_hh, b_hh, lower, upper, trial, rt, d, u)
    # Decrease predicted by the linear model r + A s at the step actually taken (clipped or not).
    q = 0.0
    q_model = 0.0
    snorm = 0.0
    for i in range(n):
        q += r[i] * r[i]
        snorm = max(snorm, abs(trial[i] - h[i]))
        s = r[i]
        for j in range(n):
            s += A[i, j] * (trial[j] - h[j])
        q_model += s * s
    q *= 0.5
    predicted = q - 0.5 * q_model
    rho = (q - q_trial) / predicted
    accept = solved and snorm <= max_step and math.isfinite(q_trial) and predicted > 0 and rho > 0
    if accept:
        m_new = m * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        v_new = 2.0
        for j in range(n):
            h[j] = trial[j]
            r[j] = rt[j]
    else:
        m_new = m * nu_b
        v_new = 2.0 * nu_b
    return m_new, v_new, (not accept) and m_new > mu_max


@njit(cache=True, nogil=True, error_model="numpy")
def newton_points_cpu(cell, act, h, r, ax, w_hh, b_hh, lower, upper, rows, iters, nit, n_factor, status, precise,
                      mu, nu, tols, flags):
    """Newton / chord (and hybrid's LM) iterations for the points ``rows``, each until it stops.

    Parameters
    ----------
    cell, act : int
        Cell and nonlinearity codes (``fastfp.params``).
    h, r : ndarray, shape (B, N)
        States and residuals F(h) - h; updated in place at ``rows``.
    ax : ndarray, shape (1 or B, G*H)
        Input projections W_ih x + b_ih (one row shared, or one per point).
    w_hh, b_hh : ndarray
        Recurrent kernel (G*H, H) and bias (G*H,).
    lower, upper : ndarray, shape (N,)
        The box that holds every root (``solvers.state_bounds``), in h's dtype.
    rows : ndarray of intp, shape (K,)
        The points to iterate (distinct; a thread's share of the active set).
    iters, nit, n_factor : ndarray of int64, shape (B,)
        Iterations used (the loop count of ``solvers._dense``), steps taken and factorisations
        of J - I; updated.
    status : ndarray of int64, shape (B,)
        Set at ``rows`` to the final status (``fastfp.status``).
    precise : ndarray of bool, shape (B,)
        Points whose factors are float64 (mixed precision); set where a float32 step failed.
    mu, nu : ndarray of float64, shape (B,)
        The LM damping state (hybrid): NaN until the first LM step sets it from A^T A; a taken
        Newton step divides mu by 3 and resets nu.
    tols, flags : ndarray (float64, int64)
        The options, in the order of :data:`TOLS` and :data:`FLAGS`.
    """
    atol, rtol, tol_q, max_norm = tols[0], tols[1], tols[2], tols[3]
    gtol, max_step, armijo, contraction, mu_max = tols[4], tols[5], tols[6], tols[7], tols[8]
    stuck_rtol = tols[9]
    maxiter, max_halvings, chord, mixed = flags[0], flags[1], flags[2] != 0, flags[3] != 0
    lm_fallback, chord_max_steps = flags[4] != 0, flags[5]
    N = h.shape[1]
    H = w_hh.shape[1]
    rb = cell == GRU_RESET_BEFORE
    d3 = np.empty((1, _MAX_COEFFS, H), dtype=h.dtype)
    d = d3[0]
    A3 = np.empty((1, N, N), dtype=h.dtype)
    A = A3[0]
    scratch = np.empty((1, H if rb else 0, N if rb else 0), dtype=h.dtype)
    u = np.empty(w_hh.shape[0], dtype=h.dtype)
    LU = np.empty((N, N), dtype=h.dtype)
    LU32 = np.empty((N, N), dtype=np.float32)
    piv = np.empty(N, dtype=_PIV)
    y32 = np.empty(N, dtype=np.float32)
    delta = np.empty(N, dtype=h.dtype)
    trial = np.empty(N, dtype=h.dtype)
    rt = np.empty(N, dtype=h.dtype)
    g = np.empty(N, dtype=h.dtype)
    AtA = np.empty((N, N), dtype=h.dtype)
    free = np.empty(N, dtype=h.dtype)
    shared = ax.shape[0] == 1
    for k in range(rows.shape[0]):
        b = rows[k]
        hb = h[b]
        rv = r[b]
        axb = ax[0] if shared else ax[b]
        it = iters[b]
        valid = False  # factors of this point held for chord steps
        held_precise = False  # ... and which store holds them
        while True:
            # 1. Checks on the residual alone.
            code = _classify(hb, rv, atol, rtol, tol_q, max_norm)
            if code != st.RUNNING:
                status[b] = code
                break
            last = it == maxiter
            # 2. A chord step on the held factors, kept if it contracts ||r||_2 enough.
            if chord and valid and not last:
                for j in range(N):
                    delta[j] = -rv[j]
                if held_precise:
                    solve_one(LU, piv, delta)
                else:
                    for j in range(N):
                        y32[j] = delta[j]
                    solve_one(LU32, piv, y32)
                    for j in range(N):
                        delta[j] = y32[j]
                q_trial = _trial_residual(cell, act, hb, delta, 1.0, axb, w_hh, b_hh, lower, upper, trial, rt, d, u)
                q_now = 0.0
                for j in range(N):
                    q_now += rv[j] * rv[j]
                ratio = math.sqrt(2.0 * q_trial / q_now)
                if math.isfinite(q_trial) and ratio <= contraction:
                    # Linear convergence at this ratio: steps still needed to reach the
                    # tolerance; past chord_max_steps a fresh factorisation is cheaper.
                    tnorm = 0.0
                    rtnorm = 0.0
                    for j in range(N):
                        tnorm = max(tnorm, abs(trial[j]))
                        rtnorm = max(rtnorm, abs(rt[j]))
                    left = math.log((atol + rtol * tnorm) / rtnorm) / math.log(ratio)
                    valid = not (left > chord_max_steps)
                    for j in range(N):
                        hb[j] = trial[j]
                        rv[j] = rt[j]
                    nit[b] += 1
                    it += 1
                    continue
                valid = False
            # 3. A = J - I and grad q = A^T r; a stationary point stops.
            forward_point(cell, act, hb, axb, w_hh, b_hh, True, rt, d, u)
            _jacobian_serial(cell, d3, w_hh, w_hh, True, scratch, A3)
            for j in range(N):
                A[j, j] -= 1.0
                g[j] = 0.0
            for i in range(N):
                ri = rv[i]
                for j in range(N):
                    g[j] += A[i, j] * ri
            gnorm = 0.0
            for j in range(N):
                gnorm = max(gnorm, abs(g[j]))
            if gnorm <= gtol:
                status[b] = st.SLOW_POINT
                break
            if last:
                status[b] = st.MAX_ITER
                break
            nit[b] += 1
            # 4. Newton step with backtracking; a float32 failure is retried from float64 factors.
            q_now = 0.0
            hnorm = 0.0
            for j in range(N):
                q_now += rv[j] * rv[j]
                hnorm = max(hnorm, abs(hb[j]))
            q_now *= 0.5
            use_precise = precise[b] or not mixed
            failed = 0
            for attempt in range(2):
                solved = _direction(A, rv, use_precise, LU, LU32, piv, delta, y32)
                n_factor[b] += 1
                failed = 0 if solved else 1
                if solved:
                    dnorm = 0.0
                    for j in range(N):
                        dnorm = max(dnorm, abs(delta[j]))
                    if dnorm > max_step * max(1.0, hnorm):
                        failed = 3
                if failed == 0:
                    failed = 2
                    alpha = 1.0
                    for halving in range(max_halvings + 1):
                        q_trial = _trial_residual(cell, act, hb, delta, alpha, axb, w_hh, b_hh, lower, upper,
                                                  trial, rt, d, u)
                        if math.isfinite(q_trial) and q_trial <= (1.0 - 2.0 * armijo * alpha) * q_now:
                            for j in range(N):
                                hb[j] = trial[j]
                                rv[j] = rt[j]
                            failed = 0
                            # A full step: near enough for the factors to serve chord steps.
                            valid = halving == 0
                            held_precise = use_precise
                            break
                        alpha *= 0.5
                if failed == 0 or use_precise:
                    break
                # A float32 step that is too long or gives no decrease is blamed on float32 only
                # when the float32 solve is inaccurate in float64 (solvers._Factors.retry_precise).
                if failed != 1:
                    lin = 0.0
                    rr = 0.0
                    for i in range(N):
                        s = rv[i]
                        for j in range(N):
                            s += A[i, j] * delta[j]
                        lin += s * s
                        rr += rv[i] * rv[i]
                    if math.sqrt(lin) <= 1e-3 * math.sqrt(rr):
                        break
                precise[b] = True
                use_precise = True
            if failed == 0:
                if lm_fallback:
                    mu[b] = mu[b] / 3.0  # keep LM eager near roots
                    nu[b] = 2.0
                it += 1
                continue
            valid = False
            if lm_fallback:
                # The LM step of the same iteration; damping grown past mu_max without progress:
                # a slow point if q is numerically stationary, else no step decreases q here.
                mu[b], nu[b], stuck = _lm_point(cell, act, hb, rv, g, A, AtA, axb, w_hh, b_hh, lower, upper, mu[b],
                                                nu[b], max_step, mu_max, LU, piv, delta, trial, rt, d, u, free)
                if stuck:
                    status[b] = _stall_status(hb, rv, g, gnorm, lower, upper, gtol, stuck_rtol)
                    break
                it += 1
                continue
            if failed == 1:
                status[b] = st.SINGULAR
            else:
                status[b] = _stall_status(hb, rv, g, gnorm, lower, upper, gtol, stuck_rtol)  # no decrease along Newton
            break
        iters[b] = it
