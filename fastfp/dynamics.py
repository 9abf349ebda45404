"""Public dynamics of one recurrent layer: stepping, rollouts, Jacobians, JVPs and VJPs.

All functions take the data positionally and the policy keyword-only; states are batch-first
(B, N) (a single state (N,) is accepted and returns unbatched results); the input ``x`` is shared
(M,) or per state (B, M), and ``None`` means the zero input. Computation runs in the dtype of the
states (float32 or float64). ``backend`` selects the kernels: ``"cpu"`` (Numba, default),
``"numpy"`` (the reference twins) or ``"gpu"``.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_finite, check_params, prepare_inputs, prepare_states, as_float_array, state_size_text
from .backends import get_kernels
from .errors import InvalidOptionError, ShapeError

__all__ = ["step", "rollout", "jacobian", "input_jacobian", "jvp", "vjp"]


def _setup(params, h, x, backend):
    check_params(params)
    kernels = get_kernels(backend)
    hs = prepare_states("h", params, h)
    single = hs.ndim == 1
    h2 = hs[None, :] if single else hs
    x2 = prepare_inputs("x", params, x, None if single else h2.shape[0], h2.dtype)
    weights = params.arrays(h2.dtype)
    return kernels, single, h2, x2, weights


def _check_result_fits(what, shape, dtype, memory_limit, hint, alternative) -> None:
    """A MemoryLimitError naming the size and a batch that fits, before a result too large for
    the memory is allocated (NumPy's MemoryError, or the kernel's OOM killer, otherwise)."""
    from .errors import MemoryLimitError
    from .solvers import _default_memory_limit

    per_row = int(np.prod(shape[1:], dtype=np.float64)) * np.dtype(dtype).itemsize
    # Results are host arrays, whatever the backend. By default the check is against the memory
    # the kernel can still give (MemAvailable, page cache included): only what cannot fit at all
    # is refused; the solvers' stricter default (half the free memory) is for their working sets.
    limit = _available_memory() if memory_limit is None else _default_memory_limit(memory_limit)
    if per_row * shape[0] > limit:
        fits = int(limit // max(per_row, 1))
        what_limit = "the available memory" if memory_limit is None else "memory_limit"
        advice = f"pass at most {fits} {hint}, or {alternative}" if fits >= 1 else f"not even one fits: {alternative}"
        raise MemoryLimitError(
            f"{what}: the result of shape {tuple(shape)} ({np.dtype(dtype).name}) needs "
            f"{per_row * shape[0] / 2**30:.3g} GiB, more than {what_limit} ({limit / 2**30:.3g} GiB); {advice}"
        )


def _available_memory() -> float:
    """MemAvailable (Linux), else the solvers' default limit."""
    from .solvers import _default_memory_limit

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _default_memory_limit(None)


def step(params, h, x=None, *, backend: str = "cpu") -> np.ndarray:
    """One step of the cell, F(h, x), for a batch of states.

    Parameters
    ----------
    params : RNNParams
    h : array_like, shape (B, N) or (N,)
        States (for ``lstm`` the concatenation [h, c], N = 2H).
    x : array_like, shape (M,) or (B, M), optional
        Input shared by all states, or one per state; ``None`` is the zero input.
    backend : {'cpu', 'numpy', 'gpu'}

    Returns
    -------
    ndarray, shape (B, N) or (N,)
        The next states, in the dtype of ``h``.
    """
    kernels, single, h2, x2, w = _setup(params, h, x, backend)
    out = kernels.step(params.cell_code, params.nonlinearity_code, h2, x2, *w)
    return out[0] if single else out


def jacobian(params, h, x=None, *, backend: str = "cpu", memory_limit: float | None = None) -> np.ndarray:
    """The recurrent Jacobian dF/dh at each state.

    Parameters
    ----------
    memory_limit : float, optional
        Bytes the result may take (default: the memory available, MemAvailable on Linux); a
        larger one is a :class:`fastfp.MemoryLimitError` before anything is allocated.

    Returns
    -------
    ndarray, shape (B, N, N) or (N, N)
        ``J[b, i, j] = dF_i / dh_j`` at state ``h[b]``.
    """
    kernels, single, h2, x2, w = _setup(params, h, x, backend)
    B, N = h2.shape
    _check_result_fits("jacobian", (B, N, N), h2.dtype, memory_limit,
                       "states at a time", "use jvp / vjp / top_eigs, which form no N x N matrix")
    out = kernels.jacobian(params.cell_code, params.nonlinearity_code, h2, x2, *w)
    return out[0] if single else out


def input_jacobian(params, h, x=None, *, backend: str = "cpu", memory_limit: float | None = None) -> np.ndarray:
    """The input Jacobian dF/dx at each state.

    Parameters
    ----------
    memory_limit : float, optional
        Bytes the result may take (default: the memory available, as ``jacobian``).

    Returns
    -------
    ndarray, shape (B, N, M) or (N, M)
        ``Jx[b, i, k] = dF_i / dx_k`` at state ``h[b]``; ``Jx[b] @ e_w`` is the linearised effect
        of word ``w``'s one-hot input.
    """
    kernels, single, h2, x2, w = _setup(params, h, x, backend)
    _check_result_fits("input_jacobian", (h2.shape[0], h2.shape[1], params.input_size), h2.dtype, memory_limit,
                       "states at a time", "use jvp on the input directions you need")
    out = kernels.input_jacobian(params.cell_code, params.nonlinearity_code, h2, x2, *w)
    return out[0] if single else out


def _direction(name, params, value, h2, single):
    v = as_float_array(name, value, h2.dtype)
    expected = (params.state_size,) if single else h2.shape
    if v.shape != expected:
        raise ShapeError(
            f"argument {name!r}: got shape {v.shape}, expected {expected}, the shape of 'h' "
            f"({state_size_text(params)})"
        )
    check_finite(name, v)
    return v[None, :] if single else v


def jvp(params, h, x, v, *, backend: str = "cpu") -> np.ndarray:
    """Jacobian-vector products J(h) v without forming J (O(B N G H) work, no N x N memory).

    Parameters
    ----------
    h, v : array_like, shape (B, N) or (N,)
        States and one tangent vector per state.
    x : array_like, shape (M,) or (B, M), or None

    Returns
    -------
    ndarray, same shape as ``h``: ``(J[b] @ v[b])`` for each b.
    """
    kernels, single, h2, x2, w = _setup(params, h, x, backend)
    v2 = _direction("v", params, v, h2, single)
    out = kernels.jvp(params.cell_code, params.nonlinearity_code, h2, x2, *w, v2)
    return out[0] if single else out


def vjp(params, h, x, w, *, backend: str = "cpu") -> np.ndarray:
    """Vector-Jacobian products w^T J(h) without forming J.

    Parameters
    ----------
    h, w : array_like, shape (B, N) or (N,)
        States and one cotangent vector per state.

    Returns
    -------
    ndarray, same shape as ``h``: ``(w[b] @ J[b])`` for each b.
    """
    kernels, single, h2, x2, weights = _setup(params, h, x, backend)
    w2 = _direction("w", params, w, h2, single)
    out = kernels.vjp(params.cell_code, params.nonlinearity_code, h2, x2, *weights, w2)
    return out[0] if single else out


def rollout(params, h0, xs, *, lengths=None, mask=None, backend: str = "cpu",
            memory_limit: float | None = None) -> np.ndarray:
    """Run input sequences through the cell and return every visited state.

    Parameters
    ----------
    params : RNNParams
    h0 : array_like, shape (B, N) or (N,), or None
        Initial states (one shared state when 1-D; zeros when None). The rollout runs in the dtype
        of ``h0``, or with ``h0=None`` in the wider of the params' and ``xs``' dtypes (float64
        params with float32 inputs, e.g. ``model.inputs(tokens)``, run in float64).
    xs : array_like, shape (B, T, M) or (T, M)
        Input sequences (a single sequence when 2-D; then the result is (T, N)).
    lengths : array_like of int, shape (B,), optional
        Valid length of each padded sequence; steps t >= lengths[b] leave the state unchanged, so
        ``states[:, -1]`` is the state after the last valid input.
    mask : array_like of bool, shape (B, T), optional
        General form of ``lengths``: the state is updated at step t only where ``mask[b, t]``.
    backend : {'cpu', 'numpy', 'gpu'}
    memory_limit : float, optional
        Bytes the visited states may take (default: the memory available, as ``jacobian``); more
        is a :class:`fastfp.MemoryLimitError` before the run.

    Returns
    -------
    ndarray, shape (B, T, N) or (T, N)
        ``states[b, t]`` is the state after input t.
    """
    check_params(params)
    kernels = get_kernels(backend)
    X = as_float_array("xs", xs)
    single = X.ndim == 2
    if single:
        X = X[None]
    if X.ndim != 3 or X.shape[2] != params.input_size:
        raise ShapeError(
            f"argument 'xs': got shape {np.shape(xs)}, expected (B, T, M) or (T, M) with "
            f"M = {params.input_size} (input size of the params)"
        )
    check_finite("xs", X)
    B, T, _ = X.shape
    N = params.state_size
    if h0 is None:
        X = X.astype(np.result_type(params.dtype, X.dtype), copy=False)
        h = np.zeros((B, N), dtype=X.dtype)
    else:
        h = prepare_states("h0", params, h0)  # computation runs in the dtype of the states
        X = X.astype(h.dtype, copy=False)
        if h.ndim == 1:
            h = np.broadcast_to(h, (B, N)).copy()
        elif single or h.shape[0] != B:
            expected = f"({N},) for a single sequence" if single else f"({B}, {N}) or ({N},)"
            raise ShapeError(
                f"argument 'h0': got shape {h.shape}, expected {expected} to match xs of shape {np.shape(xs)}"
            )
    valid = _valid_steps(lengths, mask, B, T, single)
    _check_result_fits("rollout", (B, T, N), X.dtype, memory_limit,
                       f"sequences of {T} steps at a time", "run fewer steps at a time (sample_states needs only some states)")
    out = _run_steps(kernels, params, h, X, valid)
    return out[0] if single else out


# Device memory one chunk of a GPU rollout may take (its inputs, mask and states), at most.
_DEVICE_CHUNK_BYTES = 256 * 2**20


def _run_steps(kernels, params, h, X, valid) -> np.ndarray:
    """The rollout loop, written once for the host and the device.

    On the GPU the weights and the state stay on the device for the whole run, and the inputs go
    up and the visited states come down in chunks of steps (one copy each way per chunk, not per
    step); on the CPU the states are written straight into the result.
    """
    B, T, M = X.shape
    N = params.state_size
    dtype = X.dtype
    out = np.empty((B, T, N), dtype=dtype)
    # Which steps leave some state unchanged, known on the host (no device sync per step).
    partial = None if valid is None else ~valid.all(axis=0)
    w = params.arrays(dtype)
    if kernels.name == "gpu":
        import cupy as xp

        from .solvers import _default_memory_limit

        to_device, to_host = xp.asarray, xp.asnumpy
        per_step = B * ((N + M) * dtype.itemsize + 1)
        budget = min(_DEVICE_CHUNK_BYTES, 0.25 * _default_memory_limit(None, "gpu"))
        chunk = int(max(1, min(T, budget // max(per_step, 1))))
    else:
        xp, chunk = np, max(T, 1)
        to_device = to_host = None
    if to_device is not None:
        h, w = to_device(h), [to_device(a) for a in w]
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        if to_device is None:
            Xc, vc, buf = X[:, t0:t1], valid, out[:, t0:t1]
        else:
            Xc = to_device(np.ascontiguousarray(X[:, t0:t1]))
            vc = None if valid is None else to_device(np.ascontiguousarray(valid[:, t0:t1]))
            buf = xp.empty((B, t1 - t0, N), dtype=dtype)
        for t in range(t1 - t0):
            new = kernels.step(params.cell_code, params.nonlinearity_code, h, xp.ascontiguousarray(Xc[:, t]), *w)
            if partial is not None and partial[t0 + t]:
                col = t0 + t if to_device is None else t
                new = xp.where(vc[:, col, None], new, h)
            h = new
            buf[:, t] = h
        if to_device is not None:
            out[:, t0:t1] = to_host(buf)
    return out


def _valid_steps(lengths, mask, B, T, single):
    if lengths is not None and mask is not None:
        raise InvalidOptionError("arguments 'lengths' and 'mask': got both, expected at most one of them")
    if lengths is not None:
        lens = np.asarray(lengths)
        if single and lens.ndim == 0:
            lens = lens[None]
        if lens.dtype.kind not in "iu" or lens.shape != (B,):
            raise ShapeError(
                f"argument 'lengths': got {lens.dtype} array of shape {lens.shape}, expected integers of shape ({B},)"
            )
        if (lens < 0).any() or (lens > T).any():
            raise InvalidOptionError(
                f"argument 'lengths': got values in [{lens.min()}, {lens.max()}], expected 0 <= length <= T = {T}"
            )
        return np.arange(T)[None, :] < lens[:, None]
    if mask is not None:
        m = np.asarray(mask)
        if single and m.ndim == 1:
            m = m[None]
        if m.dtype != np.bool_ or m.shape != (B, T):
            raise ShapeError(f"argument 'mask': got {m.dtype} array of shape {m.shape}, expected bool of shape ({B}, {T})")
        return m
    return None
