"""Geometry of integration: dimension measures, integration modes, readout geometry, word effects,
order invariance and the word-count prediction of the manifold dimension (NumPy/SciPy only).

All functions take the data positionally and the policy keyword-only; arrays are batch-first
(leading axes index points / documents, the last axis the state). Results are frozen dataclasses.

Dimension measures follow the study (Aitken et al., ICLR 2021): PCA explained-variance ratios v,
participation ratio PR = (sum v)^2 / sum v^2, and the number of components reaching 90% / 95% of
the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, check_finite, real_number
from ._repr import short_repr as _short_repr
from .errors import ArgumentTypeError, InvalidOptionError, ShapeError, warn_user

__all__ = [
    "PCAResult",
    "pca",
    "participation_ratio",
    "ManifoldDimension",
    "manifold_dimension",
    "EqualizedDimension",
    "equalized_dimension",
    "IntegrationModes",
    "integration_modes",
    "ReadoutGeometry",
    "readout_geometry",
    "WordDeflections",
    "word_deflections",
    "OrderInvariance",
    "order_invariance",
    "WordCountPrediction",
    "wordcount_prediction",
]

# Cumulative-variance thresholds are compared with this slack so that rounding (a cumulative sum
# of 0.9499999999 for an exact 0.95) does not add a component.
_CUM_SLACK = 1e-12


# --------------------------------------------------------------------------- small helpers
def _fraction(name, value, *, allow_one=True):
    v = real_number(name, value, "a number in (0, 1]")
    if not np.isfinite(v) or v <= 0 or v > 1 or (v == 1 and not allow_one):
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a number in (0, 1]")
    return v


def _positive(name, value, *, allow_inf=False):
    v = real_number(name, value, "a number > 0")
    if np.isnan(v) or v <= 0 or (np.isinf(v) and not allow_inf):
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a finite number > 0")
    return v


def _n_reaching(ratios: np.ndarray, level: float) -> int:
    """Smallest k with ratios[:k].sum() >= level (ratios sorted descending, summing to 1); 0 for a
    cloud without variance (all ratios 0), as its participation ratio is."""
    if ratios.size == 0 or not ratios.any():
        return 0
    cum = np.cumsum(ratios)
    k = int(np.searchsorted(cum, level - _CUM_SLACK, side="left")) + 1
    return min(k, ratios.size)


def _check_model(model):
    from .model import Model

    if not isinstance(model, Model):
        raise ArgumentTypeError(
            f"argument 'model': got {type(model).__name__}, expected fastfp.Model (e.g. from fastfp.load_params)"
        )
    return model


def _embedding(model) -> np.ndarray:
    """(V, M) input vector of every token: the model's embedding, or the identity (one-hot inputs)."""
    if model.embedding is not None:
        return np.asarray(model.embedding, dtype=np.float64)
    return np.eye(model.params.input_size)


# --------------------------------------------------------------------------- participation ratio
def _rounding_floor(scale: float, n_summed: int, shape: tuple) -> float:
    """Largest singular value that rounding alone can put into a matrix of means or centred data.

    Each entry, a difference involving means over ``n_summed`` values of size at most ``scale``,
    carries an error of at most about 2 (4 + log2 n_summed) eps scale (NumPy's pairwise sums); the
    spectral norm of such an error matrix of ``shape`` is below its Frobenius norm, sqrt(m n) times that.
    """
    m, n = shape
    return 2.0 * (4.0 + np.log2(max(n_summed, 2))) * np.finfo(np.float64).eps * scale * np.sqrt(m * n)


def participation_ratio(v) -> float:
    """Participation ratio PR = (sum v)^2 / sum v^2 of a non-negative spectrum.

    Parameters
    ----------
    v : array_like, shape (K,)
        Non-negative variances or explained-variance ratios (any scale: PR is scale-free).

    Returns
    -------
    float
        PR in [1, K]: 1 for a single non-zero entry, K for K equal entries; 0.0 for an all-zero
        spectrum (no variance at all).
    """
    arr = as_float_array("v", v, np.float64)
    if arr.ndim != 1:
        raise ShapeError(f"argument 'v': got shape {arr.shape}, expected a 1-D spectrum (K,)")
    check_finite("v", arr)
    if (arr < 0).any():
        raise InvalidOptionError(f"argument 'v': got a negative entry ({arr.min()!r}), expected non-negative variances")
    sq = float((arr ** 2).sum())
    if sq == 0.0:
        return 0.0
    return float(arr.sum() ** 2 / sq)


# --------------------------------------------------------------------------- PCA
@dataclass(frozen=True, eq=False)
class PCAResult:
    """Principal components of a cloud of states.

    Attributes
    ----------
    components : ndarray, shape (K, N)
        Orthonormal principal axes (rows), by decreasing variance; K = min(S, N) or ``n_components``.
    explained_variance : ndarray, shape (K,)
        Variance along each axis (sample variance, divided by S - 1 when centred, by S otherwise).
    explained_variance_ratio : ndarray, shape (K,)
        ``explained_variance`` divided by the total variance over *all* components (so a truncated
        result keeps the true ratios).
    mean : ndarray, shape (N,)
        The mean that was subtracted (zeros when ``center=False``).
    participation_ratio : float
        PR of the ratios over all components.
    n_components_90, n_components_95 : int
        Number of leading components whose ratios reach 90% / 95% of the variance.
    n_samples : int
        S, the number of states analysed.
    """

    __repr__ = _short_repr

    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    participation_ratio: float
    n_components_90: int
    n_components_95: int
    n_samples: int

    def n_components_for(self, variance: float) -> int:
        """Number of leading components reaching the fraction ``variance`` (in (0, 1]) of the variance.

        Only as many components as were kept can be counted (see ``n_components`` of :func:`pca`).
        """
        return _n_reaching(self.explained_variance_ratio, _fraction("variance", variance))

    def transform(self, X) -> np.ndarray:
        """Coordinates of states on the principal axes.

        Parameters
        ----------
        X : array_like, shape (..., N)

        Returns
        -------
        ndarray, shape (..., K)
            ``(X - mean) @ components.T``.
        """
        arr = as_float_array("X", X, np.float64)
        N = self.components.shape[1]
        if arr.ndim < 1 or arr.shape[-1] != N:
            raise ShapeError(f"argument 'X': got shape {arr.shape}, expected (..., {N}) (N of the fitted PCA)")
        return (arr - self.mean) @ self.components.T


def pca(X, *, center: bool = True, mask=None, n_components: int | None = None) -> PCAResult:
    """PCA of states (e.g. all hidden states of test trajectories, or fixed points).

    Parameters
    ----------
    X : array_like, shape (..., N)
        States; all leading axes are flattened into S = prod(shape[:-1]) samples (e.g. (B, T, N)
        trajectories from ``fastfp.rollout``).
    center : bool
        Subtract the mean state first (True, the usual PCA). False analyses second moments about 0.
    mask : array_like of bool, shape X.shape[:-1], optional
        Which states to use (e.g. ``TaskData.mask()`` to drop padding steps).
    n_components : int, optional
        Keep only this many leading components (the ratios, PR and 90%/95% counts still use the
        whole spectrum, except that the counts cannot exceed ``n_components``).

    Returns
    -------
    PCAResult
    """
    arr = as_float_array("X", X, np.float64)
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ShapeError(f"argument 'X': got shape {arr.shape}, expected (..., N) with N >= 1")
    if not isinstance(center, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'center': got {center!r}, expected True or False")
    N = arr.shape[-1]
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != arr.shape[:-1]:
            raise ShapeError(
                f"argument 'mask': got {m.dtype} array of shape {m.shape}, expected bool of shape {arr.shape[:-1]}"
            )
        flat = arr[m]
    else:
        flat = arr.reshape(-1, N)
    check_finite("X", flat)
    S = flat.shape[0]
    if S < (2 if center else 1):
        raise ShapeError(
            f"argument 'X': got {S} state(s) after flattening/masking, expected at least {2 if center else 1}"
        )
    mean = flat.mean(axis=0) if center else np.zeros(N)
    Xc = flat - mean
    # SVD of the data matrix (more accurate than eigh of X^T X for small variances).
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    # Singular values within the rounding of the centred entries are no variance at all: a cloud of
    # one repeated point (constant 0.1 leaves a 1e-17 residue) has PR 0, not 1.
    if center:  # uncentred data is exact: nothing to round away
        s = np.where(s > _rounding_floor(float(np.max(np.abs(flat))), S, Xc.shape), s, 0.0)
    var = s ** 2 / (S - 1 if center else S)
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    K = var.size
    if n_components is not None:
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise InvalidOptionError(f"argument 'n_components': got {n_components!r}, expected a positive integer")
        K = min(int(n_components), K)
    # Sign convention: the largest-|.| loading of each axis is positive (deterministic output).
    Vt = Vt.copy()
    big = np.argmax(np.abs(Vt), axis=1)
    Vt *= np.sign(Vt[np.arange(Vt.shape[0]), big])[:, None]
    return PCAResult(
        components=Vt[:K],
        explained_variance=var[:K],
        explained_variance_ratio=ratio[:K],
        mean=mean,
        participation_ratio=participation_ratio(ratio),
        n_components_90=min(_n_reaching(ratio, 0.90), K),
        n_components_95=min(_n_reaching(ratio, 0.95), K),
        n_samples=S,
    )


@dataclass(frozen=True, eq=False)
class ManifoldDimension:
    """Dimension measures of a point cloud.

    Attributes
    ----------
    participation_ratio : float
    n_components : int
        Components reaching the requested ``variance``.
    n_components_90, n_components_95 : int
    explained_variance_ratio : ndarray, shape (K,)
    variance : float
        The requested fraction of variance.
    """

    __repr__ = _short_repr

    participation_ratio: float
    n_components: int
    n_components_90: int
    n_components_95: int
    explained_variance_ratio: np.ndarray
    variance: float


def manifold_dimension(points, *, variance: float = 0.95, mask=None) -> ManifoldDimension:
    """PR and component counts of a set of points (fixed points, hidden states, ...).

    Parameters
    ----------
    points : array_like, shape (..., N), or FixedPoints
        The points (for a ``FixedPoints``, its ``x``; non-finite rows are dropped).
    variance : float in (0, 1]
        Fraction of variance that ``n_components`` must reach.
    mask : array_like of bool, shape points.shape[:-1], optional
        Which points to use.

    Returns
    -------
    ManifoldDimension
    """
    from .fixed_points import FixedPoints

    variance = _fraction("variance", variance)
    if isinstance(points, FixedPoints):
        x = np.asarray(points.x, dtype=np.float64)
        keep = np.isfinite(x).all(axis=1)
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.bool_ or m.shape != keep.shape:
                raise ShapeError(f"argument 'mask': got {m.dtype} array of shape {m.shape}, expected bool of shape {keep.shape}")
            keep &= m
        res = pca(x[keep], center=True)
    else:
        res = pca(points, center=True, mask=mask)
    return ManifoldDimension(
        participation_ratio=res.participation_ratio,
        n_components=_n_reaching(res.explained_variance_ratio, variance),
        n_components_90=res.n_components_90,
        n_components_95=res.n_components_95,
        explained_variance_ratio=res.explained_variance_ratio,
        variance=variance,
    )


# --------------------------------------------------------------------------- density-equalised PR
@dataclass(frozen=True, eq=False)
class EqualizedDimension:
    """Dimension of a point cloud after thinning it to a uniform spacing (see :func:`equalized_dimension`).

    Attributes
    ----------
    participation_ratio : float
        PR of the thinned points (the density-equalised PR).
    n_components_90, n_components_95 : int
        Components of the thinned points reaching 90% / 95% of their variance.
    explained_variance_ratio : ndarray, shape (K,)
        Of the thinned points.
    indices : ndarray of int64, shape (k,)
        Rows of the input (after dropping non-finite rows of a ``FixedPoints``: rows of the finite
        ones) kept by the thinning, in the order farthest-point sampling picked them.
    spacing : float
        The distance d_min = resolution * extent: every input point lies within d_min of a kept point
        and the kept points are pairwise more than d_min apart.
    extent : float
        Distance from the first kept point to the farthest input point (between half the diameter
        of the cloud and the diameter).
    n_points : int
        Number of input points used.
    resolution : float
    """

    __repr__ = _short_repr

    participation_ratio: float
    n_components_90: int
    n_components_95: int
    explained_variance_ratio: np.ndarray
    indices: np.ndarray
    spacing: float
    extent: float
    n_points: int
    resolution: float


def equalized_dimension(points, *, resolution: float = 0.05) -> EqualizedDimension:
    """PR of a point cloud thinned by farthest-point sampling to a uniform spacing.

    The PR of a cloud weighs every point equally, so it measures the sampling density as much as
    the shape: fixed points found from states visited by documents pile up where trajectories
    spend time (a corner, the middle of an edge), and a triangle sampled mostly along one edge has
    a PR near 1. Thinning the cloud to an evenly spaced subset removes the density and keeps the
    shape: an (N-1)-simplex, however it was sampled, gives a thinned PR near N - 1.

    Parameters
    ----------
    points : array_like, shape (n, N), or FixedPoints
        The points (for a ``FixedPoints``, its ``x``; non-finite rows are dropped). n >= 2.
    resolution : float in (0, 1)
        Spacing of the thinned set as a fraction of the cloud's extent.

    Returns
    -------
    EqualizedDimension

    Notes
    -----
    Farthest-point sampling (Gonzalez): start from the point farthest from the centroid; repeatedly
    add the point farthest from those kept, and stop when that distance is at most
    d_min = resolution * extent, with extent the largest distance from the first point. The kept
    points are then a d_min-net: pairwise more than d_min apart, every input point within d_min of
    one. A net of a manifold covers it at a uniform density whatever the input density, up to the
    spacing: structure finer than d_min (or point clusters smaller than it) is not seen. The PR of
    the net is that of :func:`participation_ratio` over its PCA spectrum. Cost O(n k N) for k kept
    points. This is a geometric companion of the raw PR, not a replacement: report both.
    """
    from .fixed_points import FixedPoints

    resolution = _fraction("resolution", resolution, allow_one=False)
    if isinstance(points, FixedPoints):
        x = np.asarray(points.x, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
    else:
        x = as_float_array("points", points, np.float64)
        if x.ndim != 2:
            raise ShapeError(f"argument 'points': got shape {x.shape}, expected (n, N)")
        check_finite("points", x)
    if x.shape[0] < 2:
        raise ShapeError(f"argument 'points': got {x.shape[0]} finite point(s), expected at least 2")
    first = int(np.argmax(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
    dist = np.sqrt(((x - x[first]) ** 2).sum(axis=1))
    extent = float(dist.max())
    spacing = resolution * extent
    picked = [first]
    while True:
        j = int(np.argmax(dist))
        if dist[j] <= spacing:
            break
        picked.append(j)
        dist = np.minimum(dist, np.sqrt(((x - x[j]) ** 2).sum(axis=1)))
    idx = np.asarray(picked, dtype=np.int64)
    if idx.size < 2:  # every point within d_min of the first: no extent to measure
        ratio = np.zeros(0)
        return EqualizedDimension(0.0, 0, 0, ratio, idx, spacing, extent, x.shape[0], resolution)
    res = pca(x[idx], center=True)
    return EqualizedDimension(
        participation_ratio=res.participation_ratio,
        n_components_90=res.n_components_90,
        n_components_95=res.n_components_95,
        explained_variance_ratio=res.explained_variance_ratio,
        indices=idx,
        spacing=spacing,
        extent=extent,
        n_points=x.shape[0],
        resolution=resolution,
    )


# --------------------------------------------------------------------------- integration modes
@dataclass(frozen=True, eq=False)
class IntegrationModes:
    """Slow (integrating) modes of the linearised dynamics at each point.

    Attributes
    ----------
    n_modes : ndarray of int, shape (P,)
        Number of eigenvalues whose time constant is >= ``horizon`` (and, with ``max_rotation``,
        whose rotation over the horizon is at most that; 0 at non-finite points).
    median : float
        Median of ``n_modes`` over the valid points (nan when there are none).
    time_constants : ndarray, shape (P, N)
        tau = -1 / ln|lambda| (``two_sided=False``; negative for |lambda| > 1, inf for |lambda| = 1)
        or 1 / |ln|lambda|| (``two_sided=True``).
    valid : ndarray of bool, shape (P,)
        Points with finite eigenvalues.
    horizon : float
    two_sided : bool
    max_rotation : float or None
    """

    __repr__ = _short_repr

    n_modes: np.ndarray
    median: float
    time_constants: np.ndarray
    valid: np.ndarray
    horizon: float
    two_sided: bool
    max_rotation: float | None = None


def integration_modes(fixed_points, *, horizon: float, two_sided: bool = False,
                      max_rotation: float | None = None) -> IntegrationModes:
    """Count, at each point, the eigenmodes slow enough to integrate over ``horizon`` steps.

    Parameters
    ----------
    fixed_points : FixedPoints (decomposed) or array_like of complex, shape (P, N)
        Points after :meth:`FixedPoints.decompose`, or their eigenvalues directly.
    horizon : float > 0
        The time scale, in steps, that a mode must last (e.g. the document length).
    two_sided : bool
        False (default): count eigenvalues with tau = -1/ln|lambda| >= horizon, i.e.
        exp(-1/horizon) <= |lambda| <= 1 (decaying no faster than the horizon; |lambda| = 1 has
        tau = inf). True: also count slowly *growing* modes, 1/|ln|lambda|| >= horizon, i.e.
        exp(-1/horizon) <= |lambda| <= exp(1/horizon). The study's wording ("|lambda| ~ 1") is
        symmetric, and at approximate (slow) points the top eigenvalue is often just above 1, so
        :mod:`fastfp.study` counts two-sided (see docs/reproduction.md).
    max_rotation : float, optional
        Also require |arg lambda| * horizon <= max_rotation (radians): the mode turns by at most
        that over the horizon. A complex pair with |lambda| ~ 1 and a large angle (0.7 rad: a
        9-step oscillation) persists but does not integrate; ``max_rotation=1.0`` is the rotational
        twin of the modulus test (|ln|lambda|| * horizon <= 1), so together they ask that
        ln(lambda) lie within 1/horizon of 0 on both axes. None (default): the modulus alone.

    Returns
    -------
    IntegrationModes
    """
    from .fixed_points import FixedPoints

    horizon = _positive("horizon", horizon, allow_inf=True)
    if not isinstance(two_sided, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'two_sided': got {two_sided!r}, expected True or False")
    if max_rotation is not None:
        max_rotation = _positive("max_rotation", max_rotation)
    if isinstance(fixed_points, FixedPoints):
        if fixed_points.eigvals is None:
            raise InvalidOptionError(
                "argument 'fixed_points': has no eigenvalues; call fixed_points.decompose(params) first"
            )
        lam = np.asarray(fixed_points.eigvals)
    else:
        try:
            lam = np.asarray(fixed_points)
        except Exception as exc:
            raise ArgumentTypeError(
                f"argument 'fixed_points': could not be read ({exc}); expected a decomposed FixedPoints or eigenvalues (P, N)"
            ) from None
        if lam.dtype.kind not in "fc":
            raise ArgumentTypeError(
                f"argument 'fixed_points': got {type(fixed_points).__name__} of dtype {lam.dtype}, "
                "expected a decomposed FixedPoints or an array of eigenvalues (P, N)"
            )
    if lam.ndim != 2:
        raise ShapeError(f"argument 'fixed_points': eigenvalues of shape {lam.shape}, expected (P, N)")
    from ._tau import time_constants, unit_tolerance

    mag = np.abs(lam).astype(np.float64)
    valid = np.isfinite(mag).all(axis=1)
    tau = time_constants(lam, two_sided=two_sided)  # |lambda| = 1 to rounding -> inf, both conventions
    # The documented closed interval, tested on |lambda| itself (tau >= horizon through a log
    # rounds either way at the boundary), with |lambda| = 1 to rounding inside it.
    one = unit_tolerance(lam)
    with np.errstate(over="ignore"):  # horizon < 1/709: the band is (0, inf), exp(1/horizon) = inf
        low = min(float(np.exp(-1.0 / horizon)), 1.0 - one)
        high = max(float(np.exp(1.0 / horizon)), 1.0 + one) if two_sided else 1.0 + one
    with np.errstate(invalid="ignore"):
        # mag > 0: lambda = 0 has tau = 0, never >= horizon, even where exp(-1/horizon) underflows to 0.
        counted = (mag >= low) & (mag > 0) & (mag <= high) & np.isfinite(mag)
        if max_rotation is not None:
            angle = np.abs(np.angle(lam))
            # A positive real mode does not turn at all, whatever the horizon (0 * inf is NaN).
            counted &= (angle == 0) | (angle * horizon <= max_rotation)
    n_modes = np.where(valid, counted.sum(axis=1), 0).astype(np.int64)
    if isinstance(fixed_points, FixedPoints) and lam.shape[1] < np.shape(fixed_points.x)[1]:
        # The smallest kept |lambda| still inside the band from below: the modes decompose(k) left
        # out may be in it too (the kept ones above the band, |lambda| > 1, or turning, do not count).
        full = np.flatnonzero(valid & (np.min(mag, axis=1, initial=np.inf) >= low))
        if full.size:
            warn_user(f"integration_modes: at {full.size} of {int(valid.sum())} points the smallest of the "
                      f"{lam.shape[1]} eigenvalues that decompose(k={lam.shape[1]}) kept is still slow enough, so the "
                      "count there is a lower bound; decompose with a larger k (or without k) for the full count")
    median = float(np.median(n_modes[valid])) if valid.any() else float("nan")
    return IntegrationModes(n_modes, median, tau, valid, horizon, bool(two_sided), max_rotation)


# --------------------------------------------------------------------------- readout geometry
@dataclass(frozen=True, eq=False)
class ReadoutGeometry:
    """Angles between class readout vectors.

    Attributes
    ----------
    angles : ndarray, shape (C, C)
        Angle in degrees between readout rows i and j (0 on the diagonal).
    pairwise : ndarray, shape (C (C - 1) / 2,)
        The upper-triangle angles, row by row.
    simplex_angle : float
        arccos(-1 / (C - 1)) in degrees: the angle between vertices of a regular (C-1)-simplex
        seen from its centre (180 for C = 2, 120 for C = 3, 109.47 for C = 4).
    max_deviation : float
        max |pairwise - simplex_angle|.
    norms : ndarray, shape (C,)
        Length of each readout vector.
    """

    __repr__ = _short_repr

    angles: np.ndarray
    pairwise: np.ndarray
    simplex_angle: float
    max_deviation: float
    norms: np.ndarray


def readout_geometry(readout_weight) -> ReadoutGeometry:
    """Pairwise angles between class readout vectors and the ideal simplex angle.

    Parameters
    ----------
    readout_weight : array_like, shape (C, H), or Model
        Class readout vectors (rows); a ``Model`` gives its ``readout_weight``.

    Returns
    -------
    ReadoutGeometry
    """
    from .model import Model

    if isinstance(readout_weight, Model):
        if readout_weight.readout_weight is None:
            raise ShapeError("argument 'readout_weight': the Model has no readout")
        readout_weight = readout_weight.readout_weight
    W = as_float_array("readout_weight", readout_weight, np.float64)
    if W.ndim != 2 or W.shape[0] < 2:
        raise ShapeError(f"argument 'readout_weight': got shape {W.shape}, expected (C, H) with C >= 2 classes")
    check_finite("readout_weight", W)
    norms = np.linalg.norm(W, axis=1)
    if (norms == 0).any():
        raise InvalidOptionError(
            f"argument 'readout_weight': row {int(np.flatnonzero(norms == 0)[0])} is zero; an angle needs non-zero vectors"
        )
    U = W / norms[:, None]
    # atan2(|u - v|, |u + v|) = theta / 2 for unit u, v: accurate at every angle, where arccos of
    # the cosine loses angles below ~1e-8 rad (and deviations from 180 deg) to rounding.
    diff = np.linalg.norm(U[:, None, :] - U[None, :, :], axis=2)
    plus = np.linalg.norm(U[:, None, :] + U[None, :, :], axis=2)
    angles = np.degrees(2.0 * np.arctan2(diff, plus))
    np.fill_diagonal(angles, 0.0)
    C = W.shape[0]
    iu = np.triu_indices(C, k=1)
    pairwise = angles[iu]
    simplex = float(np.degrees(np.arccos(-1.0 / (C - 1))))
    return ReadoutGeometry(angles, pairwise, simplex, float(np.abs(pairwise - simplex).max()), norms)


# --------------------------------------------------------------------------- word deflections
@dataclass(frozen=True, eq=False)
class WordDeflections:
    """Effect of one word on the state.

    Attributes
    ----------
    linear : ndarray, shape (P, V, N)
        J_inp(h_p, x0) (e_w - x0): the input Jacobian dF/dx at the baseline input x0 (zero unless
        given) applied to word w's input vector's departure from it.
    exact : ndarray, shape (P, V, N)
        F(h_p, e_w) - h_p: the exact one-step deflection. At a fixed point of x0 (F(h_p, x0) =
        h_p) this is F(h_p, e_w) - F(h_p, x0), which ``linear`` approximates to first order.
    words : ndarray of int, shape (V,)
        Token ids of the words, in order.
    baseline : ndarray, shape (M,) or (P, M)
        The baseline input x0.
    """

    __repr__ = _short_repr

    linear: np.ndarray
    exact: np.ndarray
    words: np.ndarray
    baseline: np.ndarray | None = None


def _word_ids(model, words, n_tokens) -> np.ndarray:
    if words is None:
        return np.arange(n_tokens)
    items = [words] if isinstance(words, (str, int, np.integer)) else list(words)
    ids = []
    for w in items:
        if isinstance(w, str):
            if model.vocab is None:
                raise InvalidOptionError(
                    f"argument 'words': got {w!r}, but the model has no vocabulary; pass token ids "
                    "(rows of its embedding) or attach one (fastfp.Model(..., vocab=...))"
                )
            if w not in model.vocab:
                raise InvalidOptionError(
                    f"argument 'words': got {w!r}, which is not in the model's vocab "
                    f"({', '.join(map(repr, model.vocab[:10]))})"
                )
            ids.append(model.vocab.index(w))
        elif isinstance(w, (int, np.integer)) and not isinstance(w, bool) and 0 <= w < n_tokens:
            ids.append(int(w))
        else:
            raise InvalidOptionError(f"argument 'words': got {w!r}, expected token ids in [0, {n_tokens}) or vocab strings")
    if not ids:
        raise InvalidOptionError("argument 'words': got an empty sequence, expected at least one word")
    return np.asarray(ids, dtype=np.int64)


def word_deflections(model, h, *, words=None, x=None, backend: str = "cpu") -> WordDeflections:
    """Linearised and exact one-step deflection of the state by each word.

    Parameters
    ----------
    model : Model
        The network; word w's input vector is row w of ``model.embedding`` (the identity, i.e.
        one-hot inputs, when the model has no embedding).
    h : array_like, shape (P, N) or (N,)
        States, typically fixed points: ``fp.x`` of points found with the input ``x`` (then the
        linear deflection is the first-order approximation of the exact one).
    words : sequence of int or str, optional
        Token ids or vocab strings; all V tokens by default.
    x : array_like, shape (M,) or (P, M), or str, optional
        The baseline input x0 at which the input Jacobian is taken and from which each word's
        input departs: the input the points were found with (``fp.inputs``), or a vocab string for
        that word's input (e.g. ``'the'`` for points found at the neutral word). None: zero.
    backend : {'cpu', 'numpy', 'gpu'}

    Returns
    -------
    WordDeflections
        ``linear`` and ``exact`` of shape (P, V, N), or (V, N) for a single state h of shape (N,).
    """
    from .dynamics import input_jacobian, step

    model = _check_model(model)
    params = model.params
    E = _embedding(model)
    ids = _word_ids(model, words, E.shape[0])
    hs = as_float_array("h", h)
    single = hs.ndim == 1
    h2 = hs[None, :] if single else hs
    if h2.ndim != 2 or h2.shape[1] != params.state_size:
        raise ShapeError(f"argument 'h': got shape {hs.shape}, expected (P, N) or (N,) with N = {params.state_size}")
    check_finite("h", h2)
    Ew = E[ids].astype(h2.dtype)  # (V, M)
    M = Ew.shape[1]
    if x is None:
        x0 = np.zeros(M, dtype=h2.dtype)
    elif isinstance(x, str):
        if model.vocab is None or x not in model.vocab:
            raise InvalidOptionError(f"argument 'x': got {x!r}, which is not in the model's vocab"
                                     + ("" if model.vocab is None else f" ({', '.join(map(repr, model.vocab[:10]))})")
                                     + "; expected a vocab string, an input array of shape (M,) or (P, M), or None")
        x0 = E[model.vocab.index(x)].astype(h2.dtype)
    else:
        x0 = as_float_array("x", x, h2.dtype)
        if x0.shape not in ((M,), (h2.shape[0], M)):
            raise ShapeError(f"argument 'x': got shape {x0.shape}, expected ({M},) or ({h2.shape[0]}, {M}) (the input size "
                             "M of the model's cell), a vocab string, or None (zero input)")
        check_finite("x", x0)
    Jx = input_jacobian(params, h2, x0, backend=backend)  # (P, N, M) at the baseline input
    dx = Ew[None, :, :] - (x0[None, None, :] if x0.ndim == 1 else x0[:, None, :])  # (1 or P, V, M)
    linear = np.einsum("pnm,pvm->pvn", Jx, np.broadcast_to(dx, (h2.shape[0],) + Ew.shape))
    P, V = h2.shape[0], ids.size
    hrep = np.repeat(h2, V, axis=0)  # (P*V, N): state p repeated for every word
    xrep = np.tile(Ew, (P, 1))  # (P*V, M)
    exact = (step(params, hrep, xrep, backend=backend) - hrep).reshape(P, V, -1)
    if single:
        linear, exact = linear[0], exact[0]
    return WordDeflections(linear, exact, ids, x0)


# --------------------------------------------------------------------------- order invariance
@dataclass(frozen=True, eq=False)
class OrderInvariance:
    """Does the predicted class survive shuffling each document's words?

    Attributes
    ----------
    fraction : float
        Fraction of documents whose prediction is unchanged.
    predicted, predicted_shuffled : ndarray of int, shape (n,) or (n, K)
        Prediction before / after shuffling, from the readout on the last valid state: the class
        (argmax) of a classifier; for multi-label data (labels (n, K)) and for a single-output
        readout, the labels whose logit is positive (0/1 per label, (n, K)), all of which must
        agree for a document to count as unchanged.
    n_reordered : int
        Documents whose token sequence the shuffle changed. The others (length 0 or 1, one word
        repeated, or a shuffle that drew the same order) are unchanged whatever the network does.
    fraction_reordered : float
        Fraction unchanged among those ``n_reordered`` documents (NaN when there are none): the
        stricter number where many documents are short.
    """

    __repr__ = _short_repr

    fraction: float
    predicted: np.ndarray
    predicted_shuffled: np.ndarray
    n_reordered: int = 0
    fraction_reordered: float = float("nan")


def _predict(model, tokens, lengths, E, backend, per_label):
    from .dynamics import rollout

    xs = E[tokens]  # (n, L, M)
    states = rollout(model.params, None, xs, lengths=lengths, backend=backend)
    logits = model.logits(states[:, -1])
    # Independent sigmoid outputs (and one logit alone) have no argmax to speak of: their
    # prediction is the set of positive logits.
    return (logits > 0).astype(np.int64) if per_label else np.argmax(logits, axis=-1)


def order_invariance(model, task_data, *, seed=None, backend: str = "cpu") -> OrderInvariance:
    """Fraction of documents whose predicted class is unchanged when their valid tokens are shuffled.

    Parameters
    ----------
    model : Model
        A classifier (needs ``readout_weight``); inputs are ``model.embedding`` rows (identity
        when absent: one-hot inputs).
    task_data : TaskData
        Documents (``tokens`` (n, L), ``lengths`` (n,)); padding past each length stays in place.
    seed : int, numpy.random.Generator or None
        Randomness of the shuffles.
    backend : {'cpu', 'numpy', 'gpu'}

    Returns
    -------
    OrderInvariance

    Notes
    -----
    States are run in float64 from h0 = 0 with ``fastfp.rollout(..., lengths=task_data.lengths)``,
    so the last state is the state after each document's last valid token. For an LSTM the readout
    uses the h part of [h, c] (``Model.logits``).
    """
    from .tasks import TaskData

    model = _check_model(model)
    if not isinstance(task_data, TaskData):
        raise ArgumentTypeError(
            f"argument 'task_data': got {type(task_data).__name__}, expected fastfp.TaskData (e.g. fastfp.tasks.categorical)"
        )
    if model.readout_weight is None:
        raise ShapeError("argument 'model': has no readout_weight, so it predicts no class")
    from .model import _check_task_data_matches

    _check_task_data_matches(model, task_data)
    E = _embedding(model)
    if task_data.vocab_size > E.shape[0]:
        raise ShapeError(
            f"argument 'task_data': has V = {task_data.vocab_size} tokens, but the model's inputs cover only "
            f"{E.shape[0]} (rows of its embedding / its input size)"
        )
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        rng = np.random.default_rng(seed)
    else:
        raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected None, a non-negative int or a numpy Generator")
    lengths = np.asarray(task_data.lengths)
    padding = ~task_data.mask()
    tokens = np.where(padding, 0, task_data.tokens)  # padding may hold any id; it is never read
    n, L = tokens.shape
    keys = rng.random((n, L))
    keys[padding] = np.inf  # padding keeps its place at the end
    shuffled = np.take_along_axis(tokens, np.argsort(keys, axis=1, kind="stable"), axis=1)
    per_label = np.ndim(task_data.labels) == 2 or model.readout_weight.shape[0] == 1
    before = _predict(model, tokens, lengths, E, backend, per_label)
    after = _predict(model, shuffled, lengths, E, backend, per_label)
    same = before == after
    same = same.all(axis=1) if per_label else same
    reordered = (shuffled != tokens).any(axis=1)
    n_reordered = int(reordered.sum())
    return OrderInvariance(float(same.mean()), before, after, n_reordered,
                           float(same[reordered].mean()) if n_reordered else float("nan"))


# --------------------------------------------------------------------------- word-count prediction
@dataclass(frozen=True, eq=False)
class WordCountPrediction:
    """The study's prediction of the manifold dimension from word-count statistics.

    Attributes
    ----------
    class_means : ndarray, shape (K, V)
        M = [f_1 - mu; ...; f_K - mu], the centred class-mean word frequencies (see
        :func:`wordcount_prediction` for f_k and mu).
    singular_values : ndarray, shape (min(K, V),)
        Singular values of M, descending.
    explained_variance_ratio : ndarray, shape (min(K, V),)
        s_i^2 / sum s^2.
    participation_ratio : float
        PR of the ratios.
    dimension : int
        Predicted dimension: the number of singular values above ``tol`` times the largest.
    n_components_90, n_components_95 : int
        Components reaching 90% / 95% of the variance of M.
    tol : float
    """

    __repr__ = _short_repr

    class_means: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray
    participation_ratio: float
    dimension: int
    n_components_90: int
    n_components_95: int
    tol: float


def wordcount_prediction(task_data, *, tol: float = 0.05, multilabel: str = "per_label") -> WordCountPrediction:
    """Predict the attractor dimension from the class-conditional word frequencies.

    Parameters
    ----------
    task_data : TaskData
        Documents and labels; ``counts()`` gives c(d) (padding excluded) and ``lengths`` L_d.
    tol : float in (0, 1)
        A component counts towards ``dimension`` when its singular value exceeds ``tol`` times the
        largest one (0.05: an explained-variance ratio of about 0.25% of the top component's).
    multilabel : {'per_label', 'label_sets'}
        How classes are defined when ``labels`` has shape (n, K) (multi-label data).
        ``'per_label'`` (default): one row per label i, f_i = mean frequency over the documents
        with y_i = 1 (K rows; independent labels give K dimensions, the study's claim).
        ``'label_sets'``: every distinct label vector present is a class (up to 2^K rows).

    Returns
    -------
    WordCountPrediction

    Notes
    -----
    Each document contributes its word frequencies c(d) / L_d, with L_d its *valid* length
    (``task_data.lengths``; documents of length 0 are skipped). The class mean is
    f_k = (1 / n_k) sum_{d in k} c(d) / L_d and mu = (1 / n) sum_d c(d) / L_d, the mean over all
    documents. With equal lengths L these are exactly the study's f_k = sum_{d in k} c(d) / (n_k L)
    and mu = sum_d c(d) / (n L). Because mu is a weighted average of the f_k (weights n_k / n) in the
    single-label case, the rows of M are linearly dependent: a K-class task predicts at most K - 1
    dimensions (exactly K - 1 for the categorical task).
    """
    from .tasks import TaskData

    if not isinstance(task_data, TaskData):
        raise ArgumentTypeError(
            f"argument 'task_data': got {type(task_data).__name__}, expected fastfp.TaskData (e.g. fastfp.tasks.categorical)"
        )
    tol = _fraction("tol", tol, allow_one=False)
    if multilabel not in ("per_label", "label_sets"):
        raise InvalidOptionError(f"argument 'multilabel': got {multilabel!r}, expected 'per_label' or 'label_sets'")
    lengths = np.asarray(task_data.lengths)
    keep = lengths > 0
    if not keep.any():
        raise InvalidOptionError("argument 'task_data': every document has length 0; no word frequencies to compare")
    freq = task_data.counts()[keep] / lengths[keep, None].astype(np.float64)  # (n, V)
    labels = np.asarray(task_data.labels)[keep]
    mu = freq.mean(axis=0)
    if labels.ndim == 1:
        classes = np.unique(labels)
        rows = [freq[labels == k].mean(axis=0) for k in classes]
    elif labels.ndim == 2:
        if multilabel == "per_label":
            rows = [freq[labels[:, i] == 1].mean(axis=0) for i in range(labels.shape[1]) if (labels[:, i] == 1).any()]
        else:
            sets = np.unique(labels, axis=0)
            rows = [freq[(labels == s).all(axis=1)].mean(axis=0) for s in sets]
    else:
        raise ShapeError(f"argument 'task_data': labels of shape {labels.shape}, expected (n,) or (n, K)")
    if not rows:
        raise InvalidOptionError("argument 'task_data': no class has any document")
    M = np.stack(rows) - mu
    s = np.linalg.svd(M, compute_uv=False)
    # Classes with the same word statistics give M = 0 up to the rounding of the means (their
    # entries are frequencies, at most 1 in size): that residue predicts no dimension.
    s = np.where(s > _rounding_floor(float(np.max(freq, initial=0.0)), freq.shape[0], M.shape), s, 0.0)
    total = (s ** 2).sum()
    ratio = s ** 2 / total if total > 0 else np.zeros_like(s)
    dim = int((s > tol * s[0]).sum()) if s.size and s[0] > 0 else 0
    return WordCountPrediction(
        class_means=M,
        singular_values=s,
        explained_variance_ratio=ratio,
        participation_ratio=participation_ratio(ratio),
        dimension=dim,
        n_components_90=_n_reaching(ratio, 0.90) if total > 0 else 0,
        n_components_95=_n_reaching(ratio, 0.95) if total > 0 else 0,
        tol=tol,
    )
