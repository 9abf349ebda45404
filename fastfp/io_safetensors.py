"""Read ``.safetensors`` files with the standard library and NumPy only (the ``safetensors`` package
is not needed and not imported).

Layout of a safetensors file::

    8 bytes     N, the header length (unsigned 64-bit little-endian integer)
    N bytes     a UTF-8 JSON object {name: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]},
                                     "__metadata__": {str: str}}  (the metadata entry is optional)
    the rest    the byte buffer; tensor ``name`` is buffer[begin:end], C order, little-endian

Nothing in the file is executed: the header is plain JSON and the tensors are raw bytes. Every
field is checked before any tensor is built, and every problem raises
:class:`~fastfp.errors.FileFormatError` naming the file and, where there is one, the tensor key.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ._npz import memory_limit_bytes
from .errors import ArgumentTypeError, FileFormatError, MemoryLimitError

__all__ = ["read_safetensors", "SAFETENSORS_DTYPES"]

# safetensors dtype name -> little-endian NumPy dtype of the stored elements
SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # converted to float32 exactly
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "u1",  # converted to bool
}
# A header longer than this is refused (the reference implementation's limit is 100 MB).
_MAX_HEADER = 100_000_000
_MAX_NDIM = 32  # NumPy 1.x's limit (2.x allows 64)
_METADATA = "__metadata__"


def _short(value, limit=80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return type(value) is int


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; see :func:`read_safetensors`."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"argument 'path': got {type(path).__name__}, expected a str or os.PathLike")
    where = f"argument 'path': {os.fsdecode(path) if not isinstance(path, str) else path}"
    with open(path, "rb") as fh:  # OSError (missing file, ...) propagates unchanged
        # The file is read whole and each tensor copied out of it: twice its size at the peak,
        # held to the limit the npz reader uses (half this process's memory).
        declared = os.fstat(fh.fileno()).st_size
        limit = memory_limit_bytes()
        if 2 * declared > limit:
            raise MemoryLimitError(
                f"{where}: {declared / 2**30:.2f} GiB of safetensors take about twice that to read, more than "
                f"the {limit / 2**30:.2f} GiB fastfp lets one file use (half this process's memory)"
            )
        data = fh.read()
    size = len(data)
    if size < 8:
        raise FileFormatError(
            f"{where} is not a safetensors file: {size} bytes, shorter than the 8-byte header length"
        )
    n = int.from_bytes(data[:8], "little", signed=False)
    if n > size - 8:
        raise FileFormatError(
            f"{where}: safetensors header length {n} is beyond the end of the file ({size} bytes)"
        )
    if n > _MAX_HEADER:
        raise FileFormatError(f"{where}: safetensors header length {n} exceeds the limit of {_MAX_HEADER} bytes")
    if n < 2:
        raise FileFormatError(f"{where}: safetensors header length {n} is too short for a JSON object")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FileFormatError(
            f"{where}: the safetensors header is not valid UTF-8 JSON ({type(exc).__name__}: {_short(str(exc), 120)})"
        ) from None
    if not isinstance(header, dict):
        raise FileFormatError(
            f"{where}: the safetensors header is a JSON {type(header).__name__}, expected an object"
        )
    metadata = header.get(_METADATA, {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise FileFormatError(
            f"{where}: the safetensors {_METADATA!r} entry is a {type(metadata).__name__}, expected an object"
        )
    start = 8 + n
    buffer_size = size - start
    specs = []
    for key, entry in header.items():
        if key == _METADATA:
            continue
        what = f"{where}: tensor {key!r}"
        if not isinstance(entry, dict):
            raise FileFormatError(f"{what}: header entry is {_short(entry)}, expected an object")
        for field in ("dtype", "shape", "data_offsets"):
            if field not in entry:
                raise FileFormatError(f"{what}: header entry lacks {field!r}")
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES:
            raise FileFormatError(
                f"{what}: unsupported dtype {_short(dtype_name)}; fastfp reads "
                f"{', '.join(SAFETENSORS_DTYPES)}"
            )
        if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM and all(_is_int(v) and v >= 0 for v in shape)):
            raise FileFormatError(
                f"{what}: shape {_short(shape)} is not a list of at most {_MAX_NDIM} non-negative integers"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(v) for v in offsets)):
            raise FileFormatError(f"{what}: data_offsets {_short(offsets)} is not a pair of integers [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise FileFormatError(f"{what}: data_offsets [{begin}, {end}] are not 0 <= begin <= end")
        if end > buffer_size:
            raise FileFormatError(
                f"{what}: data_offsets [{begin}, {end}] reach beyond the data buffer of {buffer_size} bytes "
                f"(file truncated or offsets out of range)"
            )
        dtype = np.dtype(SAFETENSORS_DTYPES[dtype_name])
        count = math.prod(shape)
        if (end - begin) != count * dtype.itemsize:
            raise FileFormatError(
                f"{what}: data_offsets [{begin}, {end}] span {end - begin} bytes, but shape {shape} of "
                f"{dtype_name} needs {count * dtype.itemsize}"
            )
        specs.append((key, dtype_name, dtype, tuple(shape), count, begin))
    # Tensors must tile the buffer without overlap (as the reference reader demands): otherwise a
    # small file could point every entry at the same bytes and be copied many times over.
    position = 0
    for key, dtype_name, dtype, shape, count, begin in sorted(specs, key=lambda spec: spec[5]):
        if begin != position:
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor {key!r} starts at byte {begin} of the data buffer, expected "
                f"{position} (tensors must follow each other without gaps or overlap)"
            )
        position = begin + count * dtype.itemsize
    if position != buffer_size:
        raise FileFormatError(
            f"argument 'path': {path!s}: the tensors cover {position} bytes of a data buffer of {buffer_size}"
        )
    tensors: dict = {}
    for key, dtype_name, dtype, shape, count, begin in specs:
        try:
            raw = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin).reshape(shape)
            if dtype_name == "BF16":
                out = np.empty(shape, dtype=np.float32)
                out.view(np.uint32)[...] = raw.astype(np.uint32) << 16
            elif dtype_name == "BOOL":
                out = raw != 0
            else:
                out = raw.astype(dtype.newbyteorder("="), copy=True)
        except Exception as exc:  # pragma: no cover - every field was checked above
            raise FileFormatError(
                f"{where}: tensor {key!r} could not be read ({type(exc).__name__}: {_short(str(exc), 120)})"
            ) from None
        tensors[key] = out
    return tensors, metadata


def read_safetensors(path) -> dict:
    """Read every tensor of a ``.safetensors`` file as a NumPy array (torch and safetensors not needed).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict of str to ndarray
        In the order of the header. Arrays are C-contiguous, writeable and own their data;
        F64/F32/F16 and integer tensors keep their dtype (native byte order), BF16 becomes float32
        exactly (its bits shifted left by 16) and BOOL becomes bool. The header's ``__metadata__``
        is not returned.

    Raises
    ------
    FileFormatError
        The file is shorter than 8 bytes; the header length is beyond the file or above 100 MB;
        the header is not a UTF-8 JSON object (or repeats a key); a tensor entry lacks a field, has a
        dtype other than F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, a malformed shape, or
        data offsets out of order, beyond the buffer (truncated file) or not equal in length to
        ``prod(shape) * itemsize``. The message names the file and the tensor key.
    OSError
        The file cannot be opened.
    """
    return _read(path)[0]
