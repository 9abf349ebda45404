"""Batched LU factorisation and solves, kept so one factorisation serves several Newton steps.

NumPy's stacked ``linalg.solve`` factorises and solves in one call and throws the factors away.
The chord steps of the dense Newton solver (``solvers._dense``) reuse a point's factors while they
still contract the residual, so the factors must outlive the call: ``lu_factor_*`` overwrites
selected matrices of a stack with their LU factors, ``lu_solve_*`` solves with them.

Layout. ``A`` is a C-ordered stack (B, N, N). LAPACK is column-major, so it sees each A[i] as its
transpose M = A[i]^T and returns P M = L U in place, with 0-based pivots here (LAPACK's are 1-based):
U[r, c] (r <= c) is stored at A[i, c, r], the unit-lower L[r, c] (r > c) at A[i, c, r]. Then
A[i] = M^T = U^T L^T P, and A[i] y = b is solved by a forward substitution with U^T and a backward
one with L^T, both running along contiguous rows of A[i], followed by the pivots' interchanges in
reverse order. The reference twins call SciPy's ``lu_factor`` on the same transposes, so both
backends store identical factors.

The factorisation is LAPACK's ``getrf`` (Numba's binding of SciPy's LAPACK), called per matrix
from a serial ``nogil`` kernel; callers spread the rows over threads. Measured here (1 core, 1024
systems of 64 x 64, float64): getrf 15 us per matrix against 19 us for factorise-and-solve
through ``numpy.linalg.solve``; a solve with stored factors 3-4 us (it streams the factors from
memory, so float32 factors halve it).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import overload
from numba.np.linalg import F_INT_nptype, _LAPACK, ensure_lapack, get_blas_kind

__all__ = ["lu_factor_ref", "lu_factor_cpu", "lu_solve_ref", "lu_solve_cpu", "PIVOT_DTYPE"]

PIVOT_DTYPE = np.dtype(F_INT_nptype)


# ------------------------------------------------------------------------------ NumPy / SciPy twins
def lu_factor_ref(A, LU, piv, rows):
    """Factorise A[k] into LU[rows[k]] for every k.

    Parameters
    ----------
    A : ndarray, shape (K, N, N), float32 or float64
        The matrices; left intact.
    LU : ndarray, shape (B, N, N), C-contiguous, float32 or float64
        Overwritten at ``rows`` by the factors (layout in the module docstring), computed in
        LU's dtype (A is cast to it first).
    piv : ndarray, shape (B, N), PIVOT_DTYPE
        Overwritten at ``rows`` with the 0-based row interchanges.
    rows : ndarray of intp, shape (K,)
        Where each factorisation goes (distinct).

    Returns
    -------
    info : ndarray of int32, shape (K,)
        0 where the factorisation succeeded; j > 0 where U[j-1, j-1] is exactly zero (singular).
    """
    import warnings

    from scipy.linalg import lu_factor

    info = np.zeros(len(rows), dtype=np.int32)
    for k, i in enumerate(rows):
        M = A[k].T.astype(LU.dtype)
        if M.shape[0] == 0:
            continue
        with warnings.catch_warnings():  # an exact zero pivot warns; info reports it
            warnings.simplefilter("ignore")
            lu, p = lu_factor(M, check_finite=False)
        LU[i] = lu.T
        piv[i] = p
        zero = np.flatnonzero(np.diagonal(lu) == 0)
        info[k] = zero[0] + 1 if len(zero) else 0
    return info


def lu_solve_ref(LU, piv, rows, b):
    """Solve A_k y = b[k] with the factors at LU[rows[k]]; b is overwritten by y.

    Parameters
    ----------
    LU : ndarray, shape (B, N, N)
    piv : ndarray, shape (B, N)
    rows : ndarray of intp, shape (K,)
    b : ndarray, shape (K, N), C-contiguous, LU's dtype
    """
    from scipy.linalg import lu_solve

    for k, i in enumerate(rows):
        # (lu, piv) factor M = A^T; A y = M^T y = b is the transposed solve.
        b[k] = lu_solve((LU[i].T, piv[i]), b[k], trans=1, check_finite=False)


# ------------------------------------------------------------------------------ Numba kernels
def _getrf(a, ipiv):  # pragma: no cover - typed only through the overload below
    raise NotImplementedError


@overload(_getrf)
def _getrf_impl(a, ipiv):
    ensure_lapack()
    getrf = _LAPACK().numba_xxgetrf(a.dtype)
    kind = ord(get_blas_kind(a.dtype, "lu_factor"))

    def impl(a, ipiv):
        n = a.shape[-1]
        return getrf(kind, n, n, a.ctypes, n, ipiv.ctypes)

    return impl


@njit(cache=True, nogil=True)
def factor_one(src, dst, piv):
    """dst = LU factors of src (N, N) in dst's dtype, piv (N,) 0-based; returns getrf's info.
    One matrix: the per-point Newton kernel (``_newton_points``) factorises in its own loop."""
    n = dst.shape[0]
    for r in range(n):
        for c in range(n):
            dst[r, c] = src[r, c]
    if n == 0:
        return 0
    info = _getrf(dst, piv)
    for j in range(n):
        piv[j] -= 1
    return info


# Serial and nogil: callers split the rows over threads (_linalg.split_rows).
@njit(cache=True, nogil=True)
def lu_factor_cpu(A, LU, piv, rows):
    """Numba twin of :func:`lu_factor_ref` (same arguments and result)."""
    info = np.zeros(rows.shape[0], dtype=np.int32)
    for k in range(rows.shape[0]):
        info[k] = factor_one(A[k], LU[rows[k]], piv[rows[k]])
    return info


# Reassociation lets the row dot products vectorise (SIMD sums in a different order: results
# differ from the reference in the last bits, as any BLAS's would). error_model "numpy": a zero
# pivot (singular factors) gives inf / nan, as LAPACK's getrs would, not a ZeroDivisionError.
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
def solve_one(a, p, y):
    """y = A^-1 y in place, with A's factors a (N, N) and pivots p (N,) from :func:`factor_one`."""
    n = a.shape[0]
    # U^T y' = b: row j of U^T is a[j, :j+1].
    for j in range(n):
        s = y[j]
        for i in range(j):
            s -= a[j, i] * y[i]
        y[j] = s / a[j, j]
    # L^T z = y': unit upper, row j is a[j, j+1:].
    for j in range(n - 2, -1, -1):
        s = y[j]
        for i in range(j + 1, n):
            s -= a[j, i] * y[i]
        y[j] = s
    # y = P^T z: undo the interchanges, last first.
    for j in range(n - 1, -1, -1):
        q = p[j]
        if q != j:
            t = y[j]
            y[j] = y[q]
            y[q] = t


@njit(cache=True, nogil=True)
def lu_solve_cpu(LU, piv, rows, b):
    """Numba twin of :func:`lu_solve_ref` (same arguments; b is overwritten)."""
    for k in range(rows.shape[0]):
        solve_one(LU[rows[k]], piv[rows[k]], b[k])
