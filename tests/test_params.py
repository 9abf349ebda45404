"""RNNParams: construction, immutability, random init, casting, repr; and the import footprint."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastfp
from fastfp import CELLS, GATE_ORDER, RNNParams
from support import make_params

G = {"vanilla": 1, "gru": 3, "gru_reset_before": 3, "ugrnn": 2, "lstm": 4}


def test_cells_and_gate_order():
    assert set(CELLS) == {"vanilla", "gru", "gru_reset_before", "ugrnn", "lstm"}
    assert GATE_ORDER["gru"] == ("r", "z", "n")
    assert GATE_ORDER["lstm"] == ("i", "f", "g", "o")
    assert GATE_ORDER["ugrnn"] == ("u", "c")
    assert set(fastfp.BACKENDS) == {"cpu", "numpy", "gpu"}


@pytest.mark.parametrize("cell", CELLS)
def test_sizes_and_shapes(cell):
    p = RNNParams.random(cell, 5, 3, seed=0)
    assert p.hidden_size == 5
    assert p.input_size == 3
    assert p.n_gates == G[cell] == len(GATE_ORDER[cell])
    assert p.state_size == (10 if cell == "lstm" else 5)
    assert p.w_ih.shape == (G[cell] * 5, 3)
    assert p.w_hh.shape == (G[cell] * 5, 5)
    assert p.b_ih.shape == p.b_hh.shape == (G[cell] * 5,)
    assert p.dtype == np.float64


@pytest.mark.parametrize("cell", CELLS)
def test_arrays_are_read_only_copies(cell, rng):
    g = G[cell]
    w_ih, w_hh = rng.standard_normal((g * 4, 3)), rng.standard_normal((g * 4, 4))
    b_ih, b_hh = rng.standard_normal(g * 4), rng.standard_normal(g * 4)
    p = RNNParams(cell, w_ih, w_hh, b_ih, b_hh)
    for name, src in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)):
        arr = getattr(p, name)
        assert not arr.flags.writeable, name
        assert not np.shares_memory(arr, src), name
        assert_array_equal(arr, src)
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1.0
    w_ih[0, 0] += 1.0  # the caller's array stays theirs
    assert p.w_ih[0, 0] != w_ih[0, 0]


def test_default_biases_are_read_only_zeros():
    p = RNNParams("gru", np.ones((6, 2)), np.ones((6, 2)))
    for b in (p.b_ih, p.b_hh):
        assert_array_equal(b, np.zeros(6))
        assert b.dtype == np.float64
        assert not b.flags.writeable


def test_params_are_frozen():
    p = make_params("gru")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cell = "lstm"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.w_hh = np.zeros((15, 5))


def test_arrays_cast_cache_is_read_only(rng):
    """``arrays(dtype)`` hands out the cached weights that every later computation in that dtype
    uses; they must be as immutable as the params' own arrays, else a write changes results."""
    for stored, other in ((np.float64, np.float32), (np.float32, np.float64)):
        p = make_params("gru", dtype=stored)
        h = rng.standard_normal((2, p.state_size)).astype(other)
        before = fastfp.step(p, h)
        cached = p.arrays(other)
        assert all(a.dtype == other for a in cached)
        try:
            cached[1][:] = 0.0  # w_hh
        except ValueError:
            pass  # read-only, as it should be
        assert_array_equal(fastfp.step(p, h), before, err_msg=f"stored {np.dtype(stored)}, arrays({np.dtype(other)})")
        assert not any(a.flags.writeable for a in p.arrays(stored))
        assert not any(a.flags.writeable for a in cached), f"stored {np.dtype(stored)}, arrays({np.dtype(other)})"


def test_lists_and_other_float_dtypes_are_accepted():
    p = RNNParams("vanilla", [[1.0, 2.0]], [[0.5]], [0.1], [0.2])
    assert p.dtype == np.float64 and p.input_size == 2 and p.hidden_size == 1
    p16 = RNNParams("vanilla", np.ones((2, 2), np.float16), np.ones((2, 2), np.float16))
    assert p16.dtype == np.float64  # float16 is computed in float64
    mixed = RNNParams("vanilla", np.ones((2, 2), np.float32), np.ones((2, 2), np.float64),
                      np.ones(2, np.float32), np.ones(2, np.float32))
    assert {a.dtype for a in (mixed.w_ih, mixed.w_hh, mixed.b_ih, mixed.b_hh)} == {np.dtype(np.float64)}
    p32 = RNNParams("vanilla", np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
    assert p32.dtype == np.float32 and p32.b_ih.dtype == np.float32


def test_random_is_reproducible(variant):
    cell, nonlinearity = variant
    a = RNNParams.random(cell, 6, 4, nonlinearity=nonlinearity, seed=123)
    b = RNNParams.random(cell, 6, 4, nonlinearity=nonlinearity, seed=123)
    c = RNNParams.random(cell, 6, 4, nonlinearity=nonlinearity, seed=124)
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    d = RNNParams.random(cell, 6, 4, nonlinearity=nonlinearity, seed=np.random.default_rng(123))
    assert_array_equal(a.w_hh, d.w_hh)
    assert a.nonlinearity == nonlinearity


def test_random_scale_and_dtype():
    p = RNNParams.random("lstm", 16, 3, seed=0)
    s = 1 / np.sqrt(16)  # PyTorch's default init
    for arr in (p.w_ih, p.w_hh, p.b_ih, p.b_hh):
        assert np.all(np.abs(arr) <= s)
        assert np.abs(arr).max() > 0.8 * s
    q = RNNParams.random("lstm", 16, 3, scale=3.0, seed=0, dtype=np.float32)
    assert q.dtype == np.float32
    assert np.all(np.abs(q.w_hh) <= 3.0) and np.abs(q.w_hh).max() > 2.0


@pytest.mark.parametrize("cell", CELLS)
def test_astype(cell, rng):
    p = RNNParams.random(cell, 4, 3, seed=1)
    p32 = p.astype(np.float32)
    assert p32.dtype == np.float32 and p32.cell == cell
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        arr = getattr(p32, name)
        assert arr.dtype == np.float32 and not arr.flags.writeable
        assert_array_equal(arr, getattr(p, name).astype(np.float32))
    back = p32.astype("float64")
    assert back.dtype == np.float64
    assert_array_equal(back.w_hh, p32.w_hh.astype(np.float64))
    assert p.dtype == np.float64  # the original is untouched
    v = RNNParams.random("vanilla", 3, 2, nonlinearity="relu", seed=0).astype(np.float32)
    assert v.nonlinearity == "relu"


def test_repr_is_informative():
    r = repr(RNNParams.random("lstm", 8, 3, seed=0))
    for part in ("RNNParams", "cell='lstm'", "hidden_size=8", "input_size=3", "state_size=16", "float64"):
        assert part in r, (part, r)
    v = repr(RNNParams.random("vanilla", 4, 2, nonlinearity="relu", seed=0, dtype=np.float32))
    for part in ("cell='vanilla'", "nonlinearity='relu'", "float32"):
        assert part in v, (part, v)
    assert "array(" not in r  # no weight dumps


def test_import_fastfp_stays_light():
    code = (
        "import sys, fastfp\n"
        "heavy = ('torch', 'jax', 'cupy', 'dask', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
    # the study runner, the figures and the Dask layer load on first use, still without those
    code = (
        "import sys, fastfp\n"
        "fastfp.study.battery('quick'); fastfp.report; fastfp.distributed\n"
        "heavy = ('torch', 'jax', 'cupy', 'dask', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
    with pytest.raises(AttributeError, match="has no attribute 'nonesuch'"):
        fastfp.nonesuch


# ------------------------------------------------------------------ Model helpers: bad input
def _classifier_model():
    p = RNNParams.random("lstm", hidden_size=4, input_size=3, seed=0)
    rng = np.random.default_rng(1)
    return fastfp.Model(p, embedding=rng.standard_normal((5, 3)), readout_weight=rng.standard_normal((2, 4)),
                        readout_bias=np.zeros(2), vocab=("a", "b", "c", "d", "the"))


def test_model_logits_reads_h_of_the_state_and_refuses_other_sizes():
    m = _classifier_model()
    state = np.random.default_rng(2).standard_normal((3, 8))  # [h, c] of an LSTM-4
    np.testing.assert_allclose(m.logits(state), state[:, :4] @ m.readout_weight.T)
    np.testing.assert_allclose(m.logits(state[:, :4]), m.logits(state))  # the h part alone
    for bad in (np.zeros((3, 5)), np.zeros((3, 40)), np.float64(1.0)):
        with pytest.raises(fastfp.ShapeError, match=r"argument 'states': got shape .*expected \(\.\.\., 8\) or \(\.\.\., 4\)"):
            m.logits(bad)


def test_model_inputs_refuses_ids_outside_the_embedding():
    m = _classifier_model()
    np.testing.assert_array_equal(m.inputs([[4, 0]]), m.embedding[[[4, 0]]])
    assert m.inputs(np.array([])).shape == (0, 3)
    for bad, match in ((-1, r"holds id -1, expected ids in \[0, 5\)"), ([5], r"holds id 5"),
                       ([0.5], None)):
        with pytest.raises((fastfp.ShapeError, fastfp.DTypeError), match=match or "argument 'tokens'"):
            m.inputs(bad)


def test_save_params_names_swapped_arguments(tmp_path):
    m = _classifier_model()
    with pytest.raises(fastfp.ArgumentTypeError, match=r"argument 'path': got a Model; .*save_params\(path, model\)"):
        fastfp.save_params(m, tmp_path / "m.npz")
    with pytest.raises(fastfp.ArgumentTypeError, match=r"argument 'model': got dict"):
        fastfp.save_params(tmp_path / "m.npz", {"w": 1})
    assert not (tmp_path / "m.npz").exists()


def test_model_repr_is_a_summary_not_the_arrays():
    text = repr(_classifier_model())
    assert text == ("Model(cell='lstm', hidden_size=4, input_size=3, dtype=float64, embedding=(5, 3), "
                    "readout=(2, 4) + bias, vocab=5 words)")
