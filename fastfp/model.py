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
from dataclasses import dataclass, field

import numpy as np

from .errors import FileFormatError, ShapeError
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
        if self.embedding is not None:
            e = np.asarray(self.embedding)
            if e.ndim != 2 or e.shape[1] != p.input_size:
                raise ShapeError(f"argument 'embedding': got shape {e.shape}, expected (V, {p.input_size})")
            if self.vocab is not None and len(self.vocab) != e.shape[0]:
                raise ShapeError(f"argument 'vocab': got {len(self.vocab)} tokens, expected {e.shape[0]} (rows of embedding)")
        if self.readout_weight is not None:
            w = np.asarray(self.readout_weight)
            if w.ndim != 2 or w.shape[1] != p.hidden_size:
                raise ShapeError(f"argument 'readout_weight': got shape {w.shape}, expected (C, {p.hidden_size})")
            if self.readout_bias is not None and np.shape(self.readout_bias) != (w.shape[0],):
                raise ShapeError(
                    f"argument 'readout_bias': got shape {np.shape(self.readout_bias)}, expected ({w.shape[0]},)"
                )

    def inputs(self, tokens) -> np.ndarray:
        """Input vectors of token ids: (..., M)."""
        if self.embedding is None:
            raise ShapeError("this Model has no embedding; pass input vectors directly")
        return np.asarray(self.embedding)[np.asarray(tokens)]

    def logits(self, states) -> np.ndarray:
        """Class scores of states (..., N) -> (..., C), from the h part of the state."""
        if self.readout_weight is None:
            raise ShapeError("this Model has no readout")
        h = np.asarray(states)[..., : self.params.hidden_size]
        out = h @ np.asarray(self.readout_weight).T
        return out + self.readout_bias if self.readout_bias is not None else out


def save_params(path, model) -> None:
    """Write a ``Model`` (or bare ``RNNParams``) in fastfp's ``.npz`` layout (see module docs)."""
    if isinstance(model, RNNParams):
        model = Model(model)
    p = model.params
    arrays = {
        _KEY: np.array(PARAMS_FORMAT_VERSION),
        "cell": np.array(p.cell),
        "nonlinearity": np.array(p.nonlinearity),
        "w_ih": p.w_ih, "w_hh": p.w_hh, "b_ih": p.b_ih, "b_hh": p.b_hh,
        "source": np.array(p.source),
        "metadata": np.array(json.dumps(model.metadata)),
    }
    for name in ("embedding", "readout_weight", "readout_bias"):
        value = getattr(model, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    if model.vocab is not None:
        arrays["vocab"] = np.array(list(model.vocab), dtype=str)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_params(path) -> Model:
    """Read a file written by :func:`save_params` (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if _KEY not in files:
                raise FileFormatError(f"argument 'path': {path!s} is not a fastfp params file (no {_KEY!r} entry)")
            version = int(data[_KEY])
            if version > PARAMS_FORMAT_VERSION:
                raise FileFormatError(
                    f"argument 'path': {path!s} has params format version {version}; this fastfp reads up to "
                    f"{PARAMS_FORMAT_VERSION}: upgrade fastfp (pip install -U fastfp-rnn)"
                )
            for key in ("cell", "w_ih", "w_hh"):
                if key not in files:
                    raise FileFormatError(f"argument 'path': {path!s} lacks the key {key!r}")
            entries = {k: data[k] for k in files}
    except FileFormatError:
        raise
    except Exception as exc:  # zip/npy damage, object arrays (pickle refused), ...
        raise FileFormatError(f"argument 'path': {path!s} is not a readable fastfp params file ({exc})") from None
    get = entries.get
    params = RNNParams(
        str(entries["cell"]), entries["w_ih"], entries["w_hh"], get("b_ih"), get("b_hh"),
        nonlinearity=str(entries["nonlinearity"]) if "nonlinearity" in entries else "tanh",
        source=str(entries["source"]) if "source" in entries else f"fastfp npz {path!s}",
    )
    vocab = tuple(str(t) for t in entries["vocab"]) if "vocab" in entries else None
    metadata = json.loads(str(entries["metadata"])) if "metadata" in entries else {}
    return Model(params, get("embedding"), get("readout_weight"), get("readout_bias"), vocab, metadata)
