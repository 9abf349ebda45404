"""Public dynamics API: the linear RNN against its closed form, rollouts, unbatched states."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastfp
from fastfp import RNNParams
from support import OPS, call, expected_shape, make_params, random_inputs, random_states


# ----------------------------------------------------------------------------- linear RNN
H_LIN, M_LIN, T_LIN = 6, 3, 25


@pytest.fixture
def linear(rng):
    """A relu vanilla cell that is affine on the positive orthant: non-negative U, W, positive
    biases, non-negative inputs and states keep every pre-activation > 0, so F(h, x) = U h + W x + b.
    Row sums of U are below 0.8, so the map is a contraction and rollouts stay bounded."""
    U = rng.uniform(0.0, 0.8 / H_LIN, (H_LIN, H_LIN))
    W = rng.uniform(0.0, 1.0, (H_LIN, M_LIN))
    b_ih = rng.uniform(0.05, 0.5, H_LIN)
    b_hh = rng.uniform(0.05, 0.5, H_LIN)
    p = RNNParams("vanilla", W, U, b_ih, b_hh, nonlinearity="relu")
    return p, U, W, b_ih + b_hh


def _assert_positive_preactivation(U, W, b, h, x):
    pre = h @ U.T + x @ W.T + b
    assert np.all(pre > 0.05), "construction error: the relu cell is not in its linear regime"


def test_linear_rnn_step(linear, backend, rng):
    p, U, W, b = linear
    h = rng.uniform(0.0, 2.0, (7, H_LIN))
    x = rng.uniform(0.0, 1.0, (7, M_LIN))
    _assert_positive_preactivation(U, W, b, h, x)
    assert_allclose(fastfp.step(p, h, x, backend=backend), h @ U.T + x @ W.T + b, rtol=1e-14, atol=1e-15)


def test_linear_rnn_rollout_equals_explicit_sum(linear, backend, rng):
    p, U, W, b = linear
    B = 4
    h0 = rng.uniform(0.0, 2.0, (B, H_LIN))
    xs = rng.uniform(0.0, 1.0, (B, T_LIN, M_LIN))
    states = fastfp.rollout(p, h0, xs, backend=backend)
    assert states.shape == (B, T_LIN, H_LIN)
    # h_t = U^t h_0 + sum_{s=1..t} U^(t-s) (W x_s + b), t = 1..T (states[:, t-1] is h_t).
    for t in range(1, T_LIN + 1):
        expected = h0 @ np.linalg.matrix_power(U, t).T
        for s in range(1, t + 1):
            expected = expected + (xs[:, s - 1] @ W.T + b) @ np.linalg.matrix_power(U, t - s).T
        prev = h0 if t == 1 else states[:, t - 2]
        _assert_positive_preactivation(U, W, b, prev, xs[:, t - 1])
        assert_allclose(states[:, t - 1], expected, rtol=1e-12, atol=1e-13)


def test_linear_rnn_derivatives_are_the_weights(linear, backend, rng):
    p, U, W, b = linear
    h = rng.uniform(0.0, 2.0, (5, H_LIN))
    x = rng.uniform(0.0, 1.0, M_LIN)
    _assert_positive_preactivation(U, W, b, h, x)
    J = fastfp.jacobian(p, h, x, backend=backend)
    Jx = fastfp.input_jacobian(p, h, x, backend=backend)
    for b_ in range(5):
        assert_array_equal(J[b_], U)  # exactly: relu' = 1 multiplies each entry of U
        assert_array_equal(Jx[b_], W)
    v = rng.standard_normal((5, H_LIN))
    assert_allclose(fastfp.jvp(p, h, x, v, backend=backend), v @ U.T, rtol=1e-14, atol=1e-15)
    assert_allclose(fastfp.vjp(p, h, x, v, backend=backend), v @ U, rtol=1e-14, atol=1e-15)


def test_relu_cell_is_zero_and_flat_where_preactivations_are_negative(backend, rng):
    """The other side of relu: all pre-activations negative -> F = 0 and J = 0."""
    U = rng.uniform(0.0, 0.5, (4, 4))
    W = rng.uniform(0.0, 0.5, (4, 2))
    p = RNNParams("vanilla", W, U, -np.full(4, 5.0), np.zeros(4), nonlinearity="relu")
    h = rng.uniform(0.0, 1.0, (3, 4))
    x = rng.uniform(0.0, 1.0, 2)
    assert_array_equal(fastfp.step(p, h, x, backend=backend), np.zeros((3, 4)))
    assert_array_equal(fastfp.jacobian(p, h, x, backend=backend), np.zeros((3, 4, 4)))


# ----------------------------------------------------------------------------- rollout
T = 12


def _iterate(params, h0, xs, backend):
    """States visited by calling fastfp.step T times: (B, T, N)."""
    h, out = h0, []
    for t in range(xs.shape[1]):
        h = fastfp.step(params, h, xs[:, t], backend=backend)
        out.append(h)
    return np.stack(out, axis=1)


def test_rollout_equals_iterated_step(params, backend, rng):
    B = 3
    h0 = random_states(rng, params, B)
    xs = rng.standard_normal((B, T, params.input_size))
    states = fastfp.rollout(params, h0, xs, backend=backend)
    assert states.shape == (B, T, params.state_size) and states.dtype == np.float64
    assert_allclose(states, _iterate(params, h0, xs, backend), rtol=1e-13, atol=1e-14)


def test_rollout_backends_agree(params, rng):
    h0 = random_states(rng, params, 3)
    xs = rng.standard_normal((3, T, params.input_size))
    assert_allclose(fastfp.rollout(params, h0, xs, backend="cpu"), fastfp.rollout(params, h0, xs, backend="numpy"),
                    rtol=1e-11, atol=1e-12)


def test_rollout_float32(params, backend, rng):
    h0 = random_states(rng, params, 2, dtype=np.float32)
    xs = rng.standard_normal((2, T, params.input_size)).astype(np.float32)
    states = fastfp.rollout(params, h0, xs, backend=backend)
    assert states.dtype == np.float32
    ref = fastfp.rollout(params, h0.astype(np.float64), xs.astype(np.float64), backend="numpy")
    assert_allclose(states, ref, rtol=1e-4, atol=1e-4)


def test_rollout_lengths_equal_mask(params, backend, rng):
    lengths = np.array([T, 5, 0, 1])
    B = lengths.size
    h0 = random_states(rng, params, B)
    xs = rng.standard_normal((B, T, params.input_size))
    mask = np.arange(T)[None, :] < lengths[:, None]
    by_len = fastfp.rollout(params, h0, xs, lengths=lengths, backend=backend)
    by_mask = fastfp.rollout(params, h0, xs, mask=mask, backend=backend)
    assert_array_equal(by_len, by_mask)


def test_rollout_lengths_freeze_the_state_after_the_last_valid_input(params, backend, rng):
    lengths = np.array([T, 5, 0, 1])
    B = lengths.size
    h0 = random_states(rng, params, B)
    xs = rng.standard_normal((B, T, params.input_size))  # padding is random, not zeros: it must be ignored
    states = fastfp.rollout(params, h0, xs, lengths=lengths, backend=backend)
    for b, L in enumerate(lengths):
        if L:
            alone = fastfp.rollout(params, h0[b], xs[b, :L], backend=backend)
            assert_allclose(states[b, :L], alone, rtol=1e-13, atol=1e-14)
        last = states[b, L - 1] if L else h0[b]
        assert_array_equal(states[b, L:], np.broadcast_to(last, (T - L, params.state_size)))


def test_rollout_general_mask_skips_masked_steps(params, backend, rng):
    """With a non-prefix mask the state evolves by the unmasked inputs only, in order."""
    B = 3
    h0 = random_states(rng, params, B)
    xs = rng.standard_normal((B, T, params.input_size))
    mask = rng.random((B, T)) < 0.6
    mask[0] = True
    mask[2, :] = False
    states = fastfp.rollout(params, h0, xs, mask=mask, backend=backend)
    for b in range(B):
        kept = xs[b, mask[b]]
        if kept.shape[0]:
            compressed = fastfp.rollout(params, h0[b], kept, backend=backend)
            assert_allclose(states[b, mask[b]], compressed, rtol=1e-13, atol=1e-14)
            assert_allclose(states[b, -1], compressed[-1], rtol=1e-13, atol=1e-14)
        else:
            assert_array_equal(states[b], np.broadcast_to(h0[b], (T, params.state_size)))


def test_rollout_single_sequence(params, backend, rng):
    h0 = random_states(rng, params, None)
    xs = rng.standard_normal((T, params.input_size))
    states = fastfp.rollout(params, h0, xs, backend=backend)
    assert states.shape == (T, params.state_size)
    batched = fastfp.rollout(params, h0[None], xs[None], backend=backend)
    assert_array_equal(states, batched[0])
    h = h0
    for t in range(T):
        h = fastfp.step(params, h, xs[t], backend=backend)
        assert_allclose(states[t], h, rtol=1e-13, atol=1e-14)


def test_rollout_single_sequence_lengths_and_mask(params, backend, rng):
    h0 = random_states(rng, params, None)
    xs = rng.standard_normal((T, params.input_size))
    full = fastfp.rollout(params, h0, xs, backend=backend)
    by_len = fastfp.rollout(params, h0, xs, lengths=4, backend=backend)
    by_mask = fastfp.rollout(params, h0, xs, mask=np.arange(T) < 4, backend=backend)
    assert by_len.shape == by_mask.shape == (T, params.state_size)
    assert_array_equal(by_len, by_mask)
    assert_allclose(by_len[:4], full[:4], rtol=1e-14, atol=0)
    assert_array_equal(by_len[4:], np.broadcast_to(full[3], (T - 4, params.state_size)))


def test_rollout_h0_none_means_zeros(params, backend, rng):
    xs = rng.standard_normal((2, T, params.input_size))
    zeros = np.zeros((2, params.state_size))
    assert_array_equal(fastfp.rollout(params, None, xs, backend=backend),
                       fastfp.rollout(params, zeros, xs, backend=backend))
    single = fastfp.rollout(params, None, xs[0], backend=backend)
    assert_array_equal(single, fastfp.rollout(params, zeros[0], xs[0], backend=backend))
    # and the first state really is F(0, x_0)
    assert_allclose(single[0], fastfp.step(params, zeros[0], xs[0, 0], backend=backend), rtol=1e-15, atol=0)


def test_rollout_1d_h0_is_broadcast(params, backend, rng):
    B = 4
    h0 = random_states(rng, params, None)
    xs = rng.standard_normal((B, T, params.input_size))
    got = fastfp.rollout(params, h0, xs, backend=backend)
    assert got.shape == (B, T, params.state_size)
    assert_array_equal(got, fastfp.rollout(params, np.tile(h0, (B, 1)), xs, backend=backend))
    assert not np.allclose(got[0], got[1])  # different inputs, different trajectories


def test_rollout_does_not_modify_h0(params, backend, rng):
    h0 = random_states(rng, params, 2)
    copy = h0.copy()
    fastfp.rollout(params, h0, rng.standard_normal((2, 3, params.input_size)), backend=backend)
    assert_array_equal(h0, copy)


def test_rollout_zero_length_sequences(params, backend):
    out = fastfp.rollout(params, None, np.zeros((2, 0, params.input_size)), backend=backend)
    assert out.shape == (2, 0, params.state_size)


# ----------------------------------------------------------------------------- unbatched states
@pytest.mark.parametrize("op", OPS)
def test_unbatched_state_returns_unbatched_result(params, op, backend, rng):
    h = random_states(rng, params, None)
    x = random_inputs(rng, params, None)
    vec = random_states(rng, params, None)
    out = call(op, params, h, x, vec, backend=backend)
    N, M = params.state_size, params.input_size
    assert out.shape == {"step": (N,), "jvp": (N,), "vjp": (N,), "jacobian": (N, N), "input_jacobian": (N, M)}[op]
    assert out.shape == expected_shape(op, params, h.shape)
    assert_allclose(out, call(op, params, h[None], x, vec[None], backend=backend)[0], rtol=0, atol=0)


def test_unbatched_state_accepts_python_lists(params, backend, rng):
    h = random_states(rng, params, None)
    x = random_inputs(rng, params, None)
    assert_array_equal(fastfp.step(params, h.tolist(), x.tolist(), backend=backend),
                       fastfp.step(params, h, x, backend=backend))


def test_gru_variants_differ_on_the_same_weights(rng):
    """gru (reset after the matmul) and gru_reset_before are different cells (params.py docstring)."""
    a = make_params("gru", H=5, M=3, seed=1)
    b = RNNParams("gru_reset_before", a.w_ih, a.w_hh, a.b_ih, a.b_hh)
    h = random_states(rng, a, 4)
    assert not np.allclose(fastfp.step(a, h), fastfp.step(b, h))


def test_rollout_from_zeros_runs_in_the_wider_of_the_params_and_inputs_dtypes():
    # float64 params with float32 inputs (model.inputs gives float32) ran in float32: 4e-7 off.
    params = fastfp.RNNParams.random("gru", 8, 3, seed=0)
    xs = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    out = fastfp.rollout(params, None, xs)
    assert out.dtype == np.float64
    h = np.zeros((4, 8))
    for t in range(6):
        h = fastfp.step(params, h, xs[:, t].astype(np.float64), backend="numpy")
    np.testing.assert_allclose(out[:, -1], h, rtol=0, atol=1e-14)
    assert fastfp.rollout(params.astype(np.float32), None, xs).dtype == np.float32
    assert fastfp.rollout(params.astype(np.float32), None, xs.astype(np.float64)).dtype == np.float64


def test_results_too_large_for_the_memory_limit_are_refused_before_allocation():
    import fastfp

    p = fastfp.RNNParams.random("gru", 16, 3, seed=0)
    h = np.zeros((10, 16))
    per_state = 16 * 16 * 8
    with pytest.raises(fastfp.MemoryLimitError, match=r"jacobian: the result of shape \(10, 16, 16\) \(float64\) "
                                                      r"needs .* pass at most 4 states at a time"):
        fastfp.jacobian(p, h, memory_limit=4.5 * per_state)
    assert fastfp.jacobian(p, h, memory_limit=10 * per_state).shape == (10, 16, 16)
    with pytest.raises(fastfp.MemoryLimitError, match=r"input_jacobian: .*\(10, 16, 3\)"):
        fastfp.input_jacobian(p, h, memory_limit=100.0)
    xs = np.zeros((6, 20, 3))
    with pytest.raises(fastfp.MemoryLimitError, match=r"rollout: the result of shape \(6, 20, 16\) .* pass at most 2 "
                                                      r"sequences of 20 steps"):
        fastfp.rollout(p, None, xs, memory_limit=2.5 * 20 * 16 * 8)
    with pytest.raises(fastfp.InvalidOptionError, match="'memory_limit'"):
        fastfp.rollout(p, None, xs, memory_limit=-1)


def test_the_default_result_check_is_the_available_memory_and_decompose_passes_its_limit(monkeypatch):
    import fastfp.dynamics as dynamics

    p = fastfp.RNNParams.random("gru", 16, 3, seed=0)
    fp = fastfp.find_fixed_points(p, np.zeros((4, 16)))
    monkeypatch.setattr(dynamics, "_available_memory", lambda: 1000.0)
    with pytest.raises(fastfp.MemoryLimitError, match=r"more than the available memory .*not even one fits: use jvp"):
        fastfp.jacobian(p, fp.x)
    assert fp.decompose(p, memory_limit=1e9).jacobian.shape == (4, 16, 16)  # its own limit, passed on
