"""fastfp.train: torch cell modules against fastfp's reference, tiny training runs, fastfp-only evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fastfp
from fastfp import tasks
from fastfp.errors import ArgumentTypeError, InvalidOptionError, MissingDependencyError
from fastfp.train import accuracy, predict

from support import VARIANT_IDS, VARIANTS, make_params

TASK = dict(n_classes=2, length=20, min_length=10)
TOL = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data():
    return dict(
        train=tasks.categorical(2000, seed=1, **TASK),
        val=tasks.categorical(300, seed=3, **TASK),
        test=tasks.categorical(500, seed=2, **TASK),
    )


# ----------------------------------------------------------------------------- cell modules
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_cell_step_matches_fastfp(torch, variant, dtype):
    from fastfp.train import cell_from_params

    cell, nl = variant
    params = make_params(cell, nl, H=6, M=4, dtype=dtype, seed=3)
    module = cell_from_params(params)
    rng = np.random.default_rng(0)
    h = rng.standard_normal((7, params.state_size)).astype(dtype)
    x = rng.standard_normal((7, params.input_size)).astype(dtype)
    with torch.no_grad():
        got = module.step(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    ref = fastfp.step(params, h, x, backend="numpy")
    assert got.dtype == np.dtype(dtype)
    assert np.max(np.abs(got - ref)) <= TOL[dtype]
    # weights come back unchanged, in fastfp's layout
    back = module.to_params()
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(getattr(back, name), getattr(params, name))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_cell_sequence_last_valid_state_matches_rollout(torch, variant):
    from fastfp.train import cell_from_params

    cell, nl = variant
    params = make_params(cell, nl, H=5, M=3, seed=4)
    module = cell_from_params(params)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((6, 9, 3))
    lengths = np.array([9, 1, 4, 0, 7, 9])
    with torch.no_grad():
        got = module(torch.from_numpy(xs), torch.from_numpy(lengths)).numpy()
        full = module(torch.from_numpy(xs)).numpy()
    ref = fastfp.rollout(params, None, xs, lengths=lengths, backend="numpy")[:, -1]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(full, fastfp.rollout(params, None, xs, backend="numpy")[:, -1], rtol=0, atol=1e-12)


def test_make_cell_rejects_bad_arguments(torch):
    from fastfp.train import make_cell

    with pytest.raises(InvalidOptionError, match="'cell'"):
        make_cell("rnn", 3, 4)
    with pytest.raises(InvalidOptionError, match="'hidden_size'"):
        make_cell("gru", 3, 0)
    with pytest.raises(InvalidOptionError, match="'nonlinearity'"):
        make_cell("lstm", 3, 4, nonlinearity="relu")


# ----------------------------------------------------------------------------- recurrent init
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("gain", [1.0, 0.9])
def test_identity_recurrent_init_sets_each_gate_block(torch, variant, gain):
    from fastfp.train import make_cell

    cell, nl = variant
    torch.manual_seed(0)
    module = make_cell(cell, 3, 6, nonlinearity=nl, recurrent_init="identity", recurrent_gain=gain)
    W = module.weight_hh.detach().numpy().astype(np.float64)
    G = W.shape[0] // 6
    assert W.shape == (G * 6, 6) and G == module.n_gates
    for k in range(G):
        np.testing.assert_array_equal(W[6 * k:6 * (k + 1)], np.float32(gain) * np.eye(6))
    # only weight_hh changes: the other tensors are PyTorch's, drawn as with the default init
    torch.manual_seed(0)
    ref = make_cell(cell, 3, 6, nonlinearity=nl)
    assert not np.array_equal(ref.weight_hh.detach().numpy(), W)
    for name in ("weight_ih", "bias_ih", "bias_hh"):
        np.testing.assert_array_equal(getattr(module, name).detach().numpy(), getattr(ref, name).detach().numpy())
    # the fastfp params carry it: at h = 0 with zero input and biases the vanilla Jacobian is W_hh
    assert np.array_equal(module.to_params().w_hh, W.astype(np.float32))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_recurrent_init_is_orthogonal_per_block(torch, variant, gain):
    from fastfp.train import make_cell

    cell, nl = variant
    H = 7
    module = make_cell(cell, 3, H, nonlinearity=nl, recurrent_init="orthogonal", recurrent_gain=gain)
    W = module.weight_hh.detach().numpy().astype(np.float64)
    for k in range(module.n_gates):
        B = W[H * k:H * (k + 1)]
        np.testing.assert_allclose(B @ B.T, gain ** 2 * np.eye(H), atol=1e-5)
        np.testing.assert_allclose(B.T @ B, gain ** 2 * np.eye(H), atol=1e-5)
        np.testing.assert_allclose(np.abs(np.linalg.eigvals(B)), gain, atol=1e-5)  # every |lambda| = g
        assert np.abs(B - np.diag(np.diag(B))).max() > 0.05  # a random rotation, not the identity
    if module.n_gates > 1:  # an independent draw per gate block
        assert not np.allclose(W[:H], W[H:2 * H])


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("gain", [1.0, 0.7])
def test_normal_recurrent_init_draws_fan_in_gaussian_blocks(torch, variant, gain):
    from fastfp.train import make_cell

    cell, nl = variant
    H = 160
    torch.manual_seed(1)
    module = make_cell(cell, 3, H, nonlinearity=nl, recurrent_init="normal", recurrent_gain=gain)
    W = module.weight_hh.detach().numpy().astype(np.float64)
    for k in range(module.n_gates):
        B = W[H * k:H * (k + 1)]
        # H^2 = 25600 draws: the sample mean has sd 0.6% of g/sqrt(H), the sample std 0.44%
        assert abs(B.mean()) < 0.03 * gain / np.sqrt(H)
        np.testing.assert_allclose(B.std(), gain / np.sqrt(H), rtol=0.03)
        # circular law: eigenvalues fill the disc of radius g (PyTorch's uniform init: 1/sqrt(3));
        # uniform in the disc, the median |lambda| is g/sqrt(2), where an orthogonal g Q has every |lambda| = g
        mod = np.abs(np.linalg.eigvals(B))
        np.testing.assert_allclose(mod.max(), gain, rtol=0.12)
        np.testing.assert_allclose(np.median(mod), gain / np.sqrt(2), rtol=0.08)
        sv = np.linalg.svd(B, compute_uv=False)  # Marchenko-Pastur on [0, 2g]: not an isometry
        assert sv.max() > 1.8 * gain and sv.min() < 0.1 * gain
        assert abs(np.mean(B ** 4) / np.mean(B ** 2) ** 2 - 3.0) < 0.15  # Gaussian kurtosis, uniform's is 1.8
    if module.n_gates > 1:
        assert not np.allclose(W[:H], W[H:2 * H])
    torch.manual_seed(1)
    ref = make_cell(cell, 3, H, nonlinearity=nl)
    for name in ("weight_ih", "bias_ih", "bias_hh"):
        np.testing.assert_array_equal(getattr(module, name).detach().numpy(), getattr(ref, name).detach().numpy())


def test_default_recurrent_init_is_pytorchs(torch):
    from fastfp.train import make_cell

    torch.manual_seed(5)
    a = make_cell("vanilla", 3, 16, recurrent_init="default")
    torch.manual_seed(5)
    b = torch.nn.RNN(3, 16, nonlinearity="tanh", batch_first=True)
    np.testing.assert_array_equal(a.weight_hh.detach().numpy(), b.weight_hh_l0.detach().numpy())
    W = a.weight_hh.detach().numpy()
    assert np.abs(W).max() <= 1 / 4 and np.abs(np.diag(W) - 1).min() > 0.5  # uniform +-1/sqrt(H), not I


def test_train_classifier_recurrent_init(torch, data):
    from fastfp.train import train_classifier

    kw = dict(cell="vanilla", hidden_size=8, steps=1, batch_size=32, lr=1e-4, eps=1e-8, clip_norm=None, l2=0.0,
              seed=3)
    ident = train_classifier(data["train"], recurrent_init="identity", recurrent_gain=0.95, **kw)
    # one Adam step of lr 1e-4 moves every weight by at most ~1e-4 from its initial value
    np.testing.assert_allclose(ident.model.params.w_hh, 0.95 * np.eye(8), atol=2e-4)
    orth = train_classifier(data["train"], recurrent_init="orthogonal", **kw).model.params.w_hh.astype(np.float64)
    np.testing.assert_allclose(orth @ orth.T, np.eye(8), atol=5e-3)
    default = train_classifier(data["train"], **kw).model
    same = train_classifier(data["train"], recurrent_init="default", **kw).model
    np.testing.assert_array_equal(default.params.w_hh, same.params.w_hh)
    assert np.abs(np.diag(default.params.w_hh) - 1).min() > 0.5
    # the input weights, biases and readout do not depend on the recurrent init
    np.testing.assert_allclose(ident.model.params.w_ih, default.params.w_ih, atol=3e-4)
    assert ident.model.metadata["init"]["recurrent"] == "identity"
    assert ident.model.metadata["init"]["recurrent_gain"] == 0.95
    assert (default.metadata["init"]["recurrent"], default.metadata["init"]["recurrent_gain"]) == ("default", 1.0)


def test_forget_bias_is_a_constant_not_a_penalised_weight(torch, data):
    from fastfp.train import train_classifier

    H = 6
    kw = dict(cell="lstm", hidden_size=H, batch_size=32, eps=1e-8, clip_norm=None, seed=4)
    # one step of lr 1e-6: the weights are the initial ones; the constant sits in bias_ih's f block
    plain = train_classifier(data["train"], steps=1, lr=1e-6, l2=0.0, **kw).model.params
    fb = train_classifier(data["train"], steps=1, lr=1e-6, l2=0.0, forget_bias=1.5, **kw).model.params
    gate = np.repeat(np.arange(4), H)  # PyTorch's gate order i, f, g, o
    np.testing.assert_allclose(fb.b_ih - plain.b_ih, np.where(gate == 1, 1.5, 0.0), atol=1e-5)
    for name in ("w_ih", "w_hh", "b_hh"):
        np.testing.assert_allclose(getattr(fb, name), getattr(plain, name), atol=1e-5)
    # An L2 of 1.0 outweighs the task's gradient (deviations ~3e-4 at the end), so training draws
    # every weight to its anchor: the forget block of bias_ih to the constant, everything else to 0.
    docs = tasks.categorical(200, n_classes=2, length=5, seed=0)
    strong = dict(steps=150, lr=0.05, lr_decay=0.97, l2=1.0, **kw)
    got = train_classifier(docs, forget_bias=1.5, **strong).model.params
    assert np.abs(got.b_ih[gate == 1] - 1.5).max() < 0.01
    assert np.abs(got.b_ih[gate != 1]).max() < 0.01 and np.abs(got.b_hh).max() < 0.01
    zero = train_classifier(docs, **strong).model.params
    assert np.abs(zero.b_ih).max() < 0.01


def test_forget_bias_network_is_what_fastfp_evaluates(torch, data):
    from fastfp.train import train_classifier

    result = train_classifier(data["train"], cell="lstm", hidden_size=8, steps=60, forget_bias=1.0, seed=1,
                              eval_data=data["val"])
    assert result.model.metadata["init"]["forget_bias"] == 1.0
    assert "forget block" in result.model.metadata["optimizer"]["l2_on"]
    torch_pred = result.module.predict(data["test"])
    np.testing.assert_array_equal(predict(result.model, data["test"]), torch_pred)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cell="gru", forget_bias=1.0), "argument 'forget_bias': got 1.0 for cell 'gru'; only the 'lstm'"),
        (dict(cell="lstm", forget_bias=float("inf")), "argument 'forget_bias': got inf, expected a finite number"),
        (dict(cell="lstm", forget_bias="one"), "argument 'forget_bias': got 'one'"),
    ],
)
def test_forget_bias_rejects_bad_values(torch, data, kwargs, match):
    from fastfp.train import train_classifier

    with pytest.raises(InvalidOptionError, match=match):
        train_classifier(data["val"], steps=1, hidden_size=4, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(recurrent_init="xavier"), "argument 'recurrent_init': got 'xavier', expected one of 'default', "),
        (dict(recurrent_init=None), "argument 'recurrent_init': got None"),
        (dict(recurrent_init="identity", recurrent_gain=0.0), "argument 'recurrent_gain': got 0.0"),
        (dict(recurrent_init="orthogonal", recurrent_gain=float("nan")), "argument 'recurrent_gain'"),
        (dict(recurrent_init="identity", recurrent_gain="big"), "argument 'recurrent_gain'"),
        (dict(recurrent_gain=0.9), "argument 'recurrent_gain': got 0.9 with recurrent_init 'default'"),
    ],
)
def test_recurrent_init_rejects_bad_values(torch, data, kwargs, match):
    from fastfp.train import make_cell, train_classifier

    with pytest.raises(InvalidOptionError, match=match):
        make_cell("vanilla", 3, 4, **kwargs)
    with pytest.raises(InvalidOptionError, match=match):
        train_classifier(data["val"], steps=1, **kwargs)


# ----------------------------------------------------------------------------- training
_TRAINED: dict = {}


def _train_cell(variant, data):
    if variant not in _TRAINED:
        from fastfp.train import train_classifier

        cell, nl = variant
        _TRAINED[variant] = train_classifier(
            data["train"], cell=cell, nonlinearity=nl, hidden_size=16, steps=300, batch_size=128, seed=0,
            eval_data=data["val"], eval_every=25, target_accuracy=0.98,
        )
    return _TRAINED[variant]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_training_each_cell_and_fastfp_evaluation_agrees(torch, data, variant):
    result = _train_cell(variant, data)
    model, test = result.model, data["test"]
    assert model.params.cell == variant[0] and model.params.nonlinearity == variant[1]
    assert model.params.hidden_size == 16 and model.params.dtype == np.float32
    np.testing.assert_array_equal(model.embedding, np.eye(test.vocab_size))  # one-hot inputs
    assert model.readout_bias is None and model.readout_weight.shape == (2, 16)
    assert model.vocab == test.vocab
    ff_pred = predict(model, test, backend="numpy")
    torch_pred = result.module.predict(test)
    ff_acc = accuracy(model, test, backend="numpy")
    torch_acc = float((torch_pred == test.labels).mean())
    print(f"{variant}: steps {result.steps}, {result.seconds:.2f} s, val {result.accuracy:.3f}, "
          f"test fastfp {ff_acc:.3f} torch {torch_acc:.3f}")
    assert ff_acc >= 0.9
    assert (ff_pred == torch_pred).mean() >= 0.99
    assert abs(ff_acc - torch_acc) <= 0.01
    assert 1 <= result.steps <= 300 and len(result.history["loss"]) >= result.steps
    assert result.accuracy == max(result.history["eval_accuracy"]) or result.accuracy >= 0.98
    meta = model.metadata
    assert meta["cell"] == variant[0] and meta["optimizer"]["eps"] == 0.1 and meta["optimizer"]["l2"] == 5e-4
    assert meta["task"]["name"] == "categorical" and meta["steps"] == result.steps
    json.dumps(meta)  # save_params stores it as JSON


def test_cpu_backend_and_save_roundtrip(torch, data, tmp_path):
    result = _train_cell(("gru", "tanh"), data)
    path = tmp_path / "gru.npz"
    fastfp.save_params(path, result.model)
    loaded = fastfp.load_params(path)
    assert loaded.metadata["trainer"] == "fastfp.train.train_classifier"
    np.testing.assert_array_equal(predict(loaded, data["test"]), predict(result.model, data["test"], backend="numpy"))


def test_multilabel_trains_and_fastfp_matches(torch):
    from fastfp.train import train_classifier

    train = tasks.multilabel(2000, n_labels=2, length=10, seed=5)
    test = tasks.multilabel(500, n_labels=2, length=10, seed=6)
    result = train_classifier(train, cell="gru", hidden_size=16, steps=250, batch_size=128, seed=0)
    assert result.model.readout_weight.shape == (2, 16)
    assert result.model.metadata["task"]["multilabel"] and "binary" in result.model.metadata["loss"]
    ff_pred = predict(result.model, test, backend="numpy")
    assert ff_pred.shape == (500, 2)
    torch_pred = result.module.predict(test)
    _, counts = np.unique(test.labels, axis=0, return_counts=True)
    chance = counts.max() / len(test)  # always answering the most frequent label combination
    acc = accuracy(result.model, test, backend="numpy")
    print(f"multilabel: fastfp acc {acc:.3f}, chance {chance:.3f}")
    assert acc >= chance + 0.2
    assert (ff_pred == torch_pred).all(axis=1).mean() >= 0.99
    assert abs(acc - float((torch_pred == test.labels).all(axis=1).mean())) <= 0.01


def test_embedding_inputs(torch, data):
    from fastfp.train import train_classifier

    result = train_classifier(data["train"], cell="gru", hidden_size=16, embedding_dim=8, readout_bias=True,
                              steps=200, batch_size=128, seed=0)
    model = result.model
    assert model.embedding.shape == (data["train"].vocab_size, 8) and model.params.input_size == 8
    np.testing.assert_array_equal(model.embedding, result.module.embedding.weight.detach().numpy())
    assert model.readout_bias is not None and model.readout_bias.shape == (2,)
    ff_pred = predict(model, data["test"], backend="numpy")
    assert (ff_pred == result.module.predict(data["test"])).mean() >= 0.99
    acc = accuracy(model, data["test"], backend="numpy")
    print(f"embedding gru: fastfp acc {acc:.3f}")
    assert acc >= 0.85


@pytest.mark.parametrize("cell", ["gru", "ugrnn", "lstm"])
def test_variable_lengths_use_last_valid_state(torch, cell):
    from fastfp.train import TextClassifier

    torch.manual_seed(0)
    net = TextClassifier(cell, 3, 8, 2, embedding_dim=4).double()
    d = tasks.categorical(40, n_classes=2, length=12, min_length=3, seed=7)
    assert len(set(d.lengths.tolist())) > 1
    with torch.no_grad():
        padded = net(d.tokens, d.lengths).numpy()  # one padded batch with lengths
        ignoring = net(d.tokens).numpy()  # padding read as input
        single = np.stack([net(d.tokens[b:b + 1, : d.lengths[b]]).numpy()[0] for b in range(len(d))])
    np.testing.assert_allclose(padded, single, rtol=0, atol=1e-12)
    short = d.lengths < d.max_length
    assert np.abs(padded[short] - ignoring[short]).max() > 1e-6
    # and fastfp's rollout with lengths gives the same scores
    model = net.to_model()
    states = fastfp.rollout(model.params.astype(np.float64), None, model.inputs(d.tokens).astype(np.float64),
                            lengths=d.lengths, backend="numpy")
    np.testing.assert_allclose(model.logits(states[:, -1]), padded, rtol=0, atol=1e-5)


def test_same_seed_same_weights(torch, data):
    from fastfp.train import train_classifier

    kw = dict(cell="ugrnn", hidden_size=8, steps=15, batch_size=32)
    a = train_classifier(data["train"], seed=3, **kw).model
    b = train_classifier(data["train"], seed=3, **kw).model
    c = train_classifier(data["train"], seed=4, **kw).model
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(getattr(a.params, name), getattr(b.params, name))
    np.testing.assert_array_equal(a.readout_weight, b.readout_weight)
    assert not np.array_equal(a.params.w_hh, c.params.w_hh)


def test_callable_source_of_fresh_batches(torch):
    from fastfp.train import train_classifier

    calls = []

    def fresh(rng):
        calls.append(1)
        return tasks.categorical(64, seed=rng, **TASK)

    kw = dict(cell="gru", hidden_size=8, steps=6, batch_size=32)
    a = train_classifier(fresh, seed=1, **kw)
    assert len(calls) == 3 and a.steps == 6  # 2 batches per call
    b = train_classifier(fresh, seed=1, **kw)
    np.testing.assert_array_equal(a.model.params.w_hh, b.model.params.w_hh)
    assert a.model.metadata["task"]["source"] == "callable"


def test_bad_arguments(torch, data):
    from fastfp.train import train_classifier

    d = data["val"]
    with pytest.raises(InvalidOptionError, match="'cell'"):
        train_classifier(d, cell="transformer", steps=1)
    with pytest.raises(InvalidOptionError, match="'hidden_size'"):
        train_classifier(d, hidden_size=0, steps=1)
    with pytest.raises(InvalidOptionError, match="'steps'"):
        train_classifier(d, steps=0)
    with pytest.raises(InvalidOptionError, match="'nonlinearity'"):
        train_classifier(d, cell="gru", nonlinearity="relu", steps=1)
    with pytest.raises(InvalidOptionError, match="'target_accuracy'"):
        train_classifier(d, target_accuracy=0.9, steps=1)
    with pytest.raises(ArgumentTypeError, match="'task_data'"):
        train_classifier(d.tokens, steps=1)
    with pytest.raises(ArgumentTypeError, match="'task_data'"):
        train_classifier(lambda rng: d.tokens, steps=1)
    with pytest.raises(ArgumentTypeError, match="'eval_data'"):
        train_classifier(d, eval_data=d.labels, steps=1)
    with pytest.raises(ArgumentTypeError, match="'model'"):
        accuracy(d, d)


def test_accuracy_rejects_mismatched_vocabulary():
    model = fastfp.Model(make_params("gru", H=4, M=3), np.eye(3), np.ones((2, 4)))
    d = tasks.categorical(10, n_classes=3, length=5, seed=0)  # V = 4
    with pytest.raises(fastfp.ShapeError, match="'task_data'"):
        accuracy(model, d, backend="numpy")


_NO_TORCH = r"""
import sys
sys.modules['torch'] = None
import numpy as np
import fastfp, fastfp.train
from fastfp import tasks
assert 'torch' not in sys.modules or sys.modules['torch'] is None
d = tasks.categorical(20, n_classes=2, length=5, seed=0)
try:
    fastfp.train.train_classifier(d, steps=1)
except fastfp.MissingDependencyError as exc:
    assert "pip install 'fastfp-rnn[torch]'" in str(exc), str(exc)
else:
    raise SystemExit("no MissingDependencyError")
try:
    fastfp.train.TextClassifier
except fastfp.MissingDependencyError:
    pass
else:
    raise SystemExit("no MissingDependencyError for TextClassifier")
# evaluation needs fastfp alone
p = fastfp.RNNParams.random("gru", 4, 3, seed=0)
m = fastfp.Model(p, np.eye(3), np.ones((2, 4)))
a = fastfp.train.accuracy(m, d, backend="numpy")
assert 0.0 <= a <= 1.0
print("ok")
"""


def test_missing_torch_raises_missing_dependency():
    out = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout


def test_import_does_not_import_torch():
    code = "import sys, fastfp, fastfp.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert issubclass(MissingDependencyError, ImportError)


def test_a_classifier_needs_two_classes(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "one.csv"
    path.write_text("text,label\ngood film,pos\ngreat film,pos\nnice film,pos\n")
    with pytest.warns(UserWarning, match="one class"):
        c = fastfp.read_corpus(path)
    with pytest.raises(InvalidOptionError, match=r"every document has class 0 \('pos'\): a classifier needs documents of at least 2"):
        fastfp.train.train_classifier(c.train, hidden_size=4, steps=2)


def test_a_train_result_prints_in_one_short_line():
    pytest.importorskip("torch")
    d = tasks.categorical(64, n_classes=2, length=10, seed=0)
    r = fastfp.train.train_classifier(d, hidden_size=4, steps=30, seed=0, eval_data=d, eval_every=10)
    text = repr(r)
    assert len(text) < 250 and "\n" not in text and f"steps={r.steps}" in text and "loss: 30" in text


def test_a_callable_source_whose_first_draw_is_one_class_trains():
    pytest.importorskip("torch")
    first = [True]

    def draw(rng):  # the first batch of one class by chance, then both
        d = tasks.categorical(8, n_classes=2, length=6, seed=int(rng.integers(1 << 30)))
        if first[0]:
            first[0] = False
            keep = np.flatnonzero(d.labels == d.labels[0])
            d = type(d)(tokens=d.tokens[keep], lengths=d.lengths[keep], labels=d.labels[keep], vocab=d.vocab,
                        evidence=d.evidence, name=d.name, params=d.params)
        return d

    r = fastfp.train.train_classifier(draw, hidden_size=4, steps=3, seed=0, batch_size=8)
    assert r.steps == 3
