"""Reading fastfp's own ``.npz`` files as untrusted input: no pickle, no unknown entries, and no
entry allowed to make the reader allocate more memory than the file can justify.

``np.load`` alone is not enough for a file from someone else: it accepts entries it will never be
asked for, reads whatever size a (deflated) entry expands to, and allocates an array from the
shape its header declares before finding out that the data are not there."""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from math import prod

import numpy as np
from numpy.lib import format as npy_format

from .errors import FileFormatError

__all__ = ["read_npz", "memory_limit_bytes", "format_version", "text_entry", "json_object_entry"]


def memory_limit_bytes() -> int:
    """Half the memory this process may use (the machine's, or a smaller cgroup limit, as in a
    container): the most one file's arrays may expand to."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a 16 GiB machine
        total = 16 << 30
    for limit_file in _cgroup_limit_files():
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total) // 2


def _cgroup_limit_files() -> list[str]:
    """The memory-limit files of this process's cgroups (v2 and v1), own group first, then the root."""
    files = []
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, group = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    files.append(f"/sys/fs/cgroup{group.rstrip('/')}/memory.max")
                elif "memory" in controllers.split(","):
                    files.append(f"/sys/fs/cgroup/memory{group.rstrip('/')}/memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    return files + ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _entry_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, name: str):
    """(shape, dtype) that entry ``name`` declares, checked against the bytes it holds."""
    with zf.open(info) as fh:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
        else:
            raise FileFormatError(f"{where}: entry {name!r} is a .npy of version {version}, expected 1.0 or 2.0")
        header = fh.tell()
    if dtype.hasobject:
        raise FileFormatError(
            f"{where}: entry {name!r} holds Python objects (dtype {dtype}); fastfp never unpickles a file"
        )
    declared = prod(shape) * dtype.itemsize
    if declared != info.file_size - header:
        raise FileFormatError(
            f"{where}: entry {name!r} declares shape {shape} of {dtype} ({declared} bytes) but holds "
            f"{info.file_size - header} bytes; the file is damaged"
        )
    return shape, dtype


def read_npz(path, *, where: str, kind: str = "NumPy .npz", marker: str | None = None, known=None,
             newest: int | None = None) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` at ``path``, as arrays, after checking it can be read safely.

    Parameters
    ----------
    path : str or os.PathLike
    where : str
        How error messages name the file (e.g. ``"argument 'path': run.npz"``).
    kind : str
        What the format is called (``"fastfp params file"``).
    marker : str, optional
        The entry that every file of the format has (its format version).
    known : collection of str, optional
        The entry names this format has; any other entry is an error (a misspelt key must not be
        ignored silently). None: any names (a state dict, whose keys the caller checks).
    newest : int, optional
        With ``marker``: the newest format version this fastfp reads. The version is checked
        before the entry names, so a newer file asks for an upgrade rather than listing the
        entries its version added as unknown.

    Raises
    ------
    FileFormatError
        Not a zip of ``.npy`` entries, no ``marker``, a newer version, an unknown entry, object
        arrays, a header that does not match its data, or arrays that would expand past
        :func:`memory_limit_bytes`.
    """
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise FileFormatError(f"{where} is not a readable .npz (zip) file ({exc}){_what_it_is(path)}") from None
    with zf:
        infos = zf.infolist()
        not_npy = [i.filename for i in infos if not i.filename.endswith(".npy")]
        if not_npy:
            raise FileFormatError(f"{where}: entries {not_npy[:5]} are not .npy arrays; expected a NumPy .npz"
                                  f"{_what_it_is(path, [i.filename for i in infos])}")
        names = [i.filename[: -len(".npy")] for i in infos]
        repeated = sorted(n for n, count in Counter(i.filename for i in infos).items() if count > 1)
        if repeated:  # zipfile reads the last of same-named entries: the others would be lost unseen
            raise FileFormatError(f"{where} holds several zip entries named {', '.join(map(repr, repeated[:5]))}")
        if marker is not None and marker not in names:
            raise FileFormatError(f"{where} is not a {kind} (no {marker!r} entry){_what_it_is(path, names)}")
        if marker is not None and newest is not None:
            info = infos[names.index(marker)]
            if info.file_size > 4096:  # a 0-d integer is about 130 bytes
                raise FileFormatError(f"{where}: entry {marker!r} holds {info.file_size} bytes, expected a format version")
            try:
                _entry_header(zf, info, where, marker)
                with zf.open(info) as fh:
                    version = {marker: npy_format.read_array(fh, allow_pickle=False)}
            except FileFormatError:
                raise
            except Exception as exc:  # CRC errors, truncated deflate streams, bad headers
                raise FileFormatError(f"{where}: entry {marker!r} is unreadable ({type(exc).__name__}: {exc})") from None
            format_version(version, marker, where=where, kind=kind.removeprefix("fastfp ").removesuffix(" file"),
                           newest=newest)
        unknown = sorted(set(names) - set(known) - {marker}) if known is not None else []
        if unknown:
            raise FileFormatError(
                f"{where}: unknown entries {unknown}; this format has {sorted(known)} (a misspelt or foreign key?)"
            )
        total = sum(i.file_size for i in infos)
        limit = memory_limit_bytes()
        if total > limit:
            raise FileFormatError(
                f"{where}: its arrays expand to {_gib(total)}, more than half the memory this process may use "
                f"({_gib(limit)}); refusing to read it (a damaged or hostile file?)"
            )
        out = {}
        for info, name in zip(infos, names):
            try:
                _entry_header(zf, info, where, name)
                with zf.open(info) as fh:
                    out[name] = npy_format.read_array(fh, allow_pickle=False)
            except FileFormatError:
                raise
            except Exception as exc:  # CRC errors, truncated deflate streams, bad headers
                raise FileFormatError(f"{where}: entry {name!r} is unreadable ({type(exc).__name__}: {exc})") from None
        return out


# What a file that is not the format asked for most likely is, for the error (the marker entries
# of fastfp's two formats; a file of the one read where the other is expected is a common slip).
_FASTFP_FORMATS = {
    "__fastfp_params__": "a fastfp params / model file, written by save_params or fastfp convert: fastfp.load "
                         "and fastfp.load_params read it, and fastfp find takes it as WEIGHTS",
    "__fastfp_fixed_points_format__": "a fastfp FixedPoints file, written by FixedPoints.save or fastfp find -o: "
                                      "FixedPoints.load and fastfp analyze read it",
}


def _what_it_is(path, names=()) -> str:
    """'; it is ...' for a file of a known format, else ''."""
    for marker, text in _FASTFP_FORMATS.items():
        if marker in names:
            return f"; it is {text}"
    if any(n.endswith("data.pkl") for n in names):
        return "; it is a PyTorch torch.save file of weights, which fastfp.load reads"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return ""
    from .io_flax import is_msgpack_head  # the loader's own sniffing, imported late: it imports this module
    from .loading import _is_pickle_head, _looks_like_safetensors

    is_pickle = _is_pickle_head(head)
    if _looks_like_safetensors(head, is_pickle):
        return "; it looks like a safetensors file of weights, which fastfp.load reads"
    if is_pickle:
        return "; it looks like a pickle, which fastfp never unpickles"
    if is_msgpack_head(head):
        return "; it looks like a Flax msgpack file of weights, which fastfp.load reads"
    return ""


def format_version(entries: dict, marker: str, *, where: str, kind: str, newest: int) -> int:
    """The integer format version in ``entries[marker]``, refused unless it is 1..``newest``."""
    v = entries[marker]
    if v.shape != () or v.dtype.kind not in "iu":
        raise FileFormatError(
            f"{where}: entry {marker!r} is {v.dtype} of shape {v.shape}, expected an integer format version"
        )
    version = int(v)
    if version > newest:
        raise FileFormatError(
            f"{where} has {kind} format version {version}, but this fastfp reads versions up to {newest}; "
            "upgrade fastfp (pip install -U fastfp-rnn)"
        )
    if version < 1:
        raise FileFormatError(f"{where}: {kind} format version {version}, expected 1..{newest}")
    return version


def text_entry(entries: dict, name: str, *, where: str) -> str:
    """A 0-d string entry as ``str``."""
    v = entries[name]
    if v.shape != () or v.dtype.kind != "U":
        raise FileFormatError(f"{where}: entry {name!r} is {v.dtype} of shape {v.shape}, expected a string")
    return str(v)


def json_object_entry(entries: dict, name: str, *, where: str) -> dict:
    """A 0-d string entry holding a JSON object, as ``dict``."""
    import json

    text = text_entry(entries, name, where=where)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FileFormatError(f"{where}: entry {name!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{where}: entry {name!r} holds a JSON {type(value).__name__}, expected an object")
    return value
