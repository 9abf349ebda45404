"""fastfp's own .npz files read as untrusted input, and written so that a failed write loses nothing;
bad values of the containers (Model, FixedPoints) and of the solver's options refused by name."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fastfp
import fastfp._npz as npz
from fastfp import FixedPoints
from fastfp.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def params():
    return fastfp.RNNParams.random("gru", 4, 3, seed=0)


@pytest.fixture()
def entries(tmp_path, params):
    """The entries of a valid params file with a classifier around the layer."""
    path = tmp_path / "ok.npz"
    fastfp.save_params(path, fastfp.Model(params, np.eye(3), np.ones((2, 4)), np.zeros(2), ("a", "b", "c")))
    with np.load(path) as data:
        return dict(data)


def _write(path, entries, **changes):
    d = dict(entries)
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    np.savez(path, **d)
    return path


@pytest.mark.parametrize("changes, match", [
    ({"readout_wieght": np.ones((2, 4))}, r"unknown entries \['readout_wieght'\]"),
    ({"__fastfp_params__": np.array(0)}, "format version 0, expected 1..1"),
    ({"__fastfp_params__": np.array(1.9)}, "expected an integer format version"),
    ({"__fastfp_params__": np.array("1")}, "expected an integer format version"),
    ({"metadata": np.array("{not json")}, "'metadata' is not valid JSON"),
    ({"metadata": np.array("[1, 2]")}, "holds a JSON list, expected an object"),
    ({"vocab": np.array("abc")}, "'vocab' is <U3 of shape \\(\\), expected a 1-D array of strings"),
    ({"vocab": np.arange(3)}, "expected a 1-D array of strings"),
    ({"vocab": np.array(["a", "a", "b"])}, "lists the token 'a' twice"),
    ({"cell": np.array(b"gru")}, "entry 'cell' is |S3"),
    ({"b_hh": None}, "lacks the key 'b_hh'"),
])
def test_load_params_refuses_malformed_entries(tmp_path, entries, changes, match):
    path = _write(tmp_path / "bad.npz", entries, **changes)
    with pytest.raises(fastfp.FileFormatError, match=match) as info:
        fastfp.load_params(path)
    assert "bad.npz" in str(info.value)


@pytest.mark.parametrize("changes, error, match", [
    ({"embedding": np.full((3, 3), np.nan)}, fastfp.NonFiniteError, "'embedding': holds NaN"),
    ({"embedding": np.full((3, 3), "a")}, fastfp.DTypeError, "'embedding': got dtype <U1"),
    ({"readout_weight": np.ones((2, 4), np.int8)}, fastfp.DTypeError, "'readout_weight': got dtype int8"),
    ({"readout_bias": np.full(2, np.inf)}, fastfp.NonFiniteError, "'readout_bias': holds NaN or Inf"),
    ({"readout_weight": None}, fastfp.InvalidOptionError, "'readout_bias': given without a readout_weight"),
    ({"w_hh": np.full((12, 4), np.nan)}, fastfp.NonFiniteError, "'w_hh': holds NaN"),
])
def test_load_params_names_the_file_and_the_array(tmp_path, entries, changes, error, match):
    path = _write(tmp_path / "bad.npz", entries, **changes)
    with pytest.raises(error, match=match) as info:
        fastfp.load_params(path)
    assert "bad.npz" in str(info.value)


def test_a_newer_file_asks_for_an_upgrade_before_naming_its_new_entries(tmp_path, entries, fps):
    path = _write(tmp_path / "v2.npz", entries, __fastfp_params__=np.array(2), new_thing=np.zeros(2))
    for load in (fastfp.load_params, fastfp.load):
        with pytest.raises(fastfp.FileFormatError, match="format version 2.*upgrade fastfp"):
            load(path)
    fps.save(tmp_path / "fp.npz")
    with np.load(tmp_path / "fp.npz") as data:
        fp_entries = dict(data)
    newer = _write(tmp_path / "fp2.npz", fp_entries, __fastfp_fixed_points_format__=np.array(2), extra=np.zeros(6))
    with pytest.raises(fastfp.FileFormatError, match="FixedPoints format version 2.*upgrade fastfp"):
        FixedPoints.load(newer)


def test_valid_file_still_loads(tmp_path, entries):
    model = fastfp.load_params(_write(tmp_path / "same.npz", entries))
    assert model.vocab == ("a", "b", "c") and model.readout_bias.shape == (2,)
    assert not model.embedding.flags.writeable


def test_npz_header_that_lies_about_its_shape_is_refused_before_allocating(tmp_path, entries):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 4), }"
    header += " " * (118 - len(header)) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in entries.items():
            if k == "w_hh":
                zf.writestr("w_hh.npy", npy)
            else:
                buf = io.BytesIO()
                np.save(buf, v)
                zf.writestr(k + ".npy", buf.getvalue())
    with pytest.raises(fastfp.FileFormatError, match=r"'w_hh' declares shape \(100000000000, 4\).*holds 0 bytes"):
        fastfp.load_params(path)


def test_npz_that_expands_past_the_memory_limit_is_refused(tmp_path, entries, monkeypatch):
    path = _write(tmp_path / "big.npz", entries)
    fastfp.load_params(path)
    monkeypatch.setattr(npz, "memory_limit_bytes", lambda: 100)
    with pytest.raises(fastfp.FileFormatError, match="expand to .* more than half the memory this process may use"):
        fastfp.load_params(path)
    with pytest.raises(fastfp.FileFormatError, match="more than half"):
        npz.read_npz(path, where="x")


def test_npz_object_entry_is_refused_without_unpickling(tmp_path, entries):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _write(tmp_path / "evil.npz", entries, source=np.array([Evil()], dtype=object))
    with pytest.raises(fastfp.FileFormatError, match="holds Python objects"):
        fastfp.load_params(path)
    assert not marker.exists()


def _failing_savez(*args, **kwargs):
    fh = args[0]
    fh.write(b"PK\x03\x04 half a file")
    raise OSError(27, "File too large")


def test_failed_save_params_keeps_the_previous_file(tmp_path, params, monkeypatch):
    path = tmp_path / "model.npz"
    fastfp.save_params(path, params)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", _failing_savez)
    with pytest.raises(OSError, match="File too large"):
        fastfp.save_params(path, fastfp.RNNParams.random("gru", 4, 3, seed=1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary left


@pytest.fixture()
def fps(params):
    h0 = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 4))
    return fastfp.find_fixed_points(params, h0, np.zeros(3)).decompose(params)


def test_failed_fixed_points_save_keeps_the_previous_file(tmp_path, fps, monkeypatch):
    path = tmp_path / "fp.npz"
    fps.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", _failing_savez)
    with pytest.raises(OSError):
        fps[:2].save(path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("changes, match", [
    ({"status": np.full(6, 99)}, r"holds codes \[99\] that are not fastfp.Status values"),
    ({"status": np.zeros(6)}, "'status' has dtype float64, expected integers"),
    ({"eigvecs_right": np.zeros((6, 4, 2), complex)}, "'eigvecs_right': has shape \\(6, 4, 2\\)"),
    ({"x0": np.zeros((3, 4))}, "'x0': has 3 rows, expected 6"),
    ({"fx": np.zeros((6, 5))}, "'fx': has shape \\(6, 5\\), expected \\(6, 4\\)"),
    ({"junk": np.zeros(6)}, r"unknown entries \['junk'\]"),
    ({"__metadata_json__": np.array("[1]")}, "holds a JSON list"),
    ({"__fastfp_fixed_points_format__": np.array(-1)}, "format version -1"),
])
def test_fixed_points_load_refuses_malformed_entries(tmp_path, fps, changes, match):
    path = tmp_path / "fp.npz"
    fps.save(path)
    with np.load(path) as data:
        entries = dict(data)
    bad = _write(tmp_path / "bad.npz", entries, **changes)
    with pytest.raises(fastfp.FileFormatError, match=match) as info:
        FixedPoints.load(bad)
    assert "bad.npz" in str(info.value)
    FixedPoints.load(path)  # the untouched file still loads


def test_fixed_points_constructor_checks_shapes(fps):
    fields = {name: getattr(fps, name) for name in ("x", "x0", "inputs", "fx", "residual", "q", "grad_norm",
                                                    "status", "nit")}
    with pytest.raises(fastfp.ShapeError, match="'x': has shape \\(24,\\), expected \\(B, N\\)"):
        FixedPoints(**{**fields, "x": fps.x.ravel()})
    with pytest.raises(fastfp.ShapeError, match="'eigvals': has 5 columns, expected at most N = 4"):
        FixedPoints(**fields, eigvals=np.zeros((6, 5), complex))
    with pytest.raises(fastfp.InvalidOptionError, match="'metadata': got list"):
        FixedPoints(**fields, metadata=[1])
    top = FixedPoints(**fields, eigvals=np.zeros((6, 2), complex), eigvecs_right=np.zeros((6, 4, 2), complex))
    assert top.eigvals.shape == (6, 2)


def test_what_save_writes_load_reads(tmp_path, fps, params):
    # the containers refuse what the loaders would refuse, so no file is written that cannot be read
    with pytest.raises(fastfp.InvalidOptionError, match="'vocab': lists the token 'a' twice"):
        fastfp.Model(params, np.eye(3), vocab=["a", "b", "a"])
    with pytest.raises(fastfp.InvalidOptionError, match="'vocab': a token holds the character NUL"):
        fastfp.Model(params, np.eye(3), vocab=["a", "b", "a\x00"])
    from dataclasses import replace

    for name in ("nit", "status"):
        with pytest.raises(fastfp.DTypeError, match=f"'{name}': has dtype float64, expected integers"):
            replace(fps, **{name: getattr(fps, name).astype(float)})
    with pytest.raises(fastfp.ShapeError, match="'inputs': has shape \\(3,\\), expected \\(B, M\\)"):
        replace(fps[:0], inputs=np.zeros(3))


def test_concatenate_refuses_parts_decomposed_differently(params, fps):
    with pytest.raises(fastfp.InvalidOptionError, match="'eigvals' has per-point shapes"):
        fastfp.fixed_points.concatenate([fps, fps.decompose(params, k=2)])


def test_save_follows_a_symlink_and_keeps_the_mode(tmp_path, params):
    target = tmp_path / "real.npz"
    fastfp.save_params(target, params)
    target.chmod(0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    other = fastfp.RNNParams.random("gru", 4, 3, seed=5)
    fastfp.save_params(link, other)
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o640
    np.testing.assert_array_equal(fastfp.load_params(target).params.w_hh, other.w_hh)


def test_a_damaged_format_marker_is_a_file_format_error(tmp_path, entries):
    path = tmp_path / "crc.npz"
    np.savez(path, **entries)  # stored, not deflated: the marker's bytes can be flipped in place
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("__fastfp_params__.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.compress_size - 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(fastfp.FileFormatError, match="entry '__fastfp_params__' is unreadable"):
        fastfp.load_params(path)


def test_atomic_temporary_is_writable_while_written_and_gets_the_mode_after(tmp_path):
    from fastfp._atomic import atomic_path

    target = tmp_path / "ro.txt"
    target.write_text("old")
    target.chmod(0o444)
    with atomic_path(target) as tmp:
        assert tmp.stat().st_mode & 0o200  # owner may write, whatever the final mode
        tmp.write_text("new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o444
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "no" / "where")
    with atomic_path(dangling) as tmp:
        tmp.write_text("x")
    assert not dangling.is_symlink() and dangling.read_text() == "x"


def test_model_refuses_bad_parts(params):
    with pytest.raises(fastfp.InvalidOptionError, match="'readout_bias': given without a readout_weight"):
        fastfp.Model(params, readout_bias=np.ones(2))
    with pytest.raises(fastfp.InvalidOptionError, match="'vocab': got str"):
        fastfp.Model(params, np.eye(3), vocab="abc")
    with pytest.raises(fastfp.InvalidOptionError, match="'params': got dict"):
        fastfp.Model({"w_hh": 1})
    with pytest.raises(fastfp.NonFiniteError, match="'readout_weight'"):
        fastfp.Model(params, readout_weight=np.full((2, 4), np.nan))


@pytest.mark.parametrize("kwargs, match", [
    ({"atol": "1e-3"}, "'atol': got '1e-3' \\(str\\), expected a number"),
    ({"atol": True}, "'atol': got True \\(bool\\), expected a number"),
    ({"slow_speed": np.bool_(True), "slow_ratio": 0.05}, "'slow_speed': got .*True.* \\(bool\\)"),
    ({"dtype": "bogus"}, "'dtype': got 'bogus', expected float32 or float64"),
])
def test_solver_options_refuse_strings_bools_and_unknown_dtypes(params, kwargs, match):
    with pytest.raises(fastfp.InvalidOptionError, match=match):
        fastfp.find_fixed_points(params, np.zeros((2, 4)), np.zeros(3), **kwargs)


def test_a_0d_array_tolerance_is_a_number(params):
    fp = fastfp.find_fixed_points(params, np.zeros((2, 4)), np.zeros(3), atol=np.array(1e-8))
    assert fp.metadata["atol"] == 1e-8


@pytest.mark.parametrize("scale", [np.nan, -1.0, 0, "0.1", True])
def test_random_params_refuse_bad_scale(scale):
    with pytest.raises(fastfp.InvalidOptionError, match="'scale'"):
        fastfp.RNNParams.random("gru", 4, 3, scale=scale)


def test_cli_refuses_an_output_that_is_the_input_or_has_no_folder(tmp_path):
    weights = tmp_path / "w.npz"
    weights.write_bytes((DATA / "gru64_cat3.npz").read_bytes())
    before = weights.read_bytes()
    runner = CliRunner()
    for command in ("find", "convert"):
        res = runner.invoke(main, [command, str(weights), "-o", str(weights)])
        assert res.exit_code == 2 and "an input file of this command" in res.output, res.output
        res = runner.invoke(main, [command, str(weights), "-o", str(tmp_path / "no" / "x.npz")])
        assert res.exit_code == 2 and "does not exist" in res.output, res.output
    assert weights.read_bytes() == before


def test_cli_refuses_outputs_that_are_other_inputs_devices_or_folders(tmp_path):
    """Every input of a command is protected from its outputs (-o and --report), and a device, FIFO
    or folder at an output path is refused before any work (a rename would replace a device)."""
    import os

    weights = tmp_path / "w.npz"
    weights.write_bytes((DATA / "gru64_cat3.npz").read_bytes())
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(fastfp.load(weights).vocab) + "\n")
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\nw0 w0 the,w0\nw1 the,w1\nw2 w2,w2\n")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(4))
    fp = tmp_path / "fp.npz"
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "find", str(weights), "-o", str(fp), "--states", "4", "--docs", "4"]).exit_code == 0
    files = {p: p.read_bytes() for p in (weights, vocab, corpus, x, fp)}
    cases = [
        (["find", str(weights), "--corpus", str(corpus), "-o", str(corpus)], "an input file of this command"),
        (["find", str(weights), "--input", str(x), "-o", str(x)], "an input file of this command"),
        (["convert", str(weights), "--vocab", str(vocab), "-o", str(vocab)], "an input file of this command"),
        (["run", str(weights), "--report", str(weights)], "an input file of this command"),
        (["run", str(weights), "--corpus", str(corpus), "--report", str(corpus)], "an input file of this command"),
        (["analyze", str(fp), "--report", str(fp)], "an input file of this command"),
        (["convert", str(weights), "-o", str(tmp_path)], "is a directory"),  # click's own check
        (["convert", str(weights), "-o", "-"], "not to standard output"),
    ]
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    cases.append((["convert", str(weights), "-o", str(fifo)], "not a regular file"))
    for args, message in cases:
        res = runner.invoke(main, args)
        assert res.exit_code in (1, 2) and message in res.output + res.stderr, (args, res.output + res.stderr)
    assert all(p.read_bytes() == b for p, b in files.items())
    assert fifo.is_fifo() and not (tmp_path / "-").exists()


def test_saves_refuse_devices_fifos_and_folders_naming_the_path(tmp_path):
    import os

    params = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    with pytest.raises(fastfp.InvalidOptionError, match="not a regular file"):
        fastfp.save_params(fifo, params)
    assert fifo.is_fifo()
    with pytest.raises(fastfp.InvalidOptionError, match="is a folder"):
        fastfp.save_params(tmp_path, params)
    with pytest.raises(fastfp.InvalidOptionError, match=r"the folder .*nodir.* does not exist"):
        fastfp.save_params(tmp_path / "nodir" / "p.npz", params)
    # a name near the file system's limit still saves (the temporary name is shortened)
    long = tmp_path / ("b" * 246 + ".npz")
    fastfp.save_params(long, params)
    assert fastfp.load_params(long).params.hidden_size == 4
