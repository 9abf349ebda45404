"""The trained classifier fixtures in tests/data/ (made by tools/make_classifier_fixtures.py).

fastfp alone (no torch): load the params file, roll fresh documents of the task through the cell
with ``fastfp.rollout`` and classify the last state with ``Model.logits``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastfp
from fastfp import tasks

DATA = Path(__file__).parent / "data"
FIXTURES = [
    # (file, cell, hidden size)
    ("gru64_cat3.npz", "gru", 64),
    ("lstm32_cat3.npz", "lstm", 32),
]
TEST_SEED = 20240611  # differs from the training, held-out and test seeds in the files' metadata


@pytest.fixture(scope="module")
def test_set():
    return tasks.categorical(300, n_classes=3, length=50, sampler="uniform_score", seed=TEST_SEED)


@pytest.mark.parametrize("fname, cell, hidden", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_layout(fname, cell, hidden):
    path = DATA / fname
    assert path.stat().st_size < 300_000
    model = fastfp.load_params(path)
    p = model.params
    assert p.cell == cell and p.hidden_size == hidden and p.input_size == 4
    assert p.state_size == (2 * hidden if cell == "lstm" else hidden)
    assert model.vocab == ("w0", "w1", "w2", "the")
    np.testing.assert_array_equal(model.embedding, np.eye(4))
    assert model.readout_weight.shape == (3, hidden) and model.readout_bias.shape == (3,)
    meta = model.metadata
    assert meta["task"] == "categorical"
    assert meta["task_params"] == {"n_classes": 3, "length": 50, "sampler": "uniform_score"}
    assert meta["test_accuracy"] >= 0.97 and meta["steps"] > 0
    assert TEST_SEED not in (meta["seed"], meta["train_seed"], meta["held_out_seed"], meta["test_seed"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fname, cell, hidden", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_accuracy(fname, cell, hidden, dtype, test_set):
    model = fastfp.load_params(DATA / fname)
    xs = model.inputs(test_set.tokens).astype(dtype)
    np.testing.assert_array_equal(xs, test_set.one_hot(dtype))
    states = fastfp.rollout(model.params, None, xs, backend="cpu")
    assert states.shape == (300, 50, model.params.state_size) and states.dtype == dtype
    pred = model.logits(states[:, -1]).argmax(axis=1)
    accuracy = (pred == test_set.labels).mean()
    assert accuracy >= 0.97, f"{fname}: accuracy {accuracy:.4f} on 300 fresh documents"


@pytest.mark.parametrize("fname, cell, hidden", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_variable_length_documents(fname, cell, hidden):
    """Padded documents with ``lengths``: the last state is the state after the last valid word."""
    model = fastfp.load_params(DATA / fname)
    d = tasks.categorical(60, length=50, min_length=30, seed=TEST_SEED + 1)
    padded = fastfp.rollout(model.params, None, d.one_hot(), lengths=d.lengths, backend="cpu")[:, -1]
    for b in (0, 1, 2):
        alone = fastfp.rollout(model.params, None, d.one_hot()[b, : d.lengths[b]], backend="cpu")[-1]
        np.testing.assert_allclose(padded[b], alone, rtol=1e-6, atol=1e-6)
