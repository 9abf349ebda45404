"""The command line as it stands: version and info (the full CLI is a later issue)."""

import json
import subprocess
import sys

from click.testing import CliRunner

import fastfp
from fastfp.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert fastfp.__version__ in result.output


def test_info_is_json():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["fastfp"] == fastfp.__version__ and "cpu" in info["backends"]


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code == 2


def test_version_does_not_import_the_engine():
    code = "import sys; from fastfp.cli import main; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ----------------------------------------------------------------------------- the full CLI
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"
SMALL = ["--states", "48", "--docs", "24"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """`fastfp run` writes its report into the current folder: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


def test_shipped_default_model_is_a_package_resource():
    from importlib.resources import as_file, files

    from fastfp.cli import DEFAULT_MODEL, default_model_resource

    res = files("fastfp").joinpath("data", DEFAULT_MODEL)
    assert res.is_file() and default_model_resource().is_file()
    with as_file(res) as path:
        model = fastfp.load_params(path)
    assert model.params.cell == "gru" and model.metadata["task_params"]["n_classes"] == 3
    assert res.read_bytes() == (DATA / "gru64_cat3.npz").read_bytes()


@pytest.fixture(scope="module")
def run_default_with_report(tmp_path_factory):
    report = tmp_path_factory.mktemp("report") / "run.html"
    result = _invoke("run", "--json", "--report", report)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout), report, result.stderr


@pytest.fixture(scope="module")
def run_default(run_default_with_report):
    return run_default_with_report[0]


def test_run_on_the_shipped_model(run_default):
    s = run_default
    assert s["cell"] == "gru" and s["data"]["classes"] == 3
    fp = s["fixed_points"]
    # At the neutral word's input (what the network reads between evidence words) the attractor is a
    # plane of slow points around few exact roots; at x = 0 (never seen in training) there are 7.
    assert s["input"] == "word:the"
    assert fp["found"] == 1024 and fp["converged"] > 0 and fp["distinct"] >= 1 and fp["stable"] >= 1
    sp = s["slow_points"]
    assert sp["n95"] == 2 and 1.6 <= sp["participation_ratio"] <= 2.5
    # every root and slow point is either kept or counted as too fast for the slow-speed test
    assert sp["kept"] + sp["too_fast"] == sp["status"].get("converged", 0) + sp["status"].get("slow_point", 0)
    assert s["wordcount_prediction"]["dimension"] == 2
    assert s["readout"]["simplex_angle"] == pytest.approx(120.0)
    assert max(abs(a - 120.0) for a in s["readout"]["pairwise_angles"]) < 10
    im = s["integration_modes"]
    assert {"median", "median_two_sided", "horizon"} <= set(im) and s["wall_time_s"] > 0
    assert im["median_two_sided_half_horizon"] == 2  # N - 1 integrating modes at L / 2 (the study's claim)


def test_run_input_zero_finds_the_roots_of_x0():
    r = _invoke("--quiet", "run", "--json", "--no-report", "--input", "zero", "--slow-speed", "1e-3", *SMALL)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["input"] == "zero" and s["fixed_points"]["distinct"] >= 3


def test_run_human_summary_and_quiet():
    result = _invoke("--quiet", "run", *SMALL)
    assert result.exit_code == 0, result.output
    assert "fixed points" in result.stdout and "manifold" in result.stdout and "readout angles" in result.stdout
    assert result.stderr == ""
    loud = _invoke("run", *SMALL, "--noise", "0.3", "--seed", "1")
    assert loud.exit_code == 0 and "solving" in loud.stderr
    after = _invoke("run", "-q", *SMALL)  # after the command name too
    drop_time = lambda text: [ln for ln in text.splitlines() if not ln.startswith("wall time")]  # noqa: E731
    assert after.exit_code == 0 and after.stderr == "", after.output
    assert drop_time(after.stdout) == drop_time(result.stdout)


def test_run_with_weights_task_and_corpus(tmp_path):
    r = _invoke("-q", "run", DATA / "lstm32_cat3.npz", "--task", "categorical", "--classes", "3", "--json", *SMALL)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["cell"] == "lstm" and s["fixed_points"]["found"] == 48
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\n" + "".join(f"w{i % 3} the w{i % 3},{i % 3}\n" for i in range(30)))
    r = _invoke("-q", "run", DATA / "gru64_cat3.npz", "--corpus", corpus, "--json", "--states", "32")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"]["docs"] == 30


@pytest.mark.parametrize("task, kwargs, key", [("ordered", dict(n_classes=3, length=20, bank="3word"), "n_classes"),
                                               ("multilabel", dict(n_labels=2, length=30), "n_labels"),
                                               ("categorical", dict(n_classes=4, length=20), "n_classes")])
def test_run_drives_a_model_with_the_task_fastfp_train_recorded(tmp_path, task, kwargs, key):
    # The metadata as fastfp.train.train_classifier writes it: {'task': {'name', 'params', ...}}.
    data = getattr(fastfp.tasks, task)(8, seed=0, **kwargs)
    V, H = data.vocab_size, 6
    params = fastfp.RNNParams.random("gru", hidden_size=H, input_size=V, seed=1)
    C = data.n_classes
    model = fastfp.Model(params, readout_weight=np.random.default_rng(0).normal(size=(C, H)), vocab=data.vocab,
                         metadata={"task": {"name": task, "params": dict(data.params), "vocab_size": V, "outputs": C,
                                            "multilabel": task == "multilabel", "source": "TaskData"}})
    fastfp.save_params(tmp_path / "m.npz", model)
    r = _invoke("-q", "run", tmp_path / "m.npz", "--states", "16", "--docs", "8", "--no-report", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    got = json.loads(r.stdout)["data"]
    assert got["name"] == task and got["length"] == kwargs["length"] and got["classes"] == kwargs[key]
    assert got["multilabel"] == (task == "multilabel")
    # an explicit task other than the recorded one takes none of its settings
    if task != "categorical":
        r = _invoke("-q", "run", tmp_path / "m.npz", "--task", "categorical", "--classes", str(V - 1), "--states", "16",
                    "--docs", "8", "--no-report", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["data"]["length"] == 50, r.output + r.stderr


def test_run_corpus_and_task_conflict(tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\nw0 the,0\nw1,1\n")
    r = _invoke("run", "--corpus", corpus, "--task", "categorical")
    assert r.exit_code == 1 and "--corpus" in r.stderr


def test_find_then_analyze(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, *SMALL, "--seed", "3")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["points"] == 48 and s["status"]["converged"] > 0 and s["saved"] == s["distinct"]
    assert s["saved_bytes"] == out.stat().st_size
    fp = fastfp.FixedPoints.load(out)
    assert len(fp) == s["distinct"] and fp.eigvals is not None
    a = _invoke("analyze", out, "--json")
    assert a.exit_code == 0, a.output
    summary = json.loads(a.stdout)
    assert summary["n_points"] == len(fp) and summary["stable"] >= 1 and summary["top_abs_eigenvalue"]["max"] > 0
    text = _invoke("analyze", out)
    assert text.exit_code == 0 and "top |lambda|" in text.stdout


def test_find_says_how_large_the_saved_file_is(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", out, "--states", "8", "--docs", "4", "--keep", "all")
    assert r.exit_code == 0, r.output + r.stderr
    assert f"saved 8 points to {out} ({out.stat().st_size / 1e6:.1f} MB)" in r.stderr
    assert json.loads(r.stdout)["saved_bytes"] == out.stat().st_size


@pytest.mark.parametrize("extra", [
    ["--input", "mean", "--method", "lm", "--maxiter", "50"],
    ["--input", "word:w1", "--method", "newton", "--backend", "numpy", "--keep", "all"],
    ["--dtype", "float32", "--atol", "1e-5", "--slow-ratio", "0.05"],
    ["--method", "adam", "--maxiter", "20", "--noise", "0.1", "--task", "categorical", "--classes", "3"],
    ["--method", "newton", "--restart-steps", "0", "--maxiter", "3"],
])
def test_find_options(tmp_path, extra):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "16", "--docs", "8", *extra)
    assert r.exit_code == 0, r.output + r.stderr
    s = json.loads(r.stdout)
    assert s["points"] == 16 and sum(s["status"].values()) == 16
    assert sum(s["distinct_status"].values()) == s["distinct"]
    saved = fastfp.FixedPoints.load(out)
    if "all" not in extra:
        assert {k: v for k, v in s["distinct_status"].items()} == {
            fastfp.Status(int(c)).name.lower(): int((saved.status == c).sum()) for c in np.unique(saved.status)}
    if "all" in extra:
        assert s["saved"] == 16
    assert fastfp.FixedPoints.load(out).eigvals is not None
    if "--restart-steps" in extra:
        assert saved.metadata["restart_steps"] == 0


def test_find_notes_task_ids_read_as_embedding_rows_without_a_vocabulary(tmp_path):
    """A torch classifier's state dict has an embedding but no vocabulary: the task's ids index it,
    which is said on stderr even with -q (every number depends on it); a model with one is silent."""
    r = _invoke("-q", "find", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "fp.npz", *SMALL)
    assert r.exit_code == 0, r.output + r.stderr
    assert "no vocabulary; the categorical data's word ids are used as its rows (w0=0, w1=1, w2=2, the=3)" in r.stderr
    assert "fastfp convert WEIGHTS -o model.npz --vocab vocab.txt" in r.stderr
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp2.npz", *SMALL)
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    # Text needs the vocabulary: a corpus' own word ids would pick arbitrary rows (tester report).
    corpus = DATA / "corpus" / "reviews.csv"
    r = _invoke("-q", "find", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "fp3.npz", "--corpus", corpus)
    assert r.exit_code == 1 and "--corpus: the model has no vocabulary" in r.stderr
    assert "--vocab vocab.txt [--labels labels.txt]" in r.stderr and not (tmp_path / "fp3.npz").exists()


def test_a_converted_model_with_a_vocabulary_is_told_to_read_text(tmp_path):
    words = ["<pad>", "<unk>", "good", "bad", "movie", "the", "plot", "great", "awful", "fine"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    assert _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "m.npz", "--vocab",
                   tmp_path / "vocab.txt").exit_code == 0
    r = _invoke("-q", "run", tmp_path / "m.npz", "--no-report")
    assert r.exit_code == 1 and "the model reads text (a vocabulary was attached to it)" in r.stderr
    (tmp_path / "r.html").write_text("old")
    r = _invoke("run", "--states", "8", "--docs", "4", "--report", tmp_path / "r.html")
    assert r.exit_code == 0 and f"note: {tmp_path / 'r.html'} exists; it will be replaced" in r.stderr


def test_convert_warns_of_cased_tokens_and_names_gaps_in_an_id_map(tmp_path):
    words = ["<pad>", "[UNK]", "Good", "bad", "movie", "the", "plot", "Great", "awful", "fine"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    args = ["convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "m.npz", "--vocab", tmp_path / "vocab.txt",
            "--unk", "[UNK]"]
    r = _invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert "2 of 10 tokens hold upper-case letters (e.g. 'Good', 'Great')" in r.stderr and "pass --cased" in r.stderr
    r = _invoke(*args, "--cased")
    assert r.exit_code == 0 and "upper-case" not in r.stderr
    ids = {w: i for i, w in enumerate(w.lower() for w in words)}
    ids["fine"] = 12  # id 9 missing, 12 out of range
    (tmp_path / "vocab.json").write_text(json.dumps(ids))
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "m.npz", "--vocab", tmp_path / "vocab.json")
    assert r.exit_code == 1 and "0..9 once each; missing id(s) [9]; id(s) [12] out of range or repeated" in r.stderr


def test_convert_attaches_a_vocabulary_and_labels_that_corpora_are_read_with(tmp_path):
    # The torch fixture's embedding has 10 rows; name them, and its 3 outputs.
    words = ["<pad>", "<unk>", "good", "bad", "movie", "the", "plot", "great", "awful", "fine"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (tmp_path / "labels.json").write_text(json.dumps(["neg", "pos", "mixed"]))
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "m.npz", "--vocab", tmp_path / "vocab.txt",
                "--labels", tmp_path / "labels.json")
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["labels"] == ["neg", "pos", "mixed"] and json.loads(r.stdout)["vocab"] is True
    model = fastfp.load(tmp_path / "m.npz")
    assert model.vocab == tuple(words)
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\nGood movie the plot,pos\nawful bad movie,neg\nfine but odd,mixed\n")
    data = fastfp.read_corpus(corpus, model=model)
    assert data.label_names == ("neg", "pos", "mixed")  # the model's order, not the sorted one
    np.testing.assert_array_equal(data.train.labels, [1, 0, 2])
    # Tokens map by string onto the rows ('Good' -> 2, lowercased), unknown words onto <unk> (1).
    tokens = [np.asarray(t[:n]).tolist() for t, n in zip(data.train.tokens, data.train.lengths)]
    assert tokens == [[2, 4, 5, 6], [8, 3, 4], [9, 1, 1]]
    r = _invoke("-q", "find", tmp_path / "m.npz", "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "8")
    assert r.exit_code == 0, r.output + r.stderr
    # Mistakes are named: a count that is not the embedding's, labels without a vocabulary, an empty line.
    (tmp_path / "short.txt").write_text("a\nb\n")
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--vocab", tmp_path / "short.txt")
    assert r.exit_code == 1 and "short.txt: got 2 tokens, expected 10 (rows of the embedding)" in r.stderr
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--labels", tmp_path / "labels.json")
    assert r.exit_code == 2 and "give --vocab too" in r.output + r.stderr
    (tmp_path / "gap.txt").write_text("\n".join(words[:4] + [""] + words[5:]) + "\n")
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--vocab", tmp_path / "gap.txt")
    assert r.exit_code == 1 and "line 5 is empty" in r.stderr
    (tmp_path / "two.json").write_text(json.dumps(["a", "b"]))
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--vocab", tmp_path / "vocab.txt",
                "--labels", tmp_path / "two.json")
    assert r.exit_code == 1 and "got 2 labels, expected 3 (the readout's outputs)" in r.stderr


def test_find_adam_with_the_study_rules(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "16", "--docs", "8", "--method", "adam",
                "--adam-lr", "0.01", "--adam-stop", "mean", "--adam-schedule", "constant", "--tol-q", "5e-4",
                "--keep", "all")
    assert r.exit_code == 0, r.output + r.stderr
    fp = fastfp.FixedPoints.load(out)
    meta = fp.metadata
    assert (meta["adam_lr"], meta["adam_stop"], meta["adam_schedule"], meta["tol_q"]) == (0.01, "mean", "constant", 5e-4)
    # renn's rule: the batch stopped on its mean, so the points above tol_q are 'batch stopped'
    assert fp.q.mean() < 5e-4 and set(json.loads(r.stdout)["status"]) <= {"converged", "q_tolerance", "batch_stopped"}
    np.testing.assert_array_equal(fp.status == fastfp.Status.BATCH_STOPPED, fp.q > 5e-4)
    bad = _invoke("find", DATA / "gru64_cat3.npz", "-o", out, "--states", "8", "--adam-stop", "mean")
    assert bad.exit_code == 2 and "got --adam-stop mean with --method hybrid" in bad.stderr
    bad = _invoke("find", DATA / "gru64_cat3.npz", "-o", out, "--states", "8", "--method", "lm", "--adam-lr", "1.0")
    assert bad.exit_code == 2 and "got --adam-lr 1.0 with --method lm" in bad.stderr


def test_find_input_from_npy(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.array([0.0, 1.0, 0.0, 0.0]))
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8", "--docs", "8")
    assert r.exit_code == 0, r.output
    floats = fastfp.FixedPoints.load(tmp_path / "fp.npz")
    np.save(x, np.array([0, 1, 0, 0]))  # a one-hot vector saved as ints reads the same
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8", "--docs", "8")
    assert r.exit_code == 0, r.output
    ints = fastfp.FixedPoints.load(tmp_path / "fp.npz")
    np.testing.assert_array_equal(ints.inputs, floats.inputs)
    np.testing.assert_array_equal(ints.x, floats.x)
    np.save(x, np.zeros(5))
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8")
    assert r.exit_code == 1 and "'--input'" in r.stderr
    np.save(x, np.array([0, 2 ** 60, 0, 0]))
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8")
    assert r.exit_code == 1 and "magnitude 2**53 or more" in r.stderr
    np.save(x, np.zeros(4, complex))
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8")
    assert r.exit_code == 1 and "option '--input'" in r.stderr and "complex128" in r.stderr


@pytest.mark.parametrize("spec", ["word:nope", "bogus", "missing.npy"])
def test_find_bad_input(tmp_path, spec):
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", spec, "--states", "8")
    assert r.exit_code == 1 and "'--input'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_shipped_model_is_named_the_same_in_every_command(tmp_path):
    r = _invoke("-q", "find", "fastfp:data/gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "8", "--docs", "8")
    assert r.exit_code == 0 and json.loads(r.stdout)["model"] == "fastfp:data/gru64_cat3.npz", r.output
    r = _invoke("convert", "fastfp:data/gru64_cat3.npz", "-o", tmp_path / "p.npz")
    assert r.exit_code == 0 and fastfp.load_params(tmp_path / "p.npz").params.hidden_size == 64
    assert json.loads(r.stdout)["input"] == "fastfp:data/gru64_cat3.npz"
    r = _invoke("find", "fastfp:data/nope.npz", "-o", tmp_path / "x.npz")
    assert r.exit_code == 2 and "fastfp ships fastfp:data/gru64_cat3.npz" in r.output, r.output


def test_shipped_model_path_works_from_a_package_imported_out_of_a_zip_file(tmp_path):
    # zipimport: the shipped model has no file on disk, so the CLI must extract it (as_file)
    import zipfile
    from pathlib import Path

    pkg = Path(fastfp.__file__).parent
    archive = tmp_path / "fastfp.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, f.relative_to(pkg.parent).as_posix())
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fastfp; "
            "assert '.zip' in fastfp.__file__, fastfp.__file__; "
            "from fastfp.cli import main; sys.argv = ['fastfp'] + sys.argv[2:]; main()")
    out = tmp_path / "p.npz"
    r = subprocess.run([sys.executable, "-c", code, str(archive), "convert", "fastfp:data/gru64_cat3.npz", "-o", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["input"] == "fastfp:data/gru64_cat3.npz"
    want = fastfp.load_params(pkg / "data" / "gru64_cat3.npz").params
    np.testing.assert_array_equal(fastfp.load_params(out).params.w_hh, want.w_hh)
    # outside a command nothing keeps an extracted copy open: a clear error, not a missing in-zip path
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import click; from fastfp.cli import _WeightsPath\n"
            "try:\n    _WeightsPath().convert('fastfp:data/gru64_cat3.npz', None, None)\n"
            "except click.BadParameter as e:\n    print(e.format_message())")
    r = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "no file on disk" in r.stdout and "as_file" in r.stdout, (r.stdout, r.stderr)


def test_run_bad_input_lists_auto():
    r = _invoke("run", "--input", "zer", "--states", "8", "--no-report")
    assert r.exit_code == 1 and "expected auto, zero, mean" in r.stderr, r.stderr


def test_find_slow_speed_and_its_checks(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--input", "word:the", "--slow-ratio", "0.05",
                "--slow-speed", "1e-2", "--keep", "all", "--states", "16", "--docs", "8")
    assert r.exit_code == 0, r.output
    assert fastfp.FixedPoints.load(out).metadata["slow_speed"] == 1e-2
    # without --slow-ratio a slow speed would do nothing (and be recorded as if it had)
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "other.npz", "--slow-speed", "0.5")
    assert r.exit_code == 2 and "--slow-speed: the speed limit of slow-manifold mode; give --slow-ratio too" in r.output
    with pytest.raises(fastfp.InvalidOptionError, match="'slow_speed': got 0.5 with slow_ratio=None"):
        fastfp.find_fixed_points(fastfp.RNNParams.random("gru", 4, 2, seed=0), np.zeros((2, 4)), slow_speed=0.5)
    plain = fastfp.find_fixed_points(fastfp.RNNParams.random("gru", 4, 2, seed=0), np.zeros((2, 4)))
    assert plain.metadata["slow_speed"] is None and plain.metadata["slow_ratio"] is None
    for opt in ("--slow-ratio", "--slow-speed", "--atol"):  # refused by click, before any solving
        r = _invoke("find", DATA / "gru64_cat3.npz", "-o", out, opt, "-1")
        assert r.exit_code == 2 and opt in r.output and "solving" not in r.output, r.output


def test_convert_roundtrip(tmp_path):
    out = tmp_path / "p.npz"
    r = _invoke("convert", DATA / "torch_gru_classifier.safetensors", "-o", out, "--cell", "gru")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["cell"] == "gru" and s["embedding"] and s["readout"]
    model = fastfp.load_params(out)
    ref = fastfp.load(DATA / "torch_gru_classifier.safetensors", cell="gru")
    np.testing.assert_array_equal(model.params.w_hh, ref.params.w_hh)
    r = _invoke("convert", DATA / "gru64_cat3.npz", "-o", out, "--layer", "0", "--direction", "0")
    assert r.exit_code == 0 and fastfp.load_params(out).vocab == ("w0", "w1", "w2", "the")
    r = _invoke("convert", DATA / "gru64_cat3.npz", "-o", out, "--key-prefix", "rnn")  # one layer: nothing to pick
    assert r.exit_code == 1 and "--key-prefix 'rnn' does not apply" in r.stderr and "Traceback" not in r.stderr


def test_convert_embedding_and_readout_keys(tmp_path):
    rng = np.random.default_rng(0)
    H, M, V = 5, 4, 9
    sd = {"a.weight": rng.normal(size=(V, M)), "b.weight": rng.normal(size=(V, M)),  # two candidates: ambiguous
          "rnn.weight_ih_l0": rng.normal(size=(4 * H, M)), "rnn.weight_hh_l0": rng.normal(size=(4 * H, H)),
          "rnn.bias_ih_l0": np.zeros(4 * H), "rnn.bias_hh_l0": np.zeros(4 * H), "head.weight": rng.normal(size=(3, H))}
    np.savez(tmp_path / "sd.npz", **sd)
    out = tmp_path / "p.npz"
    r = _invoke("convert", tmp_path / "sd.npz", "-o", out)
    assert r.exit_code == 0 and json.loads(r.stdout)["embedding"] is False, r.output
    assert ("fastfp: warning: WEIGHTS: " in r.stderr and "no embedding taken: 2 weights could be it ('a.weight', "
            "'b.weight'); pass --embedding-key to pick one" in r.stderr), r.stderr
    # a second head: no readout taken, said so; entries left out are listed (stderr and JSON)
    np.savez(tmp_path / "sd2.npz", **sd, **{"aux.weight": rng.normal(size=(2, H)), "epoch": np.array(3)})
    r = _invoke("-q", "convert", tmp_path / "sd2.npz", "-o", out, "--embedding-key", "a.weight")
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and s["readout"] is False, r.output
    assert "no readout taken: 2 weights could be it ('head.weight', 'aux.weight'); pass --readout-key" in r.stderr
    assert s["unused_keys"] == ["b.weight", "head.weight", "aux.weight", "epoch"], s
    assert "fastfp: note: 4 entries of WEIGHTS not used: 'b.weight', 'head.weight', 'aux.weight', 'epoch'" in r.stderr
    r = _invoke("convert", tmp_path / "sd.npz", "-o", out, "--embedding-key", "b.weight", "--readout-key", "none")
    s = json.loads(r.stdout)
    assert (s["embedding"], s["embedding_key"], s["readout"]) == (True, "b.weight", False), r.output
    np.testing.assert_array_equal(fastfp.load_params(out).embedding, sd["b.weight"])
    r = _invoke("convert", tmp_path / "sd.npz", "-o", out, "--embedding-key", "rnn.weight_hh_l0")
    assert r.exit_code == 1 and "option '--embedding-key': key 'rnn.weight_hh_l0' has shape (20, 5)" in r.stderr and "expected (*, 4)" in r.stderr, r.stderr
    r = _invoke("convert", tmp_path / "sd.npz", "-o", out, "--embedding-key", "nope")
    assert r.exit_code == 1 and "option '--embedding-key': got 'nope'" in r.stderr and "(WEIGHTS: " in r.stderr
    assert "argument '" not in r.stderr, r.stderr
    # --debug keeps the traceback of where the error was raised, not of the renaming
    (tmp_path / "junk.bin").write_bytes(b"junk")
    r = _invoke("--debug", "convert", tmp_path / "junk.bin", "-o", out)
    assert r.exit_code == 1 and "loading.py" in r.stderr and "WEIGHTS: " in r.stderr, r.stderr
    # the one-hot mismatch error names the ways out
    r = _invoke("run", tmp_path / "sd.npz", "--classes", "4", "--states", "8", "--no-report")  # V = 5, M = 4
    assert r.exit_code == 1 and "--embedding-key KEY" in r.stderr and "find_fixed_points" in r.stderr, r.stderr


def test_convert_needs_cell_for_safetensors(tmp_path):
    r = _invoke("convert", DATA / "torch_gru_classifier.safetensors", "-o", tmp_path / "p.npz")
    assert r.exit_code == 1 and "pass --cell 'gru'" in r.stderr and "cell=" not in r.stderr, r.stderr
    # a command without --cell says where the option is
    r = _invoke("run", DATA / "torch_gru_classifier.safetensors", "--states", "8", "--no-report")
    assert r.exit_code == 1 and "options of fastfp convert" in r.stderr and "then pass model.npz" in r.stderr, r.stderr
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "p.npz", "--cell", "gru_reset_before")
    assert r.exit_code == 1 and "--cell 'gru_reset_before' given" in r.stderr and "options of" not in r.stderr, r.stderr


def test_bad_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a weights file")
    for args in (["run", bad], ["find", bad, "-o", tmp_path / "o.npz"], ["analyze", bad], ["convert", bad, "-o", tmp_path / "o.npz"]):
        r = _invoke(*args)
        assert r.exit_code == 1, (args, r.output)
        assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("fastfp: error:")
        assert "Traceback" not in r.stderr
        if args[0] != "analyze":  # a weights file: named as the command line names it, not as Python's argument
            assert r.stderr.startswith(f"fastfp: error: WEIGHTS: {bad} is not in a format"), r.stderr


def test_find_batch_size_chunks_without_changing_the_points(tmp_path):
    whole, chunked = tmp_path / "a.npz", tmp_path / "b.npz"
    for out, extra in ((whole, []), (chunked, ["--batch-size", "5"])):
        r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, *SMALL, "--keep", "all", *extra)
        assert r.exit_code == 0, r.output
    a, b = fastfp.FixedPoints.load(whole), fastfp.FixedPoints.load(chunked)
    np.testing.assert_array_equal(a.status, b.status)  # per-point solves: rounding of batched BLAS only
    np.testing.assert_allclose(a.x, b.x, atol=1e-9)
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", chunked, *SMALL, "--batch-size", "auto")
    assert r.exit_code == 0, r.output
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", chunked, "--batch-size", "0")
    assert r.exit_code == 2 and "'--batch-size'" in r.stderr and "positive integer or 'auto'" in r.stderr


def test_a_weights_directory_gets_the_orbax_advice(tmp_path):
    (tmp_path / "ckpt").mkdir()
    r = _invoke("convert", tmp_path / "ckpt", "-o", tmp_path / "m.npz")
    assert r.exit_code == 1 and "is a directory" in r.stderr and "orbax" in r.stderr, r.output


def test_find_checks_eig_k_before_any_work(tmp_path):
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "x.npz", "--eig-k", "64", "--input", "missing.npy")
    assert r.exit_code == 2 and "'--eig-k'" in r.stderr and "fewer than N = 64" in r.stderr, r.stderr


def test_analyze_marks_counts_capped_by_eig_k(tmp_path):
    """With --eig-k 1 a point with one |lambda| > 1 may have more: the summary says '>=1', and the
    full decomposition of the same points (the oracle) has at least that many at each of them."""
    out = tmp_path / "k1.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "64", "--docs", "16", "--eig-k", "1",
                "--keep", "all")
    assert r.exit_code == 0, r.output
    r = _invoke("analyze", out, "--json")
    s = json.loads(r.stdout)
    assert s["eigenvalues_per_point"] == 1 and s["counts_capped_at"] == 1
    top = fastfp.FixedPoints.load(out)
    full = top.decompose(fastfp.load_params(DATA / "gru64_cat3.npz").params.astype(np.float64))
    assert (top.n_unstable == np.minimum(full.n_unstable, 1)).all() and (full.n_unstable > 1).any()
    text = _invoke("analyze", out).stdout
    assert f">=1: {int((top.n_unstable == 1).sum())}" in text and "a count of 1 means 1 or more" in text
    full.save(tmp_path / "full.npz")
    assert json.loads(_invoke("analyze", tmp_path / "full.npz", "--json").stdout)["counts_capped_at"] is None


def test_analyze_needs_a_decomposed_file(tmp_path):
    out = tmp_path / "raw.npz"
    p = fastfp.load_params(DATA / "gru64_cat3.npz").params
    fastfp.find_fixed_points(p, np.zeros((2, p.state_size)), maxiter=0).save(out)
    r = _invoke("analyze", out)
    assert r.exit_code == 1 and "decompose" in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    r = _invoke("--debug", "analyze", bad)
    assert r.exit_code == 1 and "Traceback" in r.stderr and "FileFormatError" in r.stderr


@pytest.mark.parametrize("args", [
    ["run", "--frobnicate"],
    ["find", str(DATA / "gru64_cat3.npz")],  # -o missing
    ["find", str(DATA / "gru64_cat3.npz"), "-o", "x.npz", "--method", "sgd"],
    ["run", "--states", "0"],
    ["run", "/no/such/file.npz"],
    ["analyze"],
    ["convert", str(DATA / "gru64_cat3.npz"), "-o", "x.npz", "--direction", "2"],
])
def test_usage_errors_exit_2(args):
    assert CliRunner().invoke(main, args).exit_code == 2


def test_help_lists_the_commands():
    r = _invoke("--help")
    assert r.exit_code == 0
    for cmd in ("run", "find", "analyze", "convert", "bench", "info"):
        assert cmd in r.stdout


# ----------------------------------------------------------------------------- the report
def test_run_writes_the_html_report(run_default_with_report):
    import base64
    import re

    summary, report, stderr = run_default_with_report
    assert summary["report"] == str(report) and f"report written to {report}" in stderr
    text = report.read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text) and "<script" not in text
    fp, sp = summary["fixed_points"], summary["slow_points"]
    assert f"{fp['found']} found, {fp['converged']} converged, {fp['distinct']} distinct, {fp['stable']} stable" in text
    assert f"<td>{sp['participation_ratio']:.4g}</td>" in text
    assert f"dimension {summary['wordcount_prediction']['dimension']}" in text
    assert "fastfp:data/gru64_cat3.npz" in text and "attractor in PC space" not in text  # that is inside a PNG


def test_run_report_default_path_no_report_and_text_line(tmp_path):
    r = _invoke("run", *SMALL)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fastfp-report.html").is_file()
    assert "report written to fastfp-report.html" in r.stderr and "report           fastfp-report.html" in r.stdout
    (tmp_path / "fastfp-report.html").unlink()
    r = _invoke("run", *SMALL, "--no-report", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["report"] is None
    assert not (tmp_path / "fastfp-report.html").exists() and "report" not in r.stderr


def test_run_report_errors(tmp_path):
    r = _invoke("run", "--report", tmp_path / "r.html", "--no-report")
    assert r.exit_code == 2 and "--no-report" in r.output
    r = _invoke("run", "--report", tmp_path / "missing" / "r.html", *SMALL)
    # a usage error (exit 2), as the same problem with find -o
    assert r.exit_code == 2 and "'--report'" in r.stderr and "does not exist" in r.stderr
    assert "solving" not in r.stderr  # refused before any work


def _hide_matplotlib(monkeypatch):
    import sys

    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_run_without_matplotlib(tmp_path, monkeypatch):
    _hide_matplotlib(monkeypatch)
    # The default report: the analysis still runs, and a note (even with --quiet) names the extra.
    r = _invoke("-q", "run", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["report"] is None and not (tmp_path / "fastfp-report.html").exists()
    assert "no report written" in r.stderr and "fastfp-rnn[report]" in r.stderr and "--no-report" in r.stderr
    # An explicit --report is an error, before any work.
    r = _invoke("run", "--report", tmp_path / "r.html", *SMALL)
    assert r.exit_code == 1 and "fastfp-rnn[report]" in r.stderr and "solving" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    # --no-report: nothing to say.
    r = _invoke("-q", "run", *SMALL, "--no-report")
    assert r.exit_code == 0 and r.stderr == ""


def test_analyze_report_and_horizon(tmp_path):
    import re

    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "48", "--docs", "16",
                "--slow-ratio", "0.05", "--keep", "all")
    assert r.exit_code == 0, r.output
    report = tmp_path / "a <&> b.html"
    a = _invoke("analyze", out, "--report", report, "--horizon", "20", "--json")
    assert a.exit_code == 0, a.output + a.stderr
    s = json.loads(a.stdout)
    assert s["report"] == str(report) and s["integration_modes"]["horizon"] == 20
    fp = fastfp.FixedPoints.load(out)
    modes = fastfp.analysis.integration_modes(fp, horizon=20)
    assert s["integration_modes"]["median"] == modes.median
    assert sum(s["integration_modes"]["counts"].values()) == len(fp)
    text = report.read_text(encoding="utf-8")
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', text)) == 4
    assert "a &lt;&amp;&gt; b.html" not in text  # the report names the input file, not itself
    assert f"<td>{len(fp)} (N=64)</td>" in text and "at horizon 20 steps" in text
    t = _invoke("analyze", out, "--horizon", "20")
    assert t.exit_code == 0 and "integration      median modes" in t.stdout and "\nreport " not in t.stdout


def test_analyze_report_errors(tmp_path, monkeypatch):
    out = tmp_path / "one.npz"
    p = fastfp.load_params(DATA / "gru64_cat3.npz").params
    one = fastfp.find_fixed_points(p, np.zeros((1, p.state_size)))
    one.decompose(p).save(out)
    r = _invoke("analyze", out, "--report", tmp_path / "r.html")
    assert r.exit_code == 1 and "'--report'" in r.stderr and "at least 2" in r.stderr
    assert _invoke("analyze", out, "--horizon", "0").exit_code == 2
    _hide_matplotlib(monkeypatch)
    r = _invoke("analyze", out, "--report", tmp_path / "r.html")
    assert r.exit_code == 1 and "fastfp-rnn[report]" in r.stderr
    assert _invoke("analyze", out).exit_code == 0  # no report asked: no matplotlib needed


# ----------------------------------------------------------------------------- progress bars
def test_progress_bars_forced_and_quiet(tmp_path):
    r = _invoke("run", *SMALL, "--no-report", "--progress")
    assert r.exit_code == 0, r.output
    assert "exact fixed points [" in r.stderr and "slow points" in r.stderr and "48/48" in r.stderr
    bar = r.stderr.split("exact fixed points [", 1)[1].split("\n")[0]  # redrawn with \r, ends full
    assert bar.startswith("---") and bar.endswith("exact fixed points [" + "#" * 30 + "] 48/48")
    r = _invoke("run", *SMALL, "--no-report")  # stderr is not a terminal here: no bar
    assert r.exit_code == 0 and "[" not in r.stderr
    r = _invoke("-q", "run", *SMALL, "--no-report", "--progress")  # --quiet wins
    assert r.exit_code == 0 and r.stderr == ""
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "16", "--docs", "8", "--progress")
    assert r.exit_code == 0 and "fixed points [" in r.stderr and "16/16" in r.stderr


# ----------------------------------------------------------------------------- bench
def test_bench_quick_json():
    r = _invoke("bench", "--quick", "--json", "--repeats", "1")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["size"] == "quick" and s["machine"]["cpu_count"] >= 1
    assert [(row["op"], row["backend"]) for row in s["rows"]] == [("step", "cpu"), ("jacobian", "cpu"), ("solve", "cpu")]
    for row in s["rows"]:
        assert row["median_s"] > 0 and row["min_s"] <= row["median_s"] and row["repeats"] == 1 and row["calls"] >= 1
        assert row["per_state_us"] == pytest.approx(row["median_s"] / row["batch"] * 1e6)
    assert "converged" in s["rows"][2]["note"]
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert s["gpu"].startswith("no GPU") and "fastfp-rnn[gpu]" in s["gpu"]


def test_bench_table_reference_and_float32():
    r = _invoke("bench", "--quick", "--repeats", "1", "--reference", "--dtype", "float32")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("fastfp bench (quick, float32)") and lines[2].split()[:3] == ["op", "cell", "backend"]
    rows = [ln.split() for ln in lines[3:] if ln and not ln.startswith("gpu:")]
    assert [(x[0], x[2]) for x in rows] == [("step", "cpu"), ("jacobian", "cpu"), ("step", "numpy"),
                                            ("jacobian", "numpy"), ("solve", "cpu")]
    assert lines[-1].startswith("gpu: ")


@pytest.mark.parametrize("args", [["bench", "--repeats", "0"], ["bench", "--dtype", "float16"], ["bench", "--size"]])
def test_bench_usage_errors(args):
    assert _invoke(*args).exit_code == 2


def test_bench_library_errors():
    from fastfp import _bench

    with pytest.raises(fastfp.InvalidOptionError, match="'size'"):
        _bench.run_bench("huge")
    with pytest.raises(fastfp.InvalidOptionError, match="'repeats'"):
        _bench.run_bench("quick", repeats=0)
    with pytest.raises(fastfp.InvalidOptionError, match="'min_time'"):
        _bench.run_bench("quick", min_time=0)
    with pytest.raises(fastfp.InvalidOptionError, match="'backend'"):
        _bench.run_bench("quick", backends=("tpu",))


def test_run_speed_units_parts_scales_the_lstm_cell_state():
    # a limit tight enough that the absolute test stops few points (10 of 48 at 3e-3)
    args = ("-q", "run", DATA / "lstm32_cat3.npz", "--task", "categorical", "--classes", "3", "--json", "--no-report",
            "--slow-speed", "3e-3", *SMALL)
    plain = json.loads(_invoke(*args).stdout)
    r = _invoke(*args, "--speed-units", "parts")
    assert r.exit_code == 0, r.output
    parts = json.loads(r.stdout)
    assert plain["speed_units"] == "state" and plain["part_units"] == [1.0, 1.0]
    assert parts["speed_units"] == "parts" and parts["part_units"][0] == 1.0
    # the unit of c is its spread over the visited states, in units of h's (computed here apart)
    model = fastfp.load(DATA / "lstm32_cat3.npz")
    length = model.metadata.get("task_params", {}).get("length", 50)
    data = fastfp.tasks.categorical(24, n_classes=3, length=length, seed=0)
    params = model.params.astype(np.float64)
    E = np.asarray(model.embedding, np.float64)
    traj = fastfp.rollout(params, None, E[np.asarray(data.tokens)] * data.mask()[..., None], lengths=data.lengths)
    S, H = traj[data.mask()], params.hidden_size
    assert parts["part_units"][1] == pytest.approx(S[:, H:].std(axis=0).mean() / S[:, :H].std(axis=0).mean())
    assert parts["part_units"][1] > 1.5  # this LSTM's c does spread wider than h
    # c's unit of ~3 loosens the test: the solver must have received it
    assert parts["slow_points"]["kept"] > plain["slow_points"]["kept"]
    human = _invoke("-q", "run", DATA / "lstm32_cat3.npz", "--no-report", "--speed-units", "parts", *SMALL)
    assert "in part units 1.00 / " in human.stdout and "(h / c)" in human.stdout


def test_run_speed_units_rejects_unknown():
    r = _invoke("-q", "run", "--speed-units", "coords", *SMALL)
    assert r.exit_code == 2 and "--speed-units" in r.output


# ----------------------------------------------------------------------------- corpus-trained models
def _corpus_model(tmp_path, words=("<pad>", "<unk>", "good", "bad", "the", "film")):
    """A saved GRU classifier over ``words`` whose metadata says it was trained on a corpus with
    labels (neg, pos), as train_classifier records it."""
    V = len(words)
    params = fastfp.RNNParams.random("gru", 6, 4, seed=0)
    rng = np.random.default_rng(0)
    meta = {"task": {"name": "corpus", "params": {"label_names": ["neg", "pos"], "lowercase": True,
                                                  "multilabel": False, "tokenizer": "default", "source": "train.csv"}}}
    model = fastfp.Model(params, rng.normal(size=(V, 4)), rng.normal(size=(2, 6)), vocab=tuple(words), metadata=meta)
    path = tmp_path / "corpus_model.npz"
    fastfp.save_params(path, model)
    return path


def test_corpus_model_needs_its_corpus(tmp_path):
    m = _corpus_model(tmp_path)
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--states", "8")
    assert r.exit_code == 1 and "trained on a text corpus (train.csv)" in r.stderr and "--corpus FILE" in r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--states", "8", "--text-column", "review")
    assert r.exit_code == 1 and "--text-column" in r.stderr and "--corpus FILE" in r.stderr


def test_corpus_is_read_with_the_models_vocabulary_and_options(tmp_path):
    m = _corpus_model(tmp_path)
    rows = [("Good film, good!", "pos"), ("bad the film", "neg"), ("the good", "pos"), ("bad bad", "neg"),
            ("Film: good", "pos"), ("bad film", "neg")]
    corpus = tmp_path / "c.csv"
    corpus.write_text("id,review,stars\n" + "".join(f'{i},"{t}",{y}\n' for i, (t, y) in enumerate(rows)))
    vocab = {"good", "bad", "the", "film"}
    tokens = [w for t, _ in rows for w in fastfp.corpus.default_tokenize(t.lower())]
    n_unknown = sum(w not in vocab for w in tokens)  # the oracle: the punctuation
    assert n_unknown == 3
    base = ("-q", "run", m, "--corpus", corpus, "--no-report", "--json", "--states", "8")
    r = _invoke(*base)
    assert r.exit_code == 1 and "--text-column / --label-column" in r.stderr
    r = _invoke(*base, "--text-column", "review", "--label-column", "stars")
    assert r.exit_code == 0, r.output + r.stderr
    assert f"{n_unknown} of {len(tokens)} tokens ({100 * n_unknown / len(tokens):.1f}%) are not in the model's" in r.stderr
    assert json.loads(r.stdout)["data"]["docs"] == 6
    r = _invoke(*base, "--text-column", "review", "--label-column", "stars", "--docs", "4", "--length", "2")
    assert r.exit_code == 0, r.output + r.stderr
    d = json.loads(r.stdout)["data"]
    assert d["docs"] == 4 and d["length"] == 2


def test_corpus_bad_rows_are_listed_line_by_line_or_skipped(tmp_path):
    m = _corpus_model(tmp_path)
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\ngood film,pos\n,neg\nbad,meh\nthe bad film,neg\n")
    base = ("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4")
    r = _invoke(*base)
    assert r.exit_code == 1
    assert "2 bad record(s) of 4:\n  line 3: empty_text" in r.stderr and "\n  line 4: unknown_label" in r.stderr
    assert "pass --skip-bad-rows" in r.stderr and "on_error" not in r.stderr
    r = _invoke(*base, "--skip-bad-rows")
    assert r.exit_code == 0, r.output + r.stderr
    assert "2 bad record(s) skipped (--skip-bad-rows); first: line 3: empty_text" in r.stderr


def test_corpus_of_mostly_unknown_words_is_refused(tmp_path):
    m = _corpus_model(tmp_path)
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\nxyzzy foo,pos\nbar qux good,neg\n")
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4")
    assert r.exit_code == 1 and "80% of the tokens" in r.stderr and "unknown to the model" in r.stderr
    assert "the limit is 50%, --max-unknown FRACTION sets another" in r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4", "--max-unknown", "0.7")
    assert r.exit_code == 1 and "--max-unknown 0.7 given" in r.stderr and not (tmp_path / "fp.npz").exists()
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4", "--max-unknown", "0.8")
    assert r.exit_code == 0 and "4 of 5 tokens (80.0%) are not in the model's vocabulary" in r.stderr, r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--max-unknown", "1.5")
    assert r.exit_code == 2 and "--max-unknown" in r.output
    # NaN compares false with every share: it would turn the guard off, so it is no value at all
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--max-unknown", "nan")
    assert r.exit_code == 2 and "'nan' is not a finite number in the range 0<=x<=1" in r.output, r.output


@pytest.mark.parametrize("option, value", [("--slow-speed", "nan"), ("--slow-speed", "inf"), ("--noise", "nan"),
                                           ("--atol", "inf"), ("--slow-ratio", "nan")])
def test_non_finite_numbers_are_usage_errors_before_any_work(option, value, tmp_path):
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "4", option, value)
    assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output and "solving" not in r.output, r.output


def test_corpus_labels_must_fit_the_readout(tmp_path):
    corpus = tmp_path / "five.csv"
    corpus.write_text("text,label\n" + "".join(f"w{i % 3} the,{i}\n" for i in range(5)))
    r = _invoke("-q", "run", DATA / "gru64_cat3.npz", "--corpus", corpus, "--states", "4", "--no-report")
    assert r.exit_code == 1 and "has 5 labels ('0', '1', '2', '3', '4') but the model's readout has 3 output(s)" in r.stderr
    corpus.write_text("text,label\nw0 the,a\nw1 the,b\n")  # fewer labels than outputs: which is which is a guess
    r = _invoke("-q", "run", DATA / "gru64_cat3.npz", "--corpus", corpus, "--states", "4", "--no-report")
    assert r.exit_code == 0, r.output
    assert ("2 labels ('a', 'b') for the model's 3 outputs: label i is taken as output i in this sorted order; "
            "name the model's outputs in order with fastfp convert ... --labels FILE") in r.stderr, r.stderr
    # the same from Python
    model = fastfp.load_params(DATA / "gru64_cat3.npz")
    (tmp_path / "two.csv").write_text(corpus.read_text())
    corpus.write_text("text,label\n" + "".join(f"w{i % 3} the,{i}\n" for i in range(5)))
    with pytest.raises(fastfp.InvalidOptionError, match="argument 'path': .* has 5 labels"):
        fastfp.read_corpus(corpus, model=model)
    with pytest.warns(UserWarning, match="label i is taken as output i"):
        fastfp.read_corpus(tmp_path / "two.csv", model=model)
    with pytest.raises(fastfp.InvalidOptionError, match=r"argument 'labels': names 4 labels .* 3 output"):
        fastfp.read_corpus(tmp_path / "two.csv", model=model, labels=["a", "b", "c", "d"])
    # a single output reads two labels (a sigmoid readout), not three
    binary = fastfp.Model(model.params, model.embedding, model.readout_weight[:1], vocab=model.vocab)
    fastfp.read_corpus(tmp_path / "two.csv", model=binary, test_fraction=0)
    with pytest.raises(fastfp.InvalidOptionError, match="has 5 labels .* 1 output"):
        fastfp.read_corpus(corpus, model=binary)
    # labels named by the caller are as meant: no warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastfp.read_corpus(tmp_path / "two.csv", model=model, labels=["a", "b", "c"], test_fraction=0)


def test_output_paths_that_name_no_file_are_refused(tmp_path):
    for out, message in (("", "got '': expected a file path"), (f"{tmp_path}/o.npz/", "which names a folder")):
        r = _invoke("find", DATA / "gru64_cat3.npz", "-o", out, "--states", "4")
        assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o.npz").exists()
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "o.npz", "--seed", "-1")
    assert r.exit_code == 2 and "'--seed': -1 is not in the range x>=0" in r.output
    # an explicit output about to be replaced is said even under -q
    (tmp_path / "o.npz").write_bytes(b"old")
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "o.npz", "--states", "4")
    assert r.exit_code == 0 and f"fastfp: note: {tmp_path / 'o.npz'} exists; it will be replaced" in r.stderr


def test_json_is_strict_even_with_non_finite_numbers(tmp_path):
    from fastfp.status import Status

    assert _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--states", "4").exit_code == 0
    saved = dict(np.load(tmp_path / "fp.npz", allow_pickle=False))
    saved["x"][0] = saved["residual"][0] = saved["eigvals"][0] = np.nan
    saved["status"][0] = int(Status.NONFINITE)
    np.savez(tmp_path / "nan.npz", **saved)
    r = _invoke("analyze", tmp_path / "nan.npz", "--points", "all", "--json")
    assert r.exit_code == 0, r.output

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    summary = json.loads(r.stdout, parse_constant=refuse)
    assert summary["max_residual"] is None, summary


def test_analyze_names_a_file_without_eigenvalues(tmp_path):
    fp = fastfp.find_fixed_points(fastfp.RNNParams.random("gru", 4, 2, seed=0), np.zeros((2, 4)), maxiter=3)
    fp.save(tmp_path / "noeig.npz")
    r = _invoke("analyze", tmp_path / "noeig.npz")
    assert r.exit_code == 1 and f"FIXEDPOINTS: {tmp_path / 'noeig.npz'} holds no eigenvalues" in r.stderr, r.stderr
    assert "fastfp find" in r.stderr


def test_corpus_with_as_many_unknown_words_as_in_training_is_read(tmp_path):
    # A model trained on a corpus read with a capped vocabulary (max_vocab) saw the same share of
    # <unk>: its own text is not refused. read_corpus records that share per split.
    text = "text,label\nxyzzy foo good,pos\nbar qux bad,neg\nfoo bar good,pos\n"
    (tmp_path / "train.csv").write_text(text)
    read = fastfp.read_corpus(tmp_path / "train.csv", max_vocab=2, test_fraction=0)
    share = read.train.params["unknown_fraction"]
    assert share == pytest.approx(read.report.n_unk_train / read.train.lengths.sum()) and share > 0.5
    for record, refused in ((dict(unknown_fraction=share), False), (dict(vocab="built", max_vocab=2), False), ({}, True)):
        m = _corpus_model(tmp_path)
        model = fastfp.load(m)
        model.metadata["task"]["params"].update(record)
        fastfp.save_params(m, model)
        r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", tmp_path / "train.csv", "--states", "4")
        assert (r.exit_code == 1 and "unknown to the model" in r.stderr) if refused else r.exit_code == 0, r.stderr


def test_corpus_notes_describe_the_documents_used(tmp_path):
    m = _corpus_model(tmp_path)
    corpus = tmp_path / "c.csv"
    # the first two documents hold 1 unknown word of 5; the file's long last one many more
    corpus.write_text("text,label\ngood film,pos\nbad the xyzzy,neg\n" + "foo " * 300 + "good,pos\n")
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4", "--docs", "2")
    assert r.exit_code == 0, r.stderr
    assert "c.csv (the first 2 documents): 1 of 5 tokens (20.0%) are not in the model's vocabulary" in r.stderr
    assert "longest document" not in r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4")
    assert r.exit_code == 1 and "unknown to the model" in r.stderr  # 301 of 306 over the whole file
    many = tmp_path / "m.csv"
    many.write_text("text,label\n" + "good film the,pos\n" * 20 + ("good " * 400) + ",neg\n")
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", many, "--states", "4")
    assert r.exit_code == 0 and "the longest document has 400 tokens, the median 3; every document is padded" in r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", many, "--states", "4", "--length", "10")
    assert r.exit_code == 0 and "1 document(s) truncated at --length 10 (390 tokens dropped)" in r.stderr
    r = _invoke("-q", "find", m, "-o", tmp_path / "fp.npz", "--corpus", many, "--states", "4", "--length", "10",
                "--docs", "3")  # read_corpus counts the file's truncations, not which: said so
    assert r.exit_code == 0 and "1 document(s) of the whole file truncated at --length 10" in r.stderr


def test_corpus_of_a_one_hot_model_with_a_vocabulary_uses_it(tmp_path):
    words = ("film", "the", "bad", "good", "<unk>", "<pad>")  # not the order read_corpus would build
    params = fastfp.RNNParams.random("gru", 6, len(words), seed=0)
    meta = {"task": {"name": "corpus", "params": {"label_names": ["neg", "pos"], "lowercase": True,
                                                  "multilabel": False, "tokenizer": "default"}}}
    model = fastfp.Model(params, None, np.random.default_rng(0).normal(size=(2, 6)), vocab=words, metadata=meta)
    path = tmp_path / "onehot.npz"
    fastfp.save_params(path, model)
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\ngood film!,pos\nbad the film,neg\nthe good,pos\n")
    r = _invoke("-q", "find", path, "-o", tmp_path / "fp.npz", "--corpus", corpus, "--states", "4")
    assert r.exit_code == 0, r.output + r.stderr
    assert "1 of 8 tokens (12.5%) are not in the model's vocabulary" in r.stderr


def test_vanilla_state_dicts_warn_of_tanh_and_convert_takes_the_nonlinearity(tmp_path):
    rng = np.random.default_rng(0)
    sd = {"rnn.weight_ih_l0": rng.normal(size=(6, 3)), "rnn.weight_hh_l0": 0.3 * rng.normal(size=(6, 6)),
          "rnn.bias_ih_l0": rng.normal(size=6), "rnn.bias_hh_l0": rng.normal(size=6)}
    np.savez(tmp_path / "relu_sd.npz", **sd)
    r = _invoke("-q", "find", tmp_path / "relu_sd.npz", "-o", tmp_path / "fp.npz", "--states", "8", "--docs", "4",
                "--task", "categorical", "--classes", "2")
    assert r.exit_code == 0, r.output + r.stderr
    assert "fastfp: warning: WEIGHTS: " in r.stderr and "assumed 'tanh'" in r.stderr
    assert "pass --nonlinearity 'relu'" in r.stderr and "options of fastfp convert" in r.stderr
    r = _invoke("convert", tmp_path / "relu_sd.npz", "-o", tmp_path / "relu.npz", "--nonlinearity", "relu")
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["nonlinearity"] == "relu" and "warning" not in r.stderr
    params = fastfp.load_params(tmp_path / "relu.npz").params
    h = rng.normal(size=(4, 6))
    np.testing.assert_allclose(fastfp.step(params, h, None),
                               np.maximum(h @ sd["rnn.weight_hh_l0"].T + sd["rnn.bias_ih_l0"] + sd["rnn.bias_hh_l0"], 0),
                               atol=1e-12)


def test_analyze_leaves_out_the_points_that_did_not_settle(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "24", "--docs", "8", "--maxiter", "6",
                "--keep", "all")
    assert r.exit_code == 0, r.output + r.stderr
    assert "saved points did not settle ({'max_iter':" in r.stderr
    fp = fastfp.FixedPoints.load(out)
    found = np.isin(fp.status, (fastfp.Status.CONVERGED, fastfp.Status.SLOW_POINT, fastfp.Status.Q_TOLERANCE))
    assert 0 < found.sum() < len(fp)  # some points stopped at the cap of 6 iterations
    summary = json.loads(_invoke("analyze", out, "--json").stdout)
    assert summary["n_points"] == len(fp) and summary["n_analysed"] == int(found.sum())
    assert summary["stable"] == int(fp[found].is_stable.sum())
    assert summary["top_abs_eigenvalue"]["max"] == pytest.approx(float(np.abs(fp[found].eigvals[:, 0]).max()))
    every = json.loads(_invoke("analyze", out, "--json", "--points", "all").stdout)
    assert every["n_analysed"] == len(fp) and every["stable"] == int(fp.is_stable.sum())
    text = _invoke("analyze", out).stdout
    assert f"the {len(fp) - int(found.sum())} that did not settle are left out (--points all keeps them)" in text


def test_find_points_creeping_at_the_cap_point_to_the_slow_manifold_mode(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", out, "--states", "24", "--docs", "8", "--maxiter", "3",
                "--input", "word:the")
    assert r.exit_code == 0, r.output + r.stderr
    fp = fastfp.FixedPoints.load(out)
    capped = fp.status == fastfp.Status.MAX_ITER
    params = fastfp.load_params(DATA / "gru64_cat3.npz").params.astype(np.float64)
    # the speed of each saved point, from the NumPy reference step rather than the solver's record
    speed = np.abs(fastfp.step(params, fp.x, fp.inputs, backend="numpy") - fp.x).max(axis=1)
    creeping = capped & (speed <= 1e-2)
    assert creeping.any() and (capped & ~creeping).any()  # the count must tell the two apart
    assert (f"{int(creeping.sum())} of the {int(capped.sum())} at the iteration cap move by less than 0.01 per step"
            in r.stderr)
    assert "--slow-ratio 0.05 --slow-speed 1e-2 stops them as slow points" in r.stderr
    # in slow-manifold mode, or when nothing creeps, there is nothing to point at
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "s.npz", "--states", "24", "--docs", "8",
                "--maxiter", "3", "--input", "word:the", "--slow-ratio", "0.05")
    assert r.exit_code == 0 and "slow manifold rather than roots" not in r.stderr
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "r.npz", "--states", "24", "--docs", "8")
    assert r.exit_code == 0 and "slow manifold rather than roots" not in r.stderr


def _ghost(tmp_path):
    # h' = tanh(2 h + 0.6): one root (0.989) and, past the saddle-node where the other two met, a
    # ghost near h = -0.74: a local minimum of q with |F(h) - h| = 0.034, where the slow-manifold
    # search stops as q-stationary slow points, faster than a slow speed of 1e-2.
    path = tmp_path / "ghost.npz"
    fastfp.save_params(path, fastfp.RNNParams("vanilla", np.zeros((1, 4)), np.array([[2.0]]), b_ih=np.array([0.6])))
    return path


def test_find_and_analyze_leave_out_slow_points_faster_than_the_slow_speed(tmp_path):
    out = tmp_path / "fp.npz"
    r = _invoke("-q", "find", _ghost(tmp_path), "-o", out, "--states", "64", "--docs", "8", "--noise", "1.5",
                "--slow-ratio", "0.05", "--slow-speed", "1e-2", "--keep", "all")
    assert r.exit_code == 0, r.output + r.stderr
    fp = fastfp.FixedPoints.load(out)
    params = fastfp.load_params(tmp_path / "ghost.npz").params
    speed = np.abs(fastfp.step(params, fp.x, fp.inputs, backend="numpy") - fp.x).max(axis=1)
    fast = (fp.status == fastfp.Status.SLOW_POINT) & (speed > 1e-2)
    assert fast.sum() >= 5 and (fp.status == fastfp.Status.CONVERGED).sum() >= 5
    assert f"{int(fast.sum())} of the {len(fp)} saved points are slow points that move faster than --slow-speed 0.01" in r.stderr
    summary = json.loads(_invoke("analyze", out, "--json").stdout)
    assert summary["too_fast"] == int(fast.sum()) and summary["n_analysed"] == len(fp) - int(fast.sum())
    text = _invoke("analyze", out).stdout
    assert f"the {int(fast.sum())} slow points faster than the search's slow_speed 0.01 are left out" in text
    # the default slow speed (1e-3) is the one the note names
    r = _invoke("-q", "find", tmp_path / "ghost.npz", "-o", out, "--states", "64", "--docs", "8", "--noise", "1.5",
                "--slow-ratio", "0.05", "--keep", "all")
    assert r.exit_code == 0 and "move faster than --slow-speed 0.001" in r.stderr, r.output + r.stderr
    assert fastfp.FixedPoints.load(out).metadata["slow_speed"] == 1e-3
    # what is left is one root, however many copies: no manifold to give a PR of
    assert "points PR        - (fewer than 2 distinct points)" in text and summary["participation_ratio"] is None
    every = json.loads(_invoke("analyze", out, "--json", "--points", "all").stdout)
    assert every["n_analysed"] == len(fp) and every["participation_ratio"] is not None
    r = _invoke("-q", "run", tmp_path / "ghost.npz", "--states", "64", "--docs", "8", "--noise", "1.5", "--no-report")
    assert r.exit_code == 0, r.output + r.stderr
    assert "manifold         (too few points: 1 distinct)" in r.stdout and "stalled faster, dropped" in r.stdout


def test_run_says_when_few_searches_settled_and_why():
    # At a slow-speed limit no search can meet, every manifold number would rest on nothing.
    r = _invoke("-q", "run", "--states", "32", "--docs", "8", "--slow-speed", "1e-9", "--no-report")
    assert r.exit_code == 0, r.output + r.stderr
    assert "fastfp: warning: only 0 of 32 slow-point searches settled within 1e-09 (32 not settled (max_iter 32))" in r.stderr
    assert "slow points      0 kept (0 distinct)" in r.stdout and "; 32 not settled (max_iter 32)" in r.stdout
    r = _invoke("-q", "run", *SMALL, "--no-report")
    assert "warning" not in r.stderr and "not settled" not in r.stdout


def test_vocabulary_files_as_tokenizers_write_them(tmp_path):
    # A byte-order mark, {token: id} JSON (Hugging Face), an unknown-word token spelt otherwise,
    # labels with stray spaces, cased text: each read as meant (review).
    words = ["[PAD]", "[UNK]", "good", "bad", "movie", "the", "plot", "great", "awful", "fine"]
    ids = {w: i for i, w in enumerate(words)}
    (tmp_path / "vocab.json").write_text(json.dumps(dict(reversed(list(ids.items())))))  # any key order: by id
    (tmp_path / "labels.txt").write_bytes("\ufeffneg \r\npos\r\nmixed\r\n".encode("utf-8"))
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "m.npz", "--vocab", tmp_path / "vocab.json",
                "--labels", tmp_path / "labels.txt", "--unk", "[UNK]", "--cased")
    assert r.exit_code == 0, r.output + r.stderr
    model = fastfp.load(tmp_path / "m.npz")
    assert model.vocab == ("[PAD]", "<unk>") + tuple(words[2:])
    record = model.metadata["task"]["params"]
    assert record["label_names"] == ["neg", "pos", "mixed"] and record["lowercase"] is False
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\ngood movie,pos\nGood plot,neg\n")
    data = fastfp.read_corpus(corpus, model=model)
    tokens = [np.asarray(t[:n]).tolist() for t, n in zip(data.train.tokens, data.train.lengths)]
    assert tokens == [[2, 4], [1, 6]]  # cased: 'Good' is not 'good', so it reads as <unk>
    (tmp_path / "gaps.json").write_text(json.dumps({"a": 0, "b": 2}))
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--vocab", tmp_path / "gaps.json")
    assert r.exit_code == 1 and "must map each token to its id, 0..1 once each" in r.stderr
    r = _invoke("convert", DATA / "torch_gru_classifier.pt", "-o", tmp_path / "x.npz", "--cased")
    assert r.exit_code == 2 and "give --vocab too" in r.output + r.stderr


def test_with_vocab_records_how_text_was_read_and_keeps_an_earlier_record():
    params = fastfp.RNNParams.random("gru", 4, 3, seed=0)
    model = fastfp.Model(params, np.eye(5, 3), np.ones((2, 4)))
    m = model.with_vocab(["<pad>", "<unk>", "a", "b", "c"])
    assert m.metadata["task"]["params"] == {"lowercase": True, "multilabel": False, "vocab": "attached (Model.with_vocab)"}
    m2 = m.with_vocab(m.vocab, labels=[" x", "y "], multilabel=True)
    assert m2.metadata["task"]["params"]["label_names"] == ["x", "y"] and m2.metadata["task"]["params"]["multilabel"]
    assert m2.with_vocab(m.vocab).metadata["task"]["params"]["label_names"] == ["x", "y"]  # kept
    for bad, match in (([" "], "empty name"), (["x", "x"], "duplicate"), (["x"], "got 1 labels, expected 2")):
        with pytest.raises((fastfp.InvalidOptionError, fastfp.ShapeError), match=match):
            m.with_vocab(m.vocab, labels=bad)
    with pytest.raises(fastfp.InvalidOptionError, match="argument 'unk': got 'zz', which is not in the vocabulary"):
        m.with_vocab(m.vocab, unk="zz")


def test_find_shard_options_need_a_sharded_run(tmp_path):
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--shard-size", "100")
    assert r.exit_code == 2 and "--shard-size: options of a sharded run; give --workers N or --scheduler" in r.output


def test_an_embedding_left_in_the_file_is_noted_where_words_enter_one_hot(tmp_path):
    # A safetensors classifier (keys sorted by name): 'emb.weight' (10, 4) is not taken as the
    # embedding, and the categorical task's 4 words fit the GRU's 4 inputs one-hot; find says so.
    st = pytest.importorskip("safetensors.numpy")
    p = fastfp.RNNParams.random("gru", 8, 4, seed=0)
    rng = np.random.default_rng(0)
    sd = {"emb.weight": rng.normal(size=(10, 4)), "rnn.weight_ih_l0": p.w_ih, "rnn.weight_hh_l0": p.w_hh,
          "rnn.bias_ih_l0": p.b_ih, "rnn.bias_hh_l0": p.b_hh, "out.weight": rng.normal(size=(3, 8)),
          "out.bias": np.zeros(3)}
    st.save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}, tmp_path / "clf.safetensors")
    r = _invoke("-q", "convert", tmp_path / "clf.safetensors", "-o", tmp_path / "m.npz", "--cell", "gru")
    assert r.exit_code == 0, r.output
    r = _invoke("-q", "find", tmp_path / "m.npz", "-o", tmp_path / "fp.npz", "--input", "word:the", *SMALL)
    assert r.exit_code == 0, r.output
    assert ("the weights file holds 'emb.weight', which could be an embedding but was not taken as one; the "
            "categorical data's words enter as one-hot vectors of 4") in r.stderr
    assert "--embedding-key emb.weight" in r.stderr
    r = _invoke("-q", "convert", tmp_path / "clf.safetensors", "-o", tmp_path / "e.npz", "--cell", "gru",
                "--embedding-key", "emb.weight")
    r = _invoke("-q", "find", tmp_path / "e.npz", "-o", tmp_path / "fp2.npz", "--input", "word:the", *SMALL)
    assert r.exit_code == 0 and "could be an embedding" not in r.stderr, r.output
    # No vocabulary: the task's word ids pick the rows, for the rollouts and for word:the alike.
    np.testing.assert_allclose(fastfp.FixedPoints.load(tmp_path / "fp2.npz").inputs[0], sd["emb.weight"][3], rtol=1e-6)


def test_analyze_says_what_a_file_of_another_kind_is(tmp_path):
    r = _invoke("analyze", DATA / "torch_gru_classifier.pt")
    assert r.exit_code == 1 and r.stderr.startswith("fastfp: error: FIXEDPOINTS: ")
    assert "it is a PyTorch torch.save file of weights, which fastfp.load reads" in r.stderr
    r = _invoke("analyze", DATA / "gru64_cat3.npz")
    assert r.exit_code == 1 and "FIXEDPOINTS" in r.stderr and "it is a fastfp params / model file" in r.stderr
    r = _invoke("analyze", DATA / "torch_gru_classifier.safetensors")
    assert r.exit_code == 1 and "it looks like a safetensors file of weights" in r.stderr
    with pytest.raises(fastfp.FileFormatError, match="it is a fastfp FixedPoints file"):
        p = fastfp.load_params(DATA / "gru64_cat3.npz").params
        fastfp.find_fixed_points(p, np.zeros((2, p.state_size)), maxiter=0).save(tmp_path / "fp.npz")
        fastfp.load_params(tmp_path / "fp.npz")


def test_find_and_run_say_a_fixed_points_file_is_no_weights(tmp_path):
    p = fastfp.load_params(DATA / "gru64_cat3.npz").params
    fastfp.find_fixed_points(p, np.zeros((2, p.state_size)), maxiter=0).save(tmp_path / "fp.npz")
    for args in (("find", tmp_path / "fp.npz", "-o", tmp_path / "out.npz"), ("run", tmp_path / "fp.npz", "--no-report")):
        r = _invoke("-q", *args)
        assert r.exit_code == 1 and r.stderr.startswith("fastfp: error: WEIGHTS: "), r.output
        assert "holds fixed points, not a network's weights; it is a fastfp FixedPoints file" in r.stderr
        assert "fastfp analyze read it" in r.stderr and not (tmp_path / "out.npz").exists()
    with pytest.raises(fastfp.FileFormatError, match="argument 'source'.*holds fixed points"):
        fastfp.load(tmp_path / "fp.npz")


def test_an_input_file_of_the_wrong_batch_or_with_nan_is_refused_before_the_work(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4)))
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8")
    assert r.exit_code == 1 and "holds 2 input vectors; expected one, shape (4,), or one per state, (8, 4)" in r.stderr
    assert "solving" not in r.output
    np.save(x, np.array([0.0, np.nan, 0.0, 0.0]))
    r = _invoke("find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--input", x, "--states", "8")
    assert r.exit_code == 1 and "holds NaN or Inf (first at index (1,))" in r.stderr


def test_json_is_accepted_where_json_is_the_only_output_and_analyze_takes_no_report(tmp_path):
    r = _invoke("info", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["fastfp"] == fastfp.__version__
    r = _invoke("-q", "convert", DATA / "gru64_cat3.npz", "-o", tmp_path / "m.npz", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["output"] == str(tmp_path / "m.npz")
    r = _invoke("-q", "find", DATA / "gru64_cat3.npz", "-o", tmp_path / "fp.npz", "--json", *SMALL)
    assert r.exit_code == 0 and json.loads(r.stdout)["points"] == 48
    r = _invoke("-q", "analyze", tmp_path / "fp.npz", "--no-report")
    assert r.exit_code == 0 and r.stdout.startswith("file ") and "report" not in r.stdout
    r = _invoke("analyze", tmp_path / "fp.npz", "--no-report", "--report", tmp_path / "a.html")
    assert r.exit_code == 2 and "'--report' and '--no-report' exclude each other" in r.output
    assert not (tmp_path / "a.html").exists()


def test_find_refuses_options_that_do_not_go_together_before_loading(tmp_path):
    # The weights file cannot be read: a usage error about the options, not a load error, shows
    # they are checked first (before loading, rollouts and the solve).
    missing = tmp_path / "not_loaded.npz"
    missing.write_text("not weights")
    for extra, message in ((["--workers", "2", "--scheduler", "tcp://h:1"], "not both"),
                           (["--shard-size", "8"], "--shard-size: options of a sharded run"),
                           (["--adam-lr", "0.5"], "--adam-lr 0.5 with --method")):
        r = _invoke("find", missing, "-o", tmp_path / "fp.npz", *extra)
        assert r.exit_code == 2 and message in r.output, (extra, r.output)
