"""Seeded synthetic text-classification tasks (the study's toy tasks), as NumPy arrays.

Four families, each returning a :class:`TaskData`:

:func:`categorical`
    N classes; N evidence words ``w0 .. w{N-1}`` (word i adds +1 to class i) and one neutral word
    ``the``. Label = argmax of the evidence-word counts (ties go to the lowest index).
:func:`ordered`
    K ordered classes; words ``good`` (+1), ``bad`` (-1), ``the`` (0), or the 5-word bank
    ``awesome`` (+2), ``good``, ``bad``, ``awful`` (-2), ``the``. Label = equal-width bin of the
    document score S among K bins over [-L, L].
:func:`multilabel`
    K independent binary labels; words ``kinda_i`` (+1 to label i), ``bad_i`` (-1 to label i) and
    ``the``. Target y_i = [s_i >= 0].
:func:`correlated`
    N classes as :func:`categorical`, but the class scores of each pair of classes (0, 1), (2, 3), ...
    are partly mixed before the argmax: word ``w{i}`` adds +1 to class i and ``mixing`` to its
    partner. Correlated classes: the class-mean word frequencies of a pair draw together, which the
    word-count prediction sees as a smaller trailing singular value (a lower dimension).

Token ids index ``TaskData.vocab``. Documents shorter than ``tokens.shape[1]`` (only with
``min_length``) are padded with the neutral word ``the`` beyond ``lengths``; padding carries no
meaning and is dropped by :meth:`TaskData.one_hot` (zero rows) and :meth:`TaskData.counts`.
Every function takes ``seed`` (an int, ``None`` or a ``numpy.random.Generator``); the same int seed
and arguments give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DTypeError, InvalidOptionError, ShapeError

__all__ = ["TaskData", "categorical", "ordered", "multilabel", "correlated", "correlated_evidence", "TASK_SAMPLERS", "ORDERED_BANKS"]

TASK_SAMPLERS = ("uniform_score", "iid")
ORDERED_BANKS = ("3word", "5word")
NEUTRAL = "the"

# Rejection sampling gives up after this many rounds without filling the class quotas (a guard:
# with the arguments accepted here every class has probability > 0, so it is never hit in practice).
_MAX_ROUNDS = 10_000


@dataclass(frozen=True, eq=False)
class TaskData:
    """A dataset of token-id documents: a synthetic task, or a corpus read by :func:`fastfp.read_corpus`.

    Attributes
    ----------
    tokens : ndarray of int32, shape (n, L)
        Token ids (indices into ``vocab``); entries at t >= lengths[b] are padding (the neutral
        word for the synthetic tasks, ``'<pad>'`` for a corpus); ``lengths`` says which, never the id.
    lengths : ndarray of int64, shape (n,)
        Valid length of each document (all equal to L unless ``min_length`` was given).
    labels : ndarray of int64, shape (n,) or (n, K)
        Class index (categorical, ordered) or 0/1 targets per label (multilabel).
    vocab : tuple of str
        The V token strings.
    evidence : ndarray of float64, shape (V, C)
        Row v is what one copy of word v adds to the document's score vector: C = n_classes for
        categorical (one-hot rows, zero for ``the``), C = 1 for ordered (the word's value),
        C = n_labels for multilabel (+1 / -1 in the word's label column).
        ``counts() @ evidence`` is the score vector of each document.
        For :func:`correlated`, rows are e_i + mixing * e_partner(i) (see there).
    name : str
        'categorical', 'ordered', 'multilabel' or 'correlated'.
    params : dict
        The arguments that generated the data (``seed`` is None unless an int was given).

    Arrays are read-only.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    vocab: tuple
    evidence: np.ndarray
    name: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("tokens", "lengths", "labels", "evidence"):
            arr = np.array(getattr(self, attr), copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)
        object.__setattr__(self, "vocab", tuple(self.vocab))
        self._validate()

    def _validate(self) -> None:
        # A TaskData built by hand from a user's own arrays is checked once here, so that counts(),
        # one_hot() and the analyses never read a padding token or an id outside the vocabulary.
        tokens, lengths, labels, evidence = self.tokens, self.lengths, self.labels, self.evidence
        if tokens.dtype.kind not in "iu":
            raise DTypeError(f"argument 'tokens': got dtype {tokens.dtype}, expected integer ids")
        if tokens.ndim != 2:
            raise ShapeError(f"argument 'tokens': got shape {tokens.shape}, expected (n, L)")
        n, L = tokens.shape
        if lengths.dtype.kind not in "iu":
            raise DTypeError(f"argument 'lengths': got dtype {lengths.dtype}, expected integers")
        if lengths.shape != (n,):
            raise ShapeError(f"argument 'lengths': got shape {lengths.shape}, expected ({n},)")
        if n and (lengths.min() < 0 or lengths.max() > L):
            bad = int(np.flatnonzero((lengths < 0) | (lengths > L))[0])
            raise InvalidOptionError(
                f"argument 'lengths': document {bad} has length {int(lengths[bad])}, expected 0 <= length <= L = {L}"
            )
        V = len(self.vocab)
        valid = np.arange(L)[None, :] < lengths[:, None]
        if valid.any():
            ids = tokens[valid]
            if ids.min() < 0 or ids.max() >= V:
                b, t = np.argwhere(valid & ((tokens < 0) | (tokens >= V)))[0]
                raise InvalidOptionError(
                    f"argument 'tokens': document {int(b)} has id {int(tokens[b, t])} at position {int(t)}, "
                    f"expected ids in [0, {V}) (the vocabulary's size)"
                )
        if labels.dtype.kind not in "iub":
            raise DTypeError(f"argument 'labels': got dtype {labels.dtype}, expected integer classes or 0/1 targets")
        if labels.ndim not in (1, 2) or labels.shape[0] != n:
            raise ShapeError(f"argument 'labels': got shape {labels.shape}, expected ({n},) or ({n}, K)")
        if evidence.dtype.kind not in "iuf":
            raise DTypeError(f"argument 'evidence': got dtype {evidence.dtype}, expected numbers")
        if evidence.ndim != 2 or evidence.shape[0] != V:
            raise ShapeError(f"argument 'evidence': got shape {evidence.shape}, expected ({V}, C)")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_docs(self) -> int:
        """n, the number of documents."""
        return self.tokens.shape[0]

    @property
    def max_length(self) -> int:
        """L, the padded length (``tokens.shape[1]``)."""
        return self.tokens.shape[1]

    @property
    def vocab_size(self) -> int:
        """V, the number of tokens (the input size of a one-hot network)."""
        return len(self.vocab)

    @property
    def n_classes(self) -> int:
        """Number of classes (categorical, ordered, correlated) or of binary labels (multilabel)."""
        p = self.params
        return int(p.get("n_classes", p.get("n_labels", 0)))

    def mask(self) -> np.ndarray:
        """(n, L) bool: True at the valid steps of each document."""
        return np.arange(self.max_length)[None, :] < self.lengths[:, None]

    def one_hot(self, dtype=np.float32) -> np.ndarray:
        """One-hot inputs, shape (n, L, V), all-zero rows past each document's length."""
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise InvalidOptionError(f"argument 'dtype': got {dtype!r}, expected a floating dtype such as np.float32") from None
        if dt.kind != "f":
            raise InvalidOptionError(f"argument 'dtype': got {dt}, expected a floating dtype such as np.float32")
        out = np.zeros(self.tokens.shape + (self.vocab_size,), dtype=dt)
        b, t = np.nonzero(self.mask())
        out[b, t, self.tokens[b, t]] = 1
        return out

    def counts(self) -> np.ndarray:
        """(n, V) int64: number of copies of each word in each document (padding excluded)."""
        V = self.vocab_size
        ids = np.where(self.mask(), self.tokens, V)  # padding -> an extra bin, dropped below
        offsets = np.arange(self.n_docs)[:, None] * (V + 1)
        flat = np.bincount((ids + offsets).ravel(), minlength=self.n_docs * (V + 1))
        return flat.reshape(self.n_docs, V + 1)[:, :V].astype(np.int64)

    def scores(self) -> np.ndarray:
        """(n, C) float64: ``counts() @ evidence``, the score vector each label is computed from."""
        return self.counts() @ self.evidence

    def with_vocab(self, vocab, *, unknown: str = "<unk>") -> "TaskData":
        """The same documents with the token ids of another vocabulary, matched by word.

        For feeding data to a model whose ``Model.vocab`` orders the words differently (or holds
        more of them): each id becomes the id of the same word in ``vocab``; words ``vocab`` lacks
        become ``unknown`` (an error if ``vocab`` has no such entry and one of those words occurs
        in a document). ``evidence`` rows move with their words (zero for words ``vocab`` lacks);
        ``params`` records ``remapped_unknown_tokens``, the valid positions mapped to ``unknown``.

        Parameters
        ----------
        vocab : sequence of str
            The target vocabulary (V' distinct words).
        unknown : str

        Returns
        -------
        TaskData
            tokens (n, L) in ``range(V')``, ``vocab`` the given one, evidence (V', C).
        """
        if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
            raise InvalidOptionError(f"argument 'vocab': got {type(vocab).__name__}, expected a sequence of str")
        target = tuple(vocab)
        if not target or not all(isinstance(w, str) for w in target) or len(set(target)) != len(target):
            raise InvalidOptionError("argument 'vocab': expected a non-empty sequence of distinct str")
        index = {w: i for i, w in enumerate(target)}
        unk = index.get(unknown)
        table = np.array([index.get(w, -1) for w in self.vocab], dtype=np.int64)
        valid = self.mask()
        used = np.zeros(self.vocab_size, dtype=bool)
        used[self.tokens[valid]] = True
        lost = [self.vocab[j] for j in np.flatnonzero(used & (table < 0))]
        if lost and unk is None:
            raise InvalidOptionError(
                f"argument 'vocab': lacks the words {lost[:8]}{' ...' if len(lost) > 8 else ''} of the documents "
                f"and has no {unknown!r} entry to map them to"
            )
        ids = np.where(valid, self.tokens, 0)  # padding may hold any id: never looked up
        n_unknown = int((table[ids] < 0)[valid].sum())
        table = np.where(table < 0, unk if unk is not None else 0, table)
        tokens = np.where(valid, table[ids], index.get("<pad>", 0)).astype(self.tokens.dtype)
        evidence = np.zeros((len(target), self.evidence.shape[1]), dtype=self.evidence.dtype)
        for j, w in enumerate(self.vocab):
            if w in index:
                evidence[index[w]] = self.evidence[j]
        return TaskData(tokens=tokens, lengths=self.lengths, labels=self.labels, vocab=target, evidence=evidence,
                        name=self.name, params=dict(self.params, remapped_unknown_tokens=n_unknown))

    def __repr__(self) -> str:
        return (
            f"TaskData(name={self.name!r}, n={self.n_docs}, L={self.max_length}, V={self.vocab_size}, "
            f"labels{tuple(self.labels.shape)}, params={self.params})"
        )


# --------------------------------------------------------------------------- argument checks
def _int_arg(name: str, value: Any, minimum: int, what: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = what or (f"an integer >= {minimum}" if minimum != 1 else "a positive integer")
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected {expected}")
    return int(value)


def _choice_arg(name: str, value: Any, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidOptionError(
            f"argument {name!r}: got {value!r}, expected one of {', '.join(map(repr, choices))}"
        )
    return value


def _rng(seed: Any) -> tuple[np.random.Generator, int | None]:
    if isinstance(seed, bool):
        raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected None, a non-negative int or a numpy Generator")
    if isinstance(seed, np.random.Generator):
        return seed, None
    if seed is None or (isinstance(seed, (int, np.integer)) and seed >= 0):
        return np.random.default_rng(seed), (None if seed is None else int(seed))
    raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected None, a non-negative int or a numpy Generator")


def _lengths_arg(length: int, min_length: Any) -> int | None:
    if min_length is None:
        return None
    if (
        isinstance(min_length, bool)
        or not isinstance(min_length, (int, np.integer))
        or not 1 <= min_length <= length
    ):
        raise InvalidOptionError(
            f"argument 'min_length': got {min_length!r}, expected None or an integer in [1, length = {length}]"
        )
    return int(min_length)


# --------------------------------------------------------------------------- samplers
def _draw_lengths(rng, m: int, length: int, min_length: int | None) -> np.ndarray:
    if min_length is None:
        return np.full(m, length, dtype=np.int64)
    return rng.integers(min_length, length + 1, size=m).astype(np.int64)


def _uniform_counts(rng, lengths: np.ndarray, k: int) -> np.ndarray:
    """Count vectors c in N^k uniform over {c : sum(c) <= lengths[b]} (exactly), shape (m, k).

    Stars and bars: choose k distinct slots among l + k uniformly; with the chosen slots sorted,
    p_1 < ... < p_k, the gaps c_1 = p_1, c_i = p_i - p_{i-1} - 1 are a bijection onto the count
    vectors with sum(c) <= l (the slack l - sum(c) is the gap after p_k); C(l + k, k) of each.
    """
    m = lengths.shape[0]
    width = int(lengths.max()) + k
    keys = rng.random((m, width))
    keys[np.arange(width)[None, :] >= (lengths[:, None] + k)] = np.inf  # slots that do not exist
    # the k smallest keys (width >= l + k > k, and every row has l + k >= k + 1 finite keys)
    slots = np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
    prev = np.concatenate([np.full((m, 1), -1), slots[:, :-1]], axis=1)
    return (slots - prev - 1).astype(np.int64)


def _docs_from_counts(rng, counts: np.ndarray, lengths: np.ndarray, fill: int, width: int) -> np.ndarray:
    """Documents holding counts[b, j] copies of token j, the rest up to lengths[b] the token ``fill``,
    shuffled within the valid length; padded with ``fill`` up to ``width``. Returns (m, width) int32."""
    m, V = counts.shape
    # each row: counts[b, j] copies of j, then width - sum(counts[b]) copies of fill (the tokens at
    # t >= lengths[b] among them are the padding)
    full = np.concatenate([counts, width - counts.sum(axis=1, keepdims=True)], axis=1)
    ids = np.tile(np.append(np.arange(V), fill).astype(np.int32), m)
    docs = np.repeat(ids, full.ravel()).reshape(m, width)
    pos = np.arange(width)[None, :]
    keys = rng.random((m, width))
    keys[pos >= lengths[:, None]] = np.inf  # padding stays at the end
    order = np.argsort(keys, axis=1, kind="stable")
    return np.take_along_axis(docs, order, axis=1)


def _draw_evidence_docs(rng, m: int, N: int, L: int, lmin: int | None, sampler: str):
    """m documents over N evidence words (ids 0..N-1) and ``the`` (id N), by ``sampler``.

    Returns (tokens (m, L) int32, lengths (m,) int64, counts (m, N) int64 of the evidence words).
    """
    lengths = _draw_lengths(rng, m, L, lmin)
    if sampler == "uniform_score":
        counts = _uniform_counts(rng, lengths, N)
        tokens = _docs_from_counts(rng, counts, lengths, N, L)
    else:
        tokens = rng.integers(0, N + 1, size=(m, L)).astype(np.int32)
        tokens[np.arange(L)[None, :] >= lengths[:, None]] = N
        # padding is 'the' (id N), so it never adds to counts
        counts = np.stack([(tokens == i).sum(axis=1) for i in range(N)], axis=1)
    return tokens, lengths, counts


def _argmax_label(counts: np.ndarray) -> np.ndarray:
    return np.argmax(counts, axis=1).astype(np.int64)  # np.argmax returns the first maximum


def _quotas(n: int, k: int) -> np.ndarray:
    q = np.full(k, n // k, dtype=np.int64)
    q[: n % k] += 1
    return q


def _balanced(rng, n: int, k: int, draw, name: str):
    """Rejection sampling: call draw(m) -> (tokens, lengths, labels) until each class c holds
    quota[c] documents (quota = n // k, plus one for the first n % k classes); then shuffle."""
    quota = _quotas(n, k)
    parts, have = [], np.zeros(k, dtype=np.int64)
    batch = min(max(2 * n, 64), 1 << 16)
    for _ in range(_MAX_ROUNDS):
        tokens, lengths, labels = draw(batch)
        keep = np.zeros(labels.shape[0], dtype=bool)
        for c in range(k):
            idx = np.flatnonzero(labels == c)[: quota[c] - have[c]]
            keep[idx] = True
            have[c] += idx.size
        parts.append((tokens[keep], lengths[keep], labels[keep]))
        if (have == quota).all():
            break
    else:  # pragma: no cover - unreachable with the accepted arguments
        raise RuntimeError(f"{name}: could not balance the classes after {_MAX_ROUNDS} rounds (got {have.tolist()})")
    tokens = np.concatenate([p[0] for p in parts])
    lengths = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    order = rng.permutation(n)
    return tokens[order], lengths[order], labels[order]


# --------------------------------------------------------------------------- public tasks
def categorical(
    n: int,
    *,
    n_classes: int = 3,
    length: int = 50,
    sampler: str = "uniform_score",
    min_length: int | None = None,
    balance: bool = True,
    seed=None,
) -> TaskData:
    """The N-class categorical task: word i is evidence for class i; label = argmax of the counts.

    Parameters
    ----------
    n : int
        Number of documents.
    n_classes : int, >= 2
        N. Vocabulary ``("w0", ..., "w{N-1}", "the")``; token id i is word ``w{i}``, id N is ``the``.
    length : int, >= 1
        L, the (maximum) document length.
    sampler : {'uniform_score', 'iid'}
        ``'uniform_score'`` (the study's figures): the count vector c of the evidence words is drawn
        uniformly among all C(l + N, N) non-negative integer vectors with sum(c) <= l (exactly, by
        stars and bars), the other l - sum(c) tokens are ``the``, and the document is shuffled.
        ``'iid'``: each token is drawn i.i.d. uniformly over the V = N + 1 words.
    min_length : int, optional
        With ``min_length``, each document's length l is drawn uniformly in [min_length, length]
        (both samplers); otherwise l = length. Tokens beyond l are padding (``the``).
    balance : bool
        True: rejection sampling so every class has n // N documents, the first n % N classes one
        more; within a class, documents follow the sampler's distribution conditioned on that label.
        The documents are then shuffled. False: the sampler's own (slightly unequal, since ties go
        to the lowest index) class frequencies.
    seed : int, numpy.random.Generator or None

    Returns
    -------
    TaskData
        ``labels`` of shape (n,): argmax_i c_i with ties to the lowest index (an all-zero count
        vector is class 0). ``evidence`` is (V, N): the identity on the evidence words, zeros for ``the``.
    """
    n = _int_arg("n", n, 1)
    N = _int_arg("n_classes", n_classes, 2, "an integer >= 2")
    L = _int_arg("length", length, 1)
    sampler = _choice_arg("sampler", sampler, TASK_SAMPLERS)
    lmin = _lengths_arg(L, min_length)
    if not isinstance(balance, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'balance': got {balance!r}, expected True or False")
    rng, seed_int = _rng(seed)
    V = N + 1
    vocab = tuple(f"w{i}" for i in range(N)) + (NEUTRAL,)
    evidence = np.zeros((V, N))
    evidence[np.arange(N), np.arange(N)] = 1.0

    def draw(m):
        tokens, lengths, counts = _draw_evidence_docs(rng, m, N, L, lmin, sampler)
        return tokens, lengths, _argmax_label(counts)

    if balance:
        tokens, lengths, labels = _balanced(rng, n, N, draw, "categorical")
    else:
        tokens, lengths, labels = draw(n)
    params = dict(n=n, n_classes=N, length=L, sampler=sampler, min_length=lmin, balance=bool(balance), seed=seed_int)
    return TaskData(tokens, lengths, labels, vocab, evidence, "categorical", params)


def _score_bins(scores: np.ndarray, L: int, K: int) -> np.ndarray:
    """Equal-width bin of each integer score among K bins over [-L, L]; S = L is in the last bin."""
    return np.minimum((scores + L) * K // (2 * L), K - 1).astype(np.int64)


def ordered(n: int, *, n_classes: int = 5, length: int = 50, bank: str = "3word", seed=None) -> TaskData:
    """The K-class ordered task: a document score S, label = equal-width bin of S over [-L, L].

    Parameters
    ----------
    n : int
        Number of documents.
    n_classes : int, >= 2
        K, the number of bins (classes 0 .. K-1 from most negative to most positive).
    length : int, >= 1
        L, the length of every document.
    bank : {'3word', '5word'}
        ``'3word'``: vocabulary ``("good", "bad", "the")`` with values +1, -1, 0.
        ``'5word'``: ``("awesome", "good", "bad", "awful", "the")`` with values +2, +1, -1, -2, 0.
    seed : int, numpy.random.Generator or None

    Notes
    -----
    Each document: S is drawn uniformly among the integers in [-L, L]. 3-word bank: |S| copies of
    good (S > 0) or bad (S < 0); of the remaining R = L - |S| tokens, p zero-sum (good, bad) pairs
    with p uniform in [0, R // 2], the rest ``the``. 5-word bank: a copies of the +-2 word with a
    uniform in [0, |S| // 2] and |S| - 2a copies of the +-1 word reach S with |S| - a tokens; of the
    remaining R = L - |S| + a tokens, p zero-sum pairs (p uniform in [0, R // 2], each pair
    (good, bad) or (awesome, awful) with probability 1/2), the rest ``the``. The tokens are shuffled.
    Label = min(floor((S + L) K / (2L)), K - 1). Classes are not rebalanced (the 2L + 1 scores are
    equally likely, so bins hold nearly equal shares).

    Returns
    -------
    TaskData
        ``labels`` (n,); ``evidence`` (V, 1) holds each word's value, so ``scores()[:, 0]`` is S.
    """
    n = _int_arg("n", n, 1)
    K = _int_arg("n_classes", n_classes, 2, "an integer >= 2")
    L = _int_arg("length", length, 1)
    bank = _choice_arg("bank", bank, ORDERED_BANKS)
    rng, seed_int = _rng(seed)
    if bank == "3word":
        vocab, values = ("good", "bad", NEUTRAL), (1.0, -1.0, 0.0)
    else:
        vocab, values = ("awesome", "good", "bad", "awful", NEUTRAL), (2.0, 1.0, -1.0, -2.0, 0.0)
    V = len(vocab)
    ids = {w: i for i, w in enumerate(vocab)}
    evidence = np.array(values)[:, None]

    S = rng.integers(-L, L + 1, size=n)
    A = np.abs(S)
    pos = S > 0
    counts = np.zeros((n, V), dtype=np.int64)
    rows = np.arange(n)
    if bank == "3word":
        counts[rows, np.where(pos, ids["good"], ids["bad"])] += A
        R = L - A
        pairs = rng.integers(0, R // 2 + 1)
        counts[:, ids["good"]] += pairs
        counts[:, ids["bad"]] += pairs
    else:
        a = rng.integers(0, A // 2 + 1)
        counts[rows, np.where(pos, ids["awesome"], ids["awful"])] += a
        counts[rows, np.where(pos, ids["good"], ids["bad"])] += A - 2 * a
        R = L - (A - a)
        pairs = rng.integers(0, R // 2 + 1)
        big = rng.binomial(pairs, 0.5)
        counts[:, ids["awesome"]] += big
        counts[:, ids["awful"]] += big
        counts[:, ids["good"]] += pairs - big
        counts[:, ids["bad"]] += pairs - big
    lengths = np.full(n, L, dtype=np.int64)
    tokens = _docs_from_counts(rng, counts, lengths, ids[NEUTRAL], L)
    labels = _score_bins(S, L, K)
    params = dict(n=n, n_classes=K, length=L, bank=bank, seed=seed_int)
    return TaskData(tokens, lengths, labels, vocab, evidence, "ordered", params)


def multilabel(n: int, *, n_labels: int = 3, length: int = 50, sampler: str = "uniform_score", seed=None) -> TaskData:
    """The K-label task: ``kinda_i`` adds +1 and ``bad_i`` adds -1 to label i's score s_i; y_i = [s_i >= 0].

    Parameters
    ----------
    n : int
        Number of documents.
    n_labels : int, >= 1
        K. Vocabulary ``("kinda_0", ..., "kinda_{K-1}", "bad_0", ..., "bad_{K-1}", "the")``, V = 2K + 1.
    length : int, >= 1
        L, the length of every document.
    sampler : {'uniform_score', 'iid'}
        As in :func:`categorical`, over the 2K evidence words: ``'uniform_score'`` draws their count
        vector uniformly among those with sum <= L (the rest ``the``); ``'iid'`` draws every token
        uniformly over the V words. (The study does not state its multi-label sampler.)
    seed : int, numpy.random.Generator or None

    Returns
    -------
    TaskData
        ``labels`` of shape (n, K), 0/1 int64; ``evidence`` (V, K) with +1 at (kinda_i, i), -1 at
        (bad_i, i). Labels are not rebalanced (each is 1 slightly more than half of the time, as
        s_i = 0 counts as positive).
    """
    n = _int_arg("n", n, 1)
    K = _int_arg("n_labels", n_labels, 1)
    L = _int_arg("length", length, 1)
    sampler = _choice_arg("sampler", sampler, TASK_SAMPLERS)
    rng, seed_int = _rng(seed)
    vocab = tuple(f"kinda_{i}" for i in range(K)) + tuple(f"bad_{i}" for i in range(K)) + (NEUTRAL,)
    V = 2 * K + 1
    evidence = np.zeros((V, K))
    evidence[np.arange(K), np.arange(K)] = 1.0
    evidence[K + np.arange(K), np.arange(K)] = -1.0
    lengths = np.full(n, L, dtype=np.int64)
    if sampler == "uniform_score":
        counts = _uniform_counts(rng, lengths, 2 * K)
        tokens = _docs_from_counts(rng, counts, lengths, 2 * K, L)
    else:
        tokens = rng.integers(0, V, size=(n, L)).astype(np.int32)
        counts = np.stack([(tokens == i).sum(axis=1) for i in range(2 * K)], axis=1)
    s = counts[:, :K] - counts[:, K:]
    labels = (s >= 0).astype(np.int64)
    params = dict(n=n, n_labels=K, length=L, sampler=sampler, seed=seed_int)
    return TaskData(tokens, lengths, labels, vocab, evidence, "multilabel", params)


def correlated_evidence(n_classes: int, mixing: float) -> np.ndarray:
    """The (N + 1, N) evidence matrix of :func:`correlated`: row i = e_i + mixing * e_partner(i).

    Classes are paired (0, 1), (2, 3), ...; with N odd the last class has no partner (its row is
    e_{N-1}). The last row (the neutral word ``the``) is zero.
    """
    N = _int_arg("n_classes", n_classes, 2, "an integer >= 2")
    rho = _mixing_arg(mixing)
    E = np.zeros((N + 1, N))
    E[np.arange(N), np.arange(N)] = 1.0
    for i in range(0, N - 1, 2):
        E[i, i + 1] = E[i + 1, i] = rho
    return E


def _mixing_arg(mixing: Any) -> float:
    ok = isinstance(mixing, (int, float, np.integer, np.floating)) and not isinstance(mixing, (bool, np.bool_))
    if not ok or not (0.0 <= float(mixing) < 1.0):
        raise InvalidOptionError(f"argument 'mixing': got {mixing!r}, expected a number in [0, 1)")
    return float(mixing)


# Scores are sums of multiples of `mixing`; rounding them before the argmax makes ties that are
# exact in real arithmetic (c_0 + rho c_1 == c_1 + rho c_0 when c_0 == c_1) ties in floating point too.
_SCORE_DECIMALS = 9


def correlated(
    n: int,
    *,
    n_classes: int = 4,
    mixing: float = 0.5,
    length: int = 50,
    sampler: str = "uniform_score",
    min_length: int | None = None,
    balance: bool = True,
    seed=None,
) -> TaskData:
    """Correlated classes: the categorical task with the scores of paired classes partly mixed.

    Definition: the documents are those of :func:`categorical` (N evidence words ``w0 .. w{N-1}``
    and ``the``, same samplers). With c the evidence-word counts of a document, the class scores are
    s = c @ E[:N] where E = :func:`correlated_evidence`: classes are paired (0, 1), (2, 3), ... and
    for a pair (i, j)

        s_i = c_i + mixing * c_j,    s_j = c_j + mixing * c_i

    (with N odd the last class keeps s_{N-1} = c_{N-1}). Label = argmax_i s_i, ties to the lowest
    index (the scores are rounded to 9 decimals first, so ties exact in real arithmetic are ties).
    ``mixing = 0`` is exactly :func:`categorical` (same arrays for the same seed). As mixing grows,
    a word of class i is more and more evidence for its partner too: documents of class i hold
    many copies of the partner's word, the class-mean word frequencies of a pair draw together and
    the word-count prediction (:func:`fastfp.analysis.wordcount_prediction`) has a smaller trailing
    singular value (PR below N - 1). For mixing < 1 the map c -> s is invertible and the label
    still depends on the within-pair difference (s_i - s_j = (1 - mixing)(c_i - c_j)), so an
    exact classifier still needs N - 1 numbers; mixing = 1 (excluded) would make a pair's scores
    equal and its second class unreachable.

    Parameters
    ----------
    n : int
        Number of documents.
    n_classes : int, >= 2
        N. Vocabulary ``("w0", ..., "w{N-1}", "the")``.
    mixing : float in [0, 1)
        How much each evidence word adds to its partner class.
    length, sampler, min_length, balance, seed
        As in :func:`categorical` (balancing by rejection sampling on the mixed-score labels).

    Returns
    -------
    TaskData
        ``name`` 'correlated'; ``labels`` of shape (n,); ``evidence`` (V, N) = E, so
        ``scores()`` is s (padding excluded).
    """
    n = _int_arg("n", n, 1)
    N = _int_arg("n_classes", n_classes, 2, "an integer >= 2")
    rho = _mixing_arg(mixing)
    L = _int_arg("length", length, 1)
    sampler = _choice_arg("sampler", sampler, TASK_SAMPLERS)
    lmin = _lengths_arg(L, min_length)
    if not isinstance(balance, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'balance': got {balance!r}, expected True or False")
    rng, seed_int = _rng(seed)
    vocab = tuple(f"w{i}" for i in range(N)) + (NEUTRAL,)
    evidence = correlated_evidence(N, rho)

    def draw(m):
        tokens, lengths, counts = _draw_evidence_docs(rng, m, N, L, lmin, sampler)
        scores = np.round(counts @ evidence[:N], _SCORE_DECIMALS)
        return tokens, lengths, np.argmax(scores, axis=1).astype(np.int64)

    if balance:
        tokens, lengths, labels = _balanced(rng, n, N, draw, "correlated")
    else:
        tokens, lengths, labels = draw(n)
    params = dict(n=n, n_classes=N, mixing=rho, length=L, sampler=sampler, min_length=lmin,
                  balance=bool(balance), seed=seed_int)
    return TaskData(tokens, lengths, labels, vocab, evidence, "correlated", params)
