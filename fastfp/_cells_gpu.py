"""GPU twins of the cell kernels: cuBLAS GEMMs plus the fused element-wise CUDA kernels of
``kernels/cells.cu``, composed against an array namespace.

The composition (:class:`DeviceCells`) is written once for a namespace ``xp`` and a set of
element-wise operations ``ops``; on a GPU these are CuPy and :class:`CudaOps` (RawModule kernels
compiled at run time), and the CPU tests run the very same composition with NumPy and
:class:`HostOps`, the NumPy twins of the CUDA kernels (same arguments, same outputs). The CUDA
kernels' per-element math lives in ``kernels/cells.cuh``, which the tests also compile for the
host and compare with the NumPy reference.

The public-layer functions (``step_gpu`` ... with ``step_ref``'s signature) take NumPy or CuPy
arrays and answer in the namespace they were given.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from ._cells_ref import _xp
from ._cells_ref import input_jacobian_ref, jacobian_ref
from ._linearize import Linearization, forward_linearize
from .params import GRU, GRU_RESET_BEFORE, LSTM, RELU, UGRNN, VANILLA

__all__ = [
    "DeviceCells", "HostOps", "CudaOps", "kernel_source_dir",
    "step_gpu", "jacobian_gpu", "input_jacobian_gpu", "jvp_gpu", "vjp_gpu", "residual_grad_gpu",
]

_THREADS = 256


def kernel_source_dir() -> str:
    """Directory holding ``cells.cu`` / ``cells.cuh``: inside the installed package (the wheel
    ships them as ``fastfp/_kernels``) or the checkout's top-level ``kernels/``."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "_kernels"), os.path.join(os.path.dirname(here), "kernels")):
        if os.path.isfile(os.path.join(candidate, "cells.cu")):
            return candidate
    from .errors import BackendUnavailableError

    raise BackendUnavailableError(
        "the CUDA sources cells.cu / cells.cuh were not found next to the fastfp package; "
        "reinstall fastfp-rnn (the wheel ships them in fastfp/_kernels)"
    )


# ------------------------------------------------------------------------ element-wise ops
class HostOps:
    """NumPy twins of the CUDA kernels in ``kernels/cells.cu`` (same arguments, writes outputs)."""

    @staticmethod
    def _sig(a):
        return np.exp(-np.logaddexp(0.0, -a))

    def vanilla_forward(self, ax, hh, relu, out, slope):
        pre = ax + hh
        if relu:
            out[...] = np.maximum(pre, 0.0)
            slope[...] = (pre > 0).astype(pre.dtype)
        else:
            out[...] = np.tanh(pre)
            slope[...] = 1.0 - out * out

    def gru_forward(self, ax, hh, h, out, C, D):
        H = h.shape[1]
        r = self._sig(ax[:, :H] + hh[:, :H])
        z = self._sig(ax[:, H:2 * H] + hh[:, H:2 * H])
        hn = hh[:, 2 * H:]
        n = np.tanh(ax[:, 2 * H:] + r * hn)
        out[...] = (1.0 - z) * n + z * h
        dn = (1.0 - z) * (1.0 - n * n)
        C[:, :H], C[:, H:2 * H], C[:, 2 * H:] = dn * hn * r * (1.0 - r), (h - n) * z * (1.0 - z), dn * r
        D[...] = z

    def ugrnn_forward(self, ax, hh, h, out, C, D):
        H = h.shape[1]
        u = self._sig(ax[:, :H] + hh[:, :H])
        c = np.tanh(ax[:, H:] + hh[:, H:])
        out[...] = u * h + (1.0 - u) * c
        C[:, :H], C[:, H:] = (h - c) * u * (1.0 - u), (1.0 - u) * (1.0 - c * c)
        D[...] = u

    def lstm_forward(self, ax, hh, hc, out, coef):
        H = hc.shape[1] // 2
        pre = ax + hh
        i, f, o = self._sig(pre[:, :H]), self._sig(pre[:, H:2 * H]), self._sig(pre[:, 3 * H:])
        g = np.tanh(pre[:, 2 * H:3 * H])
        c = hc[:, H:]
        c2 = f * c + i * g
        tc = np.tanh(c2)
        out[:, :H], out[:, H:] = o * tc, c2
        coef[0], coef[1], coef[2] = g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g)
        coef[3], coef[4], coef[5] = f, tc * o * (1.0 - o), o * (1.0 - tc * tc)

    def gated_jvp(self, C, D, u, v, G, out):
        H = v.shape[1]
        acc = D * v
        for k in range(G):
            acc = acc + C[:, k * H:(k + 1) * H] * u[:, k * H:(k + 1) * H]
        out[...] = acc


def kernel_source() -> str:
    """kernels/cells.cu with cells.cuh pasted in place of its #include: CuPy's kernel cache is keyed
    on the source text and options, not on included files (an edited header would load a stale
    cubin), and ROCm's hiprtc drops #include lines."""
    src_dir = kernel_source_dir()
    with open(os.path.join(src_dir, "cells.cu")) as fh:
        source = fh.read()
    with open(os.path.join(src_dir, "cells.cuh")) as fh:
        header = fh.read()
    include = '#include "cells.cuh"'
    if source.count(include) != 1:
        raise RuntimeError(f"kernels/cells.cu: expected one {include!r} line")
    return source.replace(include, header)


def _check_operands(name, out, args) -> None:
    """Every array operand of a kernel launch: out's dtype, C-contiguous; integer operands np.int32."""
    for k, a in enumerate(args):
        if isinstance(a, (int, float, bool)):
            raise TypeError(f"{name}: argument {k} is a Python {type(a).__name__}; the kernel takes np.int32")
        if hasattr(a, "dtype") and getattr(a, "ndim", 0) > 0:
            if a.dtype != out.dtype:
                raise TypeError(f"{name}: argument {k} has dtype {a.dtype}, the kernel's is {out.dtype}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{name}: argument {k} is not C-contiguous")
        elif not isinstance(a, np.int32):
            raise TypeError(f"{name}: argument {k} is a {type(a).__name__}, expected an array or np.int32")


class CudaOps:
    """The kernels of ``kernels/cells.cu`` launched through CuPy (one thread per element)."""

    def __init__(self):
        import cupy

        self._cp = cupy
        self._module = cupy.RawModule(code=kernel_source(), options=("-std=c++14",))

    def _launch(self, name, ref, n, args):
        if n == 0:  # a launch of zero blocks is an error in CUDA
            return
        if ref.dtype not in (np.float32, np.float64):
            raise TypeError(f"fastfp CUDA kernels take float32 or float64, got {ref.dtype}")
        # A raw kernel reads pointers: an operand of another dtype or layout would be read as
        # garbage, without an error. Host-side checks of what the kernels assume (no device sync).
        _check_operands(name, ref, args)
        suffix = "f64" if ref.dtype == np.float64 else "f32"
        kernel = self._module.get_function(f"{name}_{suffix}")
        kernel(((n + _THREADS - 1) // _THREADS,), (_THREADS,), args)

    def vanilla_forward(self, ax, hh, relu, out, slope):
        B, H = out.shape
        i32 = np.int32
        self._launch("vanilla_forward", out, B * H, (ax, i32(ax.shape[0]), hh, i32(relu), i32(B), i32(H), out, slope))

    def gru_forward(self, ax, hh, h, out, C, D):
        B, H = h.shape
        i32 = np.int32
        self._launch("gru_forward", out, B * H, (ax, i32(ax.shape[0]), hh, h, i32(B), i32(H), out, C, D))

    def ugrnn_forward(self, ax, hh, h, out, C, D):
        B, H = h.shape
        i32 = np.int32
        self._launch("ugrnn_forward", out, B * H, (ax, i32(ax.shape[0]), hh, h, i32(B), i32(H), out, C, D))

    def lstm_forward(self, ax, hh, hc, out, coef):
        B, H = hc.shape[0], hc.shape[1] // 2
        i32 = np.int32
        self._launch("lstm_forward", out, B * H, (ax, i32(ax.shape[0]), hh, hc, i32(B), i32(H), out, coef))

    def gated_jvp(self, C, D, u, v, G, out):
        B, H = v.shape
        i32 = np.int32
        self._launch("gated_jvp", out, B * H, (C, D, u, v, i32(G), i32(B), i32(H), out))


# ------------------------------------------------------------------------ composition
class _FusedLinearization(Linearization):
    """gru / ugrnn products with the fused epilogue kernel (one pass instead of 2G + 1)."""

    def __init__(self, base: Linearization, ops):
        object.__setattr__(self, "cell", base.cell)
        object.__setattr__(self, "w_hh", base.w_hh)
        object.__setattr__(self, "coef", base.coef)
        object.__setattr__(self, "_ops", ops)

    def with_coef(self, coef):
        return _FusedLinearization(Linearization.with_coef(self, coef), self._ops)

    def astype(self, dtype):
        return _FusedLinearization(Linearization.astype(self, dtype), self._ops)

    def jvp(self, v):
        if self.cell not in (GRU, UGRNN):
            return Linearization.jvp(self, v)
        xp = _xp(v)
        u = xp.ascontiguousarray(v @ self.w_hh.T)
        out = xp.empty(v.shape, dtype=v.dtype)  # C order, as the kernel writes it
        self._ops.gated_jvp(self.coef["C"], self.coef["D"], u, xp.ascontiguousarray(v), 3 if self.cell == GRU else 2, out)
        return out


class DeviceCells:
    """The cell operations on arrays of one namespace ``xp`` with element-wise ``ops``."""

    def __init__(self, xp, ops):
        self.xp, self.ops = xp, ops

    def forward(self, cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
        """F(h, x) and the linearisation at h in one pass: ((B, N), Linearization)."""
        xp, ops = self.xp, self.ops
        if cell == GRU_RESET_BEFORE:
            # The reset gate acts before the recurrent matmul of the candidate, so the pass needs a
            # GEMM between two element-wise stages; it runs as namespace operations, once.
            return forward_linearize(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)
        h = xp.ascontiguousarray(h)
        ax = xp.ascontiguousarray(x @ w_ih.T + b_ih)
        B = h.shape[0]
        H = w_hh.shape[1]
        if cell == VANILLA:
            hh = xp.ascontiguousarray(h @ w_hh.T + b_hh)
            out, slope = xp.empty(h.shape, dtype=h.dtype), xp.empty(h.shape, dtype=h.dtype)
            ops.vanilla_forward(ax, hh, int(act == RELU), out, slope)
            return out, Linearization(cell, w_hh, {"slope": slope})
        if cell in (GRU, UGRNN):
            G = 3 if cell == GRU else 2
            hh = xp.ascontiguousarray(h @ w_hh.T + b_hh)
            out, D = xp.empty(h.shape, dtype=h.dtype), xp.empty(h.shape, dtype=h.dtype)
            C = xp.empty((B, G * H), dtype=h.dtype)
            (ops.gru_forward if cell == GRU else ops.ugrnn_forward)(ax, hh, h, out, C, D)
            return out, _FusedLinearization(Linearization(cell, w_hh, {"C": C, "D": D}), ops)
        if cell == LSTM:
            hh = xp.ascontiguousarray(h[:, :H] @ w_hh.T + b_hh)
            out = xp.empty(h.shape, dtype=h.dtype)
            coef = xp.empty((6, B, H), dtype=h.dtype)
            ops.lstm_forward(ax, hh, h, out, coef)
            names = ("ci", "cf", "cg", "f", "co", "e")
            return out, Linearization(cell, w_hh, {k: coef[i] for i, k in enumerate(names)})
        raise ValueError(f"unknown cell code {cell}")

    def step(self, cell, act, h, x, *w):
        return self.forward(cell, act, h, x, *w)[0]

    def jvp(self, cell, act, h, x, w_ih, w_hh, b_ih, b_hh, v):
        return self.forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)[1].jvp(v)

    def vjp(self, cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
        return self.forward(cell, act, h, x, w_ih, w_hh, b_ih, b_hh)[1].vjp(w)

    def residual_grad(self, cell, act, h, x, *w):
        out, lin = self.forward(cell, act, h, x, *w)
        r = out - h
        return r, lin.vjp(r) - r

    def linearize(self, cell, act, h, x, *w):
        return self.forward(cell, act, h, x, *w)[1]

    def jacobian(self, cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out=None):
        # Dense assembly by broadcasting in the namespace (cuBLAS-free, memory-bound either way).
        return jacobian_ref(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out=out)

    def input_jacobian(self, cell, act, h, x, *w):
        return input_jacobian_ref(cell, act, h, x, *w)


@lru_cache(maxsize=1)
def device_cells() -> DeviceCells:
    """The CuPy + CUDA composition (compiles the kernels on first use)."""
    import cupy

    return DeviceCells(cupy, CudaOps())


# ------------------------------------------------------------------------ public-layer twins
def _call(op, args, n_arrays):
    """Run DeviceCells.op on the GPU; NumPy arguments travel to the device and the answer back."""
    import cupy

    host = isinstance(args[2], np.ndarray)
    dev = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args[2:2 + n_arrays]]
    result = getattr(device_cells(), op)(args[0], args[1], *dev)
    if not host:
        return result
    if isinstance(result, tuple):
        return tuple(cupy.asnumpy(r) for r in result)
    return cupy.asnumpy(result)


def step_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    return _call("step", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh), 6)


# The dense Jacobians build a few (B, N, N) temporaries on the device (jacobian_ref's gate products
# and sums): this many, with the result, per row.
_DENSE_TEMPORARIES = 6


def _in_device_chunks(op, cell, act, h, x, w, width, out=None):
    """DeviceCells.op (a dense (B, N, width) result) over row chunks that fit the device's free
    memory; host arrays in and out. A row that does not fit is a MemoryLimitError, not CuPy's."""
    from .errors import MemoryLimitError
    from .solvers import _default_memory_limit

    B, N = h.shape
    per_row = _DENSE_TEMPORARIES * N * width * h.dtype.itemsize
    limit = _default_memory_limit(None, "gpu")
    rows = int(limit // max(per_row, 1))
    if B and rows < 1:
        hint = ("; use the matrix-free path (decompose(k=...), jvp/vjp)" if op == "jacobian"
                else "; take fewer inputs (columns) at a time, or run it on the CPU backend")
        raise MemoryLimitError(f"the dense {op} of one state needs about {per_row / 2**20:.0f} MiB of device memory, "
                               f"more than the {limit / 2**20:.0f} MiB free{hint}")
    if out is None:
        out = np.empty((B, N, width), dtype=h.dtype)
    for lo in range(0, B, max(rows, 1)):
        hi = min(B, lo + rows)
        xs = x if x.shape[0] == 1 else x[lo:hi]
        out[lo:hi] = _call(op, (cell, act, h[lo:hi], xs, *w), 6)
    return out


def jacobian_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, out=None):
    if isinstance(h, np.ndarray):
        return _in_device_chunks("jacobian", cell, act, h, x, (w_ih, w_hh, b_ih, b_hh), h.shape[1], out)
    J = _call("jacobian", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh), 6)
    if out is None:
        return J
    out[...] = J
    return out


def input_jacobian_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    if isinstance(h, np.ndarray):
        return _in_device_chunks("input_jacobian", cell, act, h, x, (w_ih, w_hh, b_ih, b_hh), w_ih.shape[1])
    return _call("input_jacobian", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh), 6)


def jvp_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, v):
    return _call("jvp", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh, v), 7)


def vjp_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w):
    return _call("vjp", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh, w), 7)


def residual_grad_gpu(cell, act, h, x, w_ih, w_hh, b_ih, b_hh):
    return _call("residual_grad", (cell, act, h, x, w_ih, w_hh, b_ih, b_hh), 6)
