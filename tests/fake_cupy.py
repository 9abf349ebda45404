"""A strict stand-in for CuPy on the host, so the GPU backend's Python runs in the CPU tests.

No machine here has a GPU, yet most of the GPU backend is Python written against an array
namespace (the Newton-Krylov, LM-Krylov, CG, GMRES and Krylov-Schur loops, the device composition
of the cells). Run with NumPy arrays that code cannot show the mistakes that only break on a
device: a host array mixed into device arithmetic, ``np.asarray`` on a device array (an implicit
device-to-host copy, which CuPy refuses), NumPy-only functions, a device array left in a result.

``DeviceArray`` holds a NumPy array and behaves as CuPy's ndarray does where that matters:

- arithmetic and ufuncs with device arrays and Python or NumPy scalars only; a NumPy array of
  one or more dimensions in the same expression is a ``TypeError`` (CuPy: "Unsupported type"),
  and so is one assigned into part of a device array (CuPy takes ``d[:] = host`` only);
- ``np.asarray(d)`` / ``np.array(d)`` / ``float(...)`` on more than one element raise; ``d.get()``
  and ``fake.asnumpy(d)`` copy to the host;
- reductions give 0-d device arrays, not NumPy scalars;
- NumPy functions dispatched on device arrays (``np.concatenate(device_arrays)``) work, as CuPy's
  ``__array_function__`` does, except those CuPy lacks (``DENIED``).

``install(monkeypatch)`` puts the fake in ``sys.modules['cupy']``, reports one device, and makes
``fastfp._cells_gpu.device_cells()`` the device composition over this namespace with the real
launch layer (``CudaOps``) over a fake ``cupy.RawModule`` that checks every launch against the
kernel's C signature and runs the kernel's NumPy twin (``HostOps``): the CUDA kernels themselves
are tested elsewhere (compiled with nvcc, their per-element math on the host).
"""

from __future__ import annotations

import operator
import sys
import types

import numpy as np

# NumPy functions CuPy does not provide (general eigendecomposition is host-only in CuPy).
DENIED = {np.linalg.eig, np.linalg.eigvals}


def _is_host_array(x) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, DeviceArray) and x.ndim > 0


def _unwrap(x, where):
    if isinstance(x, DeviceArray):
        return x._a
    if _is_host_array(x):
        raise TypeError(f"{where}: a NumPy array of shape {x.shape} mixed with device arrays "
                        "(CuPy refuses implicit host-to-device copies; use cupy.asarray)")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _wrap(x):
    if isinstance(x, DeviceArray):
        return x
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):  # CuPy reductions give 0-d device arrays
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _index(k):
    # CuPy takes device arrays, NumPy index arrays, ints, slices, None and Ellipsis as indices.
    if isinstance(k, DeviceArray):
        return k._a
    if isinstance(k, tuple):
        return tuple(_index(v) for v in k)
    return k


class DeviceArray:
    """A host NumPy array posing as a CuPy device array (see the module docstring)."""

    __array_priority__ = 1000

    def __init__(self, a):
        self._a = np.asarray(a)

    # -- what CuPy allows
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    T = property(lambda self: DeviceArray(self._a.T))
    real = property(lambda self: DeviceArray(self._a.real))
    imag = property(lambda self: DeviceArray(self._a.imag))
    flags = property(lambda self: self._a.flags)

    @property
    def __cuda_array_interface__(self):
        # How fastfp (and other libraries) recognise a CUDA array; the pointer is the host one.
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3,
                "data": (self._a.__array_interface__["data"][0], False), "strides": None}

    def get(self):
        return self._a.copy()

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        return operator.index(self._a[()] if self._a.ndim == 0 else self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    def __getitem__(self, k):
        return _wrap(self._a[_index(k)])

    def __setitem__(self, k, v):
        if _is_host_array(v) and not (k == slice(None) or k is Ellipsis):
            # CuPy copies a host array in only as a whole-array assignment, d[:] = host.
            raise TypeError(f"DeviceArray.__setitem__: a NumPy array of shape {v.shape} assigned at {k!r} "
                            "(CuPy takes host arrays only as d[:] = host; use cupy.asarray)")
        self._a[_index(k)] = v._a if isinstance(v, DeviceArray) else v

    # -- what CuPy refuses
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def tolist(self):
        return self._a.tolist()

    def item(self):
        return self._a.item()

    # -- NumPy's protocols, as CuPy implements them
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        out = kwargs.get("out")
        args = _unwrap(inputs, where)
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o, where) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        name = f"numpy.{getattr(func, '__name__', func)}"
        if func in DENIED:
            raise TypeError(f"{name} is not available in CuPy")
        return _wrap(func(*_unwrap(args, name), **{k: _unwrap(v, name) for k, v in kwargs.items()}))

    def __getattr__(self, name):
        # ndarray methods (astype, reshape, sum, max, conj, ...) on the held array; never its
        # __array_interface__ and the like, through which NumPy would copy to the host silently.
        if name.startswith("__") or name in ("ctypes", "data", "base"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            where = f"DeviceArray.{name}"
            return _wrap(attr(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

        return method


def _binary(name):
    op = getattr(operator, name)

    def forward(self, other):
        return _wrap(op(self._a, _unwrap(other, f"operator {name}")))

    def reflected(self, other):
        return _wrap(op(_unwrap(other, f"operator {name}"), self._a))

    def inplace(self, other):
        getattr(operator, "i" + name.rstrip("_"))(self._a, _unwrap(other, f"operator i{name}"))
        return self

    return forward, reflected, inplace


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_", "xor",
              "lshift", "rshift"):
    _f, _r, _i = _binary(_name)
    _dunder = _name.rstrip("_")
    setattr(DeviceArray, f"__{_dunder}__", _f)
    setattr(DeviceArray, f"__r{_dunder}__", _r)
    setattr(DeviceArray, f"__i{_dunder}__", _i)
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(DeviceArray, f"__{_name}__", _binary(_name)[0])
for _name in ("neg", "pos", "abs", "invert"):
    setattr(DeviceArray, f"__{_name}__", (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, _name)))
DeviceArray.__hash__ = None
# _cells_ref._xp (and user code) tell CuPy arrays by their type's module.
DeviceArray.__module__ = "cupy._core.core"


# ---------------------------------------------------------------------------- the namespace
def _function(name, f):
    def call(*args, **kwargs):
        where = f"cupy.{name}"
        return _wrap(f(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

    call.__name__ = name
    return call


class _Namespace(types.ModuleType):
    """``cupy`` (or a submodule): NumPy's functions over device arrays, NumPy's types as they are."""

    def __init__(self, name, numpy_module):
        super().__init__(name)
        self._np = numpy_module

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._np, name)
        if isinstance(attr, types.ModuleType):
            sub = _Namespace(f"{self.__name__}.{name}", attr)
            setattr(self, name, sub)
            return sub
        if attr in DENIED:
            raise AttributeError(f"cupy has no {name} (the fake follows CuPy)")
        if isinstance(attr, type) or not callable(attr):
            return attr
        return _function(name, attr)


_KERNEL = None  # compiled lazily: re


class _RawModule:
    """cupy.RawModule over kernels/cells.cu: each kernel launch checks its arguments against the
    kernel's C signature (count; np.int32 at ``int``; a C-contiguous device array of the suffix's
    dtype at each pointer; ``ax_rows`` and ``B``/``H`` against the shapes; enough threads), then
    runs the kernel's NumPy twin (HostOps) on the arrays, writing its outputs in place, as the
    kernel would. The real launch layer (CudaOps) runs in the CPU tests this way."""

    def __init__(self, code, options=()):
        import re

        if '#include "' in code:  # CuPy's cache key ignores included files; hiprtc drops the lines
            raise ValueError("fake cupy.RawModule: the source includes a local file")
        self.options = tuple(options)
        self._sigs = {}
        for name, params in re.findall(r'extern "C" __global__ void (\w+)_##SUFFIX\(([^)]*)\)', code):
            plist = [" ".join(p.replace("\\", " ").split()) for p in params.split(",")]
            self._sigs[name] = [(p.rsplit(" ", 1)[0], p.rsplit(" ", 1)[1]) for p in plist]
        c_types = {"float": np.dtype(np.float32), "double": np.dtype(np.float64)}  # (np.dtype("float") is double)
        self._dtypes = {suffix: c_types[ctype] for ctype, suffix in
                        re.findall(r"^FFP_KERNELS\((float|double), (f32|f64)\)", code, re.M)}
        if not self._sigs or set(self._dtypes) != {"f32", "f64"}:
            raise ValueError("fake cupy.RawModule: no kernels found in the source")

    def get_function(self, name):
        from fastfp._cells_gpu import HostOps

        base, suffix = name.rsplit("_", 1)
        if base not in self._sigs or suffix not in self._dtypes:
            raise KeyError(f"fake cupy.RawModule: no kernel {name!r}")
        sig, dtype = self._sigs[base], self._dtypes[suffix]
        twin = getattr(HostOps(), base)

        def launch(grid, block, args):
            if len(args) != len(sig):
                raise TypeError(f"{name}: {len(args)} arguments, the kernel takes {len(sig)}")
            named = {}
            for (ctype, pname), a in zip(sig, args):
                if ctype == "int":
                    if type(a) is not np.int32:
                        raise TypeError(f"{name}: {pname} is a {type(a).__name__}, the kernel takes int (np.int32)")
                    named[pname] = int(a)
                else:
                    if not isinstance(a, DeviceArray):
                        raise TypeError(f"{name}: {pname} is a {type(a).__name__}, expected a device array")
                    if a.dtype != dtype or not a._a.flags.c_contiguous:
                        raise TypeError(f"{name}: {pname} is {a.dtype} (C-contiguous {a._a.flags.c_contiguous}), "
                                        f"the kernel reads {dtype} in C order")
                    named[pname] = a._a
            B, H = named["B"], named["H"]
            if grid[0] * block[0] < B * H:
                raise ValueError(f"{name}: {grid[0]} x {block[0]} threads for {B * H} elements")
            if "ax_rows" in named and named["ax"].shape[0] != named["ax_rows"]:
                raise ValueError(f"{name}: ax_rows {named['ax_rows']}, but ax has {named['ax'].shape[0]} rows")
            out = named["out"]
            if out.shape[0] != B or out.shape[-1] not in (H, 2 * H):  # (B, H), the LSTM's (B, 2H)
                raise ValueError(f"{name}: B = {B}, H = {H}, but out has shape {out.shape}")
            import inspect

            takes = inspect.signature(twin).parameters
            twin(**{k: v for k, v in named.items() if k in takes})

        return launch


def _make_module():
    cp = _Namespace("cupy", np)
    cp.ndarray = DeviceArray
    cp.RawModule = _RawModule

    def asarray(a, dtype=None, order=None):
        if isinstance(a, DeviceArray):
            return a if dtype is None or a.dtype == dtype else DeviceArray(a._a.astype(dtype))
        return DeviceArray(np.array(a, dtype=dtype, order=order or "K", copy=True))

    def asnumpy(a, *args, **kwargs):
        return a._a.copy() if isinstance(a, DeviceArray) else np.asarray(a)

    cp.asarray = asarray
    cp.array = asarray
    cp.asnumpy = asnumpy

    class _Device:
        def __init__(self, index=0):
            self.id = index

        @property
        def mem_info(self):
            return (8 << 30, 16 << 30)  # (free, total) bytes

        def synchronize(self):
            pass

    cuda = types.ModuleType("cupy.cuda")
    cuda.Device = _Device
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    cp.cuda = cuda
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0, used_bytes=lambda: 0)
    cp.__version__ = "0+fake"
    return cp


def install(monkeypatch):
    """Make ``import cupy`` give the fake and fastfp's GPU backend run over it; returns the module."""
    import fastfp._cells_gpu as cells_gpu
    from fastfp import backends

    cp = _make_module()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cp.cuda)
    # the real launch layer, over the fake RawModule (which runs the kernels' NumPy twins)
    composition = cells_gpu.DeviceCells(cp, cells_gpu.CudaOps())
    monkeypatch.setattr(cells_gpu, "device_cells", lambda: composition)
    monkeypatch.setattr(backends, "_cache", {})
    return cp
