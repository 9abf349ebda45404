"""fastfp.report: the study's figures (content checked against NumPy) and the self-contained HTML."""

import base64
import os
import re
import struct
import subprocess
import sys

import matplotlib  # the 'test' extra installs it: these tests must run, not skip
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

import fastfp
from fastfp import report as rp
from fastfp.errors import ArgumentTypeError, InvalidOptionError, MissingDependencyError, ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes):
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _plane_points(rng, P=40, N=6):
    """Points on a 2-D plane in R^N (plus tiny noise), with q spanning many decades."""
    basis = np.linalg.qr(rng.standard_normal((N, 2)))[0].T
    coords = rng.standard_normal((P, 2)) * [3.0, 1.0]
    x = coords @ basis + 1e-3 * rng.standard_normal((P, N))
    q = 10.0 ** rng.uniform(-20, -4, size=P)
    return x, q


def _first_scatter(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)][0]


# ----------------------------------------------------------------------------- (a) PC space
def test_fixed_points_figure_scatters_every_point_on_the_pcs(rng):
    x, q = _plane_points(rng)
    fig = rp.fixed_points_figure(x, q=q)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 2  # PC1-PC2 and PC1-PC3 for N >= 3
    # Independent PCA: SVD of the centred points; coordinates agree up to the sign of each axis.
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:3].T
    for ax, (i, j) in zip(axes, [(0, 1), (0, 2)]):
        off = _first_scatter(ax).get_offsets()
        assert off.shape == (len(x), 2)
        for col, k in ((0, i), (1, j)):
            assert np.allclose(np.abs(off[:, col]), np.abs(ref[:, k]), atol=1e-9)
        assert ax.get_xlabel().startswith(f"PC{i + 1} (") and ax.get_ylabel().startswith(f"PC{j + 1} (")
        # Colour = log10 q.
        np.testing.assert_allclose(_first_scatter(ax).get_array(), np.log10(q))
    assert any("log10 q" in ax.get_ylabel() for ax in fig.axes)


def test_fixed_points_figure_from_fixedpoints_with_trajectories_and_readout(rng):
    params = fastfp.RNNParams.random("lstm", hidden_size=4, input_size=3, seed=1)
    xs = rng.standard_normal((10, 12, 3))
    states = fastfp.rollout(params, None, xs)  # (10, 12, 8): N = 2H
    fp = fastfp.find_fixed_points(params, fastfp.sample_states(states, 16, noise=0.3, seed=0), np.zeros(3))
    mask = np.ones((10, 12), bool)
    mask[:, 9:] = False
    readout = rng.standard_normal((3, 4))  # acts on h, the first half of [h, c]
    fig = rp.fixed_points_figure(fp, states=states, state_mask=mask, labels=np.arange(10) % 3, readout=readout,
                                 highlight=fp.x[:2], n_trajectories=5, point_label="roots")
    ax = fig.axes[0]
    assert len(_first_scatter(ax).get_offsets()) == len(fp)
    # 5 trajectories: a line and an end marker each, the line ending at the last valid step.
    lines = ax.get_lines()
    assert len(lines) == 10 and len(lines[0].get_xdata()) == 9
    arrows = [t for t in ax.texts if t.get_text().startswith("readout")]
    assert [t.get_text() for t in arrows] == ["readout 0", "readout 1", "readout 2"]
    assert len([a for a in ax.texts if a.get_text() == "" and a.arrow_patch is not None]) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{len(fp)} roots", "2 exact fixed points"]


def test_readout_arrows_point_along_the_projected_readout(rng):
    x, q = _plane_points(rng, N=4)
    W = rng.standard_normal((2, 4))
    fig = rp.fixed_points_figure(x, q=q, readout=W)
    ax = fig.axes[0]
    xc = x - x.mean(0)
    vt = np.linalg.svd(xc, full_matrices=False)[2]
    off = _first_scatter(ax).get_offsets()
    sign = np.sign([off[:, k] @ (xc @ vt[k]) for k in (0, 1)])  # the figure's PCA may flip an axis
    arrows = [a for a in ax.texts if a.get_text() == ""]
    assert len(arrows) == 2
    for c, ann in enumerate(arrows):
        end = np.array(ann.xy)
        ref = (W[c] @ vt[:2].T) * sign
        cos = end @ ref / np.linalg.norm(end) / np.linalg.norm(ref)
        assert cos == pytest.approx(1.0, abs=1e-9)


def test_fixed_points_figure_edge_cases(rng):
    x, q = _plane_points(rng, N=2)
    q[0] = 0.0  # an exact root: log scale floor, not -inf
    fig = rp.fixed_points_figure(x, q=q)
    assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) == 1  # N = 2: one panel
    assert np.isfinite(_first_scatter(fig.axes[0]).get_array()).all()
    fig = rp.fixed_points_figure(x)  # no q: plain points, no colour bar
    assert len(fig.axes) == 1
    x[3] = np.nan  # non-finite rows dropped
    assert len(_first_scatter(rp.fixed_points_figure(x).axes[0]).get_offsets()) == len(x) - 1


@pytest.mark.parametrize("kwargs, error, text", [
    ({"basis": "pcs"}, InvalidOptionError, "'basis'"),
    ({"basis": "states"}, InvalidOptionError, "'states'"),
    ({"labels": np.zeros(3, int)}, InvalidOptionError, "'labels'"),
    ({"states": np.zeros((2, 3, 5))}, ShapeError, "'states'"),
    ({"states": np.zeros((2, 3, 6)), "state_mask": np.ones((2, 4), bool)}, ShapeError, "'state_mask'"),
    ({"states": np.zeros((2, 3, 6)), "labels": np.zeros(3, int)}, ShapeError, "'labels'"),
    ({"readout": np.zeros((3, 7))}, ShapeError, "'readout'"),
    ({"highlight": np.zeros((3, 5))}, ShapeError, "'highlight'"),
    ({"q": np.ones(3)}, ShapeError, "'q'"),
    ({"n_trajectories": -1}, InvalidOptionError, "'n_trajectories'"),
])
def test_fixed_points_figure_errors(rng, kwargs, error, text):
    x, _ = _plane_points(rng)
    with pytest.raises(error, match=text):
        rp.fixed_points_figure(x, **kwargs)


def test_fixed_points_figure_on_a_given_pca(rng):
    x, q = _plane_points(rng)
    other = rng.standard_normal((50, 6)) * [4, 3, 2, 1, 1, 1]
    res = fastfp.analysis.pca(other)
    fig = rp.fixed_points_figure(x, q=q, basis=res)
    np.testing.assert_allclose(_first_scatter(fig.axes[0]).get_offsets(), res.transform(x)[:, :2])
    np.testing.assert_allclose(_first_scatter(fig.axes[1]).get_offsets(), res.transform(x)[:, [0, 2]])
    assert "given PCA" in fig._suptitle.get_text()
    with pytest.raises(ShapeError, match="'basis'"):
        rp.fixed_points_figure(x, basis=fastfp.analysis.pca(other[:, :5]))
    with pytest.raises(InvalidOptionError, match="'basis'"):
        rp.fixed_points_figure(x, basis=3)


def test_fixed_points_figure_needs_two_states():
    with pytest.raises(ShapeError, match="at least 2"):
        rp.fixed_points_figure(np.ones((1, 4)))
    with pytest.raises(ShapeError, match="'points'"):
        rp.fixed_points_figure(np.ones(4))


# ----------------------------------------------------------------------------- (b) eigenvalues
def _unit_circles(ax):
    out = []
    for line in ax.get_lines():
        xd, yd = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if len(xd) > 100 and np.allclose(np.hypot(xd, yd), 1.0):
            out.append(line)
    return out


def test_eigenvalue_figure_draws_the_spectra_and_the_unit_circle(rng):
    lam = rng.uniform(0.1, 0.9, (5, 6)) * np.exp(1j * rng.uniform(-3, 3, (5, 6)))
    lam[0, 0], lam[2, 1] = 1.05, -1.2 + 0.1j  # two growing modes
    fig = rp.eigenvalue_figure(lam)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(_unit_circles(ax)) == 1
        inside, outside = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(inside.get_offsets()) == 28 and len(outside.get_offsets()) == 2
        got = np.sort_complex(np.concatenate([inside.get_offsets(), outside.get_offsets()]) @ [1, 1j])
        np.testing.assert_allclose(got, np.sort_complex(lam.ravel()))
        assert ax.get_xlabel() == "Re λ" and ax.get_ylabel() == "Im λ"
    assert fig.axes[1].get_xlim() == pytest.approx((0.75, 1.25))


def test_eigenvalue_figure_from_fixedpoints_and_subsampling(rng):
    params = fastfp.RNNParams.random("gru", hidden_size=5, input_size=2, seed=0)
    fp = fastfp.find_fixed_points(params, 0.3 * rng.standard_normal((12, 5))).decompose(params)
    fig = rp.eigenvalue_figure(fp, max_points=4)
    n = sum(len(c.get_offsets()) for c in fig.axes[0].collections if isinstance(c, PathCollection))
    assert n == 4 * 5 and "4 of 12 points" in fig.axes[0].get_title()
    with pytest.raises(InvalidOptionError, match="decompose"):
        rp.eigenvalue_figure(fastfp.find_fixed_points(params, np.zeros((2, 5))))
    with pytest.raises(ArgumentTypeError, match="'eigvals'"):
        rp.eigenvalue_figure(np.zeros((2, 3), int))
    with pytest.raises(ShapeError, match="'eigvals'"):
        rp.eigenvalue_figure(np.zeros((2, 3, 4)))
    with pytest.raises(InvalidOptionError, match="'zoom'"):
        rp.eigenvalue_figure(np.ones((1, 2)), zoom=0)
    with pytest.raises(InvalidOptionError, match="'max_points'"):
        rp.eigenvalue_figure(np.ones((1, 2)), max_points=0)


# ----------------------------------------------------------------------------- (c) time constants
def test_time_constants_figure_median_and_horizon(rng):
    lam = rng.uniform(0.2, 0.99, (7, 10)).astype(complex)
    lam[0, 0] = 1.0  # tau = inf: drawn at the top, not dropped
    lam[1, 0] = 1.02  # a growing mode
    fig = rp.time_constants_figure(lam, horizon=30, n_ranks=6)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "rank" in ax.get_xlabel() and "τ" in ax.get_ylabel()
    median = [ln for ln in ax.get_lines() if ln.get_label().startswith("median")][0]
    with np.errstate(divide="ignore"):
        tau = np.sort(1.0 / np.abs(np.log(np.abs(lam))), axis=1)[:, ::-1][:, :6]
    top = max(tau[np.isfinite(tau)].max(), 30) * 3
    np.testing.assert_allclose(median.get_ydata(), np.median(np.minimum(tau, top), axis=0))
    np.testing.assert_array_equal(median.get_xdata(), np.arange(1, 7))
    horizon = [ln for ln in ax.get_lines() if ln.get_label().startswith("horizon")][0]
    assert np.allclose(horizon.get_ydata(), 30)
    grows = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    assert len(grows.get_offsets()) == 1
    assert len([ln for ln in ax.get_lines() if ln.get_label().startswith("_")]) == 7  # one curve per point


def test_time_constants_figure_without_horizon_and_errors():
    lam = np.array([[0.9, 0.5]])
    ax = rp.time_constants_figure(lam).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("horizon")]
    for bad in (0, -1, np.inf, "x"):
        with pytest.raises(InvalidOptionError, match="'horizon'"):
            rp.time_constants_figure(lam, horizon=bad)
    with pytest.raises(InvalidOptionError, match="'n_ranks'"):
        rp.time_constants_figure(lam, n_ranks=0)
    with pytest.raises(InvalidOptionError, match="'max_points'"):
        rp.time_constants_figure(lam, max_points=0)


# ----------------------------------------------------------------------------- (d) explained variance
def test_explained_variance_figure_bars_are_the_pca_ratios(rng):
    x, _ = _plane_points(rng, P=60, N=6)
    states = rng.standard_normal((4, 20, 6)) * [5, 2, 1, 0.5, 0.2, 0.1]
    fig = rp.explained_variance_figure({"points": x, "states": states}, n_components=4)
    ax = fig.axes[0]
    for label, data, patches in (("points", x, ax.patches[:4]), ("states", states.reshape(-1, 6), ax.patches[4:8])):
        s = np.linalg.svd(data - data.mean(0), compute_uv=False) ** 2
        ratio = s / s.sum()
        np.testing.assert_allclose([p.get_height() for p in patches], ratio[:4], rtol=1e-10)
        cum = [ln for ln in ax.get_lines() if ln.get_label() == f"{label}: cumulative"][0]
        np.testing.assert_allclose(cum.get_ydata(), np.cumsum(ratio[:4]), rtol=1e-10)
        pr = ratio.sum() ** 2 / (ratio ** 2).sum()
        assert any(f"{label}: per component (PR {pr:.2f})" == t.get_text() for t in ax.get_legend().get_texts())
    assert len(ax.patches) == 8 and ax.get_xlabel() == "principal component"
    assert sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":") == [0.9, 0.95]


def test_explained_variance_figure_inputs_and_errors(rng):
    x, _ = _plane_points(rng)
    res = fastfp.analysis.pca(x)
    fig = rp.explained_variance_figure(res, n_components=3)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], res.explained_variance_ratio[:3])
    params = fastfp.RNNParams.random("gru", hidden_size=3, input_size=2, seed=0)
    fp = fastfp.find_fixed_points(params, rng.standard_normal((5, 3)), maxiter=0)
    assert len(rp.explained_variance_figure(fp).axes[0].patches) == 3
    with pytest.raises(InvalidOptionError, match="'sets'"):
        rp.explained_variance_figure({})
    with pytest.raises(InvalidOptionError, match="'n_components'"):
        rp.explained_variance_figure(x, n_components=0)
    with pytest.raises(ShapeError, match="sets"):
        rp.explained_variance_figure({"a": np.ones(3)})


# ----------------------------------------------------------------------------- HTML
def _small_figure():
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def _images(text):
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert len(srcs) == text.count("<img")
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in srcs if s.startswith("data:image/png;base64,")], srcs


def assert_self_contained(text):
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:|//|file:)', text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert not re.search(r"url\(", text)
    pngs, srcs = _images(text)
    assert len(pngs) == len(srcs)  # every image is an embedded PNG
    for png in pngs:
        w, h = _png_size(png)
        assert 200 <= w <= 4000 and 150 <= h <= 4000
    return pngs


def test_figure_png_is_a_png_of_the_figure_size():
    w, h = _png_size(rp.figure_png(_small_figure(), dpi=50))
    assert (w, h) == (200, 150)


def test_write_html_report_is_self_contained_and_escaped(tmp_path):
    path = tmp_path / "r.html"
    evil = '<script>alert("x")</script> & "q"'
    out = rp.write_html_report(
        path, title=f"model {evil}",
        summary_rows=[("fixed points", 7), ("participation ratio", 2.0049), (evil, evil), ("none", None)],
        figures=[("caption <b>1</b>", _small_figure()), _small_figure()],
        notes=["a note with <tags> & ampersands"],
    )
    assert out == str(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    pngs = assert_self_contained(text)
    assert len(pngs) == 2 and all(_png_size(p) == (400, 300) for p in pngs)
    assert "<script>" not in text and "<b>1</b>" not in text and "<tags>" not in text
    assert html_escape(evil) in text and "caption &lt;b&gt;1&lt;/b&gt;" in text
    assert "<th>fixed points</th><td>7</td>" in text and "<td>2.005</td>" in text and "<td>-</td>" in text
    assert "Figure 1. caption" in text and "Figure 2." not in text  # no caption, no figcaption
    assert f"fastfp {fastfp.__version__}" in text
    assert os.stat(path).st_mode & 0o044  # not mkstemp's 0600: readable by others


def html_escape(s):
    import html

    return html.escape(s)


def test_write_html_report_is_atomic(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old report")

    class Broken(Figure):
        def savefig(self, *args, **kwargs):
            raise RuntimeError("drawing failed")

    with pytest.raises(RuntimeError, match="drawing failed"):
        rp.write_html_report(path, title="t", summary_rows={"a": 1}, figures=[Broken()])
    assert path.read_text() == "old report" and sorted(os.listdir(tmp_path)) == ["r.html"]
    rp.write_html_report(path, title="t", summary_rows={"a": 1}, notes="one note")
    text = path.read_text()
    assert "<p>one note</p>" in text and sorted(os.listdir(tmp_path)) == ["r.html"]


@pytest.mark.parametrize("kwargs, error, text", [
    ({"title": 3}, ArgumentTypeError, "'title'"),
    ({"summary_rows": [("a", 1, 2)]}, ShapeError, "'summary_rows'"),
    ({"summary_rows": ["ab"]}, ShapeError, "'summary_rows'"),
    ({"figures": ["not a figure"]}, ArgumentTypeError, "'figures'"),
    ({"dpi": 5}, InvalidOptionError, "'dpi'"),
])
def test_write_html_report_errors(tmp_path, kwargs, error, text):
    args = {"title": "t", "summary_rows": []} | kwargs
    with pytest.raises(error, match=text):
        rp.write_html_report(tmp_path / "r.html", **args)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- optional dependency
def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"fastfp-rnn\[report\]"):
        rp.fixed_points_figure(np.eye(3))
    for fn in (rp.eigenvalue_figure, rp.time_constants_figure, rp.explained_variance_figure):
        with pytest.raises(MissingDependencyError, match=r"fastfp-rnn\[report\]"):
            fn(np.eye(3))


def test_no_pyplot_and_no_matplotlib_at_import():
    code = (
        "import sys, numpy as np; import fastfp, fastfp.report as rp; assert 'matplotlib' not in sys.modules; "
        "f = [rp.fixed_points_figure(np.random.default_rng(0).standard_normal((9, 4))), "
        "rp.eigenvalue_figure(np.ones((2, 3)) * 0.5), rp.time_constants_figure(np.ones((2, 3)) * 0.5, horizon=5), "
        "rp.explained_variance_figure(np.random.default_rng(1).standard_normal((9, 4)))]; "
        "import tempfile, os; d = tempfile.mkdtemp(); rp.write_html_report(os.path.join(d, 'r.html'), title='t', "
        "summary_rows={}, figures=f); print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert matplotlib.__version__  # the module under test really had matplotlib
