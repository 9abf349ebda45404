"""Figures of the study and a self-contained HTML report (matplotlib: the ``report`` extra).

Every figure function takes plain arrays or fastfp objects and returns a
:class:`matplotlib.figure.Figure` built directly (never through ``pyplot``), so nothing here
changes the caller's pyplot state, backend or open figures. :func:`write_html_report` embeds the
figures as base64 PNG in one HTML file with inline CSS and no external resource, readable offline.

matplotlib is imported inside the functions: ``import fastfp.report`` needs numpy only, and a
missing matplotlib raises :class:`fastfp.MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping

import numpy as np

from ._validate import as_float_array
from .errors import ArgumentTypeError, InvalidOptionError, MissingDependencyError, ShapeError

__all__ = [
    "fixed_points_figure",
    "eigenvalue_figure",
    "time_constants_figure",
    "explained_variance_figure",
    "figure_png",
    "write_html_report",
]

EXTRA_HINT = "pip install 'fastfp-rnn[report]'"
# Floor of the log colour scale of q: exact roots have q ~ 1e-25 or exactly 0.
_Q_FLOOR = 1e-30
_CLASS_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _figure_class():
    """matplotlib's Figure class, or MissingDependencyError naming the extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"the report figures need matplotlib, which is not installed ({exc}); install the extra: {EXTRA_HINT}"
        ) from None
    return Figure


# --------------------------------------------------------------------------- input helpers
def _points_and_q(points, q):
    """(P, N) finite points and their (P,) q (or None) from a FixedPoints or an array."""
    from .fixed_points import FixedPoints

    if isinstance(points, FixedPoints):
        x = np.asarray(points.x, dtype=np.float64)
        if q is None:
            q = points.q
    else:
        x = as_float_array("points", points, np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ShapeError(f"argument 'points': got shape {x.shape}, expected (P, N)")
    if q is not None:
        q = as_float_array("q", q, np.float64)
        if q.shape != (x.shape[0],):
            raise ShapeError(f"argument 'q': got shape {q.shape}, expected ({x.shape[0]},), one per point")
    keep = np.isfinite(x).all(axis=1)
    if q is not None:
        keep &= np.isfinite(q)
    return x[keep], (q[keep] if q is not None else None)


def _eigvals(eigvals):
    """(P, N) complex eigenvalues of finite points from a decomposed FixedPoints or an array."""
    from .fixed_points import FixedPoints

    if isinstance(eigvals, FixedPoints):
        if eigvals.eigvals is None:
            raise InvalidOptionError("argument 'eigvals': the FixedPoints has no eigenvalues; call .decompose(params) first")
        lam = np.asarray(eigvals.eigvals)
    else:
        lam = np.asarray(eigvals)
        if lam.dtype.kind not in "fc":
            raise ArgumentTypeError(
                f"argument 'eigvals': got dtype {lam.dtype}, expected complex eigenvalues (P, N) or a decomposed FixedPoints"
            )
    if lam.ndim == 1:
        lam = lam[None, :]
    if lam.ndim != 2:
        raise ShapeError(f"argument 'eigvals': got shape {lam.shape}, expected (P, N)")
    lam = lam.astype(np.complex128)
    return lam[np.isfinite(lam).all(axis=1)]


def _check_horizon(horizon):
    if horizon is None:
        return None
    try:
        h = float(horizon)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"argument 'horizon': got {horizon!r}, expected a number > 0 (steps) or None") from None
    if not np.isfinite(h) or h <= 0:
        raise InvalidOptionError(f"argument 'horizon': got {horizon!r}, expected a finite number > 0 (steps) or None")
    return h


def _log_q(q):
    return np.log10(np.maximum(q, _Q_FLOOR))


# --------------------------------------------------------------------------- (a) PC space
def fixed_points_figure(points, *, q=None, states=None, state_mask=None, labels=None, readout=None,
                        highlight=None, basis: str = "auto", n_trajectories: int = 24, point_label: str = "points",
                        title: str | None = None):
    """Fixed points (coloured by log10 q) and trajectories on the leading principal components.

    Parameters
    ----------
    points : FixedPoints or array_like, shape (P, N)
        The points to scatter (non-finite rows are dropped).
    q : array_like, shape (P,), optional
        Speed of each point (default: ``points.q`` of a FixedPoints); points without q are grey.
    states : array_like, shape (B, T, N), optional
        Trajectories (e.g. from ``fastfp.rollout``); up to ``n_trajectories`` are drawn as lines.
    state_mask : array_like of bool, shape (B, T), optional
        Valid steps of ``states`` (e.g. ``TaskData.mask()``); a trajectory ends at its last valid step.
    labels : array_like of int, shape (B,), optional
        Class of each trajectory (its colour).
    readout : array_like, shape (C, H) with H <= N, optional
        Class readout vectors, drawn as arrows from the centre; for an LSTM (N = 2H) they act on
        the h half of the state.
    highlight : array_like, shape (K, N), optional
        Extra points drawn as black stars (e.g. the exact fixed points among slow points).
    basis : {'auto', 'points', 'states'} or PCAResult
        What the PCA is fitted on ('auto': the states when given, else the points), or a fitted
        :func:`fastfp.analysis.pca` result (with >= 2 components) to project on.
    n_trajectories : int
    point_label : str
        Legend name of the points (e.g. 'slow points').
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        PC1-PC2 and, when N >= 3, PC1-PC3 panels; the first scatter collection of each panel holds
        exactly the finite points.
    """
    from .analysis import PCAResult, pca

    Figure = _figure_class()
    x, q = _points_and_q(points, q)
    N = x.shape[1]
    fitted = basis if isinstance(basis, PCAResult) else None
    if fitted is not None:
        if fitted.components.shape[1] != N or fitted.components.shape[0] < min(2, N):
            raise ShapeError(
                f"argument 'basis': a PCA with components of shape {fitted.components.shape}, expected (K >= 2, {N})"
            )
        basis = "given"
    elif not isinstance(basis, str) or basis not in ("auto", "points", "states"):
        raise InvalidOptionError(f"argument 'basis': got {basis!r}, expected 'auto', 'points', 'states' or a PCAResult")
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, (int, np.integer)) or n_trajectories < 0:
        raise InvalidOptionError(f"argument 'n_trajectories': got {n_trajectories!r}, expected an integer >= 0")
    S = mask = None
    if states is not None:
        S = as_float_array("states", states, np.float64)
        if S.ndim == 2:
            S = S[None]
        if S.ndim != 3 or S.shape[2] != N:
            raise ShapeError(f"argument 'states': got shape {S.shape}, expected (B, T, {N}) (N of the points)")
        if state_mask is not None:
            mask = np.asarray(state_mask)
            if mask.dtype != np.bool_ or mask.shape != S.shape[:2]:
                raise ShapeError(
                    f"argument 'state_mask': got {mask.dtype} array of shape {mask.shape}, expected bool of shape {S.shape[:2]}"
                )
        else:
            mask = np.ones(S.shape[:2], dtype=bool)
        mask = mask & np.isfinite(S).all(axis=2)
    elif basis == "states":
        raise InvalidOptionError("argument 'basis': 'states' needs the argument 'states'")
    if labels is not None:
        if S is None:
            raise InvalidOptionError("argument 'labels': colours trajectories, so it needs the argument 'states'")
        labels = np.asarray(labels)
        if labels.shape != (S.shape[0],) or labels.dtype.kind not in "iu":
            raise ShapeError(f"argument 'labels': got {labels.dtype} array of shape {labels.shape}, expected int ({S.shape[0]},)")
    W = None
    if readout is not None:
        W = as_float_array("readout", readout, np.float64)
        if W.ndim != 2 or W.shape[1] > N:
            raise ShapeError(f"argument 'readout': got shape {W.shape}, expected (C, H) with H <= N = {N}")
        W = np.concatenate([W, np.zeros((W.shape[0], N - W.shape[1]))], axis=1)
    H = None
    if highlight is not None:
        H = as_float_array("highlight", highlight, np.float64)
        if H.ndim != 2 or H.shape[1] != N:
            raise ShapeError(f"argument 'highlight': got shape {H.shape}, expected (K, {N})")

    use_states = S is not None and mask.sum() >= 2 and basis in ("auto", "states")
    if fitted is None:
        fit = S[mask] if use_states else x
        if fit.shape[0] < 2:
            raise ShapeError(
                f"argument 'points': {fit.shape[0]} finite point(s) and no trajectories; a PCA needs at least 2 states"
            )
        res = pca(fit, n_components=min(3, N))
    else:
        res = fitted
    K = min(3, res.components.shape[0])
    pairs = [(0, 1)] + ([(0, 2)] if K >= 3 else [])
    if K < 2:
        pairs = [(0, 0)]
    P = res.transform(x)
    ratio = res.explained_variance_ratio

    fig = Figure(figsize=(6.2 * len(pairs), 5.6), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    norm = None
    if q is not None and len(q):
        from matplotlib.colors import Normalize

        lq = _log_q(q)
        lo, hi = float(lq.min()), float(lq.max())
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
    T = res.transform(S) if S is not None and n_trajectories else None
    for ax, (i, j) in zip(axes, pairs):
        if T is not None:
            order = np.linspace(0, S.shape[0] - 1, min(n_trajectories, S.shape[0])).round().astype(int)
            for b in np.unique(order):
                steps = np.flatnonzero(mask[b])
                if len(steps) == 0:
                    continue
                colour = _CLASS_COLOURS[int(labels[b]) % len(_CLASS_COLOURS)] if labels is not None else "0.55"
                ax.plot(T[b, steps, i], T[b, steps, j], "-", lw=0.6, alpha=0.3, color=colour, zorder=1)
                ax.plot(T[b, steps[-1], i], T[b, steps[-1], j], "o", ms=3, color=colour, alpha=0.7, zorder=1)
        if q is not None:
            sc = ax.scatter(P[:, i], P[:, j], c=_log_q(q), cmap="viridis", norm=norm, s=22,
                            edgecolors="k", linewidths=0.3, zorder=3, label=f"{len(P)} {point_label}")
        else:
            sc = ax.scatter(P[:, i], P[:, j], color="0.2", s=22, zorder=3, label=f"{len(P)} {point_label}")
        if H is not None and len(H):
            # Beneath the points and hollow, so points clustered at a fixed point stay visible.
            Hp = res.transform(H)
            ax.scatter(Hp[:, i], Hp[:, j], marker="*", s=320, facecolors="white", edgecolors="k", linewidths=1.0,
                       zorder=2, label=f"{len(H)} exact fixed points")
        if W is not None:
            _readout_arrows(ax, W, res.components, i, j, P, T[mask] if T is not None else None)
        ax.set_xlabel(f"PC{i + 1} ({100 * ratio[i]:.1f}% var)")
        ax.set_ylabel(f"PC{j + 1} ({100 * ratio[j]:.1f}% var)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.25)
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    if q is not None and norm is not None:
        cb = fig.colorbar(sc, ax=list(axes), shrink=0.85)
        cb.set_label("log10 q (speed)")
    what = "the given PCA" if fitted is not None else "states" if use_states else "points"
    fig.suptitle(title or f"Points and trajectories on the principal components ({what})")
    return fig


def _readout_arrows(ax, W, components, i, j, P, T):
    """Readout rows projected on the plane (i, j), scaled so the longest spans most of the data."""
    proj = W @ components.T  # (C, K)
    extent = np.abs(P[:, [i, j]]).max() if len(P) else 1.0
    if T is not None:
        extent = max(extent, float(np.nanmax(np.abs(T[..., [i, j]]))))
    lengths = np.hypot(proj[:, i], proj[:, j])
    scale = 0.9 * extent / lengths.max() if lengths.max() > 0 else 0.0
    for c, (u, v) in enumerate(zip(proj[:, i] * scale, proj[:, j] * scale)):
        colour = _CLASS_COLOURS[c % len(_CLASS_COLOURS)]
        ax.annotate("", xy=(u, v), xytext=(0, 0), zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2.0})
        ax.text(u * 1.1, v * 1.1, f"readout {c}", color=colour, fontsize=9, fontweight="bold", ha="center",
                va="center", zorder=5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})


# --------------------------------------------------------------------------- (b) eigenvalues
def eigenvalue_figure(eigvals, *, zoom: float = 0.25, max_points: int = 200, title: str | None = None):
    """Eigenvalues of the Jacobians at the points, in the complex plane against the unit circle.

    Parameters
    ----------
    eigvals : FixedPoints (decomposed) or array_like of complex, shape (P, N)
    zoom : float
        Half-width of the right panel, a close-up of the region around lambda = 1 where the
        integrating modes lie.
    max_points : int
        Draw the spectra of at most this many points (evenly picked) to keep the figure legible.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (all eigenvalues; close-up at 1), each with the unit circle.
    """
    Figure = _figure_class()
    lam = _eigvals(eigvals)
    try:
        zoom = float(zoom)
    except (TypeError, ValueError):
        zoom = float("nan")
    if not np.isfinite(zoom) or zoom <= 0:
        raise InvalidOptionError("argument 'zoom': expected a finite number > 0")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise InvalidOptionError(f"argument 'max_points': got {max_points!r}, expected an integer >= 1")
    n_all = len(lam)
    if len(lam) > max_points:
        lam = lam[np.linspace(0, len(lam) - 1, max_points).round().astype(int)]
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    t = np.linspace(0, 2 * np.pi, 721)
    flat = lam.ravel()
    from ._tau import unit_tolerance

    outside = np.abs(flat) > 1.0 + unit_tolerance(flat)  # 1 to rounding is marginal, as the counts say
    for ax, close in zip(axes, (False, True)):
        ax.plot(np.cos(t), np.sin(t), "-", color="k", lw=1.0, label="unit circle", zorder=1)
        ax.scatter(flat.real[~outside], flat.imag[~outside], s=10, alpha=0.35, color="#1f77b4",
                   edgecolors="none", zorder=2, label="|λ| ≤ 1")
        if outside.any():
            ax.scatter(flat.real[outside], flat.imag[outside], s=22, marker="x", color="#d62728",
                       zorder=3, label="|λ| > 1 (growing)")
        ax.axhline(0, color="0.7", lw=0.5, zorder=0)
        ax.axvline(0, color="0.7", lw=0.5, zorder=0)
        ax.set_xlabel("Re λ")
        ax.set_ylabel("Im λ")
        ax.grid(alpha=0.25)
        if close:
            ax.set_xlim(1 - zoom, 1 + zoom)
            ax.set_ylim(-zoom, zoom)
            ax.set_aspect("equal")
            ax.set_title(f"close-up at λ = 1 (±{zoom:g})")
        else:
            r = max(1.05, float(np.abs(flat).max()) * 1.05) if flat.size else 1.05
            ax.set_xlim(-r, r)
            ax.set_ylim(-r, r)
            ax.set_aspect("equal")
            of = f"{len(lam)} of {n_all} points" if n_all > len(lam) else f"{n_all} points"
            ax.set_title(f"all eigenvalues at {of}")
            ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    fig.suptitle(title or "Eigenvalues of the Jacobians at the points")
    return fig


# --------------------------------------------------------------------------- (c) time constants
def time_constants_figure(eigvals, *, horizon=None, n_ranks: int = 20, max_points: int = 200, title: str | None = None):
    """Time constants tau = 1 / |ln|lambda|| by rank at each point, log y, with the horizon line.

    Parameters
    ----------
    eigvals : FixedPoints (decomposed) or array_like of complex, shape (P, N)
    horizon : float, optional
        Steps a mode must last to integrate (e.g. the document length): drawn as a dashed line.
    n_ranks : int
        Show the ``n_ranks`` slowest modes.
    max_points : int
        Draw at most this many points' curves (the median is over all).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One line per point (grey), the median over points (black), growing modes (|lambda| > 1)
        marked with red crosses, and the horizon.
    """
    Figure = _figure_class()
    lam = _eigvals(eigvals)
    horizon = _check_horizon(horizon)
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, (int, np.integer)) or n_ranks < 1:
        raise InvalidOptionError(f"argument 'n_ranks': got {n_ranks!r}, expected an integer >= 1")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise InvalidOptionError(f"argument 'max_points': got {max_points!r}, expected an integer >= 1")
    from ._tau import time_constants, unit_tolerance

    mag = np.abs(lam)
    tau = time_constants(lam, two_sided=True)  # +inf at |lambda| = 1 to rounding
    # |lambda| == 1 has tau = inf; draw it at the top of the axis rather than dropping it.
    order = np.argsort(-tau, axis=1, kind="stable")
    tau = np.take_along_axis(tau, order, axis=1)[:, :n_ranks]
    grows = np.take_along_axis(mag, order, axis=1)[:, :n_ranks] > 1.0 + unit_tolerance(lam)
    finite_max = tau[np.isfinite(tau)].max() if np.isfinite(tau).any() else 1.0
    top = max(finite_max, horizon or 0.0) * 3.0
    tau = np.minimum(tau, top)
    ranks = np.arange(1, tau.shape[1] + 1)
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.subplots()
    shown = tau if len(tau) <= max_points else tau[np.linspace(0, len(tau) - 1, max_points).round().astype(int)]
    for row in shown:
        ax.plot(ranks, row, "-", color="0.6", lw=0.7, alpha=0.35)
    if len(tau):
        ax.plot(ranks, np.median(tau, axis=0), "o-", color="k", lw=2.0, ms=4, label=f"median over {len(tau)} points")
    if grows.any():
        rr = np.broadcast_to(ranks, tau.shape)
        ax.scatter(rr[grows], tau[grows], marker="x", color="#d62728", s=25, zorder=3, label="growing mode (|λ| > 1)")
    if horizon is not None:
        ax.axhline(horizon, color="#d62728", ls="--", lw=1.5, label=f"horizon {horizon:g} steps")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.set_ylim(top=max(finite_max, horizon or 0.0) * 2.0)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("rank (slowest first)")
    ax.set_ylabel("time constant τ = 1/|ln|λ|| (steps)")
    ax.set_xticks(ranks if len(ranks) <= 20 else ranks[::max(1, len(ranks) // 20)])
    ax.grid(alpha=0.25, which="both")
    ax.legend(loc="center right", fontsize=8, framealpha=0.9)
    fig.suptitle(title or "Time constants of the linearised dynamics")
    return fig


# --------------------------------------------------------------------------- (d) explained variance
def explained_variance_figure(sets, *, n_components: int = 10, title: str | None = None):
    """Explained-variance ratio per principal component (bars) and cumulative (lines).

    Parameters
    ----------
    sets : array_like (..., N), FixedPoints, PCAResult, or a mapping label -> any of these
        The point clouds to compare (e.g. ``{"fixed points": fp, "states": states}``); states
        arrays of any leading shape are flattened (mask them first).
    n_components : int
        Components shown.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Bars per component and set, cumulative curves, the 90% / 95% lines; the legend gives
        each set's participation ratio.
    """
    from .analysis import PCAResult, pca
    from .fixed_points import FixedPoints

    Figure = _figure_class()
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InvalidOptionError(f"argument 'n_components': got {n_components!r}, expected an integer >= 1")
    if not isinstance(sets, Mapping):
        sets = {"points": sets}
    if not sets:
        raise InvalidOptionError("argument 'sets': got an empty mapping, expected at least one point cloud")
    results = {}
    for label, value in sets.items():
        if isinstance(value, PCAResult):
            results[str(label)] = value
            continue
        if isinstance(value, FixedPoints):
            value = value.x
        arr = as_float_array(f"sets[{label!r}]", value, np.float64)
        if arr.ndim < 2:
            raise ShapeError(f"argument 'sets[{label!r}]': got shape {arr.shape}, expected (..., N) states")
        arr = arr.reshape(-1, arr.shape[-1])
        results[str(label)] = pca(arr[np.isfinite(arr).all(axis=1)])
    K = min(n_components, max(r.explained_variance_ratio.size for r in results.values()))
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(results)
    ks = np.arange(1, K + 1)
    for s, (label, r) in enumerate(results.items()):
        v = np.zeros(K)
        n = min(K, r.explained_variance_ratio.size)
        v[:n] = r.explained_variance_ratio[:n]
        colour = _CLASS_COLOURS[s % len(_CLASS_COLOURS)]
        ax.bar(ks - 0.4 + width * (s + 0.5), v, width=width, color=colour, alpha=0.75,
               label=f"{label}: per component (PR {r.participation_ratio:.2f})")
        ax.plot(ks, np.cumsum(v), "o-", color=colour, lw=1.5, ms=4, label=f"{label}: cumulative")
    for level in (0.9, 0.95):
        ax.axhline(level, color="0.4", ls=":", lw=1.0)
        ax.text(K + 0.45, level, f"{level:.0%}", va="center", ha="right", fontsize=8, color="0.3",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_xlim(0.4, K + 0.6)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(ks)
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax.grid(alpha=0.25, axis="y")
    ax.legend(loc="center right", fontsize=8, framealpha=0.9)
    fig.suptitle(title or "Explained variance")
    return fig


# --------------------------------------------------------------------------- HTML
def figure_png(fig, *, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib Figure (rendered with Agg; no pyplot involved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; background: #fff;
       max-width: 1240px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
table.summary { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
table.summary th, table.summary td { text-align: left; padding: 0.3em 1.2em 0.3em 0.5em; vertical-align: top; }
table.summary th { font-weight: 600; white-space: nowrap; color: #333; }
table.summary tr:nth-child(even) { background: #f4f6f8; }
table.summary td { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; word-break: break-word; }
figure { margin: 1.2em 0 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.4em; }
.notes p { margin: 0.4em 0; }
"""


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "-" if np.isnan(value) else f"{float(value):.4g}"
    if value is None:
        return "-"
    return str(value)


def write_html_report(path, *, title: str, summary_rows, figures=(), notes=None, dpi: int = 100) -> str:
    """Write one self-contained HTML file: title, summary table, figures (base64 PNG) and notes.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; written to a temporary file in the same folder, then renamed over
        ``path``, so a reader never sees half a report.
    title : str
    summary_rows : mapping or sequence of (label, value)
        The summary table; floats are shown with 4 significant digits, None as '-'.
    figures : sequence of Figure or (caption, Figure)
        matplotlib Figures, embedded as PNG data URIs in order.
    notes : str or sequence of str, optional
        Paragraphs after the figures.
    dpi : int
        Resolution of the embedded PNGs.

    Returns
    -------
    str
        The path written.

    All text (title, labels, values, captions, notes) is HTML-escaped: model names and paths come
    from users. The file references nothing outside itself (no URL, script or stylesheet link).
    """
    from ._version import __version__

    if not isinstance(title, str):
        raise ArgumentTypeError(f"argument 'title': got {type(title).__name__}, expected str")
    rows = list(summary_rows.items()) if isinstance(summary_rows, Mapping) else list(summary_rows)
    for k, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 2):
            raise ShapeError(f"argument 'summary_rows': row {k} is {row!r}, expected a (label, value) pair")
    items = []
    for k, fig in enumerate(figures):
        caption, f = (fig if isinstance(fig, (tuple, list)) else (None, fig))
        if not hasattr(f, "savefig"):
            raise ArgumentTypeError(
                f"argument 'figures': item {k} is {type(f).__name__}, expected a matplotlib Figure or (caption, Figure)"
            )
        items.append((caption, f))
    if notes is None:
        notes = []
    elif isinstance(notes, str):
        notes = [notes]
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not 20 <= dpi <= 600:
        raise InvalidOptionError(f"argument 'dpi': got {dpi!r}, expected an integer in [20, 600]")

    import datetime

    esc = html.escape
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">fastfp {esc(__version__)} &middot; {esc(stamp)}</p>',
        "<h2>Summary</h2>",
        '<table class="summary"><tbody>',
    ]
    for label, value in rows:
        parts.append(f"<tr><th>{esc(str(label))}</th><td>{esc(_cell(value))}</td></tr>")
    parts.append("</tbody></table>")
    if items:
        parts.append("<h2>Figures</h2>")
    for k, (caption, fig) in enumerate(items, start=1):
        data = base64.b64encode(figure_png(fig, dpi=int(dpi))).decode("ascii")
        alt = esc(caption if caption else f"figure {k}")
        parts.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">')
        if caption:
            parts.append(f"<figcaption>Figure {k}. {esc(caption)}</figcaption>")
        parts.append("</figure>")
    if notes:
        parts.append('<h2>Notes</h2><div class="notes">')
        parts.extend(f"<p>{esc(str(n))}</p>" for n in notes)
        parts.append("</div>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)

    path = os.fspath(path)
    from ._atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
