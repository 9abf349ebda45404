"""fastfp.io_torch: reading torch.save checkpoints without torch, safely.

Tests marked ``torch`` build modules and checkpoints with torch and compare against torch's own
forward; the rest (fixture files in tests/data written by tools/make_torch_fixtures.py, crafted
pickles, fuzzing) run without torch.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import fastfp
from fastfp.errors import FileFormatError, NonFiniteError
from fastfp.io_torch import load_torch_rnn, read_torch_state_dict

DATA = Path(__file__).parent / "data"
GRU_FIXTURE = DATA / "torch_gru_classifier.pt"
LSTM_FIXTURE = DATA / "torch_lstm2.pt"
EXPECTED = DATA / "torch_fixtures_expected.npz"
T = 50
TOL32 = dict(rtol=1e-6, atol=1e-6)


@contextlib.contextmanager
def torch_import_forbidden():
    """Any ``import torch`` (or torch.*) inside the block raises, proving the loader does not use torch."""
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise AssertionError(f"fastfp.io_torch imported {name!r}")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = guarded
    try:
        yield
    finally:
        builtins.__import__ = real_import


def read_no_torch(path):
    with torch_import_forbidden():
        return read_torch_state_dict(path)


def load_no_torch(path, **kwargs):
    with torch_import_forbidden():
        return load_torch_rnn(path, **kwargs)


def rezip(src: Path, dst: Path, *, drop=(), replace=None) -> None:
    """Copy a zip entry by entry, leaving out entries whose name ends with one of ``drop`` and
    replacing the bytes of entries as ``replace[suffix] = bytes``."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if any(name.endswith(d) for d in drop):
                continue
            data = zin.read(name)
            for suffix, new in replace.items():
                if name.endswith(suffix):
                    data = new
            zout.writestr(name, data)


def write_torch_layout_zip(path: Path, pickle_bytes: bytes, blobs=None) -> None:
    """A zip laid out like a torch.save archive, with any data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
        for key, blob in (blobs or {}).items():
            zf.writestr(f"archive/data/{key}", blob)


# ============================================================================ without torch
def test_fixture_gru_classifier_reproduces_torch_forward():
    model = load_no_torch(GRU_FIXTURE)
    expected = np.load(EXPECTED)
    p = model.params
    assert (p.cell, p.hidden_size, p.input_size, p.dtype) == ("gru", 16, 6, np.float32)
    assert model.embedding.shape == (10, 6)
    assert model.readout_weight.shape == (3, 16) and model.readout_bias.shape == (3,)
    assert model.metadata["embedding_key"] == "embedding.weight"
    assert model.metadata["readout_key"] == "readout.weight"
    assert model.metadata["readout_bias_key"] == "readout.bias"
    assert "reset applied after" in p.source and "embedding.weight" in p.source
    states = fastfp.rollout(p, None, model.inputs(expected["gru_tokens"]))
    assert states.shape == (3, T, 16)
    assert_allclose(states, expected["gru_states"], **TOL32)
    assert_allclose(model.logits(states), expected["gru_logits"], **TOL32)


def test_fixture_lstm_nested_two_layers():
    expected = np.load(EXPECTED)
    sd = read_no_torch(LSTM_FIXTURE)
    assert set(sd) == {f"state_dict.{w}_{k}_l{l}" for w in ("weight", "bias") for k in ("ih", "hh") for l in (0, 1)}
    m0 = load_no_torch(LSTM_FIXTURE)
    m1 = load_no_torch(LSTM_FIXTURE, layer=1, key_prefix="state_dict")
    assert m0.params.cell == m1.params.cell == "lstm"
    assert m0.embedding is None and m0.readout_weight is None
    s0 = fastfp.rollout(m0.params, None, expected["lstm_x"])
    assert_allclose(s0[..., :8], expected["lstm_h0"], **TOL32)
    assert_allclose(s0[..., 8:], expected["lstm_c0"], **TOL32)
    # layer 1 fed with torch's layer-0 outputs
    s1 = fastfp.rollout(m1.params, None, expected["lstm_h0"])
    assert_allclose(s1[..., :8], expected["lstm_h1"], **TOL32)
    # fastfp.step agrees with the rollout
    h = np.zeros((3, 16), np.float32)
    for t in range(T):
        h = fastfp.step(m0.params, h, expected["lstm_x"][:, t])
    assert_allclose(h, s0[:, -1], rtol=0, atol=1e-7)


def test_fixture_layer_errors_list_available():
    with pytest.raises(FileFormatError, match=r"layer=2.*available: \(layer=0, direction=0\), \(layer=1, direction=0\)"):
        load_no_torch(LSTM_FIXTURE, layer=2)
    with pytest.raises(FileFormatError, match=r"direction=1"):
        load_no_torch(LSTM_FIXTURE, direction=1)
    with pytest.raises(FileFormatError, match=r"torch_gru_classifier\.pt.*key_prefix 'rnn'.*'gru'"):
        load_no_torch(GRU_FIXTURE, key_prefix="rnn")


def test_loader_runs_in_a_process_where_torch_cannot_be_imported(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, fastfp\n"
        "from fastfp.io_torch import load_torch_rnn, read_torch_state_dict\n"
        f"m = load_torch_rnn({str(GRU_FIXTURE)!r})\n"
        f"e = np.load({str(EXPECTED)!r})\n"
        "s = fastfp.rollout(m.params, None, m.inputs(e['gru_tokens']))\n"
        "assert np.abs(s - e['gru_states']).max() < 1e-6\n"
        f"assert len(read_torch_state_dict({str(LSTM_FIXTURE)!r})) == 8\n"
        "assert sys.modules['torch'] is None\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_arrays_own_their_data_and_are_c_contiguous():
    for value in read_no_torch(GRU_FIXTURE).values():
        assert value.flags.c_contiguous and value.flags.owndata and value.flags.writeable


# ---------------------------------------------------------------------------- crafted pickles
class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path):
    touch = f"touch {marker}"
    create = f"open({str(marker)!r}, 'w').close()"
    import functools

    return {
        "os.system": _Reduce(os.system, (touch,)),
        "builtins.eval": _Reduce(builtins.eval, (create,)),
        "builtins.exec": _Reduce(builtins.exec, (create,)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
        "functools.partial": _Reduce(functools.partial(os.system, touch), ()),
        "builtins.getattr": _Reduce(builtins.getattr, ("x", "join")),
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", list(_payloads(Path("x"))))
def test_malicious_pickles_are_refused_and_never_run(tmp_path, name, protocol):
    marker = tmp_path / "MARKER"
    payload = _payloads(marker)[name]
    for obj in (payload, {"weight": payload}, {"state_dict": {"a": 1, "b": [payload]}}):
        path = tmp_path / f"evil_{protocol}.pt"
        write_torch_layout_zip(path, pickle.dumps(obj, protocol=protocol))
        with pytest.raises(FileFormatError) as info:
            read_no_torch(path)
        assert str(path) in str(info.value)
        assert "refuses" in str(info.value)
        assert not marker.exists()
        with pytest.raises(FileFormatError):
            load_no_torch(path)
        assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "frombuffer"),
        ("collections", "defaultdict"),
        ("builtins", "set"),
        ("__builtin__", "set"),
        ("torch", "ComplexFloatStorage"),
        ("torch", "cfloat"),
    ],
)
def test_other_globals_are_refused(tmp_path, module, name):
    pkl = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    path = tmp_path / "g.pt"
    write_torch_layout_zip(path, pkl)
    with pytest.raises(FileFormatError, match=rf"{module}\.{name}"):
        read_no_torch(path)


def test_a_whole_pickled_model_names_the_state_dict_way_out(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.GRU(3, 4), path)  # torch.nn's own class
    with pytest.raises(FileFormatError, match=r"torch\.nn\.modules\.rnn\.GRU.*torch\.save\(module\.state_dict\(\), path\)"):
        read_no_torch(path)
    pkl = b"\x80\x02c__main__\nNet\n)R."  # a user's own model class, as torch.save(net) writes it
    write_torch_layout_zip(path, pkl)
    with pytest.raises(FileFormatError, match=r"__main__\.Net.*torch\.save\(model\.state_dict\(\), path\)"):
        read_no_torch(path)


def test_stand_ins_cannot_be_mutated_or_called(tmp_path):
    # BUILD on a storage-type marker, and calling a marker as a function
    for pkl in (
        b"\x80\x02ctorch\nFloatStorage\n}(X\x05\x00\x00\x00dtypeK\x01ub.",
        b"\x80\x02ctorch\nFloatStorage\n)R.",
        b"\x80\x02ccollections\nOrderedDict\n}(X\x09\x00\x00\x00__class__ctorch\nFloatStorage\nu\x86b.",
    ):
        path = tmp_path / "m.pt"
        write_torch_layout_zip(path, pkl)
        with pytest.raises(FileFormatError, match="m.pt"):
            read_no_torch(path)
    from fastfp import io_torch

    assert io_torch._STORAGE_KINDS["FloatStorage"].dtype == np.dtype("<f4")


def test_handmade_checkpoint_reads_and_checks_bounds(tmp_path):
    # Build the pickle bytes with GLOBAL opcodes written by hand (no torch needed).
    def pkl(storage="FloatStorage", numel=4, offset=0, shape=(2, 2), stride=(2, 1), key="0"):
        def tup(values):
            return b"(" + b"".join(b"J" + int(v).to_bytes(4, "little", signed=True) for v in values) + b"t"

        return (
            b"\x80\x02}(X\x01\x00\x00\x00w"
            b"ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\n" + storage.encode() + b"\n"
            + b"X" + len(key).to_bytes(4, "little") + key.encode()
            + b"X\x03\x00\x00\x00cpu" + b"J" + int(numel).to_bytes(4, "little", signed=True) + b"tQ"
            + b"J" + int(offset).to_bytes(4, "little", signed=True)
            + tup(shape) + tup(stride)
            + b"\x89ccollections\nOrderedDict\n)RtRu."
        )

    path = tmp_path / "hand.pt"
    blob = np.arange(6, dtype="<f4").tobytes()
    write_torch_layout_zip(path, pkl(numel=6, offset=1, shape=(2, 2), stride=(1, 2)), {"0": blob})
    assert_array_equal(read_no_torch(path)["w"], np.array([[1, 3], [2, 4]], np.float32))
    # bfloat16 bits -> float32
    bf = (np.array([1.5, -2.0, 3.25], np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    write_torch_layout_zip(path, pkl("BFloat16Storage", 3, 0, (3,), (1,)), {"0": bf})
    assert_array_equal(read_no_torch(path)["w"], np.array([1.5, -2.0, 3.25], np.float32))
    bad = [
        (pkl(numel=6, offset=3, shape=(2, 2), stride=(2, 1)), blob, r"too few.*'0'|holds 6 elements"),
        (pkl(numel=8), blob, r"data/0.*24 bytes, expected 32"),
        (pkl(numel=4, offset=-1), blob, "negative"),
        (pkl(numel=4, shape=(2, 2), stride=(-1, 1)), blob, "negative"),
        (pkl(numel=1, shape=(1 << 20, 1 << 10), stride=(0, 0)), blob, "expands storage"),
        (pkl(key="7"), blob, r"lacks the storage blob 'archive/data/7'"),
        (pkl(storage="ComplexFloatStorage"), blob, "torch.ComplexFloatStorage"),
    ]
    for pickle_bytes, data, message in bad:
        write_torch_layout_zip(path, pickle_bytes, {"0": data})
        with pytest.raises(FileFormatError, match=message) as info:
            read_no_torch(path)
        assert "hand.pt" in str(info.value)


# ---------------------------------------------------------------------------- damaged files
def test_damaged_files(tmp_path):
    raw = GRU_FIXTURE.read_bytes()
    cases = {
        "half.pt": raw[: len(raw) // 2],
        "empty.pt": b"",
        "random.pt": np.random.default_rng(0).bytes(4000),
        "magic.pt": b"XX" + raw[2:],
        "text.pt": b"hello, this is not a checkpoint\n",
        "npz.pt": EXPECTED.read_bytes(),
        "tail.pt": raw[:-30],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(FileFormatError, match=name):
            read_no_torch(path)
        with pytest.raises(FileFormatError, match=name):
            load_no_torch(path)
    with pytest.raises(FileFormatError, match="NumPy .npz"):
        read_no_torch(tmp_path / "npz.pt")


def test_missing_entries(tmp_path):
    no_pkl = tmp_path / "no_pkl.pt"
    rezip(GRU_FIXTURE, no_pkl, drop=("data.pkl",))
    with pytest.raises(FileFormatError, match=r"no_pkl\.pt.*data\.pkl"):
        read_no_torch(no_pkl)
    no_blob = tmp_path / "no_blob.pt"
    rezip(GRU_FIXTURE, no_blob, drop=("data/2",))
    with pytest.raises(FileFormatError, match=r"no_blob\.pt lacks the storage blob '[^']*data/2'"):
        read_no_torch(no_blob)
    short = tmp_path / "short.pt"
    rezip(GRU_FIXTURE, short, replace={"data/0": b"\0" * 8})
    with pytest.raises(FileFormatError, match=r"short\.pt.*data/0.*8 bytes"):
        read_no_torch(short)
    big = tmp_path / "big.pt"
    rezip(GRU_FIXTURE, big, replace={"byteorder": b"middle"})
    with pytest.raises(FileFormatError, match="byteorder"):
        read_no_torch(big)
    with pytest.raises(FileNotFoundError):
        read_torch_state_dict(tmp_path / "does_not_exist.pt")


# ---------------------------------------------------------------------------- fuzzing
_FIXTURE_BYTES = GRU_FIXTURE.read_bytes()
with zipfile.ZipFile(GRU_FIXTURE) as _zf:
    _PKL_NAME = next(n for n in _zf.namelist() if n.endswith("data.pkl"))
    _FIXTURE_ENTRIES = {n: _zf.read(n) for n in _zf.namelist()}

_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
)


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in edits:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= arg
        elif kind == "set":
            buf[pos] = arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos:pos + arg]
        else:
            del buf[pos:]
    return bytes(buf)


def _assert_dict_or_format_error(path):
    try:
        out = read_torch_state_dict(path)
    except FileFormatError:
        return
    assert isinstance(out, dict)
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in out.items())


_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(edits=st.lists(_edit, min_size=1, max_size=4))
def test_fuzz_file_bytes(tmp_path, edits):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(_mutate(_FIXTURE_BYTES, edits))
    _assert_dict_or_format_error(path)


@_FUZZ
@given(edits=st.lists(_edit, min_size=1, max_size=4))
def test_fuzz_pickle_inside_valid_zip(tmp_path, edits):
    """Mutate data.pkl itself and re-zip it (so the zip CRCs do not catch the damage)."""
    path = tmp_path / "fuzz_pkl.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _FIXTURE_ENTRIES.items():
            zf.writestr(name, _mutate(data, edits) if name == _PKL_NAME else data)
    _assert_dict_or_format_error(path)


# ============================================================================ with torch
def _torch():
    return pytest.importorskip("torch")


def _save(obj, path, **kwargs):
    torch = _torch()
    torch.save(obj, path, **kwargs)
    return path


def _scaled(module, gain=2.0):
    torch = _torch()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "weight_hh" in name:
                p.mul_(gain)
    return module


RNN_CASES = {
    "rnn_tanh": lambda nn: nn.RNN(5, 7, num_layers=2, bidirectional=True, batch_first=True),
    "rnn_relu": lambda nn: nn.RNN(5, 7, nonlinearity="relu", num_layers=1, batch_first=True),
    "gru": lambda nn: nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True),
    "gru_uni2": lambda nn: nn.GRU(5, 7, num_layers=2, batch_first=True),
    "lstm": lambda nn: nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True),
}


def _layer0_module(module):
    """A one-layer copy of a stacked module's layer 0 (for torch's layer-0 outputs)."""
    torch = _torch()
    cls = type(module)
    kwargs = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=1,
                  bidirectional=module.bidirectional, batch_first=True)
    if isinstance(module, torch.nn.RNN):
        kwargs["nonlinearity"] = module.nonlinearity
    m0 = cls(**kwargs)
    m0.load_state_dict({k: v for k, v in module.state_dict().items() if "_l0" in k})
    return m0


@pytest.mark.torch
@pytest.mark.parametrize("case", list(RNN_CASES))
def test_torch_rnn_layers_reproduce_torch_forward(tmp_path, case):
    torch = _torch()
    torch.manual_seed(0)
    # vanilla RNNs keep PyTorch's init (with a gain of 2 they are chaotic and float32 rounding grows)
    module = _scaled(RNN_CASES[case](torch.nn), gain=1.0 if case.startswith("rnn") else 2.0)
    path = _save(module.state_dict(), tmp_path / f"{case}.pt")
    H = module.hidden_size
    nonlinearity = getattr(module, "nonlinearity", None)
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity == "relu" else {}
    x = torch.randn(4, T, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = module(x)[0].numpy()
        out0 = _layer0_module(module)(x)[0].numpy() if module.num_layers > 1 else out
    xn = x.numpy()
    dirs = (0, 1) if module.bidirectional else (0,)
    for layer in range(module.num_layers):
        inputs = xn if layer == 0 else out0
        for d in dirs:
            model = load_no_torch(path, layer=layer, direction=d, **kwargs)
            p = model.params
            assert p.dtype == np.float32 and p.hidden_size == H and p.input_size == inputs.shape[-1]
            if d == 0:
                states = fastfp.rollout(p, None, inputs)
            else:
                states = fastfp.rollout(p, None, inputs[:, ::-1])[:, ::-1]
            got = states[..., :H]
            want = out[..., d * H:(d + 1) * H] if layer == module.num_layers - 1 else out0[..., d * H:(d + 1) * H]
            assert_allclose(got, want, **TOL32, err_msg=f"{case} layer {layer} direction {d}")
            assert np.abs(want).max() > 0.1
    if case == "rnn_tanh":
        p = load_no_torch(path).params
        assert p.nonlinearity == "tanh" and "assumed 'tanh'" in p.source
    if case == "rnn_relu":
        assert load_no_torch(path, nonlinearity="relu").params.nonlinearity == "relu"


@pytest.mark.torch
@pytest.mark.parametrize("cls, cell", [("RNNCell", "vanilla"), ("GRUCell", "gru"), ("LSTMCell", "lstm")])
def test_torch_cells_reproduce_torch_steps(tmp_path, cls, cell):
    torch = _torch()
    torch.manual_seed(2)
    module = _scaled(getattr(torch.nn, cls)(4, 6))
    path = _save(module.state_dict(), tmp_path / "cell.pt")
    model = load_no_torch(path)
    p = model.params
    assert p.cell == cell and model.metadata["torch_module"] == f"nn.{cls}"
    x = torch.randn(T, 3, 4, generator=torch.Generator().manual_seed(3))
    h = np.zeros((3, p.state_size), np.float32)
    th = torch.zeros(3, 6)
    tc = torch.zeros(3, 6)
    with torch.no_grad():
        for t in range(T):
            if cell == "lstm":
                th, tc = module(x[t], (th, tc))
                want = torch.cat([th, tc], 1).numpy()
            else:
                th = module(x[t], th)
                want = th.numpy()
            h = fastfp.step(p, h, x[t].numpy())
            assert_allclose(h, want, **TOL32)


class _Classifier:
    @staticmethod
    def build(torch, bias=True):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(12, 5)
                self.encoder = torch.nn.Module()
                self.encoder.gru = torch.nn.GRU(5, 9, batch_first=True, bias=bias)
                self.head = torch.nn.Linear(9, 4, bias=bias)

            def forward(self, tokens):
                s, _ = self.encoder.gru(self.embedding(tokens))
                return s, self.head(s)

        return Net()


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_torch_classifier(tmp_path, bias, nest):
    torch = _torch()
    torch.manual_seed(4)
    net = _scaled(_Classifier.build(torch, bias))
    sd = net.state_dict()
    path = _save(sd if nest is None else {nest: sd, "epoch": 3, "note": "x"}, tmp_path / "clf.pt")
    model = load_no_torch(path)
    pre = f"{nest}." if nest else ""
    assert model.metadata["rnn_prefix"] == f"{pre}encoder.gru."
    assert model.metadata["embedding_key"] == f"{pre}embedding.weight"
    assert model.metadata["readout_key"] == f"{pre}head.weight"
    assert model.metadata["readout_bias_key"] == (f"{pre}head.bias" if bias else None)
    if not bias:
        assert not model.params.b_ih.any() and not model.params.b_hh.any()
        assert "bias=False" in model.params.source
    tokens = torch.randint(0, 12, (3, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        states, logits = net(tokens)
    got = fastfp.rollout(model.params, None, model.inputs(tokens.numpy()))
    assert_allclose(got, states.numpy(), **TOL32)
    assert_allclose(model.logits(got), logits.numpy(), **TOL32)
    # the Model round-trips through fastfp's own format
    fastfp.save_params(tmp_path / "m.npz", model)
    again = fastfp.load_params(tmp_path / "m.npz")
    assert again.metadata == model.metadata
    assert_array_equal(again.readout_weight, model.readout_weight)


@pytest.mark.torch
def test_torch_dtypes_read_exactly(tmp_path):
    torch = _torch()
    torch.manual_seed(6)
    base = torch.nn.GRU(3, 4).state_dict()
    for dtype in (torch.float64, torch.float16, torch.bfloat16, torch.float32):
        sd = {k: v.to(dtype) for k, v in base.items()}
        path = _save(sd, tmp_path / f"{dtype}.pt")
        got = read_no_torch(path)
        for k, v in sd.items():
            want = v.numpy() if dtype != torch.bfloat16 else v.float().numpy()
            assert got[k].dtype == want.dtype
            assert_array_equal(got[k], want)
        model = load_no_torch(path)
        assert model.params.dtype == (np.float32 if dtype in (torch.float32, torch.bfloat16) else np.float64)
    gru16 = torch.nn.GRU(3, 4).to(torch.bfloat16)
    path = _save(gru16.state_dict(), tmp_path / "module_bf16.pt")
    got = read_no_torch(path)
    for k, v in gru16.state_dict().items():
        assert_array_equal(got[k], v.float().numpy())
    others = {
        "i64": torch.arange(-5, 7, dtype=torch.int64).reshape(3, 4),
        "i32": torch.arange(-5, 7, dtype=torch.int32),
        "i16": torch.arange(-5, 7, dtype=torch.int16),
        "i8": torch.arange(-5, 7, dtype=torch.int8),
        "u8": torch.arange(0, 12, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    got = read_no_torch(_save(others, tmp_path / "ints.pt"))
    for k, v in others.items():
        assert got[k].dtype == v.numpy().dtype and got[k].shape == tuple(v.shape)
        assert_array_equal(got[k], v.numpy())


@pytest.mark.torch
def test_torch_views_of_shared_storage(tmp_path):
    torch = _torch()
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "a": t[1:], "b": t.T, "c": t[:, 1], "d": t[1:3, 2:5], "e": t[::2, ::3],
        "f": t[0].expand(3, 6), "g": t, "p": torch.nn.Parameter(t[2:].clone()),
        "nested": {"list": [t[3], (t[0, 0],)]},
    }
    got = read_no_torch(_save(sd, tmp_path / "views.pt"))
    flat = {k: v for k, v in sd.items() if k != "nested"}
    flat.update({"nested.list.0": t[3], "nested.list.1.0": t[0, 0]})
    assert set(got) == set(flat)
    for k, v in flat.items():
        assert_array_equal(got[k], v.detach().numpy(), err_msg=k)
        assert got[k].flags.c_contiguous and got[k].flags.owndata
    got["a"][0, 0] = -1  # views do not share memory
    assert got["g"][1, 0] == 6


@pytest.mark.torch
def test_torch_pickled_module_is_refused(tmp_path):
    torch = _torch()
    path = _save(torch.nn.Linear(3, 2), tmp_path / "whole_module.pt")
    with pytest.raises(FileFormatError, match=r"whole_module\.pt.*torch\.nn\.modules\.linear\.Linear.*state_dict"):
        read_no_torch(path)
    path = _save({"model": torch.nn.GRU(3, 4), "epoch": 1}, tmp_path / "in_dict.pt")
    with pytest.raises(FileFormatError, match=r"torch\.nn\.modules\.rnn\.GRU"):
        load_no_torch(path)


@pytest.mark.torch
def test_torchscript_archives_are_refused_with_the_way_out(tmp_path):
    torch = _torch()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return self.gru(x)[0]

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    with pytest.raises(FileFormatError, match=r"scripted\.pt .*TorchScript archive \(torch\.jit\.save\): load it with "
                                              r"torch\.jit\.load"):
        load_no_torch(path)


@pytest.mark.torch
def test_torch_legacy_format_is_refused(tmp_path):
    torch = _torch()
    path = _save(torch.nn.GRU(3, 4).state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(FileFormatError, match=r"legacy\.pt is a legacy PyTorch file"):
        read_no_torch(path)


@pytest.mark.torch
def test_torch_rnn_selection_errors(tmp_path):
    torch = _torch()
    torch.manual_seed(7)
    gru, lstm = torch.nn.GRU(3, 4), torch.nn.LSTM(3, 4, num_layers=2)
    both = {**{f"gru.{k}": v for k, v in gru.state_dict().items()},
            **{f"lstm.{k}": v for k, v in lstm.state_dict().items()}}
    path = _save(both, tmp_path / "both.pt")
    with pytest.raises(FileFormatError, match=r"both\.pt: holds several recurrent layers \('gru', 'lstm'\)"):
        load_no_torch(path)
    assert load_no_torch(path, key_prefix="gru").params.cell == "gru"
    assert load_no_torch(path, key_prefix="lstm.", layer=1).params.cell == "lstm"
    with pytest.raises(FileFormatError, match=r"no layer=1.*available: \(layer=0, direction=0\)$"):
        load_no_torch(path, key_prefix="gru", layer=1)
    lstm_only = _save(lstm.state_dict(), tmp_path / "lstm.pt")
    with pytest.raises(FileFormatError, match=r"lstm\.pt: no recurrent layer under key_prefix 'gru'.*''"):
        load_no_torch(lstm_only, key_prefix="gru")
    # no RNN at all
    with pytest.raises(FileFormatError, match=r"no recurrent layer found"):
        load_no_torch(_save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "lin.pt"))
    # two gate blocks (no PyTorch cell), gates that disagree, NaN weights, integer weights
    g = torch.nn.GRU(3, 4).state_dict()
    bad = {
        "g2": ({**g, "weight_hh_l0": torch.randn(8, 4), "weight_ih_l0": torch.randn(8, 3)}, FileFormatError, r"G = 2"),
        "g5": ({**g, "weight_hh_l0": torch.randn(20, 4)}, FileFormatError, r"G = 5"),
        "rows": ({**g, "weight_ih_l0": torch.randn(11, 3)}, FileFormatError, r"'weight_ih_l0' has shape \(11, 3\)"),
        "bias": ({**g, "bias_hh_l0": torch.randn(5)}, FileFormatError, r"'bias_hh_l0' has shape \(5,\)"),
        "ndim": ({**g, "weight_hh_l0": torch.randn(12)}, FileFormatError, r"'weight_hh_l0'.*2-D"),
        "int": ({**g, "weight_hh_l0": torch.ones(12, 4, dtype=torch.int64)}, FileFormatError, "dtype int64"),
        "noih": ({k: v for k, v in g.items() if k != "weight_ih_l0"}, FileFormatError, r"lacks the key 'weight_ih_l0'"),
        "nan": ({**g, "weight_hh_l0": g["weight_hh_l0"].clone().fill_(float("nan"))}, NonFiniteError,
                r"nan\.pt.*'weight_hh_l0'.*NaN"),
    }
    for name, (sd, exc, message) in bad.items():
        with pytest.raises(exc, match=message):
            load_no_torch(_save(sd, tmp_path / f"{name}.pt"))
    proj = torch.nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(FileFormatError, match="proj_size"):
        load_no_torch(_save(proj.state_dict(), tmp_path / "proj.pt"))


@pytest.mark.torch
def test_torch_blob_removed_and_truncated(tmp_path):
    torch = _torch()
    path = _save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "lstm.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FileFormatError, match=r"cut\.pt"):
        read_no_torch(cut)
    gone = tmp_path / "gone.pt"
    rezip(path, gone, drop=("data/1",))
    with pytest.raises(FileFormatError, match=r"gone\.pt lacks the storage blob '[^']*data/1' \(storage key '1'\)"):
        load_no_torch(gone)


# ---------------------------------------------------------------------------- nothing silently lost
@pytest.mark.torch
def test_torch_nested_and_dotted_keys_that_collide_are_refused(tmp_path):
    torch = _torch()
    sd = {f"rnn.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    path = _save({**sd, "rnn": {"weight_hh_l0": torch.full((12, 4), 7.0)}}, tmp_path / "collide.pt")
    with pytest.raises(FileFormatError, match=r"collide\.pt: entries \['rnn.weight_hh_l0'\] and "
                                              r"\['rnn'\]\['weight_hh_l0'\] both flatten to the key 'rnn.weight_hh_l0'"):
        read_no_torch(path)
    # a list item and a dict key spelling the same name
    path = _save({"layers": [sd["rnn.weight_hh_l0"]], "layers.0": sd["rnn.weight_hh_l0"]}, tmp_path / "list.pt")
    with pytest.raises(FileFormatError, match=r"\['layers'\]\[0\] and \['layers.0'\]|\['layers.0'\] and \['layers'\]\[0\]"):
        read_no_torch(path)


@pytest.mark.torch
def test_torch_non_tensor_where_a_weight_belongs_is_refused(tmp_path):
    torch = _torch()
    sd = {f"rnn.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    path = _save({**sd, "rnn.bias_hh_l0": sd["rnn.bias_hh_l0"].tolist()}, tmp_path / "list.pt")
    with pytest.raises(FileFormatError, match=r"list\.pt: key 'rnn.bias_hh_l0' holds a list, expected an array"):
        load_no_torch(path)
    path = _save({**sd, "rnn.bias_ih_l0": 0.5}, tmp_path / "scalar.pt")
    with pytest.raises(FileFormatError, match=r"key 'rnn.bias_ih_l0' holds a float"):
        load_no_torch(path)
    # plain metadata next to the state dict is fine
    m = load_no_torch(_save({"model": sd, "epoch": 3, "config": {"bias": True}}, tmp_path / "ok.pt"))
    assert m.metadata["rnn_prefix"] == "model.rnn."


@pytest.mark.torch
def test_torch_cell_and_layer_keys_under_one_prefix_are_ambiguous(tmp_path):
    torch = _torch()
    sd = {f"rnn.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    cell = {f"rnn.{k}": v for k, v in torch.nn.GRUCell(3, 4).state_dict().items()}
    for name, obj in (("cell_first.pt", {**cell, **sd}), ("layers_first.pt", {**sd, **cell})):
        with pytest.raises(FileFormatError, match=r"the RNN 'rnn' has both an RNN cell's key \('rnn.weight_hh'\) "
                                                  r"and a stacked RNN's keys \('rnn.weight_hh_l0'\)"):
            load_no_torch(_save(obj, tmp_path / name))


@pytest.mark.torch
def test_torch_readout_bias_shape_and_key_typo_hint(tmp_path):
    torch = _torch()
    sd = {f"rnn.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    path = _save({**sd, "fc.weight": torch.ones(2, 4), "fc.bias": torch.ones(3)}, tmp_path / "rb.pt")
    with pytest.raises(FileFormatError, match=r"rb\.pt: readout bias 'fc.bias' has shape \(3,\), expected \(2,\) "
                                              r"to match readout weight 'fc.weight' of shape \(2, 4\)"):
        load_no_torch(path)
    path = _save({k.replace("_l0", "_l00"): v for k, v in sd.items()}, tmp_path / "l00.pt")
    with pytest.raises(FileFormatError, match=r"lacks the key 'rnn.weight_hh_l0'; similar keys found: 'rnn.weight_hh_l00'"):
        load_no_torch(path)


def test_repeated_zip_entries_are_refused(tmp_path):
    import warnings

    path = tmp_path / "dup.pt"
    rezip(GRU_FIXTURE, path)
    with zipfile.ZipFile(GRU_FIXTURE) as zf:
        blob_name = next(n for n in zf.namelist() if "/data/" in n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(blob_name, b"\0" * zf.getinfo(blob_name).file_size)
    with pytest.raises(FileFormatError, match=rf"dup\.pt holds several zip entries named '{blob_name}'"):
        read_no_torch(path)
    with pytest.raises(FileFormatError, match=rf"dup\.pt holds several zip entries named '{blob_name}'"):
        fastfp.load(path)
