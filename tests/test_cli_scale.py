"""CLI options of the large-N and scale-out paths: --jacobian, --eig-k, --backend gpu, and the Dask
options of `find` and `study`."""

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

import fastfp
from fastfp.cli import main

DATA = pathlib.Path(__file__).parent / "data"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_find_matrix_free_with_top_k_eigs(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "32", "--docs", "8",
                "--jacobian", "matrix_free", "--eig-k", "4", "--method", "newton")
    assert r.exit_code == 0, r.output
    fp = fastfp.FixedPoints.load(out)
    assert len(fp) > 0 and fp.metadata["jacobian"] == "matrix_free"
    assert fp.eigvals.shape == (len(fp), 4) and fp.jacobian is None
    # The saved eigenvalues are the 4 largest |lambda| of the dense Jacobian at each saved point.
    model = fastfp.load_params(DATA / "gru64_cat3.npz")
    J = fastfp.jacobian(model.params.astype(np.float64), fp.x, fp.inputs)
    mags = -np.sort(-np.abs(np.linalg.eigvals(J)), axis=1)[:, :4]
    np.testing.assert_allclose(-np.sort(-np.abs(fp.eigvals), axis=1), mags, atol=1e-8)
    a = _invoke("analyze", out, "--json")
    assert a.exit_code == 0, a.output


def test_find_eig_k_too_large_is_a_usage_error(tmp_path):
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "8", "--docs", "8",
                "--eig-k", "64")
    assert r.exit_code == 2 and "--eig-k" in r.output


def test_find_gpu_without_cupy_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    import fastfp.backends as backends

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    monkeypatch.setattr(backends, "_cache", {})
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "8", "--docs", "8",
                "--backend", "gpu")
    assert r.exit_code == 1
    assert "fastfp-rnn[gpu]" in r.stderr and "Traceback" not in r.stderr


def _sharded_command(tmp_path, command):
    """A small `find` or `study` command line, before its Dask options."""
    if command == "find":
        return ["find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "8", "--docs", "8"]
    return ["study", "--out", tmp_path / "s"]


@pytest.mark.parametrize("command", ["find", "study"])
def test_scheduler_and_workers_together_is_a_usage_error(tmp_path, command):
    args = _sharded_command(tmp_path, command)
    r = _invoke(*args, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2")
    assert r.exit_code == 2 and "not both" in r.output


@pytest.mark.parametrize("command", ["find", "study"])
def test_connect_timeout_needs_a_scheduler(tmp_path, command):
    args = _sharded_command(tmp_path, command)
    r = _invoke(*args, "--workers", "2", "--connect-timeout", "5")
    assert r.exit_code == 2 and "--connect-timeout: an option of --scheduler" in r.output


@pytest.mark.parametrize("command", ["find", "study"])
def test_unreachable_scheduler_gives_up_after_connect_timeout(tmp_path, command):
    pytest.importorskip("distributed")
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _sharded_command(tmp_path, command)  # study's default battery: quick
    t0 = time.perf_counter()
    r = _invoke(*args, "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1")
    waited = time.perf_counter() - t0
    assert r.exit_code == 1, r.output
    assert f"cannot connect to tcp://127.0.0.1:{port} within 1.0 s" in r.stderr and "Traceback" not in r.stderr
    assert f"connecting to tcp://127.0.0.1:{port} (up to 1 s" in r.stderr
    assert waited < 20  # the default 30 s would fail this (generous: dask's own retries add a few seconds)


def test_find_on_a_local_dask_cluster_equals_serial(tmp_path):
    pytest.importorskip("distributed")
    common = ["--states", "40", "--docs", "8", "--seed", "5", "--keep", "all"]
    serial = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "serial.npz", *common)
    assert serial.exit_code == 0, serial.output
    # the shipped name: its file is this installation's (or a zip import's temporary copy), which a
    # remote worker cannot see, so the workers read a copy in the shards folder
    dist = _invoke("-q", "find", "fastfp:data/gru64_cat3.npz", "-o", tmp_path / "dist.npz", *common,
                   "--workers", "2", "--shard-size", "16")
    assert dist.exit_code == 0, dist.output
    a, b = fastfp.FixedPoints.load(tmp_path / "serial.npz"), fastfp.FixedPoints.load(tmp_path / "dist.npz")
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_allclose(a.x, b.x, atol=1e-8)
    shards = tmp_path / "dist.npz.shards"
    config = json.loads((shards / "shards.json").read_text())
    assert pathlib.Path(config["weights"]["path"]) == (shards / "shipped-gru64_cat3.npz").resolve()
    assert (shards / "shipped-gru64_cat3.npz").read_bytes() == (DATA / "gru64_cat3.npz").read_bytes()
    assert json.loads(dist.stdout)["points"] == 40
    assert json.loads(dist.stdout)["model"] == "fastfp:data/gru64_cat3.npz"


def test_find_with_a_shipped_model_and_a_shards_path_that_is_a_file(tmp_path):
    pytest.importorskip("distributed")
    (tmp_path / "fp.npz.shards").write_text("not a folder")  # the default shards folder of -o fp.npz
    r = _invoke("-q", "find", "fastfp:data/gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "8",
                "--docs", "8", "--workers", "1")
    assert r.exit_code == 1 and "option '--results-dir'" in r.output and "is not a directory" in r.output, r.output
    assert (tmp_path / "fp.npz.shards").read_text() == "not a folder"


def test_api_errors_name_the_command_line_options(tmp_path):
    common = ["find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "4", "--docs", "4"]
    r = _invoke(*common, "--noise", "1e308")
    assert r.exit_code == 1 and "the initial states (--states, --noise): holds NaN or Inf" in r.stderr
    assert "argument" not in r.stderr
    # values the API would refuse later are usage errors of the options themselves now
    r = _invoke(*common, "--slow-ratio", "inf")
    assert r.exit_code == 2 and "Invalid value for '--slow-ratio': 'inf' is not a finite number" in r.output
    r = _invoke(*common, "--seed", "-5")
    assert r.exit_code == 2 and "Invalid value for '--seed': -5 is not in the range x>=0" in r.output


def test_running_out_of_memory_is_a_one_line_error(tmp_path):
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "1000000000000", "--docs", "4")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert "fastfp: error: out of memory (" in r.stderr and "--states" in r.stderr
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--maxiter", "99999999999999999999")
    assert r.exit_code == 2 and "--maxiter" in r.output


def test_bench_quick_and_full_exclude_each_other():
    r = _invoke("bench", "--quick", "--full")
    assert r.exit_code == 2 and "'--quick' and '--full' exclude each other" in r.output
    r = _invoke("bench", "--repeats", "100000000000000000000")
    assert r.exit_code == 2 and "--repeats" in r.output


def test_a_vocabulary_of_a_one_hot_model_names_its_inputs():
    p = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    with pytest.raises(fastfp.ShapeError, match=r"got 2 tokens, expected 3 \(the input size"):
        fastfp.Model(p, vocab=("a", "b"))
    with pytest.raises(fastfp.InvalidOptionError, match="empty token"):
        fastfp.Model(p, vocab=("a", "", "c"))


def test_option_names_are_used_only_where_they_mean_the_same():
    from fastfp.cli import _cli_names, main

    run, find = main.commands["run"], main.commands["find"]
    # part_speed_scale's 'states' are visited states; run's --states is a count of starts
    msg = "argument 'states': the hidden part h is the same in every state"
    assert _cli_names(msg, run) == msg
    assert _cli_names("argument 'slow_ratio': got inf", run) == "argument 'slow_ratio': got inf"  # run has none
    assert _cli_names("argument 'slow_ratio': got inf", find) == "option '--slow-ratio': got inf"
    assert _cli_names("argument 'x': holds NaN", find) == "option '--input': holds NaN"


def test_an_unusable_default_report_points_to_no_report(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    os.mkfifo("fastfp-report.html")
    r = _invoke("-q", "run", "--states", "8", "--docs", "4")
    assert r.exit_code == 1 and "the default report fastfp-report.html; pass --report PATH or --no-report" in r.stderr
