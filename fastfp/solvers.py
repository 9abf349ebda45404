"""Batched fixed-point solvers: F(h, x) = h for many initial states at once.

Methods
-------
``newton``
    Newton on r(h) = F(h, x) - h with the exact Jacobian and a per-point backtracking line
    search on q = ||r||^2 / 2. Quadratic convergence near a root; cannot settle on slow points.
``lm``
    Levenberg-Marquardt on q (Nielsen's damping update). Converges to roots and to slow points
    (local minima of q with q > 0, reported as ``SLOW_POINT``).
``hybrid`` (default)
    Each iteration tries Newton with a short backtracking search per point (clipped to the box
    that holds every root) and keeps it where the step is not too long and decreases q by the
    Armijo factor; the other points take a damped LM step. Far from a root (or near a slow region) it
    behaves like LM, near a root like Newton (quadratic convergence).
``adam``
    Adam on the mean of q with FixedPointFinder's defaults (lr 1.0, plateau decay x0.95 with
    patience 2, tol_q 1e-12, tol_dq 1e-20, max_iters 5000), to reproduce published analyses.
    ``adam_schedule='constant', adam_stop='mean'`` is renn's rule instead (the study's code):
    constant learning rate, the batch stops once its mean q is at most ``tol_q`` (tested after
    each step).

Stopping is per point: a point leaves the working set (so it stops costing work) as soon as
||r||_inf <= atol + rtol ||h||_inf (``CONVERGED``), or q is stationary, ||grad q||_inf <= gtol
(``SLOW_POINT``), or, in slow-manifold mode (``slow_ratio`` set), its remaining speed lies along
slow directions: ||grad q||_2 <= slow_ratio ||r||_2 with ||r / speed_scale||_inf <= slow_speed
(``SLOW_POINT``; ``speed_scale`` is 1 per coordinate unless given).
With ``tol_q`` set, q <= tol_q also stops (``Q_TOLERANCE``, the study's rule).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext

import numpy as np

from . import status as st
from ._cells_ref import _xp
from ._blas import blas_threads
from ._linalg import SPLIT_BELOW_N, batched_solve, split_rows
from ._validate import as_float_array, check_finite, check_params, prepare_inputs, state_size_text
from ._version import __version__
from .backends import get_kernels
from .errors import InvalidOptionError, MemoryLimitError, ShapeError
from .fixed_points import FixedPoints, concatenate
from .params import GATE_ORDER

__all__ = ["find_fixed_points", "sample_states", "METHODS"]

METHODS = ("hybrid", "newton", "lm", "adam")
JACOBIANS = ("auto", "dense", "matrix_free")
ADAM_STOPS = ("all", "mean")
ADAM_SCHEDULES = ("plateau", "constant")
# From N = 128 on, Newton-Krylov beats dense Newton on the trained GRUs (1.2-1.5x at N = 128,
# 2.3-3x at N = 256: bench/RESULTS-solvers.md) and on the structured GRU of the large-N bench
# (13x at N = 2048: bench/RESULTS-krylov.md). Up to DENSE_RETRY_MAX_N, 'auto' solves the
# points it leaves unconverged again with the dense method.
MATRIX_FREE_MIN_N = 128
# 'auto' runs the Levenberg-Marquardt path (method 'lm', slow-manifold mode) matrix-free from this
# size on: measured 1.1-2x faster than dense LM from N = 128 to 1024 in slow-manifold mode (1.1x
# at GRU-256 by pytest-benchmark's minimum), the same at N = 64, and O(N) memory per point
# (bench/RESULTS-krylov.md, "Slow-manifold mode").
MATRIX_FREE_LM_MIN_N = 128
DENSE_RETRY_MAX_N = 1024
# Steps of the map before a stalled point is solved again (find_fixed_points' restart_steps).
_DEFAULT_RESTART_STEPS = 100
_DEFAULT_MAXITER = {"hybrid": 100, "newton": 100, "lm": 200, "adam": 5000}
_ARMIJO = 1e-4
_MAX_HALVINGS = 16
_MU_MAX = 1e16
# A chord step (the last factorisation of J - I reused) is kept only if it shrinks ||r||_2 by at
# least this factor; otherwise the point takes a fresh Newton step in the same iteration.
_CHORD_CONTRACTION = 0.5
_CHORD_MAX_STEPS = 4


def sample_states(trajectories, n, *, noise=0.0, mask=None, seed=None) -> np.ndarray:
    """Initial states drawn from visited states, plus Gaussian noise.

    Parameters
    ----------
    trajectories : array_like, shape (B, T, N) or (S, N)
        Visited states (e.g. from ``fastfp.rollout``).
    n : int
        Number of states to draw (with replacement only if fewer valid states exist).
    noise : float
        Standard deviation of the isotropic Gaussian noise added to each draw.
    mask : array_like of bool, shape (B, T) or (S,), optional
        Which visited states are valid (e.g. not padding).
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray, shape (n, N)
    """
    states = as_float_array("trajectories", trajectories)
    if states.ndim not in (2, 3):
        raise ShapeError(f"argument 'trajectories': got shape {states.shape}, expected (B, T, N) or (S, N)")
    flat = states.reshape(-1, states.shape[-1])
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != states.shape[:-1]:
            raise ShapeError(
                f"argument 'mask': got {m.dtype} array of shape {m.shape}, expected bool of shape {states.shape[:-1]}"
            )
        flat = flat[m.reshape(-1)]
    check_finite("trajectories", flat)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InvalidOptionError(f"argument 'n': got {n!r}, expected a positive integer")
    if len(flat) == 0:
        raise InvalidOptionError("argument 'mask': selects no state, expected at least one valid state")
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise InvalidOptionError(f"argument 'noise': got {noise!r}, expected a finite number >= 0")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(flat), size=int(n), replace=int(n) > len(flat))
    out = flat[idx].copy()
    if noise > 0:
        out += rng.normal(scale=noise, size=out.shape).astype(out.dtype)
    return out


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected one of {', '.join(map(repr, choices))}")
    return value


def _check_tol(name, value, *, allow_zero=False, allow_none=False):
    if value is None and allow_none:
        return None
    # float() would also take '1e-3' and True (= 1.0): a tolerance is given as a real number.
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array holds one number
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidOptionError(f"argument {name!r}: got {value!r} ({type(value).__name__}), expected a number")
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise InvalidOptionError(
            f"argument {name!r}: got {value!r}, expected a finite number {'>= 0' if allow_zero else '> 0'}"
        )
    return v


def _check_speed_scale(speed_scale, N, slow_ratio):
    if speed_scale is None:
        return None
    if slow_ratio is None:
        raise InvalidOptionError(
            "argument 'speed_scale': it scales the slow-speed test of slow-manifold mode; got a speed_scale "
            "with slow_ratio=None (set slow_ratio, or drop speed_scale)"
        )
    scale = as_float_array("speed_scale", speed_scale, np.float64)
    if scale.shape != (N,):
        raise ShapeError(f"argument 'speed_scale': got shape {scale.shape}, expected ({N},), one unit per state coordinate")
    check_finite("speed_scale", scale)
    if not (scale > 0).all():
        i = int(np.flatnonzero(scale <= 0)[0])
        raise InvalidOptionError(f"argument 'speed_scale': holds {float(scale[i])} at index {i}, expected units > 0")
    return scale


# find_fixed_points' slow speed in slow-manifold mode when none is given.
DEFAULT_SLOW_SPEED = 1e-3


def part_speed_scale(params, states) -> np.ndarray:
    """Per-coordinate speed units for ``find_fixed_points(speed_scale=...)``: each part of the state
    in units of the first part's spread.

    An LSTM's state is [h, c]; its cell state c can spread over several times the range of h, so
    one absolute speed limit is far stricter on c's geometry than on h's. Here the spread of a part
    is the mean over its coordinates of the standard deviation over ``states``, and each part's
    unit is its spread divided by h's (h: 1). Single-part cells (vanilla, GRU, UGRNN) get ones.

    Parameters
    ----------
    params : RNNParams
    states : array_like, shape (..., N)
        States that show the spread, e.g. the candidates (:func:`sample_states`) or the (B, T, N)
        trajectories of :func:`fastfp.rollout` (leading axes are flattened; with variable-length
        documents pass ``states[data.mask()]`` to leave the padding steps out); 2 or more states.

    Returns
    -------
    ndarray, shape (N,)
    """
    check_params(params)
    S = as_float_array("states", states, np.float64)
    if S.ndim < 2 or S.shape[-1] != params.state_size or S.size < 2 * params.state_size:
        raise ShapeError(f"argument 'states': got shape {np.shape(states)}, expected (..., N) with 2 or more "
                         f"states and {state_size_text(params)}")
    S = S.reshape(-1, params.state_size)
    check_finite("states", S)
    H = params.hidden_size
    scale = np.ones(params.state_size)
    if params.state_size == H:
        return scale  # one part: its own unit
    parts = [S[:, lo:lo + H] for lo in range(0, params.state_size, H)]
    # Constancy by range, not by std: the std of a constant float column is rounding noise (~1e-17).
    moves = [bool((np.ptp(part, axis=0) > 0).any()) for part in parts]
    if not moves[0]:
        raise InvalidOptionError("argument 'states': the hidden part h is the same in every state, so its spread "
                                 "cannot be the unit; pass states from different documents or time steps")
    spreads = [part.std(axis=0).mean() for part in parts]
    for k, (spread, moving) in enumerate(zip(spreads, moves)):
        # A part that never moves keeps unit 1 (no scaling) rather than a zero unit.
        scale[k * H:(k + 1) * H] = spread / spreads[0] if moving else 1.0
    return scale


def find_fixed_points(
    params,
    h0,
    x=None,
    *,
    method: str = "hybrid",
    atol: float | None = None,
    rtol: float = 0.0,
    gtol: float = 1e-12,
    maxiter: int | None = None,
    tol_q: float | None = None,
    slow_ratio: float | None = None,
    slow_speed: float | None = None,
    speed_scale=None,
    max_norm: float = 1e3,
    max_step: float = 2.0,
    adam_lr: float = 1.0,
    tol_dq: float = 1e-20,
    adam_stop: str = "all",
    adam_schedule: str = "plateau",
    dtype=np.float64,
    backend: str = "cpu",
    batch_size: int | str | None = None,
    memory_limit: float | None = None,
    jacobian: str = "auto",
    gmres_restart: int = 40,
    chord: bool | None = None,
    mixed_precision: bool | None = None,
    restart_steps: int | None = None,
    progress: bool = False,
) -> FixedPoints:
    """Solve F(h, x) = h from B initial states.

    Parameters
    ----------
    params : RNNParams
    h0 : array_like, shape (B, N)
        Initial states (see :func:`sample_states`).
    x : array_like, shape (M,) or (B, M), optional
        Input held fixed: shared by all points or one per point; ``None`` is the zero input.
    method : {'hybrid', 'newton', 'lm', 'adam'}
    atol, rtol : float
        A point converges when ||F(h) - h||_inf <= atol + rtol * ||h||_inf. ``atol`` defaults
        to 1e-10 in float64 and 1e-5 in float32 (whose rounding alone is ~1e-7).
    gtol : float
        A point whose ||grad q||_inf <= gtol without converging is a slow point.
    maxiter : int, optional
        Iteration cap (default 100 for newton/hybrid, 200 for lm, 5000 for adam).
    tol_q : float, optional
        Also stop points with q <= tol_q (status ``Q_TOLERANCE``; the study's rule). For
        ``adam`` the default is FixedPointFinder's 1e-12.
    slow_ratio, slow_speed : float
        Slow-manifold mode (lm/hybrid; ``slow_speed`` 1e-3 unless given, an error without
        ``slow_ratio``, where it would do nothing): stop a point as ``SLOW_POINT`` when
        ||grad q||_2 <= slow_ratio * ||r||_2 and ||r / speed_scale||_inf <= slow_speed (see
        ``speed_scale``; 1 per coordinate by default), i.e. what remains of
        its speed lies along directions with |1 - lambda| <~ slow_ratio. The LM damping is kept
        >= slow_ratio^2 and no Newton steps are taken, so points settle onto the manifold near
        where they started instead of sliding along it to the few exact roots. Off by default.
    speed_scale : array_like, shape (N,), optional
        Slow-manifold mode: measure the speed in the slow-speed test per coordinate in these
        units, ||(F(h) - h) / speed_scale||_inf <= slow_speed, for states whose parts have
        different spreads (an LSTM's cell state c moves over a wider range than h; see
        :func:`part_speed_scale`). Default: 1 for every coordinate. The convergence test
        (``atol``), ``residual`` and ``q`` stay unscaled.
    max_norm : float
        Points with ||h||_inf above this are stopped as ``DIVERGED``. (``adam``, whose steps are
        not held to the box that holds every root, reports a point outside it, beyond the
        convergence tolerance, as ``DIVERGED`` whatever its residual: a gate saturated to
        exactly 1.0 in floating point, no root.)
    max_step : float
        Trust radius: ``hybrid`` takes a Newton step only if ||delta||_inf <= max_step *
        max(1, ||h||_inf) and LM rejects (and damps more) steps longer than max_step; long
        steps from a near-singular J - I jump into saturated regions. Steps are also clipped to
        the box that holds every root (:func:`state_bounds`).
    adam_lr, tol_dq : float
        Adam's initial learning rate and FixedPointFinder's |d mean q| stop tolerance.
    adam_stop : {'all', 'mean'}
        ``adam``: stop the batch when every point has q < tol_q (FixedPointFinder, tested
        before a step) or when the mean q is at most tol_q (renn's ``optimize``, hence the
        study: the mean of the states before a step is tested after the step is taken, and the
        stepped states are returned, so at least one step is taken). The points above tol_q when
        the batch stops early get status ``BATCH_STOPPED`` (with either rule also when the mean
        q stalls, ``tol_dq``, or goes non-finite). The batch is each chunk of ``batch_size``
        points (each shard in :func:`fastfp.distributed.find_fixed_points_sharded`).
    adam_schedule : {'plateau', 'constant'}
        ``adam``: decay the learning rate x0.95 when the mean q has not improved for 3 steps
        (FixedPointFinder-Torch's ReduceLROnPlateau) or keep it constant (renn, with
        ``jax.experimental.optimizers.adam``).
    dtype : {float64, float32}
        Computation dtype (float64 is needed for residuals near 1e-10).
    backend : {'cpu', 'numpy', 'gpu'}
    batch_size : int or 'auto', optional
        Solve the initial states in chunks of this many points. ``None`` solves all at once and
        raises :class:`fastfp.MemoryLimitError` (with a suggested size) if that would not fit.
    memory_limit : float, optional
        Bytes the solver may use; default half of the available physical memory.
    jacobian : {'auto', 'dense', 'matrix_free'}
        How the linear systems of ``newton``, ``hybrid`` and ``lm`` are solved. ``'dense'`` forms
        J (B x N x N) and factorises it. ``'matrix_free'`` forms no N x N matrix: for ``newton`` /
        ``hybrid`` it runs Newton-Krylov, batched GMRES on J v products (memory
        O(gmres_restart * N) per point, each iteration one GEMM), with a steepest-descent step on
        q where Newton gives no decrease (it replaces hybrid's LM step); for ``lm`` and the
        slow-manifold mode (``slow_ratio``) it runs the same Levenberg-Marquardt iteration with
        the damped normal equations solved by batched conjugate gradients on J v and J^T w
        products (memory O(N) per point); on the CPU backends, with one shared input, at least
        128 points and N <= 1024, a short pilot LM run of 16 of the starts first finds points
        near where they go and CG is preconditioned by the inverse of the damped normal matrix
        at the one nearest each point (``metadata['preconditioner_points']``; on the trained
        GRU-256 at 'the', J v products 3.6x fewer, the pilot's included, and 1.5x less time). ``'auto'`` picks matrix-free for N >= 128 (where both
        measure faster on the trained GRUs and LSTMs, see bench/RESULTS-krylov.md) or when not
        even one dense point fits in ``memory_limit``, dense otherwise; on the CPU, for ``newton``
        / ``hybrid`` from 64 starts and N <= 1024 where dense fits the batch as asked, a pilot
        Newton-Krylov run of an eighth of the starts (8 to 16, at most 10 iterations) goes back to
        dense where GMRES takes more J v products per Newton step than a dense step costs (``metadata['auto_pilot']``; chaotic vanilla RNNs: 49 s matrix-free,
        1 s dense at N = 128); with N <= 1024 the points matrix-free leaves
        unconverged (max iterations, diverged, singular, no decrease) are solved again with the
        dense method (``metadata['dense_retries']``). ``adam`` uses gradients only.
    gmres_restart : int
        Krylov dimension of the matrix-free path's GMRES(m).
    chord : bool, optional
        Dense path of ``newton`` / ``hybrid``: keep each point's LU factors of J - I and reuse
        them (chord steps: one cell evaluation and two triangular solves) while they shrink
        ||r||_2 by half per step, refactorising when they stop doing so or when that linear
        rate would need more than a few steps to reach the tolerance. Default: True for
        ``hybrid``, False for ``newton`` (exact Newton: a factorisation per step, quadratic
        convergence). Not used by ``lm``, ``adam`` or the matrix-free path.
    mixed_precision : bool, optional
        In a float64 solve of ``newton`` / ``hybrid``, solve the linear systems for the steps in
        float32: float32 LU factors on the dense path, float32 GMRES on the matrix-free path. The
        residual stays float64, so a step is an inexact Newton step (relative error about
        cond(J - I) * 6e-8 dense, at most 1e-4 matrix-free) and the iteration reaches the same
        float64 tolerance (mixed-precision iterative refinement), with half the memory traffic
        and about twice the LAPACK / GEMM speed. A dense point whose float32 step fails
        (singular in float32, or no decrease) is stepped again at once from float64 factors and
        keeps them. On the matrix-free path with one shared input and at least 128 points, a
        pilot solve of 32 of the starts first finds roots, and float32 GMRES is right-
        preconditioned by the inverse of J - I at the root nearest each point
        (``metadata['preconditioner_roots']``): near a root that leaves a few GMRES iterations
        per step, and GMRES's residual stays the true one. Default: True for ``hybrid``, False
        for ``newton``.
    restart_steps : int, optional
        Points left diverged, without decrease or singular, and those at the default iteration cap
        still moving by more than 1e-2 per step (far from any fixed or slow point; in slow-manifold
        mode by more than max(1e-2, slow_speed) in speed_scale units), are moved by
        this many steps of the map itself, h <- F(h, x), from where they stopped, and solved once
        more; a second attempt that converges replaces the first (``nit`` counts the solver
        iterations of both; ``metadata['restarts']`` and ``['restarts_converged']`` count them).
        Newton and LM stall where q has a local minimum on the face of the box that holds every
        root (a saturated unit), while the map's own flow leaves the face towards an attractor:
        on a trained GRU-32, 183 of 256 starts stalled and all 183 converged after 100 steps; on
        a trained LSTM-32 whose root lies far from the states it visits, hybrid left 229 of 256 at
        the cap and 193 of them converged after the restart.
        In slow-manifold mode a restarted point that ends as a slow point replaces the first
        attempt too (the points that settled the first time stay where they settled): on the same
        LSTM the slow-point search settled 215 of 256 points instead of 4. Default: 100 for
        ``newton``, ``hybrid`` and ``lm``; 0 (no restart) for ``adam``. (:mod:`fastfp.study` pins
        0, as its documented rows were measured.)
    progress : bool or callable
        True: report iterations and active points on stderr. A callable is called as
        ``progress(n_done, n_total)`` with the number of points finished so far (over all chunks)
        after each iteration of the batch-wide loops (``lm``, the matrix-free path, the numpy
        backend), after each wave of at least 256 points of the CPU's per-point Newton kernel, and
        after each chunk, last with ``n_done == n_total`` (a progress bar's hook). With progress
        the matrix-free path solves its points in one thread.

    Returns
    -------
    FixedPoints
        One row per initial state, in order.
    """
    check_params(params)
    kernels = get_kernels(backend)
    if method not in METHODS:
        raise InvalidOptionError(f"argument 'method': got {method!r}, expected one of {', '.join(map(repr, METHODS))}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InvalidOptionError(f"argument 'dtype': got {dtype!r}, expected float32 or float64") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidOptionError(f"argument 'dtype': got {dtype}, expected float32 or float64")
    H0 = as_float_array("h0", h0, dtype)
    if H0.ndim == 1:
        H0 = H0[None, :]
    if H0.ndim != 2 or H0.shape[1] != params.state_size:
        raise ShapeError(f"argument 'h0': got shape {np.shape(h0)}, expected (B, N) with {state_size_text(params)}")
    check_finite("h0", H0)
    B, N = H0.shape
    X = prepare_inputs("x", params, x, B, dtype)
    if slow_speed is not None and slow_ratio is None:
        raise InvalidOptionError(
            f"argument 'slow_speed': got {slow_speed!r} with slow_ratio=None; it is the speed limit of "
            "slow-manifold mode and does nothing without it (set slow_ratio, e.g. 0.05, or drop slow_speed)"
        )
    if atol is None:
        atol = 1e-10 if dtype == np.float64 else 1e-5
    opts = {
        "atol": _check_tol("atol", atol, allow_zero=True),
        "rtol": _check_tol("rtol", rtol, allow_zero=True),
        "gtol": _check_tol("gtol", gtol, allow_zero=True),
        "tol_q": _check_tol("tol_q", tol_q if tol_q is not None or method != "adam" else 1e-12, allow_none=True),
        "slow_ratio": _check_tol("slow_ratio", slow_ratio, allow_none=True),
        "slow_speed": _check_tol("slow_speed", DEFAULT_SLOW_SPEED if slow_speed is None else slow_speed),
        "max_norm": _check_tol("max_norm", max_norm),
        "max_step": _check_tol("max_step", max_step),
        "adam_lr": _check_tol("adam_lr", adam_lr),
        "tol_dq": _check_tol("tol_dq", tol_dq, allow_zero=True),
        "adam_stop": _check_choice("adam_stop", adam_stop, ADAM_STOPS),
        "adam_schedule": _check_choice("adam_schedule", adam_schedule, ADAM_SCHEDULES),
        "stuck_rtol": stationary_rtol(dtype),
    }
    for name, default in (("adam_stop", "all"), ("adam_schedule", "plateau")):
        if method != "adam" and opts[name] != default:
            raise InvalidOptionError(
                f"argument {name!r}: got {opts[name]!r} with method={method!r}; it is an option of method 'adam'"
            )
    if chord is None:
        chord = method == "hybrid"
    elif not isinstance(chord, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'chord': got {chord!r}, expected True, False or None")
    elif chord and (method not in ("newton", "hybrid") or jacobian == "matrix_free"):
        raise InvalidOptionError(
            f"argument 'chord': chord steps reuse dense LU factors of newton/hybrid; got chord=True with "
            f"method={method!r}, jacobian={jacobian!r}"
        )
    opts["chord"] = bool(chord)
    if mixed_precision is None:
        mixed_precision = method == "hybrid"
    elif not isinstance(mixed_precision, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'mixed_precision': got {mixed_precision!r}, expected True, False or None")
    elif mixed_precision and method not in ("newton", "hybrid"):
        raise InvalidOptionError(
            f"argument 'mixed_precision': float32 linear solves are for newton/hybrid steps; got "
            f"mixed_precision=True with method={method!r}"
        )
    opts["mixed_precision"] = bool(mixed_precision)
    if not (isinstance(progress, (bool, np.bool_)) or callable(progress)):
        raise InvalidOptionError(
            f"argument 'progress': got {progress!r}, expected True, False or a callable progress(n_done, n_total)"
        )
    if opts["atol"] == 0 and opts["rtol"] == 0:
        raise InvalidOptionError("arguments 'atol' and 'rtol': both are 0, expected at least one > 0")
    if restart_steps is None:
        restart_steps = 0 if method == "adam" else _DEFAULT_RESTART_STEPS
    if not isinstance(restart_steps, (int, np.integer)) or isinstance(restart_steps, bool) or restart_steps < 0:
        raise InvalidOptionError(f"argument 'restart_steps': got {restart_steps!r}, expected None or an integer >= 0")
    if restart_steps and method == "adam":
        raise InvalidOptionError("argument 'restart_steps': restarts are for newton, hybrid and lm; got method='adam'")
    opts["restart_steps"] = int(restart_steps)
    opts["speed_scale"] = _check_speed_scale(speed_scale, N, opts["slow_ratio"])
    if opts["slow_ratio"] is not None and method not in ("lm", "hybrid"):
        raise InvalidOptionError(
            f"argument 'slow_ratio': slow-manifold mode needs method 'lm' or 'hybrid', got method={method!r}"
        )
    if maxiter is None:
        maxiter = _DEFAULT_MAXITER[method]
    # nit is counted in int64 arrays and the cap compared with them: beyond 2^31 - 1 steps no
    # solve ends anyway.
    if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or not 0 <= maxiter <= 2**31 - 1:
        raise InvalidOptionError(f"argument 'maxiter': got {maxiter!r}, expected an integer 0..{2**31 - 1}")
    opts["maxiter"] = int(maxiter)

    if jacobian not in JACOBIANS:
        raise InvalidOptionError(
            f"argument 'jacobian': got {jacobian!r}, expected one of {', '.join(map(repr, JACOBIANS))}"
        )
    if not isinstance(gmres_restart, (int, np.integer)) or isinstance(gmres_restart, bool) or gmres_restart < 1:
        raise InvalidOptionError(f"argument 'gmres_restart': got {gmres_restart!r}, expected an integer >= 1")
    mode = _plan_jacobian(method, jacobian, N, dtype, opts, memory_limit, backend)
    opts["gmres_restart"] = int(gmres_restart)
    pilot = None
    t0 = time.perf_counter()  # the pilot's time included
    if jacobian == "auto" and mode == "matrix_free":
        pilot = _auto_pilot(kernels, params, H0, X, method, opts, dtype, memory_limit, backend, batch_size)
        if pilot is not None and pilot["chose"] == "dense":
            mode = "dense"
    # Metadata records what is used: no factors to reuse on the matrix-free path or without Newton
    # steps (slow-manifold mode); nothing to mix in a float32 solve.
    if mode == "matrix_free" or opts["slow_ratio"] is not None:
        opts["chord"] = False
    if dtype == np.float32 or opts["slow_ratio"] is not None:
        opts["mixed_precision"] = False
    chunk = _plan_chunks(method, B, N, dtype, batch_size, memory_limit, mode=mode, restart=int(gmres_restart),
                         backend=backend, slow=opts["slow_ratio"] is not None, lm=_uses_lm(method, opts))
    metadata = {
        "method": method,
        "jacobian": mode,
        **opts,
        "slow_speed": opts["slow_speed"] if opts["slow_ratio"] is not None else None,  # unused then
        "speed_scale": None if opts["speed_scale"] is None else [float(v) for v in opts["speed_scale"]],
        "dtype": dtype.name,
        "cell": params.cell,
        "params_signature": params.signature(),  # decompose() checks it is handed the same network
        "backend": backend,
        "fastfp_version": __version__,
    }
    if pilot is not None:
        metadata["auto_pilot"] = pilot
    parts = []
    # Small systems: the batched solves are split across threads (see _linalg), which spinning
    # OpenBLAS workers from the GEMMs would slow down, so BLAS runs single-threaded meanwhile.
    threads = blas_threads(1) if method != "adam" and N < SPLIT_BELOW_N else nullcontext()
    with threads:
        for lo in range(0, max(B, 1), chunk):  # one (empty) chunk when B = 0
            hi = min(B, lo + chunk)
            Xc = X if X.shape[0] == 1 else X[lo:hi]
            solver = _adam if method == "adam" else (_matrix_free if mode == "matrix_free" else _dense)
            report = _chunk_progress(progress, lo, B) if callable(progress) else progress
            parts.append(solver(kernels, params, H0[lo:hi], Xc, method, opts, report, metadata))
            if callable(progress):
                progress(hi, B)
    result = concatenate(parts) if len(parts) > 1 else parts[0]
    if jacobian == "auto" and mode == "matrix_free" and backend != "gpu" and N <= DENSE_RETRY_MAX_N:
        result = _retry_dense(result, kernels, params, H0, X, method, opts, metadata, dtype, memory_limit)
    if dtype == np.float32 and method != "adam":
        result = _recheck_float32_slow(result, params, opts, backend)
    if opts["restart_steps"]:
        # After the float32 re-check, whose demoted slow points (pressed against the box) are
        # what a restart is for.
        with blas_threads(1) if N < SPLIT_BELOW_N else nullcontext():
            result = _restart_by_iterating(result, kernels, params, X, method, mode, opts, metadata, dtype,
                                           memory_limit, backend)
        if dtype == np.float32 and opts["slow_ratio"] is not None and result.metadata["restarts_converged"]:
            result = _recheck_float32_slow(result, params, opts, backend)  # the restarts' slow points
    result.metadata["wall_time_s"] = time.perf_counter() - t0
    return result


def _recheck_float32_slow(result, params, opts, backend):
    """float32: a SLOW_POINT the solver's own slow test does not explain is checked again in float64.

    A float32 point where no damped step decreases q passes the stationarity test at 10 sqrt(eps)
    ||r||; at a small residual (1e-4) rounding can make a point that is not stationary (q still
    decreasing in float64, e.g. pressed against the root box) look so. Points that pass the
    solver's test (gtol, or the slow-manifold test, on the float32 values it stopped on) keep
    their status. The others are re-evaluated in float64 (r, and g = (J - I)^T r by a VJP: O(N)
    memory) and stay slow points only if stationary there (||g||_inf <= max(gtol, 10 sqrt(eps_32)
    ||r||_inf)) or on the slow manifold; otherwise they are DIVERGED where pressed against the root
    box with q decreasing outward, NO_DECREASE elsewhere (the labels of a float64 stall).
    """
    from dataclasses import replace

    from .dynamics import step, vjp

    host = "numpy" if backend == "numpy" else "cpu"  # results are NumPy arrays whatever the backend
    slow = np.flatnonzero(result.status == st.SLOW_POINT)
    demoted = np.zeros(0, dtype=np.int64)
    if len(slow):
        h32, x32 = np.asarray(result.x[slow], np.float32), np.asarray(result.inputs[slow], np.float32)
        r32 = np.asarray(result.fx[slow], np.float32) - h32
        g32 = vjp(params.astype(np.float32), h32, x32, r32, backend=host) - r32
        unexplained = slow[~_is_slow(r32, g32, opts)]
        if len(unexplained):
            p64 = params.astype(np.float64)
            h = np.asarray(result.x[unexplained], np.float64)
            x = np.asarray(result.inputs[unexplained], np.float64)
            r = step(p64, h, x, backend=host) - h
            g = vjp(p64, h, x, r, backend=host) - r
            keep = np.abs(g).max(axis=1) <= np.maximum(opts["gtol"], stationary_rtol(np.float32) * np.abs(r).max(axis=1))
            keep |= _is_slow(r, g, opts)
            demoted = unexplained[~keep]
            lower, upper = state_bounds(p64)
            labels = _stall_status(np, h[~keep], r[~keep], g[~keep], lower, upper, opts)
    status = result.status.copy()
    if len(demoted):
        # Not stationary in float64 (that is why they are demoted): DIVERGED or NO_DECREASE.
        status[demoted] = np.where(labels == st.SLOW_POINT, st.NO_DECREASE, labels)
    meta = dict(result.metadata, float32_slow_points_rechecked=int(len(slow)), float32_slow_points_demoted=int(len(demoted)))
    return replace(result, status=status, metadata=meta)


def _retry_dense(result, kernels, params, H0, X, method, opts, metadata, dtype, memory_limit):
    """'auto': points the matrix-free path left at MAX_ITER / DIVERGED / SINGULAR / NO_DECREASE are solved again
    from their initial states with the dense method, where N is small enough to afford it (the
    Newton-Krylov path's steepest-descent fallback is weaker than LM; the matrix-free LM's steps
    are inexact); a retry replaces the point where it converged (or, in slow-manifold mode, is a
    slow point)."""
    failed = np.flatnonzero(np.isin(result.status, (st.MAX_ITER, st.DIVERGED, st.SINGULAR, st.NO_DECREASE)))
    if _dense_bytes_per_point(H0.shape[1], dtype.itemsize) > _default_memory_limit(memory_limit):
        failed = failed[:0]  # auto chose matrix-free because dense does not fit: no retry
    if opts["maxiter"] == 0:
        failed = failed[:0]  # no iteration asked for (a probe): a dense one would take none either
    result.metadata["dense_retries"] = int(len(failed))
    if len(failed) == 0:
        return result
    chunk = _plan_chunks(method, len(failed), H0.shape[1], dtype, "auto", memory_limit)
    meta = dict(metadata, jacobian="dense")
    parts = []
    for lo in range(0, len(failed), chunk):
        idx = failed[lo:lo + chunk]
        parts.append(_dense(kernels, params, H0[idx], _rows(X, idx), method, opts, False, meta))
    redo = concatenate(parts) if len(parts) > 1 else parts[0]
    return _take_second_attempts(result, redo, failed, opts, "dense_retries_converged")


def _take_second_attempts(result, redo, rows, opts, count_key):
    """``result`` with rows ``rows`` replaced by ``redo``'s points where the second attempt converged
    (or, in slow-manifold mode, is a slow point: that is what it is after); ``nit`` counts the
    iterations of both attempts, x0 stays the caller's start, ``metadata[count_key]`` the number taken."""
    better = redo.status == st.CONVERGED
    if opts["slow_ratio"] is not None:
        better |= redo.status == st.SLOW_POINT
    if not better.any():
        return result
    take = rows[better]
    fields = {name: getattr(result, name).copy() for name in ("x", "fx", "residual", "q", "grad_norm", "status", "nit")}
    for name, arr in fields.items():
        arr[take] = getattr(redo, name)[better]
    fields["nit"][take] += result.nit[take]
    from dataclasses import replace

    return replace(result, **fields, metadata=dict(result.metadata, **{count_key: int(better.sum())}))


# Points the solver gave up on, and those it left at the iteration cap still moving fast.
_RESTARTED = (st.DIVERGED, st.SINGULAR, st.NO_DECREASE)
# A point at the cap moving by more than this per step (||F(h) - h||_inf) is far from any fixed or
# slow point, where the map's own steps carry it a long way (a trained LSTM whose root lies far
# from the states it visits: 193 of 229 such points converged after the restart); a slower one sits
# on a slow manifold, where 100 steps barely move it and a second solve would only repeat the first.
_RESTART_MAX_ITER_SPEED = 1e-2


def _restart_by_iterating(result, kernels, params, X, method, mode, opts, metadata, dtype, memory_limit, backend):
    """Points stopped as DIVERGED / SINGULAR / NO_DECREASE, or at MAX_ITER still moving faster than
    _RESTART_MAX_ITER_SPEED: ``restart_steps`` steps of the map from where they stopped, then one more solve; a second attempt that converges (or, in
    slow-manifold mode, is a slow point) replaces the first."""
    # Points at the cap only under the default cap: a cap the caller lowered is the caller's choice.
    # Their speed as the slow test measures it (speed_scale), against the larger of 1e-2 and slow_speed.
    speed = result.residual if opts["speed_scale"] is None else np.abs(
        (result.fx - result.x) / opts["speed_scale"]).max(axis=1, initial=0.0)
    limit = max(_RESTART_MAX_ITER_SPEED, opts["slow_speed"]) if opts["slow_ratio"] is not None else _RESTART_MAX_ITER_SPEED
    capped = ((result.status == st.MAX_ITER) & (speed > limit) & (opts["maxiter"] >= _DEFAULT_MAXITER[method]))
    failed = np.flatnonzero(np.isin(result.status, _RESTARTED) | capped)
    result.metadata["restarts"] = int(len(failed))
    result.metadata["restarts_converged"] = 0
    if len(failed) == 0:
        return result
    cell, act = params.cell_code, params.nonlinearity_code
    w = params.arrays(dtype)
    Xf = _rows(X, failed)
    h = np.ascontiguousarray(result.x[failed], dtype=dtype)
    with np.errstate(all="ignore"):
        if kernels.name == "gpu":  # the steps stay on the device: weights and states go over once
            import cupy

            from ._cells_gpu import device_cells

            dev = device_cells()
            wd = tuple(cupy.asarray(a) for a in w)
            hd, Xd = cupy.asarray(h), cupy.asarray(Xf)
            for _ in range(opts["restart_steps"]):
                hd = dev.step(cell, act, hd, Xd, *wd)
            h = cupy.asnumpy(hd)
        else:
            for _ in range(opts["restart_steps"]):
                h = kernels.step(cell, act, h, Xf, *w)
    finite = np.isfinite(h).all(axis=1) & (np.abs(h).max(axis=1, initial=0.0) <= opts["max_norm"])
    failed, h = failed[finite], h[finite]
    if len(failed) == 0:
        return result
    Xf = _rows(X, failed)
    chunk = _plan_chunks(method, len(failed), h.shape[1], dtype, "auto", memory_limit, mode=mode,
                         restart=opts["gmres_restart"], backend=backend, slow=opts["slow_ratio"] is not None,
                         lm=_uses_lm(method, opts))
    solver = _matrix_free if mode == "matrix_free" else _dense
    parts = [solver(kernels, params, h[lo:lo + chunk], Xf if Xf.shape[0] == 1 else Xf[lo:lo + chunk], method, opts,
                    False, metadata) for lo in range(0, len(failed), chunk)]
    redo = concatenate(parts) if len(parts) > 1 else parts[0]
    if "n_matvec" in redo.metadata:  # the second solves' products count too
        result.metadata["n_matvec"] = result.metadata.get("n_matvec", 0) + redo.metadata["n_matvec"]
    return _take_second_attempts(result, redo, failed, opts, "restarts_converged")


def _default_memory_limit(memory_limit, backend="cpu"):
    if memory_limit is None and backend == "gpu":
        import cupy

        # Free device memory, with the blocks CuPy's pool holds from earlier work (freed by us,
        # not returned to the driver, so mem_info does not count them).
        return 0.8 * (cupy.cuda.Device().mem_info[0] + cupy.get_default_memory_pool().free_bytes())
    if memory_limit is None:
        try:
            memory_limit = 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory_limit = 4e9
    return _check_tol("memory_limit", memory_limit)


def _dense_bytes_per_point(N, itemsize):
    # J, A = J - I, A^T A, LAPACK's copy and the LU factors kept for chord steps, per point.
    return (6 * N * N + 16 * N) * itemsize


def _plan_jacobian(method, jacobian, N, dtype, opts, memory_limit, backend="cpu"):
    """'dense' or 'matrix_free' for this solve (see find_fixed_points' ``jacobian``)."""
    # Matrix-free: Newton-Krylov for newton / hybrid, matrix-free LM (CG on the damped normal
    # equations) for lm and the slow-manifold mode (lm / hybrid only).
    can_mf = method in ("newton", "hybrid", "lm")
    lm = _uses_lm(method, opts)
    if backend == "gpu":
        if not can_mf or jacobian == "dense":
            raise InvalidOptionError(
                f"argument 'backend': 'gpu' runs the matrix-free solvers (method 'newton', 'hybrid' or 'lm', "
                f"jacobian 'auto' or 'matrix_free'); got method={method!r}, jacobian={jacobian!r}; use "
                "backend='cpu' for the others"
            )
        return "matrix_free"
    if jacobian == "matrix_free":
        if not can_mf:
            raise InvalidOptionError(
                f"argument 'jacobian': 'matrix_free' works with method 'newton', 'hybrid' or 'lm', got "
                f"method={method!r}; use jacobian='dense' (or 'auto')"
            )
        return "matrix_free"
    if jacobian == "dense" or not can_mf:
        return "dense"
    too_big = _dense_bytes_per_point(N, dtype.itemsize) > _default_memory_limit(memory_limit)
    return "matrix_free" if (N >= (MATRIX_FREE_LM_MIN_N if lm else MATRIX_FREE_MIN_N) or too_big) else "dense"


# 'auto' on the CPU, where dense still fits (N <= DENSE_RETRY_MAX_N): Newton-Krylov from
# AUTO_PILOT_POINTS of the starts (at most AUTO_PILOT_MAXITER iterations), and the dense method
# instead where its GMRES needs more J v products per Newton iteration than a dense iteration is
# worth, about AUTO_DENSE_PRODUCTS * N^3 / (2 G H^2) (an LU of N^3 flops against a product's
# GEMM of 2 G H^2). Measured (one thread, products per iteration of the whole solve): vanilla
# tanh gain 2, N = 128, 256 starts: 224 against a break-even of 22, 1.0 s dense against 49 s
# matrix-free; N = 512: 102 against 90, 9.4 s against 25.9 s; gain 1.5, N = 512: 37, matrix-free
# 2.5x faster; random GRU-512 gain 3: 47 against 30, the same time; LSTM-256: 13 against 90,
# matrix-free 5x faster. Where the root preconditioner will apply (mixed precision, one input,
# 4 x PILOT_POINTS starts) the pilot runs without it and its count is held to twice the
# break-even (trained GRU-256: 12 per iteration in the pilot, 4.8 preconditioned).
AUTO_PILOT_POINTS = 16
AUTO_PILOT_MAXITER = 10
AUTO_PILOT_MIN_B = 64
AUTO_DENSE_PRODUCTS = 0.35
# An easy Newton step takes a few GMRES products plus two; where the break-even is below this
# the two paths take about the same time (random GRU-128, 64 starts: 0.04-0.06 s either way).
AUTO_MIN_BREAK_EVEN = 16.0


def _host_newton_krylov_fns(kernels, params, w):
    """(step, linearize_fn, forward_fn) of newton_krylov on a host backend: the Numba forward pass
    with its linearisation on 'cpu', the reference's on 'numpy' (no fused forward there)."""
    from ._linearize import forward_linearize_cpu, linearize, linearize_cpu

    cell, act = params.cell_code, params.nonlinearity_code

    def step(h, Xr):
        return kernels.step(cell, act, h, Xr, *w)

    if kernels.name == "cpu":
        return step, linearize_cpu, lambda h, Xr: forward_linearize_cpu(cell, act, h, Xr, *w)
    return step, linearize, None


def _auto_pilot(kernels, params, H0, X, method, opts, dtype, memory_limit, backend, batch_size):
    """'auto' chose matrix-free: a short Newton-Krylov pilot says whether dense is the cheaper
    (a dict for the metadata, or None where no pilot runs)."""
    from ._newton_krylov import newton_krylov

    B, N = H0.shape
    # Dense must be able to take the whole solve as asked: every point at once (batch_size None),
    # the chunks asked for, or at least one point per chunk ('auto'). A batch_size of another
    # kind is refused later, by _plan_chunks.
    fits = int(_default_memory_limit(memory_limit) // _dense_bytes_per_point(N, dtype.itemsize))
    sized = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1
    needed = 1 if batch_size == "auto" else (min(B, int(batch_size)) if sized else B)
    if (backend == "gpu" or _uses_lm(method, opts) or B < AUTO_PILOT_MIN_B or N > DENSE_RETRY_MAX_N
            or opts["maxiter"] == 0 or fits < needed):
        return None
    t0 = time.perf_counter()
    G = len(GATE_ORDER[params.cell])
    H = params.hidden_size
    preconditioned = (opts["mixed_precision"] and dtype == np.float64 and X.shape[0] == 1 and B >= 4 * PILOT_POINTS
                      and N <= PRECONDITION_MAX_N)
    worth = max(AUTO_DENSE_PRODUCTS * N ** 3 / (2.0 * G * H * H) * (2.0 if preconditioned else 1.0), AUTO_MIN_BREAK_EVEN)
    w = params.arrays(dtype)
    step, lin_fn, forward = _host_newton_krylov_fns(kernels, params, w)
    # An eighth of the starts at most (the pilot's solves are not kept): 8 of 64 .. 16 of 128+.
    pick = np.linspace(0, B - 1, max(AUTO_PILOT_POINTS // 2, min(AUTO_PILOT_POINTS, B // 8))).astype(int)
    # GMRES capped at a few times the break-even per step: past it the answer is dense anyway,
    # and a stagnating GMRES would make the pilot as slow as the solve it is to spare.
    pilot_opts = dict(opts, maxiter=min(opts["maxiter"], AUTO_PILOT_MAXITER), krylov_maxiter=int(8 * worth) + 1)
    _, _, nit, n_matvec = newton_krylov(
        step, w, params.cell_code, params.nonlinearity_code, H0[pick].astype(dtype, copy=False),
        _rows(X, pick).astype(dtype, copy=False), state_bounds(params), pilot_opts, restart=opts["gmres_restart"],
        method=method, linearize_fn=lin_fn, forward_fn=forward)
    per_iteration = float(n_matvec.sum()) / max(int(nit.sum()), 1)
    return {"points": int(len(pick)), "matvec": int(n_matvec.sum()), "matvec_per_iteration": round(per_iteration, 2),
            "dense_break_even": round(worth, 2), "chose": "dense" if per_iteration > worth else "matrix_free",
            "time_s": round(time.perf_counter() - t0, 4)}


def _uses_lm(method, opts) -> bool:
    """Whether the solve takes Levenberg-Marquardt steps only (lm, and hybrid in slow-manifold mode)."""
    return method == "lm" or (method == "hybrid" and opts["slow_ratio"] is not None)


def _plan_chunks(method, B, N, dtype, batch_size, memory_limit, *, mode="dense", restart=40, backend="cpu",
                 slow=False, lm=False):
    itemsize = dtype.itemsize
    if method == "adam":
        per_point = 16 * N * itemsize
    elif mode == "matrix_free" and lm:
        # CG's x, r, p, A p, the step, trial and model residuals, the gate coefficients (up to
        # 4 gates x 3) and ~12 work vectors.
        per_point = 40 * N * itemsize
    elif mode == "matrix_free":
        # GMRES basis (restart + 1 vectors), its rotated Hessenberg (restart^2), the gate
        # coefficients and ~16 work vectors.
        per_point = ((restart + 1 + 32) * N + restart * restart + 4 * restart) * itemsize
    else:
        per_point = _dense_bytes_per_point(N, itemsize)
    memory_limit = _default_memory_limit(memory_limit, backend)
    fits = int(memory_limit // per_point)
    if batch_size == "auto":
        if fits < 1:
            raise MemoryLimitError(_memory_message(method, N, per_point, 1, memory_limit, fits, mode, slow))
        return max(1, min(B, fits))
    if batch_size is None:
        if fits < B:
            raise MemoryLimitError(_memory_message(method, N, per_point, B, memory_limit, fits, mode, slow))
        return max(B, 1)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidOptionError(f"argument 'batch_size': got {batch_size!r}, expected a positive integer, 'auto' or None")
    if fits < min(batch_size, B):
        raise MemoryLimitError(_memory_message(method, N, per_point, min(batch_size, B), memory_limit, fits, mode, slow))
    return int(batch_size)


def _memory_message(method, N, per_point, B, limit, fits, mode="dense", slow=False):
    need = per_point * B
    text = (
        f"the {method!r} solver on {B} points of dimension N = {N} needs about {need / 2**30:.3g} GiB "
        f"({per_point / 2**20:.3g} MiB per point) but memory_limit is {limit / 2**30:.3g} GiB; "
    )
    lm = method == "lm" or (method == "hybrid" and slow)
    can_mf = method in ("newton", "hybrid", "lm")
    mf = f"jacobian='matrix_free' ({'matrix-free LM' if lm else 'Newton-Krylov'}, O(N) memory per point)"
    if fits >= 1:
        return text + (f"pass batch_size={fits} (or batch_size='auto') to solve in chunks (fastfp find / run: "
                       "--batch-size)" + (f", or {mf}" if mode == "dense" and can_mf else ""))
    if mode == "dense":
        return text + ("even one point does not fit: raise memory_limit" + (f", or use {mf}" if can_mf else "")
                       + (", or method='adam'" if not slow and method != "adam" else ""))
    return text + "even one point does not fit: raise memory_limit" + ("" if lm else " (or lower gmres_restart)")


# ------------------------------------------------------------------------------ shared helpers
def state_bounds(params):
    """Box that contains every fixed point of the cell: (lower, upper), each (N,).

    A root satisfies h = tanh(...) (vanilla), h = n (gru, ugrnn: (1 - z)(n - h) = 0 with z < 1) or
    h = o tanh(c) (lstm's h part), so |h_i| < 1; relu roots are >= 0; lstm's c part is free.
    Steps are clipped to this box: a near-singular J - I otherwise throws points into the
    saturated region |h| >> 1 where q is tiny but no root exists.
    """
    N, H = params.state_size, params.hidden_size
    lower, upper = np.full(N, -np.inf), np.full(N, np.inf)
    if params.cell == "vanilla" and params.nonlinearity == "relu":
        lower[:] = 0.0
    elif params.cell == "lstm":
        lower[:H], upper[:H] = -1.0, 1.0
    else:
        lower[:], upper[:] = -1.0, 1.0
    return lower, upper


def _clip(h, bounds):
    return np.clip(h, bounds[0].astype(h.dtype), bounds[1].astype(h.dtype))


def _evaluate(kernels, params, h, X):
    return kernels.step(params.cell_code, params.nonlinearity_code, h, X, *params.arrays(h.dtype))


def _rows(X, idx):
    return X if X.shape[0] == 1 else X[idx]


def _finish(kernels, params, H0, X, h, status, nit, opts, metadata):
    """Final residuals, q and ||grad q|| (via a VJP, no dense J) and the result object."""
    w = params.arrays(h.dtype)
    finite = np.isfinite(h).all(axis=1)
    status[~finite] = st.NONFINITE
    hs = np.where(finite[:, None], h, H0)  # evaluate somewhere finite; the status says what happened
    r, g = kernels.residual_grad(params.cell_code, params.nonlinearity_code, hs, X, *w)
    F = r + hs
    resid = np.abs(r).max(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        q = 0.5 * (r.astype(np.float64) ** 2).sum(axis=1)
    inputs = np.broadcast_to(X, (len(h), X.shape[1])).copy()
    fx = np.where(finite[:, None], F, np.nan)
    return FixedPoints(
        x=h, x0=H0.copy(), inputs=inputs, fx=fx,
        residual=np.where(finite, resid, np.inf), q=np.where(finite, q, np.inf),
        grad_norm=np.where(finite, np.abs(g).max(axis=1), np.inf),
        status=status.astype(np.int8), nit=nit, metadata=dict(metadata),
    )


def _chunk_progress(progress, lo, total):
    """Per-chunk hook for _report: counts the chunks before this one as finished."""
    return lambda n_done: progress(lo + n_done, total)


def _report(progress, method, it, n_active, n_total):
    if callable(progress):
        progress(n_total - n_active)
    elif progress:
        print(f"fastfp[{method}] iteration {it}: {n_active}/{n_total} points active", file=sys.stderr)


# ------------------------------------------------------------------------------ dense methods
def _lu_kernels(kernels):
    from . import _batched_lu

    suffix = "_ref" if kernels.name == "numpy" else "_cpu"
    return getattr(_batched_lu, "lu_factor" + suffix), getattr(_batched_lu, "lu_solve" + suffix)


class _Factors:
    """LU factors of J - I kept per point, so that later iterations can take chord steps.

    A Newton step factorises J - I at the current state; while the factors still shrink the
    residual by _CHORD_CONTRACTION per step (they do near a root: the chord iteration converges
    linearly at a rate proportional to the distance moved since the factorisation), a step costs
    one cell evaluation and two triangular solves instead of a Jacobian and a factorisation.

    With ``mixed`` in a float64 solve the factors are float32 (half the memory traffic; LAPACK's
    sgetrf is about twice as fast): the residual stays float64, so a step from float32 factors is an inexact
    Newton step whose relative error is about cond(J - I) * 6e-8, and the iteration still
    reaches float64 accuracy (mixed-precision iterative refinement). A point where a float32 step
    fails (singular in float32, or no decrease along it) is marked ``precise`` and refactorised in
    float64 from then on, so an ill-conditioned J - I costs a retry, never a wrong status.
    """

    def __init__(self, kernels, B, N, dtype, *, mixed):
        from ._batched_lu import PIVOT_DTYPE

        self.factor, self.solve = _lu_kernels(kernels)
        self.dtype = np.dtype(dtype)
        self.mixed = mixed and self.dtype == np.float64
        self.B, self.N = B, N
        self.LU = np.empty((B, N, N), dtype=np.float32 if self.mixed else self.dtype)
        self.LU_precise = None  # float64 factors, allocated when a point first needs them
        self.piv = np.zeros((B, N), dtype=PIVOT_DTYPE)
        self.valid = np.zeros(B, dtype=bool)
        self.precise = np.zeros(B, dtype=bool)
        self.count = 0  # factorisations of J - I

    def _store(self, precise):
        if not precise:
            return self.LU
        if self.LU_precise is None:
            self.LU_precise = np.empty((self.B, self.N, self.N), dtype=self.dtype)
        return self.LU_precise

    def _split(self, ids):
        if not self.mixed:
            return [(np.arange(len(ids)), False)]
        p = self.precise[ids]
        return [(np.flatnonzero(~p), False), (np.flatnonzero(p), True)]

    def _solve(self, r, ids):
        delta = np.empty_like(r)
        for sel, precise in self._split(ids):
            if len(sel) == 0:
                continue
            store, rows = self._store(precise), ids[sel]
            d = np.ascontiguousarray(-r[sel], dtype=store.dtype)
            split_rows(lambda lo, hi: self.solve(store, self.piv, rows[lo:hi], d[lo:hi]), len(rows))
            delta[sel] = d
        return delta

    def newton_direction(self, A, r, ids):
        """Factorise A (= J - I at points ids, left intact) into the store; delta = -A^-1 r."""
        ids = np.ascontiguousarray(ids, dtype=np.intp)
        self.count += len(ids)
        info = np.zeros(len(ids), dtype=np.int32)
        for sel, precise in self._split(ids):
            if len(sel) == 0:
                continue
            store, rows = self._store(precise), ids[sel]
            src = A if len(sel) == len(ids) else A[sel]
            parts = split_rows(lambda lo, hi: self.factor(src[lo:hi], store, self.piv, rows[lo:hi]), len(rows))
            info[sel] = np.concatenate(parts)
        delta = self._solve(r, ids)
        solved = (info == 0) & np.isfinite(delta).all(axis=1)
        delta[~solved] = 0.0
        self.valid[ids] = False  # valid again only where the full step is taken (_newton_step)
        return delta, solved

    def chord_direction(self, r, ids):
        return self._solve(r, np.ascontiguousarray(ids, dtype=np.intp))

    def retry_precise(self, ids, failed, A, r, delta):
        """Points whose float32 step failed (failed 1, 2 or 3) because of float32: marked precise,
        so their factors are float64 from now on. Returns the mask of those points (to be stepped
        again). A step that was too long or gave no decrease is blamed on float32 only if the
        float32 solve is inaccurate in float64, ||A delta + r|| > 1e-3 ||r||: far from a root a
        Newton step is often too long for reasons of its own, and retrying those in float64 would
        only double the cost (measured: 238 of 1024 points of a GRU-64 turned precise)."""
        if not self.mixed:
            return np.zeros(len(ids), dtype=bool)
        retry = ((failed == 1) | (failed == 2) | (failed == 3)) & ~self.precise[ids]
        check = np.flatnonzero(retry & (failed != 1))
        if len(check):
            lin = np.matmul(A[check], delta[check][:, :, None])[:, :, 0] + r[check]
            accurate = np.linalg.norm(lin, axis=1) <= 1e-3 * np.linalg.norm(r[check], axis=1)
            retry[check[accurate]] = False
        self.precise[ids[retry]] = True
        return retry


def _chord_steps(kernels, params, h, r, X, active, factors, bounds, nit, opts):
    """Chord steps for the active points holding factors; returns the points still to step.

    A step is kept where it shrinks ||r||_2 by _CHORD_CONTRACTION (and stays finite); the other
    points drop their factors and take a fresh step in the same iteration.
    """
    has = factors.valid[active]
    if not has.any():
        return active
    ids = active[has]
    ha, ra = h[ids], r[ids]
    delta = factors.chord_direction(ra, ids)
    trial = _clip(ha + delta, bounds)
    r_trial = _evaluate(kernels, params, trial, _rows(X, ids)) - trial
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.sqrt(np.einsum("bi,bi->b", r_trial, r_trial) / np.einsum("bi,bi->b", ra, ra))
        good = np.isfinite(r_trial).all(axis=1) & (ratio <= _CHORD_CONTRACTION)
        # Linear convergence at this ratio: steps still needed to reach the tolerance. Past
        # _CHORD_MAX_STEPS a fresh factorisation (quadratic convergence again) is cheaper.
        tol = opts["atol"] + opts["rtol"] * np.abs(trial).max(axis=1)
        left = np.log(tol / np.abs(r_trial).max(axis=1)) / np.log(ratio)
    kept = ids[good]
    h[kept], r[kept] = trial[good], r_trial[good]
    nit[kept] += 1
    factors.valid[ids[~good]] = False
    factors.valid[ids[good & (left > _CHORD_MAX_STEPS)]] = False
    return np.concatenate([active[~has], ids[~good]])


# ------------------------------------------------------------------------------ dense methods
def _dense(kernels, params, H0, X, method, opts, progress, metadata):
    if kernels.name == "cpu" and (method == "newton" or (method == "hybrid" and opts["slow_ratio"] is None)):
        return _dense_points(kernels, params, H0, X, method, opts, progress, metadata)
    cell, act = params.cell_code, params.nonlinearity_code
    w = params.arrays(H0.dtype)
    B, N = H0.shape
    diag = np.arange(N)
    bounds = state_bounds(params)
    h = _clip(H0, bounds)  # no root lies outside the box; starting inside keeps steps short
    status = np.full(B, st.RUNNING, dtype=np.int64)
    nit = np.zeros(B, dtype=np.int64)
    mu = np.full(B, np.nan)  # LM damping, initialised from A^T A on first use
    nu = np.full(B, 2.0)
    r = _evaluate(kernels, params, h, X) - h
    # Slow-manifold mode: damping never falls below slow_ratio^2, so a step moves a direction
    # with singular value s of J - I by the fraction s^2 / (s^2 + mu): fast directions settle,
    # slow ones (s << slow_ratio) barely move, and points stay spread along the manifold.
    mu_floor = opts["slow_ratio"] ** 2 if opts["slow_ratio"] is not None else 0.0
    newton_steps = method == "newton" or (method == "hybrid" and opts["slow_ratio"] is None)
    chord = newton_steps and opts["chord"]
    factors = _Factors(kernels, B, N, H0.dtype, mixed=opts["mixed_precision"]) if newton_steps else None
    active = np.arange(B)
    J_buffer = np.empty((B, N, N), dtype=H0.dtype)  # reused: the active set only shrinks
    for it in range(opts["maxiter"] + 1):
        # 1. Checks on the residual alone, before any Jacobian is spent on a finished point.
        ra_all = r[active]
        done = _classify_residual(h[active], ra_all, 0.5 * np.einsum("bi,bi->b", ra_all, ra_all), opts)
        if (done >= 0).any():
            status[active[done >= 0]] = done[done >= 0]
            active = active[done < 0]
        if len(active) == 0:
            break
        # 2. Points holding factors try a chord step; those it serves are done for this iteration.
        last = it == opts["maxiter"]
        work = _chord_steps(kernels, params, h, r, X, active, factors, bounds, nit, opts) if chord and not last else active
        if len(work) == 0:
            _report(progress, method, it, len(active), B)
            continue
        # 3. A = J - I and grad q = A^T r on the remaining points; stationary ones stop.
        ha, ra = h[work], r[work]
        qa = 0.5 * np.einsum("bi,bi->b", ra, ra)
        Xa = _rows(X, work)
        A = kernels.jacobian(cell, act, ha, Xa, *w, out=J_buffer[: len(work)])
        A[:, diag, diag] -= 1.0
        g = np.matmul(ra[:, None, :], A)[:, 0, :]
        slow = _is_slow(ra, g, opts)
        if slow.any():
            status[work[slow]] = st.SLOW_POINT
            keep = ~slow
            work, ha, ra, qa, A, g = work[keep], ha[keep], ra[keep], qa[keep], A[keep], g[keep]
            Xa = _rows(X, work)
        if last:
            status[work] = st.MAX_ITER
            break
        _report(progress, method, it, len(active), B)
        if len(work) == 0:
            active = active[status[active] == st.RUNNING]
            continue
        # 4. One step per point.
        nit[work] += 1
        if method == "newton":
            new_h, new_r, failed = _newton_step(kernels, params, ha, ra, Xa, A, qa, bounds, factors=factors, ids=work)
            status[work[failed == 1]] = st.SINGULAR
            nd = np.flatnonzero(failed == 2)  # no decrease along the Newton direction
            status[work[nd]] = _stall_status(np, ha[nd], ra[nd], g[nd], bounds[0], bounds[1], opts)
        else:
            new_h, new_r = ha.copy(), ra.copy()
            lm_rows = np.ones(len(work), bool)
            if newton_steps:
                # Newton with a short backtracking search where it is trustworthy; the rest
                # (singular, too long, no decrease) take the LM step.
                n_h, n_r, failed = _newton_step(kernels, params, ha, ra, Xa, A, qa, bounds,
                                                max_step=opts["max_step"], max_halvings=4, factors=factors, ids=work)
                take = failed == 0
                new_h[take], new_r[take] = n_h[take], n_r[take]
                mu[work[take]] = mu[work[take]] / 3.0  # keep LM eager near roots
                nu[work[take]] = 2.0
                lm_rows = ~take
            if lm_rows.any():
                sub = np.flatnonzero(lm_rows)
                h_lm, r_lm, stuck, pinned = _lm_step(kernels, params, ha[sub], ra[sub], _rows(Xa, sub), A[sub],
                                                     g[sub], qa[sub], mu, nu, work[sub], bounds,
                                                     opts["max_step"], mu_floor)
                new_h[sub], new_r[sub] = h_lm, r_lm
                # Damping blew up without progress: a slow point if q is numerically stationary
                # (||grad q|| tiny next to ||r||); pinned to the root box with q stationary on the
                # free coordinates, it is heading out of the region that holds every root
                # (DIVERGED); otherwise no step can decrease q here (NO_DECREASE).
                stuck_ids = sub[stuck]
                status[work[stuck_ids]] = _stall_status(np, ha[stuck_ids], ra[stuck_ids], g[stuck_ids],
                                                        bounds[0], bounds[1], opts)
        h[work], r[work] = new_h, new_r
        active = active[status[active] == st.RUNNING]
    status[status == st.RUNNING] = st.MAX_ITER
    if factors is not None:
        metadata = {**metadata, "n_factorizations": int(factors.count)}
    if chord:
        metadata = {**metadata, "chord_contraction": _CHORD_CONTRACTION, "chord_max_steps": _CHORD_MAX_STEPS}
    if factors is not None and factors.mixed:
        metadata = {**metadata, "precise_factors": int(factors.precise.sum())}
    return _finish(kernels, params, H0, X, h, status, nit, opts, metadata)


def _dense_points(kernels, params, H0, X, method, opts, progress, metadata):
    """``_dense`` for newton / hybrid on the CPU backend: each point runs all of its iterations
    (Newton, chord, hybrid's LM steps) inside one compiled kernel (``_newton_points``), the points
    spread over threads. The algorithm is the vectorised loop of ``_dense``, which
    ``backend='numpy'`` runs and the tests compare this one with."""
    from ._newton_points import FLAGS, TOLS, newton_points_cpu

    w_ih, w_hh, b_ih, b_hh = params.arrays(H0.dtype)
    B = len(H0)
    bounds = state_bounds(params)
    lower, upper = (np.ascontiguousarray(b, dtype=H0.dtype) for b in bounds)
    h = np.ascontiguousarray(_clip(H0, bounds))  # no root lies outside the box
    r = np.ascontiguousarray(_evaluate(kernels, params, h, X) - h)
    ax = np.ascontiguousarray(X @ w_ih.T + b_ih)
    status = np.full(B, st.RUNNING, dtype=np.int64)
    iters = np.zeros(B, dtype=np.int64)
    nit = np.zeros(B, dtype=np.int64)
    n_factor = np.zeros(B, dtype=np.int64)
    precise = np.zeros(B, dtype=bool)
    mu = np.full(B, np.nan)
    nu = np.full(B, 2.0)
    hybrid = method == "hybrid"
    values = {
        "atol": opts["atol"], "rtol": opts["rtol"], "tol_q": np.nan if opts["tol_q"] is None else opts["tol_q"],
        "max_norm": opts["max_norm"], "gtol": opts["gtol"], "max_step": opts["max_step"] if hybrid else np.inf,
        "armijo": _ARMIJO, "chord_contraction": _CHORD_CONTRACTION, "mu_max": _MU_MAX,
        "stuck_rtol": opts["stuck_rtol"], "maxiter": opts["maxiter"], "max_halvings": 4 if hybrid else _MAX_HALVINGS, "chord": opts["chord"],
        "mixed": opts["mixed_precision"], "lm_fallback": hybrid, "chord_max_steps": _CHORD_MAX_STEPS,
    }
    tols = np.array([values[k] for k in TOLS], dtype=np.float64)
    flags = np.array([values[k] for k in FLAGS], dtype=np.int64)
    rows = np.arange(B)
    cell, act = params.cell_code, params.nonlinearity_code
    w_hh, b_hh = np.ascontiguousarray(w_hh), np.ascontiguousarray(b_hh)

    # With progress, the points go in waves so that the main thread can report between them;
    # without, in one (each wave ends on its slowest chunk).
    wave = max(256, -(-B // 8)) if progress else max(B, 1)
    for lo in range(0, B, wave):
        part = rows[lo:lo + wave]
        # The kernel's own BLAS calls (LM's A^T A, reset-before's Jacobian GEMM) must not start
        # BLAS threads inside these threads (found in review: 2-10x slower at N >= 128).
        with blas_threads(1):
            split_rows(lambda a, b: newton_points_cpu(cell, act, h, r, ax, w_hh, b_hh, lower, upper, part[a:b],
                                                      iters,
                                                      nit, n_factor, status, precise, mu, nu, tols, flags),
                       len(part), chunks_per_thread=16)  # small chunks: points differ in cost (LM phases)
        _report(progress, method, int(iters[part].max()), B - lo - len(part), B)
    status[status == st.RUNNING] = st.MAX_ITER  # none: the kernel stops every point
    metadata = {**metadata, "n_factorizations": int(n_factor.sum())}
    if opts["chord"]:
        metadata = {**metadata, "chord_contraction": _CHORD_CONTRACTION, "chord_max_steps": _CHORD_MAX_STEPS}
    if opts["mixed_precision"] and H0.dtype == np.float64:
        metadata = {**metadata, "precise_factors": int(precise.sum())}
    return _finish(kernels, params, H0, X, h, status, nit, opts, metadata)


def _classify_residual(h, r, q, opts):
    """Status from the residual alone (RUNNING = -1 where the point goes on); earlier rules win."""
    out = np.full(len(h), st.RUNNING, dtype=np.int64)
    finite = np.isfinite(r).all(axis=1) & np.isfinite(h).all(axis=1)
    hnorm = np.abs(h).max(axis=1)
    rnorm = np.abs(r).max(axis=1)
    rules = [
        (~finite, st.NONFINITE),
        (rnorm <= opts["atol"] + opts["rtol"] * hnorm, st.CONVERGED),
    ]
    if opts["tol_q"] is not None:
        rules.append((q <= opts["tol_q"], st.Q_TOLERANCE))
    rules.append((hnorm > opts["max_norm"], st.DIVERGED))
    for mask, code in reversed(rules):
        out[mask] = code
    return out


def stationary_rtol(dtype) -> float:
    """||grad q||_inf / ||r||_inf below which a point where no step decreases q counts as stationary.

    Where even a tiny damped step fails to decrease q, the gradient left is rounding noise of
    g = (J - I)^T r, which grows with the working precision: 1e-6 in float64 (as before), and
    10 sqrt(eps) = 3.5e-3 in float32, whose stalled slow points sit at ratios of 1e-5 to 1e-3
    (the float64 search from the same starts reaches the same points, 1e-4 away).
    """
    return max(1e-6, 10.0 * float(np.sqrt(np.finfo(np.dtype(dtype)).eps)))


def _stall_status(xp, h, r, g, lower, upper, opts):
    """Status of points where no step decreased q: SLOW_POINT where q is numerically stationary
    (||grad q||_inf <= max(gtol, stuck_rtol ||r||_inf)); DIVERGED where coordinates are pressed
    against the root box with q decreasing outward and q is stationary on the others (the only way
    down leads out of the region of roots); otherwise NO_DECREASE (q could still go down inside
    the box, along the face). The dense, matrix-free and float32-recheck paths share it (the Numba
    kernel mirrors it), so one stall gets one label whichever path stopped it."""
    tol = xp.maximum(opts["gtol"], opts["stuck_rtol"] * xp.abs(r).max(axis=1))
    stationary = xp.abs(g).max(axis=1) <= tol
    pinned = ((h <= lower) & (g > 0)) | ((h >= upper) & (g < 0))
    face_stationary = xp.abs(xp.where(pinned, 0.0, g)).max(axis=1) <= tol
    at_box = pinned.any(axis=1) & face_stationary
    return xp.where(stationary, st.SLOW_POINT, xp.where(at_box, st.DIVERGED, st.NO_DECREASE))


def _is_slow(r, g, opts):
    """Slow points: q stationary (||grad q||_inf <= gtol) or, in slow-manifold mode, the
    remaining speed lies along slow directions (||grad q||_2 <= slow_ratio ||r||_2) and is below
    slow_speed. In the namespace of r (the matrix-free LM runs it on the device)."""
    xp = _xp(r)
    slow = xp.abs(g).max(axis=1) <= opts["gtol"]
    if opts["slow_ratio"] is not None:
        g2 = xp.sqrt(xp.einsum("bi,bi->b", g, g))
        r2 = xp.sqrt(xp.einsum("bi,bi->b", r, r))
        scale = opts["speed_scale"]
        speed = xp.abs(r if scale is None else r / xp.asarray(scale, dtype=r.dtype)).max(axis=1)
        slow |= (g2 <= opts["slow_ratio"] * r2) & (speed <= opts["slow_speed"])
    return slow


def _newton_step(kernels, params, h, r, X, A, q, bounds, *, factors, ids, max_step=np.inf,
                 max_halvings=_MAX_HALVINGS):
    """Newton direction with per-point backtracking on q.

    J - I (``A``) is factorised into ``factors`` (a :class:`_Factors`) at the points ``ids``; the
    factors stay valid for chord steps where the full step was taken.
    failed: 0 accepted, 1 singular, 2 no decrease within max_halvings, 3 step longer than
    max_step * max(1, ||h||_inf) (only checked when max_step is finite). A point whose step
    from float32 factors fails (1, 2 or 3) is stepped again at once from float64 factors (_Factors).
    """
    delta, solved = factors.newton_direction(A, r, ids)
    failed = np.where(solved, 0, 1)
    if np.isfinite(max_step):
        wild = solved & (np.abs(delta).max(axis=1) > max_step * np.maximum(1.0, np.abs(h).max(axis=1)))
        failed[wild] = 3
    new_h, new_r = h.copy(), r.copy()
    pending = np.flatnonzero(failed == 0)
    alpha = 1.0
    for halving in range(max_halvings + 1):
        if len(pending) == 0:
            break
        trial = _clip(h[pending] + alpha * delta[pending], bounds)
        r_trial = _evaluate(kernels, params, trial, _rows(X, pending)) - trial
        q_trial = 0.5 * np.einsum("bi,bi->b", r_trial, r_trial)
        accept = np.isfinite(q_trial) & (q_trial <= (1 - 2 * _ARMIJO * alpha) * q[pending])
        idx = pending[accept]
        new_h[idx], new_r[idx] = trial[accept], r_trial[accept]
        if halving == 0:
            factors.valid[ids[idx]] = True  # a full step: near enough for the factors to serve again
        pending = pending[~accept]
        alpha *= 0.5
    failed[pending] = 2
    retry = np.flatnonzero(factors.retry_precise(ids, failed, A, r, delta))
    if len(retry):  # the same step again at once, from float64 factors
        h2, r2, f2 = _newton_step(kernels, params, h[retry], r[retry], _rows(X, retry), A[retry], q[retry], bounds,
                                  max_step=max_step, max_halvings=max_halvings, factors=factors, ids=ids[retry])
        new_h[retry], new_r[retry], failed[retry] = h2, r2, f2
    return new_h, new_r, failed


def _lm_step(kernels, params, h, r, X, A, g, q, mu, nu, ids, bounds, max_step, mu_floor):
    """One Levenberg-Marquardt trial per point (Nielsen's update of mu, nu in place at ids).

    Returns the new states/residuals (unchanged where the step was rejected) and whether the
    damping has grown past _MU_MAX (no step decreases q: a stationary point of q)."""
    # Coordinates pressed against the root box with q decreasing outward are held fixed: the step
    # is solved on the free coordinates only (a projected LM step), so the clip cannot eat it.
    pinned = ((h <= bounds[0]) & (g > 0)) | ((h >= bounds[1]) & (g < 0))
    free = (~pinned).astype(A.dtype)
    AtA = np.matmul(np.swapaxes(A, 1, 2), A)
    AtA *= free[:, :, None] * free[:, None, :]
    m = mu[ids]
    fresh = ~np.isfinite(m)
    if fresh.any():
        m[fresh] = 1e-3 * np.einsum("bii->bi", AtA[fresh]).max(axis=1)
        m[fresh] = np.maximum(m[fresh], 1e-12)
    m = np.maximum(m, mu_floor)
    n = AtA.shape[1]
    idx = np.arange(n)
    AtA[:, idx, idx] += m[:, None] + pinned
    delta, solved = batched_solve(AtA, -g * free)
    trial = _clip(h + delta, bounds)
    step = trial - h
    r_trial = _evaluate(kernels, params, trial, X) - trial
    q_trial = 0.5 * np.einsum("bi,bi->b", r_trial, r_trial)
    # Decrease predicted by the linear model r + A s at the step actually taken (clipped or not).
    r_model = r + np.matmul(A, step[:, :, None])[:, :, 0]
    predicted = q - 0.5 * np.einsum("bi,bi->b", r_model, r_model)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (q - q_trial) / predicted
    short = np.abs(step).max(axis=1) <= max_step
    accept = solved & short & np.isfinite(q_trial) & (predicted > 0) & (rho > 0)
    v = nu[ids]
    m_new = np.where(accept, m * np.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), m * v)
    v_new = np.where(accept, 2.0, v * 2.0)
    mu[ids], nu[ids] = np.maximum(m_new, mu_floor), v_new
    new_h = np.where(accept[:, None], trial, h)
    new_r = np.where(accept[:, None], r_trial, r)
    stuck = ~accept & (m_new > _MU_MAX)
    return new_h, new_r, stuck, pinned


# ------------------------------------------------------------------------------ matrix-free
def _matrix_free(kernels, params, H0, X, method, opts, progress, metadata):
    if _uses_lm(method, opts):
        return _matrix_free_lm(kernels, params, H0, X, opts, progress, metadata)
    from ._newton_krylov import newton_krylov

    cell, act = params.cell_code, params.nonlinearity_code
    w = params.arrays(H0.dtype)
    if kernels.name == "gpu":
        # Everything stays on the device; only the final states come back for _finish.
        import cupy

        from ._cells_gpu import device_cells

        dev = device_cells()
        wd = tuple(cupy.asarray(a) for a in w)
        h, status, nit, n_matvec = newton_krylov(
            lambda h, Xr: dev.step(cell, act, h, Xr, *wd), wd, cell, act, cupy.asarray(H0), cupy.asarray(X),
            state_bounds(params), opts, restart=opts["gmres_restart"], progress=progress, method=method,
            linearize_fn=dev.linearize, forward_fn=lambda h, Xr: dev.forward(cell, act, h, Xr, *wd),
        )
        h, status, nit, n_matvec = (cupy.asnumpy(a) for a in (h, status, nit, n_matvec))
    else:
        step, lin_fn, forward = _host_newton_krylov_fns(kernels, params, w)
        pre, pilot_matvec = _root_preconditioner(kernels, params, H0, X, opts, step, w, lin_fn, forward)

        def solve(lo, hi):
            return newton_krylov(step, w, cell, act, H0[lo:hi], X if X.shape[0] == 1 else X[lo:hi],
                                 state_bounds(params), opts, restart=opts["gmres_restart"], progress=progress,
                                 method=method, linearize_fn=lin_fn, preconditioner=pre, forward_fn=forward)

        if not progress and len(H0) >= 2 * _MF_MIN_PER_THREAD:
            # One share of the points per thread, each with single-threaded BLAS: the GEMMs run
            # as fast per core, and the element-wise passes and the Python between them, serial
            # in one solve, overlap (measured GRU-256, 1024 points: 0.68 -> 0.53 s on 2 cores).
            # The points are independent, so the result is the same as one solve's.
            with blas_threads(1):
                parts = split_rows(solve, len(H0), min_rows=_MF_MIN_PER_THREAD, chunks_per_thread=1)
            h, status, nit, n_matvec = (np.concatenate([p[k] for p in parts]) for k in range(4))
        else:
            h, status, nit, n_matvec = solve(0, len(H0))
        metadata = dict(metadata, preconditioner_roots=0 if pre is None else len(pre.roots),
                        pilot_matvec=int(pilot_matvec))
    # The pilot's products count too (the preconditioner's N x N products do not: they are not J v).
    metadata = dict(metadata, n_matvec=int(n_matvec.sum()) + metadata.get("pilot_matvec", 0))
    return _finish(kernels, params, H0, X, h, status, nit, opts, metadata)


def _matrix_free_lm(kernels, params, H0, X, opts, progress, metadata):
    """Matrix-free LM (``_lm_krylov``): method 'lm' and the slow-manifold mode without N x N matrices."""
    from ._lm_krylov import lm_krylov

    cell, act = params.cell_code, params.nonlinearity_code
    w = params.arrays(H0.dtype)
    if kernels.name == "gpu":
        import cupy

        from ._cells_gpu import device_cells

        dev = device_cells()
        wd = tuple(cupy.asarray(a) for a in w)
        out = lm_krylov(lambda h, Xr: dev.step(cell, act, h, Xr, *wd), wd, cell, act, cupy.asarray(H0),
                        cupy.asarray(X), state_bounds(params), opts, progress=progress, linearize_fn=dev.linearize)
        h, status, nit, n_matvec = (cupy.asnumpy(a) for a in out)
    else:
        from ._linearize import linearize, linearize_cpu

        lin_fn = linearize_cpu if kernels.name == "cpu" else linearize

        def step(h, Xr):
            return kernels.step(cell, act, h, Xr, *w)

        pre, pilot_matvec = _lm_preconditioner(kernels, params, H0, X, opts, step, w, lin_fn)

        def solve(lo, hi):
            return lm_krylov(step, w, cell, act, H0[lo:hi], X if X.shape[0] == 1 else X[lo:hi], state_bounds(params),
                             opts, progress=progress, linearize_fn=lin_fn, preconditioner=pre)

        if not progress and len(H0) >= 2 * _MF_MIN_PER_THREAD:
            with blas_threads(1):  # one share of the points per thread, as the Newton-Krylov path
                parts = split_rows(solve, len(H0), min_rows=_MF_MIN_PER_THREAD, chunks_per_thread=1)
            h, status, nit, n_matvec = (np.concatenate([p[k] for p in parts]) for k in range(4))
        else:
            h, status, nit, n_matvec = solve(0, len(H0))
        metadata = dict(metadata, preconditioner_points=0 if pre is None else len(pre.roots),
                        pilot_matvec=int(pilot_matvec))
    metadata = dict(metadata, n_matvec=int(n_matvec.sum()) + metadata.get("pilot_matvec", 0))
    return _finish(kernels, params, H0, X, h, status, nit, opts, metadata)


# Root preconditioner of the matrix-free hybrid: a pilot solve of this many starts finds roots;
# measured on the trained GRU-256 (1024 starts): 62k J v products -> 25k with the pilot's (plus
# one N x N product with a root's inverse per GMRES iteration), 0.94 -> 0.62 s. Nearest
# root's inverse for every point, however far (a radius of 0.05 / 0.2 / 1 measured 35k / 29k / 24k
# products): far from every root it is still a better preconditioner than none on these networks.
# Each root costs a dense N x N Jacobian and inverse and its O(N^3) inversion: up to
# PRECONDITION_MAX_ROOTS of them (fewer where memory is short), and only up to PRECONDITION_MAX_N.
PILOT_POINTS = 32
LM_PILOT_MAXITER = 10
LM_PILOT_POINTS = 16  # trained GRU-256, 256 starts: a 32-point pilot cost 47 of 104 products per point; structured GRU-512: an 8-point pilot found 4 points, 103k products against 47k
PRECONDITION_RADIUS = np.inf
PRECONDITION_MAX_N = 1024
PRECONDITION_MAX_ROOTS = 16
PRECONDITION_MAX_COND = 1e6  # 1-norm condition number of J - I: float32 keeps ~10 correct bits there
_MF_MIN_PER_THREAD = 128


def _root_preconditioner(kernels, params, H0, X, opts, step, w, lin_fn, forward):
    """(RootPreconditioner or None, J v products of the pilot) from a pilot solve of PILOT_POINTS
    of the starts: for mixed-precision matrix-free solves with one shared input, at least
    4 x PILOT_POINTS points and N <= PRECONDITION_MAX_N; None when it does not apply or the pilot
    finds no root where J - I is well conditioned enough for a float32 preconditioner."""
    from ._newton_krylov import RootPreconditioner, newton_krylov

    B, N = H0.shape
    if not opts["mixed_precision"] or X.shape[0] != 1 or B < 4 * PILOT_POINTS or N > PRECONDITION_MAX_N:
        return None, 0
    # Roots cost a float64 Jacobian, its inverse and a float32 copy (20 N^2 bytes): at most a
    # tenth of the memory the solver may use by default.
    max_roots = min(PRECONDITION_MAX_ROOTS, int(0.1 * _default_memory_limit(None) // (20 * N * N)))
    pick = np.linspace(0, B - 1, PILOT_POINTS).astype(int)
    h, status, _, n_matvec = newton_krylov(step, w, params.cell_code, params.nonlinearity_code, H0[pick], X,
                                           state_bounds(params), opts, restart=opts["gmres_restart"],
                                           linearize_fn=lin_fn, forward_fn=forward)
    spent = int(n_matvec.sum())
    distinct = []
    for root in h[status == st.CONVERGED]:  # at most PILOT_POINTS of them
        if len(distinct) < max_roots and all(np.abs(root - o).max() > 1e-6 for o in distinct):
            distinct.append(root)
    if not distinct:
        return None, spent
    roots = np.array(distinct)
    A = kernels.jacobian(params.cell_code, params.nonlinearity_code, roots, X, *w)
    A[:, np.arange(N), np.arange(N)] -= 1.0
    keep, inverses = [], []
    for k in range(len(roots)):
        # Near-singular J - I (a root on the edge of a bifurcation) makes a float32 inverse mostly
        # rounding; GMRES would stall on it and finish in float64 (found in review).
        try:
            inv = np.linalg.inv(A[k])
        except np.linalg.LinAlgError:
            continue
        if np.isfinite(inv).all() and np.linalg.norm(A[k], 1) * np.linalg.norm(inv, 1) <= PRECONDITION_MAX_COND:
            keep.append(k)
            inverses.append(inv.astype(np.float32))
    if not keep:
        return None, spent
    return RootPreconditioner(roots[keep], np.array(inverses), PRECONDITION_RADIUS), spent


def _lm_preconditioner(kernels, params, H0, X, opts, step, w, lin_fn):
    """(RootPreconditioner or None, J v products of the pilot) for the matrix-free LM: a pilot LM
    run of LM_PILOT_POINTS of the starts for at most LM_PILOT_MAXITER iterations, and at up to
    PRECONDITION_MAX_ROOTS of its distinct finite end points the float32 inverse of the damped normal matrix
    A^T A + mu0 I (A = J - I; mu0 the damping floor slow_ratio^2, else 1e-3 max diag A^T A, the
    dense LM's first damping). For one shared input, at least 4 x PILOT_POINTS points and
    N <= PRECONDITION_MAX_N, as the root preconditioner; None when none applies.

    Measured on the trained GRU-256 at 'the' (256 starts, slow_ratio 0.05): CG iterations per LM
    step 25 -> 5 on average, J v products 64.7k -> 18.2k with the pilot's, the same plane of slow
    points found (bench/RESULTS-krylov.md)."""
    from ._lm_krylov import lm_krylov
    from ._newton_krylov import RootPreconditioner

    B, N = H0.shape
    if X.shape[0] != 1 or B < 4 * PILOT_POINTS or N > PRECONDITION_MAX_N or opts["maxiter"] == 0:
        return None, 0
    # Each point costs a float64 Jacobian, normal matrix and inverse and a float32 copy: at most
    # a tenth of the memory the solver may use by default.
    max_points = min(PRECONDITION_MAX_ROOTS, int(0.1 * _default_memory_limit(None) // (28 * N * N)))
    pick = np.linspace(0, B - 1, LM_PILOT_POINTS).astype(int)
    # The centres need only lie near where the points go, not on it: a few LM iterations take the
    # pilot there (its hard starts otherwise cost more small-batch products than the main solve).
    pilot_opts = dict(opts, maxiter=min(opts["maxiter"], LM_PILOT_MAXITER))
    h, status, _, n_matvec = lm_krylov(step, w, params.cell_code, params.nonlinearity_code, H0[pick], X,
                                       state_bounds(params), pilot_opts, linearize_fn=lin_fn)
    spent = int(n_matvec.sum())
    distinct = []
    for point in h[np.isin(status, (st.SLOW_POINT, st.CONVERGED, st.MAX_ITER)) & np.isfinite(h).all(axis=1)]:
        if len(distinct) < max_points and all(np.abs(point - o).max() > 1e-6 for o in distinct):
            distinct.append(point)
    if not distinct:
        return None, spent
    points = np.array(distinct)
    A = kernels.jacobian(params.cell_code, params.nonlinearity_code, points, X, *w).astype(np.float64)
    A[:, np.arange(N), np.arange(N)] -= 1.0
    normal = np.matmul(np.swapaxes(A, 1, 2), A)
    floor = opts["slow_ratio"] ** 2 if opts["slow_ratio"] is not None else 0.0
    keep, inverses = [], []
    for k in range(len(points)):
        mu0 = floor if floor > 0 else 1e-3 * float(normal[k].diagonal().max())
        M = normal[k] + mu0 * np.eye(N)
        try:
            inv = np.linalg.inv(M)
        except np.linalg.LinAlgError:
            continue
        if np.isfinite(inv).all() and np.linalg.norm(M, 1) * np.linalg.norm(inv, 1) <= PRECONDITION_MAX_COND:
            inv32 = inv.astype(np.float32)
            keep.append(k)
            inverses.append(0.5 * (inv32 + inv32.T))  # exactly symmetric, as CG's M^-1 must be
    if not keep:
        return None, spent
    return RootPreconditioner(points[keep], np.array(inverses), PRECONDITION_RADIUS), spent


# ------------------------------------------------------------------------------ Adam
def _adam(kernels, params, H0, X, method, opts, progress, metadata):
    """Adam on mean q: FixedPointFinder-Torch's schedule (ReduceLROnPlateau x0.95, patience 2) and
    stop rule (every q < tol_q, tested before each step), or renn's (constant rate; mean q <= tol_q,
    tested after the step, which is kept)."""
    cell, act = params.cell_code, params.nonlinearity_code
    w = params.arrays(H0.dtype)
    B = len(H0)
    h = H0.copy()
    m = np.zeros_like(h)
    v = np.zeros_like(h)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lr = opts["adam_lr"]
    best, bad = np.inf, 0
    prev = None
    it = 0
    stopped_early = False
    renn = opts["adam_stop"] == "mean"
    for it in range(1, opts["maxiter"] + 1):
        r, grad = kernels.residual_grad(cell, act, h, X, *w)
        # q in float64 whatever the dtype: the stop rules below and _finish's statuses must agree.
        q = 0.5 * np.einsum("bi,bi->b", r, r, dtype=np.float64)
        loss = float(q.mean()) if B else 0.0
        if not np.isfinite(loss):
            stopped_early = True
            it -= 1
            break  # the per-point statuses below say which points went non-finite
        # FixedPointFinder tests before the step; renn (adam_stop='mean') after it, below.
        if (not renn and (q < opts["tol_q"]).all()) or (prev is not None and abs(loss - prev) < opts["tol_dq"] * lr):
            stopped_early = True
            it -= 1
            break
        prev = loss
        grad /= B  # d mean(q) / dh
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        mhat = m / (1 - beta1 ** it)
        vhat = v / (1 - beta2 ** it)
        h = h - lr * mhat / (np.sqrt(vhat) + eps)
        if renn and loss <= opts["tol_q"]:
            # renn's optimize: the loss of the state before this step is tested after the step
            # is taken, and the stepped state is returned.
            stopped_early = True
            break
        if opts["adam_schedule"] == "plateau":
            if loss < best * (1 - 1e-4):
                best, bad = loss, 0
            else:
                bad += 1
                if bad > 2:
                    lr *= 0.95
                    bad = 0
        if progress and not callable(progress) and it % 100 == 0:
            print(f"fastfp[adam] iteration {it}: mean q {loss:.3e}, lr {lr:.3g}", file=sys.stderr)
    status = np.full(B, st.MAX_ITER, dtype=np.int64)
    nit = np.full(B, it, dtype=np.int64)
    result = _finish(kernels, params, H0, X, h, status, nit, opts, metadata)
    s = result.status
    hnorm = np.abs(result.x).max(axis=1)
    running = s == st.MAX_ITER
    if stopped_early:
        s[running] = st.BATCH_STOPPED  # overridden below where a point met a tolerance itself
    s[running & ~np.isfinite(result.q)] = st.NONFINITE
    s[running & (hnorm > opts["max_norm"])] = st.DIVERGED
    s[running & (result.q <= opts["tol_q"])] = st.Q_TOLERANCE
    converged = running & (result.residual <= opts["atol"] + opts["rtol"] * hnorm)
    s[converged] = st.CONVERGED
    # Adam steps are not held to the box that holds every root: out there a gate saturated to
    # exactly 1.0 in floating point makes F(h) == h without a root (|h| ~ 5e6 was seen at a huge
    # learning rate), so a "root" outside the box is none. A converged point may lie outside by
    # its tolerance (a root at a saturated unit's h = 1, reached from above) and rounding.
    lower, upper = state_bounds(params)
    eps = np.finfo(result.x.dtype).eps
    slack = opts["atol"] + (opts["rtol"] + 16 * eps) * np.maximum(1.0, np.abs(result.x))
    outside = ((result.x < lower - slack) | (result.x > upper + slack)).any(axis=1)
    s[converged & outside] = st.DIVERGED
    return result
