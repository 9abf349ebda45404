"""Trained networks saved by the frameworks themselves, read back by fastfp.load.

The weights are the trained 3-class classifiers of tests/data (trained in PyTorch by
tools/make_classifier_fixtures.py); here they are put into real torch / Flax modules, saved with
the framework's own serialisation, loaded with fastfp and run against the framework's forward pass.
"""

import pathlib

import numpy as np
import pytest

import fastfp

DATA = pathlib.Path(__file__).parent / "data"


def _docs(n=64, seed=21):
    data = fastfp.tasks.categorical(n, n_classes=3, seed=seed)
    return data, data.one_hot(np.float32)


@pytest.mark.parametrize("name", ["gru64_cat3", "lstm32_cat3"])
def test_trained_torch_classifier_round_trip(tmp_path, name):
    torch = pytest.importorskip("torch")
    ref = fastfp.load_params(DATA / f"{name}.npz")
    p = ref.params
    rnn_cls = torch.nn.GRU if p.cell == "gru" else torch.nn.LSTM

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_cls(p.input_size, p.hidden_size, batch_first=True)
            self.readout = torch.nn.Linear(p.hidden_size, ref.readout_weight.shape[0])

    net = Classifier()
    with torch.no_grad():
        for key, value in (("weight_ih_l0", p.w_ih), ("weight_hh_l0", p.w_hh), ("bias_ih_l0", p.b_ih),
                           ("bias_hh_l0", p.b_hh)):
            getattr(net.rnn, key).copy_(torch.tensor(np.array(value)))
        net.readout.weight.copy_(torch.tensor(np.array(ref.readout_weight)))
        net.readout.bias.copy_(torch.tensor(np.array(ref.readout_bias)))
    path = tmp_path / "classifier.pt"
    torch.save(net.state_dict(), path)

    model = fastfp.load(path)
    assert model.params.cell == p.cell and model.readout_weight is not None
    data, xs = _docs()
    with torch.no_grad():
        out, _ = net.rnn(torch.tensor(xs))
        torch_logits = net.readout(out[:, -1]).numpy()
    states = fastfp.rollout(model.params, None, xs)
    H = p.hidden_size
    np.testing.assert_allclose(states[:, :, :H], out.numpy(), atol=1e-6)  # every one of the 50 steps
    np.testing.assert_allclose(model.logits(states[:, -1]), torch_logits, atol=1e-5)
    assert (np.argmax(torch_logits, axis=1) == data.labels).mean() >= 0.95


def test_trained_gru_through_flax_round_trip(tmp_path):
    pytest.importorskip("flax")
    jnp = pytest.importorskip("jax.numpy")
    from flax import linen as nn
    from flax import serialization

    p = fastfp.load_params(DATA / "gru64_cat3.npz").params
    H = p.hidden_size
    Wr, Wz, Wn = np.split(np.asarray(p.w_ih), 3)
    Ur, Uz, Un = np.split(np.asarray(p.w_hh), 3)
    bir, biz, bin_ = np.split(np.asarray(p.b_ih), 3)
    bhr, bhz, bhn = np.split(np.asarray(p.b_hh), 3)
    # Flax's GRUCell has one bias per gate on the input side for r, z (the hidden side has none):
    params = {"params": {
        "ir": {"kernel": Wr.T, "bias": bir + bhr}, "iz": {"kernel": Wz.T, "bias": biz + bhz},
        "in": {"kernel": Wn.T, "bias": bin_}, "hr": {"kernel": Ur.T}, "hz": {"kernel": Uz.T},
        "hn": {"kernel": Un.T, "bias": bhn},
    }}
    path = tmp_path / "gru.msgpack"
    path.write_bytes(serialization.to_bytes(params))

    model = fastfp.load(path)
    assert model.params.cell == "gru"
    cell = nn.GRUCell(features=H)
    data, xs = _docs(16)
    h = jnp.zeros((len(xs), H))
    states = fastfp.rollout(model.params, None, xs)
    for t in range(xs.shape[1]):
        h, _ = cell.apply(params, h, jnp.asarray(xs[:, t]))
        np.testing.assert_allclose(states[:, t], np.asarray(h), atol=1e-6)
