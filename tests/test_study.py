"""fastfp.study: specs and keys, the quick battery end to end (rows checked against independent NumPy
recomputations), resuming, tables, the `fastfp study` command and every error path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

import fastfp
from fastfp import analysis, study
from fastfp.cli import main
from fastfp.errors import ArgumentTypeError, FileFormatError, InvalidOptionError
from fastfp.study import NetworkSpec
from support import linear_relu, q_linear, textbook_adam


# --------------------------------------------------------------------------- specs and keys
def test_spec_normalises_task_kwargs_and_round_trips():
    a = NetworkSpec("categorical", {"n_classes": 3, "length": 20}, cell="lstm", hidden_size=8, seed=2)
    b = NetworkSpec("categorical", (("length", 20), ("n_classes", 3)), cell="lstm", hidden_size=8, seed=2)
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.task_params == {"n_classes": 3, "length": 20}
    assert a.n_outputs == 3 and a.length == 20
    assert NetworkSpec.from_dict(a.to_dict()) == a
    json.dumps(a.to_dict())  # serialisable


def test_spec_and_run_network_pickle():
    import pickle

    spec = study.battery("paper")[0]
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and back.key == spec.key and back.task_params == spec.task_params
    assert pickle.loads(pickle.dumps(study.run_network)) is study.run_network


def test_keys_unique_safe_and_stable_across_processes():
    specs = [s for name in study.BATTERIES for s in study.battery(name)]
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    assert all(set(k) <= allowed and not k.startswith(".") for k in keys)
    base = specs[0]
    # every field is part of the key
    variants = [
        NetworkSpec(base.task, base.task_kwargs, cell="gru_reset_before", hidden_size=base.hidden_size),
        NetworkSpec(base.task, base.task_kwargs, cell=base.cell, hidden_size=base.hidden_size + 1),
        NetworkSpec(base.task, base.task_kwargs, cell=base.cell, hidden_size=base.hidden_size, seed=1),
        NetworkSpec(base.task, base.task_kwargs, cell=base.cell, hidden_size=base.hidden_size, l2=1e-3),
        NetworkSpec(base.task, base.task_kwargs, cell=base.cell, hidden_size=base.hidden_size, steps=7),
        NetworkSpec(base.task, {**base.task_params, "sampler": "iid"}, cell=base.cell, hidden_size=base.hidden_size),
    ]
    assert len({v.key for v in variants} | {base.key}) == len(variants) + 1
    code = ("from fastfp import study; import json; "
            "print(json.dumps([s.key for name in study.BATTERIES for s in study.battery(name)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=_repo_root())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == keys


def test_keys_of_saved_batteries_do_not_change():
    # Saved models are found by key: a new NetworkSpec field must not change the keys of the
    # specs made before it (these are the keys of the models in runs/paper when lr_decay was added).
    paper = study.battery("paper")
    assert paper[0].key == "categorical-L50-n3-gru-h64-s0-e0368b9149"
    # paper's vanilla RNN is the orthogonal-start network that 'extra' held before (same key, so
    # its saved models reload), and its former vanilla RNN keeps its key
    assert paper[3].key == "categorical-L50-n3-vanilla-h64-s0-07beb3fb54"
    assert _former_paper_vanilla().key == "categorical-L50-n3-vanilla-h64-s0-db1fd9d01c"
    assert "lr_decay" not in paper[0].to_dict() and "adam_eps" not in paper[0].to_dict()
    slower = NetworkSpec(paper[0].task, paper[0].task_kwargs, cell=paper[0].cell, hidden_size=64, lr_decay=0.9999)
    assert slower.to_dict()["lr_decay"] == 0.9999 and slower.key != NetworkSpec(
        paper[0].task, paper[0].task_kwargs, cell=paper[0].cell, hidden_size=64).key
    assert NetworkSpec.from_dict(slower.to_dict()) == slower


def _former_paper_vanilla():
    """The 3-class vanilla RNN of 'paper' before it took the orthogonal start."""
    return NetworkSpec("categorical", {"n_classes": 3, "length": 50}, cell="vanilla", hidden_size=64, steps=12000,
                       target_accuracy=0.995, eval_docs=2000, lr=0.01)


def test_recurrent_init_in_spec_and_key():
    base = _former_paper_vanilla()
    assert base.recurrent_init == "default" and base.recurrent_gain == 1.0
    d = base.to_dict()
    assert "recurrent_init" not in d and "recurrent_gain" not in d
    # the default, given explicitly, is the same network with the same key
    explicit = NetworkSpec(base.task, base.task_kwargs, cell=base.cell, hidden_size=base.hidden_size, steps=base.steps,
                           target_accuracy=base.target_accuracy, lr=base.lr, eval_docs=base.eval_docs,
                           recurrent_init="default", recurrent_gain=1.0)
    assert explicit == base and explicit.key == base.key == "categorical-L50-n3-vanilla-h64-s0-db1fd9d01c"
    ident = replace(base, recurrent_init="identity")
    orth = replace(base, recurrent_init="orthogonal")
    scaled = replace(base, recurrent_init="identity", recurrent_gain=0.9)
    normal = replace(base, recurrent_init="normal")
    assert len({base.key, ident.key, orth.key, scaled.key, normal.key}) == 5
    assert ident.to_dict()["recurrent_init"] == "identity" and "recurrent_gain" not in ident.to_dict()
    assert scaled.to_dict()["recurrent_gain"] == 0.9
    for s in (ident, orth, scaled, normal):
        assert NetworkSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    # the network column names the init
    assert "recurrent_init identity, recurrent_gain 0.9" in study._training({"spec": scaled.to_dict()})
    assert "recurrent_init" not in study._training({"spec": base.to_dict()})


def test_spec_recurrent_init_reaches_training(monkeypatch, tmp_path):
    import fastfp.train

    seen = {}

    def fake_train(task_data, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(fastfp.train, "train_classifier", fake_train)
    spec = NetworkSpec("categorical", {"n_classes": 2, "length": 8}, cell="vanilla", hidden_size=4,
                       recurrent_init="orthogonal", recurrent_gain=0.8)
    with pytest.raises(RuntimeError, match="stop here"):
        study._train(spec, 1, False)
    assert seen["recurrent_init"] == "orthogonal" and seen["recurrent_gain"] == 0.8


def test_forget_bias_in_spec_key_and_training(monkeypatch):
    import fastfp.train

    lstm = [s for s in study.battery("paper") if s.cell == "lstm"][0]
    assert lstm.forget_bias == 0.0 and "forget_bias" not in lstm.to_dict()
    renn = replace(lstm, forget_bias=1.0)
    assert renn.to_dict()["forget_bias"] == 1.0 and renn.key != lstm.key
    assert NetworkSpec.from_dict(json.loads(json.dumps(renn.to_dict()))) == renn
    assert "forget_bias 1" in study._training({"spec": renn.to_dict()})
    seen = {}

    def fake_train(task_data, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(fastfp.train, "train_classifier", fake_train)
    with pytest.raises(RuntimeError, match="stop here"):
        study._train(renn, 1, False)
    assert seen["forget_bias"] == 1.0


def _repo_root():
    import os

    return os.path.dirname(os.path.dirname(os.path.abspath(study.__file__)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(task="sentiment"), "argument 'task'"),
        (dict(task="categorical", cell="transformer"), "argument 'cell'"),
        (dict(task="categorical", task_kwargs={"n_labels": 3}), "not an argument of task 'categorical'"),
        (dict(task="categorical", task_kwargs={"n_classes": 1}), "n_classes"),
        (dict(task="ordered", task_kwargs={"bank": "7word"}), "bank"),
        (dict(task="correlated", task_kwargs={"mixing": 1.5}), "argument 'mixing'"),
        (dict(task="correlated", task_kwargs={"bank": "3word"}), "not an argument of task 'correlated'"),
        (dict(task="categorical", task_kwargs="n_classes=3"), "argument 'task_kwargs'"),
        (dict(task="categorical", task_kwargs={"n_classes": np.int64(3)}), "argument 'task_kwargs'"),
        (dict(task="categorical", hidden_size=0), "argument 'hidden_size'"),
        (dict(task="categorical", seed=-1), "argument 'seed'"),
        (dict(task="categorical", steps=2.5), "argument 'steps'"),
        (dict(task="categorical", target_accuracy=1.5), "argument 'target_accuracy'"),
        (dict(task="categorical", l2=-1.0), "argument 'l2'"),
        (dict(task="categorical", lr="fast"), "argument 'lr'"),
        (dict(task="categorical", lr="0.1"), r"argument 'lr': got '0.1', expected a number in \(0.0, 10.0\]"),
        (dict(task="categorical", cell="lstm", forget_bias="1.0"), "argument 'forget_bias': got '1.0'"),
        (dict(task="categorical", lr_decay=1.5), "argument 'lr_decay'"),
        (dict(task="categorical", lr_decay=0.0), "argument 'lr_decay'"),
        (dict(task="categorical", adam_eps=0.0), "argument 'adam_eps'"),
        (dict(task="categorical", recurrent_init="xavier"), "argument 'recurrent_init': got 'xavier', expected one of"),
        (dict(task="categorical", recurrent_init=1), "argument 'recurrent_init': got 1"),
        (dict(task="categorical", recurrent_init="identity", recurrent_gain=0.0), "argument 'recurrent_gain'"),
        (dict(task="categorical", recurrent_init="identity", recurrent_gain=11.0), "argument 'recurrent_gain'"),
        (dict(task="categorical", recurrent_gain=0.9), "argument 'recurrent_gain': got 0.9 with recurrent_init 'default'"),
        (dict(task="categorical", cell="gru", forget_bias=1.0), "argument 'forget_bias': got 1.0 for cell 'gru'"),
        (dict(task="categorical", cell="lstm", forget_bias=float("nan")), "argument 'forget_bias'"),
        (dict(task="categorical", cell="lstm", forget_bias=11.0), "argument 'forget_bias'"),
    ],
)
def test_spec_rejects_bad_fields(kwargs, match):
    with pytest.raises(InvalidOptionError, match=match):
        NetworkSpec(**kwargs)


def test_from_dict_errors():
    with pytest.raises(ArgumentTypeError, match="argument 'd'"):
        NetworkSpec.from_dict(["categorical"])
    with pytest.raises(InvalidOptionError, match="unknown NetworkSpec fields"):
        NetworkSpec.from_dict({"task": "categorical", "units": 3})


def test_batteries():
    paper = study.battery("paper")
    cat = [s for s in paper if s.task == "categorical"]
    assert {(s.n_outputs, s.cell) for s in cat} == {(n, c) for n in (2, 3, 4, 5)
                                                    for c in ("gru", "lstm", "ugrnn", "vanilla")}
    assert all(64 <= s.hidden_size <= 128 for s in paper)
    assert any(s.task == "ordered" and s.n_outputs == 5 and s.task_params["bank"] == "3word" for s in paper)
    assert any(s.task == "multilabel" and s.n_outputs == 3 for s in paper)
    assert 1 <= len(study.battery("quick")) <= 2
    extra = study.battery("extra")
    seeds = {(s.cell, s.seed) for s in extra if s.task == "categorical" and s.n_outputs == 3}
    assert {("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)} <= seeds
    assert any(s.task == "ordered" and s.task_params["bank"] == "5word" for s in extra)
    assert any(s.task == "correlated" for s in extra)
    orth = [s for s in extra if s.recurrent_init == "orthogonal"]
    assert sorted((s.n_outputs, s.seed) for s in orth) == [(5, 1)]
    assert {s.cell for s in orth} == {"vanilla"}
    # paper's vanilla RNNs start orthogonal (Adam eps 1e-8, lr 1e-3 * 0.9999^step), the rest as PyTorch
    assert {(s.recurrent_init, s.adam_eps, s.lr, s.lr_decay) for s in paper if s.cell == "vanilla"} == {
        ("orthogonal", 1e-8, 1e-3, 0.9999)}
    assert all(s.recurrent_init == "default" for s in paper if s.cell != "vanilla")
    # 'extra' holds no network of 'paper' (its saved models stay where they are)
    assert not {s.key for s in extra} & {s.key for s in paper}
    low = study.battery("low-l2")
    assert {s.l2 for s in low} == {1e-4}
    assert {(s.n_outputs, s.cell) for s in low if s.task == "categorical"} == {
        (n, c) for n in (2, 3, 4, 5) for c in ("gru", "lstm", "ugrnn", "vanilla")}
    assert all(s.recurrent_init == "orthogonal" for s in low if s.cell == "vanilla")
    assert {(s.n_outputs, s.cell) for s in low if s.seed == 1} == {(n, c) for n in (3, 4, 5) for c in ("gru", "lstm")}
    assert not {s.key for s in low} & ({s.key for s in extra} | {s.key for s in paper})
    cellb = study.battery("study-cell")
    assert [s.task_params["bank"] for s in cellb if s.l2 == 5e-3] == ["5word"] * 3
    assert {(s.cell, s.recurrent_init, s.forget_bias) for s in cellb} == {
        ("gru_reset_before", "normal", 0.0), ("lstm", "normal", 1.0)}
    assert sorted((s.task, s.n_outputs, s.cell, s.hidden_size, s.seed, s.l2) for s in cellb) == sorted(
        [("categorical", 3, "gru_reset_before", 64, 0, 5e-4), ("ordered", 5, "gru_reset_before", 64, 0, 2e-3)]
        + [("ordered", 5, "gru_reset_before", 64, s, 5e-3) for s in (0, 1, 2)]
        + [("ordered", 5, "gru_reset_before", 64, s, 3e-3) for s in (0, 1, 2)]
        + [("ordered", 5, "gru_reset_before", 64, 0, 1e-2), ("ordered", 5, "gru_reset_before", 64, 1, 1e-2),
           ("ordered", 5, "gru_reset_before", 128, 0, 1e-2)]
        + [("categorical", n, "lstm", 64, s, 5e-4) for n in (4, 5) for s in (0, 1, 2)])
    assert not {s.key for s in cellb} & ({s.key for s in low} | {s.key for s in extra} | {s.key for s in paper})
    with pytest.raises(InvalidOptionError, match="argument 'name': got 'full'"):
        study.battery("full")


def test_expectations():
    e = study.expectations(NetworkSpec("categorical", {"n_classes": 4}))
    assert e["dimension"] == 3 and e["modes"] == 3 and e["pr_range"] == [2.65, 3.35]
    assert e["readout_angle"] == pytest.approx(np.degrees(np.arccos(-1 / 3)))
    assert study.expectations(NetworkSpec("categorical", {"n_classes": 3}))["states_pr"] == 2.11
    e = study.expectations(NetworkSpec("ordered", {"n_classes": 5, "bank": "3word"}))
    assert e["dimension"] == 2 and e["pr_range"] == [1.7, 2.3] and e["states_pr"] == 2.03
    assert study.expectations(NetworkSpec("multilabel", {"n_labels": 3}))["dimension"] == 3
    e = study.expectations(NetworkSpec("correlated", {"n_classes": 4, "mixing": 0.75}))
    assert e["dimension"] == 3 and e["pr_range"] is None and e["readout_angle"] is None
    assert NetworkSpec("correlated").n_outputs == 4  # the task function's default
    short = study.expectations(NetworkSpec("categorical", {"n_classes": 3, "length": 12}))
    assert short["states_pr"] is None and short["wordcount_pr"] is None and short["dimension"] == 2
    with pytest.raises(ArgumentTypeError, match="argument 'spec'"):
        study.expectations("categorical")


# --------------------------------------------------------------------------- integration modes, analytic
def _diagonal_rnn(lams, seed=0):
    """A vanilla tanh RNN with zero biases and W_hh = Q diag(lams) Q^T: h* = 0 is an exact fixed point
    at zero input and its Jacobian is W_hh (tanh'(0) = 1), with eigenvalues exactly ``lams``."""
    n = len(lams)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    w = q @ np.diag(lams) @ q.T
    return fastfp.RNNParams("vanilla", np.zeros((n, 2)), w, np.zeros(n), np.zeros(n))


def test_integration_modes_two_sided_counts_slightly_unstable_modes():
    lams = [1.01, 0.995, 0.97, 0.9, 0.5, 0.1]
    p = _diagonal_rnn(lams)
    fp = fastfp.find_fixed_points(p, np.full((3, 6), 0.01), None)
    assert fp.success.all() and np.abs(fp.x).max() < 1e-8
    fp = fp.unique(1e-3).decompose(p)
    np.testing.assert_allclose(np.sort(np.abs(fp.eigvals[0]))[::-1], lams, atol=1e-10)
    # tau = 1/|ln|lambda||: 1.01 -> 100.5, 0.995 -> 199.5, 0.97 -> 32.8, 0.9 -> 9.5
    assert analysis.integration_modes(fp, horizon=50, two_sided=True).median == 2
    assert analysis.integration_modes(fp, horizon=50).median == 1  # one-sided drops the growing mode
    assert analysis.integration_modes(fp, horizon=25, two_sided=True).median == 3
    assert analysis.integration_modes(fp, horizon=5, two_sided=True).median == 4
    m = study._modes(fp, 50.0)
    assert (m["median"], m["median_half"], m["median_one_sided"]) == (2, 3, 1)


def test_rotation_limited_counts_drop_fast_complex_pairs():
    # W_hh = Q blockdiag(R(0.5), 0.999 R(0.03), R(0.01), 0.9) Q^T with R(a) a rotation by a rad:
    # eigenvalues exp(+-0.5i), 0.999 exp(+-0.03i), exp(+-0.01i), 0.9 at h* = 0.
    def rot(a, r=1.0):
        return r * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    blocks = np.zeros((7, 7))
    blocks[:2, :2], blocks[2:4, 2:4], blocks[4:6, 4:6], blocks[6, 6] = rot(0.5), rot(0.03, 0.999), rot(0.01), 0.9
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(7, 7)))
    p = fastfp.RNNParams("vanilla", np.zeros((7, 2)), q @ blocks @ q.T, np.zeros(7), np.zeros(7))
    fp = fastfp.find_fixed_points(p, np.full((2, 7), 0.01), None).unique(1e-3).decompose(p)
    assert len(fp) == 1 and np.abs(fp.x).max() < 1e-8
    ang = np.sort(np.abs(np.angle(fp.eigvals[0])))
    np.testing.assert_allclose(ang, [0, .01, .01, .03, .03, .5, .5], atol=1e-9)
    m = study._modes(fp, 50.0)
    # modulus alone: the three pairs (|ln 0.999| * 50 = 0.05); 0.9 fails (tau 9.5)
    assert (m["median"], m["median_half"]) == (6, 6)
    # angle * horizon <= 1: at L only the 0.01 pair (0.5 rad), at L/2 also the 0.03 pair (0.75 rad)
    assert (m["median_rotation_limited"], m["median_half_rotation_limited"]) == (2, 4)


# --------------------------------------------------------------------------- the quick battery end to end
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("quick")
    lines = []
    # run_network's defaults except n_states (so that `fastfp study --states 64` finds the rows done)
    result = study.run_study(study.battery("quick"), out, progress=lines.append, n_states=64)
    return out, result, lines


def _numpy_states(model, data):
    """Trajectories with fastfp's NumPy reference cells (independent of the compiled kernels)."""
    E = np.asarray(model.embedding, dtype=np.float64)
    xs = E[np.asarray(data.tokens)]
    return fastfp.rollout(model.params.astype(np.float64), None, xs, lengths=data.lengths, backend="numpy")


def test_quick_rows_match_independent_recomputation(quick):
    out, result, lines = quick
    specs = study.battery("quick")
    assert [r["key"] for r in result.rows] == [s.key for s in specs]
    assert result.ran == tuple(s.key for s in specs) and result.skipped == ()
    assert any("training" in line for line in lines)
    for spec, row in zip(specs, result.rows):
        json.dumps(row)
        assert row["trained"] is True and row["task"] == spec.task and row["cell"] == spec.cell
        for kind in ("model.npz", "fixed_points.npz", "figures.npz", "row.json"):
            assert (out / f"{spec.key}.{kind}").is_file()
        assert not list(out.glob(".*tmp"))  # no temporary file left behind
        assert json.loads((out / f"{spec.key}.row.json").read_text()) == row
        model = fastfp.load_params(out / f"{spec.key}.model.npz")
        assert model.metadata["study_key"] == spec.key
        # test accuracy: the documents of the test seed stream, NumPy reference rollouts
        test = spec.make_task(2000, np.random.default_rng([spec.seed, 3]))
        states = _numpy_states(model, test)
        pred = np.argmax(model.logits(states[:, -1]), axis=1)
        assert row["test_accuracy"] == pytest.approx(float((pred == test.labels).mean()), abs=1e-12)
        assert row["test_accuracy"] >= 0.9  # the tiny networks do learn their task
        # PR of the visited states: eigenvalues of the covariance of the first 256 test documents
        sub = states[:256][test.mask()[:256]]
        ev = np.clip(np.linalg.eigvalsh(np.cov(sub.T)), 0, None)
        assert row["pr_states"] == pytest.approx(ev.sum() ** 2 / (ev ** 2).sum(), rel=1e-8)
        # integration modes from the saved eigenvalues: 1/|ln|lambda|| >= L (and L/2)
        fp = fastfp.FixedPoints.load(out / f"{spec.key}.fixed_points.npz")
        assert len(fp) == row["n_distinct"] and np.all(fp.residual <= row['options']['slow_speed'] + 1e-12)
        assert fp.metadata["restart_steps"] == 0  # the search the documented rows were measured with
        with np.errstate(divide="ignore"):
            tau = 1 / np.abs(np.log(np.abs(fp.eigvals)))
        assert row["modes_median"] == float(np.median((tau >= spec.length).sum(1)))
        assert row["modes_median_half"] == float(np.median((tau >= spec.length / 2).sum(1)))
        turn = np.abs(np.angle(fp.eigvals))
        for key, h in (("modes_median_rotation_limited", spec.length), ("modes_median_half_rotation_limited", spec.length / 2)):
            assert row[key] == float(np.median(((tau >= h) & (turn * h <= 1.0)).sum(1))), key
        # density-equalised PR: the distinct points are the kept ones up to 1e-3, far below the
        # spacing, so thinning them gives a PR close to the row's (computed on the kept points)
        eq = fastfp.analysis.equalized_dimension(fp.x, resolution=row["options"]["equalize_resolution"])
        assert row["pr_fixed_points_equalized"] == pytest.approx(eq.participation_ratio, abs=0.15)
        assert 1 <= row["n95_fixed_points_equalized"] <= row["n_equalized"]
        # the fixed points are fixed points of F(., e_the)
        the = np.eye(model.params.input_size)[list(model.vocab).index("the")]
        f = fastfp.step(model.params.astype(np.float64), fp.x, np.tile(the, (len(fp), 1)), backend="numpy")
        np.testing.assert_allclose(np.abs(f - fp.x).max(axis=1), fp.residual, rtol=1e-6, atol=1e-12)
        # word-count prediction: rank of the centred class-mean frequency matrix
        wc = spec.make_task(4000, np.random.default_rng([spec.seed, 4]))
        freq = wc.counts() / spec.length
        M = np.stack([freq[wc.labels == k].mean(0) for k in range(spec.n_outputs)]) - freq.mean(0)
        s = np.linalg.svd(M, compute_uv=False)
        assert row["wordcount_dimension"] == int((s > 0.05 * s[0]).sum()) == spec.n_outputs - 1
        # readout angles
        W = np.asarray(model.readout_weight, dtype=np.float64)
        U = W / np.linalg.norm(W, axis=1, keepdims=True)
        want = [np.degrees(np.arccos(np.clip(U[i] @ U[j], -1, 1)))
                for i in range(len(W)) for j in range(i + 1, len(W))]
        np.testing.assert_allclose(row["readout_angles"], want, atol=1e-9)
        assert 0.0 <= row["order_invariance"] <= 1.0
        assert row["expected"] == study.expectations(spec)
        assert row["checks"]["wordcount"] is True
        assert row["checks"]["accuracy"] == (row["test_accuracy"] >= 0.97)
        # the study's own search ran beside ours from the same candidates
        assert 1 <= row["n_study_procedure"] <= row["n_states"]
        assert 0 <= row["nit_study_procedure"] <= study.STUDY_MAX_STEPS
        assert row["options"]["study_procedure"]["adam_lr"] == 0.01


def test_figure_artifacts(quick):
    out, result, _ = quick
    row = result.rows[0]
    with np.load(out / row["files"]["figures"], allow_pickle=False) as z:
        pcs = z["pca_components"]
        assert pcs.shape[0] <= 5 and pcs.shape[1] == row["state_size"]
        np.testing.assert_allclose(pcs @ pcs.T, np.eye(len(pcs)), atol=1e-10)
        assert z["states_pc"].shape == (400, len(pcs)) and z["states_label"].shape == (400,)
        assert z["final_pc"].shape == (256, len(pcs)) and z["fixed_points_pc"].shape == (row["n_distinct"], len(pcs))
        assert z["readout_weight"].shape == (row["n_classes"], row["hidden"])
        np.testing.assert_allclose(z["pca_explained_variance_ratio"][:5], row["states_top_variance"])


def test_resume_skips_finished_networks_and_remeasures_from_the_saved_model(quick, monkeypatch):
    out, first, _ = quick
    calls = []
    real = study.run_network
    monkeypatch.setattr(study, "run_network", lambda *a, **k: calls.append(a[0].key) or real(*a, **k))
    opts = dict(n_states=64)
    again = study.run_study(study.battery("quick"), out, **opts)
    assert calls == [] and again.ran == () and again.skipped == first.ran
    assert list(again.rows) == list(first.rows)
    # A network whose row is missing is measured again from its saved model, without training.
    import fastfp.train

    def no_training(*a, **k):
        raise AssertionError("trained although the model file exists")

    monkeypatch.setattr(fastfp.train, "train_classifier", no_training)
    key = first.rows[1]["key"]
    (out / f"{key}.row.json").unlink()
    third = study.run_study(study.battery("quick"), out, **opts)
    assert calls == [key] and third.ran == (key,)
    new, old = third.rows[1], first.rows[1]
    assert new["trained"] is False
    for field in ("test_accuracy", "pr_states", "pr_fixed_points", "pr_fixed_points_equalized", "modes_median", "modes_median_half",
                  "wordcount_dimension", "readout_angles", "order_invariance", "n_distinct", "train_steps"):
        assert new[field] == old[field], field
    # Other measuring options: measured again from the saved models, still without training.
    calls.clear()
    fourth = study.run_study(study.battery("quick")[:1], out, **{**opts, "n_states": 48})
    assert calls == [first.rows[0]["key"]] and fourth.rows[0]["n_states"] == 48
    assert fourth.rows[0]["options"]["n_states"] == 48 and fourth.rows[0]["trained"] is False
    assert fourth.rows[0]["test_accuracy"] == first.rows[0]["test_accuracy"]
    (out / f"{first.rows[0]['key']}.row.json").write_text(json.dumps(first.rows[0]))  # restore for other tests
    assert study.run_study(study.battery("quick"), out, **opts).ran == ()  # tables of the whole battery again


def test_rows_of_an_older_version_get_the_rotation_limited_counts_from_their_saved_points(quick, monkeypatch):
    out, first, _ = quick
    calls = []
    monkeypatch.setattr(study, "run_network", lambda *a, **k: calls.append(a[0].key))
    row = first.rows[1]
    path = out / f"{row['key']}.row.json"
    saved = path.read_text()
    try:
        fp = fastfp.FixedPoints.load(out / f"{row['key']}.fixed_points.npz")
        want = [analysis.integration_modes(fp, horizon=h, two_sided=True, max_rotation=1.0).median
                for h in (row["horizon"], row["horizon"] / 2)]
        assert [row["modes_median_rotation_limited"], row["modes_median_half_rotation_limited"]] == want
        old = {k: v for k, v in row.items() if "rotation_limited" not in k}
        path.write_text(json.dumps(old))
        again = study.run_study(study.battery("quick"), out, n_states=64)
        assert calls == [] and again.ran == ()  # read back, not measured again
        back = json.loads(path.read_text())
        assert [back["modes_median_rotation_limited"], back["modes_median_half_rotation_limited"]] == want
        assert again.rows[1] == back
        assert f"| {want[0]:.1f} / {want[1]:.1f} |" in (out / "study.md").read_text()
        # a point file that does not match its row is an error naming the file
        path.write_text(json.dumps({**old, "n_distinct": row["n_distinct"] + 1}))
        with pytest.raises(fastfp.FileFormatError, match=r"fixed_points\.npz holds .* but its row counts"):
            study.run_study(study.battery("quick"), out, n_states=64)
        # ... and so is a damaged one, with the same way out
        points = out / f"{row['key']}.fixed_points.npz"
        kept = points.read_bytes()
        try:
            points.write_bytes(kept[: len(kept) // 2])
            path.write_text(json.dumps(old))
            with pytest.raises(fastfp.FileFormatError, match=r"argument 'out_dir': .*fixed_points\.npz cannot be read"
                                                               r".*remove the row file"):
                study.run_study(study.battery("quick"), out, n_states=64)
            # no point file: the row is left as it is and the table shows '-'
            points.unlink()
            study.run_study(study.battery("quick"), out, n_states=64)
            assert not set(study._ROTATION_KEYS) & set(json.loads(path.read_text()))
            assert "| - / - |" in (out / "study.md").read_text()
        finally:
            points.write_bytes(kept)
        # a row without distinct points gets None, not an error
        path.write_text(json.dumps({**old, "n_distinct": 0}))
        study.run_study(study.battery("quick"), out, n_states=64)
        back = json.loads(path.read_text())
        assert back["modes_median_rotation_limited"] is None and back["modes_median_half_rotation_limited"] is None
        assert calls == []
    finally:
        path.write_text(saved)
    assert study.run_study(study.battery("quick"), out, n_states=64).ran == ()


def test_tables(quick):
    out, result, _ = quick
    # rows as they are on disk now (other tests may have re-measured one)
    rows = [json.loads((out / f"{r['key']}.row.json").read_text()) for r in result.rows]
    assert json.loads((out / "study.json").read_text()) == rows
    md = (out / "study.md").read_text()
    assert md == study.table_markdown(rows)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(rows) and "PR fixed points" in lines[0] and "word-count dim" in lines[0]
    assert "PR fp equalised" in lines[0]
    assert "categorical N=2 gru-12 s0" in md
    with open(out / "study.csv", newline="") as fh:
        flat = list(csv.DictReader(fh))
    assert [r["key"] for r in flat] == [r["key"] for r in rows]
    assert float(flat[0]["pr_fixed_points"]) == pytest.approx(rows[0]["pr_fixed_points"])
    assert flat[0]["expected_dimension"] == "1" and flat[1]["expected_dimension"] == "2"


def test_cli_study_prints_the_table_and_json(quick):
    out, result, _ = quick
    runner = CliRunner()
    opts = ["--states", "64"]
    res = runner.invoke(main, ["-q", "study", "--battery", "quick", "--out", str(out), *opts])
    assert res.exit_code == 0, res.output
    assert res.output == (out / "study.md").read_text()
    assert all(r["key"].split("-")[0] in res.output for r in result.rows)
    res = runner.invoke(main, ["-q", "study", "--out", str(out), "--json", *opts])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.output)
    assert obj["ran"] == [] and obj["skipped"] == [r["key"] for r in result.rows]
    assert [r["key"] for r in obj["rows"]] == obj["skipped"]


def test_cli_study_errors(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = CliRunner().invoke(main, ["study", "--out", str(f)])
    assert res.exit_code in (1, 2)
    assert "out" in res.output
    res = CliRunner().invoke(main, ["study", "--battery", "huge", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "huge" in res.output
    res = CliRunner().invoke(main, ["study"])
    assert res.exit_code == 2 and "--out" in res.output
    # the CLI offers every battery fastfp.study defines (a literal there keeps `fastfp --help` light)
    option = next(p for p in main.commands["study"].params if p.name == "battery_name")
    assert tuple(option.type.choices) == study.BATTERIES


# --------------------------------------------------------------------------- error paths
def test_out_dir_errors(tmp_path):
    spec = study.battery("quick")[0]
    f = tmp_path / "a_file"
    f.write_text("")
    with pytest.raises(InvalidOptionError, match="argument 'out_dir': .* is not a directory"):
        study.run_network(spec, f)
    with pytest.raises(InvalidOptionError, match="argument 'out_dir': cannot create"):
        study.run_study([spec], f / "sub")
    with pytest.raises(ArgumentTypeError, match="argument 'out_dir'"):
        study.run_network(spec, 42)
    with pytest.raises(InvalidOptionError, match="argument 'out_dir'"):
        study.write_table([], f)


def test_run_network_argument_errors(tmp_path):
    spec = study.battery("quick")[0]
    with pytest.raises(ArgumentTypeError, match="argument 'spec'"):
        study.run_network({"task": "categorical"}, tmp_path)
    with pytest.raises(InvalidOptionError, match="argument 'fp_input'"):
        study.run_network(spec, tmp_path, fp_input="the")
    with pytest.raises(InvalidOptionError, match="argument 'n_states'"):
        study.run_network(spec, tmp_path, n_states=1)
    for bad in (0.0, 1.0, "x"):
        with pytest.raises(InvalidOptionError, match="argument 'equalize_resolution': got"):
            study.run_network(spec, tmp_path, equalize_resolution=bad)
    with pytest.raises(InvalidOptionError, match="argument 'slow_ratio'"):
        study.run_network(spec, tmp_path, slow_ratio=0)
    with pytest.raises(InvalidOptionError, match="argument 'progress'"):
        study.run_network(spec, tmp_path, progress="yes")
    with pytest.raises(InvalidOptionError, match="argument 'compare_zero_input'"):
        study.run_network(spec, tmp_path, compare_zero_input="no")
    with pytest.raises(InvalidOptionError, match="argument 'study_procedure': got 'no', expected True or False"):
        study.run_network(spec, tmp_path, study_procedure="no")
    with pytest.raises(InvalidOptionError, match="argument 'n_test'"):
        study.run_network(spec, tmp_path / "new", n_test=0)
    assert list(tmp_path.iterdir()) == []  # nothing trained or written, no folder created


def test_run_study_argument_errors(tmp_path):
    spec = study.battery("quick")[0]
    with pytest.raises(ArgumentTypeError, match="argument 'specs': item 1"):
        study.run_study([spec, "gru"], tmp_path)
    with pytest.raises(ArgumentTypeError, match="argument 'specs'"):
        study.run_study(3, tmp_path)
    with pytest.raises(InvalidOptionError, match="appears twice"):
        study.run_study([spec, spec], tmp_path)
    with pytest.raises(InvalidOptionError, match="argument 'progress'"):
        study.run_study([spec], tmp_path, progress=3)
    with pytest.raises(InvalidOptionError, match="argument 'nstates': not an option of run_network"):
        study.run_study([spec], tmp_path, nstates=3)
    (tmp_path / f"{spec.key}.row.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not a readable row file"):
        study.run_study([spec], tmp_path)


def test_model_file_of_another_network_is_refused(tmp_path):
    a, b = study.battery("quick")
    p = fastfp.RNNParams.random("gru", 12, 3, seed=0)
    fastfp.save_params(tmp_path / f"{a.key}.model.npz",
                       fastfp.Model(p, np.eye(3), np.ones((2, 12)), vocab=("w0", "w1", "the"),
                                    metadata={"study_key": b.key}))
    with pytest.raises(FileFormatError, match="belongs to network"):
        study.run_network(a, tmp_path)


_NO_TORCH = """
import sys
sys.modules['torch'] = None
from fastfp import study
from fastfp.errors import MissingDependencyError
spec = study.battery('quick')[0]
try:
    study.run_network(spec, sys.argv[1])
except MissingDependencyError as exc:
    assert "fastfp-rnn[torch]" in str(exc), exc
    print("ok")
# run_study refuses before it creates the folder or logs a network as started
import os
out = os.path.join(sys.argv[1], "study")
said = []
try:
    study.run_study(study.battery('quick'), out, progress=said.append)
except MissingDependencyError as exc:
    assert "fastfp-rnn[torch]" in str(exc) and not os.path.exists(out) and said == [], (exc, said)
    print("ok")
"""


def test_import_does_not_need_torch_and_training_without_it_names_the_extra(tmp_path):
    code = "import sys, fastfp.study; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=_repo_root())
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=_repo_root())
    assert out.returncode == 0 and out.stdout.split() == ["ok", "ok"], out.stdout + out.stderr


# --------------------------------------------------------------------------- one network of the paper battery
@pytest.mark.slow
def test_paper_gru_3_classes_reproduces_the_claims(tmp_path):
    """The 3-class GRU of the 'paper' battery (trains for minutes): the study's claims hold."""
    pytest.importorskip("torch")
    spec = next(s for s in study.battery("paper") if s.task == "categorical" and s.n_outputs == 3 and s.cell == "gru")
    row = study.run_network(spec, tmp_path)
    assert row["test_accuracy"] >= 0.97
    assert abs(row["pr_fixed_points"] - 2) <= 0.35
    assert row["modes_median_half"] == 2
    assert row["wordcount_dimension"] == 2
    assert row["readout_max_deviation"] <= 10
    assert row["order_invariance"] >= 0.95


def test_checks_state_the_claims():
    spec = NetworkSpec("categorical", {"n_classes": 3})
    row = dict(task="categorical", n_classes=3, expected=study.expectations(spec), test_accuracy=0.98,
               pr_fixed_points=2.3, modes_median=1.0, modes_median_half=2.0, wordcount_dimension=2,
               readout_max_deviation=9.0, order_invariance=0.96)
    assert study.checks(row) == dict(accuracy=True, pr=True, modes=False, modes_half=True, wordcount=True,
                                     readout=True, order=True, pr_states=None)
    assert study.checks(dict(row, pr_states=2.1))["pr_states"] is None  # the categorical claim names the fixed points
    row.update(test_accuracy=0.969, pr_fixed_points=2.36, readout_max_deviation=10.5, order_invariance=0.94)
    c = study.checks(row)
    assert not (c["accuracy"] or c["pr"] or c["readout"] or c["order"])
    two = dict(row, n_classes=2, expected=study.expectations(NetworkSpec("categorical", {"n_classes": 2})))
    assert study.checks(two)["readout"] is None  # the angle of a 2-class readout is unconstrained
    ml = dict(row, task="multilabel", expected=study.expectations(NetworkSpec("multilabel", {"n_labels": 3})),
              order_invariance=None, pr_fixed_points=None)
    assert study.checks(ml)["order"] is None and study.checks(ml)["pr"] is None
    assert study.checks(dict(ml, pr_states=3.12))["pr_states"] is True
    assert study.checks(dict(ml, pr_states=3.36))["pr_states"] is False
    ordered = NetworkSpec("ordered", {"n_classes": 5, "length": 50})
    orow = dict(row, task="ordered", n_classes=5, expected=study.expectations(ordered), order_invariance=None,
                pr_fixed_points=1.03, pr_states=2.03)
    c = study.checks(orow)
    assert c["pr"] is False and c["pr_states"] is True  # both measures stated, neither replaces the other
    assert study.checks(dict(orow, pr_states=1.69))["pr_states"] is False
    assert study.checks(dict(orow, pr_states=None))["pr_states"] is None
    # ordered: the word counts predict the reduction below the categorical K - 1 (PR), not a count
    assert study.checks(dict(orow, wordcount_pr=1.33, wordcount_dimension=2))["wordcount"] is True
    assert study.checks(dict(orow, wordcount_pr=3.70, wordcount_dimension=2))["wordcount"] is False
    three = dict(orow, n_classes=3, expected=study.expectations(NetworkSpec("ordered", {"n_classes": 3})))
    assert three["expected"]["dimension"] == 1
    assert study.checks(dict(three, wordcount_pr=1.29, wordcount_dimension=2))["wordcount"] is True
    assert study.checks(dict(three, wordcount_pr=1.70, wordcount_dimension=2))["wordcount"] is False
    two = dict(orow, n_classes=2, expected=study.expectations(NetworkSpec("ordered", {"n_classes": 2})))
    assert study.checks(dict(two, wordcount_pr=1.0, wordcount_dimension=1))["wordcount"] is True
    assert study.checks(dict(two, wordcount_pr=1.0, wordcount_dimension=2))["wordcount"] is False


def test_ordered_word_counts_predict_the_reduction_at_3_and_5_classes():
    # an independent check of the rule above on real word counts: the 3- and 5-class spectra are both
    # "one dominant component plus a small one" (2 components), with PR far below K - 1
    for k in (3, 5):
        data = fastfp.tasks.ordered(4000, n_classes=k, seed=3)
        wc = fastfp.analysis.wordcount_prediction(data)
        counts = np.stack([np.bincount(t[:n], minlength=len(data.vocab)) for t, n in zip(data.tokens, data.lengths)])
        f = np.stack([counts[data.labels == c].sum(0) / counts[data.labels == c].sum() for c in range(k)])
        s = np.linalg.svd(f - counts.sum(0) / counts.sum(), compute_uv=False)
        v = s ** 2 / (s ** 2).sum()
        assert wc.dimension == int((s > 0.05 * s[0]).sum()) == 2
        assert abs(wc.participation_ratio - 1 / (v ** 2).sum()) < 1e-9 and wc.participation_ratio < k - 1 - 0.35


def test_battery_html_report(quick, tmp_path):
    import base64
    import re

    pytest.importorskip("matplotlib")
    out, result, _ = quick
    path = study.write_report(result.rows, out, path=tmp_path / "study.html")
    html = open(path, encoding="utf-8").read()
    for row in result.rows:
        assert study.table_markdown([row]).splitlines()[2].split("|")[1].strip() in html  # the network's label
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # Per network: the points figure and the eigenvalue figure (when it has points).
    n_with_points = sum(1 for r in result.rows
                        if len(np.load(out / f"{r['key']}.figures.npz")["fixed_points_pc"]))
    assert len(images) == 2 * n_with_points and n_with_points >= 1
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "http://" not in html and "https://" not in html


def test_battery_report_needs_the_artifacts(quick, tmp_path):
    pytest.importorskip("matplotlib")
    _, result, _ = quick
    with pytest.raises(fastfp.FileFormatError, match="figures.npz"):
        study.write_report(result.rows, tmp_path)  # an empty folder: no artifacts


def test_cli_study_report(quick):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from fastfp.cli import main

    out, _, _ = quick
    r = CliRunner().invoke(main, ["-q", "study", "--out", str(out), "--states", "64", "--report"])
    assert r.exit_code == 0, r.output
    assert (out / "study.html").exists()


def test_study_acceptance_is_q_by_hand():
    # q(h) = 1/2 ||tanh(W x + U h + b) - h||^2 written out for a vanilla cell; points pass when
    # q < tol whatever their solver status (here: a FixedPoints of arbitrary states).
    rng = np.random.default_rng(0)
    H, M = 6, 3
    W, U, b = rng.normal(size=(H, M)), 0.4 * rng.normal(size=(H, H)), 0.1 * rng.normal(size=H)
    params = fastfp.RNNParams("vanilla", W, U, b_ih=b)
    x = rng.normal(size=M)
    h = rng.normal(size=(40, H)) * np.geomspace(1e-3, 1, 40)[:, None]
    h[3] = np.nan  # a diverged end point is never accepted
    from types import SimpleNamespace

    fp = SimpleNamespace(x=h)  # only the end points' states are read
    q_hand = np.array([0.5 * ((np.tanh(W @ x + U @ v + b) - v) ** 2).sum() for v in h])
    tol = float(np.nanmedian(q_hand))
    pts, q = study._study_accepted(params, fp, x, tol)
    np.testing.assert_allclose(q[np.isfinite(q_hand)], q_hand[np.isfinite(q_hand)], rtol=1e-12)
    assert np.isinf(q[3])
    np.testing.assert_array_equal(pts, h[np.nan_to_num(q_hand, nan=np.inf) < tol])
    assert 0 < len(pts) < 40


def test_study_search_keeps_points_below_q_tol_and_merges_them():
    params, U, b = linear_relu(5, 0.5, seed=4)
    h_star = np.linalg.solve(np.eye(5) - U, b)
    # six points displaced alike (their gradients share signs, so Adam's first step, lr * sign(g)
    # per coordinate, moves them alike and they stay within 0.025), two far ones
    near = h_star + 0.003 + 1e-4 * np.random.default_rng(0).uniform(-1, 1, (6, 5))
    far = h_star + np.array([[0.3] * 5, [0.6] * 5])
    h0 = np.vstack([near, far])
    tol = 1.01 * q_linear(U, b, h0).mean()  # below at once: renn takes one step and stops
    found = study.study_search(params, h0, q_tol=tol)
    x1 = textbook_adam(U, b, h0, 0.01, 1)
    q1 = q_linear(U, b, x1)
    assert (q1[:6] < tol).all() and (q1[6:] > tol).all()
    assert np.abs(x1[:6, None] - x1[None, :6]).max() < 0.025 / np.sqrt(5)
    assert found.metadata["nit_batch"] == 1 and found.metadata["n_below_q_tol"] == 6
    assert len(found) == 1  # the six near points merged (within 0.025), the far two dropped
    np.testing.assert_allclose(found.x[0], x1[np.argmin(q1[:6])], rtol=0, atol=1e-12)  # lowest q kept
    with pytest.raises(InvalidOptionError, match="argument 'q_tol'"):
        study.study_search(params, h0, q_tol=0)


def test_study_search_after_steps_is_renns_adam():
    params, U, b = linear_relu(5, 0.5, seed=5)
    h_star = np.linalg.solve(np.eye(5) - U, b)
    h0 = h_star + np.random.default_rng(2).uniform(0.05, 0.5, (40, 5))
    found = study.study_search(params, h0, q_tol=2e-4)
    n = found.metadata["nit_batch"]
    # renn's optimize: step k is taken from states whose mean q is tested after it; stop at the first <= tol
    means = [q_linear(U, b, textbook_adam(U, b, h0, 0.01, k)).mean() for k in (n - 2, n - 1)]
    assert 1 < n < study.STUDY_MAX_STEPS and means[0] > 2e-4 >= means[1]
    ends = textbook_adam(U, b, h0, 0.01, n)
    below = ends[q_linear(U, b, ends) < 2e-4]
    assert found.metadata["n_below_q_tol"] == len(below) > 0
    # every kept point is one of the end points below the tolerance, and every one of those lies
    # within 0.025 of a kept point
    d = np.linalg.norm(found.x[:, None] - below[None], axis=2)
    assert (d.min(axis=1) < 1e-9).all() and (d.min(axis=0) <= 0.025 + 1e-12).all()
    assert len(found) < len(below)
