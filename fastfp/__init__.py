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
    FileFormatError,
    MemoryLimitError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
    TaskFailedError,
)
from .fixed_points import FixedPoints, concatenate
from . import analysis, corpus, train
from .corpus import Corpus, encode_texts, read_corpus
from .io_flax import load_flax, read_flax_msgpack
from .io_safetensors import read_safetensors
from .io_torch import load_torch_rnn, read_torch_state_dict
from .loading import load
from .model import Model, load_params, save_params
from .params import CELLS, GATE_ORDER, RNNParams
from .solvers import METHODS, find_fixed_points, part_speed_scale, sample_states
from .status import Status
from . import spectra, tasks
from .spectra import TopEigs, top_eigs
from .tasks import TaskData

__all__ = [
    "__version__",
    "BACKENDS",
    "CELLS",
    "GATE_ORDER",
    "RNNParams",
    "Model",
    "save_params",
    "load_params",
    "load_torch_rnn",
    "load",
    "read_safetensors",
    "load_flax",
    "read_flax_msgpack",
    "analysis",
    "corpus",
    "train",
    "Corpus",
    "read_corpus",
    "encode_texts",
    "read_torch_state_dict",
    "step",
    "rollout",
    "jacobian",
    "input_jacobian",
    "jvp",
    "vjp",
    "find_fixed_points",
    "sample_states",
    "part_speed_scale",
    "METHODS",
    "FixedPoints",
    "concatenate",
    "Status",
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
    "tasks",
    "TaskData",
    "spectra",
    "top_eigs",
    "TopEigs",
]


# Modules with heavier imports (the study runner, the figures, Dask), loaded on first use so that
# ``import fastfp`` stays light: ``fastfp.study`` works after a plain ``import fastfp``.
_LAZY_MODULES = ("study", "report", "distributed", "cli")


def __getattr__(name):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
