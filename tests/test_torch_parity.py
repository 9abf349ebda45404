"""fastfp against PyTorch: nn.RNN (tanh, relu), nn.GRU and nn.LSTM with random weights, and the two
cells PyTorch lacks (gru_reset_before, ugrnn) written here as small torch functions straight from
the equations in fastfp/params.py. Autograd is an independent oracle for the derivatives."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

torch = pytest.importorskip("torch")

import fastfp  # noqa: E402
from fastfp import RNNParams  # noqa: E402
from support import VARIANT_IDS, VARIANTS  # noqa: E402

pytestmark = pytest.mark.torch

H, M, B, T = 8, 5, 4, 50
WEIGHT_GAIN = 2.0  # PyTorch's init times 2, so gates are spread well away from 0.5
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}
# Agreement after 50 steps (the error of each step is propagated by the dynamics).
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-5)}


# ----------------------------------------------------------------------------- the torch side
def _split(a, k):
    return torch.split(a, a.shape[0] // k, dim=0)


def torch_gru_reset_before(w_ih, w_hh, b_ih, b_hh, h, x):
    """Cho et al. (2014): r, z gates; n = tanh(W_n x + b_in + U_n (r * h) + b_hn); h' = (1-z) n + z h."""
    W_r, W_z, W_n = _split(w_ih, 3)
    U_r, U_z, U_n = _split(w_hh, 3)
    bi_r, bi_z, bi_n = _split(b_ih, 3)
    bh_r, bh_z, bh_n = _split(b_hh, 3)
    r = torch.sigmoid(x @ W_r.T + bi_r + h @ U_r.T + bh_r)
    z = torch.sigmoid(x @ W_z.T + bi_z + h @ U_z.T + bh_z)
    n = torch.tanh(x @ W_n.T + bi_n + (r * h) @ U_n.T + bh_n)
    return (1 - z) * n + z * h


def torch_ugrnn(w_ih, w_hh, b_ih, b_hh, h, x):
    """u = sigma(W_u x + b_iu + U_u h + b_hu), c = tanh(W_c x + b_ic + U_c h + b_hc), h' = u h + (1-u) c."""
    W_u, W_c = _split(w_ih, 2)
    U_u, U_c = _split(w_hh, 2)
    bi_u, bi_c = _split(b_ih, 2)
    bh_u, bh_c = _split(b_hh, 2)
    u = torch.sigmoid(x @ W_u.T + bi_u + h @ U_u.T + bh_u)
    c = torch.tanh(x @ W_c.T + bi_c + h @ U_c.T + bh_c)
    return u * h + (1 - u) * c


FUNCTIONAL = {"gru_reset_before": (torch_gru_reset_before, 3), "ugrnn": (torch_ugrnn, 2)}


class TorchModel:
    """One cell on the torch side, and the same weights as fastfp RNNParams."""

    def __init__(self, cell, nonlinearity, dtype_name, seed=0):
        np_dtype, t_dtype = DTYPES[dtype_name]
        self.cell, self.np_dtype, self.t_dtype = cell, np_dtype, t_dtype
        torch.manual_seed(seed)
        if cell in FUNCTIONAL:
            fn, G = FUNCTIONAL[cell]
            s = WEIGHT_GAIN / np.sqrt(H)
            draw = lambda *shape: torch.empty(*shape, dtype=torch.float64).uniform_(-s, s).to(t_dtype)  # noqa: E731
            self.weights = (draw(G * H, M), draw(G * H, H), draw(G * H), draw(G * H))
            self.fn, self.module = fn, None
        else:
            if cell == "vanilla":
                module = torch.nn.RNN(M, H, nonlinearity=nonlinearity, batch_first=True)
            elif cell == "gru":
                module = torch.nn.GRU(M, H, batch_first=True)
            else:
                module = torch.nn.LSTM(M, H, batch_first=True)
            module = module.to(torch.float64)
            with torch.no_grad():
                for prm in module.parameters():
                    prm.mul_(WEIGHT_GAIN)
            self.module = module.to(t_dtype)
            m = self.module
            self.weights = (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
        arrays = [w.detach().numpy() for w in self.weights]
        assert all(a.dtype == np_dtype for a in arrays)
        self.params = RNNParams(cell, *arrays, nonlinearity=nonlinearity, source="torch test")
        self.N = self.params.state_size

    def tensor(self, a):
        return torch.as_tensor(np.asarray(a), dtype=self.t_dtype)

    def step(self, s, x):
        """One step in fastfp's state layout: s (B, N), x (B, M) tensors -> (B, N)."""
        if self.module is None:
            return self.fn(*self.weights, s, x)
        if self.cell == "lstm":
            h, c = s[:, :H], s[:, H:]
            _, (h2, c2) = self.module(x[:, None], (h[None].contiguous(), c[None].contiguous()))
            return torch.cat([h2[0], c2[0]], dim=1)
        _, h2 = self.module(x[:, None], s[None].contiguous())
        return h2[0]

    def run(self, h0, xs):
        """(outputs (B, T, H), final state (B, N)) as numpy; h0 (B, N) and xs (B, T, M) numpy."""
        s, X = self.tensor(h0), self.tensor(xs)
        with torch.no_grad():
            if self.module is None:
                outs = []
                for t in range(X.shape[1]):
                    s = self.step(s, X[:, t])
                    outs.append(s)
                return torch.stack(outs, 1).numpy(), s.numpy()
            if self.cell == "lstm":
                out, (hn, cn) = self.module(X, (s[None, :, :H].contiguous(), s[None, :, H:].contiguous()))
                return out.numpy(), torch.cat([hn[0], cn[0]], dim=1).numpy()
            out, hn = self.module(X, s[None].contiguous())
            return out.numpy(), hn[0].numpy()


def _data(model, seed=1, batch=B):
    rng = np.random.default_rng(seed)
    h0 = (0.5 * rng.standard_normal((batch, model.N))).astype(model.np_dtype)
    xs = rng.standard_normal((batch, T, M)).astype(model.np_dtype)
    return h0, xs


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def variant(request):
    return request.param


@pytest.fixture(params=list(DTYPES))
def dtype_name(request):
    return request.param


# ----------------------------------------------------------------------------- trajectories
def test_iterated_step_matches_torch(variant, dtype_name):
    model = TorchModel(*variant, dtype_name)
    h0, xs = _data(model)
    out, final = model.run(h0, xs)
    s = h0
    for t in range(T):
        s = fastfp.step(model.params, s, xs[:, t])
        assert s.dtype == model.np_dtype
        assert_allclose(s[:, :H], out[:, t], err_msg=f"step {t}", **TOL[dtype_name])
    assert_allclose(s, final, **TOL[dtype_name])
    # the dynamics are not trivially saturated or collapsed
    assert np.std(out[:, -1]) > 0.05


def test_rollout_matches_torch(variant, dtype_name, backend):
    model = TorchModel(*variant, dtype_name)
    h0, xs = _data(model)  # the same 50-step sequence as above
    out, final = model.run(h0, xs)
    states = fastfp.rollout(model.params, h0, xs, backend=backend)
    assert states.shape == (B, T, model.N) and states.dtype == model.np_dtype
    assert_allclose(states[..., :H], out, **TOL[dtype_name])
    assert_allclose(states[:, -1], final, **TOL[dtype_name])


def test_rollout_with_lengths_matches_per_sequence_torch(variant, dtype_name):
    model = TorchModel(*variant, dtype_name)
    lengths = np.array([T, 37, 1, 12, 0])
    h0, xs = _data(model, seed=3, batch=lengths.size)  # the padding holds random numbers
    states = fastfp.rollout(model.params, h0, xs, lengths=lengths)
    for b, L in enumerate(lengths):
        if L == 0:
            assert_allclose(states[b], np.broadcast_to(h0[b], (T, model.N)), rtol=0, atol=0)
            continue
        out, final = model.run(h0[b:b + 1], xs[b:b + 1, :L])
        assert_allclose(states[b, :L, :H], out[0], **TOL[dtype_name])
        assert_allclose(states[b, -1], final[0], err_msg=f"sequence {b}, length {L}", **TOL[dtype_name])


# ----------------------------------------------------------------------------- derivatives
def _point(model, seed=4):
    rng = np.random.default_rng(seed)
    h = 0.8 * rng.standard_normal(model.N)
    x = rng.standard_normal(M)
    if model.cell == "vanilla" and model.params.nonlinearity == "relu":
        p = model.params
        pre = p.w_ih @ x + p.b_ih + p.w_hh @ h + p.b_hh
        assert np.min(np.abs(pre)) > 1e-3  # away from relu's kink
    return h, x


def test_derivatives_match_autograd(variant, backend):
    model = TorchModel(*variant, "float64")
    p = model.params
    h, x = _point(model)
    ht, xt = model.tensor(h), model.tensor(x)
    f_h = lambda s: model.step(s[None], xt[None])[0]  # noqa: E731
    f_x = lambda u: model.step(ht[None], u[None])[0]  # noqa: E731

    J = torch.autograd.functional.jacobian(f_h, ht).numpy()
    Jx = torch.autograd.functional.jacobian(f_x, xt).numpy()
    assert J.shape == (p.state_size, p.state_size) and Jx.shape == (p.state_size, M)
    assert_allclose(fastfp.jacobian(p, h, x, backend=backend), J, rtol=1e-12, atol=1e-13)
    assert_allclose(fastfp.input_jacobian(p, h, x, backend=backend), Jx, rtol=1e-12, atol=1e-13)

    rng = np.random.default_rng(5)
    v, w = rng.standard_normal(p.state_size), rng.standard_normal(p.state_size)
    _, jv = torch.autograd.functional.jvp(f_h, ht, model.tensor(v))
    _, wj = torch.autograd.functional.vjp(f_h, ht, model.tensor(w))
    assert_allclose(fastfp.jvp(p, h, x, v, backend=backend), jv.numpy(), rtol=1e-12, atol=1e-13)
    assert_allclose(fastfp.vjp(p, h, x, w, backend=backend), wj.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_jacobian_matches_autograd(cell, backend):
    """Jacobians of a batch of states with per-state inputs against autograd of torch's cell."""
    model = TorchModel(cell, "tanh", "float64", seed=7)
    rng = np.random.default_rng(8)
    hs = 0.8 * rng.standard_normal((3, model.N))
    xs = rng.standard_normal((3, M))
    J = fastfp.jacobian(model.params, hs, xs, backend=backend)
    for b in range(3):
        xt = model.tensor(xs[b])
        ref = torch.autograd.functional.jacobian(lambda s: model.step(s[None], xt[None])[0], model.tensor(hs[b]))
        assert_allclose(J[b], ref.numpy(), rtol=1e-12, atol=1e-13)


def test_torch_oracle_is_sensitive():
    """Guard against a vacuous comparison: a different weight matrix gives a different trajectory."""
    model = TorchModel("gru", "tanh", "float64")
    h0, xs = _data(model)
    out, _ = model.run(h0, xs)
    p = model.params
    other = RNNParams("gru", p.w_ih, p.w_hh * 1.01, p.b_ih, p.b_hh)
    states = fastfp.rollout(other, h0, xs)
    assert np.max(np.abs(states - out)) > 1e-4
