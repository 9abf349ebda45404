"""fastfp.tasks: the seeded synthetic datasets (categorical, ordered, multilabel, correlated)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

import fastfp
from fastfp import InvalidOptionError, TaskData, tasks

# chi-square 0.999 quantiles (p = 0.001): a correct sampler fails these with probability 1e-3, and
# the seeds are fixed, so the tests are deterministic.
CHI2_999 = {9: 27.877, 10: 29.588, 20: 45.315}


def independent_counts(data: TaskData) -> np.ndarray:
    """(n, V) word counts within each document's length, computed without TaskData.counts."""
    out = np.zeros((data.n_docs, len(data.vocab)), dtype=np.int64)
    for b in range(data.n_docs):
        for t in data.tokens[b, : data.lengths[b]]:
            out[b, t] += 1
    return out


def chi2(observed: np.ndarray) -> float:
    expected = observed.sum() / observed.size
    return float(((observed - expected) ** 2 / expected).sum())


# ----------------------------------------------------------------------------- shapes and types
def test_categorical_shapes_vocab_evidence():
    d = tasks.categorical(90, n_classes=4, length=30, seed=0)
    assert isinstance(d, TaskData) and d.name == "categorical" and len(d) == 90
    assert d.tokens.shape == (90, 30) and d.tokens.dtype == np.int32
    assert d.lengths.shape == (90,) and d.lengths.dtype.kind == "i" and (d.lengths == 30).all()
    assert d.labels.shape == (90,) and d.labels.dtype.kind == "i"
    assert d.vocab == ("w0", "w1", "w2", "w3", "the") and d.vocab_size == 5
    expected = np.zeros((5, 4))
    expected[:4] = np.eye(4)
    np.testing.assert_array_equal(d.evidence, expected)
    assert d.tokens.min() >= 0 and d.tokens.max() < 5
    assert d.n_classes == 4 and d.max_length == 30
    assert d.params == dict(n=90, n_classes=4, length=30, sampler="uniform_score", min_length=None,
                            balance=True, seed=0)


def test_one_hot_and_counts():
    d = tasks.categorical(40, length=12, sampler="iid", min_length=3, seed=5)
    x = d.one_hot()
    assert x.shape == (40, 12, 4) and x.dtype == np.float32
    assert d.one_hot(np.float64).dtype == np.float64
    mask = d.mask()
    np.testing.assert_array_equal(mask.sum(1), d.lengths)
    np.testing.assert_array_equal(x[mask], np.eye(4, dtype=np.float32)[d.tokens[mask]])
    assert not x[~mask].any()  # zeros past the length
    np.testing.assert_array_equal(d.counts(), independent_counts(d))
    np.testing.assert_array_equal(x.sum(1), d.counts())
    np.testing.assert_array_equal(d.counts().sum(1), d.lengths)
    np.testing.assert_array_equal(d.scores(), d.counts() @ d.evidence)


def test_arrays_are_read_only():
    d = tasks.categorical(6, length=5, seed=0)
    for arr in (d.tokens, d.lengths, d.labels, d.evidence):
        with pytest.raises(ValueError):
            arr[0] = 0
    d.one_hot()[0, 0, 0] = 1.0  # the one-hot array is a fresh, writable copy


def test_exported():
    assert fastfp.tasks is tasks and fastfp.TaskData is TaskData
    assert {"tasks", "TaskData"} <= set(fastfp.__all__)


# ----------------------------------------------------------------------------- seeding
@pytest.mark.parametrize(
    "make",
    [
        lambda seed: tasks.categorical(50, length=20, seed=seed),
        lambda seed: tasks.categorical(50, length=20, sampler="iid", min_length=5, seed=seed),
        lambda seed: tasks.ordered(50, length=20, seed=seed),
        lambda seed: tasks.ordered(50, length=20, bank="5word", seed=seed),
        lambda seed: tasks.multilabel(50, length=20, seed=seed),
        lambda seed: tasks.multilabel(50, length=20, sampler="iid", seed=seed),
        lambda seed: tasks.correlated(50, length=20, mixing=0.6, seed=seed),
    ],
    ids=["cat-uniform", "cat-iid", "ordered3", "ordered5", "multilabel", "multilabel-iid", "correlated"],
)
def test_seeding_reproducible(make):
    a, b, c = make(123), make(123), make(124)
    for attr in ("tokens", "lengths", "labels"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert not np.array_equal(a.tokens, c.tokens)
    # a Generator is accepted and advanced; the same Generator state gives the same data
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(make(g1).tokens, make(g2).tokens)
    assert make(g1).params["seed"] is None


# ----------------------------------------------------------------------------- categorical labels
@pytest.mark.parametrize("sampler", ["uniform_score", "iid"])
def test_categorical_labels_are_argmax_with_ties_to_lowest(sampler):
    # short documents: ties between the top counts are frequent
    d = tasks.categorical(600, n_classes=3, length=6, sampler=sampler, balance=False, seed=1)
    c = independent_counts(d)[:, :3]
    for b in range(d.n_docs):
        top = c[b].max()
        assert d.labels[b] == min(i for i in range(3) if c[b, i] == top)
    tied = (c == c.max(1, keepdims=True)).sum(1) > 1
    assert tied.sum() > 50  # the tie rule was exercised


def test_categorical_lengths_and_padding():
    d = tasks.categorical(300, length=10, sampler="uniform_score", min_length=4, seed=2)
    assert d.lengths.min() == 4 and d.lengths.max() == 10
    assert (d.tokens[~d.mask()] == 3).all()  # padding is the neutral word 'the'
    np.testing.assert_array_equal(d.labels, np.argmax(independent_counts(d)[:, :3], axis=1))
    full = tasks.categorical(20, length=10, seed=2)
    assert (full.lengths == 10).all() and full.mask().all()


@pytest.mark.parametrize("n, n_classes", [(99, 3), (100, 3), (7, 5), (1, 2), (1000, 3)])
@pytest.mark.parametrize("sampler", ["uniform_score", "iid"])
def test_categorical_balance(n, n_classes, sampler):
    d = tasks.categorical(n, n_classes=n_classes, length=15, sampler=sampler, seed=3)
    counts = np.bincount(d.labels, minlength=n_classes)
    expected = np.full(n_classes, n // n_classes)
    expected[: n % n_classes] += 1
    np.testing.assert_array_equal(counts, expected)
    if n >= 100:  # shuffled, not sorted by class
        assert (np.diff(d.labels) != 0).sum() > n // 4


def test_categorical_unbalanced_class_frequencies():
    # N = 2, L = 1: vectors (0,0)->0, (1,0)->0, (0,1)->1 are equally likely -> class 0 has 2/3
    d = tasks.categorical(6000, n_classes=2, length=1, balance=False, seed=4)
    assert abs(d.labels.mean() - 1 / 3) < 0.03


def test_uniform_score_sampler_is_uniform_over_count_vectors():
    # N = 2, L = 3: the C(5, 2) = 10 vectors with c0 + c1 <= 3 must be equally likely.
    n = 20000
    d = tasks.categorical(n, n_classes=2, length=3, balance=False, seed=2)
    c = d.counts()[:, :2]
    tally = Counter(map(tuple, c.tolist()))
    support = {(a, b) for a in range(4) for b in range(4) if a + b <= 3}
    assert len(support) == math.comb(5, 2) == 10
    assert set(tally) == support
    observed = np.array([tally[v] for v in sorted(support)])
    assert chi2(observed) < CHI2_999[9], observed
    np.testing.assert_array_equal(c.sum(1) + d.counts()[:, 2], 3)


def test_uniform_score_sampler_variable_length_is_uniform_given_length():
    # N = 3, L = 2: C(5, 3) = 10 vectors; with min_length each length gets its own uniform law.
    d = tasks.categorical(12000, n_classes=3, length=2, balance=False, seed=12)
    tally = Counter(map(tuple, d.counts()[:, :3].tolist()))
    assert len(tally) == math.comb(5, 3)
    assert chi2(np.array(list(tally.values()))) < CHI2_999[9]
    v = tasks.categorical(12000, n_classes=2, length=2, min_length=1, balance=False, seed=13)
    c = v.counts()[:, :2]
    for length, size in ((1, 3), (2, 6)):
        sel = v.lengths == length
        tally = Counter(map(tuple, c[sel].tolist()))
        assert len(tally) == size and (c[sel].sum(1) <= length).all()
        assert chi2(np.array(list(tally.values()))) < 20.0  # df <= 5


def test_uniform_score_count_total_distribution():
    # P(sum(c) = s) = C(s + N - 1, N - 1) / C(L + N, N): for N = 3, L = 50 the mean of sum(c) is
    # N L / (N + 1) = 37.5
    d = tasks.categorical(4000, balance=False, seed=14)
    s = d.counts()[:, :3].sum(1)
    assert abs(s.mean() - 37.5) < 0.5


def test_iid_sampler_token_frequencies():
    d = tasks.categorical(2000, n_classes=3, length=20, sampler="iid", seed=15, balance=False)
    freq = d.counts().sum(0)
    assert chi2(freq) < 16.27  # df 3
    v = tasks.categorical(2000, length=24, min_length=20, sampler="iid", seed=16)
    assert set(np.unique(v.lengths)) == {20, 21, 22, 23, 24}


# ----------------------------------------------------------------------------- ordered
@pytest.mark.parametrize("bank", ["3word", "5word"])
def test_ordered_scores_and_bins(bank):
    L, K = 10, 5
    d = tasks.ordered(6000, n_classes=K, length=L, bank=bank, seed=21)
    assert d.name == "ordered" and d.tokens.shape == (6000, L) and (d.lengths == L).all()
    S = d.scores()[:, 0]
    assert S.min() == -L and S.max() == L
    assert set(S.astype(int)) == set(range(-L, L + 1))
    observed = np.bincount((S + L).astype(int), minlength=2 * L + 1)
    assert chi2(observed) < CHI2_999[20]  # S uniform over the 21 integers
    # equal-width bins over [-10, 10] of width 4: [-10,-6) [-6,-2) [-2,2) [2,6) [6,10]
    edges = np.linspace(-L, L, K + 1)
    expected = np.clip(np.searchsorted(edges, S, side="right") - 1, 0, K - 1)
    np.testing.assert_array_equal(d.labels, expected)
    for s, label in ((-10, 0), (-7, 0), (-6, 1), (-3, 1), (-2, 2), (1, 2), (2, 3), (6, 4), (10, 4)):
        assert (d.labels[S == s] == label).all()


def test_ordered_vocab_and_evidence():
    d3 = tasks.ordered(5, seed=0)
    assert d3.vocab == ("good", "bad", "the")
    np.testing.assert_array_equal(d3.evidence, [[1.0], [-1.0], [0.0]])
    d5 = tasks.ordered(5, bank="5word", seed=0)
    assert d5.vocab == ("awesome", "good", "bad", "awful", "the")
    np.testing.assert_array_equal(d5.evidence, [[2.0], [1.0], [-1.0], [-2.0], [0.0]])
    assert d5.n_classes == 5 and d5.params["bank"] == "5word"


def test_ordered_phrase_construction():
    L = 50
    d3 = tasks.ordered(3000, n_classes=3, length=L, seed=22)
    c = d3.counts()
    S = c[:, 0] - c[:, 1]
    # |S| copies of the signed word plus zero-sum pairs; neutral words fill the rest
    assert (np.minimum(c[:, 0], c[:, 1]) * 2 + np.abs(S) + c[:, 2] == L).all()
    assert (np.minimum(c[:, 0], c[:, 1]) > 0).mean() > 0.5  # zero-sum pairs are used
    assert (c[:, 2] > 0).mean() > 0.5  # and neutral words
    bins = np.bincount(d3.labels, minlength=3)
    assert bins.min() > 900  # 34/33/34 of the 101 scores per bin
    d5 = tasks.ordered(3000, length=L, bank="5word", seed=23)
    c5 = d5.counts()
    assert (c5[:, 0] + c5[:, 3] > 0).mean() > 0.5  # the +-2 words are used
    assert (c5[:, 1] + c5[:, 2] > 0).mean() > 0.5
    np.testing.assert_array_equal(c5.sum(1), L)
    np.testing.assert_array_equal(d5.scores()[:, 0], c5 @ np.array([2, 1, -1, -2, 0]))


def test_ordered_is_shuffled():
    d = tasks.ordered(200, n_classes=3, length=50, seed=24)
    # the first and last tokens are not systematically the signed word
    assert 0 < (d.tokens[:, 0] == 2).mean() < 1 and 0 < (d.tokens[:, -1] == 2).mean() < 1


# ----------------------------------------------------------------------------- multilabel
@pytest.mark.parametrize("sampler", ["uniform_score", "iid"])
def test_multilabel_targets(sampler):
    K, L = 3, 20
    d = tasks.multilabel(1500, n_labels=K, length=L, sampler=sampler, seed=31)
    assert d.name == "multilabel"
    assert d.vocab == ("kinda_0", "kinda_1", "kinda_2", "bad_0", "bad_1", "bad_2", "the")
    assert d.labels.shape == (1500, K) and set(np.unique(d.labels)) == {0, 1}
    c = independent_counts(d)
    s = c[:, :K] - c[:, K : 2 * K]
    np.testing.assert_array_equal(d.labels, (s >= 0).astype(int))
    np.testing.assert_array_equal(d.scores(), s)
    assert ((s == 0) & (d.labels == 1)).any()  # s = 0 counts as positive
    assert (0.4 < d.labels.mean(0)).all() and (d.labels.mean(0) < 0.7).all()
    ev = np.zeros((7, 3))
    ev[[0, 1, 2], [0, 1, 2]] = 1
    ev[[3, 4, 5], [0, 1, 2]] = -1
    np.testing.assert_array_equal(d.evidence, ev)
    assert d.n_classes == K


def test_multilabel_uniform_sampler_support():
    # K = 1, L = 2: 2 evidence words -> C(4, 2) = 6 count vectors, equally likely
    d = tasks.multilabel(6000, n_labels=1, length=2, seed=32)
    tally = Counter(map(tuple, d.counts()[:, :2].tolist()))
    assert len(tally) == 6 and chi2(np.array(list(tally.values()))) < 20.52  # df 5, p = 0.001


# ----------------------------------------------------------------------------- errors
BAD_CALLS = [
    (lambda: tasks.categorical(0), "n", "0", "positive integer"),
    (lambda: tasks.categorical(-3), "n", "-3", "positive integer"),
    (lambda: tasks.categorical(2.0), "n", "2.0", "positive integer"),
    (lambda: tasks.categorical(True), "n", "True", "positive integer"),
    (lambda: tasks.categorical(10, n_classes=1), "n_classes", "1", ">= 2"),
    (lambda: tasks.categorical(10, length=0), "length", "0", "positive integer"),
    (lambda: tasks.categorical(10, sampler="zipf"), "sampler", "'zipf'", "'uniform_score', 'iid'"),
    (lambda: tasks.categorical(10, min_length=0), "min_length", "0", r"\[1, length = 50\]"),
    (lambda: tasks.categorical(10, min_length=51), "min_length", "51", r"\[1, length = 50\]"),
    (lambda: tasks.categorical(10, min_length=2.5), "min_length", "2.5", "integer"),
    (lambda: tasks.categorical(10, balance="yes"), "balance", "'yes'", "True or False"),
    (lambda: tasks.categorical(10, seed=-1), "seed", "-1", "Generator"),
    (lambda: tasks.categorical(10, seed="abc"), "seed", "'abc'", "Generator"),
    (lambda: tasks.ordered(10, bank="7word"), "bank", "'7word'", "'3word', '5word'"),
    (lambda: tasks.ordered(10, n_classes=1), "n_classes", "1", ">= 2"),
    (lambda: tasks.ordered(10, length=-1), "length", "-1", "positive integer"),
    (lambda: tasks.multilabel(10, n_labels=0), "n_labels", "0", "positive integer"),
    (lambda: tasks.multilabel(10, sampler=None), "sampler", "None", "'uniform_score'"),
    (lambda: tasks.categorical(3, seed=0).one_hot(np.int32), "dtype", "int32", "floating"),
    (lambda: tasks.correlated(10, mixing=1.0), "mixing", "1.0", r"\[0, 1\)"),
    (lambda: tasks.correlated(10, mixing=-0.1), "mixing", "-0.1", r"\[0, 1\)"),
    (lambda: tasks.correlated(10, mixing="0.5"), "mixing", "'0.5'", r"\[0, 1\)"),
    (lambda: tasks.correlated(10, mixing=True), "mixing", "True", r"\[0, 1\)"),
    (lambda: tasks.correlated(10, n_classes=1), "n_classes", "1", ">= 2"),
    (lambda: tasks.correlated(10, sampler="zipf"), "sampler", "'zipf'", "'uniform_score', 'iid'"),
    (lambda: tasks.correlated(10, min_length=60), "min_length", "60", r"\[1, length = 50\]"),
    (lambda: tasks.correlated(10, balance=1), "balance", "1", "True or False"),
    (lambda: tasks.correlated(0), "n", "0", "positive integer"),
]


@pytest.mark.parametrize("call, name, given, expected", BAD_CALLS, ids=[f"{c[1]}-{c[2]}" for c in BAD_CALLS])
def test_bad_arguments(call, name, given, expected):
    with pytest.raises(InvalidOptionError, match=rf"argument '{name}': got {re.escape(given)}, expected.*{expected}"):
        call()


# ----------------------------------------------------------------------------- correlated classes
def test_correlated_vocab_and_evidence():
    d = tasks.correlated(40, n_classes=5, mixing=0.3, length=20, seed=0)
    assert d.name == "correlated" and d.vocab == ("w0", "w1", "w2", "w3", "w4", "the") and d.n_classes == 5
    # pairs (0, 1), (2, 3); class 4 has no partner; 'the' adds nothing
    want = np.array([[1, .3, 0, 0, 0], [.3, 1, 0, 0, 0], [0, 0, 1, .3, 0], [0, 0, .3, 1, 0], [0, 0, 0, 0, 1],
                     [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(d.evidence, want)
    np.testing.assert_array_equal(tasks.correlated_evidence(5, 0.3), want)
    assert d.params["mixing"] == 0.3


@pytest.mark.parametrize("sampler", ["uniform_score", "iid"])
def test_correlated_mixing_zero_is_categorical(sampler):
    a = tasks.categorical(300, n_classes=4, length=15, sampler=sampler, seed=5)
    b = tasks.correlated(300, n_classes=4, length=15, sampler=sampler, mixing=0.0, seed=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("mixing, min_flips", [(0.5, 10), (0.3, 3), (0.9, 10)])
def test_correlated_labels_by_hand(mixing, min_flips):
    # short documents: ties and wins decided by the mixing are frequent (c = (2, 2, 3) at mixing 0.5: a
    # three-way tie of the scores, class 0, where the plain argmax says 2). The label is recomputed with
    # exact rational arithmetic from counts taken without TaskData, so float rounding is not trusted.
    from fractions import Fraction

    d = tasks.correlated(1000, n_classes=3, length=16, mixing=mixing, balance=False, seed=2)
    c = independent_counts(d)[:, :3]
    rho = Fraction(mixing).limit_denominator(1000)
    flips = 0
    for b in range(d.n_docs):
        c0, c1, c2 = (int(v) for v in c[b])
        s = [c0 + rho * c1, c1 + rho * c0, Fraction(c2)]
        want = min(i for i in range(3) if s[i] == max(s))
        assert d.labels[b] == want, (c[b], d.labels[b], want)
        flips += want != min(i for i in range(3) if c[b, i] == c[b].max())
    assert flips >= min_flips  # the mixing changed labels relative to the plain argmax of the counts


def test_correlated_balance():
    d = tasks.correlated(1001, n_classes=4, mixing=0.8, seed=3)
    assert np.bincount(d.labels, minlength=4).tolist() == [251, 250, 250, 250]


def test_correlated_unbalanced_unpaired_class_is_rarer():
    # with N = 3 only class 2 has no partner: it must beat c_0 + rho c_1 and c_1 + rho c_0, so it is
    # rarer as the mixing grows (sampler probabilities, not a fixed number)
    f = [np.bincount(tasks.correlated(6000, n_classes=3, mixing=m, balance=False, seed=4).labels, minlength=3)[2] / 6000
         for m in (0.0, 0.5, 0.9)]
    assert f[0] > f[1] > f[2]


def test_task_data_built_by_hand_is_checked():
    tokens = np.array([[0, 1, 2], [1, 1, 0]])
    ok = dict(tokens=tokens, lengths=np.array([3, 2]), labels=np.array([0, 1]), vocab=("a", "b", "c"),
              evidence=np.eye(3)[:, :2], name="custom")
    assert TaskData(**ok).counts().tolist() == [[1, 1, 1], [0, 2, 0]]
    # padding past a length may hold any id, even one outside the vocabulary: nothing reads it
    for pad in (-1, 3, 99):
        padded = TaskData(**{**ok, "tokens": np.array([[0, 1, 2], [1, 1, pad]])})
        assert padded.counts().tolist() == [[1, 1, 1], [0, 2, 0]]
        moved = padded.with_vocab(("c", "b", "a", "<pad>"))
        assert moved.tokens.tolist() == [[2, 1, 0], [1, 1, 3]] and moved.counts().tolist() == [[1, 1, 1, 0], [0, 2, 0, 0]]
    bad = [
        ({"lengths": np.array([3, 4])}, "'lengths'.*document 1 has length 4.*L = 3"),
        ({"lengths": np.array([-1, 2])}, "'lengths'.*document 0 has length -1"),
        ({"lengths": np.array([3])}, "'lengths': got shape \\(1,\\), expected \\(2,\\)"),
        ({"tokens": np.array([[0, 3, 2], [1, 1, 0]])}, "'tokens'.*document 0 has id 3 at position 1.*\\[0, 3\\)"),
        ({"tokens": np.array([[0, 1, 2], [1, -2, 0]])}, "'tokens'.*document 1 has id -2"),
        ({"tokens": tokens.astype(float)}, "'tokens': got dtype float64, expected integer ids"),
        ({"labels": np.array([0.0, 1.0])}, "'labels': got dtype float64"),
        ({"labels": np.array([0, 1, 2])}, "'labels': got shape \\(3,\\), expected \\(2,\\)"),
        ({"evidence": np.eye(2)}, "'evidence'.*\\(3, C\\)"),
    ]
    for change, message in bad:
        with pytest.raises((InvalidOptionError, fastfp.ShapeError, fastfp.DTypeError), match=message):
            TaskData(**{**ok, **change})
