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


def _blocks(heading: str) -> list:
    """Every ```python block of the README section that starts at ``heading`` (up to the next '## ')."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def _printed_as_documented(code: str) -> list:
    """(print line, documented output) for each print(...) followed by '# ' comment lines."""
    lines, pairs = code.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("print("):
            out = []
            for nxt in lines[i + 1:]:
                if not nxt.startswith("# "):
                    break
                out.append(nxt[2:])
            pairs.append((line, "\n".join(out)))
    return pairs


def _run(code, tmp_path, capsys, namespace=None):
    cwd = os.getcwd()
    os.chdir(ROOT)  # the README's relative paths (tests/data/...) are the checkout's
    try:
        ns = {} if namespace is None else namespace
        exec(compile(code, "README.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    return capsys.readouterr().out, ns


def test_first_analysis_prints_what_the_readme_shows(tmp_path, capsys):
    first, trained = _blocks("## A first analysis")[:2]
    first = first.replace('"/tmp/roots.npz"', repr(str(tmp_path / "roots.npz")))
    out, ns = _run(first, tmp_path, capsys)
    documented = [doc for _, doc in _printed_as_documented(first)]
    assert documented[0].startswith("FixedPoints(") and len(documented) == 3
    # printed in order; each documented block is what that print wrote
    assert out == "\n".join(documented) + "\n"
    import fastfp

    assert len(fastfp.FixedPoints.load(tmp_path / "roots.npz")) == 1
    # the large-network block continues this one ("params, h0 as in A first analysis")
    large = _blocks("## Large networks")[0]
    _run(large, tmp_path, capsys, namespace=ns)
    assert ns["top"].eigvals.shape == (len(ns["roots"]), 8) and ns["top"].converged.all() and ns["roots"].eigvals.shape[1] == 8
    exact = ns["np"].linalg.eigvals(fastfp.jacobian(ns["params"], ns["roots"].x, ns["roots"].inputs))
    exact = -ns["np"].sort(-abs(exact), axis=1)[:, :8]
    ns["np"].testing.assert_allclose(abs(ns["roots"].eigvals), exact, atol=1e-8)

    # the trained GRU's slow points span a plane: the documented ~[0.58 0.40 0.010 0.003]
    out, _ = _run(trained, tmp_path, capsys)
    share = [float(v) for v in out.strip().strip("[]").split()]
    assert share[0] == pytest.approx(0.58, abs=0.01) and share[1] == pytest.approx(0.40, abs=0.01)
    assert share[2] == pytest.approx(0.010, abs=0.002) and share[3] == pytest.approx(0.003, abs=0.001)


def test_figures_snippet_writes_its_files(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (code,) = _blocks("### The figures in Python")
    code = code.replace('"pc.png"', repr(str(tmp_path / "pc.png"))).replace('"mine.html"',
                                                                           repr(str(tmp_path / "mine.html")))
    _run(code, tmp_path, capsys)
    assert (tmp_path / "pc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "mine.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "my GRU" in html


def test_your_own_network_prints_the_documented_params(tmp_path, capsys):
    code = _blocks("## Your own network")[0]
    out, ns = _run(code, tmp_path, capsys)
    first = code.splitlines()[[i for i, c in enumerate(code.splitlines()) if c.startswith("print(model.params)")][0]]
    documented = first.split("# ", 1)[1]
    assert out.splitlines()[0] == documented
    assert str(ns["model"].params.source) in out


def test_find_hint_example_is_what_find_says(tmp_path):
    """The README's --maxiter 20 example: find's notes on stderr, as documented."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("$ fastfp -q find fastfp:data/gru64_cat3.npz -o fp20.npz"):]
    block = block[:block.index("```")].splitlines()
    args = block[0].split("$ fastfp ", 1)[1].split(" > ")[0].split()
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", "from fastfp.cli import main; main()", *args], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == block[1:], r.stderr
