"""Compute backends: the one place where a backend name becomes a set of kernels.

``"numpy"`` runs the NumPy reference twins (float64-exact, slow, obviously correct), ``"cpu"`` the
Numba kernels (default), ``"gpu"`` CuPy/CUDA. Kernel modules are imported on first use so that
``import fastfp`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .errors import BackendUnavailableError, InvalidOptionError, MissingDependencyError

__all__ = ["BACKENDS", "Kernels", "get_kernels", "gpu_available"]

BACKENDS = ("cpu", "numpy", "gpu")

_MODULES = {
    "numpy": ("fastfp._cells_ref", "_ref"),
    "cpu": ("fastfp._cells_cpu", "_cpu"),
    "gpu": ("fastfp._cells_gpu", "_gpu"),
}


@dataclass(frozen=True)
class Kernels:
    """The cell operations of one backend; all share ``step``'s signature (see ``_cells_ref``)."""

    name: str
    step: Callable
    jacobian: Callable
    input_jacobian: Callable
    jvp: Callable
    vjp: Callable
    residual_grad: Callable


_cache: dict[str, Kernels] = {}


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device: all mean "no GPU"
        return False


def get_kernels(backend: str) -> Kernels:
    """The kernels of ``backend``; raises a fastfp error naming what to install or choose."""
    kernels = _cache.get(backend) if isinstance(backend, str) else None
    if kernels is not None:
        return kernels
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InvalidOptionError(
            f"argument 'backend': got {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}"
        )
    if backend == "gpu":
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "argument 'backend': 'gpu' needs CuPy, which is not installed; "
                "install the extra with: pip install 'fastfp-rnn[gpu]'"
            ) from None
        if not gpu_available():
            raise BackendUnavailableError(
                "argument 'backend': 'gpu' needs a CUDA device, but CuPy sees none; use backend='cpu'"
            )
    module_name, suffix = _MODULES[backend]
    module = importlib.import_module(module_name)
    kernels = Kernels(
        name=backend,
        **{op: getattr(module, op + suffix) for op in ("step", "jacobian", "input_jacobian", "jvp", "vjp", "residual_grad")},
    )
    _cache[backend] = kernels
    return kernels
