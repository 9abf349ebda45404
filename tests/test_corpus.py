"""fastfp.corpus: reading a user's labelled text corpus (CSV / JSON Lines) into TaskData."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfp import ArgumentTypeError, FileFormatError, InvalidOptionError, TaskData
from fastfp import errors as fastfp_errors
from fastfp.analysis import wordcount_prediction
from fastfp.corpus import PAD, PAD_ID, UNK, UNK_ID, default_tokenize, read_corpus

DATA = Path(__file__).parent / "data" / "corpus"
REVIEWS_CSV = DATA / "reviews.csv"
REVIEWS_JSONL = DATA / "reviews.jsonl"
# start line of each record of reviews.csv (header on line 1, record 13 spans lines 14-15)
REVIEW_LINES = list(range(2, 15)) + list(range(16, 43))


def texts_and_labels(path: Path):
    """Independent reference reader of the clean fixtures (csv / json modules)."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def docs(corpus, data: TaskData):
    return [corpus.decode(data.tokens[b, : data.lengths[b]]) for b in range(data.n_docs)]


# --------------------------------------------------------------------------- clean fixtures
@pytest.mark.parametrize("path", [REVIEWS_CSV, REVIEWS_JSONL], ids=["csv", "jsonl"])
def test_reads_fixture_shapes_labels(path):
    c = read_corpus(path)
    texts, labels = texts_and_labels(path)
    tr = c.train
    assert isinstance(tr, TaskData) and c.test is None
    assert tr.n_docs == 40 == c.report.n_documents == c.report.n_records
    assert c.report.n_skipped == 0 and c.report.problems == ()
    assert tr.tokens.dtype == np.int32 and tr.tokens.shape == (40, tr.lengths.max())
    assert tr.lengths.dtype == np.int64
    assert c.label_names == ("neg", "neutral", "pos") and tr.n_classes == 3
    assert tr.labels.dtype == np.int64 and tr.labels.shape == (40,)
    assert [c.label_names[k] for k in tr.labels] == labels
    expected = [default_tokenize(t.lower()) for t in texts]
    assert docs(c, tr) == expected
    assert tr.lengths.tolist() == [len(e) for e in expected]
    # padding: id 0 past each length, never a real word inside
    assert np.all(tr.tokens[~tr.mask()] == PAD_ID)
    assert np.all(tr.tokens[tr.mask()] != PAD_ID)
    assert c.vocab[PAD_ID] == PAD and c.vocab[UNK_ID] == UNK and tr.vocab == c.vocab
    assert tr.evidence.shape == (tr.vocab_size, 0)
    assert c.train_lines.shape == (40,)


def test_csv_quoting_multiline_and_unicode():
    c = read_corpus(REVIEWS_CSV)
    d = docs(c, c.train)
    assert d[2] == ["great", "story", ",", "great", "cast", ",", "great", "music", "!"]
    assert d[12] == "the first half was slow . the second half was even slower .".split()
    assert d[15][:4] == ['"', "unwatchable", '"', ","]
    assert "café" in d[8] and "naïve" in d[10] and "straße" in d[20] and "großartiger" in d[20]
    assert "😀" in d[35] and "—" in d[26] and "don't" in d[25]
    # record start lines: header is line 1; record 13 spans lines 14-15, so records after it shift
    assert c.train_lines.tolist() == REVIEW_LINES


def test_csv_and_jsonl_agree():
    a, b = read_corpus(REVIEWS_CSV), read_corpus(REVIEWS_JSONL)
    assert a.vocab == b.vocab and a.label_names == b.label_names
    np.testing.assert_array_equal(a.train.tokens, b.train.tokens)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert b.train_lines.tolist() == list(range(1, 41))


def test_format_detection_from_content(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes(REVIEWS_JSONL.read_bytes())
    assert read_corpus(p).report.format == "jsonl"
    q = tmp_path / "data2.txt"
    q.write_bytes(REVIEWS_CSV.read_bytes())
    assert read_corpus(q).report.format == "csv"
    with pytest.raises(InvalidOptionError):
        read_corpus(q, format="tsv")


def test_lowercase_off_and_custom_tokenizer():
    c = read_corpus(REVIEWS_CSV, lowercase=False, tokenizer=str.split)
    d = docs(c, c.train)
    assert d[0] == "The film was wonderful and the acting was great.".split()
    assert "The" in c.vocab and "the" in c.vocab


def test_vocabulary_order_and_unk_mapping():
    c = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=3)
    tr, te = c.train, c.test
    counts = tr.counts().sum(axis=0)
    # training words sorted by frequency (descending), ties alphabetical; no unk in train
    words = c.vocab[2:]
    keys = [(-counts[c.word_index[w]], w) for w in words]
    assert keys == sorted(keys)
    assert np.all(counts[2:] >= 1) and counts[UNK_ID] == 0 and c.report.n_unk_train == 0
    # test words unseen in training are <unk>
    texts, _ = texts_and_labels(REVIEWS_CSV)
    by_line = dict(zip(REVIEW_LINES, texts))
    train_words = {w for doc in docs(c, tr) for w in doc}
    n_unk = 0
    for b, line in enumerate(c.test_lines.tolist()):
        ref = default_tokenize(by_line[line].lower())
        assert c.decode(te.tokens[b, : te.lengths[b]]) == [w if w in train_words else UNK for w in ref]
        n_unk += sum(w not in train_words for w in ref)
    assert n_unk == c.report.n_unk_test > 0


def test_min_count():
    full = read_corpus(REVIEWS_CSV)
    counts = full.train.counts().sum(axis=0)
    c = read_corpus(REVIEWS_CSV, min_count=3)
    kept = {w for w in full.vocab[2:] if counts[full.word_index[w]] >= 3}
    assert set(c.vocab[2:]) == kept
    n_rare = sum(int(counts[full.word_index[w]]) for w in full.vocab[2:] if w not in kept)
    assert c.report.n_unk_train == n_rare == int(c.train.counts()[:, UNK_ID].sum())
    np.testing.assert_array_equal(c.train.lengths, full.train.lengths)


def test_max_vocab():
    full = read_corpus(REVIEWS_CSV)
    c = read_corpus(REVIEWS_CSV, max_vocab=10)
    assert c.vocab == full.vocab[:12] and c.train.vocab_size == 12
    assert c.report.n_unk_train == int(full.train.counts()[:, 12:].sum())


def test_max_length_truncation():
    full = read_corpus(REVIEWS_CSV)
    c = read_corpus(REVIEWS_CSV, max_length=5)
    assert c.train.max_length == 5
    np.testing.assert_array_equal(c.train.lengths, np.minimum(full.train.lengths, 5))
    long = full.train.lengths > 5
    assert c.report.n_truncated == int(long.sum()) > 0
    assert c.report.n_tokens_truncated == int((full.train.lengths[long] - 5).sum())
    for b in range(40):
        assert docs(c, c.train)[b] == docs(full, full.train)[b][:5]
    with pytest.raises(InvalidOptionError):
        read_corpus(REVIEWS_CSV, max_length=0)


def test_split_deterministic_disjoint_stratified():
    a = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=7)
    b = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=7)
    c = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=8)
    np.testing.assert_array_equal(a.test_lines, b.test_lines)
    np.testing.assert_array_equal(a.test.tokens, b.test.tokens)
    assert a.vocab == b.vocab
    assert set(a.test_lines.tolist()) != set(c.test_lines.tolist())
    assert not set(a.train_lines.tolist()) & set(a.test_lines.tolist())
    assert len(a.train_lines) + len(a.test_lines) == 40 and len(a.test_lines) == 10
    assert np.all(np.diff(a.train_lines) > 0) and np.all(np.diff(a.test_lines) > 0)  # file order
    # stratified: 14 neg, 13 neutral, 13 pos -> 10 test documents spread over the classes
    assert sorted(np.bincount(a.test.labels, minlength=3).tolist()) == [3, 3, 4]
    assert a.test.max_length == a.train.max_length and a.test.vocab == a.train.vocab
    assert a.test.params["split"] == "test"
    # the vocabulary comes from the training split only
    assert set(a.vocab[2:]) == {w for d in docs(a, a.train) for w in d}
    with pytest.raises(InvalidOptionError):
        read_corpus(REVIEWS_CSV, test_fraction=1.0)


@pytest.mark.parametrize("seed", range(6))
def test_split_keeps_every_class_in_training(tmp_path, seed):
    path = tmp_path / "c.csv"
    path.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(5))
                    + "odd film,rare\n")
    with pytest.warns(UserWarning, match="'rare' has one document, kept in training: the test split holds none of it"):
        c = read_corpus(path, test_fraction=0.45, seed=seed)
    assert set(c.train.labels.tolist()) == {0, 1, 2} and 2 not in c.test.labels.tolist()
    assert c.test.n_docs == 5  # round(0.45 * 11)
    # a fraction that would leave a class out of training is cut back, and said so
    few = tmp_path / "few.csv"
    few.write_text("text,label\ngood,pos\nbad,neg\ngreat,pos\nawful,neg\n")
    with pytest.warns(UserWarning, match="asks for 3 test documents; 2 leave every class a document in training"):
        c = read_corpus(few, test_fraction=0.99, seed=seed)
    assert sorted(c.train.labels.tolist()) == [0, 1] and sorted(c.test.labels.tolist()) == [0, 1]


def test_a_corpus_of_one_label_is_read_with_a_warning(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\ngood film,pos\ngreat film,pos\n")
    with pytest.warns(UserWarning, match="every document has the label 'pos': one class, no classifier to train"):
        c = read_corpus(path)
    assert c.label_names == ("pos",) and c.train.n_docs == 2


def test_taskdata_methods_and_wordcount_prediction():
    c = read_corpus(REVIEWS_CSV, test_fraction=0.2, seed=0)
    tr = c.train
    oh = tr.one_hot()
    assert oh.shape == (tr.n_docs, tr.max_length, tr.vocab_size)
    np.testing.assert_array_equal(oh.sum(axis=(1, 2)), tr.lengths)
    assert oh[..., PAD_ID].sum() == 0
    cnt = tr.counts()
    np.testing.assert_array_equal(cnt.sum(axis=1), tr.lengths)
    np.testing.assert_array_equal(cnt, oh.sum(axis=1).astype(np.int64))
    assert tr.scores().shape == (tr.n_docs, 0)
    res = wordcount_prediction(tr)
    assert np.all(np.isfinite(res.singular_values))
    assert isinstance(res.dimension, int) and 1 <= res.dimension <= 2  # 3 classes -> at most 2
    assert np.isfinite(res.participation_ratio)
    res_test = wordcount_prediction(c.test)
    assert 1 <= res_test.dimension <= 2


def test_multilabel():
    c = read_corpus(DATA / "tags.csv", label_column="labels", multilabel=True)
    assert c.label_names == ("comedy", "horror", "romance")
    assert c.train.labels.shape == (6, 3) and c.train.n_classes == 3
    assert c.train.labels.tolist() == [[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]]
    res = wordcount_prediction(c.train)
    assert 1 <= res.dimension <= 3
    c2 = read_corpus(DATA / "tags.csv", label_column="labels", multilabel=True, test_fraction=0.5, seed=1)
    assert c2.test.labels.shape == (3, 3)


def test_multilabel_jsonl_lists_and_explicit_labels(tmp_path):
    p = tmp_path / "ml.jsonl"
    rows = [
        {"text": "scary and funny", "label": ["horror", "comedy"]},
        {"text": "just funny", "label": "comedy"},
        {"text": "nothing at all", "label": []},
        {"text": "love;story", "label": "romance; comedy"},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c = read_corpus(p, multilabel=True, labels=["romance", "comedy", "horror"])
    assert c.label_names == ("romance", "comedy", "horror")
    assert c.train.labels.tolist() == [[0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]]
    with pytest.raises(FileFormatError, match="line 1: unknown_label"):
        read_corpus(p, multilabel=True, labels=["romance", "comedy"])


def test_integer_labels_sorted_numerically(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc {i}", "label": i % 11}) + "\n" for i in range(22)), encoding="utf-8")
    c = read_corpus(p)
    assert c.label_names == tuple(str(i) for i in range(11))
    assert c.train.labels.tolist() == [i % 11 for i in range(22)]


# --------------------------------------------------------------------------- bad rows
BAD_CSV = [
    (3, "empty_text"),
    (4, "missing_label"),
    (7, "field_count"),
    (9, "missing_label"),  # multi-line record starting on line 9
    (11, "unknown_label"),
    (12, "malformed_csv"),
]
BAD_JSONL = [
    (2, "empty_text"),
    (3, "missing_label"),
    (4, "malformed_json"),
    (6, "not_an_object"),
    (7, "bad_text"),
    (8, "unknown_label"),
]


@pytest.mark.parametrize(
    "name, expected, good_lines",
    [("bad.csv", BAD_CSV, [2, 5, 13]), ("bad.jsonl", BAD_JSONL, [1, 9])],
    ids=["csv", "jsonl"],
)
def test_bad_rows_raise_and_skip(name, expected, good_lines):
    path = DATA / name
    with pytest.raises(FileFormatError) as exc:
        read_corpus(path, labels=["pos", "neg"])
    msg = str(exc.value)
    for line, kind in expected:
        assert f"line {line}: {kind}" in msg
    assert "on_error='skip'" in msg
    c = read_corpus(path, labels=["pos", "neg"], on_error="skip")
    assert [(p.line, p.kind) for p in c.report.problems] == expected
    assert c.report.n_skipped == len(expected)
    assert c.report.n_documents == len(good_lines) == c.train.n_docs
    assert c.report.n_records == len(good_lines) + len(expected)
    assert c.train_lines.tolist() == good_lines
    assert c.label_names == ("pos", "neg")
    assert str(c.report).count("line ") >= len(expected)
    # without labels=, 'meh' is a valid new class
    c2 = read_corpus(path, on_error="skip")
    assert "meh" in c2.label_names
    assert [p.kind for p in c2.report.problems] == [k for _, k in expected if k != "unknown_label"]


def test_multiline_field_good_record_kept():
    c = read_corpus(DATA / "bad.csv", labels=["pos", "neg"], on_error="skip")
    assert docs(c, c.train)[1] == ["multi", "line", ",", "fine"]


def test_raise_lists_at_most_ten(tmp_path):
    p = tmp_path / "many.csv"
    p.write_text("text,label\n" + "".join(",pos\n" for _ in range(25)) + "ok,pos\n", encoding="utf-8")
    with pytest.raises(FileFormatError) as exc:
        read_corpus(p)
    msg = str(exc.value)
    assert "25 bad record(s)" in msg and "line 11: empty_text" in msg and "line 12:" not in msg
    assert "and 15 more" in msg
    c = read_corpus(p, on_error="skip")
    assert [q.line for q in c.report.problems] == list(range(2, 27)) and c.train.n_docs == 1


def test_latin1():
    path = DATA / "latin1.csv"
    c = read_corpus(path, encoding="latin-1")
    d = docs(c, c.train)
    assert d[0][0] == "café" and "très" in d[1] and "naïve" in d[3] and "résumé" in d[4]
    assert c.train_lines.tolist() == [2, 3, 4, 5, 6, 8]
    with pytest.raises(FileFormatError) as exc:
        read_corpus(path)
    msg = str(exc.value)
    for line in (2, 3, 5, 7):  # line 7: bad bytes on the second line of the record starting on 6
        assert f"line {line}: undecodable" in msg
    assert "line 4" not in msg
    s = read_corpus(path, on_error="skip")
    assert [(p.line, p.kind) for p in s.report.problems] == [(2, "undecodable"), (3, "undecodable"), (5, "undecodable"), (7, "undecodable")]
    assert s.train_lines.tolist() == [4, 8]


def test_latin1_jsonl(tmp_path):
    p = tmp_path / "l.jsonl"
    lines = ['{"text": "fine", "label": "a"}', '{"text": "caf\u00e9", "label": "b"}', '{"text": "ok", "label": "a"}']
    p.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(FileFormatError, match="line 2: undecodable"):
        read_corpus(p)
    assert docs(read_corpus(p, encoding="latin-1"), read_corpus(p, encoding="latin-1").train)[1] == ["café"]


def test_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(b"\xef\xbb\xbftext,label\r\n\r\nGood one,pos\r\n\"two\r\nlines\",neg\r\n   \r\nlast,neg\r\n")
    c = read_corpus(p)
    assert docs(c, c.train) == [["good", "one"], ["two", "lines"], ["last"]]
    assert c.train_lines.tolist() == [3, 4, 7]


def test_header_and_argument_errors(tmp_path):
    with pytest.raises(FileFormatError, match="no column 'body'"):
        read_corpus(REVIEWS_CSV, text_column="body")
    empty = tmp_path / "e.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(FileFormatError):
        read_corpus(empty)
    only_bad = tmp_path / "b.csv"
    only_bad.write_text("text,label\n,x\n", encoding="utf-8")
    with pytest.raises(FileFormatError, match="no valid document"):
        read_corpus(only_bad, on_error="skip")
    for kw in [dict(on_error="ignore"), dict(min_count=0), dict(max_vocab=0), dict(encoding="nope"),
               dict(labels=["a", "a"]), dict(labels="pos"), dict(seed=-1), dict(test_fraction=-0.1)]:
        with pytest.raises(InvalidOptionError):
            read_corpus(REVIEWS_CSV, **kw)


def test_reserved_tokens_from_custom_tokenizer_are_unknown(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("text,label\n<pad> <unk> word,a\nword,b\n", encoding="utf-8")
    c = read_corpus(p, tokenizer=str.split)
    assert c.train.tokens[0, :3].tolist() == [UNK_ID, UNK_ID, c.word_index["word"]]
    assert c.vocab == (PAD, UNK, "word")
    # the default tokenizer splits the angle brackets off
    d = read_corpus(p)
    assert "pad" in d.vocab and "<" in d.vocab


# --------------------------------------------------------------------------- hypothesis round trip
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéüßø", min_size=1, max_size=6)
PUNCT = st.sampled_from(list(",.!?;:\"'()-"))
TOKEN = st.one_of(WORD, WORD, PUNCT)
DOC = st.tuples(
    st.lists(TOKEN, min_size=1, max_size=8),
    st.lists(st.sampled_from([" ", "  ", "\n", "\t", " \r\n "]), min_size=8, max_size=8),
    st.sampled_from(["pos", "neg", "mixed, really", 'say "hi"']),
)


def _join(tokens, seps):
    # separators between tokens; a leading/trailing separator must not make the text blank-ended
    return "".join(t + (seps[i] if i < len(tokens) - 1 else "") for i, t in enumerate(tokens))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=st.lists(DOC, min_size=1, max_size=12))
def test_roundtrip_random_corpora(tmp_path, corpus):
    texts = [_join(toks, seps) for toks, seps, _ in corpus]
    labels = [lab for _, _, lab in corpus]
    expected = [list(toks) for toks, _, _ in corpus]

    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "label"])
    for t, lab in zip(texts, labels):
        w.writerow([t, lab])
    pc = tmp_path / "h.csv"
    pc.write_text(buf.getvalue(), encoding="utf-8", newline="")
    pj = tmp_path / "h.jsonl"
    pj.write_text("".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in zip(texts, labels)), encoding="utf-8")

    results = [read_corpus(pc), read_corpus(pj)]
    for c in results:
        assert docs(c, c.train) == expected
        assert [c.label_names[k] for k in c.train.labels] == labels
        assert c.label_names == tuple(sorted(set(labels)))
        assert c.report.problems == ()
    a, b = results
    np.testing.assert_array_equal(a.train.tokens, b.train.tokens)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    # each CSV record starts where the previous one ended (+ its newlines)
    starts = [2]
    for t in texts[:-1]:
        starts.append(starts[-1] + 1 + t.count("\n") + t.count("\r") - t.count("\r\n"))
    assert a.train_lines.tolist() == starts
    assert b.train_lines.tolist() == list(range(1, len(texts) + 1))


def test_review_regressions_swallowed_lines_and_duplicate_keys(tmp_path):
    csv_path = tmp_path / "q.csv"
    csv_path.write_text('text,label\n"good movie,pos\nbad film,neg\nok one,pos\nfine,neg"x,pos\nlast,neg\n')
    corpus = read_corpus(csv_path, on_error="skip")
    messages = " ".join(p.message for p in corpus.report.problems)
    assert "lines 2-5" in messages
    jsonl = tmp_path / "dup.jsonl"
    jsonl.write_text('{"text": "a b", "label": "x", "label": "y"}\n{"text": "c d", "label": "x"}\n')
    corpus = read_corpus(jsonl, on_error="skip")
    assert [p.line for p in corpus.report.problems] == [1]
    assert "appears twice" in corpus.report.problems[0].message


# --------------------------------------------------------------------------- review 2 regressions
def test_stray_quote_swallowing_rows_is_kept_and_reported(tmp_path):
    p = tmp_path / "stray.csv"
    p.write_text('text,label\n"oops,neg\ngood movie,pos\nbad",neg\nfine,pos\n', encoding="utf-8")
    for kw in ({}, {"labels": ["pos", "neg"]}):
        with pytest.warns(UserWarning, match=r"stray.csv: 1 record\(s\) hold quoted fields whose lines read as rows"):
            c = read_corpus(p, **kw)
        assert c.report.problems == () and c.train_lines.tolist() == [2, 5]  # nothing dropped
        assert [(q.line, q.kind) for q in c.report.suspects] == [(2, "rows_in_field")]
        assert "lines 2-4" in c.report.suspects[0].message and "suspect" in str(c.report)
    # no line in between: the two merged rows are still flagged
    q = tmp_path / "stray2.csv"
    q.write_text('text,label\n"oops,neg\nbad",neg\nfine,pos\n', encoding="utf-8")
    with pytest.warns(UserWarning):
        assert [x.line for x in read_corpus(q).report.suspects] == [2]
    # a file whose rows put a space before the label: swallowed rows written so are flagged too,
    # and prose with that spacing in a file that does not use it is not (the 'ok' case below)
    sp = tmp_path / "spaced.csv"
    sp.write_text('text, label\n"oops, neg\ngood movie, pos\nbad", neg\nfine, pos\nmeh, neg\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="stray quote"):
        c = read_corpus(sp, test_fraction=0)
    assert [(q.line, q.kind) for q in c.report.suspects] == [(2, "rows_in_field")]
    assert "'oops, neg'" in c.report.suspects[0].message
    assert c.report.problems == () and c.train_lines.tolist() == [2, 5, 6]
    # multi-line text that reads like rows (a list of counts, a decimal comma, label-first files)
    # is real data: kept, whatever the flag says
    for body in ('text,label\n"Items bought:\napples,2\npears",1\nfine,2\n',
                 'label,text\n5,"Pros:\n5, would buy again"\n1,bad\n'):
        r = tmp_path / "real.csv"
        r.write_text(body, encoding="utf-8")
        with pytest.warns(UserWarning):
            c = read_corpus(r, test_fraction=0)
        assert c.report.problems == () and c.train.n_docs == 2
    # text whose lines do not read as rows raises no flag
    ok = tmp_path / "ok.csv"
    ok.write_text('text,label\n"line one\nline two, still",pos\n"pos\nneg, pos",neg\nfine,pos\n', encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = read_corpus(ok)
    assert c.report.problems == () and c.report.suspects == () and c.train_lines.tolist() == [2, 4, 6]
    assert docs(c, c.train)[:2] == [["line", "one", "line", "two", ",", "still"], ["pos", "neg", ",", "pos"]]


def test_a_suspect_record_that_is_also_bad_is_reported_once_and_nul_text_is_bad(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text('text,label\n"oops,neg\ngood,pos\nbad",\nfine,pos\nok,neg\n', encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dropped record is not also announced as kept
        c = read_corpus(p, on_error="skip", test_fraction=0)
    assert [(q.line, q.kind) for q in c.report.problems] == [(2, "missing_label")] and c.report.suspects == ()
    n = tmp_path / "nul.csv"
    n.write_text('text,label\na\x00b,pos\nfine,neg\n', encoding="utf-8")
    c = read_corpus(n, on_error="skip", test_fraction=0)
    assert [(q.line, q.kind) for q in c.report.problems] == [(2, "bad_text")] and "\x00" not in "".join(c.vocab)


def test_duplicate_header_column(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("text,label,text\na,pos,SECOND\nb,neg,OTHER\n", encoding="utf-8")
    with pytest.raises(FileFormatError, match=r"line 1: the CSV header has the column 'text' more than once"):
        read_corpus(p)
    # a repeated column that is not read loses nothing
    q = tmp_path / "extra.csv"
    q.write_text("text,label,x,x\na,pos,1,2\n", encoding="utf-8")
    assert read_corpus(q).train.n_docs == 1


def test_text_column_equal_to_label_column():
    with pytest.raises(InvalidOptionError, match=r"'text_column' and 'label_column' are both 'text'"):
        read_corpus(REVIEWS_CSV, label_column="text")


def test_deeply_nested_json_is_a_bad_row(tmp_path):
    deep = "[" * 20000 + "]" * 20000
    good = json.dumps({"text": "a", "label": "x"}) + "\n"
    cases = [
        ("deep.jsonl", good + deep + "\n", 2, "malformed_json"),
        ("deep_label.jsonl", good + json.dumps({"text": "b", "label": deep}) + "\n", 2, "bad_label"),
        ("deep_label.csv", f'text,label\na,x\nb,"{deep}"\n', 3, "bad_label"),
    ]
    for name, content, line, kind in cases:
        p = tmp_path / name
        p.write_text(content, encoding="utf-8")
        with pytest.raises(FileFormatError, match=f"line {line}: {kind}: .*nested too deeply"):
            read_corpus(p, multilabel=True)
        c = read_corpus(p, multilabel=True, on_error="skip")
        assert [(q.line, q.kind) for q in c.report.problems] == [(line, kind)] and c.train.n_docs == 1


@pytest.mark.parametrize("encoding", ["base64", "rot13", "hex", None])
def test_non_text_encoding(encoding):
    with pytest.raises(InvalidOptionError, match=rf"argument 'encoding': got {encoding!r}, expected .*text encoding"):
        read_corpus(REVIEWS_CSV, encoding=encoding)


# --------------------------------------------------------------------------- reading with a model's vocabulary
def _model_for(corpus, *, labels=None, lowercase=True, tokenizer="default", seed=0):
    """A random GRU classifier over ``corpus``'s vocabulary, with the metadata train_classifier
    records for a corpus (so read_corpus(model=...) and the checks see a corpus-trained model)."""
    import fastfp

    V, C = len(corpus.vocab), len(corpus.label_names)
    params = fastfp.RNNParams.random("gru", 6, 4, seed=seed)
    rng = np.random.default_rng(seed)
    meta = {"task": {"name": "corpus", "params": {
        "label_names": list(labels or corpus.label_names), "lowercase": lowercase, "multilabel": False,
        "tokenizer": tokenizer, "source": "reviews.csv"}}}
    return fastfp.Model(params, rng.normal(size=(V, 4)), rng.normal(size=(C, 6)), vocab=corpus.vocab, metadata=meta)


def test_vocab_argument_maps_words_to_the_given_ids():
    built = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=0)
    shuffled = tuple(np.random.default_rng(3).permutation(built.vocab[:-5]))  # 5 words missing, <unk> kept
    c = read_corpus(REVIEWS_CSV, vocab=shuffled)
    assert c.vocab == shuffled and c.train.vocab == shuffled
    texts, _ = texts_and_labels(REVIEWS_CSV)
    known = set(shuffled)
    expected = [[w if w in known and w != PAD else UNK for w in default_tokenize(t.lower())] for t in texts]
    assert docs(c, c.train) == expected  # the oracle: tokenise and look the words up by hand
    n_unk = sum(d.count(UNK) for d in expected)
    assert c.report.n_unk_train == n_unk > 0
    assert c.unknown_fraction == pytest.approx(n_unk / sum(map(len, expected)))
    assert c.unk_id == shuffled.index(UNK) and c.pad_id == shuffled.index(PAD)


def test_vocab_without_unk_names_the_missing_words():
    with pytest.raises(InvalidOptionError, match=r"argument 'vocab'.*no '<unk>'.*lacks"):
        read_corpus(REVIEWS_CSV, vocab=("<pad>", "the", "was"))
    with pytest.raises(InvalidOptionError, match="min_count"):
        read_corpus(REVIEWS_CSV, vocab=("<pad>", "<unk>"), min_count=2)
    with pytest.raises(InvalidOptionError, match="more than once"):
        read_corpus(REVIEWS_CSV, vocab=("<unk>", "a", "a"))


def test_model_argument_reads_as_the_model_was_trained():
    trained = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=0, labels=["pos", "neutral", "neg"])
    model = _model_for(trained)
    other = read_corpus(REVIEWS_CSV, test_fraction=0.3, seed=5)  # another split: another vocabulary order
    assert other.vocab != trained.vocab and len(other.vocab) != 0
    c = read_corpus(REVIEWS_CSV, model=model)
    assert c.vocab == trained.vocab and c.label_names == ("pos", "neutral", "neg")
    # every document reads to the same ids as in the training read (the oracle: the training split)
    same = {int(line): list(trained.train.tokens[b, : trained.train.lengths[b]])
            for b, line in enumerate(trained.train_lines)}
    for b, line in enumerate(c.train_lines):
        if int(line) in same:
            assert list(c.train.tokens[b, : c.train.lengths[b]]) == same[int(line)]
    with pytest.raises(InvalidOptionError, match="argument 'labels'"):
        read_corpus(REVIEWS_CSV, model=model, labels=["neg", "neutral", "pos"])
    with pytest.raises(InvalidOptionError, match="argument 'lowercase'"):
        read_corpus(REVIEWS_CSV, model=model, lowercase=False)
    with pytest.raises(InvalidOptionError, match="custom tokenizer"):
        read_corpus(REVIEWS_CSV, model=_model_for(trained, tokenizer="custom"))
    with pytest.raises(InvalidOptionError, match="give one or the other"):
        read_corpus(REVIEWS_CSV, model=model, vocab=trained.vocab)


def test_read_records_tokenizer_and_vocabulary_origin():
    c = read_corpus(REVIEWS_CSV, tokenizer=str.split)
    assert c.train.params["tokenizer"] == "custom" and c.train.params["vocab"] == "built"
    assert read_corpus(REVIEWS_CSV).train.params["tokenizer"] == "default"


def test_predictions_refuse_data_of_another_vocabulary_or_label_order():
    from fastfp.analysis import order_invariance
    from fastfp.train import accuracy, predict

    trained = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=0)
    model = _model_for(trained)
    other = read_corpus(REVIEWS_CSV, test_fraction=0.3, seed=5)
    assert other.vocab != trained.vocab
    for fn in (predict, accuracy, order_invariance):
        with pytest.raises(InvalidOptionError, match="vocabulary is not the model's"):
            fn(model, other.train)
    # remapped by word, the same documents give the model's own predictions (oracle: the read with model=)
    own = read_corpus(REVIEWS_CSV, model=model, test_fraction=0.3, seed=5)
    np.testing.assert_array_equal(predict(model, other.train.with_vocab(model.vocab)), predict(model, own.train))
    relabelled = read_corpus(REVIEWS_CSV, vocab=model.vocab, labels=list(reversed(trained.label_names)))
    with pytest.raises(InvalidOptionError, match="labels"):
        accuracy(model, relabelled.train)


def test_with_vocab_moves_ids_and_evidence_by_word():
    from fastfp.tasks import categorical

    d = categorical(20, n_classes=3, length=8, seed=0)  # vocab w0 w1 w2 the
    target = ("the", "x", "w2", "w0", "w1", "<unk>")
    r = d.with_vocab(target)
    words = lambda data: [[data.vocab[i] for i in data.tokens[b, : data.lengths[b]]] for b in range(data.n_docs)]  # noqa: E731
    assert words(r) == words(d)
    for j, w in enumerate(d.vocab):
        np.testing.assert_array_equal(r.evidence[target.index(w)], d.evidence[j])
    np.testing.assert_array_equal(r.scores(), d.scores())
    assert r.params["remapped_unknown_tokens"] == 0
    r2 = d.with_vocab(("w0", "the", "<unk>"))
    assert r2.params["remapped_unknown_tokens"] == int(np.isin(d.tokens, [1, 2]).sum())
    with pytest.raises(InvalidOptionError, match="lacks the words"):
        d.with_vocab(("w0", "the"))


def test_csv_field_longer_than_the_csv_module_limit(tmp_path):
    import csv as csv_module

    long_text = "word " * 30000  # 150000 characters: over csv's default 131072
    p = tmp_path / "long.csv"
    p.write_text(f'text,label\n"{long_text}",a\nshort one,b\n')
    before = csv_module.field_size_limit()
    c = read_corpus(p, max_length=50)
    assert csv_module.field_size_limit() == before
    assert c.train.lengths.tolist() == [50, 2] and c.report.n_truncated == 1


def test_tokenizer_failures_name_the_record_line(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("text,label\nfine text,a\nboom,b\n")
    with pytest.raises(InvalidOptionError, match=r"tokenizer.*ZeroDivisionError.*line 3"):
        read_corpus(p, tokenizer=lambda s: s.split() if s != "boom" else 1 / 0)
    with pytest.raises(ArgumentTypeError, match=r"tokenizer.*line 2"):
        read_corpus(p, tokenizer=lambda s: 5)


def test_row_messages_name_the_encoding_and_json_arrays(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"text,label\ngood,a\ncaf\xe9,b\n")
    with pytest.raises(FileFormatError, match=r"line 3: undecodable: bytes that do not decode as 'utf-8' \(pass encoding="):
        read_corpus(p)
    j = tmp_path / "a.json"
    j.write_text('[{"text": "a", "label": "x"}]\n')
    with pytest.raises(FileFormatError, match="a JSON array of objects is not read"):
        read_corpus(j)
    k = tmp_path / "k.jsonl"
    k.write_text('{"label": "x"}\n{"text": "a", "label": "x"}\n{"text": "a\n')
    with pytest.raises(FileFormatError) as e:
        read_corpus(k)
    assert "line 1: empty_text: no 'text' value" in str(e.value) and "at at" not in str(e.value)


def test_encode_texts_reads_new_text_as_read_corpus_does():
    from fastfp import encode_texts
    from fastfp.train import accuracy, predict, train_classifier

    trained = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=0)
    model = _model_for(trained)
    texts, _ = texts_and_labels(REVIEWS_CSV)
    d = encode_texts(texts + ["zzz unseen words", "<pad> here"], model=model)
    ref = read_corpus(REVIEWS_CSV, model=model).train  # file order, same vocabulary
    n = len(texts)
    for b in range(n):
        assert list(d.tokens[b, : d.lengths[b]]) == list(ref.tokens[b, : ref.lengths[b]])
    assert d.vocab == model.vocab and (d.labels == -1).all() and d.params["unlabelled"]
    expected = [w if w in model.vocab else UNK for w in ("zzz", "unseen", "words")]
    assert [d.vocab[i] for i in d.tokens[n, : d.lengths[n]]] == expected
    all_tokens = [w for t in texts + ["zzz unseen words", "<pad> here"] for w in default_tokenize(t.lower())]
    assert d.params["n_unknown_tokens"] == sum(w not in model.vocab or w == PAD for w in all_tokens)
    assert d.tokens[n + 1, 0] == d.vocab.index(UNK)  # a literal <pad> is a word, never padding
    assert (d.tokens[:, :][~d.mask()] == d.vocab.index(PAD)).all()
    np.testing.assert_array_equal(predict(model, d)[:n], predict(model, ref))
    with pytest.raises(InvalidOptionError, match="no labels to score"):
        accuracy(model, d)
    with pytest.raises(InvalidOptionError, match="cannot train"):
        train_classifier(d, steps=1)
    with pytest.raises(InvalidOptionError, match="item 1 .* has no tokens"):
        encode_texts(["fine", "  "], model=model)
    with pytest.raises(InvalidOptionError, match="give one"):
        encode_texts(["fine"])
    with pytest.raises(ArgumentTypeError, match="item 0 is a int"):
        encode_texts([3], model=model)


def test_numeric_label_spellings_of_one_number_warn(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("text,label\na b,1\nc d,01\ne f,1.0\ng h,2\n")
    with pytest.warns(UserWarning, match="spell the same number") as rec:
        c = read_corpus(p)
    assert all(f"'{x}'" in str(rec[0].message) for x in ("01", "1", "1.0")) and "'2'" not in str(rec[0].message)
    assert sorted(c.label_names) == ["01", "1", "1.0", "2"]  # still read as written: nothing merged silently
    q = tmp_path / "ok.csv"
    q.write_text("text,label\na b,1\nc d,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_corpus(q)


def test_training_refuses_eval_data_of_another_label_order(tmp_path):
    pytest.importorskip("torch")
    from fastfp.train import train_classifier

    tr = read_corpus(REVIEWS_CSV, test_fraction=0.25, seed=0)
    ev = read_corpus(REVIEWS_CSV, vocab=tr.vocab, labels=list(reversed(tr.label_names)))
    with pytest.raises(fastfp_errors.ShapeError, match=r"argument 'eval_data': its labels are"):
        train_classifier(tr.train, eval_data=ev.train, steps=1, hidden_size=4)


def test_encode_texts_of_a_multilabel_task_model_gives_labels_per_output():
    import fastfp
    from fastfp import encode_texts
    from fastfp.train import predict

    d = fastfp.tasks.multilabel(20, n_labels=3, length=10, seed=0)
    p = fastfp.RNNParams.random("gru", 5, len(d.vocab), seed=0)
    meta = {"task": {"name": "multilabel", "multilabel": True, "params": {"n_labels": 3}}}
    m = fastfp.Model(p, np.eye(len(d.vocab)), np.random.default_rng(0).normal(size=(3, 5)), vocab=d.vocab, metadata=meta)
    e = encode_texts([" ".join(d.vocab[:3])], model=m)
    assert e.labels.shape == (1, 3) and predict(m, e).shape == (1, 3) == predict(m, d)[:1].shape
    with pytest.raises(ArgumentTypeError, match="returned a str on text 0"):
        encode_texts(["a b"], model=m, tokenizer=lambda s: s)


def test_jsonl_with_other_keys_names_the_keys_it_has(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"review": f"good {i}", "sentiment": "pos"}) + "\n" for i in range(30)))
    with pytest.raises(FileFormatError, match=r"no record has the key 'text' or 'label' \(keys: 'review', 'sentiment'\); "
                                              r"pass text_column=\.\.\. / label_column=\.\.\.$"):
        read_corpus(path)
    c = read_corpus(path, text_column="review", label_column="sentiment")
    assert c.train.n_docs == 30


def test_a_pretty_printed_json_array_and_utf16_say_what_to_do(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}], indent=2))
    with pytest.raises(FileFormatError, match="opens a JSON array spread over lines; JSON Lines holds one object per line"):
        read_corpus(arr, format="jsonl")
    u16 = tmp_path / "u.csv"
    u16.write_bytes("text,label\nCafé good,pos\nbad,neg\n".encode("utf-16"))
    with pytest.raises(FileFormatError, match=r"starts with a UTF-16 byte-order mark \(ff fe\).*pass encoding='utf-16'"):
        read_corpus(u16)
    assert read_corpus(u16, encoding="utf-16").train.n_docs == 2


def test_labels_differing_only_in_case_are_warned(tmp_path):
    path = tmp_path / "case.csv"
    path.write_text("text,label\ngood,pos\nbad,Neg\nfine,POS\nawful,neg\n")
    with pytest.warns(UserWarning, match=r"labels 'Neg' / 'neg'; 'POS' / 'pos' differ only in case"):
        c = read_corpus(path)
    assert len(c.label_names) == 4


def test_repr_summarises_a_large_vocabulary_and_its_problems(tmp_path):
    # 4000 distinct training words and 300 bad rows: the repr names their counts instead of listing them.
    path = tmp_path / "big.csv"
    rows = [f"word{i} other{i},{'ab'[i % 2]}" for i in range(2500)] + [",a"] * 300
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus = read_corpus(path, on_error="skip", test_fraction=0.2, seed=0)
    text = repr(corpus)
    # the vocabulary is built from the training split: two new words per training document
    assert len(corpus.vocab) == 2 + 2 * corpus.train.n_docs and len(corpus.report.problems) == 300
    assert len(text) < 1500, text
    assert f"vocab=<{len(corpus.vocab)} words ('<pad>', '<unk>'," in text
    assert "300 skipped, 300 problems" in text
    assert "word2499" not in text
