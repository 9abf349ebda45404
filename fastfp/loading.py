"""``fastfp.load``: one entry point that turns a checkpoint, a module or a state dict into a :class:`Model`.

The format of a file is told from its first bytes, never from its name:

==================================  ==============================================================
first bytes                         format
==================================  ==============================================================
``PK\\x03\\x04`` (zip)               a ``torch.save`` checkpoint (has ``<archive>/data.pkl``), read by
                                    :func:`fastfp.load_torch_rnn`; a fastfp params ``.npz`` (has
                                    ``__fastfp_params__.npy``), read by :func:`fastfp.load_params`;
                                    or any other NumPy ``.npz``, whose named arrays form a state dict
8-byte length, then ``{``           a ``.safetensors`` file (a state dict), read by
                                    :func:`fastfp.io_safetensors.read_safetensors`
a msgpack map (0x80-0x8f, 0xde/0xdf) a Flax ``to_bytes`` file, read by :func:`fastfp.io_flax.load_flax`
                                    (needs the ``msgpack`` package: ``pip install 'fastfp-rnn[flax]'``)
legacy torch pickle magic           refused: re-save with torch >= 1.6's default zip format
anything else (or nothing)          refused, with the list of supported formats
==================================  ==============================================================

No file path imports torch, and nothing in a file is executed (torch pickles go through the restricted
unpickler of :mod:`fastfp.io_torch`, ``.npz`` files are read with ``allow_pickle=False``, safetensors
headers are plain JSON).

State dicts use PyTorch's key names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, optionally ``_reverse``; or ``weight_ih`` ... for a cell) and PyTorch's layout;
the layer is found by :func:`fastfp.state_dict.model_from_state_dict`, as for
:func:`fastfp.load_torch_rnn`. The number of gate blocks G = rows(w_hh) / cols(w_hh) gives the cell, except where it
cannot: G = 3 is PyTorch's ``nn.GRU`` (fastfp ``'gru'``, reset applied after the recurrent matmul)
for a torch checkpoint, an ``nn.Module`` or a dict of torch tensors, but for a safetensors file, a
plain ``.npz`` or a dict of NumPy arrays it may as well be a reset-before GRU (Keras
``reset_after=False``, Cho et al. 2014, the JAX research code), so there ``cell=`` must be given.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping

import numpy as np

from ._npz import _what_it_is, read_npz
from .errors import ArgumentTypeError, FastFPError, FileFormatError, InvalidOptionError, warn_user
from .io_safetensors import _MAX_HEADER, _read as _read_safetensors_with_metadata
from .io_flax import _find as _flax_cells, _normalise as _flax_normalise, is_msgpack_head, load_flax
from .io_torch import _LEGACY_MAGIC, load_torch_rnn
from .state_dict import _TORCH_NAMES, describe_gates, gru_after_only, model_from_state_dict
from .model import SHIPPED_PREFIX, Model, load_params, shipped_file
from .params import CELLS, GATE_ORDER, RNNParams

__all__ = ["load", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = (
    "a torch.save checkpoint of a state dict (zip format, torch >= 1.6)",
    "a fastfp params .npz (fastfp.save_params)",
    "a NumPy .npz of named arrays (a state dict with PyTorch key names)",
    "a .safetensors file (a state dict with PyTorch key names)",
    "a Flax flax.serialization.to_bytes file (msgpack) of linen/nnx cell params or a renn tree",
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_FASTFP_NPZ_ENTRY = "__fastfp_params__.npy"
_FIXED_POINTS_ENTRY = "__fastfp_fixed_points_format__.npy"


def _supported() -> str:
    return "supported formats: " + "; ".join(SUPPORTED_FORMATS)


# ============================================================================ entry point
def load(source, *, cell: str | None = None, layer: int | None = None, direction: int | None = None,
         key_prefix: str | None = None, nonlinearity: str | None = None,
         embedding_key=None, readout_key=None) -> Model:
    """Load one recurrent layer (and a classifier's embedding and readout) as a :class:`fastfp.Model`.

    Parameters
    ----------
    source
        A file path (str or os.PathLike): torch checkpoint, fastfp params ``.npz``, plain ``.npz``
        or ``.safetensors``, told apart by content (see the module docs); an in-memory
        ``torch.nn.Module`` (its ``state_dict()``; torch itself is never imported by fastfp); a dict of
        arrays with PyTorch key names (nested dicts give dotted keys, and two entries giving the same
        dotted key are an error; values that are not arrays, such as an epoch counter, are left out,
        but one where a weight is needed, or a list under a parameter's name, is an error); or an
        :class:`RNNParams` / :class:`Model`, returned as a Model.
    cell : str, optional
        The fastfp cell (one of ``fastfp.CELLS``) when the source cannot tell: required for a 3-gate
        layer from a safetensors file, a plain ``.npz`` or a dict of NumPy arrays (``'gru'`` =
        reset after the recurrent matmul as ``torch.nn.GRU``; ``'gru_reset_before'`` = reset before
        it) and for a 2-gate layer (``'ugrnn'``). When given for any other source it is checked
        against what the source holds.
    layer, direction, key_prefix, nonlinearity
        As for :func:`fastfp.load_torch_rnn`: which layer / direction (1 = ``_reverse``) of a
        stacked RNN, the RNN's key prefix when the state dict holds several, and the activation of
        a vanilla RNN (a state dict does not record it; default 'tanh'). For a fastfp ``.npz``, an
        ``RNNParams`` or a ``Model`` (one layer, nothing to pick) they must keep their defaults, or
        match the params.
    embedding_key, readout_key : str or False, optional
        For a state dict (torch file or module, safetensors, plain ``.npz``, dict of arrays): the
        key of the embedding (V, M) or readout weight (C, H) when fastfp's guess misses or is
        ambiguous (the notes in ``metadata`` say which it took); ``False``: none. They do not apply
        to a fastfp ``.npz``, an ``RNNParams``, a ``Model`` or a Flax tree (must stay None).

    Returns
    -------
    Model

    Raises
    ------
    FileFormatError
        Empty, unknown, legacy-torch or damaged file; no or several RNNs (see
        :func:`fastfp.load_torch_rnn`), or a cell's and a stacked RNN's keys under one prefix; an
        unsupported gate count; a required key missing (similar keys are listed), a misspelt bias, a
        non-array where a weight belongs, a readout bias that does not fit its weight; two entries of
        a nested dict or checkpoint that flatten to the same key.
    InvalidOptionError
        ``cell=`` missing where the source cannot tell (3 or 2 gate blocks in a non-PyTorch state
        dict), not one of ``fastfp.CELLS``, or disagreeing with the source (its gate count, or
        ``'gru_reset_before'`` for a PyTorch ``nn.GRU``).
    ArgumentTypeError
        ``source`` of an unsupported type, or a dict that contains itself.
    OSError
        The file cannot be opened.
    """
    if cell is not None and (not isinstance(cell, str) or cell not in CELLS):
        raise InvalidOptionError(f"argument 'cell': got {cell!r}, expected None or one of {', '.join(map(repr, CELLS))}")
    for name, value in (("layer", layer), ("direction", direction)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected None or an int")
    if key_prefix is not None and not isinstance(key_prefix, str):
        raise InvalidOptionError(f"argument 'key_prefix': got {key_prefix!r}, expected a str")
    for name, value in (("embedding_key", embedding_key), ("readout_key", readout_key)):
        if value is not None and value is not False and not isinstance(value, str):
            raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected None, False or a key (str)")
    opts = dict(cell=cell, layer=layer, direction=direction, key_prefix=key_prefix, nonlinearity=nonlinearity,
                embedding_key=embedding_key, readout_key=readout_key)

    if isinstance(source, Model):
        return _single_layer(source, "argument 'source' (a fastfp Model)", **opts)
    if isinstance(source, RNNParams):
        return _single_layer(Model(source), "argument 'source' (an RNNParams)", **opts)
    if _is_torch_module(source):
        skipped: dict = {}
        sd = _module_state_dict(source, skipped)
        where = f"argument 'source' (torch module {type(source).__name__})"
        # A state dict does not record nn.RNN's nonlinearity; the live module does.
        found = _module_nonlinearity(source, key_prefix)
        nonlinearity_from = None
        if found is not None:
            name, value = found
            if nonlinearity is not None and nonlinearity != value:
                raise InvalidOptionError(
                    f"{where}: nonlinearity={nonlinearity!r} given, but the module's RNN "
                    f"{name or type(source).__name__!r} has nonlinearity={value!r}"
                )
            opts["nonlinearity"] = value
            nonlinearity_from = f"read from the module ({name or 'the RNN'}.nonlinearity)"
        return model_from_state_dict(sd, where, fmt="torch nn.Module state_dict()", torch_convention=True,
                                      file=None, skipped=skipped, nonlinearity_from=nonlinearity_from, **opts)
    if _looks_like_flax(source):
        _flax_single_cells("the Flax / renn parameter tree", layer, direction)
        return load_flax(source, cell=cell, key_prefix=key_prefix, nonlinearity=nonlinearity,
                         embedding_key=embedding_key, readout_key=readout_key)
    if isinstance(source, Mapping):
        sd, skipped, has_torch_tensors = {}, {}, [False]
        _flatten_mapping(source, (), sd, {}, skipped, has_torch_tensors, set())
        where = "argument 'source' (a dict of " + ("torch tensors)" if has_torch_tensors[0] else "arrays)")
        return model_from_state_dict(sd, where, fmt="state dict (dict of arrays)",
                                      torch_convention=has_torch_tensors[0], file=None, skipped=skipped, **opts)
    if isinstance(source, str) and source.startswith(SHIPPED_PREFIX):
        with shipped_file(source, arg="source") as path:
            return _load_file(path, **opts)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(source, **opts)
    raise ArgumentTypeError(
        f"argument 'source': got {type(source).__name__}, expected a file path, a torch nn.Module, a dict "
        "of arrays (state dict), an RNNParams or a Model"
    )


def _looks_like_flax(source) -> bool:
    """A Flax (linen 'params' / nnx state) or renn tree: probed by the Flax reader's own cell finder."""
    if not (isinstance(source, Mapping) or hasattr(source, "to_pure_dict")):
        return False
    try:
        return bool(_flax_cells(_flax_normalise(source, "argument 'source'")))
    except FastFPError:
        return False


def _flax_single_cells(what: str, layer, direction) -> None:
    """A Flax tree holds single cells under their own key paths: one is picked by key_prefix."""
    for name, value in (("layer", layer), ("direction", direction)):
        if value not in (None, 0):
            raise InvalidOptionError(
                f"argument {name!r}: got {value!r}, but {what} holds single cells (a stack or a "
                "bidirectional layer is one cell per key path); pick one with key_prefix= (its key "
                "path, e.g. 'params/GRUCell_1' or 'params/RNN_1'; loading without it lists the cells' paths)"
            )


def _no_keys(where: str, embedding_key, readout_key) -> None:
    for name, value in (("embedding_key", embedding_key), ("readout_key", readout_key)):
        if value is not None:
            raise InvalidOptionError(
                f"{where}: {name}={value!r} given, but this source is not a state dict (no keys to pick from); "
                "leave it out"
            )


# ============================================================================ files
def _load_file(path, **opts) -> Model:
    where = f"argument 'source': {os.fspath(path)!s}"
    if os.path.isdir(path):
        raise FileFormatError(
            f"{where} is a directory, expected a weights file; {_supported()}. An orbax checkpoint (a "
            "directory) is not read: restore it with orbax and pass the tree to fastfp.load, or save the "
            "params with flax.serialization.to_bytes"
        )
    try:
        with open(path, "rb") as fh:  # other OSErrors (permissions, ...) propagate unchanged
            head = fh.read(16)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    if not head:
        raise FileFormatError(f"{where} is empty (0 bytes); {_supported()}")
    if head.startswith(_LEGACY_MAGIC):
        raise FileFormatError(
            f"{where} is a legacy PyTorch file (torch < 1.6 or _use_new_zipfile_serialization=False), "
            "which fastfp does not read; re-save it in the zip format with torch.save(state_dict, path) "
            "from torch >= 1.6"
        )
    if head.startswith(_ZIP_MAGICS):
        return _load_zip(path, where, **opts)
    is_pickle = _is_pickle_head(head)
    if _looks_like_safetensors(head, is_pickle):
        tensors, metadata = _read_safetensors_with_metadata(path)
        return model_from_state_dict(tensors, where, fmt="safetensors state dict", torch_convention=False,
                                      keys_in_module_order=False,
                                      file=str(os.fspath(path)), extra_metadata={"safetensors_metadata": metadata},
                                      **opts)
    if is_msgpack_head(head) and not is_pickle:
        _flax_single_cells(f"the Flax file {os.fspath(path)!s}", opts["layer"], opts["direction"])
        return load_flax(path, cell=opts["cell"], key_prefix=opts["key_prefix"], nonlinearity=opts["nonlinearity"],
                         embedding_key=opts["embedding_key"], readout_key=opts["readout_key"])
    hint = ""
    if head.startswith(b"\x93NUMPY"):
        hint = " (it is a single NumPy .npy array, not a set of named weights)"
    elif head[:1] == b"\x80":
        hint = (" (it looks like a pickle, which fastfp does not unpickle: save a state dict instead, "
                "torch.save(model.state_dict(), path), or Flax params with flax.serialization.to_bytes)")
    raise FileFormatError(
        f"{where} is not in a format fastfp reads (starts with {head[:8]!r}){hint}; {_supported()}"
    )


def _is_pickle_head(head: bytes) -> bool:
    """A pickle of protocol 2-5 (torch.save's legacy format, a whole pickled object)."""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")


def _looks_like_safetensors(head: bytes, is_pickle: bool) -> bool:
    if len(head) < 9 or head[8:9] != b"{":
        return False
    if int.from_bytes(head[:8], "little") <= _MAX_HEADER:
        return True
    # An oversized length is still a (damaged) safetensors file, whose reader reports the length, unless
    # the first bytes read as text, msgpack or a pickle: those can have a '{' at offset 8 too.
    is_text = all(32 <= b < 127 or b in b"\t\n\r" for b in head[:8])
    return not (is_text or is_pickle or is_msgpack_head(head))


def _as_source_argument(reader, path, **kwargs):
    """``reader(path, ...)`` whose errors and warnings name load's argument 'source', not 'path'."""
    import warnings

    def renamed(text):
        return text.replace("argument 'path'", "argument 'source'")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = reader(path, **kwargs)
        except FastFPError as exc:
            if vars(exc) or "argument 'path'" not in str(exc):  # state a new error would lose
                raise
            raise type(exc)(renamed(str(exc))) from None
    for w in caught:
        warn_user(renamed(str(w.message)), w.category)
    return result


def _load_zip(path, where, **opts) -> Model:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise FileFormatError(f"{where} starts like a zip archive but is not a readable one ({exc}); {_supported()}") from None
    if any(n.endswith("data.pkl") for n in names):
        model = _as_source_argument(load_torch_rnn, path, layer=opts["layer"], direction=opts["direction"],
                                    key_prefix=opts["key_prefix"], nonlinearity=opts["nonlinearity"],
                                    embedding_key=opts["embedding_key"], readout_key=opts["readout_key"])
        _check_torch_cell(model, opts["cell"], where)
        return model
    if _FASTFP_NPZ_ENTRY in names:
        return _single_layer(load_params(path), where, **opts)
    if _FIXED_POINTS_ENTRY in names:
        # fastfp's other format: its arrays (x, fx, ...) would read as a state dict without a layer
        entries = [n[:-len(".npy")] for n in names]
        raise FileFormatError(f"{where} holds fixed points, not a network's weights{_what_it_is(path, entries)}")
    if names and all(n.endswith(".npy") for n in names):
        # read_npz: no pickle, headers checked against their data, a cap on what the file expands to
        sd = read_npz(path, where=where)
        return model_from_state_dict(sd, where, fmt="NumPy .npz state dict", torch_convention=False,
                                      file=str(os.fspath(path)), **opts)
    sample = ", ".join(names[:6]) or "no entries"
    raise FileFormatError(
        f"{where} is a zip archive that is neither a torch.save checkpoint (no '<archive>/data.pkl') nor a "
        f"NumPy .npz (entries: {sample}); {_supported()}"
    )


# ============================================================================ in-memory sources
def _is_torch_module(obj) -> bool:
    """An ``nn.Module`` (or subclass defined anywhere), told without importing torch."""
    if not callable(getattr(obj, "state_dict", None)):
        return False
    return any(getattr(c, "__module__", "").startswith("torch") for c in type(obj).__mro__ if c is not object)


def _is_torch_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach") and hasattr(obj, "numpy")


def _tensor_to_numpy(t) -> np.ndarray:
    t = t.detach()
    if hasattr(t, "cpu"):
        t = t.cpu()
    if str(getattr(t, "dtype", "")) == "torch.bfloat16":  # NumPy has no bfloat16; exact in float32
        t = t.float()
    return np.array(t.numpy(), copy=True)


def _module_nonlinearity(module, key_prefix):
    """(name, 'tanh' | 'relu') of the torch vanilla RNN in ``module`` (the one under ``key_prefix``
    when given), or None: no such RNN, several with different nonlinearities, or no way to ask."""
    try:
        subs = list(module.named_modules())
    except Exception:
        return None
    found = {name: sub.nonlinearity for name, sub in subs
             if type(sub).__module__.startswith("torch.nn") and getattr(sub, "nonlinearity", None) in ("tanh", "relu")}
    if key_prefix is not None:
        want = key_prefix.rstrip(".")
        picked = [n for n in found if n == want or n.endswith("." + want)]
        return (picked[0], found[picked[0]]) if len(picked) == 1 else None
    if len(set(found.values())) == 1:
        name = next(iter(found))
        return name, found[name]
    return None


def _module_state_dict(module, skipped: dict) -> dict:
    try:
        state = module.state_dict()
    except Exception as exc:
        raise ArgumentTypeError(
            f"argument 'source': {type(module).__name__}.state_dict() failed ({type(exc).__name__}: {exc})"
        ) from None
    sd = {}
    for key, value in state.items():
        if _is_torch_tensor(value):
            sd[str(key)] = _tensor_to_numpy(value)
        else:  # e.g. a module's _extra_state; model_from_state_dict refuses it where a weight is needed
            skipped[str(key)] = type(value).__name__
    return sd


def _key_path(path) -> str:
    return "".join(f"[{k!r}]" for k in path) or "the top level"


def _flatten_mapping(obj, path: tuple, out: dict, origins: dict, skipped: dict, torch_seen: list, seen: set) -> None:
    """Nested mappings -> ``out`` with dotted keys. ``origins`` keeps each key's path (for errors),
    ``skipped`` the type of each value that is not an array (checked by model_from_state_dict)."""
    if len(path) > 100:
        raise FileFormatError("argument 'source': the dict nests deeper than 100 levels")
    if id(obj) in seen:
        raise ArgumentTypeError(f"argument 'source': the dict at {_key_path(path)} contains itself, expected a tree of dicts")
    seen.add(id(obj))
    for key, value in obj.items():
        here = path + (key,)
        name = ".".join(map(str, here))
        if isinstance(value, Mapping):
            _flatten_mapping(value, here, out, origins, skipped, torch_seen, seen)
            continue
        if _is_torch_tensor(value):
            torch_seen[0] = True
            array = _tensor_to_numpy(value)
        elif isinstance(value, np.ndarray) or hasattr(value, "__array__"):
            try:
                array = np.asarray(value)
            except Exception as exc:  # e.g. a JAX typed PRNG key: has __array__ but no NumPy form
                raise ArgumentTypeError(
                    f"argument 'source': entry {_key_path(here)} ({type(value).__name__}) could not be converted "
                    f"to an array ({type(exc).__name__}: {exc}); expected arrays (for JAX keys: jax.random.key_data)"
                ) from None
        else:
            skipped[name] = type(value).__name__
            continue
        if name in out:
            # {'rnn.w': a, 'rnn': {'w': b}} both flatten to 'rnn.w': keeping either would lose the other
            raise FileFormatError(
                f"argument 'source': entries {_key_path(origins[name])} and {_key_path(here)} both flatten to "
                f"the key {name!r}; keep one of them"
            )
        out[name], origins[name] = array, here
    seen.discard(id(obj))


# ============================================================================ cell checks
def _check_torch_cell(model: Model, cell, where: str) -> None:
    if cell is None or cell == model.params.cell:
        return
    G = model.params.n_gates
    if model.params.cell == "gru" and cell == "gru_reset_before":
        raise gru_after_only(where)
    raise InvalidOptionError(
        f"{where}: cell={cell!r} expects {len(GATE_ORDER[cell])} gate blocks, but the file's recurrent layer "
        f"has {describe_gates(G)}: a PyTorch nn.{_TORCH_NAMES[model.params.cell]}, fastfp cell {model.params.cell!r}"
    )


def _single_layer(model: Model, where: str, *, cell, layer, direction, key_prefix, nonlinearity,
                  embedding_key=None, readout_key=None) -> Model:
    p = model.params
    _no_keys(where, embedding_key, readout_key)
    if cell is not None and cell != p.cell:
        raise InvalidOptionError(
            f"{where}: cell={cell!r} given, but the params are of cell {p.cell!r} ({describe_gates(p.n_gates)})"
        )
    if layer not in (None, 0) or direction not in (None, 0):
        raise InvalidOptionError(
            f"{where}: holds a single layer; layer={layer}, direction={direction} cannot be picked"
        )
    if key_prefix not in (None, ""):
        raise InvalidOptionError(f"{where}: holds a single layer; key_prefix={key_prefix!r} does not apply")
    if nonlinearity is not None and nonlinearity != p.nonlinearity and p.cell == "vanilla":
        raise InvalidOptionError(
            f"{where}: nonlinearity={nonlinearity!r} given, but the params use {p.nonlinearity!r}"
        )
    return model


