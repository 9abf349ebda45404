"""Per-point solver status: one table shared by the kernels (module-level ints, which Numba
freezes at compile time) and Python (``Status``, whose members carry their own messages)."""

from __future__ import annotations

from enum import IntEnum

CONVERGED = 0
SLOW_POINT = 1
MAX_ITER = 2
SINGULAR = 3
NONFINITE = 4
DIVERGED = 5
Q_TOLERANCE = 6
BATCH_STOPPED = 7
NO_DECREASE = 8
RUNNING = -1  # never returned: marks points still in the working set

_MESSAGES = {
    CONVERGED: "converged: ||F(x) - x||_inf <= atol + rtol * ||x||_inf (an exact fixed point)",
    SLOW_POINT: "slow point: q = ||F(x) - x||^2 / 2 is stationary or the remaining speed lies along "
    "slow directions; not a fixed point",
    MAX_ITER: "stopped at maxiter without meeting a tolerance",
    SINGULAR: "the linear system (J - I) was singular and no damped step could be taken",
    NONFINITE: "NaN or Inf appeared in the state or the residual",
    DIVERGED: "diverged: the state left the region |x| <= max_norm or is pressed against the box that "
    "holds every root with q decreasing outward",
    Q_TOLERANCE: "q below tol_q (the FixedPointFinder / study stop rule) but the residual is above atol",
    BATCH_STOPPED: "adam stopped the whole batch (its mean q below tol_q, renn's rule; the mean q "
    "stalled, tol_dq; or it went non-finite) before this point met a tolerance itself",
    NO_DECREASE: "no decrease: no damped step decreased q although q is not stationary (||grad q|| above "
    "max(gtol, stuck_rtol * ||r||)), inside the root box; the solver cannot go on from here; not a fixed point",
}


class Status(IntEnum):
    """Why the solver stopped at a point. ``Status(k).message`` explains it."""

    CONVERGED = CONVERGED
    SLOW_POINT = SLOW_POINT
    MAX_ITER = MAX_ITER
    SINGULAR = SINGULAR
    NONFINITE = NONFINITE
    DIVERGED = DIVERGED
    Q_TOLERANCE = Q_TOLERANCE
    BATCH_STOPPED = BATCH_STOPPED
    NO_DECREASE = NO_DECREASE

    @property
    def message(self) -> str:
        return _MESSAGES[int(self)]
