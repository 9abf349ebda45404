"""Keep the BLAS that Numba calls single-threaded while a parallel Numba kernel runs.

Numba's ``np.dot`` calls SciPy's BLAS (on Linux wheels a private OpenBLAS, distinct from NumPy's).
When a kernel runs GEMMs on batch chunks inside ``prange``, a multi-threaded OpenBLAS would spawn
its own threads on top of Numba's; on few cores the two pools fight and every call pays several
milliseconds of spinning (measured: 8 ms on a 256 x 64 step that should take 0.1 ms). So the CPU
kernels run under ``single_threaded_blas()``, which sets that library to one thread and restores
the previous count afterwards (about 1 us). NumPy's own BLAS is not touched. Where SciPy's BLAS is
not an OpenBLAS we can find, this is a no-op.
"""

from __future__ import annotations

import ctypes
import glob
import os
from contextlib import contextmanager

_setter = None
_getter = None
_searched = False


def _find_scipy_openblas():
    global _setter, _getter, _searched
    _searched = True
    import scipy

    base = os.path.dirname(os.path.dirname(scipy.__file__))
    patterns = [
        os.path.join(base, "scipy.libs", "*openblas*"),
        os.path.join(os.path.dirname(scipy.__file__), ".dylibs", "*openblas*"),
    ]
    for path in sorted(p for pat in patterns for p in glob.glob(pat)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            setter = getattr(lib, prefix + "set_num_threads", None)
            getter = getattr(lib, prefix + "get_num_threads", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                _setter, _getter = setter, getter
                return


@contextmanager
def single_threaded_blas():
    """Context in which SciPy's BLAS (the one Numba calls) runs on one thread."""
    if not _searched:
        _find_scipy_openblas()
    if _setter is None:
        yield
        return
    previous = _getter()
    if previous == 1:
        yield
        return
    _setter(1)
    try:
        yield
    finally:
        _setter(previous)
