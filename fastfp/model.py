"""`Model`: a recurrent layer plus, for a classifier, its input embedding and linear readout; and
fastfp's own ``.npz`` layout for it (``save_params`` / ``load_params``).

Layout of a fastfp params file (format version 1, plain arrays, read with allow_pickle=False):

=====================  ====================  ==========================================
key                    shape                 meaning
=====================  ====================  ==========================================
``__fastfp_params__``  ()                    format version (int)
``cell``               () str                one of fastfp.CELLS
``nonlinearity``       () str                'tanh' or 'relu' (vanilla only)
``w_ih``               (G*H, M)              stacked input kernels (RNNParams layout)
``w_hh``               (G*H, H)              stacked recurrent kernels
``b_ih``, ``b_hh``     (G*H,)                biases
``embedding``          (V, M), optional      row v is the input vector of token v
``readout_weight``     (C, H), optional      class scores = readout_weight @ h + readout_bias
``readout_bias``       (C,), optional
``vocab``              (V,) str, optional    token strings
``metadata``           () str, optional      JSON object (task, training settings, ...)
``source``             () str, optional      provenance / conventions converted
=====================  ====================  ==========================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ._atomic import atomic_path
from ._npz import json_object_entry, read_npz, text_entry
from ._validate import as_float_array, check_finite
from .errors import ArgumentTypeError, DTypeError, FastFPError, FileFormatError, InvalidOptionError, ShapeError, warn_user
from .params import RNNParams

__all__ = ["Model", "save_params", "load_params", "PARAMS_FORMAT_VERSION"]

PARAMS_FORMAT_VERSION = 1
_KEY = "__fastfp_params__"


@dataclass(frozen=True, eq=False)
class Model:
    """An RNN layer and the classifier parts around it.

    Attributes
    ----------
    params : RNNParams
    embedding : ndarray, shape (V, M), optional
        Input vector of each token (one-hot tasks: the identity).
    readout_weight : ndarray, shape (C, H), optional
        Linear readout on the hidden state h (for an LSTM, the h part of [h, c]).
    readout_bias : ndarray, shape (C,), optional
    vocab : tuple of str, optional
    metadata : dict
    """

    params: RNNParams
    embedding: np.ndarray | None = None
    readout_weight: np.ndarray | None = None
    readout_bias: np.ndarray | None = None
    vocab: tuple | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.params
        if not isinstance(p, RNNParams):
            raise InvalidOptionError(f"argument 'params': got {type(p).__name__}, expected fastfp.RNNParams")
        # Stored as read-only float arrays, checked once here: a NaN readout or a string embedding
        # would otherwise surface only after a long search, under another argument's name.
        for name in ("embedding", "readout_weight", "readout_bias"):
            value = getattr(self, name)
            if value is not None:
                arr = np.array(as_float_array(name, value), copy=True)
                check_finite(name, arr)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)
        if self.embedding is not None:
            e = self.embedding
            if e.ndim != 2 or e.shape[1] != p.input_size:
                raise ShapeError(f"argument 'embedding': got shape {e.shape}, expected (V, {p.input_size})")
            if self.vocab is not None and len(self.vocab) != e.shape[0]:
                raise ShapeError(f"argument 'vocab': got {len(self.vocab)} tokens, expected {e.shape[0]} (rows of embedding)")
        if self.readout_weight is not None:
            w = self.readout_weight
            if w.ndim != 2 or w.shape[1] != p.hidden_size:
                raise ShapeError(f"argument 'readout_weight': got shape {w.shape}, expected (C, {p.hidden_size})")
            if self.readout_bias is not None and self.readout_bias.shape != (w.shape[0],):
                raise ShapeError(
                    f"argument 'readout_bias': got shape {self.readout_bias.shape}, expected ({w.shape[0]},)"
                )
        elif self.readout_bias is not None:
            raise InvalidOptionError("argument 'readout_bias': given without a readout_weight; pass both or neither")
        if self.vocab is not None:
            if isinstance(self.vocab, str) or not all(isinstance(t, str) for t in self.vocab):
                raise InvalidOptionError(f"argument 'vocab': got {type(self.vocab).__name__} {str(self.vocab)[:60]}, "
                                         "expected a sequence of token strings")
            vocab = tuple(self.vocab)
            seen: set = set()
            dup = next((t for t in vocab if t in seen or seen.add(t)), None)
            if dup is not None:
                raise InvalidOptionError(f"argument 'vocab': lists the token {dup!r} twice, expected distinct tokens")
            if any("\x00" in t for t in vocab):  # NumPy's str arrays would drop it on saving
                raise InvalidOptionError("argument 'vocab': a token holds the character NUL ('\\x00')")
            if any(t == "" for t in vocab):
                raise InvalidOptionError("argument 'vocab': holds an empty token, expected non-empty token strings")
            if self.embedding is None and len(vocab) != p.input_size:
                # one-hot inputs: token i is input column i
                raise ShapeError(f"argument 'vocab': got {len(vocab)} tokens, expected {p.input_size} (the input size: "
                                 "one-hot inputs without an embedding)")
            object.__setattr__(self, "vocab", vocab)
        if not isinstance(self.metadata, dict):
            raise InvalidOptionError(f"argument 'metadata': got {type(self.metadata).__name__}, expected a dict")

    @property
    def task_record(self) -> dict:
        """``metadata['task']`` where it is the record fastfp.train or with_vocab writes (a dict:
        'name', 'params', ...), else {} (no record, or the shipped model's older form)."""
        task = self.metadata.get("task")
        return task if isinstance(task, dict) else {}

    def with_vocab(self, vocab, *, labels=None, lowercase: bool | None = None, multilabel: bool | None = None,
                   unk: str | None = None) -> "Model":
        """A copy with ``vocab`` (one token per embedding row, or per one-hot input) and a record
        of how its training text was read, as :func:`fastfp.read_corpus` (``model=``) and
        ``fastfp run/find --corpus`` then read text for it.

        Parameters
        ----------
        vocab : sequence of str, length V
            Token i names row i of the embedding (column i of a one-hot input): the tokenizer's
            vocabulary the model was trained with, in its id order.
        labels : sequence of str, optional
            The readout's outputs in order (their label strings in the corpus, stripped as
            read_corpus strips them). Without: the corpus' label strings in sorted order, which
            need not be the order the model was trained with.
        lowercase, multilabel : bool, optional
            Whether the training text was lowercased (default True) and whether the outputs are
            independent labels (default False); None keeps what the model records already.
        unk : str, optional
            The vocabulary's unknown-word token when it is not spelt ``'<unk>'`` (``'[UNK]'``,
            ``'<UNK>'``): stored as ``'<unk>'``, the row words outside the vocabulary read as.
        """
        from dataclasses import replace

        from .corpus import _label_list

        if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
            raise InvalidOptionError(f"argument 'vocab': got {vocab!r}, expected a sequence of token strings")
        vocab = list(vocab)
        if not all(isinstance(t, str) and t for t in vocab):
            raise InvalidOptionError("argument 'vocab': expected non-empty token strings")
        if unk is not None:
            if unk not in vocab:
                raise InvalidOptionError(f"argument 'unk': got {unk!r}, which is not in the vocabulary")
            if "<unk>" in vocab and unk != "<unk>":
                raise InvalidOptionError(f"argument 'unk': got {unk!r}, but the vocabulary also holds '<unk>'")
            vocab[vocab.index(unk)] = "<unk>"
        n_in = np.shape(self.embedding)[0] if self.embedding is not None else self.params.input_size
        if len(vocab) != n_in:
            raise ShapeError(f"argument 'vocab': got {len(vocab)} tokens, expected {n_in} ("
                             + ("rows of the embedding)" if self.embedding is not None else "one-hot inputs of the cell)"))
        old = self.task_record
        record = dict(old.get("params") or {}) if old.get("name") == "corpus" else {}
        if labels is not None:
            names = list(_label_list(labels))
            if self.readout_weight is not None and len(names) != np.shape(self.readout_weight)[0]:
                raise ShapeError(f"argument 'labels': got {len(names)} labels, expected "
                                 f"{np.shape(self.readout_weight)[0]} (the readout's outputs)")
            record["label_names"] = names
        for name, value, default in (("lowercase", lowercase, True), ("multilabel", multilabel, False)):
            if value is not None:
                record[name] = bool(value)
            record.setdefault(name, default)
        record["vocab"] = "attached (Model.with_vocab)"
        if record["lowercase"]:
            # Lowercased text never matches an upper-case token: a cased tokenizer's vocabulary
            # attached as lowercased leaves those rows unreachable.
            cased = [t for t in vocab if t != t.lower() and not (t[:1] in "<[" and t[-1:] in ">]")]
            if cased:
                warn_user(f"argument 'vocab': {len(cased)} of {len(vocab)} tokens hold upper-case letters (e.g. "
                          f"{', '.join(map(repr, cased[:3]))}), which lowercased text never matches; pass "
                          "lowercase=False if the tokenizer kept case")
        # A corpus record: this model reads text (a synthetic task's words would all be <unk>).
        metadata = {**self.metadata, "task": {**old, "name": "corpus", "params": record}}
        return replace(self, vocab=tuple(vocab), metadata=metadata)

    def inputs(self, tokens) -> np.ndarray:
        """Input vectors of token ids: (...,) ints in [0, V) -> (..., M)."""
        if self.embedding is None:
            raise ShapeError("this Model has no embedding; pass input vectors directly")
        ids = np.asarray(tokens)
        V = np.shape(self.embedding)[0]
        if ids.size == 0 and ids.dtype.kind == "f":
            ids = ids.astype(np.int64)  # np.array([]) is float: it selects nothing
        if ids.dtype.kind not in "iu":
            raise DTypeError(f"argument 'tokens': got dtype {ids.dtype}, expected integer token ids in [0, {V})")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ShapeError(f"argument 'tokens': holds id {bad}, expected ids in [0, {V}) (the embedding's rows)")
        return np.asarray(self.embedding)[ids]

    def logits(self, states) -> np.ndarray:
        """Class scores of states (..., N) or of their h parts (..., H) -> (..., C)."""
        if self.readout_weight is None:
            raise ShapeError("this Model has no readout")
        states = np.asarray(states)
        sizes = {self.params.state_size, self.params.hidden_size}
        if states.ndim == 0 or states.shape[-1] not in sizes:
            want = " or ".join(f"(..., {n})" for n in sorted(sizes, reverse=True))
            raise ShapeError(f"argument 'states': got shape {states.shape}, expected {want} (the "
                             f"{self.params.cell!r} cell's state" + (", or its h part)" if len(sizes) == 2 else ")"))
        h = states[..., : self.params.hidden_size]
        out = h @ np.asarray(self.readout_weight).T
        return out + self.readout_bias if self.readout_bias is not None else out

    def __repr__(self) -> str:
        p = self.params
        parts = [f"cell={p.cell!r}", f"hidden_size={p.hidden_size}", f"input_size={p.input_size}", f"dtype={p.dtype}"]
        if self.embedding is not None:
            parts.append(f"embedding={np.shape(self.embedding)}")
        if self.readout_weight is not None:
            parts.append(f"readout={np.shape(self.readout_weight)}" + (" + bias" if self.readout_bias is not None else ""))
        if self.vocab is not None:
            parts.append(f"vocab={len(self.vocab)} words")
        return "Model(" + ", ".join(parts) + ")"


def _metadata_json(metadata) -> str:
    """The metadata as JSON (NumPy scalars and arrays as numbers and lists), or an error naming the
    first entry JSON cannot hold."""
    def plain(obj):
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(type(obj).__name__)

    try:
        return json.dumps(metadata, default=plain)
    except (TypeError, ValueError):
        pass

    def first_bad(obj, where):
        if isinstance(obj, dict):
            for key, value in obj.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    return f"{where} has the key {key!r} ({type(key).__name__})"
                bad = first_bad(value, f"{where}[{key!r}]")
                if bad:
                    return bad
            return None
        if isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                bad = first_bad(value, f"{where}[{i}]")
                if bad:
                    return bad
            return None
        try:
            json.dumps(obj, default=plain)
        except (TypeError, ValueError):
            return f"{where} is a {type(obj).__name__}"
        return None

    raise ArgumentTypeError(f"argument 'model': {first_bad(metadata, 'metadata') or 'metadata'}, which the file's "
                            "JSON metadata cannot hold; expected str, numbers, bools, None, lists and dicts")


def save_params(path, model) -> None:
    """Write a ``Model`` (or bare ``RNNParams``) in fastfp's ``.npz`` layout (see module docs).

    The file is written next to ``path`` and renamed onto it, so a failed write (full disk,
    interrupt) leaves any previous file at ``path`` as it was."""
    if isinstance(path, (Model, RNNParams)):
        raise ArgumentTypeError(f"argument 'path': got a {type(path).__name__}; the signature is "
                                "save_params(path, model)")
    if isinstance(model, RNNParams):
        model = Model(model)
    if not isinstance(model, Model):
        raise ArgumentTypeError(f"argument 'model': got {type(model).__name__}, expected a fastfp Model or RNNParams")
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"argument 'path': got {type(path).__name__}, expected a str or os.PathLike")
    p = model.params
    metadata_json = _metadata_json(model.metadata)
    arrays = {
        _KEY: np.array(PARAMS_FORMAT_VERSION),
        "cell": np.array(p.cell),
        "nonlinearity": np.array(p.nonlinearity),
        "w_ih": p.w_ih, "w_hh": p.w_hh, "b_ih": p.b_ih, "b_hh": p.b_hh,
        "source": np.array(p.source),
        "metadata": np.array(metadata_json),
    }
    for name in ("embedding", "readout_weight", "readout_bias"):
        value = getattr(model, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    if model.vocab is not None:
        arrays["vocab"] = np.array(list(model.vocab), dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


_ENTRIES = ("cell", "nonlinearity", "w_ih", "w_hh", "b_ih", "b_hh", "embedding", "readout_weight", "readout_bias",
            "vocab", "metadata", "source")


SHIPPED_PREFIX = "fastfp:data/"


def shipped_resource(name: str):
    """The package resource (a Traversable) of ``fastfp:data/NAME``, a model shipped in the package.

    Raises FileFormatError naming the shipped models when there is none of that name.
    """
    from importlib.resources import files

    data = files("fastfp").joinpath("data")
    shipped = sorted(p.name for p in data.iterdir() if p.name.endswith(".npz"))
    base = name[len(SHIPPED_PREFIX):]
    if base not in shipped:
        raise FileFormatError(f"{name!r} is not a shipped model; fastfp ships "
                              + ", ".join(SHIPPED_PREFIX + n for n in shipped))
    return data.joinpath(base)


def shipped_file(name: str, *, arg: str = "path"):
    """A context manager giving a file path for ``fastfp:data/NAME`` (see :func:`shipped_resource`).

    An ordinary install yields the file itself; a package imported from a zip, a temporary copy
    that lives until the ``with`` block ends.
    """
    from importlib.resources import as_file

    try:
        return as_file(shipped_resource(name))
    except FileFormatError as exc:
        raise FileFormatError(f"argument {arg!r}: {exc}") from None


def load_params(path) -> Model:
    """Read a file written by :func:`save_params` (never unpickles); ``'fastfp:data/NAME'`` reads
    a model shipped in the package (``fastfp:data/gru64_cat3.npz``, the one ``fastfp run`` analyses).

    Raises
    ------
    FileFormatError
        Not a fastfp params file, a newer format version, an unknown or malformed entry (see
        the module docs for the layout), or a damaged file.
    DTypeError, ShapeError, NonFiniteError, InvalidOptionError
        An array of the file that :class:`RNNParams` or :class:`Model` refuses (the error
        :class:`RNNParams` / :class:`Model` would raise, with the file named).
    """
    if isinstance(path, str) and path.startswith(SHIPPED_PREFIX):
        with shipped_file(path) as file:
            return load_params(file)
    where = f"argument 'path': {os.fspath(path)!s}"
    entries = read_npz(path, where=where, kind="fastfp params file", marker=_KEY, known=_ENTRIES,
                       newest=PARAMS_FORMAT_VERSION)
    for key in ("cell", "w_ih", "w_hh", "b_ih", "b_hh"):  # save_params writes every one of them
        if key not in entries:
            raise FileFormatError(f"{where} lacks the key {key!r}")
    text = {k: text_entry(entries, k, where=where) for k in ("cell", "nonlinearity", "source") if k in entries}
    get = entries.get
    try:
        params = RNNParams(
            text["cell"], entries["w_ih"], entries["w_hh"], get("b_ih"), get("b_hh"),
            nonlinearity=text.get("nonlinearity", "tanh"), source=text.get("source", f"fastfp npz {path!s}"),
        )
    except FastFPError as exc:  # same error type, with the file named
        raise type(exc)(f"{where}: {exc}") from None
    vocab = None
    if "vocab" in entries:
        v = entries["vocab"]
        if v.ndim != 1 or v.dtype.kind != "U":
            raise FileFormatError(f"{where}: entry 'vocab' is {v.dtype} of shape {v.shape}, expected a 1-D array of strings")
        vocab = tuple(str(t) for t in v)
        if len(set(vocab)) != len(vocab):
            seen: set = set()
            dup = next(t for t in vocab if t in seen or seen.add(t))
            raise FileFormatError(f"{where}: entry 'vocab' lists the token {dup!r} twice; expected distinct tokens")
    metadata = json_object_entry(entries, "metadata", where=where) if "metadata" in entries else {}
    try:
        return Model(params, get("embedding"), get("readout_weight"), get("readout_bias"), vocab, metadata)
    except FastFPError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _check_task_data_matches(model, data, name: str = "task_data") -> None:
    """Refuse data whose token ids or label order mean something else to ``model``.

    Token ids index the model's embedding rows: with a different vocabulary (same size or not)
    they would pick other words' rows and every number that follows would be silently wrong.
    Checked where both sides name their words (``Model.vocab``, ``TaskData.vocab``) and, for a
    model trained on a corpus, where both record their label names.
    """
    mv = model.vocab
    if mv is not None and tuple(mv) != tuple(data.vocab):
        mv, dv = tuple(mv), tuple(data.vocab)
        if len(mv) != len(dv):
            detail = f"{len(dv)} words against the model's {len(mv)}"
        else:
            j = next(i for i, (a, b) in enumerate(zip(mv, dv)) if a != b)
            detail = f"id {j} is {dv[j]!r} in the data but {mv[j]!r} in the model"
        raise InvalidOptionError(
            f"argument {name!r}: its vocabulary is not the model's ({detail}), so its token ids would pick "
            "other words' embedding rows; read a corpus with fastfp.read_corpus(path, model=model), or remap "
            "the data with data.with_vocab(model.vocab)"
        )
    task = model.task_record
    rec = task.get("params", {}).get("label_names") if task.get("name") == "corpus" and isinstance(
        task.get("params"), dict) else None
    got = data.params.get("label_names") if isinstance(data.params, dict) else None
    if rec is not None and got is not None and [str(x) for x in rec] != [str(x) for x in got]:
        raise InvalidOptionError(
            f"argument {name!r}: its labels are {list(got)!r} in that order, but the model's outputs are "
            f"{[str(x) for x in rec]!r}; read the corpus with fastfp.read_corpus(path, model=model) (or labels=...)"
        )
