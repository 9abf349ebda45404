"""Top-k eigenvalues of the Jacobians at many states, matrix-free (no N x N matrix).

For large hidden sizes a dense ``eig`` costs O(N^3) and N^2 memory per point; the analyses only
need the few modes nearest the unit circle (the integrating and slowest-decaying ones), which
for these maps are the eigenvalues of largest magnitude. :func:`top_eigs` finds them with a
batched Krylov-Schur method on J v products (:mod:`fastfp._krylov`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._linearize import linearize
from ._repr import short_repr
from ._validate import as_float_array, check_finite, check_params, prepare_inputs, state_size_text
from .backends import get_kernels
from .errors import InvalidOptionError, MemoryLimitError, ShapeError, warn_user

__all__ = ["TopEigs", "top_eigs"]


@dataclass(frozen=True)
class TopEigs:
    """The k eigenvalues of largest |lambda| of J = dF/dh at B states.

    Attributes
    ----------
    eigvals : ndarray, complex, shape (B, k)
        Sorted by |lambda| descending. The two members of a complex-conjugate pair tie in
        |lambda|: where they fall at columns k and k + 1, only the first is kept (ask for one
        more to keep the pair whole).
    right : ndarray, complex, shape (B, N, k)
        Unit right eigenvectors in columns: J r = lambda r.
    left : ndarray, complex, shape (B, N, k) or None
        Left eigenvectors in columns (l^T J = lambda l^T), scaled so that l_i^T r_i = 1
        (``left=True`` only); NaN columns where no left pair matched (then ``converged`` is False).
    residual : ndarray, shape (B, k)
        ||J r - lambda r||_2 of each right pair as Krylov-Schur estimates it (from the Krylov
        relation; near rounding it can read 0 where the true norm is ~1e-15).
    converged : ndarray of bool, shape (B,)
        Every wanted pair met ``tol`` (and, with ``left=True``, every left pair was found); False: the
        values are the best found within maxiter. A Krylov method cannot prove that no larger
        eigenvalue was missed; the default Krylov dimension makes that unlikely, except for further
        copies of an *exactly* repeated eigenvalue (units whose Jacobian rows are val * e_i, e.g.
        gates saturated to 1.0 in floating point), of which one start vector finds only some:
        a warning says so where an eigenvalue comes out repeated.
    nit : ndarray of int, shape (B,)
        J v products spent per point (twice that with ``left=True``).
    """

    __repr__ = short_repr

    eigvals: np.ndarray
    right: np.ndarray
    left: np.ndarray | None
    residual: np.ndarray
    converged: np.ndarray
    nit: np.ndarray

    @property
    def time_constants(self) -> np.ndarray:
        """(B, k) tau = -1 / ln|lambda| in steps (+inf for |lambda| = 1 to rounding, negative for
        growing modes)."""
        from ._tau import time_constants

        return time_constants(self.eigvals)


def top_eigs(params, h, x=None, *, k: int = 8, ncv: int | None = None, tol: float = 1e-12,
             maxiter: int | None = None, left: bool = False, backend: str = "cpu", seed: int = 0,
             memory_limit: float | None = None) -> TopEigs:
    """The k eigenvalues of largest magnitude of J = dF/dh at each state, without forming J.

    Parameters
    ----------
    params : RNNParams
    h : array_like, shape (B, N) or (N,)
        States (e.g. ``FixedPoints.x``); computed in float64. One state (N,) gives a result of
        one row (B = 1).
    x : array_like, shape (M,) or (B, M), optional
        Inputs (``None``: zero).
    k : int
        Number of eigenvalues, 1 <= k < N.
    ncv : int, optional
        Krylov dimension, min(N, 2k + 1) <= ncv <= N (default max(2k + 1, k + 56), at most N: 64 for k = 8, which
        took 1.3-2.1x less time than 40 with left vectors on random rank-2 GRU/LSTM roots at N =
        1024-2048, bench/RESULTS-krylov.md); memory B x ncv x N.
        A larger space converges faster where the eigenvalues near |lambda_k| are clustered.
    tol : float
        Stop a point when every wanted pair has ||J r - lambda r|| <= tol * max(|lambda_1|, 1).
        Eigenvalues in tight clusters (non-normal J) are accurate only to about sqrt(tol) times
        their conditioning, so the default is strict.
    maxiter : int, optional
        J v products per point at most (default 200 * ncv).
    left : bool
        Also compute left eigenvectors (a second Krylov run on J^T, paired by eigenvalue).
    backend : {'cpu', 'numpy', 'gpu'}
    seed : int
        Seed of the random Krylov start vectors.
    memory_limit : float, optional
        Bytes the method may use (default: half the available memory, or 80% of the free GPU
        memory); the states are processed in chunks that fit.

    Returns
    -------
    TopEigs
    """
    check_params(params)
    get_kernels(backend)  # validates the name (and the GPU's availability)
    H = as_float_array("h", h, np.float64)
    if H.ndim == 1:
        H = H[None, :]
    if H.ndim != 2 or H.shape[1] != params.state_size:
        raise ShapeError(f"argument 'h': got shape {np.shape(h)}, expected (B, N) with {state_size_text(params)}")
    check_finite("h", H)
    B, N = H.shape
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < N:
        raise InvalidOptionError(f"argument 'k': got {k!r}, expected an integer with 1 <= k < N = {N}")
    low = min(N, 2 * k + 1)
    if ncv is not None and (not isinstance(ncv, (int, np.integer)) or isinstance(ncv, bool) or not (low <= ncv <= N and ncv > k)):
        # Fewer than 2k + 1 vectors can converge to k eigenvalues that are not the largest.
        raise InvalidOptionError(
            f"argument 'ncv': got {ncv!r}, expected an integer with min(N, 2k + 1) = {low} <= ncv <= N = {N}"
        )
    if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
        raise InvalidOptionError(f"argument 'tol': got {tol!r}, expected a finite number > 0")
    X = prepare_inputs("x", params, x, B, np.float64)
    m = int(min(N, max(2 * k + 1, k + 56))) if ncv is None else int(ncv)
    if maxiter is None:
        maxiter = 200 * m
    if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or maxiter < 1:
        raise InvalidOptionError(f"argument 'maxiter': got {maxiter!r}, expected a positive integer")

    # Krylov basis (ncv + 1 vectors), k right and k + 2 left vectors (complex) and work vectors.
    from .solvers import _default_memory_limit

    per_point = ((m + 1) + 4 * (k + 2) + 16) * N * 8
    limit = _default_memory_limit(memory_limit, backend)
    chunk = int(limit // per_point)
    if chunk < 1:
        raise MemoryLimitError(
            f"top_eigs needs about {per_point / 2**20:.1f} MiB per point (N = {N}, ncv = {m}) but memory_limit "
            f"is {limit / 2**20:.1f} MiB; raise memory_limit or lower ncv"
        )
    parts = [_top_eigs_chunk(params, H[lo:lo + chunk], X if X.shape[0] == 1 else X[lo:lo + chunk], k, m, tol,
                             maxiter, left, backend, seed)
             for lo in range(0, B, chunk)] or [_top_eigs_chunk(params, H, X, k, m, tol, maxiter, left, backend, seed)]
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: np.concatenate([getattr(t, name) for t in parts], axis=0)  # noqa: E731
    return TopEigs(eigvals=cat("eigvals"), right=cat("right"), left=cat("left") if left else None,
                   residual=cat("residual"), converged=cat("converged"), nit=cat("nit"))


def _top_eigs_chunk(params, H, X, k, m, tol, maxiter, left, backend, seed):
    from ._krylov import batched_eigs

    B, N = H.shape
    xp, H_dev, X_dev, w = _on_backend(backend, H, X, params)
    if backend == "gpu":
        from ._cells_gpu import device_cells

        lin = device_cells().linearize(params.cell_code, params.nonlinearity_code, H_dev, X_dev, *w)
    else:
        lin = linearize(params.cell_code, params.nonlinearity_code, H_dev, X_dev, *w)
    right = batched_eigs(lin.operator(), B, N, k, dtype=np.float64, xp=xp, ncv=m, tol=tol,
                         maxiter=maxiter, seed=seed)
    vec_r = _host(right.vectors)
    vec_l = None
    nit = right.nit
    converged = right.converged
    if left:
        # A few more left pairs than wanted: where |lambda_k| ~ |lambda_k+1| the two runs may settle on
        # different members of the tie, and every right eigenvalue needs its partner.
        kl = min(k + 2, m - 1, N - 1) if m > k + 2 else k
        lres = batched_eigs(lin.operator(transpose=True), B, N, kl, dtype=np.float64, xp=xp, ncv=m, tol=tol,
                            maxiter=maxiter, seed=seed + 1)
        vec_l, paired = _pair_left(right.eigvals, lres.eigvals, _host(lres.vectors), vec_r, tol)
        converged = converged & lres.converged & paired
        nit = nit + lres.nit
    if m < N:  # a full-dimension Krylov space holds every copy
        _warn_repeated(right.eigvals)
    return TopEigs(eigvals=right.eigvals, right=vec_r, left=vec_l, residual=right.residual,
                   converged=converged, nit=nit)


def _warn_repeated(lam) -> None:
    """Warn where an eigenvalue came out more than once: one Krylov start vector spans a single
    direction of an exactly repeated eigenvalue's eigenspace, so further copies (units whose J
    rows are val * e_i, as gates saturated to exactly 1.0 make them) can be missing."""
    lam = np.asarray(lam)
    if lam.shape[1] < 2:
        return
    gap = np.abs(lam[:, :, None] - lam[:, None, :])
    near = gap <= 1e-10 * np.maximum(1.0, np.abs(lam))[:, :, None]
    near &= ~np.eye(lam.shape[1], dtype=bool)[None]
    hit = np.flatnonzero(near.any(axis=(1, 2)) & np.isfinite(lam).all(axis=1))
    if hit.size:
        b = int(hit[0])
        value = lam[b][near[b].any(axis=1)][0]
        value = value.real if value.imag == 0 else value
        copies = int(near[b][near[b].any(axis=1)][0].sum()) + 1
        warn_user(f"top_eigs: at {hit.size} of {lam.shape[0]} states an eigenvalue comes out repeated (state {b}: "
                  f"{value:.6g} x{copies}); a Krylov run from one start vector finds only some copies of an exactly "
                  "repeated eigenvalue, so counts of such modes may be short; the dense decomposition (decompose() "
                  "without k) or ncv=N finds every copy")


def _pair_left(lam_r, lam_l, vec_l, vec_r, tol):
    """Left vectors in the right eigenvalues' order, scaled so that l^T r = 1; NaN (and paired False)
    where no left eigenvalue matches or l^T r ~ 0 (a defective or mismatched pair)."""
    B, k = lam_r.shape
    out = np.full_like(vec_r, np.nan)
    paired = np.ones(B, dtype=bool)
    for b in range(B):
        used = np.zeros(lam_l.shape[1], bool)
        scale = max(1.0, float(np.abs(lam_r[b]).max()))
        for i in range(k):
            d = np.abs(lam_l[b] - lam_r[b, i])
            d[used] = np.inf
            j = int(np.argmin(d))
            if d[j] > max(1e-6, 1e3 * tol) * scale:
                paired[b] = False
                continue
            used[j] = True
            l = vec_l[b, :, j]
            s = l @ vec_r[b, :, i]
            if abs(s) <= 1e-8 * np.linalg.norm(l) * np.linalg.norm(vec_r[b, :, i]):
                paired[b] = False
                continue
            out[b, :, i] = l / s
        _biorthogonalize_clusters(lam_r[b], vec_r[b], out[b], max(1e-6, 1e3 * tol) * scale, paired, b)
    return out, paired


def _biorthogonalize_clusters(lam, R, L, gap, paired, b):
    """Make L^T R = I within each group of (near-)equal eigenvalues, in place: a left and a right
    Krylov run each return *some* basis of a repeated eigenvalue's eigenspace, so l_i^T r_j != 0
    for i != j there (up to 4 found with 3 saturated units), which l_i^T r_i = 1 alone does not
    fix. L_c (R_c^T L_c)^-1 is the left basis dual to R_c. A group whose R_c^T L_c is singular
    (the runs found different subspaces) gets NaN columns and paired False."""
    k = lam.shape[0]
    seen = np.zeros(k, dtype=bool)
    for i in range(k):
        if seen[i] or not np.isfinite(lam[i]):
            continue
        group = np.flatnonzero((np.abs(lam - lam[i]) <= gap) & ~seen)
        seen[group] = True
        if group.size < 2 or not np.isfinite(L[:, group]).all():
            continue
        G = R[:, group].T @ L[:, group]  # (c, c); diagonal 1 after the scaling
        if np.linalg.cond(G) > 1e8:
            L[:, group] = np.nan
            paired[b] = False
            continue
        L[:, group] = L[:, group] @ np.linalg.inv(G)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _on_backend(backend, H, X, params):
    """The namespace and the arrays (states, inputs, weights) on the backend's device."""
    w = params.arrays(np.float64)
    if backend == "gpu":
        import cupy

        return cupy, cupy.asarray(H), cupy.asarray(X), tuple(cupy.asarray(a) for a in w)
    return np, H, X, w
