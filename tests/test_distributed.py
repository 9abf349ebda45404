"""fastfp.distributed on a real 2-worker LocalCluster: batteries, shards, worker deaths, resume.

The task functions and specs below are top-level so that the worker processes can import them:
Dask's spawned workers get this process's ``sys.path``, which holds ``tests/``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import fastfp  # noqa: E402
from fastfp import distributed as fd  # noqa: E402
from fastfp.errors import (  # noqa: E402
    ArgumentTypeError,
    BackendUnavailableError,
    FileFormatError,
    InvalidOptionError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
    TaskFailedError,
)
from fastfp.fixed_points import FixedPoints  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------- task functions
@dataclass(frozen=True)
class CountSpec:
    """A cheap task: value -> value**2, leaving one line in counts/<key>.log per execution."""

    name: str
    value: int
    die_once: bool = False  # kill the worker process the first time
    fail_until_fixed: bool = False  # raise while out_dir/fixed does not exist
    sleep: float = 0.0

    @property
    def key(self) -> str:
        return self.name


def counted(spec: CountSpec, out_dir: Path) -> dict:
    counts = out_dir / "counts"
    counts.mkdir(exist_ok=True)
    with open(counts / f"{spec.key}.log", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if spec.die_once:
        marker = out_dir / f"{spec.key}.died"
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-task, as under an OOM kill
    if spec.fail_until_fixed and not (out_dir / "fixed").exists():
        raise RuntimeError(f"planned failure of {spec.key}")
    time.sleep(spec.sleep)
    return {"key": spec.key, "value": spec.value, "square": spec.value**2, "pid": os.getpid()}


def executions(results_dir: Path, key: str) -> int:
    path = Path(results_dir) / "counts" / f"{key}.log"
    return len(path.read_text().split()) if path.exists() else 0


@dataclass(frozen=True)
class FPSpec:
    """Fixed points of a small random vanilla RNN saved at ``weights``."""

    name: str
    weights: str
    seed: int

    @property
    def key(self) -> str:
        return self.name


def small_fixed_points(spec: FPSpec, out_dir: Path) -> dict:
    params = fastfp.load(spec.weights).params
    h0 = np.random.default_rng(spec.seed).uniform(-1, 1, size=(24, params.state_size))
    fp = fastfp.find_fixed_points(params, h0).unique(1e-3)
    fp.save(out_dir / f"{spec.key}.npz")
    order = np.lexsort(fp.x.T[::-1])
    return {"key": spec.key, "n_distinct": len(fp), "points": fp.x[order].tolist(),
            "status": fp.status[order].tolist()}


def returns_list(spec, out_dir):
    return [spec.value]


def returns_array(spec, out_dir):
    return {"x": np.zeros(3)}


@dataclass(frozen=True)
class BigSpec:
    data: np.ndarray
    key: str = "big"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
                                  env={"NUMBA_NUM_THREADS": "1"})
    yield cl
    cl.close()


@pytest.fixture(scope="module")
def client(cluster):
    import distributed

    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gru_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "gru.npz"
    params = fastfp.RNNParams.random("gru", 6, 3, scale=2.0 / np.sqrt(6), seed=3)
    fastfp.save_params(path, params)
    return path


@pytest.fixture(scope="module")
def multi_weights(tmp_path_factory):
    """A vanilla RNN with several fixed points (3 roots and 2 slow points at the test's input)."""
    path = tmp_path_factory.mktemp("weights") / "multi.npz"
    fastfp.save_params(path, fastfp.RNNParams.random("vanilla", 8, 3, scale=3.0 / np.sqrt(8), seed=1))
    return path


@pytest.fixture(scope="module")
def vanilla_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vanilla.npz"
    fastfp.save_params(path, fastfp.RNNParams.random("vanilla", 5, 2, scale=1.6 / np.sqrt(5), seed=11))
    return path


def _manifest(results_dir) -> dict:
    return json.loads((Path(results_dir) / fd.MANIFEST_NAME).read_text())


def _assert_same_points(a: FixedPoints, b: FixedPoints, atol=1e-8):
    """Two sets of points equal up to order: every point of each has a twin in the other."""
    assert len(a) == len(b)
    d = np.linalg.norm(a.x[:, None, :] - b.x[None, :, :], axis=2)
    assert d.min(axis=1).max() <= atol
    assert d.min(axis=0).max() <= atol


# ---------------------------------------------------------------------------- batteries
def test_battery_matches_serial_loop(client, vanilla_weights, tmp_path):
    specs = [FPSpec(f"net-{i}", str(vanilla_weights), seed=i) for i in range(4)]
    report = fd.run_tasks(specs, small_fixed_points, tmp_path / "res", client=client, progress=False)
    serial_dir = tmp_path / "serial"
    serial_dir.mkdir()
    serial = [small_fixed_points(s, serial_dir) for s in specs]
    assert report.keys == tuple(s.key for s in specs)
    assert report.computed and sorted(report.computed) == sorted(report.keys) and report.reused == ()
    for got, want in zip(report.rows, serial):
        assert got["n_distinct"] == want["n_distinct"] and got["status"] == want["status"]
        np.testing.assert_allclose(got["points"], want["points"], atol=1e-9)
    assert report.row("net-2") == report.rows[2]
    # One result file and one artifact per task, and a manifest that says so.
    for s in specs:
        rec = json.loads((tmp_path / "res" / fd.ROWS_DIR / f"{s.key}.json").read_text())
        assert rec["key"] == s.key and rec["worker"].startswith("tcp://127.0.0.1:")
        assert len(FixedPoints.load(tmp_path / "res" / f"{s.key}.npz")) == rec["row"]["n_distinct"]
    man = _manifest(tmp_path / "res")
    assert man["fn"].endswith("small_fixed_points")
    assert {k: v["status"] for k, v in man["tasks"].items()} == {s.key: "done" for s in specs}
    assert man["tasks"]["net-1"]["spec"]["seed"] == 1 and man["tasks"]["net-1"]["finished"]
    assert not list((tmp_path / "res").rglob(f"*{fd._TMP_MARK}*"))  # no temp file left behind
    with pytest.raises(InvalidOptionError, match="'key'"):
        report.row("nope")


def test_scheduler_address_and_workers_see_distinct_processes(cluster, tmp_path, capsys):
    specs = [CountSpec(f"t{i}", i, sleep=0.2) for i in range(6)]
    report = fd.run_tasks(specs, counted, tmp_path, scheduler=cluster.scheduler_address, progress=True)
    assert [r["square"] for r in report.rows] == [i * i for i in range(6)]
    assert len({r["pid"] for r in report.rows} - {os.getpid()}) == 2  # both workers, never this process
    err = capsys.readouterr().err
    assert "6 tasks: 0 done before, 6 to run on 2 workers" in err and "[6/6]" in err and "6 computed" in err


def test_worker_killed_mid_run_is_retried_and_nothing_lost(client, tmp_path):
    specs = [CountSpec(f"t{i}", i, die_once=(i == 1), sleep=0.1) for i in range(5)]
    report = fd.run_tasks(specs, counted, tmp_path, client=client, progress=False)
    assert (tmp_path / "t1.died").exists()  # the worker really died once
    assert [r["square"] for r in report.rows] == [i * i for i in range(5)]
    assert executions(tmp_path, "t1") == 2  # the killed attempt and the retry
    assert all(executions(tmp_path, f"t{i}") == 1 for i in (0, 2, 3, 4))
    assert {v["status"] for v in _manifest(tmp_path)["tasks"].values()} == {"done"}


def test_failed_task_reported_then_resume_computes_only_it(client, tmp_path):
    specs = [CountSpec(f"t{i}", i, fail_until_fixed=(i == 2)) for i in range(5)]
    with pytest.raises(TaskFailedError, match="1 of 5 tasks failed: t2: RuntimeError: planned failure") as info:
        fd.run_tasks(specs, counted, tmp_path, client=client, retries=1, progress=False)
    assert set(info.value.failures) == {"t2"}
    assert executions(tmp_path, "t2") == 2  # first try and one retry
    man = _manifest(tmp_path)
    assert man["tasks"]["t2"]["status"] == "failed" and "planned failure" in man["tasks"]["t2"]["error"]
    assert all(man["tasks"][f"t{i}"]["status"] == "done" for i in (0, 1, 3, 4))

    (tmp_path / "fixed").touch()
    report = fd.run_tasks(specs, counted, tmp_path, client=client, progress=False)
    assert report.computed == ("t2",) and report.reused == ("t0", "t1", "t3", "t4")
    assert [r["square"] for r in report.rows] == [i * i for i in range(5)]
    assert [executions(tmp_path, f"t{i}") for i in range(5)] == [1, 1, 3, 1, 1]
    man = _manifest(tmp_path)
    assert [sorted(r["computed"]) for r in man["runs"]] == [["t0", "t1", "t3", "t4"], ["t2"]]
    assert man["runs"][0]["failed"].keys() == {"t2"} and man["runs"][1]["failed"] == {}
    # A third run computes nothing and starts no cluster.
    again = fd.run_tasks(specs, counted, tmp_path, progress=False)
    assert again.computed == () and [executions(tmp_path, f"t{i}") for i in range(5)] == [1, 1, 3, 1, 1]


def test_killed_run_resumes_without_recomputing(client, tmp_path):
    """SIGKILL the whole run (client, scheduler and workers) mid-way, then resume."""
    n = 8
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_distributed import CountSpec, counted
        from fastfp.distributed import run_tasks
        specs = [CountSpec(f"t{{i}}", i, sleep=0.6) for i in range({n})]
        run_tasks(specs, counted, {str(tmp_path)!r}, n_workers=2, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, cwd=os.getcwd(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = tmp_path / fd.ROWS_DIR
    try:
        deadline = time.monotonic() + 120
        while len(list(rows.glob("t*.json"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no task finished in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = sorted(p.stem for p in rows.glob("t*.json"))
    assert 3 <= len(finished) < n
    assert _manifest(tmp_path)["runs"][0]["finished"] is None  # the run really was cut short

    specs = [CountSpec(f"t{i}", i, sleep=0.0) for i in range(n)]  # keys are what counts, not the sleep
    report = fd.run_tasks(specs, counted, tmp_path, client=client, progress=False)
    assert sorted(report.reused) == finished
    assert sorted(report.computed) == sorted(set(report.keys) - set(finished))
    assert [r["square"] for r in report.rows] == [i * i for i in range(n)]
    for key in finished:
        assert executions(tmp_path, key) == 1  # finished before the kill: never run again
    for key in report.computed:
        assert executions(tmp_path, key) >= 1


def test_bad_rows_are_task_failures(client, tmp_path):
    specs = [CountSpec("a", 1)]
    with pytest.raises(TaskFailedError, match="returned list, expected a dict"):
        fd.run_tasks(specs, returns_list, tmp_path / "list", client=client, retries=0, progress=False)
    with pytest.raises(TaskFailedError, match="not JSON-serialisable"):
        fd.run_tasks(specs, returns_array, tmp_path / "array", client=client, retries=0, progress=False)
    assert not (tmp_path / "array" / fd.ROWS_DIR / "a.json").exists()


# ---------------------------------------------------------------------------- shards
@pytest.mark.parametrize("per_point_input", [False, True], ids=["shared-x", "per-point-x"])
def test_sharded_matches_serial(request, multi_weights, tmp_path, per_point_input):
    rng = np.random.default_rng(5)
    params = fastfp.load(multi_weights).params
    h0 = rng.uniform(-1, 1, size=(40, params.state_size))
    x = rng.normal(size=(40, 3)) * 0.3 if per_point_input else np.array([0.2, -0.1, 0.4])
    serial = fastfp.find_fixed_points(params, h0, x)
    # The shared-input case runs on the default LocalCluster (started and closed by the call).
    kwargs = {} if not per_point_input else {"client": request.getfixturevalue("client")}
    fp = fd.find_fixed_points_sharded(multi_weights, h0, tmp_path, x=x, shard_size=7, progress=False, **kwargs)

    everything = FixedPoints.load(tmp_path / "all-points.npz")
    assert len(everything) == 40 and sorted(p.name for p in tmp_path.glob("shard-*.npz")) == [
        f"shard-{i:04d}.npz" for i in range(6)]
    # Equal to the solver's tolerance, not bitwise: BLAS may round a batch of 7 rows differently
    # from one of 40, and residuals of 1e-10 leave the roots uncertain by ~1e-8.
    np.testing.assert_array_equal(everything.status, serial.status)
    np.testing.assert_allclose(everything.x, serial.x, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(everything.x0, h0)
    np.testing.assert_array_equal(everything.inputs, serial.inputs)
    # A meaningful comparison: most points are roots, and the shared input has several of them.
    assert serial.success.sum() >= 25
    if not per_point_input:
        assert serial.unique(1e-3).success.sum() >= 3
    _assert_same_points(fp, serial.unique(1e-3), atol=1e-6)
    _assert_same_points(FixedPoints.load(tmp_path / "fixed-points.npz"), fp, atol=0)
    meta = fp.metadata["sharded"]
    assert meta["n_shards"] == 6 and meta["computed_shards"] == 6 and meta["reused_shards"] == 0


def test_sharded_resume_tells_long_speed_scales_apart(client, tmp_path):
    # N = 80 > 64: the fingerprint must hold the units themselves, not a summary of the array.
    weights = tmp_path / "lstm.npz"
    params = fastfp.RNNParams.random("lstm", 40, 3, scale=1.0 / np.sqrt(40), seed=1)
    fastfp.save_params(weights, params)
    h0_path = tmp_path / "h0.npy"
    np.save(h0_path, np.random.default_rng(0).uniform(-0.5, 0.5, size=(6, 80)))
    res = tmp_path / "res"
    units = np.ones(80)
    first = fd.find_fixed_points_sharded(weights, h0_path, res, shard_size=3, client=client, progress=False,
                                         unique_tol=None, slow_ratio=0.05, slow_speed=1e-2, speed_scale=units)
    assert first.metadata["speed_scale"] == [1.0] * 80
    units[-1] = 3.0
    with pytest.raises(InvalidOptionError, match="another problem .*solver_options"):
        fd.find_fixed_points_sharded(weights, h0_path, res, shard_size=3, client=client, progress=False,
                                     unique_tol=None, slow_ratio=0.05, slow_speed=1e-2, speed_scale=units)


def test_sharded_resume_skips_finished_shards(client, gru_weights, tmp_path):
    rng = np.random.default_rng(9)
    h0_path = tmp_path / "h0.npy"
    np.save(h0_path, rng.uniform(-1, 1, size=(30, 6)))
    res = tmp_path / "res"
    first = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client,
                                         progress=False, unique_tol=None)
    assert len(first) == 30
    (res / "shard-0002.npz").unlink()
    (res / fd.ROWS_DIR / "shard-0002.json").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in res.glob("shard-*.npz")}
    again = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client,
                                         progress=False, unique_tol=None)
    assert _manifest(res)["runs"][-1]["computed"] == ["shard-0002"]
    assert again.metadata["sharded"]["computed_shards"] == 1 and again.metadata["sharded"]["reused_shards"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in res.glob("shard-*.npz") if p.name in stamps} == stamps
    np.testing.assert_array_equal(again.x, first.x)
    np.testing.assert_array_equal(again.status, first.status)

    # The directory belongs to this problem: other states or options are refused, not mixed in.
    other = tmp_path / "other.npy"
    np.save(other, rng.uniform(-1, 1, size=(30, 6)))
    with pytest.raises(InvalidOptionError, match="another problem .*h0"):
        fd.find_fixed_points_sharded(gru_weights, other, res, shard_size=8, client=client, progress=False)
    with pytest.raises(InvalidOptionError, match="another problem .*solver_options: maxiter"):
        fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False,
                                     maxiter=7)
    # Options at find_fixed_points' defaults, given explicitly (as the CLI does) or not, and an
    # options file written before an option existed are the same problem: the run resumes.
    config = json.loads((res / "shards.json").read_text())
    config["solver_options"].pop("adam_stop", None)
    (res / "shards.json").write_text(json.dumps(config))
    same = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False,
                                        unique_tol=None, tol_q=None, method="hybrid", adam_stop="all")
    assert same.metadata["sharded"]["computed_shards"] == 0
    np.testing.assert_array_equal(same.x, first.x)
    with pytest.raises(InvalidOptionError, match="another problem .*shard_size"):
        fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=9, client=client, progress=False)
    # Shards written before stalled points were restarted by default are another solve at the
    # same arguments: refused, unless restart_steps=0 asks for the old one.
    config["solver_defaults"] = 1
    (res / "shards.json").write_text(json.dumps(config))
    with pytest.raises(InvalidOptionError, match="solved without restarts of stalled points.*restart_steps=0"):
        fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False)
    old = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False,
                                       unique_tol=None, restart_steps=0)
    assert old.metadata["sharded"]["computed_shards"] == 0
    config["solver_defaults"] = 2  # restarts, under the earlier rule (no points at the cap)
    (res / "shards.json").write_text(json.dumps(config))
    with pytest.raises(InvalidOptionError, match="solved under an earlier rule for restarts"):
        fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False)


def test_sharded_load_options_reach_the_workers(client, tmp_path):
    """A plain state-dict .npz of a GRU needs cell= to load, on the client and on every worker."""
    params = fastfp.RNNParams.random("gru", 5, 2, scale=2.0 / np.sqrt(5), seed=4)
    path = tmp_path / "state_dict.npz"
    np.savez(path, weight_ih_l0=params.w_ih, weight_hh_l0=params.w_hh, bias_ih_l0=params.b_ih,
             bias_hh_l0=params.b_hh)
    h0 = np.random.default_rng(2).uniform(-1, 1, size=(12, 5))
    with pytest.raises(InvalidOptionError, match="cell"):
        fd.find_fixed_points_sharded(path, h0, tmp_path / "a", shard_size=5, client=client, progress=False)
    fp = fd.find_fixed_points_sharded(path, h0, tmp_path / "b", shard_size=5, client=client, progress=False,
                                      load_options={"cell": "gru"}, unique_tol=None, maxiter=50)
    serial = fastfp.find_fixed_points(params, h0, maxiter=50)
    np.testing.assert_array_equal(fp.status, serial.status)
    np.testing.assert_allclose(fp.x, serial.x, rtol=0, atol=1e-6)
    assert fp.metadata["maxiter"] == 50
    # Workers got paths and row ranges, never arrays.
    for entry in _manifest(tmp_path / "b")["tasks"].values():
        assert set(entry["spec"]) == {"type", "index", "lo", "hi", "weights_path", "h0_path", "x_path",
                                      "solver_options", "load_options", "width"}
        assert entry["spec"]["load_options"] == [["cell", "gru"]]


# ---------------------------------------------------------------------------- error paths
def test_results_dir_errors(gru_weights, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(InvalidOptionError, match="'results_dir'.*not a directory"):
        fd.run_tasks([CountSpec("a", 1)], counted, afile, progress=False)
    with pytest.raises(ArgumentTypeError, match="'results_dir'"):
        fd.run_tasks([CountSpec("a", 1)], counted, 3, progress=False)
    with pytest.raises(InvalidOptionError, match="'results_dir'.*not a directory"):
        fd.find_fixed_points_sharded(gru_weights, np.zeros((2, 6)), afile)
    # A manifest of another function, or a damaged one, is refused.
    d = tmp_path / "d"
    d.mkdir()
    (d / fd.MANIFEST_NAME).write_text(json.dumps({"format": "fastfp-task-manifest", "version": 1, "fn": "x.y",
                                                  "tasks": {}, "runs": []}))
    with pytest.raises(InvalidOptionError, match="'fn'.*x.y"):
        fd.run_tasks([CountSpec("a", 1)], counted, d, progress=False)
    (d / fd.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(FileFormatError, match="not a fastfp task manifest"):
        fd.run_tasks([CountSpec("a", 1)], counted, d, progress=False)
    # A damaged result file is reported, not silently recomputed.
    e = tmp_path / "e"
    (e / fd.ROWS_DIR).mkdir(parents=True)
    (e / fd.ROWS_DIR / "a.json").write_text('{"key": "b", "row": {}}')
    with pytest.raises(FileFormatError, match="a.json.*delete it"):
        fd.run_tasks([CountSpec("a", 1)], counted, e, progress=False)


@pytest.mark.parametrize("address", ["localhost:8786", "http://localhost:8786", "tcp://localhost",
                                     "tcp://localhost:0", "tcp://localhost:99999", "tcp://:8786", 8786])
def test_bad_scheduler_address(tmp_path, address):
    with pytest.raises(InvalidOptionError, match="'scheduler'.*tcp://HOST:PORT"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path, scheduler=address, progress=False)


def test_unreachable_scheduler(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailableError, match=f"cannot connect to tcp://127.0.0.1:{port}"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path, scheduler=f"tcp://127.0.0.1:{port}",
                     connect_timeout=1, progress=False)
    # No run took place: the results folder holds no manifest of one.
    assert not (tmp_path / fd.MANIFEST_NAME).exists()


def test_option_errors(client, tmp_path):
    spec = [CountSpec("a", 1)]
    with pytest.raises(InvalidOptionError, match="'client' and 'scheduler'"):
        fd.run_tasks(spec, counted, tmp_path, client=client, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(InvalidOptionError, match="'n_workers': got 3 with client="):
        fd.run_tasks(spec, counted, tmp_path, client=client, n_workers=3)
    with pytest.raises(InvalidOptionError, match="'n_workers': got 3 with scheduler="):
        fd.run_tasks(spec, counted, tmp_path, scheduler="tcp://127.0.0.1:8786", n_workers=3)
    with pytest.raises(ArgumentTypeError, match="'client'.*distributed.Client"):
        fd.run_tasks(spec, counted, tmp_path, client="tcp://127.0.0.1:8786")
    for name, value in [("n_workers", 0), ("n_workers", 1.5), ("retries", -1), ("retries", True)]:
        with pytest.raises(InvalidOptionError, match=f"'{name}'"):
            fd.run_tasks(spec, counted, tmp_path, **{name: value})
    with pytest.raises(InvalidOptionError, match="'connect_timeout'"):
        fd.run_tasks(spec, counted, tmp_path, connect_timeout=0)
    with pytest.raises(ArgumentTypeError, match="'fn'"):
        fd.run_tasks(spec, "counted", tmp_path)


def test_spec_errors(tmp_path):
    with pytest.raises(ArgumentTypeError, match="'specs'"):
        fd.run_tasks(5, counted, tmp_path)
    with pytest.raises(ArgumentTypeError, match="item 1 .*no str attribute 'key'"):
        fd.run_tasks([CountSpec("a", 1), {"key": "b"}], counted, tmp_path)
    for bad in ["", "../up", "a/b", ".hidden", "with space", "x" * 201]:
        with pytest.raises(InvalidOptionError, match="item 0 has key"):
            fd.run_tasks([CountSpec(bad, 1)], counted, tmp_path)
    with pytest.raises(InvalidOptionError, match="items 0 and 2 share the key 'a'"):
        fd.run_tasks([CountSpec("a", 1), CountSpec("b", 1), CountSpec("a", 2)], counted, tmp_path)
    with pytest.raises(InvalidOptionError, match="items 0 and 1 share the key 'Net-1' \\(up to case: 'net-1'\\)"):
        fd.run_tasks([CountSpec("net-1", 1), CountSpec("Net-1", 1)], counted, tmp_path)
    with pytest.raises(InvalidOptionError, match="MiB.*paths"):
        fd.run_tasks([BigSpec(np.zeros(200_000))], counted, tmp_path)


def test_results_dir_must_be_visible_to_workers(tmp_path):
    class Blind:  # a client whose workers do not see the directory (no shared filesystem)
        def run(self, fn, path, on_error):
            assert on_error == "return"
            return {"tcp://10.0.0.7:4000": False, "tcp://10.0.0.8:4000": fn(path),
                    "tcp://10.0.0.9:4000": OSError("worker restarting")}

    with pytest.raises(InvalidOptionError, match="does not exist on the workers tcp://10.0.0.7:4000;"):
        fd._check_visible(Blind(), tmp_path, {})
    fd._check_visible(type("Sees", (), {"run": lambda self, fn, p, on_error: {"w": fn(p)}})(), tmp_path, {})


def test_worker_files_must_be_visible_to_workers(tmp_path):
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"x")

    class SeesOnlyDirs:  # shares the results folder but not the weights' one
        def run(self, fn, path, on_error):
            return {"tcp://10.0.0.7:4000": fn is os.path.isdir, "tcp://10.0.0.8:4000": fn(path)}

    files = fd._check_worker_files({"weights_path": weights})
    with pytest.raises(InvalidOptionError, match=r"'weights_path': '.*w\.npz' is not a file on the workers tcp://10\.0\.0\.7:4000;"):
        fd._check_visible(SeesOnlyDirs(), tmp_path, files)


def test_worker_files_are_checked_before_any_task(tmp_path):
    with pytest.raises(InvalidOptionError, match=r"argument 'weights_path': '.*nope\.npz' is not a file"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path / "r", worker_files={"weights_path": tmp_path / "nope.npz"})
    with pytest.raises(ArgumentTypeError, match="'worker_files'.*expected a dict"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path / "r", worker_files=[tmp_path])
    with pytest.raises(ArgumentTypeError, match="'worker_files': got the entry 3"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path / "r", worker_files={3: tmp_path})


@pytest.mark.parametrize("shard_size", [0, -3, 2.5, True, "8"])
def test_bad_shard_size(gru_weights, tmp_path, shard_size):
    with pytest.raises(InvalidOptionError, match="'shard_size'"):
        fd.find_fixed_points_sharded(gru_weights, np.zeros((4, 6)), tmp_path, shard_size=shard_size)


def test_sharded_input_errors(gru_weights, tmp_path):
    h0 = np.zeros((4, 6))
    with pytest.raises(ShapeError, match="'h0'.*\\(B, 6\\)"):
        fd.find_fixed_points_sharded(gru_weights, np.zeros((4, 5)), tmp_path)
    with pytest.raises(ShapeError, match="'h0': got 0"):
        fd.find_fixed_points_sharded(gru_weights, np.zeros((0, 6)), tmp_path)
    bad = h0.copy()
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteError, match="'h0'"):
        fd.find_fixed_points_sharded(gru_weights, bad, tmp_path)
    with pytest.raises(ShapeError, match="'x'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, x=np.zeros(4))
    with pytest.raises(NonFiniteError, match="'x'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, x=np.array([0.0, np.inf, 0.0]))
    npz = tmp_path / "h0.npz"
    np.savez(npz, h0=h0)
    with pytest.raises(FileFormatError, match="'h0'.*npz"):
        fd.find_fixed_points_sharded(gru_weights, npz, tmp_path / "r")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an npy file")
    with pytest.raises(FileFormatError, match="'h0'.*not a readable .npy"):
        fd.find_fixed_points_sharded(gru_weights, junk, tmp_path / "r")
    with pytest.raises(InvalidOptionError, match="'tolerance': not an option of fastfp.find_fixed_points"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, tolerance=1e-3)
    with pytest.raises(InvalidOptionError, match="'method'"):  # values checked before any task is sent
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, method="bogus")
    with pytest.raises(InvalidOptionError, match="'atol'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, atol=-1.0)
    with pytest.raises(InvalidOptionError, match="'backend'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, backend="tpu")
    with pytest.raises(InvalidOptionError, match="'dtype'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, dtype="float16")
    with pytest.raises(InvalidOptionError, match="'dtype'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, dtype="no-such-type")
    with pytest.raises(InvalidOptionError, match="'load_options': 'celll' is not an option of fastfp.load"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, load_options={"celll": "gru"})
    with pytest.raises(ArgumentTypeError, match="'load_options'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, load_options=["cell", "gru"])
    with pytest.raises(InvalidOptionError, match="'unique_tol'"):
        fd.find_fixed_points_sharded(gru_weights, h0, tmp_path, unique_tol=0)
    with pytest.raises(ArgumentTypeError, match="'weights_path'.*save_params"):
        fd.find_fixed_points_sharded(fastfp.load(gru_weights).params, h0, tmp_path)
    assert not list(tmp_path.glob("shard-*"))  # nothing was sent


def test_missing_extra(monkeypatch, gru_weights, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'fastfp-rnn\[dask\]'"):
        fd.run_tasks([CountSpec("a", 1)], counted, tmp_path)
    with pytest.raises(MissingDependencyError, match=r"pip install 'fastfp-rnn\[dask\]'"):
        fd.find_fixed_points_sharded(gru_weights, np.zeros((4, 6)), tmp_path)


def test_import_is_lazy():
    code = ("import sys, fastfp, fastfp.distributed; "
            "print(any(m == 'dask' or m.startswith(('dask.', 'distributed')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_study_partials_resume_and_missing_shard_files_are_recomputed(client, gru_weights, tmp_path):
    # The CLI's study on Dask runs a functools.partial: its manifest name must not hold an address
    # (a rerun with the same arguments was refused); a shard file deleted by hand is computed again.
    import functools

    name = fd._fn_name(functools.partial(fd._solve_shard, n=3, f=np.sum))
    assert " at 0x" not in name and name == fd._fn_name(functools.partial(fd._solve_shard, n=3, f=np.sum))
    assert name.startswith("functools.partial(fastfp.distributed._solve_shard, f=numpy.sum, n=3")
    rng = np.random.default_rng(2)
    h0_path = tmp_path / "h0.npy"
    np.save(h0_path, rng.uniform(-1, 1, size=(24, 6)))
    res = tmp_path / "res"
    first = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False,
                                         unique_tol=None)
    (res / "shard-0001.npz").unlink()
    again = fd.find_fixed_points_sharded(gru_weights, h0_path, res, shard_size=8, client=client, progress=False,
                                         unique_tol=None, batch_size=4)  # batch_size does not change the answer
    assert again.metadata["sharded"]["computed_shards"] == 1 and again.metadata["sharded"]["reused_shards"] == 2
    np.testing.assert_array_equal(again.x, first.x)


def test_a_slow_speed_outside_slow_manifold_mode_is_no_other_problem():
    # Sharded runs recorded the CLI's slow_speed 1e-3 even without slow_ratio, where it does
    # nothing; they resume under a CLI that records None there.
    from fastfp.distributed import _comparable

    old = {"method": "hybrid", "slow_ratio": None, "slow_speed": 0.001}
    new = {"method": "hybrid", "slow_ratio": None, "slow_speed": None}
    assert _comparable("solver_options", old) == _comparable("solver_options", new)
    slow = {"method": "hybrid", "slow_ratio": 0.05}
    assert _comparable("solver_options", {**slow, "slow_speed": 0.01}) != _comparable(
        "solver_options", {**slow, "slow_speed": 0.001})
    # in slow-manifold mode None is 1e-3, as earlier runs recorded it
    assert _comparable("solver_options", {**slow, "slow_speed": None}) == _comparable(
        "solver_options", {**slow, "slow_speed": 0.001})
