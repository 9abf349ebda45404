"""Time constants of eigenvalues of a discrete-time map, one convention for every caller."""

from __future__ import annotations

import numpy as np

# |lambda| this close to 1 (in units of the eigenvalues' own precision) is 1: an exactly
# integrating mode computed by LAPACK or Arnoldi lands at 1 +- a few ulp (1 + 7e-16 was seen),
# and -1/ln|lambda| would turn it into a *negative* time constant of -1.5e15.
_ULPS_OF_ONE = 16


def unit_tolerance(eigvals) -> float:
    """How far from 1 a |lambda| of this dtype may lie and still be 1 (16 ulps)."""
    dtype = np.asarray(eigvals).dtype
    return _ULPS_OF_ONE * float(np.finfo(dtype if dtype.kind in "fc" else np.float64).eps)


def time_constants(eigvals, *, two_sided: bool = False) -> np.ndarray:
    """tau = -1 / ln|lambda| (two_sided: 1 / |ln|lambda||), +inf where |lambda| is 1 to rounding.

    Parameters
    ----------
    eigvals : ndarray of complex or float, any shape
    two_sided : bool

    Returns
    -------
    ndarray of float64, the shape of ``eigvals``; NaN where lambda is not finite.
    """
    lam = np.asarray(eigvals)
    mag = np.abs(lam).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(mag)
        tau = 1.0 / np.abs(log) if two_sided else -1.0 / log
    tau = np.where(np.abs(mag - 1.0) <= unit_tolerance(lam), np.inf, tau)
    return np.where(np.isfinite(mag), tau, np.nan)  # -1 / ln(inf) would read -0
