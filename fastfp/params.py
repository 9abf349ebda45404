"""`RNNParams`: the weights of one recurrent layer, in fastfp's single convention.

fastfp stores every cell in PyTorch's layout: a stacked input kernel ``w_ih`` of shape (G*H, M), a
stacked recurrent kernel ``w_hh`` of shape (G*H, H) and two biases ``b_ih``, ``b_hh`` of shape (G*H,),
where H is the hidden size, M the input size and G the number of gate blocks of the cell. Importers
convert other frameworks' conventions into this one explicitly.

Cells (sigma is the logistic function, ``*`` is the element-wise product; ``x_k = W_k x + b_ik`` and
``h_k = U_k h + b_hk`` are the input and recurrent parts of gate block k):

``vanilla`` (G = 1)
    h' = phi(x_1 + h_1), phi = tanh (default) or relu, as ``torch.nn.RNN(nonlinearity=...)``.
``gru`` (G = 3, blocks r, z, n; reset applied *after* the recurrent matmul)
    r = sigma(x_r + h_r), z = sigma(x_z + h_z), n = tanh(x_n + r * h_n), h' = (1 - z) * n + z * h.
    This is ``torch.nn.GRU``, Flax linen ``GRUCell`` and Keras ``GRU(reset_after=True)``.
``gru_reset_before`` (G = 3, blocks r, z, n; reset applied *before* the recurrent matmul)
    r, z as above, n = tanh(x_n + U_n (r * h) + b_hn), h' = (1 - z) * n + z * h.
    This is Cho et al. (2014), Keras ``reset_after=False`` and the JAX research code (renn) of the
    study (there written c and u: h' = u * h + (1 - u) * c). On the same weights it differs from ``gru``.
``ugrnn`` (G = 2, blocks u, c)
    u = sigma(x_u + h_u), c = tanh(x_c + h_c), h' = u * h + (1 - u) * c.
``lstm`` (G = 4, blocks i, f, g, o: PyTorch's order)
    i, f, o = sigma(x_k + h_k), g = tanh(x_g + h_g), c' = f * c + i * g, h' = o * tanh(c').
    The state is the concatenation [h, c] of length N = 2H (fixed points live in the joint space).

The state dimension N is H, or 2H for ``lstm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DTypeError, InvalidOptionError, NonFiniteError, ShapeError

__all__ = ["RNNParams", "CELLS", "GATE_ORDER"]

# Integer codes shared by the kernels (Numba freezes module globals at compile time, so these
# never change at run time).
VANILLA, GRU, GRU_RESET_BEFORE, UGRNN, LSTM = 0, 1, 2, 3, 4
CELL_CODES = {
    "vanilla": VANILLA,
    "gru": GRU,
    "gru_reset_before": GRU_RESET_BEFORE,
    "ugrnn": UGRNN,
    "lstm": LSTM,
}
CELLS = tuple(CELL_CODES)
GATE_ORDER = {
    "vanilla": ("h",),
    "gru": ("r", "z", "n"),
    "gru_reset_before": ("r", "z", "n"),
    "ugrnn": ("u", "c"),
    "lstm": ("i", "f", "g", "o"),
}
TANH, RELU = 0, 1
NONLINEARITY_CODES = {"tanh": TANH, "relu": RELU}

_COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_weight(name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise DTypeError(
            f"argument {name!r}: could not be converted to an array ({exc}); "
            f"expected a {ndim}-D array of floats"
        ) from None
    if arr.dtype.kind not in "f":
        raise DTypeError(
            f"argument {name!r}: got dtype {arr.dtype}, expected a floating dtype "
            f"(float32 or float64); convert it with .astype(np.float64)"
        )
    if arr.ndim != ndim:
        raise ShapeError(f"argument {name!r}: got shape {arr.shape}, expected a {ndim}-D array")
    if arr.dtype not in _COMPUTE_DTYPES:  # float16 and longdouble are computed in float64
        arr = arr.astype(np.float64)
    arr = np.array(arr, copy=True, order="C")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(
            f"argument {name!r}: holds NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            "expected finite weights"
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class RNNParams:
    """Weights of one recurrent layer (see the module docstring for the equations).

    Parameters
    ----------
    cell : {'vanilla', 'gru', 'gru_reset_before', 'ugrnn', 'lstm'}
        The cell's update equations.
    w_ih : array_like, shape (G*H, M)
        Stacked input kernels, gate blocks in the order of ``GATE_ORDER[cell]``.
    w_hh : array_like, shape (G*H, H)
        Stacked recurrent kernels.
    b_ih, b_hh : array_like, shape (G*H,), optional
        Input and recurrent biases (zeros when omitted). Only their sum matters except for the
        ``n`` block of ``gru``, where ``b_hh`` sits inside the reset product.
    nonlinearity : {'tanh', 'relu'}, keyword-only
        Activation of the ``vanilla`` cell; other cells accept only 'tanh'.
    source : str, keyword-only
        Free text recording where the weights came from and which conventions were converted.

    Notes
    -----
    Arrays are copied, made read-only and kept in their float dtype (float32 or float64; others are
    promoted to float64). Computations run in the dtype of the states passed to them.
    """

    cell: str
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None = None
    b_hh: np.ndarray | None = None
    nonlinearity: str = "tanh"
    source: str = ""
    _cast_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.cell, str) or self.cell not in CELL_CODES:
            raise InvalidOptionError(
                f"argument 'cell': got {self.cell!r}, expected one of {', '.join(map(repr, CELLS))}"
            )
        if not isinstance(self.nonlinearity, str) or self.nonlinearity not in NONLINEARITY_CODES:
            raise InvalidOptionError(
                f"argument 'nonlinearity': got {self.nonlinearity!r}, expected 'tanh' or 'relu'"
            )
        if self.nonlinearity != "tanh" and self.cell != "vanilla":
            raise InvalidOptionError(
                f"argument 'nonlinearity': got {self.nonlinearity!r} for cell {self.cell!r}; "
                "only the 'vanilla' cell takes 'relu'"
            )
        w_hh = _as_weight("w_hh", self.w_hh, 2)
        w_ih = _as_weight("w_ih", self.w_ih, 2)
        G = len(GATE_ORDER[self.cell])
        rows, H = w_hh.shape
        if H == 0 or rows != G * H:
            raise ShapeError(
                f"argument 'w_hh': got shape {w_hh.shape}, expected (G*H, H) = ({G}*H, H) for cell "
                f"{self.cell!r} with gate blocks {GATE_ORDER[self.cell]} and H > 0"
            )
        if w_ih.shape[0] != G * H:
            raise ShapeError(
                f"argument 'w_ih': got shape {w_ih.shape}, expected ({G * H}, M): G*H = {G}*{H} rows "
                f"to match w_hh of shape {w_hh.shape}"
            )
        dtype = np.result_type(w_ih, w_hh)
        w_ih, w_hh = w_ih.astype(dtype, copy=False), w_hh.astype(dtype, copy=False)
        biases = {}
        for name in ("b_ih", "b_hh"):
            value = getattr(self, name)
            if value is None:
                b = np.zeros(G * H, dtype=dtype)
                b.setflags(write=False)
            else:
                b = _as_weight(name, value, 1)
                if b.shape != (G * H,):
                    raise ShapeError(
                        f"argument {name!r}: got shape {b.shape}, expected ({G * H},) = (G*H,) "
                        f"for cell {self.cell!r} with H = {H}"
                    )
                b = b.astype(dtype, copy=False)
            biases[name] = b
        object.__setattr__(self, "w_ih", w_ih)
        object.__setattr__(self, "w_hh", w_hh)
        object.__setattr__(self, "b_ih", biases["b_ih"])
        object.__setattr__(self, "b_hh", biases["b_hh"])

    # ----------------------------------------------------------------- sizes
    @property
    def hidden_size(self) -> int:
        """H, the number of hidden units."""
        return self.w_hh.shape[1]

    @property
    def input_size(self) -> int:
        """M, the input dimension."""
        return self.w_ih.shape[1]

    @property
    def state_size(self) -> int:
        """N, the dimension of the state space: H, or 2H for ``lstm`` ([h, c])."""
        return 2 * self.hidden_size if self.cell == "lstm" else self.hidden_size

    @property
    def n_gates(self) -> int:
        """G, the number of stacked gate blocks."""
        return len(GATE_ORDER[self.cell])

    @property
    def dtype(self) -> np.dtype:
        """The dtype the weights are stored in."""
        return self.w_hh.dtype

    @property
    def cell_code(self) -> int:
        return CELL_CODES[self.cell]

    @property
    def nonlinearity_code(self) -> int:
        return NONLINEARITY_CODES[self.nonlinearity]

    def signature(self) -> list:
        """A few numbers that tell networks apart but not their float32 and float64 copies: the
        cell, the nonlinearity, and per weight array its sum, sum of squares and a fixed pattern's
        projection (12 floats). Where the two biases only ever add (every cell but the GRUs, whose
        b_hn sits inside r * (.)), their sum counts, so a bias folded into b_ih is the same network."""
        b_ih, b_hh = np.asarray(self.b_ih, np.float64), np.asarray(self.b_hh, np.float64)
        if self.cell not in ("gru", "gru_reset_before"):
            b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
        out = []
        for a in (self.w_ih, self.w_hh, b_ih, b_hh):
            v = np.asarray(a, dtype=np.float64).ravel()
            # A cheap pseudo-random pattern (Knuth's multiplicative hash of the index): no period, so a
            # transposed or permuted matrix gets another projection.
            probe = ((np.arange(v.size, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)) / 2.0**32 - 0.5
            out += [float(v.sum()), float(v @ v), float(v @ probe)]
        return [self.cell, self.nonlinearity] + out

    def arrays(self, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(w_ih, w_hh, b_ih, b_hh) as C-contiguous arrays of ``dtype``, cached per dtype."""
        dtype = np.dtype(dtype)
        cached = self._cast_cache.get(dtype)
        if cached is None:
            cached = tuple(
                np.ascontiguousarray(a, dtype=dtype) for a in (self.w_ih, self.w_hh, self.b_ih, self.b_hh)
            )
            for a in cached:  # shared by every later computation in this dtype
                a.setflags(write=False)
            self._cast_cache[dtype] = cached
        return cached

    def astype(self, dtype) -> "RNNParams":
        """A copy with weights stored in ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in _COMPUTE_DTYPES:
            raise DTypeError(f"argument 'dtype': got {dtype}, expected float32 or float64")
        w_ih, w_hh, b_ih, b_hh = self.arrays(dtype)
        return RNNParams(self.cell, w_ih, w_hh, b_ih, b_hh, nonlinearity=self.nonlinearity, source=self.source)

    @classmethod
    def random(
        cls,
        cell: str,
        hidden_size: int,
        input_size: int,
        *,
        scale: float | None = None,
        nonlinearity: str = "tanh",
        dtype=np.float64,
        seed=None,
    ) -> "RNNParams":
        """Random weights drawn like PyTorch's default init: uniform in [-s, s], s = 1/sqrt(H).

        Parameters
        ----------
        cell : str
            One of ``fastfp.CELLS``.
        hidden_size, input_size : int
            H and M.
        scale : float, optional
            Half-width s of the uniform distribution; ``gain / sqrt(H)`` gives a recurrent gain
            of about ``gain``.
        seed : int or numpy.random.Generator, optional
        """
        for name, value in (("hidden_size", hidden_size), ("input_size", input_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a positive integer")
        if not isinstance(cell, str) or cell not in CELL_CODES:
            raise InvalidOptionError(
                f"argument 'cell': got {cell!r}, expected one of {', '.join(map(repr, CELLS))}"
            )
        rng = np.random.default_rng(seed)
        if scale is not None and (isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating))
                                  or not math.isfinite(scale) or scale <= 0):
            raise InvalidOptionError(f"argument 'scale': got {scale!r}, expected a finite number > 0")
        s = 1.0 / math.sqrt(hidden_size) if scale is None else float(scale)
        G = len(GATE_ORDER[cell])
        H, M = int(hidden_size), int(input_size)
        draw = lambda *shape: rng.uniform(-s, s, size=shape).astype(dtype)  # noqa: E731
        return cls(
            cell, draw(G * H, M), draw(G * H, H), draw(G * H), draw(G * H),
            nonlinearity=nonlinearity, source=f"RNNParams.random(scale={s:g})",
        )

    def __repr__(self) -> str:
        extra = f", nonlinearity={self.nonlinearity!r}" if self.cell == "vanilla" else ""
        return (
            f"RNNParams(cell={self.cell!r}, hidden_size={self.hidden_size}, "
            f"input_size={self.input_size}, state_size={self.state_size}, dtype={self.dtype}{extra})"
        )
