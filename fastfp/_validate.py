"""Input checks shared by the public functions: each failure names the argument, what was given,
what was expected and how to fix it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ArgumentTypeError, DTypeError, InvalidOptionError, NonFiniteError, ShapeError

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


_DLPACK_CUDA = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def _device_array_to_host(name: str, value: Any):
    """A CUDA array (CuPy, or a torch / JAX device array through DLPack) copied to the host; None
    for anything else. fastfp's results are NumPy arrays, so device inputs come back once here."""
    cuda = hasattr(value, "__cuda_array_interface__")
    if not cuda and hasattr(value, "__dlpack_device__") and not isinstance(value, np.ndarray):
        try:
            cuda = int(value.__dlpack_device__()[0]) in _DLPACK_CUDA
        except Exception:
            cuda = False
    if not cuda:
        return None
    try:
        import cupy
    except ImportError:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            f"argument {name!r}: got a CUDA array ({type(value).__name__}); reading device arrays needs CuPy: "
            "pip install 'fastfp-rnn[gpu]' (or move it to the host first, e.g. tensor.cpu())"
        ) from None
    dev = cupy.from_dlpack(value) if hasattr(value, "__dlpack__") else cupy.asarray(value)
    return cupy.asnumpy(dev)


def as_float_array(name: str, value: Any, dtype=None) -> np.ndarray:
    """``value`` as a C-contiguous float32/float64 array (``dtype`` if given).

    Accepts anything NumPy converts, and CUDA arrays (CuPy, torch CUDA tensors, JAX GPU arrays via
    DLPack; copied to the host, which needs CuPy)."""
    host = _device_array_to_host(name, value)
    if host is not None:
        value = host
    kind = type(value).__name__
    if kind in ("FixedPoints", "TopEigs", "Model", "RNNParams") and type(value).__module__.startswith("fastfp"):
        inputs = name in ("x", "xs", "inputs", "x0")
        hint = {"FixedPoints": f"its inputs, {name}=fp.inputs" if inputs else f"its states, {name}=fp.x",
                "TopEigs": "the states it was computed at"}.get(kind, "an array")
        raise ArgumentTypeError(f"argument {name!r}: got a fastfp {kind}, expected an array; pass {hint}")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise DTypeError(f"argument {name!r}: could not be converted to an array ({exc})") from None
    if arr.dtype.kind != "f":
        raise DTypeError(
            f"argument {name!r}: got dtype {arr.dtype}, expected float32 or float64; "
            f"convert it first, e.g. {name}.astype(np.float64)"
        )
    target = np.dtype(dtype) if dtype is not None else (arr.dtype if arr.dtype in _FLOATS else np.dtype(np.float64))
    if target.itemsize >= arr.dtype.itemsize:
        return np.asarray(arr, dtype=target, order="C")  # (ascontiguousarray would turn 0-D into 1-D)
    with np.errstate(over="ignore"):
        out = np.asarray(arr, dtype=target, order="C")
    overflowed = ~np.isfinite(out) & np.isfinite(arr)
    if overflowed.any():
        # Not "holds NaN or Inf" later: the values are finite, the narrower dtype cannot hold them.
        first = tuple(int(i) for i in np.argwhere(overflowed)[0])
        raise DTypeError(
            f"argument {name!r}: holds {float(arr[first]):.3g} (at index {first}), beyond {target}'s largest "
            f"{float(np.finfo(target).max):.3g}; use float64 or smaller values"
        )
    return out


def check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(
            f"argument {name!r}: holds NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            "expected finite values"
        )


def check_params(params: Any) -> None:
    from .params import RNNParams

    if not isinstance(params, RNNParams):
        raise ArgumentTypeError(
            f"argument 'params': got {type(params).__name__}, expected fastfp.RNNParams "
            "(build one with fastfp.RNNParams(cell, w_ih, w_hh, b_ih, b_hh))"
        )


def state_size_text(params) -> str:
    if params.cell == "lstm":
        return f"N = 2H = {params.state_size} ([h, c] of the 'lstm' cell with H = {params.hidden_size})"
    return f"N = H = {params.state_size} (hidden size of the {params.cell!r} cell)"


def prepare_states(name: str, params, value: Any, dtype=None) -> np.ndarray:
    """States as (B, N) or (N,) float array; checks size and finiteness."""
    h = as_float_array(name, value, dtype)
    if h.ndim not in (1, 2) or h.shape[-1] != params.state_size:
        raise ShapeError(
            f"argument {name!r}: got shape {h.shape}, expected (B, N) or (N,) with {state_size_text(params)}"
        )
    check_finite(name, h)
    return h


def prepare_inputs(name: str, params, value: Any, batch: int | None, dtype) -> np.ndarray:
    """Inputs as a 2-D (Bx, M) array with Bx = 1 (shared) or B; ``None`` means the zero input."""
    M = params.input_size
    if value is None:
        return np.zeros((1, M), dtype=dtype)
    x = as_float_array(name, value, dtype)
    if x.ndim == 1 and x.shape[0] == M:
        x = x[None, :]
    elif not (x.ndim == 2 and x.shape[1] == M and batch is not None and x.shape[0] == batch):
        expected = f"({M},) shared by all states" + (f" or ({batch}, {M}) one per state" if batch is not None else "")
        raise ShapeError(
            f"argument {name!r}: got shape {x.shape}, expected {expected} (M = {M} is the input size of the params)"
        )
    check_finite(name, x)
    return np.ascontiguousarray(x)


def progress_logger(progress):
    """``progress`` (True: print to stderr; a callable taking a message; False / None: silent) as a
    callable or None; anything else is refused."""
    if progress is True:
        import sys

        return lambda msg: print(msg, file=sys.stderr, flush=True)
    if callable(progress):
        return progress
    if progress is False or progress is None:
        return None
    from .errors import InvalidOptionError

    raise InvalidOptionError(f"argument 'progress': got {progress!r}, expected a bool or a callable")


def real_number(name: str, value: Any, expected: str) -> float:
    """``value`` as a float when it is a real number (int, float, a NumPy scalar or 0-d array);
    float() alone would also take '1e-3' and True (= 1.0), which are no numbers here."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidOptionError(f"argument {name!r}: got {value!r} ({type(value).__name__}), expected {expected}")
    return float(value)
