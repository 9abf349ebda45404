"""A short repr for result dataclasses that hold large arrays."""

from __future__ import annotations

import numpy as np


def short_repr(obj) -> str:
    """``Name(field=value, ...)`` with arrays of more than 6 numbers summarised by shape and dtype,
    so printing a result does not fill the screen (the full arrays are the attributes)."""
    from dataclasses import fields

    parts = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray) and v.size > 6:
            parts.append(f"{f.name}=<{v.dtype} array {v.shape}>")
        elif isinstance(v, np.ndarray):
            parts.append(f"{f.name}={np.array2string(v, precision=4, separator=', ')}")
        elif isinstance(v, (float, np.floating)):
            parts.append(f"{f.name}={float(v):.4g}")
        elif isinstance(v, (tuple, list)) and len(v) > 6:
            parts.append(f"{f.name}=<{type(v).__name__} of {len(v)}>")
        else:
            parts.append(f"{f.name}={v!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"
