"""The Numba kernels (backend="cpu") against the NumPy reference (backend="numpy"), and both
against central finite differences of ``step``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import fastfp
from fastfp import RNNParams
from support import OPS, TOL, VARIANTS, call, expected_shape, make_params, random_inputs, random_states, relu_margin

DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------------------- Numba == reference
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("B", [1, 3, 17])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-x", "per-state-x"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_matches_reference(variant, dtype, shared, B, op, rng):
    cell, nonlinearity = variant
    p64 = make_params(cell, nonlinearity, H=6, M=4, seed=B)
    p = p64.astype(dtype)
    h = random_states(rng, p, B, dtype)
    x = random_inputs(rng, p, None if shared else B, dtype)
    vec = random_states(rng, p, B, dtype)

    got = call(op, p, h, x, vec, backend="cpu")
    ref = call(op, p, h, x, vec, backend="numpy")
    assert got.shape == ref.shape == expected_shape(op, p, h.shape)
    assert got.dtype == ref.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(got))
    assert_allclose(got, ref, **TOL[np.dtype(dtype)])

    if dtype == np.float32:
        # Same (float32-representable) numbers computed in float64 by the reference.
        up = lambda a: a.astype(np.float64)  # noqa: E731
        ref64 = call(op, p, up(h), up(x), up(vec), backend="numpy")
        assert ref64.dtype == np.float64
        assert_allclose(got, ref64, **TOL[np.dtype(np.float32)])


@pytest.mark.parametrize("op", OPS)
def test_numba_matches_reference_saturated(variant, op, rng):
    """Large weights and states: gates saturate at 0/1 and tanh at +-1, results stay finite."""
    cell, nonlinearity = variant
    p = make_params(cell, nonlinearity, H=7, M=3, scale=20.0, seed=5)
    h = random_states(rng, p, 9, scale=5.0)
    x = 5.0 * random_inputs(rng, p, None)
    vec = random_states(rng, p, 9)
    got = call(op, p, h, x, vec, backend="cpu")
    ref = call(op, p, h, x, vec, backend="numpy")
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(ref))
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert_allclose(got, ref, rtol=1e-12, atol=1e-13 * scale)


@pytest.mark.parametrize("op", ["jacobian", "input_jacobian"])
def test_parallel_jacobian_assembly_matches_reference(variant, op, rng):
    """Large outputs take the parallel Numba path; it must agree with the reference too."""
    from fastfp import _cells_cpu

    cell, nonlinearity = variant
    H = 16 if cell == "lstm" else 32
    p = make_params(cell, nonlinearity, H=H, M=32, seed=3)
    N = p.state_size
    B = -(-_cells_cpu.PARALLEL_MIN_ENTRIES // (N * 32))  # ceil: enough entries for the parallel kernel
    h = random_states(rng, p, B)
    x = random_inputs(rng, p, B)
    got = call(op, p, h, x, backend="cpu")
    assert got.size >= _cells_cpu.PARALLEL_MIN_ENTRIES
    ref = call(op, p, h, x, backend="numpy")
    assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("op", OPS)
def test_shared_input_equals_tiled_per_state_input(params, op, backend, rng):
    B = 5
    h = random_states(rng, params, B)
    x = random_inputs(rng, params, None)
    vec = random_states(rng, params, B)
    shared = call(op, params, h, x, vec, backend=backend)
    tiled = call(op, params, h, np.tile(x, (B, 1)), vec, backend=backend)
    assert_allclose(shared, tiled, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("op", OPS)
def test_batch_rows_equal_unbatched_calls(params, op, backend, rng):
    """Each row of a batched result equals the call on that single state (N,) -> (N,) / (N, N) ..."""
    B = 4
    h = random_states(rng, params, B)
    x = random_inputs(rng, params, B)
    vec = random_states(rng, params, B)
    batched = call(op, params, h, x, vec, backend=backend)
    for b in range(B):
        single = call(op, params, h[b], x[b], vec[b], backend=backend)
        assert single.shape == expected_shape(op, params, h[b].shape)
        assert_allclose(single, batched[b], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("op", OPS)
def test_x_none_is_the_zero_input(params, op, backend, rng):
    h = random_states(rng, params, 3)
    vec = random_states(rng, params, 3)
    assert_allclose(
        call(op, params, h, None, vec, backend=backend),
        call(op, params, h, np.zeros(params.input_size), vec, backend=backend),
        rtol=0, atol=0,
    )


def test_inputs_are_not_modified(params, backend, rng):
    h = random_states(rng, params, 3)
    x = random_inputs(rng, params, 3)
    v = random_states(rng, params, 3)
    copies = [a.copy() for a in (h, x, v)]
    for op in OPS:
        call(op, params, h, x, v, backend=backend)
    for a, c in zip((h, x, v), copies):
        np.testing.assert_array_equal(a, c)


def test_read_only_and_non_contiguous_inputs(params, backend, rng):
    h_wide = random_states(rng, params, 4)
    h = np.repeat(h_wide, 2, axis=1)[:, ::2]  # a strided view holding the same numbers
    assert not h.flags.c_contiguous
    ro = h_wide.copy()
    ro.setflags(write=False)
    x = np.asfortranarray(random_inputs(rng, params, 4))
    for op in ("step", "jacobian"):
        a = call(op, params, h, x, backend=backend)
        b = call(op, params, ro, x, backend=backend)
        c = call(op, params, np.ascontiguousarray(h_wide), np.ascontiguousarray(x), backend=backend)
        assert_allclose(a, c, rtol=0, atol=0)
        assert_allclose(b, c, rtol=0, atol=0)


def test_float32_weights_with_float64_states_compute_in_float64(params, backend, rng):
    p32 = params.astype(np.float32)
    p32_as_64 = p32.astype(np.float64)  # float32 -> float64 is exact
    h = random_states(rng, params, 3)
    x = random_inputs(rng, params, None)
    for op in ("step", "jacobian", "input_jacobian"):
        out = call(op, p32, h, x, backend=backend)
        assert out.dtype == np.float64
        assert_allclose(out, call(op, p32_as_64, h, x, backend=backend), rtol=0, atol=0)


def test_float64_weights_with_float32_states_compute_in_float32(params, backend, rng):
    h = random_states(rng, params, 3, dtype=np.float32)
    x = random_inputs(rng, params, None)  # float64 input is cast to the states' dtype
    for op in OPS:
        out = call(op, params, h, x, h, backend=backend)
        assert out.dtype == np.float32
        ref = call(op, params, h.astype(np.float64), x.astype(np.float32).astype(np.float64), h.astype(np.float64),
                   backend="numpy")
        assert_allclose(out, ref, **TOL[np.dtype(np.float32)])


def test_empty_batch(params, backend):
    h = np.zeros((0, params.state_size))
    for op in OPS:
        out = call(op, params, h, None, h, backend=backend)
        assert out.shape == expected_shape(op, params, h.shape)


# ----------------------------------------------------------------------------- finite differences
EPS = 1e-6
FD_TOL = dict(rtol=1e-7, atol=1e-7)


def _fd_state_jacobian(params, h, x, backend):
    """Central differences of step at one state h (N,), input x (M,): J[i, j] = dF_i/dh_j."""
    E = EPS * np.eye(h.size)
    plus = fastfp.step(params, h + E, x, backend=backend)   # row j: F(h + eps e_j)
    minus = fastfp.step(params, h - E, x, backend=backend)
    return ((plus - minus) / (2 * EPS)).T


def _fd_input_jacobian(params, h, x, backend):
    """Central differences of step with respect to x: Jx[i, k] = dF_i/dx_k (per-state inputs)."""
    E = EPS * np.eye(x.size)
    hs = np.tile(h, (x.size, 1))
    plus = fastfp.step(params, hs, x + E, backend=backend)
    minus = fastfp.step(params, hs, x - E, backend=backend)
    return ((plus - minus) / (2 * EPS)).T


def _fd_setup(params, rng, B=3):
    h = random_states(rng, params, B)
    x = random_inputs(rng, params, B)
    if params.cell == "vanilla" and params.nonlinearity == "relu":
        # Stay clear of relu's kink, where the derivative is undefined.
        assert relu_margin(params, h, x) > 1e-3
    return h, x


def test_jacobian_equals_finite_differences(params, backend, rng):
    h, x = _fd_setup(params, rng)
    J = fastfp.jacobian(params, h, x, backend=backend)
    for b in range(h.shape[0]):
        assert_allclose(J[b], _fd_state_jacobian(params, h[b], x[b], backend), **FD_TOL)


def test_input_jacobian_equals_finite_differences(params, backend, rng):
    h, x = _fd_setup(params, rng)
    Jx = fastfp.input_jacobian(params, h, x, backend=backend)
    for b in range(h.shape[0]):
        assert_allclose(Jx[b], _fd_input_jacobian(params, h[b], x[b], backend), **FD_TOL)


def test_jvp_equals_directional_finite_difference(params, backend, rng):
    h, x = _fd_setup(params, rng)
    v = rng.standard_normal(h.shape)
    got = fastfp.jvp(params, h, x, v, backend=backend)
    fd = (fastfp.step(params, h + EPS * v, x, backend=backend)
          - fastfp.step(params, h - EPS * v, x, backend=backend)) / (2 * EPS)
    assert_allclose(got, fd, **FD_TOL)


def test_vjp_equals_finite_differences(params, backend, rng):
    h, x = _fd_setup(params, rng)
    w = rng.standard_normal(h.shape)
    got = fastfp.vjp(params, h, x, w, backend=backend)
    for b in range(h.shape[0]):
        # d(w . F)/dh_j by central differences of the scalar w . F.
        E = EPS * np.eye(h.shape[1])
        plus = fastfp.step(params, h[b] + E, x[b], backend=backend) @ w[b]
        minus = fastfp.step(params, h[b] - E, x[b], backend=backend) @ w[b]
        assert_allclose(got[b], (plus - minus) / (2 * EPS), **FD_TOL)


@pytest.mark.parametrize("B", [None, 4], ids=["single", "batch"])
def test_jvp_vjp_equal_products_with_the_jacobian(params, backend, B, rng):
    h = random_states(rng, params, B)
    x = random_inputs(rng, params, B)
    v = random_states(rng, params, B)
    w = random_states(rng, params, B)
    J = fastfp.jacobian(params, h, x, backend=backend)
    assert_allclose(fastfp.jvp(params, h, x, v, backend=backend), np.einsum("...ij,...j->...i", J, v),
                    rtol=1e-12, atol=1e-13)
    assert_allclose(fastfp.vjp(params, h, x, w, backend=backend), np.einsum("...i,...ij->...j", w, J),
                    rtol=1e-12, atol=1e-13)


def test_lstm_jacobian_block_structure(backend, rng):
    """For [h, c]: dc'/dc = diag(f) and dh'/dc = diag(o (1 - tanh(c')^2) f); c enters nowhere else."""
    p = make_params("lstm", H=4, M=2)
    H = 4
    h = random_states(rng, p, 2)
    J = fastfp.jacobian(p, h, None, backend=backend)
    off = ~np.eye(H, dtype=bool)
    assert np.all(J[:, :H, H:][:, off] == 0)
    assert np.all(J[:, H:, H:][:, off] == 0)
    f_gate = np.diagonal(J[:, H:, H:], axis1=1, axis2=2)
    assert np.all((f_gate > 0) & (f_gate < 1))


# ----------------------------------------------------------------------------- hypothesis
@settings(max_examples=25, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    H=st.integers(1, 7),
    M=st.integers(1, 5),
    B=st.one_of(st.none(), st.integers(1, 9)),
    dtype=st.sampled_from(DTYPES),
    shared=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_shapes_and_numba_matches_reference(variant, H, M, B, dtype, shared, seed):
    cell, nonlinearity = variant
    rng = np.random.default_rng(seed)
    p = RNNParams.random(cell, H, M, scale=2.0 / np.sqrt(H), nonlinearity=nonlinearity, seed=rng, dtype=dtype)
    assert p.hidden_size == H and p.input_size == M
    assert p.state_size == (2 * H if cell == "lstm" else H)
    h = random_states(rng, p, B, dtype)
    x = random_inputs(rng, p, None if (shared or B is None) else B, dtype)
    vec = random_states(rng, p, B, dtype)
    for op in OPS:
        got = call(op, p, h, x, vec, backend="cpu")
        ref = call(op, p, h, x, vec, backend="numpy")
        assert got.shape == ref.shape == expected_shape(op, p, h.shape), op
        assert got.dtype == ref.dtype == np.dtype(dtype), op
        assert_allclose(got, ref, err_msg=op, **TOL[np.dtype(dtype)])
