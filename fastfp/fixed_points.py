"""`FixedPoints`: the batch-first result of a fixed-point search, its eigen-analysis, merging of
duplicates, outlier rules and a versioned ``.npz`` format (never pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ._atomic import atomic_path
from ._npz import json_object_entry, read_npz
from ._validate import real_number
from .errors import (ArgumentTypeError, DTypeError, FastFPError, FileFormatError, InvalidOptionError, MemoryLimitError,
                     NonFiniteError, ShapeError, warn_user)
from .status import CONVERGED, Q_TOLERANCE, SLOW_POINT, Status

__all__ = ["FixedPoints", "concatenate", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT_KEY = "__fastfp_fixed_points_format__"
_META_KEY = "__metadata_json__"

# Per-point arrays (first axis = point) that are always present, then those added by decompose().
_CORE = ("x", "x0", "inputs", "fx", "residual", "q", "grad_norm", "status", "nit")
_DECOMP = ("jacobian", "eigvals", "eigvecs_right", "eigvecs_left", "input_jacobian")


@dataclass(frozen=True, eq=False)
class FixedPoints:
    """Fixed points (and slow points) of one recurrent layer, one row per initial state.

    Attributes
    ----------
    x : ndarray, shape (B, N)
        Final states of the solver.
    x0 : ndarray, shape (B, N)
        Initial states.
    inputs : ndarray, shape (B, M)
        Input held fixed at each point.
    fx : ndarray, shape (B, N)
        F(x, input).
    residual : ndarray, shape (B,)
        ||F(x) - x||_inf.
    q : ndarray, shape (B,)
        The speed q = ||F(x) - x||_2^2 / 2.
    grad_norm : ndarray, shape (B,)
        ||grad q||_inf = ||(J - I)^T (F(x) - x)||_inf (inf at non-finite points).
    status : ndarray of int, shape (B,)
        ``fastfp.Status`` codes.
    nit : ndarray of int, shape (B,)
        Iterations spent on each point.
    jacobian, eigvals, eigvecs_right, eigvecs_left, input_jacobian : ndarray or None
        Filled by :meth:`decompose`: J (B, N, N); eigenvalues (B, N) sorted by |lambda|
        descending; right eigenvectors R (B, N, N, columns) and left eigenvectors L (B, N, N,
        columns) with J = R diag(lambda) L^T and L^T R = I; dF/dx (B, N, M).
    metadata : dict
        Set-wide facts: method, tolerances, dtype, cell, backend, fastfp version.
    """

    x: np.ndarray
    x0: np.ndarray
    inputs: np.ndarray
    fx: np.ndarray
    residual: np.ndarray
    q: np.ndarray
    grad_norm: np.ndarray
    status: np.ndarray
    nit: np.ndarray
    jacobian: np.ndarray | None = None
    eigvals: np.ndarray | None = None
    eigvecs_right: np.ndarray | None = None
    eigvecs_left: np.ndarray | None = None
    input_jacobian: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        for name, value in (("x", x), ("inputs", self.inputs)):
            if np.ndim(value) != 2:
                raise ShapeError(f"FixedPoints field {name!r}: has shape {np.shape(value)}, expected "
                                 + ("(B, N)" if name == "x" else "(B, M)"))
        for name in ("status", "nit"):
            if np.asarray(getattr(self, name)).dtype.kind not in "iu":
                raise DTypeError(f"FixedPoints field {name!r}: has dtype {np.asarray(getattr(self, name)).dtype}, "
                                 "expected integers")
        (n, N), M = x.shape, np.shape(self.inputs)[1]
        k = np.shape(self.eigvals)[1] if self.eigvals is not None and np.ndim(self.eigvals) == 2 else N
        expected = {"x": (n, N), "x0": (n, N), "inputs": (n, M), "fx": (n, N), "residual": (n,), "q": (n,), "grad_norm": (n,),
                    "status": (n,), "nit": (n,), "jacobian": (n, N, N), "eigvals": (n, k),
                    "eigvecs_right": (n, N, k), "eigvecs_left": (n, N, k), "input_jacobian": (n, N, M)}
        for name in _CORE + _DECOMP:
            value = getattr(self, name)
            if value is None:
                continue
            shape = np.shape(value)
            if shape and shape[0] != n:
                raise ShapeError(f"FixedPoints field {name!r}: has {shape[0]} rows, expected {n} (one per point)")
            if shape != expected[name]:
                want = "(B, N, k) with k the eigvals' columns" if name.startswith("eigvecs") else str(expected[name])
                raise ShapeError(f"FixedPoints field {name!r}: has shape {shape}, expected {want} "
                                 f"(B = {n} points, N = {N}, M = {M})")
        if k > N:
            raise ShapeError(f"FixedPoints field 'eigvals': has {k} columns, expected at most N = {N}")
        codes = np.unique(np.asarray(self.status))
        unknown = sorted(set(codes.tolist()) - {int(s) for s in Status})
        if unknown:
            raise InvalidOptionError(
                f"FixedPoints field 'status': holds codes {unknown[:5]} that are not fastfp.Status values "
                f"({', '.join(f'{int(s)}={s.name}' for s in Status)})"
            )
        found = np.isin(np.asarray(self.status), (CONVERGED, SLOW_POINT, Q_TOLERANCE))
        if x.dtype.kind in "fc" and found.any():
            bad = np.flatnonzero(found & ~np.isfinite(x).all(axis=1))
            if bad.size:
                # A solver marks a point with NaN or Inf NONFINITE; such a row under a found
                # status is a damaged or hand-edited record, and would pass into every analysis.
                raise NonFiniteError(
                    f"FixedPoints field 'x': {bad.size} point(s) with status CONVERGED, SLOW_POINT or "
                    f"Q_TOLERANCE hold NaN or Inf (rows {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}); "
                    "expected finite states there (status NONFINITE marks a non-finite point)"
                )
        if not isinstance(self.metadata, dict):
            raise InvalidOptionError(f"FixedPoints field 'metadata': got {type(self.metadata).__name__}, expected a dict")

    # ------------------------------------------------------------------ derived per-point facts
    @property
    def success(self) -> np.ndarray:
        """(B,) bool: the point is an exact fixed point (status CONVERGED)."""
        return self.status == CONVERGED

    @property
    def is_slow_point(self) -> np.ndarray:
        """(B,) bool: a slow point (status SLOW_POINT or Q_TOLERANCE), not an exact root."""
        return (self.status == SLOW_POINT) | (self.status == Q_TOLERANCE)

    def speed(self, speed_scale=None) -> np.ndarray:
        """(B,) ||(F(x) - x) / speed_scale||_inf: how far each point moves in one step.

        ``speed_scale`` (scalar or (N,), e.g. :func:`fastfp.part_speed_scale`) sets the units; 1 by
        default, where the speed is ``residual``.
        """
        step = np.asarray(self.fx, np.float64) - np.asarray(self.x, np.float64)
        if speed_scale is not None:
            try:
                scale = np.asarray(speed_scale, np.float64)
            except (TypeError, ValueError):
                raise InvalidOptionError(f"argument 'speed_scale': got {speed_scale!r}, expected a positive scalar "
                                         f"or an array of shape ({step.shape[1]},)") from None
            if scale.ndim > 1 or (scale.ndim == 1 and scale.shape != (step.shape[1],)):
                raise ShapeError(f"argument 'speed_scale': got shape {scale.shape}, expected a scalar or "
                                 f"shape ({step.shape[1]},) (one unit per coordinate)")
            if not (np.isfinite(scale) & (scale > 0)).all():
                raise InvalidOptionError("argument 'speed_scale': got values that are not finite and > 0, "
                                         "expected positive units")
            step = step / scale
        return np.abs(step).max(axis=1) if len(step) else np.zeros(0)

    def on_slow_manifold(self, slow_speed: float, speed_scale=None) -> np.ndarray:
        """(B,) bool: an exact root, or a slow point moving at most ``slow_speed`` per step.

        A slow point's status alone does not bound its speed: where the damping runs out at a
        local minimum of q (``SLOW_POINT``, q stationary) the point can move faster than the
        slow-manifold test allows; such points are not on the slow manifold.
        """
        slow_speed = _positive("slow_speed", slow_speed)
        return self.success | (self.is_slow_point & (self.speed(speed_scale) <= slow_speed))

    @property
    def time_constants(self) -> np.ndarray:
        """(B, N) tau = -1 / ln|lambda| in steps (+inf for |lambda| = 1 to rounding, negative for
        growing modes; needs decompose())."""
        from ._tau import time_constants

        return time_constants(self._need("eigvals"))

    @property
    def is_stable(self) -> np.ndarray:
        """(B,) bool: every |lambda| < 1 beyond rounding (a stable fixed point of the discrete-time
        map; |lambda| = 1 to a few ulps, an exact integrator, is marginal, not stable)."""
        from ._tau import unit_tolerance

        lam = self._need("eigvals")
        return np.abs(lam)[:, 0] < 1.0 - unit_tolerance(lam)

    @property
    def n_unstable(self) -> np.ndarray:
        """(B,) number of eigenvalues with |lambda| > 1 beyond rounding (0: stable or marginal, >= 1:
        saddle or source; -1 where the eigenvalues are not finite, a point that is neither).

        Counted among the eigenvalues kept: after ``decompose(k=...)`` a count of k means k or more.
        """
        from ._tau import unit_tolerance

        eig = self._need("eigvals")
        lam = np.abs(eig)
        # |lambda| above 1 by rounding only is an exact integrator (tau = inf), not a growing mode
        return np.where(np.isfinite(lam).all(axis=1), (lam > 1.0 + unit_tolerance(eig)).sum(axis=1), -1)

    def _need(self, name):
        value = getattr(self, name)
        if value is None:
            raise InvalidOptionError(f"FixedPoints.{name} is not computed yet; call .decompose(params) first")
        return value

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index) -> "FixedPoints":
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        index = np.asarray(index) if not isinstance(index, slice) else index
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise ShapeError(f"boolean index: got shape {index.shape}, expected ({len(self)},)")
        updates = {name: getattr(self, name)[index] for name in _CORE + _DECOMP if getattr(self, name) is not None}
        return replace(self, **updates)

    def __repr__(self) -> str:
        counts = {Status(s).name.lower(): int((self.status == s).sum()) for s in np.unique(self.status)}
        meta = self.metadata
        return (
            f"FixedPoints(n={len(self)}, N={self.x.shape[1] if self.x.ndim == 2 else '?'}, "
            f"cell={meta.get('cell')!r}, method={meta.get('method')!r}, status={counts}, "
            f"decomposed={self.eigvals is not None})"
        )

    # ------------------------------------------------------------------ analysis
    def decompose(self, params, *, k: int | None = None, tol: float = 1e-12, backend: str = "cpu",
                  memory_limit: float | None = None) -> "FixedPoints":
        """Add Jacobians, sorted eigenvalues, right/left eigenvectors and input Jacobians.

        Parameters
        ----------
        params : RNNParams
            The layer the points belong to.
        k : int, optional
            Only the k eigenvalues of largest |lambda| (the modes nearest the unit circle) with
            their right and left eigenvectors, found matrix-free (:func:`fastfp.spectra.top_eigs`:
            no N x N matrix, for large N); ``jacobian`` stays None and ``eigvals`` is (B, k).
            ``None`` (default): the full dense decomposition.
        tol : float
            Residual tolerance of the matrix-free eigenpairs (``k`` set).
        backend : {'cpu', 'numpy', 'gpu'}
        memory_limit : float, optional
            Bytes the decomposition may use (default: half the free memory, as the
            solvers); with ``k`` passed on to :func:`fastfp.spectra.top_eigs`. It keeps three N x N arrays per point (J, R, L) and eig's work copies,
            about 64 N^2 bytes; past the limit it raises :class:`MemoryLimitError` naming ``k``.

        Returns
        -------
        FixedPoints
            A copy with ``jacobian`` (B, N, N), ``eigvals`` (B, N) sorted by |lambda|
            descending, ``eigvecs_right`` R and ``eigvecs_left`` L (B, N, N; eigenvectors in
            columns, L^T R = I so that J = R diag(lambda) L^T) and ``input_jacobian`` (B, N, M).
            Where J is defective or nearly so (R numerically singular) no left vectors exist that
            satisfy both; a warning names such points.
        """
        from .dynamics import input_jacobian, jacobian

        _check_same_network(self.metadata.get("params_signature"), params)
        x = np.asarray(self.x, dtype=np.float64)
        inputs = np.asarray(self.inputs, dtype=np.float64)
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < x.shape[1]):
            raise InvalidOptionError(f"argument 'k': got {k!r}, expected None or an integer 1 <= k < N = {x.shape[1]}")
        if len(self) == 0:
            N, M = x.shape[1], inputs.shape[1]
            if k is not None:
                ek = np.zeros((0, N, k), complex)
                return replace(self, jacobian=None, eigvals=np.zeros((0, k), complex), eigvecs_right=ek,
                               eigvecs_left=ek.copy(), input_jacobian=np.zeros((0, N, M)))
            empty = np.zeros((0, N, N))
            return replace(self, jacobian=empty, eigvals=np.zeros((0, N), complex),
                           eigvecs_right=empty.astype(complex), eigvecs_left=empty.astype(complex),
                           input_jacobian=np.zeros((0, N, M)))
        finite = np.isfinite(x).all(axis=1)
        if k is not None:
            return self._decompose_top(params, x, inputs, finite, k, tol, backend, memory_limit)
        _check_full_decomposition_fits(len(self), x.shape[1], memory_limit)
        if not finite.all():  # NONFINITE points: NaN rows in every decomposition field
            part = self[finite].decompose(params, backend=backend, memory_limit=memory_limit)
            B, N, M = len(self), x.shape[1], inputs.shape[1]
            fill = {
                "jacobian": np.full((B, N, N), np.nan), "eigvals": np.full((B, N), np.nan, complex),
                "eigvecs_right": np.full((B, N, N), np.nan, complex), "eigvecs_left": np.full((B, N, N), np.nan, complex),
                "input_jacobian": np.full((B, N, M), np.nan),
            }
            for name, arr in fill.items():
                arr[finite] = getattr(part, name)
            return replace(self, **fill)
        J = jacobian(params, x, inputs, backend=backend, memory_limit=memory_limit)
        Jx = input_jacobian(params, x, inputs, backend=backend, memory_limit=memory_limit)
        # eig of the real J returns exact conjugate pairs, side by side as a+bi, a-bi, whose equal
        # moduli keep that order under a stable sort (eig of a complex-cast J gave pairs a few ulps
        # apart, in either order); the top-k path sorts its real Hessenberg eig the same way.
        lam, R = np.linalg.eig(np.asarray(J, dtype=np.float64))
        lam, R = lam.astype(np.complex128), R.astype(np.complex128)
        order = np.argsort(-np.abs(lam), axis=1, kind="stable")
        lam = np.take_along_axis(lam, order, axis=1)
        R = np.take_along_axis(R, order[:, None, :], axis=2)
        # Left eigenvectors as the rows of R^-1 (pinv where R is numerically singular), so that
        # L^T R = I holds exactly up to rounding.
        singular = np.zeros(len(self), dtype=bool)
        try:
            Rinv = np.linalg.inv(R)
        except np.linalg.LinAlgError:
            Rinv = np.linalg.pinv(R)
            singular = np.linalg.cond(R) > 1.0 / np.finfo(np.float64).eps  # the points pinv stood in for
        L = np.swapaxes(Rinv, 1, 2)
        # R has unit columns, so an entry of R^-1 beyond 1/sqrt(eps) means cond(R) beyond it: J is
        # defective or nearly so (a Jordan block), and no left vectors can be trusted there.
        big = np.abs(L).max(axis=(1, 2), initial=0.0)
        shaky = np.flatnonzero((big > 1.0 / np.sqrt(np.finfo(np.float64).eps)) | singular)
        if shaky.size:
            warn_user(f"decompose: at {shaky.size} of {len(self)} points the eigenvectors are nearly dependent (point "
                      f"{int(shaky[0])}: max |L| {big[shaky[0]]:.2g}): J is defective or nearly so, and its left "
                      "eigenvectors (and R diag(lambda) L^T) are not reliable there; its eigenvalues are")
        return replace(self, jacobian=J, eigvals=lam, eigvecs_right=R, eigvecs_left=L, input_jacobian=Jx)

    def _decompose_top(self, params, x, inputs, finite, k, tol, backend, memory_limit=None):
        from .dynamics import input_jacobian
        from .spectra import top_eigs

        B, N, M = len(self), x.shape[1], inputs.shape[1]
        lam = np.full((B, k), np.nan, complex)
        R = np.full((B, N, k), np.nan, complex)
        L = np.full((B, N, k), np.nan, complex)
        Jx = np.full((B, N, M), np.nan)
        if finite.any():
            te = top_eigs(params, x[finite], inputs[finite], k=k, tol=tol, left=True, backend=backend,
                          memory_limit=memory_limit)
            lam[finite], R[finite], L[finite] = te.eigvals, te.right, te.left
            Jx[finite] = input_jacobian(params, x[finite], inputs[finite], backend=backend, memory_limit=memory_limit)
            meta = dict(self.metadata, eig_k=int(k), eig_converged=int(te.converged.sum()))
            short = int((~te.converged).sum())
            if short:
                no_left = int(np.isnan(te.left).any(axis=1).any(axis=1).sum())
                warn_user(f"decompose(k={k}): at {short} of {int(finite.sum())} points the top-{k} eigenpairs did not "
                          f"all converge or pair with left vectors ({no_left} with NaN left columns); their eigenvalues "
                          "or left vectors may be inaccurate (eigenvalues of equal modulus, e.g. an orthogonal "
                          "recurrent matrix, or a strongly non-normal J); decompose() without k is exact")
        else:
            meta = dict(self.metadata, eig_k=int(k), eig_converged=0)
        return replace(self, jacobian=None, eigvals=lam, eigvecs_right=R, eigvecs_left=L, input_jacobian=Jx,
                       metadata=meta)

    def unique(self, tol: float = 1e-3) -> "FixedPoints":
        """Merge points closer than ``tol`` (2-norm over [x, input]), keeping the lowest-q member.

        Exact fixed points (``success``) and the other points are merged separately, so a root
        never absorbs a nearby slow point or vice versa; non-finite points are kept as they are.
        O(n log n) with a KD-tree; never forms an n x n distance matrix.
        """
        tol = _positive("tol", tol)
        if len(self) <= 1:
            return self
        from scipy.spatial import cKDTree

        keys = np.concatenate([self.x, self.inputs], axis=1).astype(np.float64)
        finite = np.isfinite(keys).all(axis=1)
        keep = [np.flatnonzero(~finite)]
        for group in (self.success & finite, ~self.success & finite):
            idx = np.flatnonzero(group)
            if len(idx) == 0:
                continue
            tree = cKDTree(keys[idx])
            removed = np.zeros(len(idx), dtype=bool)
            for j in np.argsort(self.q[idx], kind="stable"):
                if removed[j]:
                    continue
                keep.append(idx[j:j + 1])
                removed[tree.query_ball_point(keys[idx[j]], r=tol)] = True
        return self[np.sort(np.concatenate(keep))]

    def exclude_outliers(self, *, rule: str = "distance", factor: float = 10.0) -> "FixedPoints":
        """Drop outlying points.

        ``rule='distance'`` (FixedPointFinder's): drop points farther from the centroid of the
        initial states than ``factor`` times the mean distance of the initial states to it.
        ``rule='nearest'``: drop points whose nearest other point is farther than ``factor``
        times the median nearest-neighbour distance.
        """
        factor = _positive("factor", factor)
        if len(self) == 0:
            return self
        if rule == "distance":
            centroid = self.x0.mean(axis=0)
            scale = np.linalg.norm(self.x0 - centroid, axis=1).mean()
            keep = np.linalg.norm(self.x - centroid, axis=1) <= factor * scale
        elif rule == "nearest":
            if len(self) < 3:
                return self
            from scipy.spatial import cKDTree

            dist, _ = cKDTree(self.x).query(self.x, k=2)
            nn = dist[:, 1]
            keep = nn <= factor * np.median(nn)
        else:
            raise InvalidOptionError(f"argument 'rule': got {rule!r}, expected 'distance' or 'nearest'")
        return self[keep]

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write a versioned ``.npz`` (plain arrays and JSON metadata; no pickle).

        Written next to ``path`` and renamed onto it: a failed write leaves a previous file intact."""
        arrays = {name: getattr(self, name) for name in _CORE + _DECOMP if getattr(self, name) is not None}
        arrays[_FORMAT_KEY] = np.array(FORMAT_VERSION)
        arrays[_META_KEY] = np.array(json.dumps(self.metadata, default=_json_default))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path) -> "FixedPoints":
        """Read a file written by :meth:`save`; refuses files of an unknown (newer) version.

        Raises
        ------
        FileFormatError
            Not a FixedPoints file, a newer version, unknown or missing entries, entries of the
            wrong dtype or shape, unknown status codes, or a damaged file.
        """
        where = f"argument 'path': {os.fspath(path)!s}"
        entries = read_npz(path, where=where, kind="fastfp FixedPoints file", marker=_FORMAT_KEY,
                           known=_CORE + _DECOMP + (_META_KEY,), newest=FORMAT_VERSION)
        missing = [name for name in _CORE if name not in entries]
        if missing:
            raise FileFormatError(f"{where} lacks the entries {missing}")
        kwargs: dict[str, Any] = {name: entries[name] for name in _CORE + _DECOMP if name in entries}
        for name, value in kwargs.items():
            if value.dtype.kind not in ("iu" if name in ("status", "nit") else "biufc"):
                raise FileFormatError(
                    f"{where}: entry {name!r} has dtype {value.dtype}, expected "
                    + ("integers" if name in ("status", "nit") else "numbers")
                )
        kwargs["metadata"] = json_object_entry(entries, _META_KEY, where=where) if _META_KEY in entries else {}
        try:
            return cls(**kwargs)
        except FastFPError as exc:
            raise FileFormatError(f"{where}: {exc}") from None


def _check_same_network(recorded, params) -> None:
    """Refuse ``params`` of another cell or nonlinearity than the points were found with, and warn
    when only the weights differ (their eigenvalues would describe another network); float32 and
    float64 copies of one network agree."""
    if not isinstance(recorded, list) or len(recorded) != 14 or not hasattr(params, "signature"):
        return
    now = params.signature()
    if recorded[:2] != now[:2]:
        # Another cell (or nonlinearity) is another network for certain, not a perturbed copy.
        raise InvalidOptionError(
            f"argument 'params': a {now[0]} ({now[1]}) network, but these points were found with a {recorded[0]} "
            f"({recorded[1]}) one, so they are no fixed points of it; pass the params they were found with"
        )
    same = np.allclose(np.asarray(recorded[2:], float), np.asarray(now[2:], float), rtol=1e-5, atol=1e-6)
    if not same:
        warn_user("decompose: argument 'params' is not the network these points were found with (its weights "
                  "differ); the eigenvalues describe the params given")


def concatenate(parts) -> FixedPoints:
    """Join FixedPoints sets (e.g. from chunks); decomposition fields are kept only if all have them."""
    parts = list(parts)
    if not parts:
        raise InvalidOptionError("argument 'parts': got an empty sequence, expected at least one FixedPoints")
    for i, p in enumerate(parts):
        if not isinstance(p, FixedPoints):
            raise ArgumentTypeError(f"argument 'parts': item {i} is a {type(p).__name__}, expected a FixedPoints")
    kwargs = {}
    for f in fields(FixedPoints):
        if f.name == "metadata":
            continue
        values = [getattr(p, f.name) for p in parts]
        widths = {np.shape(v)[1:] for v in values if v is not None}
        if len(widths) > 1:
            raise InvalidOptionError(
                f"argument 'parts': field {f.name!r} has per-point shapes {sorted(widths)} across the parts, "
                "expected one (decompose every part the same way, e.g. the same k)"
            )
        if any(v is None for v in values):
            if f.name in _CORE:
                raise InvalidOptionError(f"argument 'parts': a FixedPoints lacks {f.name!r}")
            kwargs[f.name] = None
        else:
            kwargs[f.name] = np.concatenate(values, axis=0)
    metadata = dict(parts[0].metadata)
    for key in _SUMMED_METADATA:  # per-run counts: of all the parts, not of the first
        values = [p.metadata.get(key) for p in parts]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            metadata[key] = int(sum(values))
    return FixedPoints(**kwargs, metadata=metadata)


# Counts the solvers record per call (chunk, shard): concatenate adds them up.
_SUMMED_METADATA = ("n_matvec", "pilot_matvec", "n_factorizations", "precise_factors", "dense_retries",
                    "dense_retries_converged", "restarts", "restarts_converged", "float32_slow_points_rechecked",
                    "float32_slow_points_demoted")


def _check_full_decomposition_fits(B, N, memory_limit) -> None:
    """Refuse a full decomposition whose N x N results alone would not fit (before any work)."""
    from .solvers import _default_memory_limit

    limit = _default_memory_limit(memory_limit)
    per_point = 64 * N * N  # J (float64), R and L (complex128), eig's float64 copy and complex R
    if B * per_point > limit:
        fits = int(limit // per_point)
        raise MemoryLimitError(
            f"decompose: the full eigendecomposition of {B} points of dimension N = {N} needs about "
            f"{B * per_point / 2**30:.3g} GiB ({per_point / 2**20:.3g} MiB per point: J, R and L are N x N) but "
            f"memory_limit is {limit / 2**30:.3g} GiB; pass k= (the top k eigenpairs, matrix-free, no N x N "
            f"array; fastfp find --eig-k)"
            + (f" or decompose fewer points at a time (at most {fits}, e.g. the distinct ones: fp.unique(1e-3))"
               if fits else " (not even one point's full decomposition fits)")
        )


def _positive(name, value):
    v = real_number(name, value, "a positive number")
    if not np.isfinite(v) or v <= 0:
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a finite number > 0")
    return v


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)
