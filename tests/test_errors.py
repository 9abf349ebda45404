"""Error paths: every bad input raises the matching fastfp exception, whose message names the argument."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

import fastfp
from fastfp import (
    ArgumentTypeError,
    DTypeError,
    FastFPError,
    InvalidOptionError,
    MissingDependencyError,
    NonFiniteError,
    RNNParams,
    ShapeError,
)
from support import OPS, call, make_params

BAD_DTYPES = [np.int64, np.int32, np.bool_, object, np.complex128]
BAD_IDS = ["int64", "int32", "bool", "object", "complex"]


@pytest.fixture
def p():
    """gru with H = N = 4, M = 3."""
    return make_params("gru", H=4, M=3)


@pytest.fixture
def lstm():
    """lstm with H = 3, N = 6, M = 2."""
    return make_params("lstm", H=3, M=2)


def test_exception_hierarchy():
    for cls in (ShapeError, DTypeError, ArgumentTypeError, NonFiniteError, InvalidOptionError,
                MissingDependencyError, fastfp.BackendUnavailableError):
        assert issubclass(cls, FastFPError)
    assert issubclass(ShapeError, ValueError) and issubclass(NonFiniteError, ValueError)
    assert issubclass(DTypeError, TypeError) and issubclass(ArgumentTypeError, TypeError)
    assert issubclass(InvalidOptionError, ValueError)
    assert issubclass(MissingDependencyError, ImportError)


# ----------------------------------------------------------------------------- states and inputs
@pytest.mark.parametrize("op", OPS)
def test_wrong_state_size(p, op):
    with pytest.raises(ShapeError, match=r"'h'.*\(2, 5\).*N = H = 4"):
        call(op, p, np.zeros((2, 5)), None, np.zeros((2, 5)))
    with pytest.raises(ShapeError, match=r"'h'.*\(3,\)"):
        call(op, p, np.zeros(3), None, np.zeros(3))


def test_wrong_state_size_lstm_mentions_2h(lstm):
    with pytest.raises(ShapeError, match=r"'h'.*N = 2H = 6"):
        fastfp.step(lstm, np.zeros((2, 3)))


@pytest.mark.parametrize("op", OPS)
def test_3d_state(p, op):
    with pytest.raises(ShapeError, match=r"'h'.*\(2, 2, 4\)"):
        call(op, p, np.zeros((2, 2, 4)), None, np.zeros((2, 2, 4)))


def test_0d_state_reports_its_shape(p):
    with pytest.raises(ShapeError, match=r"'h': got shape \(\)"):
        fastfp.step(p, np.float64(0.5))


@pytest.mark.parametrize("op", OPS)
def test_wrong_input_size(p, op):
    h = np.zeros((2, 4))
    with pytest.raises(ShapeError, match=r"'x'.*\(2,\).*M = 3"):
        call(op, p, h, np.zeros(2), h)
    with pytest.raises(ShapeError, match=r"'x'.*\(2, 5\)"):
        call(op, p, h, np.zeros((2, 5)), h)


@pytest.mark.parametrize("op", OPS)
def test_per_state_input_with_wrong_batch(p, op):
    h = np.zeros((2, 4))
    with pytest.raises(ShapeError, match=r"'x'.*\(3, 3\).*\(2, 3\)"):
        call(op, p, h, np.zeros((3, 3)), h)
    with pytest.raises(ShapeError, match=r"'x'.*\(2, 1, 3\)"):
        call(op, p, h, np.zeros((2, 1, 3)), h)
    with pytest.raises(ShapeError, match=r"'x'.*\(1, 3\)"):  # one state takes a shared (M,) input
        call(op, p, np.zeros(4), np.zeros((1, 3)), np.zeros(4))


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_IDS)
@pytest.mark.parametrize("op", OPS)
def test_bad_dtype_for_h_and_x(p, op, dtype):
    h = np.zeros((2, 4))
    with pytest.raises(DTypeError, match=r"'h'"):
        call(op, p, np.zeros((2, 4), dtype=dtype), None, h)
    with pytest.raises(DTypeError, match=r"'x'"):
        call(op, p, h, np.zeros(3, dtype=dtype), h)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_IDS)
def test_bad_dtype_for_v_and_w(p, dtype):
    h = np.zeros((2, 4))
    with pytest.raises(DTypeError, match=r"'v'"):
        fastfp.jvp(p, h, None, np.zeros((2, 4), dtype=dtype))
    with pytest.raises(DTypeError, match=r"'w'"):
        fastfp.vjp(p, h, None, np.zeros((2, 4), dtype=dtype))


def test_unconvertible_state(p):
    with pytest.raises(DTypeError, match=r"'h'"):
        fastfp.step(p, [[0.0, 1.0], [0.0]])
    with pytest.raises(DTypeError, match=r"'h'"):
        fastfp.step(p, "abcd")


def test_wrong_tangent_shapes(p):
    h = np.zeros((2, 4))
    with pytest.raises(ShapeError, match=r"'v'.*\(3, 4\).*\(2, 4\)"):
        fastfp.jvp(p, h, None, np.zeros((3, 4)))
    with pytest.raises(ShapeError, match=r"'w'.*\(4,\).*\(2, 4\)"):
        fastfp.vjp(p, h, None, np.zeros(4))
    with pytest.raises(ShapeError, match=r"'v'.*\(1, 4\).*\(4,\)"):
        fastfp.jvp(p, np.zeros(4), None, np.zeros((1, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("op", OPS)
def test_non_finite_states_and_inputs(p, op, bad):
    h = np.zeros((2, 4))
    hb = h.copy()
    hb[1, 2] = bad
    with pytest.raises(NonFiniteError, match=r"'h'.*\(1, 2\)"):
        call(op, p, hb, None, h)
    xb = np.zeros(3)
    xb[1] = bad
    with pytest.raises(NonFiniteError, match=r"'x'.*\(0, 1\)|'x'.*\(1,\)"):
        call(op, p, h, xb, h)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_v_and_w(p, bad):
    h = np.zeros((2, 4))
    vb = h.copy()
    vb[0, 3] = bad
    with pytest.raises(NonFiniteError, match=r"'v'"):
        fastfp.jvp(p, h, None, vb)
    with pytest.raises(NonFiniteError, match=r"'w'"):
        fastfp.vjp(p, h, None, vb)


# ----------------------------------------------------------------------------- params
def test_params_not_rnnparams(p):
    h = np.zeros((2, 4))
    for op in OPS:
        with pytest.raises(ArgumentTypeError, match=r"'params'.*dict"):
            call(op, {"cell": "gru"}, h, None, h)
    with pytest.raises(ArgumentTypeError, match=r"'params'.*str"):
        fastfp.jacobian("gru", h)
    with pytest.raises(ArgumentTypeError, match=r"'params'.*NoneType"):
        fastfp.rollout(None, None, np.zeros((5, 3)))


@pytest.mark.parametrize("name", ["w_ih", "w_hh", "b_ih", "b_hh"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_IDS)
def test_bad_weight_dtype(name, dtype):
    arrays = dict(w_ih=np.zeros((12, 3)), w_hh=np.zeros((12, 4)), b_ih=np.zeros(12), b_hh=np.zeros(12))
    arrays[name] = arrays[name].astype(dtype)
    with pytest.raises(DTypeError, match=rf"'{name}'.*float"):
        RNNParams("gru", **arrays)


@pytest.mark.parametrize("name", ["w_ih", "w_hh", "b_ih", "b_hh"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights(name, bad):
    arrays = dict(w_ih=np.zeros((12, 3)), w_hh=np.zeros((12, 4)), b_ih=np.zeros(12), b_hh=np.zeros(12))
    arrays[name][(1,) * arrays[name].ndim] = bad
    with pytest.raises(NonFiniteError, match=rf"'{name}'"):
        RNNParams("gru", **arrays)


def test_ragged_weights():
    with pytest.raises(DTypeError, match=r"'w_ih'"):
        RNNParams("vanilla", [[1.0], [1.0, 2.0]], np.zeros((2, 2)))


@pytest.mark.parametrize("cell", ["rnn", "GRU", "", None, 3])
def test_unknown_cell(cell):
    with pytest.raises(InvalidOptionError, match=r"'cell'.*'vanilla'.*'lstm'"):
        RNNParams(cell, np.zeros((4, 3)), np.zeros((4, 4)))


def test_unknown_cell_in_random():
    with pytest.raises(InvalidOptionError, match=r"'cell'"):
        RNNParams.random("rnn", 4, 3)
    with pytest.raises(InvalidOptionError, match=r"'cell'"):
        RNNParams.random(["gru"], 4, 3)  # unhashable: still a fastfp error, not a bare TypeError


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before", "ugrnn", "lstm"])
def test_relu_only_for_vanilla(cell):
    with pytest.raises(InvalidOptionError, match=r"'nonlinearity'.*'relu'"):
        RNNParams.random(cell, 4, 3, nonlinearity="relu")


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "ReLU", None, ["relu"]])
def test_unknown_nonlinearity(nonlinearity):
    with pytest.raises(InvalidOptionError, match=r"'nonlinearity'"):
        RNNParams("vanilla", np.zeros((4, 3)), np.zeros((4, 4)), nonlinearity=nonlinearity)


def test_wrong_weight_shapes():
    with pytest.raises(ShapeError, match=r"'w_hh'.*\(12, 5\)"):
        RNNParams("gru", np.zeros((12, 3)), np.zeros((12, 5)))
    with pytest.raises(ShapeError, match=r"'w_hh'.*\(8, 4\)"):  # 2 blocks on a 3-block cell
        RNNParams("gru", np.zeros((8, 3)), np.zeros((8, 4)))
    with pytest.raises(ShapeError, match=r"'w_hh'.*2-D"):
        RNNParams("gru", np.zeros((12, 3)), np.zeros(12))
    with pytest.raises(ShapeError, match=r"'w_hh'"):
        RNNParams("gru", np.zeros((0, 3)), np.zeros((0, 0)))
    with pytest.raises(ShapeError, match=r"'w_ih'.*\(11, 3\).*\(12, M\)"):
        RNNParams("gru", np.zeros((11, 3)), np.zeros((12, 4)))
    with pytest.raises(ShapeError, match=r"'w_ih'.*2-D"):
        RNNParams("gru", np.zeros((12, 3, 1)), np.zeros((12, 4)))
    with pytest.raises(ShapeError, match=r"'b_ih'.*\(4,\).*\(12,\)"):
        RNNParams("gru", np.zeros((12, 3)), np.zeros((12, 4)), np.zeros(4))
    with pytest.raises(ShapeError, match=r"'b_hh'.*1-D"):
        RNNParams("gru", np.zeros((12, 3)), np.zeros((12, 4)), None, np.zeros((1, 12)))
    with pytest.raises(ShapeError, match=r"'w_hh'.*\(16, 3\)"):  # lstm: 4 blocks of H x H
        RNNParams("lstm", np.zeros((16, 3)), np.zeros((16, 3)))


@pytest.mark.parametrize("name,value", [("hidden_size", 0), ("hidden_size", True), ("input_size", 3.0),
                                        ("input_size", -1)])
def test_random_bad_sizes(name, value):
    sizes = dict(hidden_size=4, input_size=3)
    sizes[name] = value
    with pytest.raises(InvalidOptionError, match=rf"'{name}'"):
        RNNParams.random("gru", **sizes)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, np.bool_])
def test_astype_bad_dtype(p, dtype):
    with pytest.raises(DTypeError, match=r"'dtype'"):
        p.astype(dtype)


# ----------------------------------------------------------------------------- backends
@pytest.mark.parametrize("backend", ["cuda", "CPU", "", None, 0])
def test_unknown_backend(p, backend):
    h = np.zeros(4)
    for op in OPS:
        with pytest.raises(InvalidOptionError, match=r"'backend'.*'cpu'"):
            call(op, p, h, None, h, backend=backend)
    with pytest.raises(InvalidOptionError, match=r"'backend'"):
        fastfp.rollout(p, None, np.zeros((2, 3)), backend=backend)


def _cupy_missing(monkeypatch):
    """Make ``import cupy`` fail even where cupy is installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy' (hidden by the test)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_gpu_backend_without_cupy(p, monkeypatch):
    _cupy_missing(monkeypatch)
    h = np.zeros(4)
    for op in OPS:
        with pytest.raises(MissingDependencyError, match=r"'backend'.*fastfp-rnn\[gpu\]"):
            call(op, p, h, None, h, backend="gpu")
    with pytest.raises(MissingDependencyError, match=r"fastfp-rnn\[gpu\]"):
        fastfp.rollout(p, None, np.zeros((2, 3)), backend="gpu")
    with pytest.raises(ImportError):  # usable as the built-in class too
        fastfp.step(p, h, backend="gpu")


# ----------------------------------------------------------------------------- rollout
T = 5


def test_rollout_xs_errors(p):
    with pytest.raises(ShapeError, match=r"'xs'.*\(2, 5, 2\).*M = 3"):
        fastfp.rollout(p, None, np.zeros((2, T, 2)))
    with pytest.raises(ShapeError, match=r"'xs'.*\(3,\)"):
        fastfp.rollout(p, None, np.zeros(3))
    with pytest.raises(ShapeError, match=r"'xs'.*\(1, 2, 5, 3\)"):
        fastfp.rollout(p, None, np.zeros((1, 2, T, 3)))
    with pytest.raises(DTypeError, match=r"'xs'"):
        fastfp.rollout(p, None, np.zeros((2, T, 3), dtype=np.int64))
    bad = np.zeros((2, T, 3))
    bad[1, 2, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"'xs'.*\(1, 2, 0\)"):
        fastfp.rollout(p, None, bad)


def test_rollout_h0_errors(p):
    xs = np.zeros((2, T, 3))
    with pytest.raises(ShapeError, match=r"'h0'.*\(2, 5\)"):
        fastfp.rollout(p, np.zeros((2, 5)), xs)
    with pytest.raises(ShapeError, match=r"'h0'.*\(3, 4\).*\(2, 4\)"):
        fastfp.rollout(p, np.zeros((3, 4)), xs)
    with pytest.raises(ShapeError, match=r"'h0'.*\(2, 1, 4\)"):
        fastfp.rollout(p, np.zeros((2, 1, 4)), xs)
    with pytest.raises(DTypeError, match=r"'h0'"):
        fastfp.rollout(p, np.zeros(4, dtype=np.int64), xs)
    with pytest.raises(NonFiniteError, match=r"'h0'"):
        fastfp.rollout(p, np.full(4, np.inf), xs)


def test_rollout_batched_h0_for_a_single_sequence(p):
    """A single sequence (T, M) takes a single state (N,); the message must say so, not list the
    rejected shape as an expected one."""
    with pytest.raises(ShapeError, match=r"'h0'") as info:
        fastfp.rollout(p, np.zeros((1, 4)), np.zeros((T, 3)))
    message = str(info.value)
    assert "got shape (1, 4)" in message
    assert "expected (1, 4)" not in message, message


@pytest.mark.parametrize("lengths", [[-1, 2], [6, 2], [0, T + 1]])
def test_rollout_lengths_out_of_range(p, lengths):
    with pytest.raises(InvalidOptionError, match=r"'lengths'.*T = 5"):
        fastfp.rollout(p, None, np.zeros((2, T, 3)), lengths=lengths)


@pytest.mark.parametrize("lengths", [[1, 2, 3], [[1, 2]], 3, [1.0, 2.0], [True, False]],
                         ids=["too-long", "2d", "scalar-for-batch", "float", "bool"])
def test_rollout_lengths_wrong_shape_or_type(p, lengths):
    with pytest.raises(ShapeError, match=r"'lengths'.*\(2,\)"):
        fastfp.rollout(p, None, np.zeros((2, T, 3)), lengths=lengths)


def test_rollout_lengths_and_mask_together(p):
    with pytest.raises(InvalidOptionError, match=r"'lengths'.*'mask'"):
        fastfp.rollout(p, None, np.zeros((2, T, 3)), lengths=[1, 2], mask=np.ones((2, T), bool))


@pytest.mark.parametrize("mask", [np.ones((2, T - 1), bool), np.ones((1, T), bool), np.ones((2, T, 1), bool),
                                  np.ones((2, T), np.int64), np.ones((2, T)), np.ones(T, bool)],
                         ids=["short", "batch-1", "3d", "int", "float", "1d-for-batch"])
def test_rollout_mask_wrong_shape_or_dtype(p, mask):
    # Current behaviour: a wrong dtype is reported as ShapeError ("expected bool of shape ...").
    with pytest.raises(ShapeError, match=r"'mask'.*bool.*\(2, 5\)"):
        fastfp.rollout(p, None, np.zeros((2, T, 3)), mask=mask)


def test_adam_points_outside_the_root_box_are_diverged_not_converged():
    # At a huge learning rate Adam throws the points to |h| ~ 5e6, where every gate is exactly 1.0
    # in floating point and F(h) == h: a residual of 0 without a root (a GRU's roots have |h| < 1).
    p = fastfp.RNNParams.random("gru", 16, 6, seed=0)
    h0 = np.random.default_rng(0).normal(size=(4, 16))
    fp = fastfp.find_fixed_points(p, h0, np.zeros(6), method="adam", adam_lr=1e6)
    assert (np.abs(fp.x).max(axis=1) > 1e6).all()
    F = fastfp.step(p, fp.x, np.zeros(6), backend="numpy")
    assert (np.abs(F - fp.x).max(axis=1) <= 1e-10).mean() >= 0.5  # they do look like roots
    # none of them is called a root: exact zeros out there are DIVERGED, the others beyond
    # max_norm too, or at the q tolerance (the study's acceptance, as for every method)
    assert not (fp.status == fastfp.Status.CONVERGED).any(), fp.status
    looks_like_root = np.abs(F - fp.x).max(axis=1) <= 1e-10
    assert (fp.status[looks_like_root] != fastfp.Status.CONVERGED).all()
    assert np.isin(fp.status, (fastfp.Status.DIVERGED, fastfp.Status.Q_TOLERANCE)).all(), fp.status


def test_adam_points_beyond_max_norm_are_diverged():
    p = fastfp.RNNParams("vanilla", np.zeros((2, 1)), 1.5 * np.eye(2))  # tanh(1.5 h): roots inside |h| < 1
    fp = fastfp.find_fixed_points(p, np.full((3, 2), 5.0), method="adam", max_norm=2.0, maxiter=5, adam_lr=1e-6)
    assert (np.abs(fp.x).max(axis=1) > 2.0).all()
    assert (fp.status == fastfp.Status.DIVERGED).all(), fp.status


def test_adam_roots_within_their_tolerance_of_the_box_stay_converged():
    # A root at a saturated tanh unit (h* = 1 to rounding) reached from above lies outside the
    # box [-1, 1] by less than the float32 tolerance: converged, not diverged.
    p = fastfp.RNNParams("vanilla", np.zeros((2, 1)), np.zeros((2, 2)), np.array([20.0, 0.3]), np.zeros(2))
    rng = np.random.default_rng(0)
    h0 = rng.uniform(-1, 1, (200, 2))
    h0[:, 0] = rng.uniform(0.9, 1.0, 200)
    fp = fastfp.find_fixed_points(p, h0, method="adam", dtype="float32", maxiter=2000)
    assert (np.abs(fp.x[:, 0]) > 1.0).any()  # the case in point: just outside the box
    assert (fp.status == fastfp.Status.CONVERGED).all(), np.bincount(fp.status)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_relu_root_beyond_max_norm_is_converged_on_every_backend(backend):
    # relu(0.9999 h + 1) has its root at h = 1e4, beyond max_norm = 1e3: a root all the same.
    p = fastfp.RNNParams("vanilla", np.zeros((2, 1)), np.diag([0.9999, 0.5]), np.array([1.0, 1.0]), np.zeros(2),
                         nonlinearity="relu")
    fp = fastfp.find_fixed_points(p, np.array([[1.0, 2.0], [500.0, 1.0]]), method="newton", backend=backend,
                                  restart_steps=0)
    np.testing.assert_allclose(fp.x, [[1e4, 2.0], [1e4, 2.0]], rtol=1e-9)
    assert (fp.status == fastfp.Status.CONVERGED).all()


@pytest.mark.parametrize("k", [-1, 0, 1.5, True, 4])
def test_decompose_k_is_checked(k):
    p = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    fp = fastfp.find_fixed_points(p, np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(fastfp.InvalidOptionError, match=r"argument 'k': got .*, expected None or an integer 1 <= k < N = 4"):
        fp.decompose(p, k=k)


def test_concatenate_names_a_part_that_is_no_fixed_points():
    p = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    fp = fastfp.find_fixed_points(p, np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(fastfp.ArgumentTypeError, match="argument 'parts': item 1 is a int"):
        fastfp.concatenate([fp, 3])


def test_save_params_names_metadata_json_cannot_hold(tmp_path):
    p = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    with pytest.raises(fastfp.ArgumentTypeError, match=r"metadata\['a'\]\['b'\]\[1\] is a set"):
        fastfp.save_params(tmp_path / "m.npz", fastfp.Model(p, metadata={"a": {"b": [1, {1, 2}]}}))
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(fastfp.ArgumentTypeError, match="argument 'path': got int"):
        fastfp.save_params(123, p)
    # NumPy numbers and arrays are stored as JSON numbers and lists
    fastfp.save_params(tmp_path / "m.npz", fastfp.Model(p, metadata={"k": np.array([1, 2]), "t": np.float32(0.5)}))
    assert fastfp.load(tmp_path / "m.npz").metadata == {"k": [1, 2], "t": 0.5}
