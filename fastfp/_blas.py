"""Control the thread pools of the OpenBLAS copies that NumPy and SciPy (and so Numba) call.

On few cores, OpenBLAS worker threads keep spinning for a while after each multi-threaded call.
Anything parallel that runs right after (a Numba ``prange`` kernel, or fastfp's own solver
threads) then fights them for the cores: measured +8 ms on a 256 x 64 step that takes 0.2 ms, and
a 2-thread batched solve that became slower than the serial one. Code that parallelises itself
therefore runs under ``blas_threads(1)``, which sets the pools to one thread and restores the
previous counts afterwards (about 1 us per library). Libraries that are not OpenBLAS wheels (MKL,
Accelerate) are left alone.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from contextlib import contextmanager

_controls: dict[str, tuple] | None = None

# (package whose wheel ships the library, folder glob, symbol suffixes to try)
_CANDIDATES = {
    "scipy": ("scipy", ("scipy.libs", "scipy/.dylibs"), ("", "_")),
    "numpy": ("numpy", ("numpy.libs", "numpy/.dylibs"), ("64_", "_64_")),
}


def _find_controls() -> dict[str, tuple]:
    found = {}
    for name, (package, folders, suffixes) in _CANDIDATES.items():
        try:
            module = __import__(package)
        except ImportError:
            continue
        site = os.path.dirname(os.path.dirname(module.__file__))
        paths = sorted(p for folder in folders for p in glob.glob(os.path.join(site, folder, "*openblas*")))
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for suffix in suffixes:
                setter = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
                getter = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    found[name] = (setter, getter)
                    break
            if name in found:
                break
    return found


_lock = threading.Lock()
_depth: dict[str, int] = {}
_saved: dict[str, int] = {}


@contextmanager
def blas_threads(n: int, libs=("numpy", "scipy")):
    """Context in which the named OpenBLAS pools run on ``n`` threads.

    The thread counts are process-wide, so concurrent and nested uses are reference-counted: the
    first one in sets the count and the last one out restores it (a concurrent caller asking for
    another ``n`` meanwhile gets the count already set).
    """
    global _controls
    with _lock:
        if _controls is None:
            if "scipy" in libs:
                import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so that it can be found)
            _controls = _find_controls()
        entered = [name for name in libs if name in _controls]
        for name in entered:
            setter, getter = _controls[name]
            if _depth.get(name, 0) == 0:
                _saved[name] = getter()
                if _saved[name] != n:
                    setter(n)
            _depth[name] = _depth.get(name, 0) + 1
    try:
        yield
    finally:
        with _lock:
            for name in entered:
                _depth[name] -= 1
                if _depth[name] == 0:
                    setter, getter = _controls[name]
                    if getter() != _saved[name]:
                        setter(_saved[name])


def single_threaded_blas():
    """SciPy's BLAS (the one Numba's ``np.dot`` calls) on one thread."""
    return blas_threads(1, libs=("scipy",))
