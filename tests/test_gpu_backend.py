"""The GPU backend, checked without a GPU and (marker ``gpu``) on one.

Without a GPU: (1) the composition of ``_cells_gpu.DeviceCells`` runs with NumPy and the NumPy
twins of the CUDA kernels (``HostOps``) and is compared with the reference cells; (2) the CUDA
kernels' per-element math (``kernels/cells.cuh``) is compiled for the host with g++ and compared
with the NumPy reference; (3) ``kernels/cells.cu`` is compiled by ``nvcc -cubin -arch=sm_90``.
With a GPU (``pytest -m gpu``): the real CuPy kernels against the reference.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

import fastfp
from fastfp import _cells_ref as ref
from fastfp._cells_gpu import DeviceCells, HostOps, kernel_source_dir
from fastfp._linearize import linearize
from fastfp.backends import gpu_available

CELLS = ["vanilla", "gru", "gru_reset_before", "ugrnn", "lstm"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _case(cell, dtype, shared, nonlinearity="tanh", seed=0, B=7, H=11, M=4):
    p = fastfp.RNNParams.random(cell, hidden_size=H, input_size=M, seed=seed, nonlinearity=nonlinearity,
                                scale=2.0 / np.sqrt(H))
    rng = np.random.default_rng(seed + 1)
    h = (rng.standard_normal((B, p.state_size)) * 0.8).astype(dtype)
    x = rng.standard_normal((1 if shared else B, M)).astype(dtype)
    return p, h, x, p.arrays(dtype)


# ------------------------------------------------------------------ composition with HostOps
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shared", [True, False])
def test_device_composition_matches_reference(cell, dtype, shared):
    p, h, x, w = _case(cell, dtype, shared)
    dev = DeviceCells(np, HostOps())
    c, a = p.cell_code, p.nonlinearity_code
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    rng = np.random.default_rng(9)
    v = rng.standard_normal(h.shape).astype(dtype)
    np.testing.assert_allclose(dev.step(c, a, h, x, *w), ref.step_ref(c, a, h, x, *w), **tol)
    np.testing.assert_allclose(dev.jvp(c, a, h, x, *w, v), ref.jvp_ref(c, a, h, x, *w, v), **tol)
    np.testing.assert_allclose(dev.vjp(c, a, h, x, *w, v), ref.vjp_ref(c, a, h, x, *w, v), **tol)
    r, g = dev.residual_grad(c, a, h, x, *w)
    r0, g0 = ref.residual_grad_ref(c, a, h, x, *w)
    np.testing.assert_allclose(r, r0, **tol)
    np.testing.assert_allclose(g, g0, **tol)
    np.testing.assert_allclose(dev.jacobian(c, a, h, x, *w), ref.jacobian_ref(c, a, h, x, *w), **tol)
    # The fused products on a subset (the active set of a solver).
    lin = dev.linearize(c, a, h, x, *w).take(np.array([5, 0, 2]))
    np.testing.assert_allclose(lin.jvp(v[[5, 0, 2]]), ref.jvp_ref(c, a, h[[5, 0, 2]], x if shared else x[[5, 0, 2]], *w, v[[5, 0, 2]]), **tol)


def test_device_composition_relu():
    p, h, x, w = _case("vanilla", np.float64, True, nonlinearity="relu")
    dev = DeviceCells(np, HostOps())
    c, a = p.cell_code, p.nonlinearity_code
    np.testing.assert_allclose(dev.step(c, a, h, x, *w), ref.step_ref(c, a, h, x, *w), atol=1e-15)
    v = np.ones_like(h)
    np.testing.assert_allclose(dev.jvp(c, a, h, x, *w, v), ref.jvp_ref(c, a, h, x, *w, v), atol=1e-14)


def test_newton_krylov_with_device_composition_matches_cpu_path():
    from fastfp._newton_krylov import newton_krylov
    from fastfp.solvers import state_bounds

    p, _, _, w = _case("gru", np.float64, True, seed=3, H=16)
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (20, 16))
    X = np.zeros((1, 4))
    dev = DeviceCells(np, HostOps())
    opts = dict(atol=1e-10, rtol=0.0, gtol=1e-12, maxiter=50, max_norm=1e3, max_step=2.0, tol_q=None, stuck_rtol=1e-6)
    h, status, nit, nmv = newton_krylov(lambda hh, Xr: dev.step(p.cell_code, 0, hh, Xr, *w), w, p.cell_code, 0,
                                        h0, X, state_bounds(p), opts, linearize_fn=dev.linearize)
    cpu = fastfp.find_fixed_points(p, h0, method="newton", jacobian="matrix_free")
    np.testing.assert_array_equal(status, cpu.status)
    np.testing.assert_allclose(h, cpu.x, atol=1e-9)
    r = ref.step_ref(p.cell_code, 0, h[status == 0], X, *w) - h[status == 0]
    assert np.abs(r).max() <= 1e-10


# ------------------------------------------------------------------ per-element math on the host
def _host_build(tmp_path_factory, source):
    """tests/cuda_host/<source>.cpp compiled with g++ against kernels/ (FASTFP_HOST: no CUDA)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    exe = tmp_path_factory.mktemp("cuda_host") / source
    subprocess.run([gxx, "-O1", "-std=c++17", "-DFASTFP_HOST", f"-I{kernel_source_dir()}",
                    os.path.join(ROOT, "tests", "cuda_host", source + ".cpp"), "-o", str(exe)], check=True)
    return str(exe)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return _host_build(tmp_path_factory, "harness")


def _run(harness, cell, prec, relu, inputs):
    n = inputs[0].size
    data = np.concatenate([np.asarray(a, np.float64).ravel() for a in inputs]).tobytes()
    out = subprocess.run([harness, cell, prec, str(relu), str(n)], input=data, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.float64).reshape(-1, n)


@pytest.mark.parametrize("cell", ["vanilla", "gru", "ugrnn", "lstm"])
@pytest.mark.parametrize("prec", ["f64", "f32"])
def test_cuda_element_math_on_host_matches_reference(harness, cell, prec):
    rng = np.random.default_rng(1)
    B, H = 5, 9
    p = fastfp.RNNParams.random(cell, hidden_size=H, input_size=3, seed=2, scale=3.0 / np.sqrt(H))
    w = p.arrays(np.float64)
    h = rng.standard_normal((B, p.state_size))
    h[0] *= 40.0  # saturating pre-activations: the sigmoid must not overflow for either sign
    x = rng.standard_normal((B, 3))
    x[1] *= 60.0
    c, a = p.cell_code, p.nonlinearity_code
    w_ih, w_hh, b_ih, b_hh = w
    ax = x @ w_ih.T + b_ih
    hid = h[:, :H] if cell == "lstm" else h
    hh = hid @ w_hh.T + b_hh
    lin = linearize(c, a, h, x, *w)
    out = ref.step_ref(c, a, h, x, *w)
    if cell == "vanilla":
        got = _run(harness, cell, prec, 0, [ax + hh])
        want = [out, lin.coef["slope"]]
    elif cell == "gru":
        got = _run(harness, cell, prec, 0, [ax[:, :H], ax[:, H:2 * H], ax[:, 2 * H:], hh[:, :H], hh[:, H:2 * H], hh[:, 2 * H:], h])
        C = lin.coef["C"]
        want = [out, C[:, :H], C[:, H:2 * H], C[:, 2 * H:], lin.coef["D"]]
    elif cell == "ugrnn":
        got = _run(harness, cell, prec, 0, [ax[:, :H], ax[:, H:], hh[:, :H], hh[:, H:], h])
        C = lin.coef["C"]
        want = [out, C[:, :H], C[:, H:], lin.coef["D"]]
    else:
        pre = ax + hh
        got = _run(harness, cell, prec, 0, [pre[:, :H], pre[:, H:2 * H], pre[:, 2 * H:3 * H], pre[:, 3 * H:], h[:, H:]])
        want = [out[:, :H], out[:, H:]] + [lin.coef[k] for k in ("ci", "cf", "cg", "f", "co", "e")]
    assert got.shape[0] == len(want)
    atol = 1e-14 if prec == "f64" else 2e-6
    for g, wv in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(wv).ravel(), rtol=1e-12 if prec == "f64" else 1e-5, atol=atol)


def test_cuda_relu_element_math_on_host(harness):
    pre = np.array([-2.0, -0.0, 0.0, 1e-300, 3.5, np.nan, -np.inf, np.inf])
    got = _run(harness, "vanilla", "f64", 1, [pre])
    np.testing.assert_array_equal(got[0], np.maximum(pre, 0.0))  # NaN stays NaN, as NumPy keeps it
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got[1], (pre > 0).astype(float))


# ------------------------------------------------------------------ the whole kernels on the host
@pytest.fixture(scope="module")
def kernel_harness(tmp_path_factory):
    return _host_build(tmp_path_factory, "kernel_harness")


def _run_kernel(exe, name, prec, B, H, rows, extra, inputs, sizes):
    data = np.concatenate([np.asarray(a, np.float64).ravel() for a in inputs]).tobytes()
    out = subprocess.run([exe, name, prec, str(B), str(H), str(rows), str(extra)], input=data,
                         capture_output=True, check=True).stdout
    flat = np.frombuffer(out, dtype=np.float64)
    assert flat.size == sum(sizes)
    return np.split(flat, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize("prec", ["f64", "f32"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kernel", ["vanilla_forward", "gru_forward", "ugrnn_forward", "lstm_forward", "gated_jvp"])
def test_cuda_kernels_executed_on_the_host_match_their_numpy_twins(kernel_harness, kernel, shared, prec):
    # The CUDA kernels themselves (thread index -> element, gate strides, the shared-input row, the
    # LSTM coefficient layout), run as loops over blocks and threads, against HostOps.
    rng = np.random.default_rng(7)
    B, H = 5, 300  # more than one 256-thread block, and a partial last block
    rows = 1 if shared else B
    ops = HostOps()
    tol = dict(rtol=1e-13, atol=1e-14) if prec == "f64" else dict(rtol=2e-5, atol=2e-6)
    if kernel == "vanilla_forward":
        ax, hh = rng.standard_normal((rows, H)), rng.standard_normal((B, H))
        got = _run_kernel(kernel_harness, kernel, prec, B, H, rows, 0, [ax, hh], [B * H, B * H])
        out, slope = np.empty((B, H)), np.empty((B, H))
        ops.vanilla_forward(ax, hh, 0, out, slope)
        want = [out, slope]
    elif kernel in ("gru_forward", "ugrnn_forward"):
        G = 3 if kernel == "gru_forward" else 2
        ax, hh, h = rng.standard_normal((rows, G * H)) * 3, rng.standard_normal((B, G * H)), rng.standard_normal((B, H))
        got = _run_kernel(kernel_harness, kernel, prec, B, H, rows, 0, [ax, hh, h], [B * H, B * G * H, B * H])
        out, C, D = np.empty((B, H)), np.empty((B, G * H)), np.empty((B, H))
        (ops.gru_forward if G == 3 else ops.ugrnn_forward)(ax, hh, h, out, C, D)
        want = [out, C, D]
    elif kernel == "lstm_forward":
        ax, hh, hc = rng.standard_normal((rows, 4 * H)) * 3, rng.standard_normal((B, 4 * H)), rng.standard_normal((B, 2 * H))
        got = _run_kernel(kernel_harness, kernel, prec, B, H, rows, 0, [ax, hh, hc], [2 * B * H, 6 * B * H])
        out, coef = np.empty((B, 2 * H)), np.empty((6, B, H))
        ops.lstm_forward(ax, hh, hc, out, coef)
        want = [out, coef]
    else:
        G = 3
        C, D, u, v = (rng.standard_normal((B, G * H)), rng.standard_normal((B, H)),
                      rng.standard_normal((B, G * H)), rng.standard_normal((B, H)))
        got = _run_kernel(kernel_harness, kernel, prec, B, H, 1, G, [C, D, u, v], [B * H])
        out = np.empty((B, H))
        ops.gated_jvp(C, D, u, v, G, out)
        want = [out]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.ravel(), **tol)


# ------------------------------------------------------------------ the CUDA sources compile
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_cuda_sources_compile_with_nvcc(tmp_path, arch):
    # What CuPy compiles: the source with the header pasted in (kernel_source(), no -I), and the
    # -ftz=true CuPy always adds; an older and a current architecture.
    from fastfp._cells_gpu import kernel_source

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / "cells_inlined.cu"
    src.write_text(kernel_source())
    assert '#include "' not in src.read_text()
    out = tmp_path / "cells.cubin"
    proc = subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-std=c++14", "-ftz=true", str(src), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    blob = out.read_bytes()
    for name in ("vanilla_forward", "gru_forward", "ugrnn_forward", "lstm_forward", "gated_jvp"):
        for suffix in ("f32", "f64"):
            assert f"{name}_{suffix}".encode() in blob  # extern "C": unmangled kernel names


def test_kernel_sources_are_found():
    d = kernel_source_dir()
    assert os.path.isfile(os.path.join(d, "cells.cu")) and os.path.isfile(os.path.join(d, "cells.cuh"))


def test_gpu_backend_without_device_is_a_clear_error(monkeypatch):
    import sys
    import types

    import fastfp.backends as backends

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends, "_cache", {})
    p = fastfp.RNNParams.random("gru", hidden_size=4, input_size=2, seed=0)
    with pytest.raises(fastfp.BackendUnavailableError, match="CUDA device"):
        fastfp.step(p, np.zeros((1, 4)), backend="gpu")


# ------------------------------------------------------------------ on a GPU
gpu = pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and cupy")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_kernels_match_reference(cell, dtype):
    p, h, x, w = _case(cell, dtype, False)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    v = np.random.default_rng(2).standard_normal(h.shape).astype(dtype)
    np.testing.assert_allclose(fastfp.step(p.astype(dtype), h, x, backend="gpu"), ref.step_ref(p.cell_code, p.nonlinearity_code, h, x, *w), **tol)
    np.testing.assert_allclose(fastfp.jvp(p.astype(dtype), h, x, v, backend="gpu"), ref.jvp_ref(p.cell_code, p.nonlinearity_code, h, x, *w, v), **tol)
    np.testing.assert_allclose(fastfp.vjp(p.astype(dtype), h, x, v, backend="gpu"), ref.vjp_ref(p.cell_code, p.nonlinearity_code, h, x, *w, v), **tol)


@pytest.mark.gpu
@gpu
def test_gpu_newton_krylov_and_eigs():
    p = fastfp.RNNParams.random("gru", hidden_size=128, input_size=3, scale=2.0 / np.sqrt(128), seed=1)
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (64, 128))
    fp = fastfp.find_fixed_points(p, h0, backend="gpu")
    assert fp.metadata["jacobian"] == "matrix_free" and fp.success.all()
    r = fastfp.step(p, fp.x, backend="numpy") - fp.x
    assert np.abs(r).max() <= 1e-10
    dev = fastfp.spectra.top_eigs(p, fp.x[:4], k=4, backend="gpu")
    dense = np.linalg.eigvals(fastfp.jacobian(p, fp.x[:4], backend="numpy"))  # independent oracle
    np.testing.assert_allclose(-np.sort(-np.abs(dev.eigvals), axis=1), -np.sort(-np.abs(dense), axis=1)[:, :4], atol=1e-9)
    assert np.abs(dev.eigvals[:, :, None] - dense[:, None, :]).min(axis=2).max() < 1e-9


# ------------------------------------------------------------------ device arrays as inputs
class _FakeCudaArray:
    """Stands for a torch CUDA tensor: DLPack device type 2 (kDLCUDA)."""

    def __init__(self, a):
        self.a = a

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)


def test_cuda_inputs_need_cupy(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    p = fastfp.RNNParams.random("gru", hidden_size=4, input_size=2, seed=0)
    with pytest.raises(fastfp.MissingDependencyError, match=r"'h'.*CUDA array.*fastfp-rnn\[gpu\]"):
        fastfp.step(p, _FakeCudaArray(np.zeros((1, 4))))


def test_cuda_inputs_are_read_through_dlpack(monkeypatch):
    import sys
    import types

    # A stand-in for CuPy whose from_dlpack / asnumpy go through NumPy: checks the plumbing (the
    # DLPack device test, from_dlpack, the copy to the host) without a GPU.
    fake = types.ModuleType("cupy")
    fake.from_dlpack = np.from_dlpack
    fake.asnumpy = np.asarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    p = fastfp.RNNParams.random("gru", hidden_size=4, input_size=2, seed=0)
    h = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(fastfp.step(p, _FakeCudaArray(h)), fastfp.step(p, h))
    fp = fastfp.find_fixed_points(p, _FakeCudaArray(h))
    assert fp.success.all()


def test_torch_cpu_tensors_and_jax_arrays_are_accepted():
    torch = pytest.importorskip("torch")
    p = fastfp.RNNParams.random("gru", hidden_size=4, input_size=2, seed=0)
    h = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(fastfp.step(p, torch.from_numpy(h)), fastfp.step(p, h))
    jnp = pytest.importorskip("jax.numpy")
    np.testing.assert_allclose(fastfp.step(p, jnp.asarray(h.astype(np.float32))), fastfp.step(p, h.astype(np.float32)))
