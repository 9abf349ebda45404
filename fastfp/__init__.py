"""fastfp: fast, framework-agnostic fixed-point analysis of recurrent neural networks."""

from ._version import __version__
from .backends import BACKENDS
from .dynamics import input_jacobian, jacobian, jvp, rollout, step, vjp
from .errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    DTypeError,
    FastFPError,
    InvalidOptionError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
)
from .params import CELLS, GATE_ORDER, RNNParams

__all__ = [
    "__version__",
    "BACKENDS",
    "CELLS",
    "GATE_ORDER",
    "RNNParams",
    "step",
    "rollout",
    "jacobian",
    "input_jacobian",
    "jvp",
    "vjp",
    "FastFPError",
    "ShapeError",
    "DTypeError",
    "ArgumentTypeError",
    "NonFiniteError",
    "InvalidOptionError",
    "MissingDependencyError",
    "BackendUnavailableError",
]
