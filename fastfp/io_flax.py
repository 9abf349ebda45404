"""Flax / JAX parameter trees: ``flax.serialization.to_bytes`` files and renn-style trees, read without JAX.

Neither ``jax`` nor ``flax`` is imported on any path of this module; a ``.msgpack`` file is decoded
with the ``msgpack`` package alone (extra ``fastfp-rnn[flax]``) and nothing in it is executed.

File format (``flax.serialization.msgpack_serialize``, flax 0.6 - 0.12)
-----------------------------------------------------------------------
A msgpack map (the state dict; tuples/lists appear as maps with keys ``'0'``, ``'1'``, ...) whose
array leaves are msgpack *ext* objects:

=========  ================  ===============================================================
ext code   flax name         payload
=========  ================  ===============================================================
1          ``ndarray``       msgpack array ``[shape, dtype name, C-order bytes]`` (bin/str)
2          ``native_complex`` msgpack array ``[real, imag]`` (a Python complex)
3          ``npscalar``      as code 1, a 0-d array (a NumPy scalar)
=========  ================  ===============================================================

Arrays over 1 GiB are split by flax into ``{'__msgpack_chunked_array__': True, 'shape': {...},
'chunks': {...}}`` maps, which are joined back. Only plain numeric dtypes are accepted (bool,
(u)int8-64, float16/32/64, complex64/128, and JAX's ``bfloat16``, widened exactly to float32);
any other dtype name (object, structured, str, void, datetime ...), a buffer whose size does not
match the shape, unknown ext codes, trailing bytes or a damaged stream raise
:class:`~fastfp.errors.FileFormatError` naming the file.

Recognised cell sub-trees (searched anywhere in the tree)
---------------------------------------------------------
Flax kernels are ``(in, out)`` and are transposed to fastfp's ``(out, in)``; gate blocks are stacked
in the order of ``fastfp.GATE_ORDER[cell]``. ``K.k`` is the kernel, ``K.b`` the bias of Dense ``K``.

================================  =====================  ================================================
sub-tree keys                     fastfp cell            mapping
================================  =====================  ================================================
linen ``GRUCell``:                ``'gru'``              w_ih = [ir, iz, in].k^T, b_ih = [ir, iz, in].b;
ir iz in (bias) hr hz (no bias)                          w_hh = [hr, hz, hn].k^T, b_hh = [0, 0, hn.b]
hn (bias)
linen ``LSTMCell`` and            ``'lstm'``             w_ih = [ii, if, ig, io].k^T, b_ih = 0;
``OptimizedLSTMCell`` (same                              w_hh = [hi, hf, hg, ho].k^T, b_hh = [hi..ho].b;
names): ii if ig io (no bias),                           carry (c, h) -> state [h, c]
hi hf hg ho (bias); nnx
``LSTMCell`` spells ``if_``
linen ``SimpleCell``: i (bias),   ``'vanilla'`` (tanh)   w_ih = i.k^T, b_ih = i.b, w_hh = h.k^T. The
h (no bias)                                              ``activation_fn`` and ``residual`` attributes are
                                                         not in the params: tanh and residual=False are
                                                         assumed (pass ``nonlinearity='relu'`` for relu)
linen ``MGUCell``, hn with bias   ``'gru'``              r = z = f: w_ih = [if, if, in].k^T,
(reset_gate=True)                                        b_ih = [if.b, if.b, in.b]; w_hh = [hf, hf, hn].k^T,
                                                         b_hh = [0, 0, hn.b]
linen ``MGUCell``, hn without     ``'ugrnn'``            u = f: w_ih = [if, in].k^T, b_ih = [if.b, in.b],
bias (reset_gate=False)                                  w_hh = [hf, hn].k^T
nnx ``GRUCell``: dense_i (M, 3H)  ``'gru'``              w_ih = dense_i.k^T, b_ih = dense_i.b,
with bias, dense_h (H, 3H) no                            w_hh = dense_h.k^T, b_hh = 0: nnx has no bias
bias                                                     on the candidate's recurrent part (b_hn = 0)
nnx ``OptimizedLSTMCell``:        ``'lstm'``             w_ih = dense_i.k^T, w_hh = dense_h.k^T,
dense_i (M, 4H) no bias,                                 b_hh = dense_h.b (blocks i, f, g, o)
dense_h (H, 4H) bias
nnx ``SimpleCell``: dense_i       ``'vanilla'``          as linen SimpleCell
(M, H) bias, dense_h (H, H)
================================  =====================  ================================================

nnx modules are read from ``nnx.to_pure_dict(nnx.state(cell))`` (an ``nnx.State`` passed in memory is
converted with its ``to_pure_dict()``).

renn (google-research/reverse-engineering-neural-networks, ``renn/rnn/cells.py``) stores each gate as a
``LinearRNN(A, W, b)`` applied as ``A @ x + W @ h + b``: A is (H, M), W is (H, H) (already fastfp's
orientation). A gate is accepted as a map with keys ``A``, ``W``, ``b``, as flax's state dict of the
tuple (keys ``'0'``, ``'1'``, ``'2'``), as a list/tuple ``(A, W, b)`` or as an object with attributes
``A``, ``W``, ``b`` (in memory). All of b goes into ``b_ih`` (b_hh = 0; only the sum matters for
these cells).

======================================================  =====================  ===========================
renn cell params keys                                   fastfp cell            gate blocks
======================================================  =====================  ===========================
``weights`` (one LinearRNN)                             ``'vanilla'``          h = weights
``update_gate``, ``cell_state`` (UGRNN)                 ``'ugrnn'``            u = update_gate (+ gate_bias),
                                                                               c = cell_state
``update_gate``, ``reset_gate``, ``cell_state`` (GRU)   ``'gru_reset_before'`` r = reset_gate, z =
                                                                               update_gate (+ gate_bias),
                                                                               n = cell_state
``forget_gate``, ``update_gate``, ``output_gate``,      ``'lstm'``             i = update_gate, f =
``cell_state`` (LSTM; state [h, c] as renn)                                    forget_gate (+ forget_bias),
                                                                               g = cell_state, o = output_gate
======================================================  =====================  ===========================

renn adds ``gate_bias`` (GRU, UGRNN; renn default 0.0) and ``forget_bias`` (LSTM; renn default 1.0)
as constructor constants that are *not* stored in the params; they are folded into ``b_ih`` and
default to renn's defaults: pass ``gate_bias=`` / ``forget_bias=`` when the network was built with
other values. A renn network tuple ``(embedding, rnn_params, (readout W (H, C), readout b))``
(state-dict keys ``'0'``, ``'1'``, ``'2'``) also yields the embedding and readout.

Generic JAX trees (a documented fastfp layout, not a library's): a map with keys ``W`` (G*H, M),
``U`` (G*H, H) and optionally ``b`` (G*H,) (``(out, in)`` orientation, gate blocks in
``fastfp.GATE_ORDER`` order), or per-gate keys ``W_k``, ``U_k``, ``b_k`` for the gate letters of one
cell (``h``; ``u c``; ``r z n``; ``i f g o``). With three gate blocks the tree does not say where the
reset gate acts, so ``cell='gru'`` (reset after the recurrent matmul) or ``cell='gru_reset_before'``
must be given; fastfp never guesses.

Nothing in a recognised cell is dropped: a key of the cell's map, of one of its Dense maps (``kernel``,
``bias``) or of a renn gate (``A``, ``W``, ``b``) outside the layout above -- an extra bias, a sub-module,
a cell nested in the cell -- raises :class:`~fastfp.errors.FileFormatError` naming the file, the cell's
key path, the unexpected keys and the expected ones. Two entries that real files hold but the step map
never reads are accepted, checked and listed in ``metadata['extras']``: nnx's ``rngs`` (integer arrays;
the RNG stream an nnx cell built with ``keep_rngs=True`` keeps for ``initialize_carry``) and renn's
``initial_state`` (a 1-D float array; the rollout's h0, on which fixed points do not depend).

Several cells in one tree raise an error listing their key paths unless ``key_prefix=`` (a
``/``-separated path prefix, e.g. ``'params/RNN_0'``) picks one. An embedding (``embedding`` (V, M))
and a Dense readout (``kernel`` (H, C) [+ ``bias`` (C,)]) outside the cell are attached when there is
exactly one candidate of matching size (the gate kernels of the tree's other cells are not
candidates); in a tree of several cells, the readout only for the last layer, by Flax's numbered
names (``RNN_0`` ... ``RNN_10``; none when the names do not tell the order), and the embedding
unless another cell could take it (an earlier layer with output size M, or, where the order is
unknown, another cell of input size M); both directions of a bidirectional layer get it.
``embedding_key=`` / ``readout_key=`` (key paths such as ``'params/Embed_0'``, ``'params/Dense_0'``,
or False) override the guess. A readout candidate whose bias does not fit its kernel is an error,
not a readout left out.

What a Flax module keeps in its attributes rather than its params is not in the file and is
assumed: the activations (``tanh`` and ``sigmoid``: a GRUCell built with another
``activation_fn`` or ``gate_fn`` loads, but its dynamics differ; a SimpleCell's activation is
given with ``nonlinearity=``) and, for renn, the gate constants above. ``metadata['conversions']``
names the convention read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .errors import FastFPError, FileFormatError, InvalidOptionError, MissingDependencyError, warn_user
from .model import Model
from .params import CELLS, GATE_ORDER, RNNParams

__all__ = ["read_flax_msgpack", "params_from_flax", "load_flax", "is_msgpack_head"]

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
_CHUNK_KEY = "__msgpack_chunked_array__"
_ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"]
)
_MAX_DEPTH = 64


def is_msgpack_head(head: bytes) -> bool:
    """True when ``head`` starts like a msgpack map (fixmap 0x80-0x8f, map16 0xde, map32 0xdf)."""
    return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


# ============================================================================ msgpack decoding
class _Bad(Exception):
    """Internal: a malformed ext payload (turned into FileFormatError with the file name)."""


def _decode_ndarray(data: bytes, msgpack) -> np.ndarray:
    try:
        tpl = msgpack.unpackb(data, raw=True, strict_map_key=True, max_bin_len=len(data), max_str_len=len(data))
    except Exception as exc:
        raise _Bad(f"an array payload is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(tpl, (list, tuple)) or len(tpl) != 3:
        raise _Bad("an array payload is not a (shape, dtype, bytes) triple")
    shape, name, buf = tpl
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
    ) or len(shape) > 32:
        raise _Bad(f"an array has an invalid shape {shape!r}")
    if isinstance(name, (bytes, bytearray)):
        try:
            name = bytes(name).decode("ascii")
        except UnicodeDecodeError:
            raise _Bad(f"an array has an invalid dtype name {bytes(name)[:40]!r}") from None
    if not isinstance(name, str) or not isinstance(buf, (bytes, bytearray)):
        raise _Bad("an array payload has a dtype name or buffer of the wrong type")
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if name == "bfloat16":  # JAX's bfloat16: the top 16 bits of a float32, widened exactly
        if len(buf) != 2 * count:
            raise _Bad(f"a bfloat16 array of shape {shape} needs {2 * count} bytes, got {len(buf)}")
        bits = np.frombuffer(bytes(buf), dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if name not in _ALLOWED_DTYPES:
        raise _Bad(f"an array has dtype {name[:40]!r}; only plain numeric dtypes are read "
                   f"({', '.join(sorted(_ALLOWED_DTYPES))}, bfloat16)")
    dtype = np.dtype(name)
    if len(buf) != dtype.itemsize * count:
        raise _Bad(f"an array of shape {shape} and dtype {name} needs {dtype.itemsize * count} bytes, "
                   f"got {len(buf)}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape).copy()


def _unchunk(node, depth=0):
    if depth > _MAX_DEPTH:
        raise _Bad(f"the tree nests deeper than {_MAX_DEPTH} levels")
    if isinstance(node, dict):
        if _CHUNK_KEY in node:
            try:
                shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
                chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
                if not chunks or not all(isinstance(c, np.ndarray) and c.ndim == 1 for c in chunks):
                    raise ValueError("chunks are not 1-D arrays")
                return np.concatenate(chunks).reshape(shape)
            except Exception as exc:
                raise _Bad(f"a chunked array is malformed ({type(exc).__name__}: {exc})") from None
        return {k: _unchunk(v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_unchunk(v, depth + 1) for v in node]
    return node


def _import_msgpack():
    try:
        import msgpack
    except ImportError:
        raise MissingDependencyError(
            "reading Flax .msgpack files needs the 'msgpack' package: pip install 'fastfp-rnn[flax]' "
            "(or pip install msgpack); jax and flax are not needed"
        ) from None
    return msgpack


def read_flax_msgpack(path, *, _arg: str = "path") -> dict:
    """Decode a ``flax.serialization.to_bytes`` / ``msgpack_serialize`` file into nested dicts of arrays.

    Uses only the ``msgpack`` package (imported here; :class:`MissingDependencyError` naming the extra
    ``fastfp-rnn[flax]`` when absent). Never executes anything from the file.

    Returns
    -------
    dict
        The state dict: str keys, values are dicts, NumPy arrays (ext code 1 and 3), Python scalars
        or complex numbers.

    Raises
    ------
    FileFormatError
        Not msgpack, truncated, trailing bytes, top level not a map, a non-numeric array dtype, a
        buffer of the wrong size, an unknown ext code (the message names the file).
    OSError
        The file cannot be opened.
    """
    msgpack = _import_msgpack()
    where = f"argument {_arg!r}: {os.fspath(path)!s}"  # load_flax's and fastfp.load's argument is 'source'
    with open(path, "rb") as fh:
        data = fh.read()
    if not data:
        raise FileFormatError(f"{where} is empty (0 bytes); expected a Flax msgpack file (flax.serialization.to_bytes)")

    def ext_hook(code, payload):
        if code == EXT_NDARRAY:
            return _decode_ndarray(payload, msgpack)
        if code == EXT_NPSCALAR:
            arr = _decode_ndarray(payload, msgpack)
            if arr.ndim != 0:
                raise _Bad(f"a NumPy-scalar payload has shape {arr.shape}, expected ()")
            return arr
        if code == EXT_COMPLEX:
            try:
                pair = msgpack.unpackb(payload, raw=True)
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)):
                    raise ValueError("not a (real, imag) pair")
                return complex(pair[0], pair[1])
            except Exception as exc:
                raise _Bad(f"a complex payload is malformed ({exc})") from None
        raise _Bad(f"unknown msgpack ext type code {code} (flax writes 1 = ndarray, 2 = complex, 3 = NumPy scalar)")

    try:
        tree = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False,
                               use_list=True)
        if not isinstance(tree, dict):
            raise _Bad(f"the top level is a {type(tree).__name__}, expected a map (a Flax state dict)")
        tree = _unchunk(tree)
    except _Bad as exc:
        raise FileFormatError(f"{where} is not a readable Flax msgpack file: {exc}") from None
    except Exception as exc:  # ExtraData, OutOfData (truncated), FormatError, StackError, ValueError, ...
        raise FileFormatError(
            f"{where} is not a readable Flax msgpack file ({type(exc).__name__}: {str(exc)[:200]}); "
            "expected bytes written by flax.serialization.to_bytes"
        ) from None
    return tree


# ============================================================================ tree normalisation
def _normalise(node, where, depth=0):
    """Nested dicts with str keys and NumPy leaves; lists/tuples become '0', '1', ... maps."""
    if depth > _MAX_DEPTH:
        raise FileFormatError(f"{where}: the tree nests deeper than {_MAX_DEPTH} levels")
    if hasattr(node, "to_pure_dict") and callable(node.to_pure_dict) and not isinstance(node, Mapping):
        node = node.to_pure_dict()  # an nnx.State
    elif hasattr(node, "to_pure_dict") and callable(node.to_pure_dict) and type(node).__name__ == "State":
        node = node.to_pure_dict()
    if isinstance(node, Mapping):
        out, first = {}, {}
        for k, v in node.items():
            if str(k) in out:  # e.g. 1 and '1' (msgpack keeps both): one would replace the other
                raise FileFormatError(f"{where}: a map of the tree has both the keys {first[str(k)]!r} and {k!r}, "
                                      f"which both read as the key {str(k)!r}; expected distinct string keys")
            out[str(k)], first[str(k)] = _normalise(v, where, depth + 1), k
        return out
    if isinstance(node, (list, tuple)):
        return {str(i): _normalise(v, where, depth + 1) for i, v in enumerate(node)}
    if isinstance(node, np.ndarray):
        return node
    if all(hasattr(node, a) for a in ("A", "W", "b")) and not hasattr(node, "__array__"):
        return {"A": _normalise(node.A, where, depth + 1), "W": _normalise(node.W, where, depth + 1),
                "b": _normalise(node.b, where, depth + 1)}  # a renn LinearRNN object
    if hasattr(node, "__array__"):  # jax.Array and friends, without importing jax
        try:
            return np.asarray(node)
        except Exception as exc:
            raise FileFormatError(f"{where}: a leaf of type {type(node).__name__} could not be converted ({exc})") from None
    return node  # scalars, strings, None: ignored by the matchers


def _fmt(path) -> str:
    parts = [p for p in path if p]
    return "/".join(parts) if parts else "<root>"


class _Ctx:
    def __init__(self, where):
        self.where = where

    def node(self, tree, path, key):
        if not isinstance(tree, dict) or key not in tree:
            raise FileFormatError(f"{self.where}: key {_fmt(path + (key,))!r} is missing")
        return tree[key]

    def arr(self, tree, path, key, ndim, *, optional=False):
        if not isinstance(tree, dict) or key not in tree:
            if optional:
                return None
            raise FileFormatError(f"{self.where}: key {_fmt(path + (key,))!r} is missing (expected a {ndim}-D array)")
        a = tree[key]
        if not isinstance(a, np.ndarray):
            raise FileFormatError(f"{self.where}: key {_fmt(path + (key,))!r} is a {type(a).__name__}, expected a {ndim}-D array")
        if a.ndim != ndim:
            raise FileFormatError(f"{self.where}: key {_fmt(path + (key,))!r} has shape {a.shape}, expected a {ndim}-D array")
        if a.dtype.kind != "f":
            raise FileFormatError(f"{self.where}: key {_fmt(path + (key,))!r} has dtype {a.dtype}, expected floats")
        return a

    def dense(self, tree, path, name, *, bias):
        """(kernel^T (out, in), bias or None) of a linen/nnx Dense sub-tree."""
        sub = self.node(tree, path, name)
        p = path + (name,)
        _check_keys(self, p, sub, ("kernel", "bias"), f"Dense {name!r}")
        k = self.arr(sub, p, "kernel", 2)
        b = self.arr(sub, p, "bias", 1, optional=not bias)
        if b is not None and b.shape != (k.shape[1],):
            raise FileFormatError(f"{self.where}: key {_fmt(p + ('bias',))!r} has shape {b.shape}, expected ({k.shape[1]},) "
                                  f"to match kernel {k.shape}")
        return k.T, b

    def check(self, path, what, arr, shape):
        if arr.shape != shape:
            raise FileFormatError(f"{self.where}: {_fmt(path + (what,))!r} has shape {arr.shape}, expected {shape}")


def _cat(*xs):
    return np.concatenate(xs, axis=0)


def _z(n, dtype):
    return np.zeros(n, dtype=dtype)


# ============================================================================ matchers
_LSTM_I = ("ii", "if", "ig", "io")
_LSTM_H = ("hi", "hf", "hg", "ho")
_GRU_KEYS = {"ir", "iz", "in", "hr", "hz", "hn"}
_RENN_GATE_ALIASES = ("A", "W", "b")


def _has_kernel(node, key):
    return isinstance(node.get(key), dict) and "kernel" in node[key]


def _detect(node: dict):
    """The kind of cell sub-tree ``node`` is, or None."""
    keys = set(node)
    if all(_has_kernel(node, k) for k in _LSTM_I + _LSTM_H):
        return "linen_lstm"
    if all(_has_kernel(node, k) for k in ("ii", "if_", "ig", "io") + _LSTM_H):
        return "nnx_lstm"
    if all(_has_kernel(node, k) for k in _GRU_KEYS):
        return "linen_gru"
    if all(_has_kernel(node, k) for k in ("if", "hf", "in", "hn")) and "ii" not in keys:
        return "linen_mgu"
    if all(_has_kernel(node, k) for k in ("i", "h")) and len(keys & {"ir", "ii", "if"}) == 0:
        return "linen_simple"
    if _has_kernel(node, "dense_i") and _has_kernel(node, "dense_h"):
        return "nnx_stacked"
    if {"forget_gate", "update_gate", "output_gate", "cell_state"} <= keys:
        return "renn_lstm"
    if {"update_gate", "reset_gate", "cell_state"} <= keys:
        return "renn_gru"
    if {"update_gate", "cell_state"} <= keys:
        return "renn_ugrnn"
    if "W" in keys and "U" in keys and isinstance(node["U"], np.ndarray):
        return "generic_stacked"
    for letters in (("i", "f", "g", "o"), ("r", "z", "n"), ("u", "c"), ("h",)):
        if all(f"W_{g}" in keys and f"U_{g}" in keys for g in letters):
            return "generic_gates"
    if "A" in keys and "W" in keys and isinstance(node.get("A"), np.ndarray):
        return "renn_vanilla"  # a bare LinearRNN (renn VanillaRNN's 'weights')
    if "weights" in keys and "initial_state" in keys and isinstance(node["weights"], dict) and (
            {"A", "W"} <= set(node["weights"]) or {"0", "1", "2"} <= set(node["weights"])):
        return "renn_vanilla_params"
    return None


def _find(tree, path=(), out=None, depth=0):
    if out is None:
        out = []
    if not isinstance(tree, dict) or depth > _MAX_DEPTH:
        return out
    kind = _detect(tree)
    if kind is not None:
        out.append((path, kind, tree))
        return out  # do not descend into a cell
    for k, v in tree.items():
        _find(v, path + (k,), out, depth + 1)
    return out


# kind -> (keys the conversion reads, keys accepted unread). Anything else is an error: fastfp cannot
# tell what an unmapped entry (an extra bias, a sub-module, a second cell) did to the dynamics. Only
# entries real files hold and the step map never reads are accepted unread (see the module docs).
_RENN_NAMES = {"renn_gru": ("update_gate", "reset_gate", "cell_state"), "renn_ugrnn": ("update_gate", "cell_state"),
               "renn_lstm": ("forget_gate", "update_gate", "output_gate", "cell_state"),
               "renn_vanilla_params": ("weights",)}
_CELL_KEYS = {
    "linen_lstm": (_LSTM_I + _LSTM_H, ()),
    "nnx_lstm": (("ii", "if_", "ig", "io") + _LSTM_H, ("rngs",)),
    "linen_gru": (("ir", "iz", "in", "hr", "hz", "hn"), ()),
    "linen_mgu": (("if", "in", "hf", "hn"), ()),
    "linen_simple": (("i", "h"), ()),
    "nnx_stacked": (("dense_i", "dense_h"), ("rngs",)),
    "generic_stacked": (("W", "U", "b"), ()),
    **{k: (v, ("initial_state",)) for k, v in _RENN_NAMES.items()},
}


def _check_keys(ctx, path, node, expected, what):
    """Refuse keys of ``node`` outside ``expected``, saying which of them hold a recurrent cell."""
    extra = [k for k in node if k not in expected]
    if not extra:
        return
    nested = [f"{_fmt(p)!r} ({kind})" for k in extra for p, kind, _ in _find(node[k], path + (k,))]
    hint = f"; nested recurrent cell(s) at {', '.join(nested)}" if nested else ""
    raise FileFormatError(
        f"{ctx.where}: the {what} at {_fmt(path)!r} has unexpected key(s) {', '.join(map(repr, extra))}{hint}; "
        f"expected only {', '.join(map(repr, expected))} (fastfp refuses entries it cannot map rather than drop them)"
    )


def _int_leaves(node):
    if isinstance(node, dict):
        return all(_int_leaves(v) for v in node.values())
    return isinstance(node, np.ndarray) and node.dtype.kind in "iu"


def _check_cell_keys(ctx, path, kind, node) -> list:
    """Check the cell's top-level keys; returns notes on the entries accepted but not used."""
    if kind == "generic_gates":
        letters = next(ls for ls in (("i", "f", "g", "o"), ("r", "z", "n"), ("u", "c"), ("h",))
                       if all(f"W_{g}" in node and f"U_{g}" in node for g in ls))
        used, ignored = tuple(f"{w}_{g}" for g in letters for w in ("W", "U", "b")), ()
    elif kind == "renn_vanilla":
        return []  # the node is the LinearRNN itself: _renn_gate checks its keys
    else:
        used, ignored = _CELL_KEYS[kind]
    _check_keys(ctx, path, node, used + ignored, f"cell ({kind})")
    notes = []
    if "rngs" in node:
        if not _int_leaves(node["rngs"]):
            raise FileFormatError(f"{ctx.where}: {_fmt(path + ('rngs',))!r} is not an nnx RNG stream state; expected "
                                  "a map of integer arrays (key, count)")
        notes.append(f"ignored {_fmt(path + ('rngs',))} (nnx RNG stream state, not used by the step map)")
    if "initial_state" in node:
        s0 = node["initial_state"]
        if not (isinstance(s0, np.ndarray) and s0.ndim == 1 and s0.dtype.kind == "f"):
            found = f"shape {s0.shape}, dtype {s0.dtype}" if isinstance(s0, np.ndarray) else f"a {type(s0).__name__}"
            raise FileFormatError(f"{ctx.where}: {_fmt(path + ('initial_state',))!r} has {found}; expected renn's "
                                  "1-D float initial state")
        notes.append(f"ignored {_fmt(path + ('initial_state',))} (renn's initial state, not part of the step map)")
    return notes


def _renn_gate(ctx, node, path, name, H=None, M=None):
    g = ctx.node(node, path, name)
    p = path + (name,)
    if isinstance(g, dict) and {"A", "W"} <= set(g):
        _check_keys(ctx, p, g, ("A", "W", "b"), "renn LinearRNN")
        A, W = ctx.arr(g, p, "A", 2), ctx.arr(g, p, "W", 2)
        b = ctx.arr(g, p, "b", 1, optional=True)
    elif isinstance(g, dict) and {"0", "1"} <= set(g):
        _check_keys(ctx, p, g, ("0", "1", "2"), "renn LinearRNN (tuple state dict)")
        A, W = ctx.arr(g, p, "0", 2), ctx.arr(g, p, "1", 2)
        b = ctx.arr(g, p, "2", 1, optional=True)
    else:
        raise FileFormatError(f"{ctx.where}: key {_fmt(p)!r} is not a renn LinearRNN (expected keys A, W, b "
                              "or the tuple state dict '0', '1', '2')")
    h = W.shape[0]
    ctx.check(p, "W", W, (h, h))
    ctx.check(p, "A", A, (h, A.shape[1]))
    if b is None:
        b = _z(h, W.dtype)
    ctx.check(p, "b", b, (h,))
    if H is not None and h != H:
        raise FileFormatError(f"{ctx.where}: key {_fmt(p)!r} has {h} units, expected {H} like the other gates")
    if M is not None and A.shape[1] != M:
        raise FileFormatError(f"{ctx.where}: {_fmt(p + ('A',))!r} has {A.shape[1]} inputs, expected {M}")
    return A, W, b


def _stack_renn(ctx, node, path, names, extra_bias):
    A0, W0, b0 = _renn_gate(ctx, node, path, names[0])
    H, M = W0.shape[0], A0.shape[1]
    parts = [(A0, W0, b0)] + [_renn_gate(ctx, node, path, n, H, M) for n in names[1:]]
    w_ih = _cat(*[p[0] for p in parts])
    w_hh = _cat(*[p[1] for p in parts])
    b_ih = _cat(*[p[2] + extra for p, extra in zip(parts, extra_bias)])
    return w_ih, w_hh, b_ih, None


def _convert(ctx, path, kind, node, *, cell, gate_bias, forget_bias):
    """-> (cell, w_ih, w_hh, b_ih, b_hh, description)."""
    if kind in ("linen_lstm", "nnx_lstm"):
        inames = _LSTM_I if kind == "linen_lstm" else ("ii", "if_", "ig", "io")
        ins = [ctx.dense(node, path, n, bias=False) for n in inames]
        hs = [ctx.dense(node, path, n, bias=True) for n in _LSTM_H]
        w_ih, w_hh = _cat(*[k for k, _ in ins]), _cat(*[k for k, _ in hs])
        b_ih = _cat(*[b if b is not None else _z(k.shape[0], k.dtype) for k, b in ins])
        b_hh = _cat(*[b for _, b in hs])
        return "lstm", w_ih, w_hh, b_ih, b_hh, f"flax {'linen' if kind == 'linen_lstm' else 'nnx'} LSTMCell " \
            "(ii/if/ig/io + hi/hf/hg/ho kernels transposed; carry (c, h) -> state [h, c])"
    if kind == "linen_gru":
        ins = [ctx.dense(node, path, n, bias=True) for n in ("ir", "iz", "in")]
        hr, hz = (ctx.dense(node, path, n, bias=False) for n in ("hr", "hz"))
        hn = ctx.dense(node, path, "hn", bias=True)
        w_ih = _cat(*[k for k, _ in ins])
        w_hh = _cat(hr[0], hz[0], hn[0])
        b_ih = _cat(*[b for _, b in ins])
        H = hn[0].shape[0]
        zero = lambda b: b if b is not None else _z(H, hn[0].dtype)  # noqa: E731
        b_hh = _cat(zero(hr[1]), zero(hz[1]), hn[1])
        return "gru", w_ih, w_hh, b_ih, b_hh, "flax linen GRUCell (reset after the recurrent matmul; kernels transposed)"
    if kind == "linen_mgu":
        f_i = ctx.dense(node, path, "if", bias=True)
        n_i = ctx.dense(node, path, "in", bias=True)
        f_h = ctx.dense(node, path, "hf", bias=False)
        n_h = ctx.dense(node, path, "hn", bias=False)
        H = n_h[0].shape[0]
        dt = n_h[0].dtype
        if f_h[1] is not None and np.any(f_h[1]):
            raise FileFormatError(f"{ctx.where}: key {_fmt(path + ('hf', 'bias'))!r} is present; flax MGUCell has none")
        if n_h[1] is not None:  # reset_gate=True: n = tanh(x_n + f * (U_n h + b_hn)) -> gru with r = z = f
            w_ih = _cat(f_i[0], f_i[0], n_i[0])
            w_hh = _cat(f_h[0], f_h[0], n_h[0])
            b_ih = _cat(f_i[1], f_i[1], n_i[1])
            b_hh = _cat(_z(H, dt), _z(H, dt), n_h[1])
            return "gru", w_ih, w_hh, b_ih, b_hh, "flax linen MGUCell (reset_gate=True) as gru with r = z = f"
        w_ih, w_hh = _cat(f_i[0], n_i[0]), _cat(f_h[0], n_h[0])
        return "ugrnn", w_ih, w_hh, _cat(f_i[1], n_i[1]), None, "flax linen MGUCell (reset_gate=False) as ugrnn with u = f"
    if kind == "linen_simple":
        k_i, b_i = ctx.dense(node, path, "i", bias=False)
        k_h, b_h = ctx.dense(node, path, "h", bias=False)
        return "vanilla", k_i, k_h, b_i, b_h, "flax SimpleCell (kernels transposed; tanh, residual=False assumed)"
    if kind == "nnx_stacked":
        k_i, b_i = ctx.dense(node, path, "dense_i", bias=False)
        k_h, b_h = ctx.dense(node, path, "dense_h", bias=False)
        H = k_h.shape[1]
        if k_h.shape[0] % H:
            raise FileFormatError(f"{ctx.where}: {_fmt(path + ('dense_h', 'kernel'))!r} has shape {k_h.T.shape}, "
                                  "expected (H, G*H)")
        G = k_h.shape[0] // H
        found = {1: "vanilla", 3: "gru", 4: "lstm"}.get(G)
        if found is None:
            raise FileFormatError(f"{ctx.where}: {_fmt(path)!r} has dense_h with {G} gate blocks; nnx cells have "
                                  "1 (SimpleCell), 3 (GRUCell) or 4 (OptimizedLSTMCell)")
        if found == "gru" and b_h is not None and np.any(b_h):
            raise FileFormatError(f"{ctx.where}: {_fmt(path + ('dense_h', 'bias'))!r} is present; nnx GRUCell's "
                                  "dense_h has no bias")
        note = {"vanilla": "flax nnx SimpleCell", "gru": "flax nnx GRUCell (no recurrent bias: b_hn = 0)",
                "lstm": "flax nnx OptimizedLSTMCell (stacked i, f, g, o; carry (c, h) -> state [h, c])"}[found]
        return found, k_i, k_h, b_i, b_h, note
    if kind == "renn_gru":
        names = ("reset_gate", "update_gate", "cell_state")
        w_ih, w_hh, b_ih, b_hh = _stack_renn(ctx, node, path, names, (0.0, gate_bias, 0.0))
        return "gru_reset_before", w_ih, w_hh, b_ih, b_hh, f"renn GRU (reset before the matmul; gate_bias={gate_bias:g} folded)"
    if kind == "renn_ugrnn":
        w_ih, w_hh, b_ih, b_hh = _stack_renn(ctx, node, path, ("update_gate", "cell_state"), (gate_bias, 0.0))
        return "ugrnn", w_ih, w_hh, b_ih, b_hh, f"renn UGRNN (gate_bias={gate_bias:g} folded)"
    if kind == "renn_lstm":
        names = ("update_gate", "forget_gate", "cell_state", "output_gate")
        w_ih, w_hh, b_ih, b_hh = _stack_renn(ctx, node, path, names, (0.0, forget_bias, 0.0, 0.0))
        return "lstm", w_ih, w_hh, b_ih, b_hh, f"renn LSTM (state [h, c]; forget_bias={forget_bias:g} folded)"
    if kind == "renn_vanilla":
        A, W, b = _renn_gate(ctx, {"": node}, path, "")
        return "vanilla", A, W, b, None, "renn VanillaRNN / LinearRNN (tanh)"
    if kind == "renn_vanilla_params":
        A, W, b = _renn_gate(ctx, node, path, "weights")
        return "vanilla", A, W, b, None, "renn VanillaRNN (tanh)"
    if kind == "generic_stacked":
        W, U = ctx.arr(node, path, "W", 2), ctx.arr(node, path, "U", 2)
        b = ctx.arr(node, path, "b", 1, optional=True)
        H = U.shape[1]
        if U.shape[0] % H or U.shape[0] // H not in (1, 2, 3, 4):
            raise FileFormatError(f"{ctx.where}: {_fmt(path + ('U',))!r} has shape {U.shape}, expected (G*H, H) with G in 1..4")
        G = U.shape[0] // H
        ctx.check(path, "W", W, (G * H, W.shape[1]))
        if b is not None:
            ctx.check(path, "b", b, (G * H,))
        found = _generic_cell(ctx, path, G, cell)
        return found, W, U, b, None, f"generic stacked W/U/b tree ({found})"
    if kind == "generic_gates":
        keys = set(node)
        for letters in (("i", "f", "g", "o"), ("r", "z", "n"), ("u", "c"), ("h",)):
            if all(f"W_{g}" in keys and f"U_{g}" in keys for g in letters):
                break
        found = _generic_cell(ctx, path, len(letters), cell)
        Ws = [ctx.arr(node, path, f"W_{g}", 2) for g in letters]
        Us = [ctx.arr(node, path, f"U_{g}", 2) for g in letters]
        H, M = Us[0].shape[1], Ws[0].shape[1]
        bs = []
        for g, Wg, Ug in zip(letters, Ws, Us):
            ctx.check(path, f"U_{g}", Ug, (H, H))
            ctx.check(path, f"W_{g}", Wg, (H, M))
            bg = ctx.arr(node, path, f"b_{g}", 1, optional=True)
            bg = _z(H, Ug.dtype) if bg is None else bg
            ctx.check(path, f"b_{g}", bg, (H,))
            bs.append(bg)
        return found, _cat(*Ws), _cat(*Us), _cat(*bs), None, f"generic per-gate W_k/U_k/b_k tree ({found})"
    raise AssertionError(kind)  # pragma: no cover


def _generic_cell(ctx, path, G, cell):
    by_g = {1: ("vanilla",), 2: ("ugrnn",), 3: ("gru", "gru_reset_before"), 4: ("lstm",)}[G]
    if cell is None:
        if len(by_g) > 1:
            raise InvalidOptionError(
                f"{ctx.where}: the tree at {_fmt(path)!r} holds a 3-gate GRU whose convention it does not record; "
                "pass cell='gru' (reset applied after the recurrent matmul: PyTorch, Flax linen, Keras "
                "reset_after=True) or cell='gru_reset_before' (reset before it: Cho 2014, renn, Keras reset_after=False)"
            )
        return by_g[0]
    if cell not in by_g:
        raise InvalidOptionError(f"{ctx.where}: cell={cell!r} given, but the tree at {_fmt(path)!r} has {G} gate "
                                 f"block(s), which fits {' or '.join(map(repr, by_g))}")
    return cell


# ============================================================================ embedding / readout
def _collect(tree, path, skip, out_emb, out_dense, depth=0):
    # skip: the key paths of every recurrent cell (another cell's gate kernels are no readout)
    if not isinstance(tree, dict) or depth > _MAX_DEPTH or path in skip:
        return
    for k, v in tree.items():
        p = path + (k,)
        if k == "embedding" and isinstance(v, np.ndarray) and v.ndim == 2:
            out_emb.append((p, v))
        elif isinstance(v, dict) and isinstance(v.get("kernel"), np.ndarray) and v["kernel"].ndim == 2:
            out_dense.append((p, v["kernel"], v.get("bias")))
        elif isinstance(v, dict):
            _collect(v, p, skip, out_emb, out_dense, depth + 1)


def _check_readout_bias(where, path, kernel_key, bias_key, kernel, bias):
    """A readout candidate's bias that does not fit its kernel is an error, not a readout left out."""
    if bias is not None and not (isinstance(bias, np.ndarray) and bias.shape == (kernel.shape[1],)):
        found = f"shape {bias.shape}" if isinstance(bias, np.ndarray) else f"a {type(bias).__name__}"
        raise FileFormatError(
            f"{where}: readout bias {_fmt(path + (bias_key,))!r} has {found}, expected ({kernel.shape[1]},) "
            f"to match kernel {_fmt(path + (kernel_key,))!r} of shape {kernel.shape}"
        )


def _extras(tree, cell_path, cell_sizes, H, M, where, embedding_key=None, readout_key=None, scope=()):
    """(embedding, readout_weight, readout_bias, notes) found outside the cells when unambiguous.

    ``cell_sizes``: every recurrent cell of the tree, path -> (input size, hidden size), or None
    where unknown. With several cells, an embedding is guessed for a cell unless another cell could
    take it (an earlier layer whose output size is M: a stack; or, when the names do not tell the
    order, any other cell of input size M), so both directions of a bidirectional layer get it; a
    readout only for the last layer (a Dense after a stack reads it). ``embedding_key`` /
    ``readout_key``: a '/'-separated key path naming the map, False for none, None to guess.
    ``scope``: a key path the guesses are restricted to (key_prefix's top-level key), or () for all.
    """
    cell_paths = list(cell_sizes)
    embs, denses = [], []
    _collect(tree, (), set(cell_paths), embs, denses)
    if scope:
        embs = [e for e in embs if e[0][:len(scope)] == scope]
        denses = [d for d in denses if d[0][:len(scope)] == scope]
    notes = []
    others = [p for p in cell_paths if p != cell_path]
    order = _stack_order(cell_paths) if others else [cell_path]
    if embedding_key is None:
        emb = [(p, e) for p, e in embs if e.shape[1] == M and np.issubdtype(e.dtype, np.floating)]
        if emb and order is None:
            rivals = [p for p in others if (cell_sizes[p] is None or cell_sizes[p][0] == M)
                      and not _directions_of_one_layer(p, cell_path)]
            if rivals:
                notes.append(f"embedding not attached (other cells, {', '.join(map(_fmt, rivals))}, also take inputs "
                             f"of size {M}, and the key names do not tell the layer order; pass embedding_key=)")
                emb = []
        elif emb:
            feeders = [p for p in order[:order.index(cell_path)] if cell_sizes[p] is None or cell_sizes[p][1] == M]
            if feeders:
                notes.append(f"embedding not attached (an earlier layer, {_fmt(feeders[-1])}, has output size {M} and "
                             "may feed this cell; pass embedding_key=)")
                emb = []
    else:
        emb = [] if embedding_key is False else [_picked_embedding(tree, embedding_key, M, embs, where)]
    if readout_key is None:
        outs = [(p, k, b) for p, k, b in denses if k.shape[0] == H and np.issubdtype(k.dtype, np.floating)]
        for p, k, b in outs:
            _check_readout_bias(where, p, "kernel", "bias", k, b)
        # A Dense (H, C1) whose output another Dense (C1, C2) takes in is an MLP head's first layer,
        # not a linear readout ((H, H) cannot be told apart by shape).
        # (Not a Dense whose output is the cell's input, an input projection (C1, M).)
        hidden = {p: [q for q, kq, _ in denses if q != p and kq.ndim == 2 and kq.shape[0] == k.shape[1]
                      and kq.shape[1] != M]
                  for p, k, _ in outs if k.shape[1] != H}
        hidden = {p: later for p, later in hidden.items() if later}
        for p, later in hidden.items():
            notes.append(f"no readout from {_fmt(p)}: {', '.join(map(_fmt, later))} takes its output "
                         "(an MLP head, not a linear readout; readout_key= uses it anyway)")
        outs = [o for o in outs if o[0] not in hidden]
        if outs and order is None:
            notes.append("readout not attached (the tree holds several cells, " + ", ".join(map(_fmt, cell_paths))
                         + ", whose order its key names do not tell; pass readout_key=)")
            outs = []
        elif outs and order[-1] != cell_path:
            notes.append(f"readout not attached (a readout after the stack reads its last cell, {_fmt(order[-1])}; "
                         "pass readout_key= to attach one)")
            outs = []
    else:
        outs = [] if readout_key is False else [_picked_readout(tree, readout_key, H, denses, where)]
    # renn network tuple: {'0': embedding (V, M), '1': rnn params, '2': {'0': W (H, C), '1': b (C,)}};
    # each part is taken where its key was not given and nothing else was found
    if len(cell_path) >= 1:
        parent = tree
        for k in cell_path[:-1]:
            parent = parent[k]
        if cell_path[-1] == "1" and isinstance(parent, dict) and {"0", "2"} <= set(parent):
            e, r = parent["0"], parent["2"]
            base = cell_path[:-1]
            if (embedding_key is None and not emb and isinstance(e, np.ndarray) and e.ndim == 2 and e.shape[1] == M
                    and e.dtype.kind == "f"):
                emb = [(base + ("0",), e)]
            if (readout_key is None and not outs and isinstance(r, dict) and isinstance(r.get("0"), np.ndarray)
                    and r["0"].ndim == 2 and r["0"].shape[0] == H):
                _check_readout_bias(where, base + ("2",), "0", "1", r["0"], r.get("1"))
                outs = [(base + ("2",), r["0"], r.get("1"))]
    return _attach(emb, outs, notes)


def _cell_sizes(where, path, kind, node, gate_bias, forget_bias):
    """(input size, hidden size) of another cell of the tree, or None where it does not convert."""
    try:
        _, w_ih, w_hh, _, _, _ = _convert(_Ctx(where), path, kind, node, cell=None, gate_bias=gate_bias,
                                          forget_bias=forget_bias)
        return int(w_ih.shape[1]), int(w_hh.shape[1])
    except (FastFPError, IndexError, ValueError, AttributeError):
        return None


def _directions_of_one_layer(a, b) -> bool:
    """Two cells of one nn.Bidirectional: their paths differ only in 'forward_rnn' / 'backward_rnn'."""
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    return len(a) == len(b) and len(diff) == 1 and set(diff[0]) == {"forward_rnn", "backward_rnn"}


def _stack_order(cell_paths):
    """The cells in layer order, told by Flax's numbered names (RNN_0, RNN_1, ..., RNN_10), or None.

    Two paths are ordered by the first key where they differ when both are the same name with a
    number (``RNN_2`` < ``RNN_10``; dicts rebuilt by jax.tree_util are sorted as strings, so key
    order is not layer order). Other names (``encoder`` / ``decoder``, ``GRUCell_0`` /
    ``LSTMCell_0``, numbered per type) do not tell the order: None.
    """
    import re
    from functools import cmp_to_key

    def cmp(a, b):
        for x, y in zip(a, b):
            if x == y:
                continue
            mx, my = re.fullmatch(r"(.*?)(\d+)", x), re.fullmatch(r"(.*?)(\d+)", y)
            if not (mx and my and mx.group(1) == my.group(1)):
                raise ValueError
            return -1 if int(mx.group(2)) < int(my.group(2)) else 1
        raise ValueError  # one path inside another: not two layers

    try:
        return sorted(cell_paths, key=cmp_to_key(cmp))
    except ValueError:
        return None


def _attach(emb, outs, notes):
    embedding = emb[0][1] if len(emb) == 1 else None
    rw = rb = None
    if embedding is not None:
        notes.append(f"embedding from {_fmt(emb[0][0])}")
    if len(outs) == 1:
        p, k, b = outs[0]
        rw = np.ascontiguousarray(k.T)
        rb = b
        notes.append(f"readout from {_fmt(p)} (kernel transposed)")
    elif len(outs) > 1:
        notes.append("readout not attached (several Dense candidates: " + ", ".join(_fmt(p) for p, _, _ in outs)
                     + "; pass readout_key=)")
    if len(emb) > 1:
        notes.append("embedding not attached (several candidates: " + ", ".join(_fmt(p) for p, _ in emb)
                     + "; pass embedding_key=)")
    return embedding, rw, rb, notes


def _node_at(tree, key, name, where):
    """The node at a '/'-separated key path, or an error naming ``name`` and the path's first miss."""
    if not isinstance(key, str) or not key.strip("/"):
        raise InvalidOptionError(f"argument {name!r}: got {key!r}, expected a '/'-separated key path "
                                 "(e.g. 'params/Dense_0'), False or None")
    node, path = tree, ()
    for part in (p for p in key.strip("/").split("/") if p):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(list(node)[:12]) if isinstance(node, dict) else f"a {type(node).__name__}"
            raise InvalidOptionError(f"argument {name!r}: got {key!r}, but {where} has no key {part!r} under "
                                     f"{_fmt(path) or 'the top level'!r} (keys there: {have})")
        node, path = node[part], path + (part,)
    return node, path


def _picked_embedding(tree, key, M, found, where):
    node, path = _node_at(tree, key, "embedding_key", where)
    if isinstance(node, dict) and isinstance(node.get("embedding"), np.ndarray):
        node, path = node["embedding"], path + ("embedding",)
    if not (isinstance(node, np.ndarray) and node.ndim == 2 and node.shape[1] == M and node.dtype.kind == "f"):
        got = f"shape {node.shape}" if isinstance(node, np.ndarray) else f"a {type(node).__name__}"
        listing = ", ".join(f"{_fmt(p)} {e.shape}" for p, e in found) or "none"
        raise InvalidOptionError(f"argument 'embedding_key': {key!r} holds {got}, expected a float (V, {M}) "
                                 f"embedding (M = {M}, the cell's input size); embeddings in the tree: {listing}")
    return path, node


def _picked_readout(tree, key, H, found, where):
    node, path = _node_at(tree, key, "readout_key", where)
    if isinstance(node, dict) and "kernel" not in node and isinstance(node.get("0"), np.ndarray):
        # renn's readout pair {'0': W (H, C), '1': b (C,)}
        node = {"kernel": node["0"], **({"bias": node["1"]} if "1" in node else {})}
    kernel = node.get("kernel") if isinstance(node, dict) else None
    if not (isinstance(kernel, np.ndarray) and kernel.ndim == 2 and kernel.shape[0] == H and kernel.dtype.kind == "f"):
        got = (f"kernel shape {kernel.shape}" if isinstance(kernel, np.ndarray)
               else "no 'kernel'" if isinstance(node, dict) else f"a {type(node).__name__}")
        listing = ", ".join(f"{_fmt(p)} {k.shape}" for p, k, _ in found) or "none"
        raise InvalidOptionError(f"argument 'readout_key': {key!r} holds {got}, expected a Dense map with a float "
                                 f"kernel ({H}, C) (H = {H}); Dense maps in the tree: {listing}")
    _check_readout_bias(where, path, "kernel", "bias", kernel, node.get("bias"))
    return path, kernel, node.get("bias")


# ============================================================================ public API
def params_from_flax(tree, *, cell: str | None = None, key_prefix: str | None = None,
                     nonlinearity: str | None = None, gate_bias: float = 0.0, forget_bias: float = 1.0,
                     embedding_key=None, readout_key=None, path=None, _arg: str = "tree") -> Model:
    """Convert a Flax (linen / nnx) or renn-style parameter tree into a :class:`fastfp.Model`.

    Parameters
    ----------
    tree : mapping
        Nested dicts (or lists/tuples) of arrays: e.g. ``variables`` from ``module.init``, its
        ``['params']``, a tree read by :func:`read_flax_msgpack`, ``nnx.to_pure_dict(nnx.state(cell))``
        or renn's ``params`` / network tuple. JAX arrays are converted with ``np.asarray``; JAX itself
        is never imported.
    cell : str, optional
        Required for a generic 3-gate tree ('gru' or 'gru_reset_before'); otherwise checked against
        the cell found.
    key_prefix : str, optional
        ``/``-separated key path prefix picking one cell when the tree holds several.
    nonlinearity : {'tanh', 'relu'}, optional
        Activation of a vanilla / SimpleCell (not recorded in the params; default 'tanh').
    gate_bias, forget_bias : float
        renn's constructor constants added to the update gate (GRU, UGRNN) and forget gate (LSTM); not
        stored in renn params. Defaults are renn's (0.0 and 1.0). Ignored for Flax cells.
    embedding_key, readout_key : str or False, optional
        ``/``-separated key paths of the embedding (an ``Embed`` map or its ``embedding`` array,
        (V, M)) and of the Dense readout (a map with ``kernel`` (H, C) [+ ``bias`` (C,)]), e.g.
        ``'params/Embed_0'``, ``'params/Dense_0'``; False attaches none; None (default) attaches the
        one candidate of matching size, and a readout only for the last cell of the tree.
    path : str, optional
        File name used in error messages.

    Returns
    -------
    Model

    Raises
    ------
    FileFormatError
        No cell or several cells (without ``key_prefix``), missing or misshapen kernels, a key of the
        cell (or of its Dense maps / renn gates) outside its layout, a readout bias that does not fit its
        kernel, two keys of one map that read as the same string.
    InvalidOptionError
        An option out of range, or ``cell`` disagreeing with the tree.
    NonFiniteError, DTypeError, ...
        The errors of :class:`RNNParams` and :class:`Model`, with the file and the cell's path named.
    """
    # _arg: the caller's name for the tree ('source' through load_flax and fastfp.load)
    where = f"argument {_arg!r}" + (f": {path!s}" if path is not None else "")
    if cell is not None and (not isinstance(cell, str) or cell not in CELLS):
        raise InvalidOptionError(f"argument 'cell': got {cell!r}, expected None or one of {', '.join(map(repr, CELLS))}")
    if key_prefix is not None and not isinstance(key_prefix, str):
        raise InvalidOptionError(f"argument 'key_prefix': got {key_prefix!r}, expected a str")
    if nonlinearity is not None and nonlinearity not in ("tanh", "relu"):
        raise InvalidOptionError(f"argument 'nonlinearity': got {nonlinearity!r}, expected 'tanh' or 'relu'")
    for name, v in (("gate_bias", gate_bias), ("forget_bias", forget_bias)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise InvalidOptionError(f"argument {name!r}: got {v!r}, expected a finite float")
    norm = _normalise(tree, where)
    if not isinstance(norm, dict):
        raise FileFormatError(f"{where}: expected a nested dict of arrays, got {type(tree).__name__}")
    found = _find(norm)
    all_found = list(found)
    if key_prefix not in (None, ""):
        prefix = tuple(p for p in key_prefix.strip("/").split("/") if p)
        picked = [f for f in found if f[0][: len(prefix)] == prefix]
        if not picked:
            listing = ", ".join(_fmt(p) for p, _, _ in found) or "none"
            raise InvalidOptionError(f"{where}: key_prefix={key_prefix!r} matches no recurrent cell (cells found: {listing})")
        found = picked
    if not found:
        raise FileFormatError(
            f"{where}: no recurrent cell parameters found (looked for Flax linen GRUCell/LSTMCell/"
            "OptimizedLSTMCell/SimpleCell/MGUCell Dense names, nnx dense_i/dense_h, renn gate names, or "
            f"generic W/U/b keys); top-level keys: {', '.join(list(norm)[:10]) or 'none'}"
        )
    if len(found) > 1:
        raise FileFormatError(
            f"{where}: several recurrent cells found: {', '.join(_fmt(p) for p, _, _ in found)}; pick one with "
            "key_prefix= (a '/'-separated key path prefix)"
        )
    cpath, kind, node = found[0]
    ctx = _Ctx(where)
    ignored = _check_cell_keys(ctx, cpath, kind, node)
    found_cell, w_ih, w_hh, b_ih, b_hh, note = _convert(ctx, cpath, kind, node, cell=cell,
                                                        gate_bias=float(gate_bias), forget_bias=float(forget_bias))
    if cell is not None and cell != found_cell:
        raise InvalidOptionError(
            f"{where}: cell={cell!r} given, but the tree at {_fmt(cpath)!r} is a {note} (fastfp cell {found_cell!r})"
        )
    G = len(GATE_ORDER[found_cell])
    H = w_hh.shape[1]
    if w_hh.shape != (G * H, H):
        raise FileFormatError(f"{where}: the recurrent kernels at {_fmt(cpath)!r} stack to shape {w_hh.shape}, "
                              f"expected ({G}*H, H) for {found_cell!r}")
    if w_ih.shape[0] != G * H:
        raise FileFormatError(f"{where}: the input kernels at {_fmt(cpath)!r} stack to shape {w_ih.shape}, "
                              f"expected ({G * H}, M) to match the recurrent kernels")
    for nm, b in (("input bias", b_ih), ("recurrent bias", b_hh)):
        if b is not None and b.shape != (G * H,):
            raise FileFormatError(f"{where}: the {nm} at {_fmt(cpath)!r} stacks to shape {b.shape}, expected ({G * H},)")
    if nonlinearity is not None and nonlinearity != "tanh" and found_cell != "vanilla":
        raise InvalidOptionError(f"{where}: nonlinearity={nonlinearity!r} applies only to a vanilla cell, found {found_cell!r}")
    src = f"{note}; from {_fmt(cpath)}" + (f" of {path}" if path is not None else "")
    if found_cell == "vanilla" and nonlinearity is None:
        warn_user(f"{where}: a vanilla cell at {_fmt(cpath)!r}, whose activation a parameter tree does not "
                  "store: assumed 'tanh' (SimpleCell's default); pass nonlinearity='relu' for a relu cell")
    try:
        params = RNNParams(found_cell, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity or "tanh", source=src)
    except FastFPError as exc:  # name the file and the sub-tree, as the state-dict readers do
        raise type(exc)(f"{where}: the cell at {_fmt(cpath)!r} ({note}): {exc}") from None
    sizes = {p: _cell_sizes(where, p, k, n, float(gate_bias), float(forget_bias)) for p, k, n in all_found}
    sizes[cpath] = (params.input_size, H)
    emb, rw, rb, notes = _extras(norm, cpath, sizes, H, params.input_size, where,
                                 embedding_key=embedding_key, readout_key=readout_key)
    scope = () if key_prefix in (None, "") or len(cpath) < 2 else prefix[:1]
    if scope and (emb is None or rw is None):
        # What the whole tree leaves ambiguous may be clear under key_prefix's top-level key: the
        # 'params' of a checkpoint that also holds the optimiser's copies of every weight
        # ('opt_state/0/mu/params/...'). Taken only where it finds what the whole tree gave and more.
        inner = {p: v for p, v in sizes.items() if p[:1] == scope}
        emb2, rw2, rb2, notes2 = _extras(norm, cpath, inner, H, params.input_size, where,
                                         embedding_key=embedding_key, readout_key=readout_key, scope=scope)
        more = (emb2 is not None and emb is None) or (rw2 is not None and rw is None)
        if more and (emb is None or emb2 is not None) and (rw is None or rw2 is not None):
            emb, rw, rb = emb2, rw2, rb2
            notes = notes2 + [f"embedding and readout looked for under key_prefix's {_fmt(scope)!r} (the whole "
                              "tree holds other copies)"]
    notes = ignored + notes
    meta = {"format": "flax/jax parameter tree", "cell_path": _fmt(cpath), "cell_kind": kind, "conversions": note}
    if notes:
        meta["extras"] = notes
    if kind.startswith("renn"):
        meta["renn_gate_bias" if found_cell != "lstm" else "renn_forget_bias"] = \
            float(gate_bias if found_cell != "lstm" else forget_bias)
    try:
        return Model(params, emb, rw, rb, None, meta)
    except FastFPError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def load_flax(source, *, cell: str | None = None, key_prefix: str | None = None, nonlinearity: str | None = None,
              gate_bias: float = 0.0, forget_bias: float = 1.0, embedding_key=None, readout_key=None) -> Model:
    """Load a Flax ``to_bytes`` msgpack file (path) or an in-memory Flax / nnx / renn tree as a Model.

    See :func:`params_from_flax` for the options and the module docs for the mappings. Orbax
    checkpoints (directories) are not read: restore them with orbax and pass the tree.
    """
    opts = dict(cell=cell, key_prefix=key_prefix, nonlinearity=nonlinearity, gate_bias=gate_bias,
                forget_bias=forget_bias, embedding_key=embedding_key, readout_key=readout_key)
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise FileFormatError(
                f"argument 'source': {os.fspath(source)!s} is a directory; fastfp reads Flax msgpack files "
                "(flax.serialization.to_bytes), not orbax checkpoints: restore one with orbax and pass the "
                "tree (fastfp.load(restored)), or save its params with flax.serialization.to_bytes"
            )
        tree = read_flax_msgpack(source, _arg="source")
        return params_from_flax(tree, path=os.fspath(source), _arg="source", **opts)
    return params_from_flax(source, _arg="source", **opts)
