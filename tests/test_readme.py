"""The README's Python examples run as written (from the repository root, as a newcomer would)."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _block(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_corpus_walkthrough_runs(tmp_path, capsys):
    pytest.importorskip("torch")
    code = _block("### Your own corpus")
    # Run from the repository root (its paths are relative to it) but write the model to tmp_path.
    code = code.replace('"reviews_gru.npz"', repr(str(tmp_path / "reviews_gru.npz")))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tests/data/corpus/reviews.csv (csv, utf-8): 40 records, 40 kept")
    acc, order = map(float, out[1].split())
    assert acc > 0.5 and 0.0 <= order <= 1.0  # trained: well above the 1/3 of chance on 3 classes
    assert (tmp_path / "reviews_gru.npz").exists()
