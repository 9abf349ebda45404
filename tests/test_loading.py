"""fastfp.load (format detection by content) and fastfp.io_safetensors.read_safetensors (no torch,
no safetensors package).

Tests marked by ``importorskip`` compare against torch's forward pass or against files written by
the ``safetensors`` package; the rest use the fixture files in tests/data (the safetensors one is
written by tools/make_safetensors_fixtures.py) and hand-built bytes.
"""

from __future__ import annotations

import json
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
from fastfp.errors import ArgumentTypeError, FastFPError, FileFormatError, InvalidOptionError
from fastfp.io_safetensors import _MAX_HEADER, read_safetensors
from fastfp.io_torch import _LEGACY_MAGIC, read_torch_state_dict
from fastfp.loading import load

DATA = Path(__file__).parent / "data"
GRU_PT = DATA / "torch_gru_classifier.pt"
LSTM_PT = DATA / "torch_lstm2.pt"
GRU_ST = DATA / "torch_gru_classifier.safetensors"
EXPECTED = DATA / "torch_fixtures_expected.npz"
T = 50
TOL32 = dict(rtol=1e-6, atol=1e-6)

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


def st_bytes(entries, metadata=None, header_override=None) -> bytes:
    """Hand-built safetensors bytes: entries = [(key, dtype name, shape, raw bytes)]."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for key, dtype, shape, raw in entries:
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = header_override if header_override is not None else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def st_from_arrays(arrays: dict) -> bytes:
    names = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k not in ("BF16", "BOOL")}
    return st_bytes([(k, names[np.asarray(v).dtype.newbyteorder("<")], np.shape(v), np.ascontiguousarray(v).tobytes())
                     for k, v in arrays.items()])


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_same_model(a, b):
    pa, pb = a.params, b.params
    assert (pa.cell, pa.nonlinearity) == (pb.cell, pb.nonlinearity)
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        assert_array_equal(getattr(pa, name), getattr(pb, name))
        assert getattr(pa, name).dtype == getattr(pb, name).dtype
    for name in ("embedding", "readout_weight", "readout_bias"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert_array_equal(va, vb)


# ============================================================================ read_safetensors
def test_fixture_matches_the_torch_checkpoint_and_reproduces_torch_forward():
    sd_st, sd_pt = read_safetensors(GRU_ST), read_torch_state_dict(GRU_PT)
    assert set(sd_st) == set(sd_pt)
    for k in sd_pt:
        assert_array_equal(sd_st[k], sd_pt[k])
        assert sd_st[k].dtype == sd_pt[k].dtype == np.float32
    model = load(GRU_ST, cell="gru")
    assert_same_model(model, load(GRU_PT))
    assert model.metadata["safetensors_metadata"]["format"] == "pt"
    assert "cell='gru' given by the caller" in model.params.source
    e = np.load(EXPECTED)
    states = fastfp.rollout(model.params, None, model.inputs(e["gru_tokens"]))
    assert_allclose(states, e["gru_states"], **TOL32)
    assert_allclose(model.logits(states), e["gru_logits"], **TOL32)


def test_every_dtype_read_exactly(tmp_path):
    rng = np.random.default_rng(0)
    f64 = rng.normal(size=(2, 3))
    f32 = rng.normal(size=(4,)).astype(np.float32)
    f16 = rng.normal(size=(3, 1)).astype(np.float16)
    bf16_bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001, 0x3E4D, 0x0000, 0x8000], dtype="<u2")  # 1, -2, inf, tiny, ...
    ints = {name: np.arange(-3, 3, dtype=_ST_DTYPES[name]) for name in ("I64", "I32", "I16", "I8")}
    u8 = np.array([0, 1, 255], dtype=np.uint8)
    boolean = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    entries = [("f64", "F64", f64.shape, f64.astype("<f8").tobytes()),
               ("f32", "F32", f32.shape, f32.astype("<f4").tobytes()),
               ("f16", "F16", f16.shape, f16.astype("<f2").tobytes()),
               ("bf16", "BF16", bf16_bits.shape, bf16_bits.tobytes()),
               ("u8", "U8", u8.shape, u8.tobytes()),
               ("bool", "BOOL", boolean.shape, boolean.tobytes()),
               ("scalar", "F32", (), np.float32(2.5).tobytes()),
               ("empty", "F32", (0, 3), b"")]
    entries += [(name.lower(), name, arr.shape, arr.tobytes()) for name, arr in ints.items()]
    out = read_safetensors(write(tmp_path / "all.bin", st_bytes(entries, metadata={"a": "b"})))
    assert list(out) == [e[0] for e in entries]
    assert_array_equal(out["f64"], f64) and out["f64"].dtype == np.float64
    assert_array_equal(out["f32"], f32) and out["f32"].dtype == np.float32
    assert_array_equal(out["f16"], f16) and out["f16"].dtype == np.float16
    expected_bf16 = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    assert out["bf16"].dtype == np.float32
    assert_array_equal(out["bf16"].view(np.uint32), expected_bf16.view(np.uint32))
    assert out["bf16"][0] == 1.0 and out["bf16"][1] == -2.0 and np.isposinf(out["bf16"][2])
    assert_array_equal(out["u8"], u8) and out["u8"].dtype == np.uint8
    assert out["bool"].dtype == bool and out["bool"].tolist() == [[True, False], [False, True]]
    assert out["scalar"].shape == () and out["scalar"] == 2.5
    assert out["empty"].shape == (0, 3)
    for name, arr in ints.items():
        assert_array_equal(out[name.lower()], arr)
        assert out[name.lower()].dtype == np.dtype(_ST_DTYPES[name]).newbyteorder("=")
    for value in out.values():
        assert value.flags.owndata and value.flags.c_contiguous and value.flags.writeable


def test_bf16_and_f16_agree_with_the_safetensors_package(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, generator=g)
    path = tmp_path / "t.safetensors"
    st_torch.save_file({"bf": x.to(torch.bfloat16), "h": x.to(torch.float16), "d": x.double()}, str(path))
    out = read_safetensors(path)
    assert_array_equal(out["bf"], x.to(torch.bfloat16).float().numpy())
    assert_array_equal(out["h"], x.to(torch.float16).numpy())
    assert_array_equal(out["d"], x.double().numpy())


@pytest.mark.parametrize(
    "case, match",
    [
        ("short", "shorter than the 8-byte"),
        ("length_beyond", "beyond the end of the file"),
        ("not_json", "not valid UTF-8 JSON"),
        ("not_utf8", "not valid UTF-8 JSON"),
        ("json_list", "expected an object"),
        ("duplicate_key", "duplicate key"),
        ("unknown_dtype", r"tensor 'w'.*unsupported dtype 'F8'"),
        ("missing_field", r"tensor 'w'.*lacks 'shape'"),
        ("bad_shape", r"tensor 'w'.*shape \[2, -3\]"),
        ("bool_shape", r"tensor 'w'.*shape \[true, 3\]|tensor 'w'.*shape \[True, 3\]"),
        ("offsets_out_of_range", r"tensor 'w'.*beyond the data buffer"),
        ("offsets_reversed", r"tensor 'w'.*0 <= begin <= end"),
        ("offsets_not_pair", r"tensor 'w'.*not a pair"),
        ("shape_mismatch", r"tensor 'w'.*span 24 bytes.*needs 48"),
        ("truncated", r"tensor 'b'.*beyond the data buffer"),
        ("bad_metadata", "__metadata__"),
        ("entry_not_object", r"tensor 'w'.*expected an object"),
    ],
)
def test_corrupted_files_raise_file_format_error(tmp_path, case, match):
    w = np.arange(6, dtype=np.float32).tobytes()
    good = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}
    buf = w + w[:8]

    def build(header, buffer=buf, raw=None):
        text = raw if raw is not None else json.dumps(header).encode()
        return len(text).to_bytes(8, "little") + text + buffer

    def change(key, field, value):
        h = json.loads(json.dumps(good))
        h[key][field] = value
        return build(h)

    data = {
        "short": b"\x05\x00\x00",
        "length_beyond": (10_000).to_bytes(8, "little") + b"{}",
        "not_json": build(None, raw=b"{not json"),
        "not_utf8": build(None, raw=b'{"\xff": 1}'),
        "json_list": build([1, 2]),
        "duplicate_key": build(None, raw=b'{"a": {}, "a": {}}'),
        "unknown_dtype": change("w", "dtype", "F8"),
        "missing_field": build({"w": {"dtype": "F32", "data_offsets": [0, 24]}}),
        "bad_shape": change("w", "shape", [2, -3]),
        "bool_shape": change("w", "shape", [True, 3]),
        "offsets_out_of_range": change("w", "data_offsets", [0, 4000]),
        "offsets_reversed": change("w", "data_offsets", [24, 0]),
        "offsets_not_pair": change("w", "data_offsets", [0]),
        "shape_mismatch": change("w", "shape", [4, 3]),
        "truncated": build(good, buffer=buf[:-4]),
        "bad_metadata": build({"__metadata__": [1], **good}),
        "entry_not_object": build({"w": [1, 2]}),
    }[case]
    path = write(tmp_path / "bad.safetensors", data)
    with pytest.raises(FileFormatError, match=match) as info:
        read_safetensors(path)
    assert str(path) in str(info.value)
    if case not in ("short",):  # too short to be recognised: load() reports an unknown format instead
        with pytest.raises(FileFormatError):
            load(path, cell="gru")


def test_read_safetensors_rejects_non_paths():
    with pytest.raises(ArgumentTypeError):
        read_safetensors(123)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_file_only_file_format_error(tmp_path, data):
    original = bytearray(GRU_ST.read_bytes())
    mode = data.draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(original) - 1))
            original[i] = data.draw(st.integers(0, 255))
    elif mode == "truncate":
        original = original[: data.draw(st.integers(0, len(original) - 1))]
    elif mode == "insert":
        i = data.draw(st.integers(0, len(original)))
        original[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    else:  # replace a digit or a character inside the JSON header
        n = int.from_bytes(original[:8], "little")
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(8, 8 + n - 1))
            original[i] = ord(data.draw(st.sampled_from(list('0123456789[]{}",:-eE.FIBU '))))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(original))
    try:
        out = read_safetensors(path)
    except FileFormatError:
        pass
    else:
        for value in out.values():
            assert isinstance(value, np.ndarray) and value.flags.owndata
    try:
        load(path, cell="gru")
    except FastFPError:  # FileFormatError, or e.g. NonFiniteError for a weight turned NaN
        pass


_entries = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(list(_ST_DTYPES)), st.text(max_size=4), st.integers()),
    "shape": st.one_of(st.lists(st.integers(-2, 5), max_size=4), st.integers(), st.none()),
    "data_offsets": st.one_of(st.lists(st.integers(-10, 200), min_size=0, max_size=3), st.text(max_size=3)),
})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.text(max_size=5), _entries, max_size=4), buffer=st.binary(max_size=128))
def test_fuzz_structured_headers_only_file_format_error(tmp_path, header, buffer):
    text = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + buffer)
    try:
        out = read_safetensors(path)
    except FileFormatError:
        return
    assert set(out) == set(header) - {"__metadata__"}


# ============================================================================ load(): files
def test_load_torch_zip_fixture_equals_load_torch_rnn():
    assert_same_model(load(GRU_PT), fastfp.load_torch_rnn(GRU_PT))
    assert_same_model(load(GRU_PT, cell="gru"), fastfp.load_torch_rnn(GRU_PT))
    assert_same_model(load(LSTM_PT, layer=1), fastfp.load_torch_rnn(LSTM_PT, layer=1))


def test_load_detects_by_content_not_suffix(tmp_path):
    odd = write(tmp_path / "weights.npz", GRU_ST.read_bytes())  # safetensors named .npz
    assert_same_model(load(odd, cell="gru"), load(GRU_PT))
    odd2 = write(tmp_path / "model.safetensors", GRU_PT.read_bytes())  # torch named .safetensors
    assert_same_model(load(odd2), load(GRU_PT))


def test_load_fastfp_npz_round_trip(tmp_path):
    model = fastfp.Model(fastfp.RNNParams.random("gru_reset_before", 5, 3, seed=1))
    path = tmp_path / "p.npz"
    fastfp.save_params(path, model)
    back = load(path)
    assert_same_model(back, model)
    assert back.params.cell == "gru_reset_before"
    assert load(path, cell="gru_reset_before").params.cell == "gru_reset_before"
    with pytest.raises(InvalidOptionError, match="cell='gru'.*'gru_reset_before'"):
        load(path, cell="gru")
    with pytest.raises(InvalidOptionError, match="layer=1"):
        load(path, layer=1)
    for name in ("gru64_cat3.npz", "lstm32_cat3.npz"):
        assert_same_model(load(DATA / name), fastfp.load_params(DATA / name))


def test_load_plain_npz_state_dict(tmp_path):
    sd = read_torch_state_dict(GRU_PT)
    path = tmp_path / "sd.npz"
    np.savez(path, **sd)
    with pytest.raises(InvalidOptionError, match="cell='gru'.*cell='gru_reset_before'"):
        load(path)
    model = load(path, cell="gru")
    assert_same_model(model, load(GRU_PT))
    assert model.metadata["format"] == "NumPy .npz state dict"
    rb = load(path, cell="gru_reset_before")
    assert rb.params.cell == "gru_reset_before"
    assert_array_equal(rb.params.w_hh, model.params.w_hh)
    lstm = read_torch_state_dict(LSTM_PT)
    np.savez(tmp_path / "lstm.npz", **lstm)
    assert_same_model(load(tmp_path / "lstm.npz", layer=1), fastfp.load_torch_rnn(LSTM_PT, layer=1))


def test_load_safetensors_three_gates_needs_cell(tmp_path):
    with pytest.raises(InvalidOptionError) as info:
        load(GRU_ST)
    text = str(info.value)
    assert "cell='gru'" in text and "cell='gru_reset_before'" in text and str(GRU_ST) in text
    assert "G = 3" in text


def test_load_lstm_with_wrong_cell_names_file_and_gate_count(tmp_path):
    with pytest.raises(InvalidOptionError, match=r"torch_lstm2\.pt.*cell='gru'.*G = 4"):
        load(LSTM_PT, cell="gru")
    np.savez(tmp_path / "lstm.npz", **read_torch_state_dict(LSTM_PT))
    with pytest.raises(InvalidOptionError, match=r"lstm\.npz.*cell='gru'.*G = 4"):
        load(tmp_path / "lstm.npz", cell="gru")
    st = write(tmp_path / "lstm.st", st_from_arrays(read_torch_state_dict(LSTM_PT)))
    with pytest.raises(InvalidOptionError, match=r"lstm\.st.*cell='gru_reset_before'.*G = 4"):
        load(st, cell="gru_reset_before")
    assert load(st).params.cell == "lstm"  # 4 gates: unambiguous


def test_load_reset_before_on_torch_file_is_refused():
    with pytest.raises(InvalidOptionError, match="applies the reset gate after the recurrent matmul"):
        load(GRU_PT, cell="gru_reset_before")


def test_load_invalid_cell_option():
    with pytest.raises(InvalidOptionError, match="argument 'cell'"):
        load(GRU_PT, cell="GRU")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (_LEGACY_MAGIC + b"\x00" * 40, "legacy PyTorch file.*re-save"),
        (b"hello world, not a model", "not in a format fastfp reads"),
        (pickle.dumps({"a": 1}, protocol=2), "pickle"),
        (b"\x93NUMPY\x01\x00" + b"\x00" * 20, r"\.npy"),
        (b"PK\x03\x04" + b"\x00" * 30, "zip archive"),
    ],
    ids=["empty", "legacy", "unknown", "pickle", "npy", "bad-zip"],
)
def test_load_unknown_content(tmp_path, content, match):
    path = write(tmp_path / "x.pt", content)
    with pytest.raises(FileFormatError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)
    if match in ("is empty", "not in a format fastfp reads"):
        assert "safetensors" in str(info.value) and "torch.save" in str(info.value)


@pytest.mark.parametrize("length", [2**63, 2**40, _MAX_HEADER + 1])
def test_load_reports_a_safetensors_header_longer_than_the_file(tmp_path, length):
    good = st_from_arrays({"weight_ih_l0": np.ones((4, 3), np.float32), "weight_hh_l0": np.eye(4, dtype=np.float32)})
    path = write(tmp_path / "big.safetensors", length.to_bytes(8, "little") + good[8:])
    with pytest.raises(FileFormatError, match=rf"header length {length} is beyond the end of the file"):
        load(path)
    # text with a '{' at offset 8 is still reported as an unknown format, not as a safetensors file
    text = write(tmp_path / "notes.txt", b"abcdefgh{ not json }")
    with pytest.raises(FileFormatError, match="not in a format fastfp reads"):
        load(text)


def test_load_npz_with_repeated_entries_is_refused(tmp_path):
    import io
    import warnings

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    path = tmp_path / "dup.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("weight_ih_l0.npy", npy(np.ones((4, 3))))
            zf.writestr("weight_hh_l0.npy", npy(np.eye(4)))
            zf.writestr("weight_hh_l0.npy", npy(np.full((4, 4), 7.0)))
    with pytest.raises(FileFormatError, match=r"dup\.npz holds several zip entries named 'weight_hh_l0.npy'"):
        load(path)


def test_load_zip_that_is_neither(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(FileFormatError, match="neither a torch.save checkpoint"):
        load(path)


def test_load_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        load(tmp_path / "nope.safetensors")


# ============================================================================ load(): objects
def test_load_dict_of_arrays_and_nested():
    sd = read_torch_state_dict(GRU_PT)
    with pytest.raises(InvalidOptionError, match="gru_reset_before"):
        load(sd)
    assert_same_model(load(sd, cell="gru"), load(GRU_PT))
    nested = {"state_dict": {k: v for k, v in sd.items()}, "epoch": 3}
    assert_same_model(load(nested, cell="gru"), load(GRU_PT))
    assert load(nested, cell="gru").metadata["rnn_prefix"] == "state_dict.gru."


def test_load_vanilla_and_ugrnn_state_dicts():
    rng = np.random.default_rng(1)
    H, M = 4, 3
    vanilla = {"weight_ih_l0": rng.normal(size=(H, M)), "weight_hh_l0": rng.normal(size=(H, H)) * 0.3}
    m = load(vanilla, nonlinearity="relu")
    assert (m.params.cell, m.params.nonlinearity) == ("vanilla", "relu")
    assert_array_equal(m.params.b_ih, np.zeros(H))
    ug = {"weight_ih": rng.normal(size=(2 * H, M)), "weight_hh": rng.normal(size=(2 * H, H))}
    with pytest.raises(InvalidOptionError, match="cell='ugrnn'"):
        load(ug)
    assert load(ug, cell="ugrnn").params.cell == "ugrnn"


def test_load_params_and_model_passthrough():
    p = fastfp.RNNParams.random("lstm", 4, 2, seed=0)
    m = load(p)
    assert isinstance(m, fastfp.Model) and m.params is p
    model = fastfp.Model(p, readout_weight=np.ones((2, 4)))
    assert load(model) is model
    assert load(model, cell="lstm") is model
    with pytest.raises(InvalidOptionError, match="G = 4"):
        load(model, cell="gru")
    with pytest.raises(ArgumentTypeError):
        load(3.5)


def _torch_gru_classifier(torch):
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(10, 6)
            self.gru = torch.nn.GRU(6, 16, batch_first=True)
            self.readout = torch.nn.Linear(16, 3)

    torch.manual_seed(7)
    return Classifier()


def test_load_in_memory_modules_equal_saved_files(tmp_path):
    torch = pytest.importorskip("torch")
    clf = _torch_gru_classifier(torch)
    torch.save(clf.state_dict(), tmp_path / "clf.pt")
    from_module, from_file = load(clf), load(tmp_path / "clf.pt")
    assert_same_model(from_module, from_file)
    assert from_module.metadata["torch_module"] == "nn.GRU"
    assert from_module.readout_weight is not None and from_module.embedding is not None
    with pytest.raises(InvalidOptionError, match="after the recurrent matmul"):
        load(clf, cell="gru_reset_before")
    lstm = torch.nn.LSTM(3, 5, num_layers=2)
    torch.save(lstm.state_dict(), tmp_path / "lstm.pt")
    assert_same_model(load(lstm, layer=1), load(tmp_path / "lstm.pt", layer=1))
    gru = torch.nn.GRU(3, 5).double()
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    assert_same_model(load(gru), load(tmp_path / "gru.pt"))
    # a dict of torch tensors is a PyTorch state dict: 3 gates = nn.GRU without asking
    assert_same_model(load(gru.state_dict()), load(gru))


def test_a_relu_rnn_module_is_read_as_relu_and_its_state_dict_warns_of_the_tanh_assumed(tmp_path):
    torch = pytest.importorskip("torch")

    class Clf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(6, 4)
            self.rnn = torch.nn.RNN(4, 8, nonlinearity="relu", batch_first=True)
            self.out = torch.nn.Linear(8, 3)

    torch.manual_seed(3)
    net = Clf().double()
    tokens = torch.tensor([[1, 5, 0, 3, 2, 2]])
    with torch.no_grad():
        ref = net.rnn(net.embed(tokens))[0].numpy()[0]
    import warnings

    for source in (net, net.rnn):  # live modules record their nonlinearity: read, no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = load(source)
        assert model.params.nonlinearity == "relu" and "read from the module" in model.params.source
        x = model.inputs(tokens.numpy()[0]) if model.embedding is not None else net.embed(tokens).detach().numpy()[0]
        assert_allclose(fastfp.rollout(model.params, None, x[None].astype(np.float64))[0], ref, atol=1e-12)
    with pytest.raises(InvalidOptionError, match="nonlinearity='tanh' given, but the module's RNN 'rnn' has nonlinearity='relu'"):
        load(net, nonlinearity="tanh")
    torch.save(net.state_dict(), tmp_path / "relu.pt")  # a state dict does not: tanh, said so
    with pytest.warns(UserWarning, match=r"argument 'source': .*relu.pt: a vanilla RNN.*assumed 'tanh'"):
        assert load(tmp_path / "relu.pt").params.nonlinearity == "tanh"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(tmp_path / "relu.pt", nonlinearity="relu").params.nonlinearity == "relu"


def test_an_embedding_not_named_embed_is_found_by_its_place_and_logits_match_torch(tmp_path):
    torch = pytest.importorskip("torch")

    class Tagger(torch.nn.Module):  # nn.Embedding named 'emb': no "embed" in any key
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(9, 4)
            self.rnn = torch.nn.LSTM(4, 7, batch_first=True)
            self.out = torch.nn.Linear(7, 3, bias=False)

        def forward(self, tokens):
            h, _ = self.rnn(self.emb(tokens))
            return self.out(h[:, -1])

    torch.manual_seed(2)
    net = Tagger().double()
    torch.save(net.state_dict(), tmp_path / "tagger.pt")
    tokens = np.array([[1, 5, 8, 0, 3], [2, 2, 7, 4, 6]])
    with torch.no_grad():
        want = net(torch.as_tensor(tokens)).numpy()
    for source in (tmp_path / "tagger.pt", net, net.state_dict()):
        m = load(source)
        assert m.metadata["embedding_key"] == "emb.weight" and m.metadata["readout_key"] == "out.weight"
        assert "before the RNN" in m.params.source
        h = fastfp.dynamics.rollout(m.params, np.zeros((2, 14)), m.inputs(tokens))
        assert_allclose(h[:, -1, :7] @ m.readout_weight.T, want, atol=1e-10)
    # the caller decides: none, or another key; a key that does not fit is an error naming it
    assert load(net, embedding_key=False).embedding is None
    assert load(tmp_path / "tagger.pt", embedding_key="emb.weight").metadata["embedding_key"] == "emb.weight"
    with pytest.raises(FileFormatError, match="'embedding_key'.*'nope'"):
        load(net, embedding_key="nope")
    with pytest.raises(InvalidOptionError, match="'readout_key': got 3"):
        load(net, readout_key=3)
    # a bias-free (V, M) weight after the RNN, or one with a bias, is not taken for an embedding
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    after = {k: sd[k] for k in sd if not k.startswith("emb.")} | {"post.weight": sd["emb.weight"]}
    assert load(after, cell="lstm").embedding is None
    biased = {"emb.weight": sd["emb.weight"], "emb.bias": np.zeros(9)} | {k: sd[k] for k in sd if not k.startswith("emb.")}
    assert load(biased, cell="lstm").embedding is None
    # the place is not trusted where it means nothing or something else: a safetensors file (keys
    # sorted by name), a square matrix (a bias-free input projection), the only readout-shaped
    # weight, or a weight ahead of another RNN than the one loaded
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(sd, tmp_path / "tagger.safetensors")
    assert load(tmp_path / "tagger.safetensors").embedding is None
    H = 7
    square = {"proj.weight": np.eye(4)} | {k: sd[k] for k in sd if not k.startswith("emb.")}
    assert load(square, cell="lstm").embedding is None
    head_first = {"head.weight": np.ones((3, H))} | {k: sd[k] for k in sd if k.startswith("rnn.")}
    hh = dict(head_first)
    hh["rnn.weight_ih_l0"] = np.ones((4 * H, H))  # M = H: the head's (3, H) fits as an embedding too
    m = load(hh, cell="lstm")
    assert m.embedding is None and m.metadata["readout_key"] == "head.weight"
    two = {"tok.weight": sd["emb.weight"]} | {k.replace("rnn.", "rnn1."): v for k, v in sd.items() if k.startswith("rnn.")}
    two |= {k.replace("rnn.", "rnn2."): v for k, v in hh.items() if k.startswith("rnn.")}
    two["rnn2.weight_ih_l0"] = np.ones((4 * H, H))
    assert load(two, cell="lstm", key_prefix="rnn2").embedding is None
    assert load(two, cell="lstm", key_prefix="rnn1").metadata["embedding_key"] == "tok.weight"
    # a fastfp .npz has no keys to pick
    fastfp.save_params(tmp_path / "m.npz", load(net))
    with pytest.raises(InvalidOptionError, match="embedding_key='emb.weight' given, but this source is not a state dict"):
        load(tmp_path / "m.npz", embedding_key="emb.weight")


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("writer", ["torch", "numpy"])
def test_safetensors_from_torch_state_dict_reproduces_forward(tmp_path, kind, writer):
    torch = pytest.importorskip("torch")
    st_mod = pytest.importorskip(f"safetensors.{writer}")
    torch.manual_seed(11)
    H, M, B = 8, 5, 3
    module = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(M, H, batch_first=True)
    path = tmp_path / f"{kind}.safetensors"
    sd = module.state_dict()
    if writer == "torch":
        st_mod.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        st_mod.save_file({k: v.numpy() for k, v in sd.items()}, str(path))
    model = load(path, cell="gru") if kind == "gru" else load(path)
    assert model.params.cell == kind and model.params.dtype == np.float32
    x = np.random.default_rng(2).normal(size=(B, T, M)).astype(np.float32)
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    expected = out.numpy()
    h = np.zeros((B, model.params.state_size), np.float32)
    for t in range(T):
        h = fastfp.step(model.params, h, x[:, t])
        assert_allclose(h[:, :H], expected[:, t], **TOL32)


# ============================================================================ no torch on file paths
def test_file_loading_never_imports_torch(tmp_path):
    plain = tmp_path / "sd.npz"
    np.savez(plain, **read_torch_state_dict(GRU_PT))
    own = tmp_path / "own.npz"
    fastfp.save_params(own, fastfp.RNNParams.random("gru", 4, 2, seed=0))
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, fastfp\n"
        "from fastfp.loading import load\n"
        "from fastfp.io_safetensors import _MAX_HEADER, read_safetensors\n"
        f"a = load({str(GRU_PT)!r})\n"
        f"b = load({str(GRU_ST)!r}, cell='gru')\n"
        f"c = load({str(plain)!r}, cell='gru')\n"
        f"d = load({str(own)!r})\n"
        f"e = load(dict(np.load({str(plain)!r})), cell='gru')\n"
        f"assert len(read_safetensors({str(GRU_ST)!r})) == 7\n"
        "for m in (b, c, e):\n"
        "    assert np.array_equal(m.params.w_hh, a.params.w_hh)\n"
        "assert d.params.cell == 'gru'\n"
        "assert sys.modules['torch'] is None\n"
        "assert 'safetensors' not in sys.modules\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_shipped_model_by_name_in_python():
    """'fastfp:data/NAME', the name `fastfp run` prints, reads the package's file from Python too."""
    here = Path(__file__).parent / "data" / "gru64_cat3.npz"
    want = fastfp.load_params(here)
    for fn in (fastfp.load, fastfp.load_params):
        got = fn("fastfp:data/gru64_cat3.npz")
        np.testing.assert_array_equal(got.params.w_hh, want.params.w_hh)
        assert got.vocab == want.vocab
    with pytest.raises(FileFormatError, match=r"argument 'source': 'fastfp:data/nope.npz' is not a shipped model; "
                                              r"fastfp ships fastfp:data/gru64_cat3.npz"):
        fastfp.load("fastfp:data/nope.npz")
    with pytest.raises(FileFormatError, match=r"argument 'path': 'fastfp:data/x' is not a shipped model"):
        fastfp.load_params("fastfp:data/x")


def test_load_warnings_name_the_callers_line(tmp_path):
    # Each loader nests differently; the warning is attributed to the line that called fastfp.
    import warnings

    rng = np.random.default_rng(0)
    sd = {"rnn.weight_ih_l0": rng.normal(size=(6, 3)), "rnn.weight_hh_l0": rng.normal(size=(6, 6)),
          "rnn.bias_ih_l0": np.zeros(6), "rnn.bias_hh_l0": np.zeros(6)}
    np.savez(tmp_path / "sd.npz", **sd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(sd)
        load(tmp_path / "sd.npz")
        fastfp.load_torch_rnn(GRU_PT, layer=0)  # nothing assumed: no warning
    assert len(caught) == 2 and {w.filename for w in caught} == {__file__}, [(w.filename, str(w.message)) for w in caught]
    assert all("assumed 'tanh'" in str(w.message) for w in caught)


def test_a_missing_file_is_named_by_its_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"argument 'source': .*nope.pt: no such file"):
        load(tmp_path / "nope.pt")
    for reader in (fastfp.FixedPoints.load, fastfp.load_params):
        with pytest.raises(FileNotFoundError, match=r"argument 'path': .*nope.npz: no such file"):
            reader(tmp_path / "nope.npz")
