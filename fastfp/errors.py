"""Exception classes of fastfp.

Every error fastfp raises on bad input is one of these. Each message names the argument, what was
given, what was expected and, where there is one, how to fix it. The classes also derive from the
matching built-in exception so that ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

__all__ = [
    "FastFPError",
    "ShapeError",
    "DTypeError",
    "ArgumentTypeError",
    "NonFiniteError",
    "InvalidOptionError",
    "MissingDependencyError",
    "FileFormatError",
    "MemoryLimitError",
    "BackendUnavailableError",
    "TaskFailedError",
]


class FastFPError(Exception):
    """Base class of every error raised by fastfp."""


class ShapeError(FastFPError, ValueError):
    """An array has the wrong number of dimensions or the wrong size."""


class DTypeError(FastFPError, TypeError):
    """An array has a dtype fastfp cannot compute with (integer, bool, complex, object...)."""


class ArgumentTypeError(FastFPError, TypeError):
    """An argument has the wrong Python type (e.g. not an ``RNNParams``)."""


class NonFiniteError(FastFPError, ValueError):
    """An array holds NaN or +-Inf where finite numbers are required."""


class InvalidOptionError(FastFPError, ValueError):
    """A keyword option (cell, backend, tolerance, ...) has a value fastfp does not accept."""


class MissingDependencyError(FastFPError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class BackendUnavailableError(FastFPError, RuntimeError):
    """The requested compute backend cannot run here (no GPU, not built, ...)."""


class FileFormatError(FastFPError, ValueError):
    """A file is not a fastfp file, or is of a format version this fastfp cannot read."""


class MemoryLimitError(FastFPError, MemoryError):
    """A request would need more memory than allowed; the message gives the estimate and a chunk size."""


class TaskFailedError(FastFPError, RuntimeError):
    """Tasks of a distributed run failed; ``.failures`` maps each task key to its error text.

    The run's other tasks have finished and are saved: running again computes only the failed ones.
    """

    def __init__(self, message: str, failures: dict | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


def warn_user(message: str, category=UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside fastfp: the user's call, however
    deep inside fastfp (loaders nest differently per format) the warning is raised."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
