"""Train small text classifiers with PyTorch and hand them over as :class:`fastfp.Model`.

This module is the training counterpart of :mod:`fastfp.tasks`: it trains the study's networks
(embedding or one-hot inputs -> one recurrent layer -> linear readout of the last valid state) on a
:class:`~fastfp.tasks.TaskData` and returns a :class:`fastfp.Model` whose ``params`` are in fastfp's
layout, ready for :func:`fastfp.find_fixed_points`.

PyTorch is optional: it is imported inside the functions (``import fastfp`` and ``import
fastfp.train`` never import it). Without it, every function that needs it raises
:class:`~fastfp.errors.MissingDependencyError` (``pip install 'fastfp-rnn[torch]'``).
:func:`accuracy` and :func:`predict` evaluate a ``fastfp.Model`` with fastfp alone.

Torch cell modules (built by :func:`make_cell`, all with the same interface)

=====================  =====================================================================
fastfp cell            torch module
=====================  =====================================================================
``vanilla``            wraps ``torch.nn.RNN(nonlinearity='tanh' | 'relu')``
``gru``                wraps ``torch.nn.GRU`` (reset after the recurrent matmul)
``gru_reset_before``   ``GRUResetBeforeCell``: written from fastfp's equations
``ugrnn``              ``UGRNNCell``: written from fastfp's equations
``lstm``               wraps ``torch.nn.LSTM`` (state [h, c])
=====================  =====================================================================

Every cell module has tensors ``weight_ih`` (G*H, M), ``weight_hh`` (G*H, H), ``bias_ih`` and
``bias_hh`` (G*H,) in fastfp's layout and gate order (``fastfp.GATE_ORDER``), ``step(x, state)``
(one update, state (B, N) with N = 2H for the LSTM's [h, c]), ``forward(xs, lengths=None)`` (the
state after the last valid input of each sequence), ``to_params()`` and ``load_params_(params)``.

Recurrent-weight initialisation (``recurrent_init`` of :func:`make_cell` and :func:`train_classifier`):
``'default'`` keeps PyTorch's (every tensor uniform in [-1/sqrt(H), 1/sqrt(H)]); ``'identity'`` sets
every H x H gate block of ``weight_hh`` to ``g * I`` (Le, Jaitly & Hinton 2015, "IRNN"; scaled
identity for tanh cells), ``'orthogonal'`` to ``g`` times a random orthogonal matrix
(``torch.nn.init.orthogonal_``) and ``'normal'`` to i.i.d. N(0, g^2 / H) entries (the fan-in normal
init of renn, the study's JAX library: spectral radius about g, eigenvalues filling the disc), with
``g = recurrent_gain`` (1.0 by default). Only ``weight_hh`` changes; the input weights and biases
keep PyTorch's init (plus ``forget_bias`` on the LSTM's forget block of ``bias_ih``, when given).

The optimiser defaults are the study's (Aitken et al. 2021, the settings of its synthetic
networks; docs/reproduction.md): Adam (b1 0.9, b2 0.99, eps 0.1), lr 0.1 * 0.9997^step, clipping at
global norm 10, L2 penalty 5e-4 * (sum of squares of all parameters) added to the loss, batch 128,
readout without bias.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._validate import progress_logger
from ._version import __version__
from .dynamics import rollout
from .errors import ArgumentTypeError, InvalidOptionError, MissingDependencyError, ShapeError
from .model import Model
from .params import CELLS, GATE_ORDER, NONLINEARITY_CODES, RNNParams
from .tasks import TaskData

__all__ = [
    "TrainResult",
    "train_classifier",
    "accuracy",
    "predict",
    "make_cell",
    "cell_from_params",
    "TextClassifier",  # noqa: F822 (module __getattr__ builds it on first access)
    "VanillaCell",  # noqa: F822 (module __getattr__ builds it on first access)
    "GRUCell",  # noqa: F822 (module __getattr__ builds it on first access)
    "GRUResetBeforeCell",  # noqa: F822 (module __getattr__ builds it on first access)
    "UGRNNCell",  # noqa: F822 (module __getattr__ builds it on first access)
    "LSTMCell",  # noqa: F822 (module __getattr__ builds it on first access)
    "RECURRENT_INITS",
]

_INSTALL = "pip install 'fastfp-rnn[torch]'"
RECURRENT_INITS = ("default", "identity", "orthogonal", "normal")
# The inits that take a gain, as the error messages list them.
_GAINED_INITS = ", ".join(repr(v) for v in RECURRENT_INITS[1:-1]) + f" or {RECURRENT_INITS[-1]!r}"
_TORCH_NAMES = ("TextClassifier", "VanillaCell", "GRUCell", "GRUResetBeforeCell", "UGRNNCell", "LSTMCell")


def _import_torch():
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # also raised when sys.modules['torch'] is None
        raise MissingDependencyError(
            f"fastfp.train needs PyTorch, which could not be imported ({exc}); install it with: {_INSTALL}"
        ) from None
    return torch


# --------------------------------------------------------------------------- torch classes
_CLASSES: dict | None = None


def _classes() -> dict:
    """Define the torch module classes on first use (torch is imported here, not at import time)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    torch = _import_torch()
    from torch import nn
    from torch.nn import functional as F

    class _Cell(nn.Module):
        """Base class: the interface shared by every fastfp cell module."""

        cell: str = ""

        def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
            super().__init__()
            self.input_size = int(input_size)
            self.hidden_size = int(hidden_size)
            self.nonlinearity = nonlinearity

        @property
        def n_gates(self) -> int:
            return len(GATE_ORDER[self.cell])

        @property
        def state_size(self) -> int:
            return 2 * self.hidden_size if self.cell == "lstm" else self.hidden_size

        def to_params(self, dtype=None, source: str = "") -> RNNParams:
            """The weights as fastfp ``RNNParams`` (copied; dtype of the module unless given)."""
            get = lambda t: t.detach().cpu().numpy()  # noqa: E731
            arrays = [get(t) for t in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)]
            if dtype is not None:
                arrays = [a.astype(dtype) for a in arrays]
            return RNNParams(self.cell, *arrays, nonlinearity=self.nonlinearity, source=source)

        @torch.no_grad()
        def load_params_(self, params: RNNParams) -> "_Cell":
            """Copy the weights of ``params`` (same cell, sizes and nonlinearity) into this module."""
            if not isinstance(params, RNNParams):
                raise ArgumentTypeError(f"argument 'params': got {type(params).__name__}, expected RNNParams")
            if (params.cell, params.nonlinearity) != (self.cell, self.nonlinearity) or (
                params.hidden_size, params.input_size) != (self.hidden_size, self.input_size):
                raise ShapeError(
                    f"argument 'params': got {params!r}, expected cell {self.cell!r} ({self.nonlinearity}) "
                    f"with hidden_size {self.hidden_size} and input_size {self.input_size}"
                )
            for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                target = getattr(self, {"w_ih": "weight_ih", "w_hh": "weight_hh",
                                        "b_ih": "bias_ih", "b_hh": "bias_hh"}[name])
                target.copy_(torch.as_tensor(np.array(getattr(params, name)), dtype=target.dtype))
            return self

        @torch.no_grad()
        def init_recurrent_(self, init: str = "default", gain: float = 1.0) -> "_Cell":
            """Re-initialise ``weight_hh`` block by block (see the module docstring); 'default' leaves it."""
            init, gain = _check_recurrent_init(init, gain)
            if init == "default":
                return self
            H = self.hidden_size
            W = self.weight_hh
            for k in range(self.n_gates):
                block = W[k * H:(k + 1) * H]
                if init == "identity":
                    block.copy_(gain * torch.eye(H, dtype=W.dtype))
                elif init == "normal":
                    nn.init.normal_(block, mean=0.0, std=gain / math.sqrt(H))
                else:
                    q = torch.empty(H, H, dtype=W.dtype)
                    nn.init.orthogonal_(q, gain=gain)
                    block.copy_(q)
            return self

        def _check(self, xs, lengths):
            if xs.dim() != 3 or xs.shape[2] != self.input_size:
                raise ShapeError(f"argument 'xs': got shape {tuple(xs.shape)}, expected (B, T, {self.input_size})")
            if lengths is None:
                return None
            if not isinstance(lengths, torch.Tensor):
                lengths = torch.from_numpy(np.array(lengths, dtype=np.int64))
            lengths = lengths.to(dtype=torch.int64, device=xs.device)
            if lengths.shape != (xs.shape[0],) or bool((lengths < 0).any()) or bool((lengths > xs.shape[1]).any()):
                raise ShapeError(
                    f"argument 'lengths': expected {xs.shape[0]} integers in [0, T = {xs.shape[1]}], "
                    f"got shape {tuple(lengths.shape)}"
                )
            return None if bool((lengths == xs.shape[1]).all()) else lengths

    class _WrappedCell(_Cell):
        """A cell computed by one of torch's own layers (nn.RNN, nn.GRU, nn.LSTM)."""

        def __init__(self, layer, input_size, hidden_size, nonlinearity="tanh"):
            super().__init__(input_size, hidden_size, nonlinearity)
            self.rnn = layer

        weight_ih = property(lambda self: self.rnn.weight_ih_l0)
        weight_hh = property(lambda self: self.rnn.weight_hh_l0)
        bias_ih = property(lambda self: self.rnn.bias_ih_l0)
        bias_hh = property(lambda self: self.rnn.bias_hh_l0)

        def _run(self, xs, state):
            if self.cell == "lstm":
                H = self.hidden_size
                hc = None if state is None else (state[None, :, :H].contiguous(), state[None, :, H:].contiguous())
                _, (h, c) = self.rnn(xs, hc)
                return torch.cat([h[0], c[0]], dim=-1)
            _, h = self.rnn(xs, None if state is None else state[None].contiguous())
            return h[0]

        def step(self, x, state):
            """One update: x (B, M), state (B, N) -> (B, N)."""
            return self._run(x[:, None, :], state)

        def forward(self, xs, lengths=None, state=None):
            """State after the last valid input of each sequence: xs (B, T, M) -> (B, N).

            Steps t >= lengths[b] leave the state unchanged (as ``fastfp.rollout(..., lengths=)``);
            ``state`` is the initial state (zeros when None)."""
            lengths = self._check(xs, lengths)
            if lengths is None:
                return self._run(xs, state)
            packed = nn.utils.rnn.pack_padded_sequence(
                xs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            out = self._run(packed, state)
            empty = (lengths == 0)[:, None]
            if bool(empty.any()):
                out = torch.where(empty, torch.zeros_like(out) if state is None else state, out)
            return out

    class VanillaCell(_WrappedCell):
        """fastfp 'vanilla': h' = phi(W x + b_ih + U h + b_hh) (``torch.nn.RNN``)."""

        cell = "vanilla"

        def __init__(self, input_size, hidden_size, nonlinearity="tanh"):
            layer = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, batch_first=True)
            super().__init__(layer, input_size, hidden_size, nonlinearity)

    class GRUCell(_WrappedCell):
        """fastfp 'gru' (reset after the recurrent matmul, ``torch.nn.GRU``)."""

        cell = "gru"

        def __init__(self, input_size, hidden_size, nonlinearity="tanh"):
            super().__init__(nn.GRU(input_size, hidden_size, batch_first=True), input_size, hidden_size)

    class LSTMCell(_WrappedCell):
        """fastfp 'lstm' (``torch.nn.LSTM``, gates i, f, g, o; state [h, c])."""

        cell = "lstm"

        def __init__(self, input_size, hidden_size, nonlinearity="tanh"):
            super().__init__(nn.LSTM(input_size, hidden_size, batch_first=True), input_size, hidden_size)

    class _EquationCell(_Cell):
        """A cell written out from fastfp's equations, unrolled in Python over time."""

        def __init__(self, input_size, hidden_size, nonlinearity="tanh"):
            super().__init__(input_size, hidden_size, nonlinearity)
            GH = self.n_gates * self.hidden_size
            self.weight_ih = nn.Parameter(torch.empty(GH, self.input_size))
            self.weight_hh = nn.Parameter(torch.empty(GH, self.hidden_size))
            self.bias_ih = nn.Parameter(torch.empty(GH))
            self.bias_hh = nn.Parameter(torch.empty(GH))
            self.reset_parameters()

        def reset_parameters(self):
            """PyTorch's RNN init: every tensor uniform in [-1/sqrt(H), 1/sqrt(H)]."""
            s = 1.0 / math.sqrt(self.hidden_size)
            for p in self.parameters():
                nn.init.uniform_(p, -s, s)

        def step(self, x, state):
            """One update: x (B, M), state (B, N) -> (B, N)."""
            return self._update(F.linear(x, self.weight_ih, self.bias_ih), state)

        def forward(self, xs, lengths=None, state=None):
            """State after the last valid input of each sequence: xs (B, T, M) -> (B, N)."""
            lengths = self._check(xs, lengths)
            B, T, _ = xs.shape
            h = xs.new_zeros(B, self.state_size) if state is None else state
            xw = F.linear(xs, self.weight_ih, self.bias_ih)  # all input projections at once
            for t in range(T):
                new = self._update(xw[:, t], h)
                h = new if lengths is None else torch.where((t < lengths)[:, None], new, h)
            return h

    class GRUResetBeforeCell(_EquationCell):
        """fastfp 'gru_reset_before': r, z = sigma(x_k + h_k), n = tanh(x_n + U_n (r * h) + b_hn),
        h' = (1 - z) * n + z * h (Cho et al. 2014; Keras ``reset_after=False``)."""

        cell = "gru_reset_before"

        def _update(self, xw, h):
            H = self.hidden_size
            hw = F.linear(h, self.weight_hh[: 2 * H], self.bias_hh[: 2 * H])
            r = torch.sigmoid(xw[:, :H] + hw[:, :H])
            z = torch.sigmoid(xw[:, H:2 * H] + hw[:, H:])
            n = torch.tanh(xw[:, 2 * H:] + F.linear(r * h, self.weight_hh[2 * H:], self.bias_hh[2 * H:]))
            return (1 - z) * n + z * h

    class UGRNNCell(_EquationCell):
        """fastfp 'ugrnn': u = sigma(x_u + h_u), c = tanh(x_c + h_c), h' = u * h + (1 - u) * c."""

        cell = "ugrnn"

        def _update(self, xw, h):
            H = self.hidden_size
            g = xw + F.linear(h, self.weight_hh, self.bias_hh)
            u = torch.sigmoid(g[:, :H])
            c = torch.tanh(g[:, H:])
            return u * h + (1 - u) * c

    class TextClassifier(nn.Module):
        """Tokens -> inputs (embedding (V, M) or one-hot, M = V) -> cell -> linear readout.

        ``forward(tokens, lengths=None)`` takes token ids (B, T) and returns class scores (B, C) from
        the hidden state h after the last valid token (``lengths``); for an LSTM the readout sees only
        the h part of [h, c], as ``fastfp.Model.logits``. ``multilabel`` selects the loss of
        :meth:`loss`: softmax cross-entropy over C classes, or a sigmoid BCE per label (C labels).
        """

        def __init__(self, cell: str, vocab_size: int, hidden_size: int, n_outputs: int, *,
                     embedding_dim: int | None = None, readout_bias: bool = False,
                     nonlinearity: str = "tanh", multilabel: bool = False,
                     recurrent_init: str = "default", recurrent_gain: float = 1.0):
            super().__init__()
            self.vocab_size = int(vocab_size)
            self.multilabel = bool(multilabel)
            self.embedding = None if embedding_dim is None else nn.Embedding(vocab_size, embedding_dim)
            M = self.vocab_size if embedding_dim is None else int(embedding_dim)
            self.rnn = make_cell(cell, M, hidden_size, nonlinearity=nonlinearity,
                                 recurrent_init=recurrent_init, recurrent_gain=recurrent_gain)
            self.readout = nn.Linear(hidden_size, n_outputs, bias=readout_bias)

        def inputs(self, tokens):
            if not isinstance(tokens, torch.Tensor):
                tokens = torch.from_numpy(np.array(tokens, dtype=np.int64))
            tokens = tokens.to(dtype=torch.int64, device=self.readout.weight.device)
            if self.embedding is not None:
                return self.embedding(tokens)
            return F.one_hot(tokens, self.vocab_size).to(self.readout.weight.dtype)

        def final_state(self, tokens, lengths=None):
            """The cell state (B, N) after the last valid token."""
            return self.rnn(self.inputs(tokens), lengths)

        def forward(self, tokens, lengths=None):
            return self.readout(self.final_state(tokens, lengths)[:, : self.rnn.hidden_size])

        def loss(self, logits, labels):
            if self.multilabel:
                return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            return F.cross_entropy(logits, labels)

        @torch.no_grad()
        def predict(self, task_data: TaskData, batch_size: int = 4096) -> np.ndarray:
            """Predictions on a TaskData: class ids (n,), or 0/1 per label (n, K) for multi-label."""
            was = self.training
            self.eval()
            out = []
            for i in range(0, task_data.n_docs, batch_size):
                logits = self(task_data.tokens[i:i + batch_size], task_data.lengths[i:i + batch_size])
                out.append(((logits > 0).long() if self.multilabel else logits.argmax(1)).cpu().numpy())
            self.train(was)
            return np.concatenate(out) if out else np.zeros((0,), dtype=np.int64)

        def to_model(self, *, vocab=None, metadata=None, source: str = "") -> Model:
            """The network as a float32 ``fastfp.Model`` (one-hot inputs: embedding = identity)."""
            get = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
            emb = (np.eye(self.vocab_size, dtype=np.float32) if self.embedding is None
                   else get(self.embedding.weight))
            bias = None if self.readout.bias is None else get(self.readout.bias)
            return Model(self.rnn.to_params(np.float32, source=source), emb, get(self.readout.weight), bias,
                         None if vocab is None else tuple(vocab), dict(metadata or {}))

    def make_cell(cell: str, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh",
                  recurrent_init: str = "default", recurrent_gain: float = 1.0):
        _check_cell(cell, nonlinearity)
        _pos_int("input_size", input_size)
        _pos_int("hidden_size", hidden_size)
        recurrent_init, recurrent_gain = _check_recurrent_init(recurrent_init, recurrent_gain)
        cls = {"vanilla": VanillaCell, "gru": GRUCell, "gru_reset_before": GRUResetBeforeCell,
               "ugrnn": UGRNNCell, "lstm": LSTMCell}[cell]
        return cls(int(input_size), int(hidden_size), nonlinearity).init_recurrent_(recurrent_init, recurrent_gain)

    _CLASSES = dict(
        TextClassifier=TextClassifier, VanillaCell=VanillaCell, GRUCell=GRUCell,
        GRUResetBeforeCell=GRUResetBeforeCell, UGRNNCell=UGRNNCell, LSTMCell=LSTMCell, make_cell=make_cell,
    )
    return _CLASSES


def __getattr__(name: str):  # PEP 562: the torch classes are created on first access
    if name in _TORCH_NAMES:
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_cell(cell: str, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh",
              recurrent_init: str = "default", recurrent_gain: float = 1.0):
    """A torch module computing fastfp cell ``cell`` (float32, PyTorch's default init).

    Parameters
    ----------
    cell : one of ``fastfp.CELLS``
    input_size, hidden_size : int
        M and H.
    nonlinearity : {'tanh', 'relu'}
        'relu' only for the 'vanilla' cell.
    recurrent_init : {'default', 'identity', 'orthogonal', 'normal'}
        Initialisation of ``weight_hh`` (G*H, H), per H x H gate block: PyTorch's uniform init, ``g * I``,
        ``g`` times a random orthogonal matrix or i.i.d. N(0, g^2 / H) entries (torch's global RNG, as
        the default init).
    recurrent_gain : float > 0
        ``g``; must stay 1.0 with 'default'.
    """
    return _classes()["make_cell"](cell, input_size, hidden_size, nonlinearity=nonlinearity,
                                   recurrent_init=recurrent_init, recurrent_gain=recurrent_gain)


def cell_from_params(params: RNNParams, dtype=None):
    """A torch cell module holding the weights of ``params`` (dtype of the params unless given)."""
    torch = _import_torch()
    if not isinstance(params, RNNParams):
        raise ArgumentTypeError(f"argument 'params': got {type(params).__name__}, expected RNNParams")
    module = make_cell(params.cell, params.input_size, params.hidden_size, nonlinearity=params.nonlinearity)
    dt = np.dtype(params.dtype if dtype is None else dtype)
    module = module.to({np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dt])
    return module.load_params_(params)


# --------------------------------------------------------------------------- argument checks
def _pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a positive integer")
    return int(value)


def _check_cell(cell: Any, nonlinearity: Any) -> None:
    if not isinstance(cell, str) or cell not in CELLS:
        raise InvalidOptionError(f"argument 'cell': got {cell!r}, expected one of {', '.join(map(repr, CELLS))}")
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITY_CODES:
        raise InvalidOptionError(f"argument 'nonlinearity': got {nonlinearity!r}, expected 'tanh' or 'relu'")
    if nonlinearity != "tanh" and cell != "vanilla":
        raise InvalidOptionError(
            f"argument 'nonlinearity': got {nonlinearity!r} for cell {cell!r}; only the 'vanilla' cell takes 'relu'"
        )


def _check_recurrent_init(init: Any, gain: Any) -> tuple[str, float]:
    if not isinstance(init, str) or init not in RECURRENT_INITS:
        raise InvalidOptionError(
            f"argument 'recurrent_init': got {init!r}, expected one of {', '.join(map(repr, RECURRENT_INITS))}"
        )
    gain = _pos_float("recurrent_gain", gain)
    if init == "default" and gain != 1.0:
        raise InvalidOptionError(
            f"argument 'recurrent_gain': got {gain!r} with recurrent_init 'default' (PyTorch's init, which "
            "has no gain); expected 1.0, or choose recurrent_init " + _GAINED_INITS
        )
    return init, gain


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_forget_bias(cell: str, forget_bias: Any) -> float:
    """``forget_bias`` as a float: finite, and 0.0 unless the cell is an LSTM."""
    if not (_is_number(forget_bias) and math.isfinite(float(forget_bias))):
        raise InvalidOptionError(f"argument 'forget_bias': got {forget_bias!r}, expected a finite number")
    forget_bias = float(forget_bias)
    if forget_bias != 0.0 and cell != "lstm":
        raise InvalidOptionError(
            f"argument 'forget_bias': got {forget_bias!r} for cell {cell!r}; only the 'lstm' cell has a forget gate "
            "(expected 0.0)"
        )
    return forget_bias


def _pos_float(name: str, value: Any, *, zero: bool = False, upper: float | None = None) -> float:
    ok = _is_number(value)
    v = float(value) if ok else math.nan
    if not (ok and math.isfinite(v) and (v >= 0 if zero else v > 0) and (upper is None or v <= upper)):
        rng = f"in {'[0' if zero else '(0'}, {upper}]" if upper is not None else (">= 0" if zero else "> 0")
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a finite number {rng}")
    return v


def _task_info(name: str, data: Any, *, allow_unlabelled: bool = False) -> tuple[int, int, bool]:
    """(vocab size, number of outputs, multilabel) of a TaskData, checking it (unlabelled texts of
    fastfp.encode_texts only where ``allow_unlabelled``: predictions, never training)."""
    if not isinstance(data, TaskData):
        raise ArgumentTypeError(
            f"argument {name!r}: got {type(data).__name__}, expected a fastfp.TaskData (e.g. from fastfp.tasks)"
        )
    labels = data.labels
    if data.n_docs < 1:
        raise ShapeError(f"argument {name!r}: holds no documents")
    if isinstance(data.params, dict) and data.params.get("unlabelled"):
        if not allow_unlabelled:
            raise InvalidOptionError(f"argument {name!r}: unlabelled texts (fastfp.encode_texts) cannot train or be scored")
        return data.vocab_size, labels.shape[1] if labels.ndim == 2 else 0, labels.ndim == 2
    if labels.dtype.kind not in "iub":
        raise ArgumentTypeError(f"argument {name!r}: labels have dtype {labels.dtype}, expected integers")
    if labels.ndim == 2:
        if labels.shape[1] < 1 or not np.isin(labels, (0, 1)).all():
            raise ShapeError(f"argument {name!r}: multi-label labels must be 0/1 of shape (n, K), K >= 1")
        return data.vocab_size, labels.shape[1], True
    if labels.ndim != 1:
        raise ShapeError(f"argument {name!r}: labels have shape {labels.shape}, expected (n,) or (n, K)")
    C = max(data.n_classes, int(labels.max()) + 1, 2)
    if labels.min() < 0:
        raise ShapeError(f"argument {name!r}: labels must be class ids >= 0")
    return data.vocab_size, C, False


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes
    ----------
    model : fastfp.Model
        float32 params (cell layout of fastfp), embedding (identity for one-hot inputs), readout
        weight (and bias when ``readout_bias``), vocab, and ``metadata`` recording the task and every
        training setting (also written by ``fastfp.save_params``).
    history : dict of lists
        ``step`` and ``loss`` (training loss incl. the L2 term, every step), ``batch_accuracy``;
        ``eval_step`` and ``eval_accuracy`` (every ``eval_every`` steps when ``eval_data`` is given).
    steps : int
        Optimiser steps of the returned weights (fewer than asked if ``target_accuracy`` was reached;
        the best evaluation's step when ``keep_best`` restored earlier weights).
    seconds : float
        Wall time of the training loop.
    accuracy : float or None
        Accuracy of the returned weights on ``eval_data`` (torch evaluation), None without it.
    module : torch.nn.Module
        The trained :class:`TextClassifier` (float32, in eval mode).
    """

    model: Model
    history: dict
    steps: int
    seconds: float
    accuracy: float | None = None
    module: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        # The history holds a number per step (150k characters for 6000 steps): summarised.
        p = self.model.params
        acc = "None" if self.accuracy is None else f"{self.accuracy:.4f}"
        lengths = ", ".join(f"{k}: {len(v)}" for k, v in self.history.items())
        return (f"TrainResult(model=<{p.cell}-{p.hidden_size}, {p.input_size} inputs>, steps={self.steps}, "
                f"seconds={self.seconds:.1f}, accuracy={acc}, history=<{lengths}>)")


def _batches_from_data(data: TaskData, batch_size: int, rng: np.random.Generator):
    """Endless batches of index arrays: a fresh permutation per epoch, consecutive slices of it."""
    n = data.n_docs
    while True:
        perm = rng.permutation(n)
        if n <= batch_size:
            yield perm
            continue
        for i in range(0, n - batch_size + 1, batch_size):  # a short tail is dropped each epoch
            yield perm[i:i + batch_size]


def train_classifier(
    task_data,
    *,
    cell: str = "gru",
    hidden_size: int = 128,
    embedding_dim: int | None = None,
    readout_bias: bool = False,
    nonlinearity: str = "tanh",
    steps: int = 6000,
    batch_size: int = 128,
    lr: float = 0.1,
    lr_decay: float = 0.9997,
    betas: tuple = (0.9, 0.99),
    eps: float = 0.1,
    clip_norm: float | None = 10.0,
    l2: float = 5e-4,
    recurrent_init: str = "default",
    recurrent_gain: float = 1.0,
    forget_bias: float = 0.0,
    seed: int = 0,
    eval_data: TaskData | None = None,
    eval_every: int = 100,
    target_accuracy: float | None = None,
    keep_best: bool = True,
    threads: int | None = 1,
    progress: bool | Callable = False,
) -> TrainResult:
    """Train an embedding/one-hot -> RNN cell -> linear readout classifier; return a fastfp Model.

    Parameters
    ----------
    task_data : TaskData or callable
        The training documents. A ``TaskData``: each step takes the next ``batch_size`` documents of
        a fresh seeded permutation per epoch (a short tail is dropped; with at most ``batch_size``
        documents every step takes all of them, ``metadata["batch_size_used"]``). A callable: called as
        ``task_data(rng)`` with the run's ``numpy.random.Generator`` (seeded from ``seed``) whenever
        more documents are needed, it returns a ``TaskData`` of fresh documents which are used in
        consecutive slices of ``batch_size`` (e.g. ``lambda rng: fastfp.tasks.categorical(128 * 50,
        n_classes=3, length=50, seed=rng)`` gives 50 fresh batches per call, as the study did). Every
        call must return the same vocabulary and label layout. Labels of shape (n,) are classes
        (softmax cross-entropy); labels of shape (n, K) are K binary labels (sigmoid BCE).
    cell : one of ``fastfp.CELLS``
    hidden_size : int
        H.
    embedding_dim : int, optional
        Learn an embedding (V, embedding_dim) (``nn.Embedding`` init, N(0, 1)); None: one-hot inputs
        (M = V; the Model's embedding is the identity).
    readout_bias : bool
        Linear readout with a bias (the study: without).
    nonlinearity : {'tanh', 'relu'}
        Activation of the 'vanilla' cell.
    steps : int
        Maximum number of optimiser steps.
    batch_size : int
    lr, lr_decay : float
        Adam learning rate ``lr * lr_decay ** step``.
    betas, eps : Adam's (b1, b2) and epsilon (the study's eps = 0.1 is large on purpose).
    clip_norm : float or None
        Clip the gradient at this global norm (None: no clipping).
    l2 : float
        ``l2 * sum of squared parameters`` (all of them: cell, readout, embedding) added to the loss;
        the forget block of ``bias_ih`` is measured from ``forget_bias`` instead of from zero.
    recurrent_init : {'default', 'identity', 'orthogonal', 'normal'}
        Initial recurrent weights ``weight_hh``, per H x H gate block: PyTorch's uniform init
        ('default'), ``recurrent_gain * I`` ('identity', Le et al. 2015's IRNN), ``recurrent_gain``
        times a random orthogonal matrix ('orthogonal') or i.i.d. N(0, recurrent_gain^2 / H)
        entries ('normal', renn's fan-in normal). Input weights and biases keep PyTorch's init.
        'default' draws exactly the weights of earlier versions.
    recurrent_gain : float > 0
        The scale g of 'identity', 'orthogonal' and 'normal'; must be 1.0 with 'default'.
    forget_bias : float, finite
        Must be 0.0 unless ``cell='lstm'``. A constant added to the forget gate's pre-activation,
        as renn's LSTM (the study's code) adds 1.0. It is folded into the forget block of
        ``bias_ih`` (so the returned Model computes the same cell) and the L2 term penalises that
        block's distance from it, not from zero: the constant itself is not a trained, penalised
        weight. 0.0 (default) is PyTorch's LSTM.
    seed : int
        Seeds torch (initial weights) and the numpy generator drawing the batches. The same seed,
        arguments, torch version and ``threads`` give identical weights.
    eval_data : TaskData, optional
        Held-out documents, evaluated (torch) every ``eval_every`` steps and at the end.
    eval_every : int
    target_accuracy : float, optional
        Stop at the first evaluation whose accuracy reaches it (needs ``eval_data``).
    keep_best : bool
        With ``eval_data``: if ``target_accuracy`` was not reached, return the weights of the best
        evaluation instead of the last ones.
    threads : int or None
        ``torch.set_num_threads`` during training (restored afterwards); None leaves it.
    progress : bool or callable
        True prints a line per evaluation (or every 100 steps) to stderr; a callable receives the lines.

    Returns
    -------
    TrainResult

    Notes
    -----
    Training runs on the CPU in float32 with ``torch.use_deterministic_algorithms(True)`` (the global
    settings it changes are restored afterwards, and torch's global RNG is forked, not consumed).
    Accuracy is argmax == label for classes, and all labels right (logit > 0 <=> label 1) for
    multi-label; :func:`accuracy` computes the same from the returned ``Model`` with fastfp alone.
    """
    torch = _import_torch()
    classes = _classes()
    # ------------------------------------------------------------ arguments
    _check_cell(cell, nonlinearity)
    H = _pos_int("hidden_size", hidden_size)
    if embedding_dim is not None:
        embedding_dim = _pos_int("embedding_dim", embedding_dim)
    if not isinstance(readout_bias, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'readout_bias': got {readout_bias!r}, expected True or False")
    steps = _pos_int("steps", steps)
    batch_size = _pos_int("batch_size", batch_size)
    lr = _pos_float("lr", lr)
    lr_decay = _pos_float("lr_decay", lr_decay, upper=1.0)
    try:
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidOptionError(f"argument 'betas': got {betas!r}, expected two numbers in [0, 1)") from None
    eps = _pos_float("eps", eps)
    if clip_norm is not None:
        clip_norm = _pos_float("clip_norm", clip_norm)
    l2 = _pos_float("l2", l2, zero=True)
    recurrent_init, recurrent_gain = _check_recurrent_init(recurrent_init, recurrent_gain)
    forget_bias = _check_forget_bias(cell, forget_bias)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected a non-negative integer")
    eval_every = _pos_int("eval_every", eval_every)
    if target_accuracy is not None:
        target_accuracy = _pos_float("target_accuracy", target_accuracy, upper=1.0)
        if eval_data is None:
            raise InvalidOptionError("argument 'target_accuracy': given without 'eval_data' to measure it on")
    if threads is not None:
        threads = _pos_int("threads", threads)
    log = progress_logger(progress)

    rng = np.random.default_rng(int(seed))
    if isinstance(task_data, TaskData):
        first, source_fn = task_data, None
    elif callable(task_data):
        source_fn = task_data
        first = source_fn(rng)
        if not isinstance(first, TaskData):
            raise ArgumentTypeError(
                f"argument 'task_data': the callable returned {type(first).__name__}, expected a fastfp.TaskData"
            )
    else:
        raise ArgumentTypeError(
            f"argument 'task_data': got {type(task_data).__name__}, expected a fastfp.TaskData or a "
            "callable rng -> TaskData"
        )
    V, C, multilabel = _task_info("task_data", first)
    if source_fn is None and not multilabel and np.unique(first.labels).size < 2:
        # (a callable's draw may be a small batch of one class by chance: not checked)
        names = first.params.get("label_names") if isinstance(first.params, dict) else None
        only = int(first.labels[0])
        raise InvalidOptionError(
            f"argument 'task_data': every document has class {only}"
            + (f" ({names[only]!r})" if names is not None and only < len(names) else "")
            + ": a classifier needs documents of at least 2 classes"
        )
    if eval_data is not None:
        Ve, Ce, mle = _task_info("eval_data", eval_data)
        if tuple(eval_data.vocab) != tuple(first.vocab):
            raise ShapeError(
                "argument 'eval_data': its vocabulary is not task_data's (the same ids would mean other words); "
                "read both splits in one fastfp.read_corpus call, or remap with eval_data.with_vocab(task_data.vocab)"
            )
        names = [(d.params.get("label_names") if isinstance(d.params, dict) else None) for d in (first, eval_data)]
        if names[0] is not None and names[1] is not None and list(map(str, names[0])) != list(map(str, names[1])):
            raise ShapeError(
                f"argument 'eval_data': its labels are {list(names[1])!r} in that order, task_data's "
                f"{list(names[0])!r}; read both splits in one fastfp.read_corpus call (or pass the same labels=)"
            )
        if Ve != V or mle != multilabel or (multilabel and Ce != C) or (not multilabel and Ce > C):
            raise ShapeError(
                f"argument 'eval_data': vocabulary size {Ve} and labels {eval_data.labels.shape[1:]} do not "
                f"match task_data (vocabulary size {V}, {'K = ' if multilabel else 'C = '}{C})"
            )

    def batches():
        """Endless (tokens, lengths, labels) torch batches."""
        if source_fn is None:
            tok = torch.from_numpy(np.array(first.tokens, dtype=np.int64))
            lens = torch.from_numpy(np.array(first.lengths, dtype=np.int64))
            lab = torch.from_numpy(np.array(first.labels, dtype=np.int64))
            for idx in _batches_from_data(first, batch_size, rng):
                idx = torch.from_numpy(idx)
                yield tok[idx], lens[idx], lab[idx]
        data = first
        while True:
            if data is None:
                data = source_fn(rng)
                info = _task_info("task_data", data) if isinstance(data, TaskData) else None
                if info is None or info[0] != V or info[2] != multilabel or (multilabel and info[1] != C):
                    raise ShapeError("argument 'task_data': the callable returned documents of another layout "
                                     "than its first call (vocabulary or labels)")
            tok = torch.from_numpy(np.array(data.tokens, dtype=np.int64))
            lens = torch.from_numpy(np.array(data.lengths, dtype=np.int64))
            lab = torch.from_numpy(np.array(data.labels, dtype=np.int64))
            for i in range(0, data.n_docs, batch_size):
                yield tok[i:i + batch_size], lens[i:i + batch_size], lab[i:i + batch_size]
            data = None

    # ------------------------------------------------------------ training
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    history = dict(step=[], loss=[], batch_accuracy=[], eval_step=[], eval_accuracy=[])
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = classes["TextClassifier"](
                cell, V, H, C, embedding_dim=embedding_dim, readout_bias=bool(readout_bias),
                nonlinearity=nonlinearity, multilabel=multilabel,
                recurrent_init=recurrent_init, recurrent_gain=recurrent_gain,
            )
            # L2 pulls every parameter towards its anchor: zero, except the forget block of bias_ih,
            # which is pulled towards the constant forget bias (renn adds it outside the weights).
            anchors = {}
            if forget_bias:
                f = slice(GATE_ORDER["lstm"].index("f") * H, (GATE_ORDER["lstm"].index("f") + 1) * H)
                with torch.no_grad():
                    net.rnn.bias_ih[f] += forget_bias
                anchor = torch.zeros_like(net.rnn.bias_ih)
                anchor[f] = forget_bias
                anchors[id(net.rnn.bias_ih)] = anchor
            opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(b1, b2), eps=eps)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_decay ** s)
            params = list(net.parameters())

            def evaluate():
                pred = net.predict(eval_data)
                net.train()
                return _score(pred, eval_data.labels, multilabel)

            t0 = time.perf_counter()
            best = (-1.0, 0, None)
            done, step, acc = 0, 0, None
            it = batches()
            net.train()
            while step < steps:
                tok, lens, lab = next(it)
                logits = net(tok, lens)
                loss = net.loss(logits, lab)
                if l2:
                    loss = loss + l2 * sum(((p - anchors[id(p)]) ** 2).sum() if id(p) in anchors else (p * p).sum()
                                           for p in params)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_norm)
                opt.step()
                sched.step()
                step += 1
                with torch.no_grad():
                    pred = (logits > 0).long() if multilabel else logits.argmax(1)
                    history["step"].append(step)
                    history["loss"].append(float(loss.detach()))
                    history["batch_accuracy"].append(_score(pred.numpy(), lab.numpy(), multilabel))
                if eval_data is not None and (step % eval_every == 0 or step == steps):
                    acc = evaluate()
                    history["eval_step"].append(step)
                    history["eval_accuracy"].append(acc)
                    if keep_best and acc > best[0]:
                        best = (acc, step, {k: v.clone() for k, v in net.state_dict().items()})
                    if log:
                        log(f"{cell} H={H} step {step:6d} loss {float(loss.detach()):.4f} eval acc {acc:.4f} "
                            f"({time.perf_counter() - t0:.1f} s)")
                    if target_accuracy is not None and acc >= target_accuracy:
                        break
                elif log and eval_data is None and step % 100 == 0:
                    log(f"{cell} H={H} step {step:6d} loss {float(loss.detach()):.4f} ({time.perf_counter() - t0:.1f} s)")
            done = step
            reached = target_accuracy is not None and acc is not None and acc >= target_accuracy
            if eval_data is not None and keep_best and not reached and best[2] is not None:
                net.load_state_dict(best[2])
                acc, done = best[0], best[1]
                if log:
                    log(f"{cell} H={H}: keeping the weights of step {done} (eval acc {acc:.4f})")
            seconds = time.perf_counter() - t0
            net.eval()
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_det_warn)

    task = dict(name=first.name, params=_jsonable(first.params), vocab_size=V,
                outputs=C, multilabel=multilabel, source="callable" if source_fn else "TaskData")
    metadata = dict(
        task=task,
        trainer="fastfp.train.train_classifier",
        cell=cell, nonlinearity=nonlinearity, hidden_size=H,
        input="one-hot (embedding = identity)" if embedding_dim is None else f"learned embedding, dim {embedding_dim}",
        embedding_dim=embedding_dim,
        readout=f"linear {'with' if readout_bias else 'without'} bias on the last valid hidden state h",
        loss="sigmoid binary cross-entropy per label" if multilabel else "softmax cross-entropy",
        optimizer=dict(name="Adam", lr=lr, lr_decay=lr_decay, schedule="lr * lr_decay ** step",
                       betas=[b1, b2], eps=eps, clip_norm=clip_norm, l2=l2,
                       l2_on="all parameters" + (" (the forget block of bias_ih: its distance from forget_bias)"
                                                 if forget_bias else "")),
        init=dict(recurrent=recurrent_init, recurrent_gain=recurrent_gain, forget_bias=forget_bias,
                  other="PyTorch's default (cell input weights and biases, readout, embedding)"
                  + (" plus forget_bias on the forget block of bias_ih" if forget_bias else "")),
        batch_size=batch_size,
        batch_size_used=min(batch_size, first.n_docs) if source_fn is None else batch_size,
        max_steps=steps, steps=done, seed=int(seed), threads=threads,
        target_accuracy=target_accuracy, eval_accuracy=None if acc is None else round(float(acc), 6),
        eval_n=None if eval_data is None else eval_data.n_docs,
        train_seconds=round(seconds, 3), torch_version=torch.__version__, fastfp_version=__version__,
    )
    source = (f"fastfp.train.train_classifier: torch module {type(net.rnn).__name__} for fastfp cell {cell!r} "
              f"(weights in fastfp/PyTorch layout, copied as is, float32)")
    model = net.to_model(vocab=first.vocab, metadata=metadata, source=source)
    return TrainResult(model, history, done, seconds, None if acc is None else float(acc), net)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else repr(obj)


def _score(pred: np.ndarray, labels: np.ndarray, multilabel: bool) -> float:
    labels = np.asarray(labels)
    if multilabel:
        return float((pred == labels).all(axis=1).mean())
    return float((pred == labels).mean())


# --------------------------------------------------------------------------- fastfp-only evaluation
def predict(model: Model, task_data: TaskData, *, backend: str = "cpu", chunk: int = 4096) -> np.ndarray:
    """Predictions of a ``fastfp.Model`` classifier, computed with fastfp alone (no torch).

    Inputs are ``model.inputs(tokens)`` (its embedding; the identity for one-hot networks), the
    states come from ``fastfp.rollout(..., lengths=task_data.lengths)`` in the dtype of the params,
    and the scores from ``model.logits`` of the state after the last valid token.

    Returns
    -------
    ndarray of int64
        Class ids (n,) for single-label data (argmax), or 0/1 per label (n, K) for multi-label data
        (logit > 0).
    """
    if not isinstance(model, Model):
        raise ArgumentTypeError(f"argument 'model': got {type(model).__name__}, expected a fastfp.Model")
    if model.embedding is None or model.readout_weight is None:
        raise ShapeError("argument 'model': needs an embedding (identity for one-hot inputs) and a readout")
    V, _, multilabel = _task_info("task_data", task_data, allow_unlabelled=True)
    from .model import _check_task_data_matches

    _check_task_data_matches(model, task_data)
    if np.shape(model.embedding)[0] != V:
        raise ShapeError(
            f"argument 'task_data': vocabulary of {V} tokens, but the model's embedding has "
            f"{np.shape(model.embedding)[0]} rows"
        )
    chunk = _pos_int("chunk", chunk)
    dtype = model.params.dtype
    out = []
    for i in range(0, task_data.n_docs, chunk):
        xs = model.inputs(task_data.tokens[i:i + chunk]).astype(dtype, copy=False)
        states = rollout(model.params, None, xs, lengths=task_data.lengths[i:i + chunk], backend=backend)
        logits = model.logits(states[:, -1])
        out.append((logits > 0).astype(np.int64) if multilabel else logits.argmax(axis=1).astype(np.int64))
    return np.concatenate(out)


def accuracy(model: Model, task_data: TaskData, *, backend: str = "cpu") -> float:
    """Accuracy of a ``fastfp.Model`` classifier on ``task_data``, with fastfp alone (see :func:`predict`).

    Single-label: fraction with argmax == label. Multi-label: fraction of documents with every label
    right (logit > 0 exactly for the labels equal to 1).
    """
    if isinstance(task_data, TaskData) and isinstance(task_data.params, dict) and task_data.params.get("unlabelled"):
        raise InvalidOptionError("argument 'task_data': unlabelled texts (fastfp.encode_texts) have no labels to "
                                 "score against; use fastfp.train.predict")
    pred = predict(model, task_data, backend=backend)
    return _score(pred, task_data.labels, task_data.labels.ndim == 2)
