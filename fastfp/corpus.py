"""Read a user's labelled text corpus (CSV or JSON Lines) into :class:`fastfp.tasks.TaskData`.

:func:`read_corpus` turns a file of ``(text, label)`` records into the same :class:`TaskData` the
synthetic tasks return, so every analysis that takes a ``TaskData`` (e.g.
:func:`fastfp.analysis.wordcount_prediction`) runs on real text unchanged.

Conventions
-----------
Vocabulary
    ``vocab[0] == '<pad>'`` and ``vocab[1] == '<unk>'`` (:data:`PAD_ID`, :data:`UNK_ID`); real
    words follow, most frequent first (ties alphabetically). The vocabulary is built on the
    *training split only*; a word seen fewer than ``min_count`` times in the training split, beyond
    the ``max_vocab`` most frequent, or absent from the training split maps to ``'<unk>'`` (in both
    splits). A token equal to ``'<pad>'`` or ``'<unk>'`` produced by a custom tokenizer also maps to
    ``'<unk>'`` (the default tokenizer never produces them: it splits ``<`` and ``>`` off).
Padding
    ``tokens`` has shape ``(n, L)`` with ``L`` the longest (possibly truncated) document of the
    whole corpus, the same for both splits. Positions ``t >= lengths[b]`` hold ``PAD_ID`` (0); which
    positions are padding is given by ``lengths`` (``TaskData.mask()``), never by the id, and
    ``one_hot()`` / ``counts()`` drop them. No real word has id 0.
Labels
    Label names are strings (JSON numbers are converted with ``str``). Their order is ``labels`` if
    given, else sorted (numerically when every name is an integer). Single-label: ``labels`` is an
    int64 ``(n,)`` array of indices into ``label_names``. ``multilabel=True``: an int64 ``(n, K)``
    0/1 array; a cell holds names separated by ``';'`` or a JSON list (``'["a", "b"]'``; in JSON
    Lines also a real list). An explicit empty JSON list means "no labels"; an empty cell is a
    missing label.
Evidence
    Real text has no known per-word evidence, so ``TaskData.evidence`` is an empty ``(V, 0)``
    float64 array (``scores()`` gives ``(n, 0)``).
Tokenizer
    Default (:func:`default_tokenize`): after optional lower-casing, the regex
    ``\\w+(?:['’]\\w+)*|[^\\w\\s]`` -- runs of Unicode word characters (keeping inner apostrophes:
    ``don't``) and every other non-space character as a token of its own (``"good!"`` ->
    ``good``, ``!``). A custom ``tokenizer`` is any callable ``str -> iterable of str``; empty
    strings it returns are dropped.
Line numbers
    1-based physical lines as in the file (``\\n``, ``\\r\\n`` or ``\\r`` ends a line). A CSV record
    spanning several lines (quoted newlines) is reported at the line where it starts, except
    undecodable bytes, which are reported at the line holding them. Blank lines are ignored (they
    are not records). The first CSV record is the header.
Bad rows
    Empty text, missing label, unknown label (only when ``labels`` is given), a malformed label
    cell, undecodable bytes, a malformed JSON line, a JSON line that is not an object, a non-string
    text, a CSV record with the wrong number of fields and a CSV quoting error are all collected. A
    record nested too deeply for the JSON parser is a malformed JSON line (or a bad label cell).
    ``on_error='raise'`` (default) raises :class:`~fastfp.errors.FileFormatError` listing the first
    10 after reading the whole file; ``on_error='skip'`` drops those records and lists every one of
    them in :attr:`Corpus.report`. Nothing is dropped silently.

Suspect records
    A quoted CSV field running over several lines that holds lines reading as records of their own
    (``text,label`` with a label of the file, written as the file's own rows write it, so
    ``text, label`` in a file of such rows: what a stray quote swallowing the rows after it
    looks like) is kept, since real multi-line text can look the same (``"Items:\napples,2"``), and
    listed in :attr:`CorpusReport.suspects` with its line span; ``read_corpus`` also warns
    (``UserWarning``) when there are any.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from .errors import ArgumentTypeError, FileFormatError, InvalidOptionError, warn_user
from .tasks import TaskData

__all__ = [
    "read_corpus",
    "encode_texts",
    "Corpus",
    "CorpusReport",
    "Problem",
    "default_tokenize",
    "PAD",
    "UNK",
    "PAD_ID",
    "UNK_ID",
    "PROBLEM_KINDS",
]

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
FORMATS = ("csv", "jsonl")
ON_ERROR = ("raise", "skip")
MAX_LISTED = 10

PROBLEM_KINDS = (
    "undecodable",  # bytes that do not decode with ``encoding``
    "malformed_json",  # a JSON Lines line that is not valid JSON
    "not_an_object",  # a JSON Lines line that is valid JSON but not an object
    "malformed_csv",  # a CSV quoting error (e.g. unterminated quote)
    "field_count",  # a CSV record with a different number of fields than the header
    "bad_text",  # text value that is not a string, or that holds NUL
    "empty_text",  # text missing, empty, blank, or with no tokens
    "missing_label",  # label missing or empty
    "bad_label",  # label value of the wrong type / malformed label list
    "unknown_label",  # a label not in the explicit ``labels`` list
)

_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_INT_RE = re.compile(r"[+-]?\d+")
_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
_TOO_DEEP = "JSON nested too deeply to read (Python's recursion limit)"


def default_tokenize(text: str) -> list[str]:
    """Split ``text`` into words (keeping inner apostrophes) and single punctuation characters."""
    return _TOKEN_RE.findall(text)


@dataclass(frozen=True)
class Problem:
    """One bad record: its 1-based ``line`` in the file, a ``kind`` from :data:`PROBLEM_KINDS`."""

    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class CorpusReport:
    """What happened while reading.

    Attributes
    ----------
    path, format, encoding : str
    n_records : int
        Records read (CSV: excluding the header; blank lines not counted).
    n_documents : int
        Records kept (``n_records - n_skipped``), ``len(train) + len(test)``.
    n_skipped : int
        Bad records dropped (``on_error='skip'``); each is in ``problems``.
    problems : tuple of Problem
        Every bad record, in file order.
    n_truncated : int
        Documents cut to ``max_length`` tokens.
    n_tokens_truncated : int
        Tokens removed by truncation.
    n_unk_train, n_unk_test : int
        Token positions mapped to ``'<unk>'`` in each split.
    suspects : tuple of Problem
        Records kept but worth a look (kind ``'rows_in_field'``: a multi-line quoted field holding
        lines that read as records, as a stray quote would leave them), in file order.
    """

    path: str
    format: str
    encoding: str
    n_records: int
    n_documents: int
    n_skipped: int
    problems: tuple
    n_truncated: int
    n_tokens_truncated: int
    n_unk_train: int
    n_unk_test: int
    suspects: tuple = ()

    def __str__(self) -> str:
        head = (
            f"{self.path} ({self.format}, {self.encoding}): {self.n_records} records, "
            f"{self.n_documents} kept, {self.n_skipped} skipped, {self.n_truncated} truncated, "
            f"<unk> tokens train={self.n_unk_train} test={self.n_unk_test}"
        )
        lines = [head] + [f"  {p}" for p in self.problems]
        if self.suspects:
            lines += [f"{len(self.suspects)} record(s) kept but suspect:"] + [f"  {p}" for p in self.suspects]
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Corpus:
    """A corpus read by :func:`read_corpus`.

    Attributes
    ----------
    train : TaskData
    test : TaskData or None
        None when ``test_fraction == 0``.
    vocab : tuple of str
        ``vocab[PAD_ID] == '<pad>'``, ``vocab[UNK_ID] == '<unk>'``; same as ``train.vocab``. With
        ``vocab=`` / ``model=`` it is the given vocabulary (``pad_id``, ``unk_id`` say where the
        special tokens sit in it).
    label_names : tuple of str
        Name of each class (single-label) or label column (multi-label), in index order.
    report : CorpusReport
    train_lines, test_lines : ndarray of int64
        Source line (record start) of each document of each split (``test_lines`` empty when
        there is no test split).
    multilabel : bool
    n_tokens_train, n_tokens_test : int
        Kept token positions per split (``unknown_fraction`` is the share of them read as ``'<unk>'``).
    """

    train: TaskData
    test: TaskData | None
    vocab: tuple
    label_names: tuple
    report: CorpusReport
    train_lines: np.ndarray = field(repr=False)
    test_lines: np.ndarray = field(repr=False)
    multilabel: bool = False
    word_index: dict = field(default_factory=dict, repr=False)
    n_tokens_train: int = 0
    n_tokens_test: int = 0

    @property
    def pad_id(self) -> int:
        """Id of the padding positions: ``PAD_ID`` (0), or where ``'<pad>'`` sits in a given vocabulary."""
        return self.word_index.get(PAD, PAD_ID) if self.word_index else PAD_ID

    @property
    def unk_id(self) -> int | None:
        """Id of ``'<unk>'``: ``UNK_ID`` (1), its place in a given vocabulary, or None if it has none."""
        return self.word_index.get(UNK) if self.word_index else UNK_ID

    @property
    def unknown_fraction(self) -> float:
        """Share of all kept tokens (both splits) that map to ``'<unk>'``."""
        n = self.n_tokens_train + self.n_tokens_test
        return (self.report.n_unk_train + self.report.n_unk_test) / n if n else 0.0

    def decode(self, ids) -> list[str]:
        """Token strings of a sequence of ids (e.g. ``train.tokens[b, :train.lengths[b]]``)."""
        return [self.vocab[int(i)] for i in ids]

    def __repr__(self) -> str:
        # A real vocabulary has tens of thousands of words and the report may list thousands of
        # problems: the repr names their sizes, the attributes hold them whole.
        def _names(names):
            shown = ", ".join(repr(w) for w in names[:6])
            return f"({shown}{', ...' if len(names) > 6 else ''})"

        test = "None" if self.test is None else repr(self.test)
        return (
            f"Corpus(train={self.train!r}, test={test}, vocab=<{len(self.vocab)} words {_names(self.vocab)}>, "
            f"label_names={_names(self.label_names)}, multilabel={self.multilabel}, "
            f"n_tokens_train={self.n_tokens_train}, n_tokens_test={self.n_tokens_test}, "
            f"report=<{self.report.n_records} records, {self.report.n_skipped} skipped, "
            f"{len(self.report.problems)} problems, {len(self.report.suspects)} suspects>)"
        )


# --------------------------------------------------------------------------- argument checks
def _check_args(format, on_error, min_count, max_vocab, max_length, test_fraction, tokenizer, encoding,
                text_column, label_column):
    if text_column == label_column:
        raise InvalidOptionError(
            f"arguments 'text_column' and 'label_column' are both {text_column!r}, expected two different columns"
        )
    if format is not None and format not in FORMATS:
        raise InvalidOptionError(f"argument 'format': got {format!r}, expected None, 'csv' or 'jsonl'")
    if on_error not in ON_ERROR:
        raise InvalidOptionError(f"argument 'on_error': got {on_error!r}, expected 'raise' or 'skip'")

    def _int(name, v, lo, allow_none):
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidOptionError(
                f"argument {name!r}: got {v!r}, expected {'None or ' if allow_none else ''}an integer >= {lo}"
            )

    _int("min_count", min_count, 1, False)
    _int("max_vocab", max_vocab, 1, True)
    _int("max_length", max_length, 1, True)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float, np.floating, np.integer))
        or not (0.0 <= float(test_fraction) < 1.0)
    ):
        raise InvalidOptionError(f"argument 'test_fraction': got {test_fraction!r}, expected a number in [0, 1)")
    if tokenizer is not None and not callable(tokenizer):
        raise ArgumentTypeError(f"argument 'tokenizer': got {type(tokenizer).__name__}, expected None or a callable str -> list of str")
    try:
        # str.encode, unlike codecs.lookup, refuses codecs that are not text encodings ('base64',
        # 'rot13'), which would otherwise fail later with a bare LookupError
        "".encode(encoding)
    except (LookupError, TypeError, UnicodeError):
        raise InvalidOptionError(
            f"argument 'encoding': got {encoding!r}, expected the name of a text encoding such as 'utf-8' or 'latin-1'"
        ) from None


def _model_settings(model, vocab, labels, lowercase, multilabel, tokenizer):
    """``vocab, labels, lowercase, multilabel`` with ``model``'s recorded corpus settings filled in."""
    if model is None:
        return vocab, labels, True if lowercase is None else lowercase, False if multilabel is None else multilabel
    from .model import Model

    if not isinstance(model, Model):
        raise ArgumentTypeError(f"argument 'model': got {type(model).__name__}, expected a fastfp.Model")
    if vocab is not None:
        raise InvalidOptionError("arguments 'vocab' and 'model': give one or the other (model= uses model.vocab)")
    if model.vocab is None:
        raise InvalidOptionError(
            "argument 'model': the model has no vocabulary (Model.vocab), so its embedding rows cannot be "
            "matched to words; attach one (Model.vocab, saved by fastfp.save_params) or pass vocab="
        )
    task = model.task_record
    rec = task.get("params", {}) if task.get("name") == "corpus" and isinstance(task.get("params"), dict) else {}

    def pick(name, given, default):
        if name not in rec:
            return default if given is None else given
        if given is not None and bool(given) != bool(rec[name]):
            raise InvalidOptionError(
                f"argument {name!r}: got {given!r}, but the model was trained on a corpus read with "
                f"{name}={bool(rec[name])!r}; leave it out (None) to use the model's"
            )
        return bool(rec[name])

    lowercase = pick("lowercase", lowercase, True)
    multilabel = pick("multilabel", multilabel, False)
    recorded = rec.get("label_names")
    if recorded is not None:
        recorded = [str(x) for x in recorded]
        if labels is None:
            labels = recorded
        elif [str(x) for x in labels] != recorded:
            raise InvalidOptionError(
                f"argument 'labels': got {list(labels)!r}, but the model's outputs are the labels {recorded!r} "
                "in that order; leave it out to use the model's"
            )
    if rec.get("tokenizer") == "custom" and tokenizer is None:
        raise InvalidOptionError(
            "argument 'tokenizer': the model was trained on a corpus split by a custom tokenizer; pass the "
            "same tokenizer= again (the default one would give other tokens)"
        )
    return tuple(model.vocab), labels, lowercase, multilabel


def _vocab_list(vocab, min_count, max_vocab) -> tuple | None:
    if vocab is None:
        return None
    if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
        raise ArgumentTypeError(f"argument 'vocab': got {type(vocab).__name__}, expected a sequence of str")
    words = tuple(vocab)
    bad = [w for w in words if not isinstance(w, str)]
    if bad or not words:
        raise ArgumentTypeError(
            f"argument 'vocab': expected a non-empty sequence of str, got {'an empty one' if not words else repr(bad[0])}"
        )
    if len(set(words)) != len(words):
        dup = next(w for w in words if words.count(w) > 1)
        raise InvalidOptionError(f"argument 'vocab': the word {dup!r} appears more than once")
    if min_count != 1 or max_vocab is not None:
        raise InvalidOptionError(
            "arguments 'min_count' / 'max_vocab' build a vocabulary and do not apply with a given one "
            f"(vocab= or model=); got min_count={min_count!r}, max_vocab={max_vocab!r}"
        )
    return words


def _label_list(labels) -> tuple | None:
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise InvalidOptionError(f"argument 'labels': got {labels!r}, expected None or a list of label names")
    out = []
    for x in labels:
        if isinstance(x, bool) or not isinstance(x, (str, int, np.integer)):
            raise InvalidOptionError(f"argument 'labels': element {x!r} is not a string or an int")
        name = str(x).strip()
        if not name:
            raise InvalidOptionError("argument 'labels': contains an empty name")
        out.append(name)
    if not out:
        raise InvalidOptionError("argument 'labels': empty list; give at least one label name or None")
    dup = [k for k, c in Counter(out).items() if c > 1]
    if dup:
        raise InvalidOptionError(f"argument 'labels': duplicate names {dup}")
    return tuple(out)


# --------------------------------------------------------------------------- decoding
def _ascii_compatible(encoding: str) -> bool:
    try:
        return "\n\r,{ab".encode(encoding) == b"\n\r,{ab"
    except (UnicodeError, LookupError):
        return False


def _decode_lines(data: bytes, encoding: str, path: str) -> tuple[list[str], set[int]]:
    """Decoded physical lines (with their endings) and the set of 1-based lines that failed."""
    bad: set[int] = set()
    if _ascii_compatible(encoding) and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        # A UTF-16 byte-order mark: read byte by byte as an ASCII-compatible encoding, every line
        # would be "undecodable", and the message would not say why.
        raise FileFormatError(
            f"{path}: starts with a UTF-16 byte-order mark ({data[:2].hex(' ')}), but is read as {encoding!r}; "
            "pass encoding='utf-16'"
        )
    if _ascii_compatible(encoding):
        raw = data.splitlines(keepends=True)
        lines = []
        for i, b in enumerate(raw, 1):
            try:
                s = b.decode(encoding)
            except UnicodeDecodeError:
                s = b.decode(encoding, errors="replace")
                bad.add(i)
            lines.append(s)
    else:  # e.g. UTF-16: a line break is not one byte, decode the whole file at once
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as e:
            raise FileFormatError(
                f"{path}: bytes {e.start}..{e.end} do not decode as {encoding!r} ({e.reason}); "
                "give the file's encoding with encoding=..."
            ) from None
        lines = _LINE_RE.findall(text)
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines, bad


def _detect_format(path: str, lines: list[str]) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv",):
        return "csv"
    for line in lines:
        if line.strip():
            return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


# --------------------------------------------------------------------------- records
@dataclass
class _Record:
    line: int
    text: Any
    label: Any
    has_label: bool


def _undecodable(encoding) -> str:
    return f"bytes that do not decode as {encoding!r} (pass encoding=... if the file is in another one)"


def _iter_jsonl(lines, bad_lines, text_column, label_column, problems, encoding="utf-8", keys_seen=None):
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if i in bad_lines:
            problems.append(Problem(i, "undecodable", _undecodable(encoding)))
            continue
        try:
            obj = json.loads(line.rstrip("\r\n"), object_pairs_hook=_unique_keys)
        except _DuplicateKey as e:
            problems.append(Problem(i, "malformed_json", f"the key {e.args[0]!r} appears twice in the object"))
            continue
        except json.JSONDecodeError as e:
            problems.append(Problem(i, "malformed_json", f"not valid JSON: {e.msg} (column {e.colno})"))
            continue
        except ValueError as e:  # e.g. numbers too large
            problems.append(Problem(i, "malformed_json", f"not valid JSON: {e}"))
            continue
        except RecursionError:
            problems.append(Problem(i, "malformed_json", _TOO_DEEP))
            continue
        if not isinstance(obj, dict):
            hint = " (JSON Lines holds one object per line; a JSON array of objects is not read)" if isinstance(obj, list) else ""
            problems.append(Problem(i, "not_an_object", f"expected a JSON object, got {type(obj).__name__}{hint}"))
            continue
        if keys_seen is not None:
            keys_seen.update(obj)
        yield _Record(i, obj.get(text_column), obj.get(label_column), label_column in obj)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _iter_csv(lines, bad_lines, text_column, label_column, problems, path, counter, label_names, multilabel,
              suspects, encoding="utf-8"):
    pos = [0]  # lines handed to the csv reader so far

    def feed():
        for s in lines:
            pos[0] += 1
            yield s

    reader = csv.reader(feed(), strict=True)
    records = []  # (record, last line, fields)
    header = None
    ti = li = -1
    prev = 0
    while True:
        try:
            row = next(reader)
            err = None
        except StopIteration:
            break
        except csv.Error as e:
            row, err = None, e
        start, end = prev + 1, pos[0]
        prev = pos[0]
        if row == [] or (err is None and start == end and len(row) == 1 and not row[0].strip()):
            continue  # blank line
        bad = sorted(j for j in range(start, end + 1) if j in bad_lines)
        if header is None:
            if err is not None or bad:
                raise FileFormatError(
                    f"{path}: line {bad[0] if bad else start}: cannot read the CSV header "
                    f"({'undecodable bytes' if bad else err})"
                )
            header = [h.strip() for h in row]
            missing = [c for c in (text_column, label_column) if c not in header]
            if missing:
                raise FileFormatError(
                    f"{path}: line {start}: the CSV header has no column {', '.join(map(repr, missing))}; "
                    f"columns are {header}; pass text_column=... / label_column=..."
                )
            dup = [c for c in (text_column, label_column) if header.count(c) > 1]
            if dup:
                raise FileFormatError(
                    f"{path}: line {start}: the CSV header has the column {', '.join(map(repr, dup))} more than "
                    f"once; columns are {header}; expected each of {text_column!r} and {label_column!r} once"
                )
            ti, li = header.index(text_column), header.index(label_column)
            continue
        counter[0] += 1
        if bad:
            problems.append(Problem(bad[0], "undecodable", f"{_undecodable(encoding)} (record starting on line {start})"))
            continue
        # A stray quote makes the csv reader swallow the following lines into one record: say
        # which lines went with it, so that nothing is lost without a trace.
        span = f" (the record runs over lines {start}-{end}: {end - start + 1} lines)" if end > start else ""
        if err is not None:
            problems.append(Problem(start, "malformed_csv", f"CSV error: {err}{span}"))
            continue
        if len(row) != len(header):
            problems.append(Problem(start, "field_count", f"{len(row)} fields, the header has {len(header)}{span}"))
            continue
        records.append((_Record(start, row[ti], row[li], True), end, row))
    if header is None:
        raise FileFormatError(f"{path}: empty file, expected a CSV header with columns {text_column!r} and {label_column!r}")
    # Whether a line inside a quoted field is a swallowed record depends on the labels of the
    # whole file, so the multi-line records are checked only once every record is read.
    if label_names is not None:
        known = set(label_names)
    else:
        known = {s for rec, _, _ in records for s in (_parse_label(rec, multilabel)[0] or ())}
    # Label cells exactly as the one-line records write them (' pos' in a file of 'text, pos'
    # rows): a swallowed line written the same way reads as a record too.
    written = {row[li] for rec, end, row in records if end == rec.line and row[li] != row[li].strip()}
    for rec, end, row in records:
        swallowed = _row_like_line(row, len(header), li, known, multilabel, written) if end > rec.line else None
        if swallowed is not None:
            suspects.append(Problem(
                rec.line, "rows_in_field",
                f"a quoted field runs over lines {rec.line}-{end} and holds what look like rows "
                f"(e.g. {swallowed!r}): kept as one record; a stray quote?",
            ))
        yield rec


def _row_like_line(row, n_fields, li, known, multilabel, written=frozenset()):
    """The first line inside a multi-line field of ``row`` that reads as a record of its own, or None.

    A line reads as a record when it splits into ``n_fields`` CSV fields whose label field is,
    exactly (no surrounding spaces), a label of ``known``, or is a label cell exactly as the
    file's one-line records write it (``written``: those with surrounding spaces, as in
    ``text, pos`` rows). Requiring a known label, written without spaces unless the file's
    records have them, keeps prose such as ``"line two, still"`` or ``"neg, pos"`` from being
    taken for a record.
    """
    for cell in row:
        parts = _NEWLINE_RE.split(cell)
        for part in parts if len(parts) > 1 else ():
            try:
                fields = next(csv.reader([part], strict=True), [])
            except csv.Error:
                continue
            if len(fields) != n_fields or (fields[li] != fields[li].strip() and fields[li] not in written):
                continue
            names, _ = _parse_label(_Record(0, None, fields[li], True), multilabel)
            if names and set(names) <= known:
                return part
    return None


def _parse_label(rec: _Record, multilabel: bool):
    """(list of names, None) or (None, Problem)."""
    v = rec.label
    if not rec.has_label or v is None or (isinstance(v, str) and not v.strip()):
        return None, Problem(rec.line, "missing_label",
                             "no label (an empty JSON list [] means no labels)" if multilabel else "no label")

    def name(x):
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            return None
        s = str(x).strip()
        return s or None

    if not multilabel:
        s = name(v)
        if s is None:
            return None, Problem(rec.line, "bad_label", f"label {v!r} is not a string or an integer")
        return [s], None
    if isinstance(v, str) and v.strip().startswith("["):
        try:
            v = json.loads(v)
        except ValueError as e:
            return None, Problem(rec.line, "bad_label", f"label cell looks like a JSON list but is not valid JSON ({e})")
        except RecursionError:
            return None, Problem(rec.line, "bad_label", f"label cell: {_TOO_DEEP}")
    if isinstance(v, list):
        names = [name(x) for x in v]
        if any(s is None for s in names):
            return None, Problem(rec.line, "bad_label", f"label list {v!r} holds a non-string or empty element")
        return list(dict.fromkeys(names)), None
    if isinstance(v, str):
        names = [p.strip() for p in v.split(";") if p.strip()]
        if not names:
            return None, Problem(rec.line, "missing_label", f"label cell {v!r} holds no label")
        return list(dict.fromkeys(names)), None
    s = name(v)
    if s is None:
        return None, Problem(rec.line, "bad_label", f"label {v!r} is not a string, an integer or a list")
    return [s], None


def _tokens(tok, text: str, where: str) -> list:
    """``tok(text)`` as a list of non-empty str tokens; a tokenizer that fails, or returns
    anything else, is an error naming ``where`` (the record or text it was given)."""
    try:
        toks = tok(text)
        if isinstance(toks, str):
            raise ArgumentTypeError(f"argument 'tokenizer': returned a str on {where}, expected an iterable of str tokens")
        toks = list(toks)
    except ArgumentTypeError:
        raise
    except TypeError as e:
        raise ArgumentTypeError(f"argument 'tokenizer': on {where} it returned something that is not an iterable "
                                f"of str tokens ({e})") from e
    except Exception as e:
        raise InvalidOptionError(f"argument 'tokenizer': raised {type(e).__name__} on {where}: {e}") from e
    for t in toks:
        if not isinstance(t, str):
            raise ArgumentTypeError(f"argument 'tokenizer': returned a {type(t).__name__} token on {where}, expected str")
    return [t for t in toks if t]


def _warn_numeric_aliases(path: str, names) -> None:
    """Warn when label strings spell the same number ('1', '01', '1.0'): they are different classes
    (labels are strings), which is rarely what the file meant."""
    by_value: dict = {}
    for name in names:
        try:
            value = float(name)
        except ValueError:
            continue
        if value == value:  # not NaN
            by_value.setdefault(value, []).append(name)
    aliases = [group for group in by_value.values() if len(group) > 1]
    if aliases:
        shown = "; ".join(" / ".join(map(repr, g)) for g in aliases[:3])
        warnings.warn(
            f"{path}: labels {shown} spell the same number but are read as different classes (labels are "
            "strings); write them one way, or pass labels=[...] to list the classes",
            UserWarning, stacklevel=3,
        )


def _warn_case_aliases(path: str, names) -> None:
    """Warn when label strings differ only in letter case ('Neg', 'neg'): different classes, which
    is rarely what the file meant."""
    by_key: dict = {}
    for name in names:
        by_key.setdefault(name.casefold(), []).append(name)
    aliases = [group for group in by_key.values() if len(group) > 1]
    if aliases:
        shown = "; ".join(" / ".join(map(repr, g)) for g in aliases[:3])
        warn_user(f"{path}: labels {shown} differ only in case but are read as different classes; write them one "
                  "way, or pass labels=[...] to list the classes")


def _sort_names(names) -> tuple:
    names = list(names)
    if names and all(_INT_RE.fullmatch(s) for s in names):
        return tuple(sorted(names, key=lambda s: (int(s), s)))
    return tuple(sorted(names))


# --------------------------------------------------------------------------- split
def _split(n: int, labels: np.ndarray, fraction: float, rng, stratify: bool, names=None) -> np.ndarray:
    """Boolean (n,) mask of the test documents. Stratified, every class keeps at least one
    document in training (a class the model never sees in training cannot be learnt), said in a
    warning where that leaves a class out of the test split or shrinks it."""
    test = np.zeros(n, dtype=bool)
    if fraction == 0:
        return test
    if n < 2:
        raise InvalidOptionError(f"argument 'test_fraction': {fraction} needs at least 2 documents, the corpus has {n}")
    n_test = min(max(int(round(fraction * n)), 1), n - 1)
    if not stratify:
        test[rng.permutation(n)[:n_test]] = True
        return test
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == k) for k in classes]
    room = np.array([len(m) - 1 for m in members])  # one document of each class stays in training
    wanted = n_test
    n_test = min(n_test, int(room.sum()))
    quota = np.array([fraction * len(m) for m in members])
    take = np.minimum(np.floor(quota).astype(np.int64), room)
    frac = quota - np.floor(quota)
    order = sorted(range(len(classes)), key=lambda i: (-frac[i], i))
    j = 0
    while take.sum() < n_test:
        i = order[j % len(order)]
        if take[i] < room[i]:
            take[i] += 1
        j += 1
    while take.sum() > n_test:
        i = int(np.argmax(take))
        take[i] -= 1
    for m, t in zip(members, take):
        test[rng.permutation(m)[:t]] = True
    label = (lambda k: repr(names[k])) if names is not None else (lambda k: f"class {k}")
    alone = [label(int(k)) for k, m in zip(classes, members) if len(m) == 1]
    if alone:
        warn_user(f"argument 'test_fraction': {', '.join(alone)} {'has' if len(alone) == 1 else 'have'} one document, "
                  "kept in training: the test split holds none of "
                  + ("it" if len(alone) == 1 else "them"))
    if n_test < wanted:
        warn_user(f"argument 'test_fraction': {fraction} asks for {wanted} test documents; {n_test} "
                  f"{'leaves' if n_test == 1 else 'leave'} every class a document in training")
    return test


# --------------------------------------------------------------------------- main entry
def _check_labels_fit_readout(path_str, label_names, model, labels_given) -> None:
    """Label i is the model's output i: more labels than outputs cannot be, fewer may be misplaced."""
    if model is None or getattr(model, "readout_weight", None) is None:
        return
    n_out, K = int(np.shape(model.readout_weight)[0]), len(label_names)
    capacity = 2 if n_out == 1 else n_out  # one output: a binary (sigmoid) readout of two labels
    shown = ", ".join(map(repr, label_names[:8])) + (", ..." if K > 8 else "")
    if K > capacity:
        if labels_given:
            raise InvalidOptionError(
                f"argument 'labels': names {K} labels ({shown}) but the model's readout has {n_out} output(s)"
            )
        raise InvalidOptionError(
            f"argument 'path': {path_str} has {K} labels ({shown}) but the model's readout has {n_out} output(s); "
            "this is not the model's task (or pass labels= naming its outputs in order and skip the other rows)"
        )
    if K < n_out and not labels_given:
        warn_user(f"{path_str}: {K} labels ({shown}) for the model's {n_out} outputs: label i is taken as output i "
                  "in this sorted order; pass labels= naming the model's outputs in order if that is not so")


def read_corpus(
    path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    format: str | None = None,
    encoding: str = "utf-8",
    lowercase: bool | None = None,
    tokenizer: Callable[[str], Iterable[str]] | None = None,
    min_count: int = 1,
    max_vocab: int | None = None,
    max_length: int | None = None,
    labels=None,
    multilabel: bool | None = None,
    test_fraction: float = 0.0,
    seed=None,
    on_error: str = "raise",
    vocab=None,
    model=None,
) -> Corpus:
    """Read a labelled text corpus from a CSV or JSON Lines file.

    Parameters
    ----------
    path : str or os.PathLike
    text_column, label_column : str
        CSV header names / JSON object keys of the text and the label.
    format : {None, 'csv', 'jsonl'}
        None: from the suffix (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``), else from the content
        (first non-blank line starting with ``{`` -> JSON Lines, else CSV).
    encoding : str
        Codec of the file (a UTF-8 byte-order mark is ignored).
    lowercase : bool or None
        Lower-case texts before tokenizing. None: True, or what ``model`` was trained with.
    tokenizer : callable or None
        ``str -> iterable of str``; None: :func:`default_tokenize`.
    min_count : int >= 1
        Training-split words seen fewer times map to ``'<unk>'`` (counted after ``max_length``
        truncation: only the tokens the documents keep count).
    max_vocab : int or None
        Keep at most this many real words (the two special tokens not counted).
    max_length : int or None
        Truncate documents to their first ``max_length`` tokens (counted in the report).
    labels : list of str or None
        Explicit label names (their order gives the indices); other labels are bad rows.
    multilabel : bool or None
        Labels are sets (see the module docstring); ``labels`` arrays are ``(n, K)`` 0/1.
        None: False, or what ``model`` was trained with.
    vocab : sequence of str, optional
        Use this vocabulary instead of building one (e.g. a trained model's ``Model.vocab``): each
        token gets the id of the same word in it, words it lacks map to its ``'<unk>'`` (an error
        if it has none and such a word occurs), counted in ``report.n_unk_train`` /
        ``n_unk_test``. Excludes ``min_count`` and ``max_vocab``.
    model : fastfp.Model, optional
        Read the corpus as ``model`` was trained to read it: its vocabulary (as ``vocab``) and,
        when it was trained on a corpus (``fastfp.train.train_classifier`` records them), its
        label names and order, ``lowercase`` and ``multilabel``. An explicit argument that
        contradicts the record is an error; a custom tokenizer must be passed again (the record
        only says one was used).
    test_fraction : float in [0, 1)
        Fraction of documents put in ``test`` (stratified by label for single-label corpora; the
        test split holds ``round(test_fraction * n)`` documents, at least 1). Documents keep
        their file order within each split.
    seed : None, int or numpy.random.Generator
        Seed of the split; the same int gives the same split.
    on_error : {'raise', 'skip'}
        What to do with bad records (see the module docstring).

    Returns
    -------
    Corpus

    Raises
    ------
    FileFormatError
        Bad records with ``on_error='raise'``, an unreadable header, a missing or repeated
        ``text_column`` / ``label_column`` column, or no valid document at all.
    InvalidOptionError, ArgumentTypeError
        A bad argument (e.g. ``text_column == label_column``, or an ``encoding`` that is not a
        text encoding).
    """
    _check_args(format, on_error, min_count, max_vocab, max_length, test_fraction, tokenizer, encoding,
                text_column, label_column)
    vocab, labels, lowercase, multilabel = _model_settings(model, vocab, labels, lowercase, multilabel, tokenizer)
    given_vocab = _vocab_list(vocab, min_count, max_vocab)
    label_names = _label_list(labels)
    labels_given = label_names is not None
    if isinstance(seed, bool):
        raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected None, a non-negative int or a numpy Generator")
    if isinstance(seed, np.random.Generator):
        rng, seed_param = seed, None
    elif seed is None or (isinstance(seed, (int, np.integer)) and seed >= 0):
        rng, seed_param = np.random.default_rng(seed), (None if seed is None else int(seed))
    else:
        raise InvalidOptionError(f"argument 'seed': got {seed!r}, expected None, a non-negative int or a numpy Generator")
    try:
        path_str = os.fspath(path)
    except TypeError:
        raise ArgumentTypeError(f"argument 'path': got {type(path).__name__}, expected a str or os.PathLike") from None
    tok = tokenizer if tokenizer is not None else default_tokenize

    with open(path_str, "rb") as f:
        data = f.read()
    lines, bad_lines = _decode_lines(data, encoding, path_str)
    fmt = format or _detect_format(path_str, lines)

    problems: list[Problem] = []
    suspects: list[Problem] = []
    counter = [0]
    if fmt == "jsonl":
        first = next((s for s in lines if s.strip()), "")
        if first.strip() in ("[", "[{") or (first.lstrip().startswith("[") and not first.rstrip().endswith("]")):
            raise FileFormatError(
                f"{path_str}: line 1 opens a JSON array spread over lines; JSON Lines holds one object per line "
                "(write each record as one line: {\"text\": ..., \"label\": ...})"
            )
        keys_seen: set = set()
        gen = list(_iter_jsonl(lines, bad_lines, text_column, label_column, problems, encoding, keys_seen))
        # A key that no record has is the wrong key, not a file of bad records.
        absent = [k for k in (text_column, label_column) if gen and k not in keys_seen]
        if absent:
            shown = ", ".join(map(repr, sorted(keys_seen)[:12])) + (", ..." if len(keys_seen) > 12 else "")
            raise FileFormatError(
                f"{path_str}: no record has the key {' or '.join(map(repr, absent))} (keys: {shown}); "
                "pass text_column=... / label_column=..."
            )
    else:
        # The csv module refuses fields over 131072 characters by default (a process-wide limit);
        # a long document is valid CSV, so the limit is lifted to the file's size while reading.
        old_limit = csv.field_size_limit()
        csv.field_size_limit(max(old_limit, len(data) + 1))
        try:
            gen = list(_iter_csv(lines, bad_lines, text_column, label_column, problems, path_str, counter, label_names,
                                 multilabel, suspects, encoding))
        finally:
            csv.field_size_limit(old_limit)

    docs: list[list[str]] = []
    doc_labels: list[list[str]] = []
    doc_lines: list[int] = []
    for rec in gen:
        text = rec.text
        if text is not None and not isinstance(text, str):
            problems.append(Problem(rec.line, "bad_text", f"text {text!r} is not a string"))
            continue
        if text is None or not text.strip():
            problems.append(Problem(rec.line, "empty_text", f"no {text_column!r} value" if text is None else "empty text"))
            continue
        if "\x00" in text:  # a NUL token could not be kept in a saved vocabulary (NumPy strings drop it)
            problems.append(Problem(rec.line, "bad_text", "text holds the character NUL ('\\x00')"))
            continue
        names, prob = _parse_label(rec, multilabel)
        if prob is not None:
            problems.append(prob)
            continue
        if label_names is not None:
            unknown = [s for s in names if s not in label_names]
            if unknown:
                problems.append(Problem(rec.line, "unknown_label", f"label {', '.join(map(repr, unknown))} not in labels={list(label_names)}"))
                continue
        toks = _tokens(tok, text.lower() if lowercase else text, f"the record at line {rec.line}")
        if not toks:
            problems.append(Problem(rec.line, "empty_text", f"text {text!r} has no tokens"))
            continue
        docs.append(toks)
        doc_labels.append(names)
        doc_lines.append(rec.line)

    problems.sort(key=lambda p: p.line)
    if fmt == "jsonl":
        n_records = sum(1 for s in lines if s.strip())
    else:
        n_records = counter[0]
    if problems and on_error == "raise":
        listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise FileFormatError(
            f"{path_str}: {len(problems)} bad record(s) of {n_records}:\n{listed}{more}\n"
            "fix them, or pass on_error='skip' to drop them (they are then listed in Corpus.report)"
        )
    if not docs:
        raise FileFormatError(f"{path_str}: no valid document ({n_records} records, {len(problems)} bad)")

    # labels
    if label_names is None:
        label_names = _sort_names({s for names in doc_labels for s in names})
        _warn_case_aliases(path_str, label_names)  # (labels given by the caller are as meant)
    _warn_numeric_aliases(path_str, label_names)
    _check_labels_fit_readout(path_str, label_names, model, labels_given)
    index = {s: i for i, s in enumerate(label_names)}
    n, K = len(docs), len(label_names)
    if multilabel:
        y = np.zeros((n, K), dtype=np.int64)
        for b, names in enumerate(doc_labels):
            y[b, [index[s] for s in names]] = 1
    else:
        y = np.array([index[names[0]] for names in doc_labels], dtype=np.int64)

    # truncation
    n_trunc = n_tok_trunc = 0
    if max_length is not None:
        for b, toks in enumerate(docs):
            if len(toks) > max_length:
                n_trunc += 1
                n_tok_trunc += len(toks) - max_length
                docs[b] = toks[:max_length]

    # split
    if not multilabel and K < 2:
        warn_user(f"{path_str}: every document has the label {label_names[0]!r}: one class, no classifier to train "
                  "(reading it to analyse a model trained elsewhere is fine)" if K == 1 else f"{path_str}: no labels")
    is_test = _split(n, y, float(test_fraction), rng, stratify=not multilabel, names=label_names)
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)

    if given_vocab is None:
        # vocabulary on the training split
        counts = Counter(t for b in train_idx for t in docs[b])
        for special in (PAD, UNK):
            counts.pop(special, None)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[:max_vocab]
        vocab = (PAD, UNK) + tuple(words)
        pad_id, unk_id = PAD_ID, UNK_ID
    else:
        vocab = given_vocab
        pad_id, unk_id = vocab.index(PAD) if PAD in vocab else 0, vocab.index(UNK) if UNK in vocab else None
    word_index = {w: i for i, w in enumerate(vocab)}
    if PAD in word_index:
        word_index[PAD] = unk_id  # a literal '<pad>' token is an unknown word, never padding
    if unk_id is None:
        unknown = sorted({t for toks in docs for t in toks if word_index.get(t) is None})
        if unknown:
            raise InvalidOptionError(
                f"argument {'model' if model is not None else 'vocab'!r}: the vocabulary has no {UNK!r} and lacks "
                f"{len(unknown)} word(s) of {path_str}: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}; "
                "a vocabulary with '<unk>' (as read_corpus builds) maps them there"
            )
    L = max(len(t) for t in docs)
    evidence = np.zeros((len(vocab), 0), dtype=np.float64)

    params_common = {
        "source": path_str,
        "format": fmt,
        ("n_labels" if multilabel else "n_classes"): K,
        "label_names": label_names,
        "multilabel": bool(multilabel),
        "lowercase": bool(lowercase),
        "tokenizer": "default" if tokenizer is None else "custom",
        "vocab": "built" if given_vocab is None else ("model's" if model is not None else "given"),
        "min_count": int(min_count),
        "max_vocab": max_vocab,
        "max_length": max_length,
        "test_fraction": float(test_fraction),
        "seed": seed_param,
    }

    def build(idx, split):
        tokens = np.full((len(idx), L), pad_id, dtype=np.int32)
        lengths = np.zeros(len(idx), dtype=np.int64)
        n_unk = 0
        for r, b in enumerate(idx):
            ids = [word_index.get(t, unk_id) for t in docs[b]]
            n_unk += ids.count(unk_id) if unk_id is not None else 0
            tokens[r, : len(ids)] = ids
            lengths[r] = len(ids)
        td = TaskData(
            tokens=tokens,
            lengths=lengths,
            labels=y[idx],
            vocab=vocab,
            evidence=evidence,
            name="corpus",
            # the share of <unk>: a model trained on this split has seen that much of it
            params=dict(params_common, split=split,
                        unknown_fraction=float(n_unk / lengths.sum()) if lengths.sum() else 0.0),
        )
        return td, n_unk

    train, n_unk_train = build(train_idx, "train")
    test, n_unk_test = (None, 0) if test_fraction == 0 else build(test_idx, "test")
    lines_arr = np.asarray(doc_lines, dtype=np.int64)
    kept_lines = set(doc_lines)
    report = CorpusReport(
        path=path_str,
        format=fmt,
        encoding=encoding,
        n_records=n_records,
        n_documents=n,
        n_skipped=len(problems),
        problems=tuple(problems),
        n_truncated=n_trunc,
        n_tokens_truncated=n_tok_trunc,
        n_unk_train=n_unk_train,
        n_unk_test=n_unk_test,
        suspects=tuple(p for p in suspects if p.line in kept_lines),
    )
    suspects = list(report.suspects)  # a suspect record that was also a bad row is in problems only
    if suspects:
        warnings.warn(
            f"{path_str}: {len(suspects)} record(s) hold quoted fields whose lines read as rows (a stray quote?), "
            f"kept as they are; first: {suspects[0]}; see Corpus.report.suspects",
            UserWarning, stacklevel=2,
        )
    tl, sl = lines_arr[train_idx], lines_arr[test_idx]
    tl.setflags(write=False)
    sl.setflags(write=False)
    return Corpus(
        train=train,
        test=test,
        vocab=vocab,
        label_names=label_names,
        report=report,
        train_lines=tl,
        test_lines=sl,
        multilabel=bool(multilabel),
        word_index={w: i for i, w in enumerate(vocab)},
        n_tokens_train=int(train.lengths.sum()),
        n_tokens_test=0 if test is None else int(test.lengths.sum()),
    )


def encode_texts(texts, *, model=None, vocab=None, lowercase: bool | None = None, tokenizer=None,
                 max_length: int | None = None) -> TaskData:
    """Token ids of unlabelled texts in a model's (or a given) vocabulary: new text to predict on.

    Tokenised as :func:`read_corpus` does (and, with ``model``, with the settings it records:
    casing, and whether a custom tokenizer must be passed again); words the vocabulary lacks map to
    its ``'<unk>'`` (counted in ``params['n_unknown_tokens']``; an error if it has none).

    Parameters
    ----------
    texts : sequence of str
        n texts, each with at least one token.
    model : fastfp.Model, optional
        Use its vocabulary and recorded settings (see :func:`read_corpus`).
    vocab : sequence of str, optional
        A vocabulary instead of ``model``'s.
    lowercase, tokenizer, max_length
        As in :func:`read_corpus`.

    Returns
    -------
    TaskData
        ``tokens`` (n, L), ``lengths`` (n,), ``vocab`` the model's; no labels: ``labels`` is -1
        everywhere, (n,) or (n, K) for a multi-label model, and ``params['unlabelled']`` is True.
        :func:`fastfp.train.predict`, :func:`fastfp.analysis.order_invariance` and the rollouts take
        it; :func:`fastfp.train.accuracy` refuses it.
    """
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise ArgumentTypeError(f"argument 'texts': got {type(texts).__name__}, expected a sequence of str")
    texts = list(texts)
    if not texts:
        raise InvalidOptionError("argument 'texts': got no texts, expected at least one")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ArgumentTypeError(f"argument 'texts': item {i} is a {type(t).__name__}, expected str")
    if tokenizer is not None and not callable(tokenizer):
        raise ArgumentTypeError(f"argument 'tokenizer': got {type(tokenizer).__name__}, expected None or a callable")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                   or max_length < 1):
        raise InvalidOptionError(f"argument 'max_length': got {max_length!r}, expected None or an integer >= 1")
    if model is None and vocab is None:
        raise InvalidOptionError("arguments 'model' / 'vocab': give one (the vocabulary the ids index)")
    vocab, _, lowercase, multilabel = _model_settings(model, vocab, None, lowercase, None, tokenizer)
    words = _vocab_list(vocab, 1, None)
    index = {w: i for i, w in enumerate(words)}
    unk, pad_id = index.get(UNK), index.get(PAD, 0)
    if PAD in index:
        index[PAD] = unk  # a literal '<pad>' is an unknown word, never padding
    tok = tokenizer if tokenizer is not None else default_tokenize
    docs = []
    for i, t in enumerate(texts):
        toks = _tokens(tok, t.lower() if lowercase else t, f"text {i}")
        if not toks:
            raise InvalidOptionError(f"argument 'texts': item {i} ({t[:40]!r}) has no tokens")
        docs.append(toks[:max_length] if max_length is not None else toks)
    missing = sorted({w for d in docs for w in d if index.get(w) is None})
    if missing and unk is None:
        raise InvalidOptionError(
            f"argument {'model' if model is not None else 'vocab'!r}: the vocabulary has no {UNK!r} and lacks the "
            f"words {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    L = max(map(len, docs))
    tokens = np.full((len(docs), L), pad_id, dtype=np.int32)
    n_unknown = 0
    for b, d in enumerate(docs):
        ids = [index[w] if index.get(w) is not None else unk for w in d]
        n_unknown += sum(index.get(w) is None or w == PAD for w in d)
        tokens[b, : len(ids)] = ids
    n_out = None
    if model is not None and model.readout_weight is not None:
        n_out = int(np.shape(model.readout_weight)[0])
        task = model.task_record
        # A model trained on fastfp.tasks.multilabel (not a corpus) records the flag on its task.
        multilabel = bool(multilabel or task.get("multilabel", False))
    labels = np.full((len(docs), n_out) if multilabel and n_out else (len(docs),), -1, dtype=np.int64)
    params = {"unlabelled": True, "n_unknown_tokens": int(n_unknown), "lowercase": bool(lowercase),
              "tokenizer": "default" if tokenizer is None else "custom", "max_length": max_length}
    return TaskData(tokens=tokens, lengths=np.array(list(map(len, docs)), dtype=np.int64), labels=labels,
                    vocab=words, evidence=np.zeros((len(words), 0)), name="texts", params=params)
