"""The FixedPoints container: indexing, merging, outliers, eigen-analysis and the .npz format."""

import json

import numpy as np
import pytest

import fastfp
from fastfp import FixedPoints, Status


@pytest.fixture(scope="module")
def params():
    return fastfp.RNNParams.random("gru", 10, 3, seed=11, scale=2.0 / np.sqrt(10))


@pytest.fixture(scope="module")
def fps(params):
    h0 = np.random.default_rng(0).uniform(-0.9, 0.9, (40, 10))
    return fastfp.find_fixed_points(params, h0, np.array([0.1, -0.2, 0.3]))


def test_indexing_and_masks(fps):
    assert len(fps) == 40
    one = fps[3]
    assert isinstance(one, FixedPoints) and len(one) == 1
    np.testing.assert_array_equal(one.x[0], fps.x[3])
    sub = fps[fps.success]
    assert len(sub) == fps.success.sum() and sub.success.all()
    sl = fps[5:9]
    np.testing.assert_array_equal(sl.nit, fps.nit[5:9])
    with pytest.raises(fastfp.ShapeError, match="boolean index"):
        fps[np.ones(3, bool)]


def test_concatenate_round_trip(fps):
    joined = fastfp.concatenate([fps[:10], fps[10:]])
    for name in ("x", "x0", "inputs", "q", "status", "nit"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(fps, name))
    with pytest.raises(fastfp.InvalidOptionError, match="'parts'"):
        fastfp.concatenate([])


def _greedy_unique_bruteforce(keys, q, tol):
    order = np.argsort(q, kind="stable")
    kept = []
    removed = np.zeros(len(keys), bool)
    for i in order:
        if removed[i]:
            continue
        kept.append(i)
        removed |= np.linalg.norm(keys - keys[i], axis=1) <= tol
    return sorted(kept)


def test_unique_matches_bruteforce_oracle():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 4))
    x = np.repeat(centers, 20, axis=0) + 1e-4 * rng.normal(size=(120, 4))
    n = len(x)
    q = rng.uniform(0, 1, n)
    fp = FixedPoints(
        x=x, x0=x, inputs=np.zeros((n, 1)), fx=x, residual=np.zeros(n), q=q, grad_norm=np.zeros(n),
        status=np.zeros(n, np.int8), nit=np.zeros(n, int),
    )
    u = fp.unique(1e-2)
    assert len(u) == 6
    expected = _greedy_unique_bruteforce(np.concatenate([x, np.zeros((n, 1))], axis=1), q, 1e-2)
    np.testing.assert_array_equal(np.sort(u.q), np.sort(q[expected]))
    # the lowest-q member of each cluster is kept
    for c in range(6):
        assert q[c * 20:(c + 1) * 20].min() in u.q


def test_unique_separates_different_inputs():
    n = 4
    x = np.zeros((n, 2))
    fp = FixedPoints(
        x=x, x0=x, inputs=np.array([[0.0], [0.0], [1.0], [1.0]]), fx=x, residual=np.zeros(n), q=np.zeros(n),
        grad_norm=np.zeros(n), status=np.zeros(n, np.int8), nit=np.zeros(n, int),
    )
    assert len(fp.unique(1e-3)) == 2


def test_exclude_outliers():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(50, 3))
    x = x0.copy()
    x[7] = 1e3  # far from everything
    n = len(x)
    fp = FixedPoints(
        x=x, x0=x0, inputs=np.zeros((n, 1)), fx=x, residual=np.zeros(n), q=np.zeros(n), grad_norm=np.zeros(n),
        status=np.zeros(n, np.int8), nit=np.zeros(n, int),
    )
    for rule in ("distance", "nearest"):
        kept = fp.exclude_outliers(rule=rule)
        assert len(kept) == 49 and not np.any(np.all(kept.x == 1e3, axis=1))
    with pytest.raises(fastfp.InvalidOptionError, match="'rule'"):
        fp.exclude_outliers(rule="mahalanobis")
    with pytest.raises(fastfp.InvalidOptionError, match="'factor'"):
        fp.exclude_outliers(factor=-1)


def test_decompose_reconstructs_jacobian(params, fps):
    dec = fps[fps.success].unique(1e-6).decompose(params)
    J_ref = fastfp.jacobian(params, dec.x, dec.inputs, backend="numpy")
    np.testing.assert_allclose(dec.jacobian, J_ref, atol=1e-13)
    R, L, lam = dec.eigvecs_right, dec.eigvecs_left, dec.eigvals
    recon = np.einsum("bij,bj,bkj->bik", R, lam, L)
    np.testing.assert_allclose(recon, J_ref, atol=1e-10)
    eye = np.broadcast_to(np.eye(10), R.shape)
    np.testing.assert_allclose(np.swapaxes(L, 1, 2) @ R, eye, atol=1e-10)  # biorthonormal
    # sorted by |lambda| descending (moduli equal to 10 digits tie), same spectrum as an independent
    # eigvals call, and a conjugate pair always in the order a+bi, a-bi
    assert (np.diff(np.abs(lam), axis=1) <= 1e-10).all()
    pair = np.isclose(lam[:, :-1], np.conj(lam[:, 1:]), rtol=0, atol=1e-9) & (np.abs(lam[:, :-1].imag) > 1e-9)
    assert pair.any() and (lam[:, :-1][pair].imag > 0).all()
    for b in range(len(dec)):
        ref = np.linalg.eigvals(J_ref[b])
        dist = np.abs(lam[b][:, None] - ref[None, :])
        assert dist.min(axis=1).max() < 1e-10 and dist.min(axis=0).max() < 1e-10
    tau = dec.time_constants
    np.testing.assert_allclose(tau, -1 / np.log(np.abs(lam)))
    np.testing.assert_array_equal(dec.is_stable, np.abs(lam).max(axis=1) < 1)
    np.testing.assert_allclose(dec.input_jacobian, fastfp.input_jacobian(params, dec.x, dec.inputs, backend="numpy"),
                               atol=1e-13)


def test_equal_moduli_keep_conjugate_pairs_side_by_side_in_both_paths():
    # J = U = 0.9 * orthogonal at h = 0: every |lambda| = 0.9, conjugate pairs and real +-0.9 mixed
    rng = np.random.default_rng(4)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    p = fastfp.RNNParams("vanilla", rng.normal(size=(6, 2)), 0.9 * Q, np.zeros(6), np.zeros(6))
    fp = fastfp.find_fixed_points(p, np.zeros((1, 6)), np.zeros(2))  # h = 0 is a root: tanh(0) = 0
    np.testing.assert_array_equal(fp.x, 0.0)
    lam = fp.decompose(p).eigvals[0]
    np.testing.assert_allclose(np.abs(lam), 0.9, atol=1e-12)
    np.testing.assert_allclose(np.sort_complex(lam), np.sort_complex(np.linalg.eigvals(0.9 * Q)), atol=1e-12)
    i = 0
    while i < len(lam):  # a complex eigenvalue is followed by its conjugate
        if abs(lam[i].imag) > 1e-12:
            assert lam[i].imag > 0 and lam[i + 1] == np.conj(lam[i]), lam
            i += 2
        else:
            i += 1
    # the matrix-free top-k path orders pairs the same way (distinct moduli: its top k is unambiguous)
    rot = lambda r, a: r * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # noqa: E731
    B = np.zeros((7, 7))
    B[:2, :2], B[2:4, 2:4], B[4:6, 4:6], B[6, 6] = rot(0.95, 0.3), rot(0.9, 1.1), rot(0.8, 2.0), 0.5
    Q7, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    p7 = fastfp.RNNParams("vanilla", rng.normal(size=(7, 2)), Q7 @ B @ Q7.T, np.zeros(7), np.zeros(7))
    fp7 = fastfp.find_fixed_points(p7, np.zeros((1, 7)), np.zeros(2))
    dense, top = fp7.decompose(p7).eigvals[0], fp7.decompose(p7, k=6).eigvals[0]
    np.testing.assert_allclose(top, dense[:6], atol=1e-9)
    assert dense[0].imag > 0 and dense[2].imag > 0 and dense[4].imag > 0


def test_full_decompose_refuses_what_would_not_fit(params, fps):
    """64 N^2 bytes per point (J, R, L and eig's copies): past memory_limit a MemoryLimitError that
    names k= before any work; within it, or with k, the decomposition runs."""
    pts = fps[:8]
    need = 8 * 64 * 10 ** 2
    with pytest.raises(fastfp.MemoryLimitError, match=r"decompose: .*8 points of dimension N = 10 .*pass k= .*at most 4"):
        pts.decompose(params, memory_limit=need / 2)
    assert pts.decompose(params, memory_limit=need).eigvals.shape == (8, 10)
    assert pts.decompose(params, k=2, memory_limit=need / 2).eigvals.shape == (8, 2)


def test_decompose_needed(fps):
    with pytest.raises(fastfp.InvalidOptionError, match="decompose"):
        fps.time_constants


def test_save_load_round_trip(tmp_path, params, fps):
    dec = fps[:5].decompose(params)
    path = tmp_path / "fp.npz"
    dec.save(path)
    back = FixedPoints.load(path)
    for name in ("x", "x0", "inputs", "fx", "residual", "q", "status", "nit", "eigvals", "eigvecs_left", "jacobian"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dec, name))
    assert back.metadata["method"] == "hybrid" and back.metadata["cell"] == "gru"
    assert back.metadata["atol"] == dec.metadata["atol"]


def test_load_refuses_newer_version_and_foreign_files(tmp_path, fps):
    path = tmp_path / "fp.npz"
    fps.save(path)
    with np.load(path) as data:
        entries = dict(data)
    entries["__fastfp_fixed_points_format__"] = np.array(99)
    np.savez(tmp_path / "new.npz", **entries)
    with pytest.raises(fastfp.FileFormatError, match="version 99.*upgrade"):
        FixedPoints.load(tmp_path / "new.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(fastfp.FileFormatError, match="not a fastfp FixedPoints file"):
        FixedPoints.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(fastfp.FileFormatError, match="not a readable"):
        FixedPoints.load(tmp_path / "junk.npz")


def test_load_refuses_a_non_finite_state_under_a_found_status(tmp_path, fps):
    path = tmp_path / "fp.npz"
    fps.save(path)
    with np.load(path) as data:
        entries = dict(data)
    x = entries["x"].copy()
    x[2, 0] = np.nan
    status = entries["status"].copy()
    status[2] = fastfp.Status.CONVERGED
    np.savez(tmp_path / "nan.npz", **dict(entries, x=x, status=status))
    with pytest.raises(fastfp.FileFormatError, match=r"field 'x': 1 point\(s\) with status CONVERGED.*rows \[2\]"):
        FixedPoints.load(tmp_path / "nan.npz")
    # The same row marked NONFINITE, as a solver marks it, loads.
    status[2] = fastfp.Status.NONFINITE
    np.savez(tmp_path / "marked.npz", **dict(entries, x=x, status=status))
    assert not FixedPoints.load(tmp_path / "marked.npz").success[2]


def test_load_never_unpickles(tmp_path, fps):
    marker = tmp_path / "pwned"
    path = tmp_path / "fp.npz"
    fps.save(path)
    with np.load(path) as data:
        entries = dict(data)

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    entries["x"] = np.array([Evil()], dtype=object)
    np.savez(tmp_path / "evil.npz", **entries)
    with pytest.raises(fastfp.FileFormatError):
        FixedPoints.load(tmp_path / "evil.npz")
    assert not marker.exists()


def test_status_messages_and_repr(fps):
    assert "exact fixed point" in Status.CONVERGED.message
    assert all(Status(s).message for s in Status)
    assert "converged" in repr(fps)
    assert json.dumps(fps.metadata, default=str)


def test_decompose_memory_limits_are_kept_with_and_without_k():
    params = fastfp.RNNParams.random("gru", 64, 2, seed=0)
    fp = fastfp.find_fixed_points(params, np.zeros((2, 64)))
    with pytest.raises(fastfp.MemoryLimitError, match="not even one point's full decomposition fits"):
        fp.decompose(params, memory_limit=1e3)
    with pytest.raises(fastfp.MemoryLimitError, match="top_eigs needs about"):  # k= passes the limit on
        fp.decompose(params, k=4, memory_limit=1e3)


def test_decompose_warns_when_handed_another_network(tmp_path):
    import warnings

    p = fastfp.RNNParams.random("gru", 8, 3, seed=0)
    other = fastfp.RNNParams.random("gru", 8, 3, seed=1)  # same shapes, other weights
    fp = fastfp.find_fixed_points(p, np.zeros((2, 8)), np.zeros(3))
    fp.save(tmp_path / "fp.npz")
    fp = fastfp.FixedPoints.load(tmp_path / "fp.npz")  # the record survives a save
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp.decompose(p)
        fp.decompose(p.astype(np.float32))  # one network in another precision
    with pytest.warns(UserWarning, match="argument 'params' is not the network these points were found with"):
        fp.decompose(other)


def test_the_network_check_sees_folded_biases_as_one_network_and_nonlinearities_as_two():
    import warnings

    rng = np.random.default_rng(0)
    W, U, b1, b2 = rng.normal(size=(4, 2)), 0.5 * rng.normal(size=(4, 4)), rng.normal(size=4), rng.normal(size=4)
    split = fastfp.RNNParams("vanilla", W, U, b1, b2)
    folded = fastfp.RNNParams("vanilla", W, U, b1 + b2, np.zeros(4))  # Keras/Flax store one bias
    fp = fastfp.find_fixed_points(split, np.zeros((2, 4)), np.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp.decompose(folded)
    # another nonlinearity or cell is another network for certain: an error, not a warning
    with pytest.raises(fastfp.InvalidOptionError, match=r"a vanilla \(relu\) network, but these points were found "
                                                        r"with a vanilla \(tanh\) one"):
        fp.decompose(fastfp.RNNParams("vanilla", W, U, b1, b2, nonlinearity="relu"))
    gru = fastfp.RNNParams.random("gru", 4, 2, seed=0)
    with pytest.raises(fastfp.InvalidOptionError, match=r"'params': a gru .* found with a vanilla"):
        fp.decompose(gru)
