"""Compile one Python loop body as both a serial and a parallel Numba kernel.

Numba's on-disk cache names its entries after the function's qualified name and line, so two
dispatchers made from the *same* function object overwrite (and load) each other's machine code:
the "parallel" kernel can silently run the serial code. Each variant therefore gets a copy of the
function under its own name.
"""

from __future__ import annotations

import types

from numba import njit


def _renamed(func, suffix):
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix, func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__ = func.__doc__
    copy.__module__ = func.__module__
    return copy


def serial_and_parallel(func):
    """(serial, parallel) cached Numba dispatchers of ``func`` (a body written with ``prange``)."""
    return (
        njit(cache=True)(_renamed(func, "_serial")),
        njit(cache=True, parallel=True)(_renamed(func, "_parallel")),
    )
