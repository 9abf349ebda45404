"""The GPU backend's Python end to end on a strict host stand-in for CuPy (tests/fake_cupy.py).

Every call goes through the public layer with ``backend='gpu'``, as on a GPU: the arrays live as
``fake_cupy.DeviceArray`` (which refuses host arrays in device arithmetic and implicit copies to
the host), the cells are the device composition over that namespace with the real kernel-launch
layer (``CudaOps``) over a fake ``RawModule`` that checks every launch against the kernel's C
signature and runs the kernel's NumPy twin. Each result is compared with the NumPy backend's; the CUDA kernels themselves and
their per-element math are tested in test_gpu_backend.py, and on real hardware by its GPU tests.
"""

import numpy as np
import pytest

import fastfp
from fake_cupy import DeviceArray, install

CELLS = [("vanilla", "tanh"), ("vanilla", "relu"), ("gru", "tanh"), ("gru_reset_before", "tanh"),
         ("ugrnn", "tanh"), ("lstm", "tanh")]


@pytest.fixture
def cp(monkeypatch):
    return install(monkeypatch)


@pytest.fixture
def counted(monkeypatch, cp):
    """Counts the device arrays made: a GPU call that made none did not run on the 'device'."""
    made = {"n": 0}
    init = DeviceArray.__init__

    def counting(self, a):
        made["n"] += 1
        init(self, a)

    monkeypatch.setattr(DeviceArray, "__init__", counting)
    return made


def _layer(cell, act, H=12, M=3, seed=0):
    kw = {"nonlinearity": act} if cell == "vanilla" else {}
    params = fastfp.RNNParams.random(cell, H, M, seed=seed, **kw)
    if act == "relu":  # a contracting relu layer, so that its roots are reachable
        params = fastfp.RNNParams("vanilla", params.w_ih, 0.5 * params.w_hh, params.b_ih, params.b_hh,
                                  nonlinearity="relu")
    rng = np.random.default_rng(seed)
    N = params.state_size
    return params, rng.uniform(-0.8, 0.8, (24, N)), rng.normal(0.0, 0.5, (24, M))


def test_the_fake_refuses_what_cupy_refuses(cp):
    d = cp.asarray(np.ones(3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError, match="mixed with device arrays"):
        d + np.ones(3)
    with pytest.raises(TypeError, match="mixed with device arrays"):
        np.ones(3) * d
    with pytest.raises(TypeError, match="not available in CuPy"):
        np.linalg.eigvals(cp.asarray(np.eye(2)))
    with pytest.raises(TypeError, match="takes host arrays only as d"):
        d[1:] = np.zeros(2)
    d[:] = np.ones(3)  # a whole-array copy in is what CuPy allows
    assert isinstance(d.sum(), DeviceArray) and float(d.sum()) == 3.0  # 0-d device arrays, as CuPy
    assert isinstance(d * np.float64(2.0) + 1.0, DeviceArray)  # scalars mix freely
    assert isinstance(cp.asnumpy(d), np.ndarray) and not isinstance(cp.asnumpy(d), DeviceArray)


@pytest.mark.parametrize("cell,act", CELLS)
def test_cell_operations_on_the_device_match_numpy(counted, cell, act):
    params, h, x = _layer(cell, act)
    v = np.random.default_rng(1).normal(size=h.shape)
    for name, args in (("step", (h, x)), ("jacobian", (h, x)), ("input_jacobian", (h, x)),
                       ("jvp", (h, x, v)), ("vjp", (h, x, v))):
        before = counted["n"]
        got = getattr(fastfp, name)(params, *args, backend="gpu")
        assert counted["n"] > before, name
        assert isinstance(got, np.ndarray) and not isinstance(got, DeviceArray)  # host in, host out
        np.testing.assert_allclose(got, getattr(fastfp, name)(params, *args, backend="numpy"), rtol=1e-12,
                                   atol=1e-13, err_msg=name)


def test_device_arrays_are_read_and_results_are_host_arrays(cp):
    # fastfp's results are NumPy arrays: device inputs are copied to the host once, on entry.
    params, h, x = _layer("gru", "tanh")
    out = fastfp.step(params, cp.asarray(h), cp.asarray(x), backend="gpu")
    assert type(out) is np.ndarray
    np.testing.assert_allclose(out, fastfp.step(params, h, x, backend="numpy"), rtol=1e-12, atol=1e-14)
    fp = fastfp.find_fixed_points(params, cp.asarray(h), cp.asarray(np.zeros(3)), jacobian="matrix_free",
                                  backend="gpu")
    assert type(fp.x) is np.ndarray and fp.success.any()
    xs = np.random.default_rng(2).normal(size=(5, 7, 3))
    traj = fastfp.rollout(params, None, xs, lengths=np.array([7, 3, 5, 1, 7]), backend="gpu")
    np.testing.assert_allclose(traj, fastfp.rollout(params, None, xs, lengths=np.array([7, 3, 5, 1, 7]),
                                                    backend="numpy"), rtol=1e-12, atol=1e-14)


def test_the_reset_before_gru_runs_one_forward_pass_per_device_step(cp, monkeypatch):
    # Its device pass is namespace code (a GEMM between two element-wise stages); the step and the
    # linearisation come from one pass, not two.
    import fastfp._cells_ref as ref
    import fastfp._linearize as lin

    params, h, x = _layer("gru_reset_before", "tanh")
    want = fastfp.step(params, h, x, backend="numpy")
    calls = {"n": 0}
    forward = ref._forward

    def counting(*args):
        calls["n"] += 1
        return forward(*args)

    for module in (ref, lin):  # the reference's step and the linearisation
        monkeypatch.setattr(module, "_forward", counting)
    np.testing.assert_allclose(fastfp.step(params, h, x, backend="gpu"), want, rtol=1e-12, atol=1e-14)
    assert calls["n"] == 1


@pytest.mark.parametrize("cell,act", CELLS)
def test_a_device_rollout_copies_per_chunk_not_per_step(cp, monkeypatch, cell, act):
    # 40 steps: the weights and state go up once and the inputs and states move in chunks; a
    # rollout that copied every step would make 40+ copies each way.
    import fastfp.dynamics as dynamics

    params, h, _ = _layer(cell, act)
    xs = np.random.default_rng(3).normal(0.0, 0.5, (5, 40, 3))
    lengths = np.array([40, 3, 25, 0, 39])
    copies = {"up": 0, "down": 0}
    up, down = cp.asarray, cp.asnumpy
    monkeypatch.setattr(cp, "asarray", lambda *a, **k: (copies.__setitem__("up", copies["up"] + 1), up(*a, **k))[1])
    monkeypatch.setattr(cp, "asnumpy", lambda *a, **k: (copies.__setitem__("down", copies["down"] + 1), down(*a, **k))[1])
    want = fastfp.rollout(params, h[:5], xs, lengths=lengths, backend="numpy")
    got = fastfp.rollout(params, h[:5], xs, lengths=lengths, backend="gpu")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert type(got) is np.ndarray
    assert copies["up"] <= 8 and copies["down"] == 1, copies
    # A device budget of a few steps: more chunks, the same states.
    per_step = 5 * ((params.state_size + 3) * 8 + 1)
    monkeypatch.setattr(dynamics, "_DEVICE_CHUNK_BYTES", 7 * per_step)
    copies.update(up=0, down=0)
    np.testing.assert_allclose(fastfp.rollout(params, h[:5], xs, lengths=lengths, backend="gpu"), want,
                               rtol=1e-12, atol=1e-14)
    assert copies["down"] == 6 and copies["up"] <= 5 + 2 * 6, copies


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("method,slow", [("newton", None), ("hybrid", None), ("lm", None), ("hybrid", 0.05)])
def test_matrix_free_solvers_on_the_device_match_numpy(counted, cell, act, method, slow):
    params, h0, _ = _layer(cell, act, seed=3)
    x = np.zeros(params.input_size)
    opts = dict(method=method, jacobian="matrix_free", slow_ratio=slow, slow_speed=1e-2 if slow else None)
    before = counted["n"]
    gpu = fastfp.find_fixed_points(params, h0, x, backend="gpu", **opts)
    assert counted["n"] > before
    host = fastfp.find_fixed_points(params, h0, x, backend="numpy", **opts)
    np.testing.assert_array_equal(gpu.status, host.status)
    np.testing.assert_array_equal(gpu.nit, host.nit)
    np.testing.assert_allclose(gpu.x, host.x, atol=1e-9)
    assert gpu.success.any()
    assert gpu.metadata["n_matvec"] == host.metadata["n_matvec"]
    for name in ("x", "residual", "status", "nit"):
        assert type(getattr(gpu, name)) is np.ndarray, name


@pytest.mark.parametrize("cell,act", [("gru", "tanh"), ("lstm", "tanh"), ("gru_reset_before", "tanh")])
def test_the_device_newton_krylov_linearises_where_its_line_search_ran(cp, monkeypatch, cell, act):
    # The line search's forward passes keep their linearisations: the solve linearises anew only
    # at its start, not at every iteration (a second forward pass per iteration before).
    from fastfp._cells_gpu import DeviceCells

    calls = {"linearize": 0}
    linearize = DeviceCells.linearize

    def counting(self, *args):
        calls["linearize"] += 1
        return linearize(self, *args)

    monkeypatch.setattr(DeviceCells, "linearize", counting)
    params, h0, _ = _layer(cell, act, seed=3)
    opts = dict(method="hybrid", jacobian="matrix_free")
    gpu = fastfp.find_fixed_points(params, h0, backend="gpu", **opts)
    host = fastfp.find_fixed_points(params, h0, backend="numpy", **opts)
    assert gpu.nit.max() >= 3 and calls["linearize"] == 1, (gpu.nit.max(), calls)
    np.testing.assert_array_equal(gpu.status, host.status)
    np.testing.assert_allclose(gpu.x, host.x, atol=1e-9)


def test_float32_solve_on_the_device_matches_numpy(cp):
    params, h0, _ = _layer("gru", "tanh", seed=4)
    opts = dict(method="hybrid", jacobian="matrix_free", dtype=np.float32, slow_ratio=0.05, slow_speed=1e-2)
    gpu = fastfp.find_fixed_points(params, h0, backend="gpu", **opts)
    host = fastfp.find_fixed_points(params, h0, backend="numpy", **opts)
    np.testing.assert_array_equal(gpu.status, host.status)
    np.testing.assert_allclose(gpu.x, host.x, atol=1e-5)
    assert gpu.x.dtype == np.float32


def test_device_arnoldi_copies_its_rayleigh_quotient_once_per_cycle(cp, monkeypatch):
    # One copy to the host per restart cycle (plus the Ritz vectors'), not two per Krylov column.
    params, h0, _ = _layer("gru", "tanh", H=40, seed=5)
    fp = fastfp.find_fixed_points(params, h0[:6])
    fp = fp[fp.success]
    copies = {"n": 0}
    get = DeviceArray.get

    def counting(self):
        copies["n"] += 1
        return get(self)

    monkeypatch.setattr(DeviceArray, "get", counting)
    eigs = fastfp.top_eigs(params, fp.x, fp.inputs, k=3, backend="gpu")
    monkeypatch.undo()
    want = fastfp.top_eigs(params, fp.x, fp.inputs, k=3, backend="numpy")
    np.testing.assert_allclose(eigs.eigvals, want.eigvals, atol=1e-9)
    columns = int(eigs.nit.max())  # Krylov columns the block went through
    assert columns > 30 and copies["n"] < columns / 4, (copies, columns)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_decompositions_on_the_device_match_numpy(counted, cell):
    params, h0, _ = _layer(cell, "tanh", seed=5)
    fp = fastfp.find_fixed_points(params, h0)
    fp = fp[fp.success]
    before = counted["n"]
    top = fp.decompose(params, k=4, backend="gpu")
    assert counted["n"] > before
    ref = fp.decompose(params, backend="numpy")
    np.testing.assert_allclose(top.eigvals, ref.eigvals[:, :4], atol=1e-9)
    full = fp.decompose(params, backend="gpu")
    np.testing.assert_allclose(full.eigvals, ref.eigvals, atol=1e-12)
    np.testing.assert_allclose(full.jacobian, ref.jacobian, atol=1e-13)
    eigs = fastfp.top_eigs(params, fp.x, fp.inputs, k=3, left=True, backend="gpu")
    np.testing.assert_allclose(eigs.eigvals, ref.eigvals[:, :3], atol=1e-9)
    # Left and right vectors of each pair are biorthogonal: l^T r = 1.
    assert eigs.converged.all()
    dots = np.einsum("pnk,pnk->pk", eigs.left, eigs.right)
    np.testing.assert_allclose(dots, 1.0, atol=1e-8)
    J = fastfp.jacobian(params, fp.x, fp.inputs)
    np.testing.assert_allclose(np.einsum("pnm,pmk->pnk", J, eigs.right), eigs.right * eigs.eigvals[:, None, :],
                               atol=1e-8)


def test_analyses_on_the_device_match_numpy(cp):
    from fastfp.train import predict  # numpy only: predict needs no torch

    model = fastfp.load("fastfp:data/gru64_cat3.npz")
    docs = fastfp.tasks.categorical(32, n_classes=3, length=20, seed=0)
    np.testing.assert_array_equal(predict(model, docs, backend="gpu"), predict(model, docs, backend="numpy"))
    from fastfp.train import accuracy

    assert accuracy(model, docs, backend="gpu") == accuracy(model, docs, backend="numpy")
    shuffled = fastfp.analysis.order_invariance(model, docs, seed=1, backend="gpu")
    reference = fastfp.analysis.order_invariance(model, docs, seed=1, backend="numpy")
    np.testing.assert_array_equal(shuffled.predicted_shuffled, reference.predicted_shuffled)
    h = np.random.default_rng(0).uniform(-0.5, 0.5, (4, model.params.state_size))
    gpu = fastfp.analysis.word_deflections(model, h, backend="gpu")
    host = fastfp.analysis.word_deflections(model, h, backend="numpy")
    np.testing.assert_allclose(gpu.exact, host.exact, atol=1e-6)
    np.testing.assert_allclose(gpu.linear, host.linear, atol=1e-6)


def test_cli_find_on_the_device_matches_numpy(cp, tmp_path):
    import json

    from click.testing import CliRunner

    from fastfp.cli import main

    out = {}
    for backend in ("gpu", "numpy"):
        path = tmp_path / f"{backend}.npz"
        r = CliRunner().invoke(main, ["-q", "find", "fastfp:data/gru64_cat3.npz", "-o", str(path), "--states", "16",
                                      "--docs", "8", "--input", "word:the", "--slow-ratio", "0.05", "--slow-speed",
                                      "1e-2", "--jacobian", "matrix_free", "--backend", backend])
        assert r.exit_code == 0, r.output
        out[backend] = (json.loads(r.stdout), fastfp.FixedPoints.load(path))
    assert out["gpu"][0]["status"] == out["numpy"][0]["status"]
    np.testing.assert_allclose(out["gpu"][1].x, out["numpy"][1].x, atol=1e-9)
    np.testing.assert_allclose(out["gpu"][1].eigvals, out["numpy"][1].eigvals, atol=1e-9)


def test_the_device_memory_budget_counts_the_pools_free_blocks(cp, monkeypatch):
    import types

    from fastfp.solvers import _default_memory_limit

    before = _default_memory_limit(None, "gpu")
    monkeypatch.setattr(cp, "get_default_memory_pool", lambda: types.SimpleNamespace(free_bytes=lambda: 2 << 30))
    assert _default_memory_limit(None, "gpu") == pytest.approx(before + 0.8 * (2 << 30))


def test_every_kernel_launch_is_checked_against_its_c_signature(cp):
    from fastfp._cells_gpu import CudaOps

    ops = CudaOps()
    B, H = 3, 4
    ax, hh = cp.asarray(np.ones((1, H))), cp.asarray(np.ones((B, H)))
    out, slope = cp.asarray(np.empty((B, H))), cp.asarray(np.empty((B, H)))
    ops.vanilla_forward(ax, hh, 0, out, slope)
    np.testing.assert_allclose(out.get(), np.tanh(2.0))
    with pytest.raises(TypeError, match="argument 2 has dtype float32"):
        ops.vanilla_forward(ax, cp.asarray(np.ones((B, H), np.float32)), 0, out, slope)
    with pytest.raises(ValueError, match="not C-contiguous"):
        ops.vanilla_forward(ax, cp.asarray(np.ones((H, B))).T, 0, out, slope)
    kernel = ops._module.get_function("vanilla_forward_f64")
    with pytest.raises(TypeError, match="relu is a int, the kernel takes int"):
        kernel((1,), (256,), (ax, np.int32(1), hh, 0, np.int32(B), np.int32(H), out, slope))
    with pytest.raises(ValueError, match="ax_rows 3, but ax has 1 rows"):
        kernel((1,), (256,), (ax, np.int32(3), hh, np.int32(0), np.int32(B), np.int32(H), out, slope))
    with pytest.raises(ValueError, match="threads for"):
        kernel((0,), (256,), (ax, np.int32(1), hh, np.int32(0), np.int32(B), np.int32(H), out, slope))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_dense_jacobians_on_the_device_fit_its_free_memory(cp, monkeypatch, cell):
    from fastfp._cells_gpu import _DENSE_TEMPORARIES

    params, h0, _ = _layer(cell, "tanh", seed=5)
    N, M = params.state_size, params.input_size
    x = np.random.default_rng(1).normal(size=(len(h0), M))
    # room for 3 rows of the dense Jacobian's temporaries: chunks of 3, the same answers
    free = 3 * _DENSE_TEMPORARIES * N * N * 8 / 0.8 + 1
    monkeypatch.setattr(cp.cuda.Device, "mem_info", property(lambda self: (free, 16 << 30)))
    calls = []
    import fastfp._cells_gpu as cells_gpu

    real = cells_gpu._call
    monkeypatch.setattr(cells_gpu, "_call", lambda op, args, n: (calls.append((op, len(args[2]))), real(op, args, n))[1])
    J = fastfp.jacobian(params, h0, x, backend="gpu")
    np.testing.assert_allclose(J, fastfp.jacobian(params, h0, x, backend="numpy"), atol=1e-13)
    assert max(n for op, n in calls if op == "jacobian") == 3 and len(calls) == -(-len(h0) // 3)
    Jx = fastfp.input_jacobian(params, h0, x, backend="gpu")
    np.testing.assert_allclose(Jx, fastfp.input_jacobian(params, h0, x, backend="numpy"), atol=1e-13)
    # not even one row: fastfp's error, not the device's
    monkeypatch.setattr(cp.cuda.Device, "mem_info", property(lambda self: (1000, 16 << 30)))
    with pytest.raises(fastfp.MemoryLimitError, match="dense jacobian of one state needs"):
        fastfp.jacobian(params, h0, x, backend="gpu")
