"""Read PyTorch ``torch.save`` checkpoints without importing torch, and without running their code.

A checkpoint written by ``torch.save`` (torch >= 1.6, the default zip format) is a zip archive::

    <archive>/data.pkl      a pickle of the saved object (tensors are references to storages)
    <archive>/data/<key>    the raw bytes of each storage
    <archive>/byteorder     'little' or 'big' (absent in old files: little)
    <archive>/version ...

Unpickling runs whatever callables the pickle names, so a checkpoint from an untrusted source can
run arbitrary code under ``torch.load(weights_only=False)`` or ``pickle.load``. :func:`read_torch_state_dict`
uses a restricted unpickler instead: the only globals it resolves are ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor_v3`` / ``_rebuild_tensor`` /
``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` and the storage-type and dtype markers
(``torch.FloatStorage``, ``torch.float32``, ...). Each is mapped to a harmless stand-in of this module
that builds a NumPy array from the storage bytes; any other global (``os.system``, ``builtins.eval``,
``torch.nn.Linear``, ...) stops the read with :class:`~fastfp.errors.FileFormatError` before
anything is called.

:func:`load_torch_rnn` picks one recurrent layer of a ``torch.nn.RNN`` / ``GRU`` / ``LSTM`` (or
``RNNCell`` / ``GRUCell`` / ``LSTMCell``) out of a state dict and returns a :class:`fastfp.model.Model`
(with the classifier's embedding and linear readout when they can be identified unambiguously).
fastfp's :class:`~fastfp.params.RNNParams` uses PyTorch's layout and gate orders, so no weight is
reordered.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections import Counter

import numpy as np

from .errors import FileFormatError
from .model import Model
from .state_dict import model_from_state_dict

__all__ = ["read_torch_state_dict", "load_torch_rnn"]

# First bytes of a legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) torch file: pickle
# protocol 2 followed by the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# A tensor may expand its storage (stride 0) into more elements than the storage holds; beyond this
# many bytes such an expansion is refused rather than materialised.
_MAX_EXPANDED_BYTES = 1 << 28
_MAX_NESTING = 100
_MAX_PICKLE_BYTES = 1 << 26  # a state dict's pickle is small: it holds references, not data


# ----------------------------------------------------------------------------- stand-ins
class _Kind:
    """Marker standing for a torch storage type or dtype (never callable, no state)."""

    __slots__ = ("torch_name", "dtype", "bfloat16", "untyped")

    def __init__(self, torch_name, dtype, bfloat16=False, untyped=False):
        self.torch_name = torch_name
        self.dtype = np.dtype(dtype)  # little-endian element type as stored
        self.bfloat16 = bfloat16
        self.untyped = untyped

    def __setstate__(self, state):  # BUILD on a marker
        raise pickle.UnpicklingError(f"unexpected state for {self.torch_name}")

    def __repr__(self):
        return self.torch_name


def _kinds():
    table = [
        # storage type, dtype names, numpy dtype
        ("FloatStorage", ("float32", "float"), "<f4"),
        ("DoubleStorage", ("float64", "double"), "<f8"),
        ("HalfStorage", ("float16", "half"), "<f2"),
        ("BFloat16Storage", ("bfloat16",), "<u2"),
        ("LongStorage", ("int64", "long"), "<i8"),
        ("IntStorage", ("int32", "int"), "<i4"),
        ("ShortStorage", ("int16", "short"), "<i2"),
        ("CharStorage", ("int8",), "i1"),
        ("ByteStorage", ("uint8",), "u1"),
        ("BoolStorage", ("bool",), "u1"),
    ]
    storages, dtypes = {}, {}
    for storage_name, dtype_names, np_dtype in table:
        bf16 = storage_name == "BFloat16Storage"
        storages[storage_name] = _Kind(f"torch.{storage_name}", np_dtype, bfloat16=bf16)
        kind = _Kind(f"torch.{dtype_names[0]}", np_dtype, bfloat16=bf16)
        for name in dtype_names:
            dtypes[name] = kind
    return storages, dtypes


_STORAGE_KINDS, _DTYPE_KINDS = _kinds()
_BOOL_KINDS = {id(_STORAGE_KINDS["BoolStorage"]), id(_DTYPE_KINDS["bool"])}
_UNTYPED = _Kind("torch.UntypedStorage", "u1", untyped=True)


class _Storage:
    """A storage referenced by a persistent id: its element kind and its elements (a 1-D array)."""

    __slots__ = ("key", "kind", "numel", "blob")

    def __init__(self, key, kind, numel, blob):
        self.key, self.kind, self.numel, self.blob = key, kind, numel, blob

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"unexpected state for storage {self.key!r}")


class _Tensor:
    """A rebuilt tensor: a NumPy array that owns its data."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __setstate__(self, state):
        raise pickle.UnpicklingError("unexpected state for a tensor")


def _is_int(value) -> bool:
    return type(value) is int or type(value) is bool


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a tensor state dict, each to a stand-in of this module."""

    def __init__(self, data: bytes, reader: "_Archive"):
        super().__init__(io.BytesIO(data))
        self._reader = reader
        self._rebuilders = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor_v3"): self._rebuild_tensor_v3,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
        }

    # -- globals
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (module, name) in self._rebuilders:
            return self._rebuilders[(module, name)]
        if module == "torch":
            if name in _STORAGE_KINDS:
                return _STORAGE_KINDS[name]
            if name in _DTYPE_KINDS:
                return _DTYPE_KINDS[name]
            if name == "UntypedStorage":
                return _UNTYPED
        if module == "torch.storage" and name in ("UntypedStorage", "_UntypedStorage"):
            return _UNTYPED
        if getattr(self._reader, "torchscript", False):
            hint = (
                "; the file is a TorchScript archive (torch.jit.save): load it with torch.jit.load and "
                "save its weights with torch.save(module.state_dict(), path)"
            )
        elif module.startswith("torch.nn"):
            hint = (
                "; the file holds a pickled module, not a state dict: re-save it with "
                "torch.save(module.state_dict(), path)"
            )
        else:  # most often a whole model of the user's own class, saved with torch.save(model)
            hint = (
                "; if the file holds a whole pickled model (torch.save(model)), re-save its weights with "
                "torch.save(model.state_dict(), path)"
            )
        raise FileFormatError(
            f"argument 'path': {self._reader.path!s} refers to the global {module}.{name}, which "
            f"fastfp refuses to load (only tensors, state dicts and plain containers are read){hint}"
        )

    # -- storages
    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise FileFormatError(
                f"argument 'path': {self._reader.path!s} has an unsupported persistent id {_short(pid)}"
            )
        _, kind, key, location, numel = pid
        if not isinstance(kind, _Kind) or not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise FileFormatError(
                f"argument 'path': {self._reader.path!s} has a malformed storage reference {_short(pid)}"
            )
        if kind.torch_name.startswith("torch.") and kind not in _STORAGE_KINDS.values() and not kind.untyped:
            raise FileFormatError(
                f"argument 'path': {self._reader.path!s}: storage {key!r} has a dtype marker "
                f"({kind!r}) where a storage type was expected"
            )
        return self._reader.storage(key, kind, numel)

    # -- tensors
    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None, *extra):
        return self._build(storage, storage_offset, size, stride, None, metadata, extra)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, dtype=None, metadata=None, *extra):
        if not isinstance(dtype, _Kind) or dtype.untyped:
            raise FileFormatError(f"argument 'path': {self._reader.path!s}: tensor with unsupported dtype {_short(dtype)}")
        return self._build(storage, storage_offset, size, stride, dtype, metadata, extra)

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return self._build(storage, storage_offset, size, stride, None, None, ())

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, *extra):
        if not isinstance(data, _Tensor):
            raise FileFormatError(f"argument 'path': {self._reader.path!s}: a parameter without tensor data")
        return data

    def _build(self, storage, offset, size, stride, dtype_kind, metadata, extra):
        path = self._reader.path
        if extra:
            raise FileFormatError(f"argument 'path': {path!s}: tensor rebuilt with unexpected extra arguments")
        if not isinstance(storage, _Storage):
            raise FileFormatError(f"argument 'path': {path!s}: tensor without a storage (got {_short(storage)})")
        key = storage.key
        if metadata:
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor on storage {key!r} carries metadata {_short(metadata)} "
                "(conjugate/negative bits), which fastfp does not support"
            )
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
                and all(_is_int(v) for v in size + stride) and _is_int(offset)):
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor on storage {key!r} has malformed offset/shape/strides "
                f"({_short(offset)}, {_short(size)}, {_short(stride)})"
            )
        if offset < 0 or any(v < 0 for v in size) or any(v < 0 for v in stride):
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor on storage {key!r} has a negative offset, size or "
                f"stride (offset {offset}, shape {size}, strides {stride})"
            )
        kind = storage.kind
        if dtype_kind is not None and kind.untyped:
            kind = dtype_kind
        elif dtype_kind is not None and dtype_kind.dtype != kind.dtype:
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor of dtype {dtype_kind!r} on storage {key!r} of type {kind!r}"
            )
        if kind.untyped:
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor on untyped storage {key!r} without a dtype"
            )
        itemsize = kind.dtype.itemsize
        # number of elements of the storage (an untyped storage counts bytes)
        numel = storage.numel // itemsize if storage.kind.untyped else storage.numel
        count = math.prod(size)
        if count == 0:
            return _Tensor(np.zeros(size, dtype=_result_dtype(kind)))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= numel:
            raise FileFormatError(
                f"argument 'path': {path!s}: storage {key!r} holds {numel} elements, too few for a tensor "
                f"of shape {size} with strides {stride} at offset {offset} (needs {last + 1})"
            )
        if count > numel and count * itemsize > _MAX_EXPANDED_BYTES:
            raise FileFormatError(
                f"argument 'path': {path!s}: tensor of shape {size} expands storage {key!r} of {numel} "
                f"elements beyond {_MAX_EXPANDED_BYTES} bytes"
            )
        self._reader.charge(count * np.dtype(_result_dtype(kind)).itemsize)
        flat = self._reader.elements(storage, kind, numel, self._reader.byteorder)
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
        )
        array = np.array(view, order="C")
        return _Tensor(array)


def _result_dtype(kind: _Kind) -> np.dtype:
    if kind.bfloat16:
        return np.dtype(np.float32)
    if id(kind) in _BOOL_KINDS:
        return np.dtype(bool)
    return kind.dtype.newbyteorder("=")


def _short(value, limit=80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- the archive
class _Archive:
    def __init__(self, path, zf: zipfile.ZipFile):
        self.path = path
        self.zf = zf
        names = zf.namelist()
        self.torchscript = any("/code/__torch__/" in n or n.endswith("/constants.pkl") for n in names)
        roots = sorted({n[: -len("data.pkl")] for n in names if n.endswith("data.pkl") and n.count("/") == 1})
        if not roots:
            hint = ""
            if any(n.endswith("constants.pkl") for n in names):
                hint = " (it looks like a TorchScript archive from torch.jit.save; save a state dict instead)"
            elif any(n.endswith(".npy") for n in names):
                hint = " (it looks like a NumPy .npz file; fastfp.load_params reads fastfp's own .npz files)"
            raise FileFormatError(
                f"argument 'path': {path!s} is a zip archive without '<archive>/data.pkl', so not a "
                f"torch.save checkpoint{hint}"
            )
        if len(roots) > 1:
            raise FileFormatError(
                f"argument 'path': {path!s} holds several pickles ({', '.join(r + 'data.pkl' for r in roots)}); "
                "expected one torch.save archive"
            )
        repeated = sorted(n for n, count in Counter(names).items() if count > 1)
        if repeated:  # zipfile reads the last of same-named entries: the others would be lost unseen
            raise FileFormatError(
                f"argument 'path': {path!s} holds several zip entries named {', '.join(map(repr, repeated[:5]))}"
            )
        self.root = roots[0]
        self.names = set(names)
        self.byteorder = "<"
        if self.root + "byteorder" in self.names:
            order = zf.read(self.root + "byteorder").strip()
            if order == b"big":
                self.byteorder = ">"
            elif order != b"little":
                raise FileFormatError(
                    f"argument 'path': {path!s} has byteorder {order[:20]!r}, expected 'little' or 'big'"
                )
        self._blobs: dict = {}
        self._elements: dict = {}
        self._materialised = 0
        self._storage_bytes = sum(
            zf.getinfo(n).file_size for n in names if n.startswith(self.root + "data/")
        )

    def pickle_bytes(self) -> bytes:
        name = self.root + "data.pkl"
        if self.zf.getinfo(name).file_size > _MAX_PICKLE_BYTES:
            raise FileFormatError(
                f"argument 'path': {self.path!s}: {name!r} declares {self.zf.getinfo(name).file_size} bytes, "
                f"more than the {_MAX_PICKLE_BYTES} a state dict's pickle needs"
            )
        with self.zf.open(name) as fh:
            data = fh.read(_MAX_PICKLE_BYTES + 1)
        if len(data) > _MAX_PICKLE_BYTES:
            raise FileFormatError(f"argument 'path': {self.path!s}: {name!r} is larger than {_MAX_PICKLE_BYTES} bytes")
        return data

    def charge(self, nbytes: int) -> None:
        """Count the bytes of arrays built so far; refuse a file whose tensors, expanded from
        shared or stride-0 storages, add up to far more than its storages hold."""
        self._materialised += nbytes
        limit = max(4 * self._storage_bytes, _MAX_EXPANDED_BYTES)
        if self._materialised > limit:
            raise FileFormatError(
                f"argument 'path': {self.path!s}: its tensors expand to more than {limit} bytes in all "
                f"(the storages hold {self._storage_bytes}); refusing to build them"
            )

    def storage(self, key: str, kind: _Kind, numel: int) -> _Storage:
        name = f"{self.root}data/{key}"
        if name not in self.names:
            raise FileFormatError(
                f"argument 'path': {self.path!s} lacks the storage blob {name!r} (storage key {key!r})"
            )
        needed = numel * kind.dtype.itemsize
        blob = self._blobs.get(key)
        if blob is None:
            declared = self.zf.getinfo(name).file_size
            if declared > needed + 4096:  # a storage never needs more than its elements (+ alignment)
                raise FileFormatError(
                    f"argument 'path': {self.path!s}: storage blob {name!r} declares {declared} bytes but the "
                    f"tensors reference {needed}; refusing to decompress it"
                )
            with self.zf.open(name) as fh:
                blob = fh.read(needed + 4096)  # bounded even if the declared size lies
            self._blobs[key] = blob
        if len(blob) < needed:
            raise FileFormatError(
                f"argument 'path': {self.path!s}: storage blob {name!r} has {len(blob)} bytes, expected "
                f"{needed} ({numel} elements of {kind!r})"
            )
        return _Storage(key, kind, numel, blob)

    def elements(self, storage: _Storage, kind: _Kind, numel: int, order: str) -> np.ndarray:
        cache_key = (storage.key, id(kind))
        flat = self._elements.get(cache_key)
        if flat is None:
            raw = np.frombuffer(storage.blob, dtype=kind.dtype.newbyteorder(order), count=numel)
            if kind.bfloat16:
                flat = (raw.astype(np.uint32) << 16).view(np.float32)
            elif id(kind) in _BOOL_KINDS:
                flat = raw != 0
            else:
                flat = raw.astype(kind.dtype.newbyteorder("="))  # a native-order copy
            self._elements[cache_key] = flat
        return flat


def _key_path(keys) -> str:
    return "".join(f"[{k!r}]" for k in keys) or "the saved object"


def _flatten(obj, keys: tuple, out: dict, origins: dict, skipped: dict, seen: set, path) -> None:
    """Tensors of ``obj`` -> ``out`` under dotted names; ``origins`` keeps each name's key path and
    ``skipped`` the type of each entry that is not a tensor (checked by model_from_state_dict)."""
    name = ".".join(map(str, keys))
    if isinstance(obj, _Tensor):
        if name in out:
            # {'rnn.w': a, 'rnn': {'w': b}} both flatten to 'rnn.w': keeping either would lose the other
            raise FileFormatError(
                f"argument 'path': {path!s}: entries {_key_path(origins[name])} and {_key_path(keys)} both "
                f"flatten to the key {name!r}; re-save the checkpoint with one of them"
            )
        out[name], origins[name] = obj.array, keys
        return
    if not isinstance(obj, dict) and keys:
        skipped[name] = type(obj).__name__  # ints, strings, lists ...; a list is walked for tensors below
    if not isinstance(obj, (dict, list, tuple)):
        return
    if len(keys) > _MAX_NESTING:
        raise FileFormatError(f"argument 'path': {path!s} nests containers deeper than {_MAX_NESTING} levels")
    if id(obj) in seen:
        # Visited already (a cycle, or a container shared through the pickle memo): walking it
        # again would let a tiny file (a = [a, a] nested n times) cost 2^n steps.
        return
    seen.add(id(obj))
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        _flatten(value, keys + (key,), out, origins, skipped, seen, path)


def _open_archive(path) -> tuple:
    with open(path, "rb") as fh:  # OSError (missing file, ...) propagates unchanged
        data = fh.read()
    if data.startswith(_LEGACY_MAGIC):
        raise FileFormatError(
            f"argument 'path': {path!s} is a legacy PyTorch file (torch < 1.6 or "
            "_use_new_zipfile_serialization=False), which fastfp does not read; re-save it with "
            "torch.save(state_dict, path) from torch >= 1.6"
        )
    if not data.startswith(b"PK"):
        raise FileFormatError(
            f"argument 'path': {path!s} is not a torch.save checkpoint (not a zip archive: starts with "
            f"{data[:8]!r})"
        )
    return data


def read_torch_state_dict(path) -> dict:
    """Read the tensors of a ``torch.save`` checkpoint as NumPy arrays, without torch.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save`` (zip format, torch >= 1.6), typically of a
        ``module.state_dict()`` or of a dict holding one (``{'state_dict': ..., 'epoch': ...}``).

    Returns
    -------
    dict of str to ndarray
        Every tensor of the saved object, keyed by its dotted path (``'rnn.weight_hh_l0'``,
        ``'state_dict.rnn.weight_hh_l0'``, ``'layers.0'`` for a list item; ``''`` for a bare tensor).
        Arrays are C-contiguous and own their data; float32/float64/float16 and integer tensors keep
        their dtype, bfloat16 becomes float32 (exactly) and bool stays bool. Non-tensor entries
        (ints, strings, ...) are left out (:func:`load_torch_rnn` refuses one that stands where a
        weight is needed, or a list under a parameter's name).

    Raises
    ------
    FileFormatError
        The file is not a zip-format torch checkpoint (legacy format, damaged, truncated, another
        format), a storage is missing or too small, two entries flatten to the same dotted key
        (``'rnn.w'`` and ``['rnn']['w']``), or the pickle names any global other than the
        tensor-rebuilding functions, storage types and ``collections.OrderedDict`` (for example a
        whole pickled ``nn.Module``, or malicious code); nothing in the pickle is ever executed.
    """
    return _read_state_dict(path)[0]


def _read_state_dict(path) -> tuple:
    """(tensors, {dotted key: type name} of the entries that are not tensors) of a checkpoint."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        from .errors import ArgumentTypeError

        raise ArgumentTypeError(f"argument 'path': got {type(path).__name__}, expected a str or os.PathLike")
    data = _open_archive(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            archive = _Archive(path, zf)
            pickled = archive.pickle_bytes()
            obj = _RestrictedUnpickler(pickled, archive).load()
            out: dict = {}
            skipped: dict = {}
            _flatten(obj, (), out, {}, skipped, set(), path)
    except FileFormatError:
        raise
    except RecursionError:
        raise FileFormatError(f"argument 'path': {path!s} is nested too deeply to read") from None
    except Exception as exc:  # zipfile/zlib/pickle/struct damage, malformed arguments, ...
        raise FileFormatError(
            f"argument 'path': {path!s} is not a readable torch.save checkpoint "
            f"({type(exc).__name__}: {_short(str(exc), 200)})"
        ) from None
    return out, skipped


# ----------------------------------------------------------------------------- RNN layers
def load_torch_rnn(path, *, layer: int | None = None, direction: int | None = None, key_prefix: str | None = None,
                   nonlinearity: str | None = None, embedding_key=None, readout_key=None) -> Model:
    """Load one recurrent layer of a PyTorch checkpoint (state dict) as a :class:`fastfp.Model`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``torch.save`` file of a state dict holding a ``torch.nn.RNN`` / ``GRU`` / ``LSTM``
        (keys ``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``)
        or an ``RNNCell`` / ``GRUCell`` / ``LSTMCell`` (``weight_ih``, ``weight_hh``, ``bias_ih``,
        ``bias_hh``), possibly under a module prefix (``'rnn.'``, ``'encoder.gru.'``) and possibly
        nested (``{'state_dict': ...}``). Read with :func:`read_torch_state_dict` (torch not needed,
        nothing executed).
    layer, direction : int, optional
        Which layer of a stacked RNN, and 0 (forward) or 1 (``_reverse``, for bidirectional RNNs; the
        returned cell is the backward pass's: ``fastfp.rollout`` steps through ``xs`` as given, so
        ``rollout(params, None, xs[:, ::-1])[:, ::-1]`` gives torch's backward states). The input of layer k > 0 is the output
        of layer k - 1 (both directions concatenated for a bidirectional RNN). None (default): 0,
        with a warning when the RNN has several layers (directions) to choose from.
    key_prefix : str, optional
        The RNN module's key prefix (``'rnn'`` or ``'rnn.'``; ``''`` for the top level). Needed only
        when the state dict holds several RNNs.
    nonlinearity : {'tanh', 'relu'}, optional
        Activation of a vanilla RNN, which a state dict does not record: default 'tanh' (PyTorch's
        default); pass 'relu' for ``nn.RNN(nonlinearity='relu')``.
    embedding_key, readout_key : str or False, optional
        Key of the embedding weight (V, M) / the linear readout weight (C, H) to use; ``False`` for
        none; by default they are looked for (see Notes).

    Returns
    -------
    Model
        ``params`` (cell 'vanilla' for G = 1, 'gru' for G = 3 (PyTorch's GRU applies the reset after
        the recurrent matmul), 'lstm' for G = 4, with state [h, c]); ``embedding`` when a 2-D
        ``*embed*.weight`` with M columns is the only one (layer 0 only); ``readout_weight`` /
        ``readout_bias`` when exactly one other 2-D ``*.weight`` outside any RNN has H columns (and
        the layer is the last, forward-only one). ``metadata`` records the keys used.

    Raises
    ------
    FileFormatError
        Unreadable file, no RNN or several RNNs without ``key_prefix``, layer/direction not
        present, a gate count G = rows(w_hh) / cols(w_hh) other than 1, 3, 4, shapes that disagree
        (the readout bias included), a missing key (with the similar keys found), a misspelt bias
        key, a non-tensor where a weight belongs, cell and stacked-RNN keys under one prefix.
    NonFiniteError, ...
        The errors of :class:`RNNParams` (NaN weights, ...), with the file and keys named.
    """
    sd, skipped = _read_state_dict(path)
    return model_from_state_dict(
        sd, f"argument 'path': {path!s}", fmt="torch.save state dict", torch_convention=True, file=str(path),
        skipped=skipped,
        layer=layer, direction=direction, key_prefix=key_prefix, nonlinearity=nonlinearity,
        embedding_key=embedding_key, readout_key=readout_key,
    )
