"""Flax msgpack / in-memory Flax, nnx and renn-style trees -> fastfp (fastfp.io_flax)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastfp
from fastfp.errors import FastFPError, FileFormatError, InvalidOptionError
from fastfp.io_flax import is_msgpack_head, load_flax, read_flax_msgpack

msgpack = pytest.importorskip("msgpack")

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data")
TOOLS = os.path.join(HERE, "..", "tools")


def _rollout(params, h0, xs):
    h, out = np.asarray(h0), []
    for x in xs:
        h = fastfp.step(params, h, x)
        out.append(h)
    return np.stack(out)


def _tol(cell):
    return dict(rtol=0, atol=1e-6)


def _pack(tree) -> bytes:
    """flax's wire format written with msgpack alone (for bad-input tests without flax)."""
    def default(a):
        a = np.asarray(a)
        return msgpack.ExtType(1, msgpack.packb((a.shape, a.dtype.name, a.tobytes("C")), use_bin_type=True))
    return msgpack.packb(tree, default=default, strict_types=False, use_bin_type=True)


# ============================================================================ fixtures (no flax needed)
FIXTURE_CELLS = {"gru": "gru", "lstm": "lstm", "simple": "vanilla"}


@pytest.mark.parametrize("name", sorted(FIXTURE_CELLS))
def test_fixture_files_reproduce_flax(name):
    exp = np.load(os.path.join(DATA, "flax_fixtures_expected.npz"))
    path = os.path.join(DATA, f"flax_{name}.msgpack")
    with open(path, "rb") as fh:
        assert is_msgpack_head(fh.read(1))
    m = load_flax(path)
    assert m.params.cell == FIXTURE_CELLS[name]
    assert m.params.dtype == np.float32
    got = _rollout(m.params, exp[f"{name}_h0"], exp[f"{name}_x"])
    np.testing.assert_allclose(got, exp[f"{name}_states"], **_tol(m.params.cell))


def test_fixture_tree_layout():
    tree = read_flax_msgpack(os.path.join(DATA, "flax_gru.msgpack"))
    cell = tree["params"]
    assert set(cell) == {"ir", "iz", "in", "hr", "hz", "hn"}
    assert set(cell["hr"]) == {"kernel"} and set(cell["hn"]) == {"kernel", "bias"}
    assert cell["ir"]["kernel"].dtype == np.float32


def test_total_fixture_size_small():
    total = sum(os.path.getsize(os.path.join(DATA, f)) for f in os.listdir(DATA) if f.startswith("flax_"))
    assert total < 50_000


# ============================================================================ against flax itself
LINEN = {"gru": "gru", "lstm": "lstm", "optlstm": "lstm", "simple": "vanilla", "mgu": "gru", "mgu_noreset": "ugrnn"}
NNX = {"gru": "gru", "optlstm": "lstm", "simple": "vanilla", "lstm": "lstm"}


@pytest.fixture(scope="module")
def flax_cases(tmp_path_factory):
    """Write every linen / nnx cell to msgpack; returns {name: (path, x, h0, states, cell)}."""
    pytest.importorskip("flax")
    pytest.importorskip("jax")
    sys.path.insert(0, TOOLS)
    try:
        from make_flax_fixtures import make_linen, make_nnx
    finally:
        sys.path.remove(TOOLS)
    from flax.serialization import to_bytes

    d = tmp_path_factory.mktemp("flax")
    cases = {}
    for prefix, maker, table in (("linen", make_linen, LINEN), ("nnx", make_nnx, NNX)):
        for kind, cell in table.items():
            tree, x, h0, states = maker(kind, seed=3)
            path = d / f"{prefix}_{kind}.msgpack"
            path.write_bytes(to_bytes(tree))
            cases[f"{prefix}_{kind}"] = (str(path), x, h0, states, cell, tree)
    return cases


def test_flax_cells_without_jax_in_subprocess(flax_cases, tmp_path):
    """Load every file in a process where importing jax or flax fails, and roll out 50 steps."""
    inputs = {}
    for name, (path, x, h0, _s, _c, _t) in flax_cases.items():
        inputs[f"{name}__x"], inputs[f"{name}__h0"] = x, h0
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules['jax'] = None
        sys.modules['flax'] = None
        sys.modules['jaxlib'] = None
        import numpy as np, fastfp
        from fastfp.io_flax import load_flax
        paths = {dict((n, c[0]) for n, c in flax_cases.items())!r}
        inp = np.load({str(tmp_path / 'inputs.npz')!r})
        out = {{}}
        for name, path in paths.items():
            m = load_flax(path)
            h, states = inp[name + '__h0'], []
            for x in inp[name + '__x']:
                h = fastfp.step(m.params, h, x)
                states.append(h)
            out[name] = np.stack(states)
            out[name + '__cell'] = np.array(m.params.cell)
        assert not any(k == 'jax' or k.startswith(('jax.', 'flax')) for k, v in sys.modules.items() if v is not None)
        np.savez({str(tmp_path / 'out.npz')!r}, **out)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    for name, (_p, _x, _h0, states, cell, _t) in flax_cases.items():
        assert str(out[name + "__cell"]) == cell, name
        assert out[name].dtype == np.float32
        assert out[name].shape == (50, states.shape[1])
        np.testing.assert_allclose(out[name], states, err_msg=name, **_tol(cell))


def test_gates_not_saturated_nor_half(flax_cases):
    """Scaled weights put the GRU's gates in their non-linear range (the comparison is meaningful)."""
    path, x, h0, _s, _c, _t = flax_cases["linen_gru"]
    p = load_flax(path).params
    pre = p.w_ih[: 2 * p.hidden_size] @ x[0] + p.w_hh[: 2 * p.hidden_size] @ h0 + p.b_ih[:12] + p.b_hh[:12]
    s = 1 / (1 + np.exp(-pre))
    assert np.std(s) > 0.15


def test_in_memory_jax_tree(flax_cases):
    import jax.numpy as jnp
    _p, x, h0, states, cell, tree = flax_cases["linen_gru"]
    jtree = {"params": {k: {kk: jnp.asarray(vv) for kk, vv in v.items()} for k, v in tree["params"].items()}}
    m = load_flax(jtree)
    np.testing.assert_allclose(_rollout(m.params, h0, x), states, **_tol(cell))


def test_lstm_carry_order(flax_cases):
    """Flax carry (c, h) -> fastfp state [h, c]: the h half of a step equals Flax's output."""
    _p, x, h0, states, _c, _t = flax_cases["linen_lstm"]
    m = load_flax(_p)
    assert m.params.state_size == 2 * m.params.hidden_size
    np.testing.assert_allclose(fastfp.step(m.params, h0, x[0]), states[0], atol=1e-6)


def test_nested_classifier_embedding_readout_and_key_prefix():
    pytest.importorskip("flax")
    import jax
    import jax.numpy as jnp
    import flax.linen as nn
    from flax.serialization import to_bytes

    class Clf(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            e = nn.Embed(7, 3)(tokens)
            h = nn.RNN(nn.GRUCell(5))(e)
            return nn.Dense(2)(h[:, -1])

    variables = Clf().init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    m = load_flax(variables)
    assert m.params.cell == "gru" and m.embedding.shape == (7, 3) and m.readout_weight.shape == (2, 5)
    assert m.metadata["cell_path"] == "params/GRUCell_0"  # nn.RNN(cell) built in the parent: cell params live there
    np.testing.assert_array_equal(m.readout_weight, np.asarray(variables["params"]["Dense_0"]["kernel"]).T)

    class Two(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.RNN(nn.GRUCell(4))(x) + nn.RNN(nn.GRUCell(4))(x)

    v2 = jax.tree_util.tree_map(np.asarray, Two().init(jax.random.PRNGKey(1), jnp.zeros((1, 3, 2))))
    with pytest.raises(FileFormatError, match="GRUCell_0.*GRUCell_1.*key_prefix"):
        load_flax(v2)
    m1 = load_flax(v2, key_prefix="params/GRUCell_1")
    np.testing.assert_array_equal(m1.params.w_hh[:4], v2["params"]["GRUCell_1"]["hr"]["kernel"].T)
    with pytest.raises(InvalidOptionError, match="matches no recurrent cell"):
        load_flax(v2, key_prefix="params/RNN_9")
    # through the file format, too
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "clf.msgpack")
        with open(p, "wb") as fh:
            fh.write(to_bytes(variables))
        mf = load_flax(p)
        np.testing.assert_array_equal(mf.embedding, np.asarray(variables["params"]["Embed_0"]["embedding"]))


# ============================================================================ renn-style trees
def _renn_tree(names, H, M, seed, scale=2.5):
    rng = np.random.default_rng(seed)
    s = scale / np.sqrt(H)
    return {n: {"A": rng.uniform(-s, s, (H, M)), "W": rng.uniform(-s, s, (H, H)), "b": rng.uniform(-1, 1, H)}
            for n in names} | {"initial_state": np.zeros(H)}


def _jax_renn_gru(p, x, h, gate_bias):
    import jax
    import jax.numpy as jnp
    lin = lambda g, x, h: p[g]["A"] @ x + p[g]["W"] @ h + p[g]["b"]  # noqa: E731
    u = jax.nn.sigmoid(lin("update_gate", x, h) + gate_bias)
    r = jax.nn.sigmoid(lin("reset_gate", x, h))
    c = jnp.tanh(lin("cell_state", x, r * h))
    return u * h + (1 - u) * c


def _jax_renn_ugrnn(p, x, h, gate_bias):
    import jax
    import jax.numpy as jnp
    lin = lambda g: p[g]["A"] @ x + p[g]["W"] @ h + p[g]["b"]  # noqa: E731
    u = jax.nn.sigmoid(lin("update_gate") + gate_bias)
    return u * h + (1 - u) * jnp.tanh(lin("cell_state"))


def _jax_renn_lstm(p, x, full, forget_bias):
    import jax
    import jax.numpy as jnp
    h, c = jnp.split(full, 2)
    lin = lambda g: p[g]["A"] @ x + p[g]["W"] @ h + p[g]["b"]  # noqa: E731
    f = jax.nn.sigmoid(lin("forget_gate") + forget_bias)
    i = jax.nn.sigmoid(lin("update_gate"))
    o = jax.nn.sigmoid(lin("output_gate"))
    g = jnp.tanh(lin("cell_state"))
    c2 = f * c + i * g
    return jnp.concatenate([o * jnp.tanh(c2), c2])


RENN = {
    "gru": (("update_gate", "reset_gate", "cell_state"), "gru_reset_before", _jax_renn_gru, "gate_bias"),
    "ugrnn": (("update_gate", "cell_state"), "ugrnn", _jax_renn_ugrnn, "gate_bias"),
    "lstm": (("forget_gate", "update_gate", "output_gate", "cell_state"), "lstm", _jax_renn_lstm, "forget_bias"),
}


@pytest.mark.parametrize("kind", sorted(RENN))
@pytest.mark.parametrize("layout", ["dict", "tuple_state_dict", "msgpack"])
def test_renn_trees_match_jax_equations(kind, layout, tmp_path):
    pytest.importorskip("jax")
    import jax
    jax.config.update("jax_enable_x64", True)
    try:
        names, cell, ref, bias_name = RENN[kind]
        H, M = 5, 3
        tree = _renn_tree(names, H, M, seed=len(kind))
        bias = 0.7
        if layout == "tuple_state_dict":  # flax's to_state_dict of a LinearRNN pytree: '0', '1', '2'
            tree = {k: ({"0": v["A"], "1": v["W"], "2": v["b"]} if isinstance(v, dict) else v) for k, v in tree.items()}
        src = tree
        if layout == "msgpack":
            src = str(tmp_path / "renn.msgpack")
            with open(src, "wb") as fh:
                fh.write(_pack({"0": np.eye(4, M), "1": tree, "2": {"0": np.ones((H, 2)), "1": np.zeros(2)}}))
        m = load_flax(src, **{bias_name: bias})
        assert m.params.cell == cell
        if layout == "msgpack":
            assert m.embedding.shape == (4, M) and m.readout_weight.shape == (2, H)
        ref_tree = _renn_tree(names, H, M, seed=len(kind))
        rng = np.random.default_rng(1)
        h = rng.standard_normal(m.params.state_size)
        h_ref = h.copy()
        for _ in range(50):
            x = rng.standard_normal(M)
            h = fastfp.step(m.params, h, x)
            h_ref = np.asarray(ref(ref_tree, x, h_ref, bias))
            np.testing.assert_allclose(h, h_ref, atol=1e-10)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_renn_gru_differs_from_reset_after():
    tree = _renn_tree(("update_gate", "reset_gate", "cell_state"), 4, 2, seed=0)
    p = load_flax(tree).params
    q = fastfp.RNNParams("gru", p.w_ih, p.w_hh, p.b_ih, p.b_hh)
    h = np.linspace(-1, 1, 4)
    assert np.abs(fastfp.step(p, h, np.ones(2)) - fastfp.step(q, h, np.ones(2))).max() > 1e-3
    with pytest.raises(InvalidOptionError, match="cell='gru'"):
        load_flax(tree, cell="gru")


def test_generic_three_gate_tree_needs_cell():
    rng = np.random.default_rng(0)
    tree = {"rnn": {"W": rng.standard_normal((12, 3)), "U": rng.standard_normal((12, 4)), "b": np.zeros(12)}}
    with pytest.raises(InvalidOptionError, match="cell='gru'.*gru_reset_before"):
        load_flax(tree)
    assert load_flax(tree, cell="gru_reset_before").params.cell == "gru_reset_before"
    assert load_flax(tree, cell="gru").params.cell == "gru"
    with pytest.raises(InvalidOptionError, match="3 gate"):
        load_flax(tree, cell="lstm")
    gates = {f"{w}_{g}": rng.standard_normal((4, 3) if w == "W" else (4, 4) if w == "U" else 4)
             for g in "rzn" for w in ("W", "U", "b")}
    with pytest.raises(InvalidOptionError, match="rnn"):
        load_flax({"rnn": gates})
    p = load_flax({"rnn": gates}, cell="gru").params
    np.testing.assert_array_equal(p.w_ih[4:8], gates["W_z"])
    ug = {f"{w}_{g}": gates[f"{w}_{'rz'[i]}"] for i, g in enumerate("uc") for w in ("W", "U", "b")}
    assert load_flax(ug).params.cell == "ugrnn"


# ============================================================================ bad input
def _gru_tree(H=3, M=2):
    rng = np.random.default_rng(0)
    t = {k: {"kernel": rng.standard_normal((M if k[0] == "i" else H, H)).astype(np.float32)}
         for k in ("ir", "iz", "in", "hr", "hz", "hn")}
    for k in ("ir", "iz", "in", "hn"):
        t[k]["bias"] = np.zeros(H, np.float32)
    return {"params": t}


def _write(tmp_path, data, name="x.msgpack"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_own_packer_matches_format(tmp_path):
    m = load_flax(_write(tmp_path, _pack(_gru_tree())))
    assert m.params.cell == "gru" and m.params.hidden_size == 3


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"\x81\xa1a", "not a readable"),  # truncated
    (b"\x93\x01\x02\x03", "top level"),
    (b"\x80\x00", "ExtraData|not a readable"),
    (b"\x81\xa1a\xc1", "not a readable"),  # reserved byte
])
def test_corrupted_bytes(tmp_path, data, match):
    path = _write(tmp_path, data)
    with pytest.raises(FileFormatError, match=match) as ei:
        load_flax(path)
    assert "x.msgpack" in str(ei.value)


def test_truncated_real_file(tmp_path):
    good = open(os.path.join(DATA, "flax_gru.msgpack"), "rb").read()
    for n in (1, 10, len(good) // 2, len(good) - 1):
        with pytest.raises(FileFormatError, match="x.msgpack"):
            load_flax(_write(tmp_path, good[:n]))


@pytest.mark.parametrize("dtype_name", ["object", "O", "V8", "<U3", "datetime64[s]", "float32,int8", "bogus"])
def test_non_numeric_dtype_ext(tmp_path, dtype_name):
    payload = msgpack.packb(((2,), dtype_name, b"\x00" * 16), use_bin_type=True)
    data = msgpack.packb({"params": {"w": msgpack.ExtType(1, payload)}}, use_bin_type=True)
    with pytest.raises(FileFormatError, match="dtype") as ei:
        read_flax_msgpack(_write(tmp_path, data))
    assert "x.msgpack" in str(ei.value)


def test_buffer_size_and_unknown_ext(tmp_path):
    payload = msgpack.packb(((3, 3), "float32", b"\x00" * 8), use_bin_type=True)
    with pytest.raises(FileFormatError, match="needs 36 bytes"):
        read_flax_msgpack(_write(tmp_path, msgpack.packb({"a": msgpack.ExtType(1, payload)})))
    with pytest.raises(FileFormatError, match="ext type code 9"):
        read_flax_msgpack(_write(tmp_path, msgpack.packb({"a": msgpack.ExtType(9, b"")})))


def test_scalars_complex_and_bfloat16(tmp_path):
    bf = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    data = msgpack.packb({
        "s": msgpack.ExtType(3, msgpack.packb(((), "int32", np.int32(7).tobytes()), use_bin_type=True)),
        "c": msgpack.ExtType(2, msgpack.packb((1.0, 2.0))),
        "bf": msgpack.ExtType(1, msgpack.packb(((2,), "bfloat16", bf), use_bin_type=True)),
    }, use_bin_type=True)
    t = read_flax_msgpack(_write(tmp_path, data))
    assert int(t["s"]) == 7 and t["c"] == 1 + 2j
    np.testing.assert_array_equal(t["bf"], [1.5, -2.0])


def test_missing_kernel_and_shape_mismatch(tmp_path):
    t = _gru_tree()
    del t["params"]["hn"]["bias"]
    with pytest.raises(FileFormatError, match="params/hn/bias") as ei:
        load_flax(_write(tmp_path, _pack(t)))
    assert "x.msgpack" in str(ei.value)
    t = _gru_tree()
    t["params"]["hz"]["kernel"] = np.zeros((3, 4), np.float32)
    with pytest.raises(FileFormatError, match="x.msgpack.*kernels|x.msgpack.*shape"):
        load_flax(_write(tmp_path, _pack(t)))
    t = _gru_tree()
    t["params"]["in"]["bias"] = np.zeros(5, np.float32)
    with pytest.raises(FileFormatError, match="params/in/bias"):
        load_flax(_write(tmp_path, _pack(t)))
    t = _gru_tree()
    t["params"]["ir"]["kernel"] = np.zeros((2, 3), np.int32)
    with pytest.raises(FileFormatError, match="params/ir/kernel.*dtype"):
        load_flax(_write(tmp_path, _pack(t)))
    renn = _renn_tree(("update_gate", "cell_state"), 3, 2, 0)
    renn["cell_state"]["W"] = np.zeros((3, 4))
    with pytest.raises(FileFormatError, match="cell_state"):
        load_flax(renn)
    with pytest.raises(FileFormatError, match="no recurrent cell"):
        load_flax(_write(tmp_path, _pack({"params": {"Dense_0": {"kernel": np.zeros((2, 2))}}})))


def test_options_validated(tmp_path):
    path = os.path.join(DATA, "flax_gru.msgpack")
    with pytest.raises(InvalidOptionError, match="cell"):
        load_flax(path, cell="gru_reset_before")
    with pytest.raises(InvalidOptionError, match="cell"):
        load_flax(path, cell="nope")
    with pytest.raises(InvalidOptionError, match="key_prefix"):
        load_flax(path, key_prefix=3)
    assert load_flax(path, cell="gru").params.cell == "gru"


def test_missing_msgpack_dependency(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules['msgpack'] = None
        from fastfp.io_flax import load_flax
        from fastfp.errors import MissingDependencyError
        try:
            load_flax({os.path.join(DATA, 'flax_gru.msgpack')!r})
        except MissingDependencyError as e:
            assert 'fastfp-rnn[flax]' in str(e), e
            print('ok')
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "ok", res.stderr[-2000:]


# ============================================================================ fuzz
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_FUZZ_SEED = open(os.path.join(DATA, "flax_lstm.msgpack"), "rb").read()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_SEED) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(1, len(_FUZZ_SEED)), st.binary(max_size=8))
def test_fuzz_mutated_fixture_only_fastfp_errors(tmp_path, edits, cut, tail):
    data = bytearray(_FUZZ_SEED)
    for i, b in edits:
        data[i] = b
    data = bytes(data[:cut]) + tail
    path = _write(tmp_path, data, "fuzz.msgpack")
    try:
        m = load_flax(path)
    except FastFPError:
        return
    assert isinstance(m, fastfp.Model)


# ---------------------------------------------------------------------------- nothing silently lost
def test_readout_bias_of_the_wrong_shape_is_an_error(tmp_path):
    t = {"params": {"cell": _gru_tree()["params"],
                    "Dense_0": {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(5, np.float32)}}}
    with pytest.raises(FileFormatError, match=r"x\.msgpack: readout bias 'params/Dense_0/bias' has shape \(5,\), "
                                              r"expected \(2,\) to match kernel 'params/Dense_0/kernel' of shape \(3, 2\)"):
        load_flax(_write(tmp_path, _pack(t)))
    t["params"]["Dense_0"]["bias"] = np.arange(2, dtype=np.float32)
    m = load_flax(_write(tmp_path, _pack(t)))
    np.testing.assert_array_equal(m.readout_bias, [0.0, 1.0])
    # renn network tuple: (embedding, rnn params, (W, b))
    renn = {"0": np.ones((5, 2)), "1": _renn_tree(("update_gate", "cell_state"), 3, 2, 0),
            "2": {"0": np.ones((3, 4)), "1": np.zeros(3)}}
    with pytest.raises(FileFormatError, match=r"readout bias '2/1' has shape \(3,\), expected \(4,\)"):
        load_flax(renn)


def test_non_finite_weights_name_the_file_and_cell(tmp_path):
    t = _gru_tree()
    t["params"]["hr"]["kernel"] = np.full((3, 3), np.nan, np.float32)
    with pytest.raises(fastfp.NonFiniteError, match=r"x\.msgpack: the cell at 'params' \(flax linen GRUCell.*\): "
                                                    r"argument 'w_hh': holds NaN"):
        load_flax(_write(tmp_path, _pack(t)))


def test_keys_that_read_the_same_are_an_error(tmp_path):
    data = msgpack.packb({"params": {1: {"x": 1}, "1": {"y": 2}}}, strict_types=False)
    with pytest.raises(FileFormatError, match=r"x\.msgpack: a map of the tree has both the keys 1 and '1'"):
        load_flax(_write(tmp_path, data))


# ---------------------------------------------------------------------------- no key of a cell left unread
def _extra(tree, *keys, value):
    """``tree`` with ``value`` added at the key path ``keys``."""
    node = tree
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return tree


_H3 = np.zeros(3, np.float32)


@pytest.mark.parametrize("keys, value, what, expected", [
    (("params", "junk"), {"kernel": np.ones((3, 3), np.float32)}, r"cell \(linen_gru\) at 'params'",
     "'ir', 'iz', 'in', 'hr', 'hz', 'hn'"),
    (("params", "b_extra"), _H3, r"cell \(linen_gru\) at 'params'", "'ir', 'iz', 'in', 'hr', 'hz', 'hn'"),
    (("params", "hn", "b_extra"), _H3, r"Dense 'hn' at 'params/hn'", "'kernel', 'bias'"),
], ids=["submodule", "array", "in_dense"])
def test_extra_keys_in_a_flax_cell_are_an_error(tmp_path, keys, value, what, expected):
    path = _write(tmp_path, _pack(_extra(_gru_tree(), *keys, value=value)))
    with pytest.raises(FileFormatError, match=rf"x\.msgpack: the {what} has unexpected key\(s\) '{keys[-1]}'; "
                                              rf"expected only {expected}"):
        load_flax(path)
    with pytest.raises(FileFormatError, match=keys[-1]):
        fastfp.load(path)


def test_cell_nested_in_a_cell_is_an_error(tmp_path):
    t = _gru_tree()
    t["params"]["inner"] = _gru_tree()["params"]
    with pytest.raises(FileFormatError, match=r"x\.msgpack: the cell \(linen_gru\) at 'params' has unexpected "
                                              r"key\(s\) 'inner'; nested recurrent cell\(s\) at 'params/inner' "
                                              r"\(linen_gru\); expected only"):
        load_flax(_write(tmp_path, _pack(t)))


def test_extra_keys_in_renn_and_generic_trees_are_an_error():
    rng = np.random.default_rng(0)
    gen = {"rnn": {"W": rng.standard_normal((12, 3)), "U": rng.standard_normal((12, 4)), "b": np.zeros(12),
                   "b_extra": np.ones(12)}}
    with pytest.raises(FileFormatError, match=r"argument 'source': the cell \(generic_stacked\) at 'rnn' has "
                                              r"unexpected key\(s\) 'b_extra'; expected only 'W', 'U', 'b'"):
        load_flax(gen, cell="gru")
    gates = {f"{w}_{g}": rng.standard_normal((4, 3) if w == "W" else (4, 4) if w == "U" else 4)
             for g in "uc" for w in ("W", "U", "b")} | {"W_x": np.ones((4, 3))}
    with pytest.raises(FileFormatError, match=r"generic_gates.*'W_x'; expected only 'W_u', 'U_u', 'b_u'"):
        load_flax(gates)
    renn = _renn_tree(("update_gate", "cell_state"), 3, 2, 0) | {"forget_gate": {"A": np.ones((3, 2))}}
    with pytest.raises(FileFormatError, match=r"renn_ugrnn.*'forget_gate'; expected only 'update_gate', "
                                              r"'cell_state', 'initial_state'"):
        load_flax(renn)
    renn = _renn_tree(("update_gate", "cell_state"), 3, 2, 0)
    renn["cell_state"]["b2"] = np.ones(3)
    with pytest.raises(FileFormatError, match=r"renn LinearRNN at 'cell_state' has unexpected key\(s\) 'b2'; "
                                              r"expected only 'A', 'W', 'b'"):
        load_flax(renn)
    renn = _renn_tree(("update_gate", "cell_state"), 3, 2, 0)
    renn["initial_state"] = {"update_gate": renn["update_gate"]}
    with pytest.raises(FileFormatError, match=r"'initial_state' has a dict; expected renn's 1-D float"):
        load_flax(renn)


def test_harmless_cell_entries_are_accepted_and_listed():
    """renn's initial_state and nnx's rngs are not read by the step map: accepted, named in metadata."""
    m = load_flax(_renn_tree(("update_gate", "cell_state"), 3, 2, 0))
    assert any("ignored initial_state" in n for n in m.metadata["extras"])
    rng = np.random.default_rng(0)
    nnx_gru = {"dense_i": {"kernel": rng.standard_normal((2, 9)), "bias": np.zeros(9)},
               "dense_h": {"kernel": rng.standard_normal((3, 9))},
               "rngs": {"key": np.zeros(2, np.uint32), "count": np.array(1, np.uint32)}}
    m = load_flax(nnx_gru)
    assert m.params.cell == "gru" and any("ignored rngs" in n for n in m.metadata["extras"])
    nnx_gru["rngs"] = {"dense_x": {"kernel": np.ones((3, 3))}}
    with pytest.raises(FileFormatError, match=r"'rngs' is not an nnx RNG stream state"):
        load_flax(nnx_gru)


@pytest.mark.parametrize("kind", sorted(NNX))
def test_nnx_cells_kept_rngs_load(kind):
    """An nnx cell built with keep_rngs=True keeps its RNG stream in the state (as key data once exported)."""
    pytest.importorskip("flax")
    import warnings

    import jax
    from flax import nnx
    cls = {"gru": nnx.GRUCell, "optlstm": nnx.OptimizedLSTMCell, "simple": nnx.SimpleCell, "lstm": nnx.LSTMCell}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keep_rngs is deprecated in flax 0.12
        try:
            c = cls(3, 4, rngs=nnx.Rngs(0), keep_rngs=True)
        except TypeError:
            pytest.skip("this flax has no keep_rngs")
    pure = jax.tree_util.tree_map(
        lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else np.asarray(a),
        nnx.to_pure_dict(nnx.state(c)))
    assert "rngs" in pure
    assert load_flax(pure).params.cell == NNX[kind]


# ============================================================================ stacks: which extras attach
def _stacked_classifier(H=4, M=3, V=6, C=3):
    """Embed -> GRUCell_0 -> GRUCell_1 -> Dense_0, as a compact linen module names them."""
    rng = np.random.default_rng(5)
    first, second = _gru_tree(H, M)["params"], _gru_tree(H, H)["params"]
    return {"params": {
        "Embed_0": {"embedding": rng.standard_normal((V, M)).astype(np.float32)},
        "GRUCell_0": first, "GRUCell_1": second,
        "Dense_0": {"kernel": rng.standard_normal((H, C)).astype(np.float32),
                    "bias": rng.standard_normal(C).astype(np.float32)}}}


def test_stack_readout_attaches_to_the_last_cell_only(tmp_path):
    tree = _stacked_classifier()
    path = _write(tmp_path, _pack(tree))
    dense, embed = tree["params"]["Dense_0"], tree["params"]["Embed_0"]["embedding"]
    last = fastfp.load(path, key_prefix="params/GRUCell_1")
    # the other cell's gate kernels (H, H) are no readout candidates: the one Dense is attached
    np.testing.assert_array_equal(last.readout_weight, dense["kernel"].T)
    np.testing.assert_array_equal(last.readout_bias, dense["bias"])
    assert last.embedding is None  # (V, M) does not feed a cell of input size H
    first = fastfp.load(path, key_prefix="params/GRUCell_0")
    np.testing.assert_array_equal(first.embedding, embed)
    assert first.readout_weight is None
    assert any("reads its last cell, params/GRUCell_1" in n for n in first.metadata["extras"])
    picked = fastfp.load(path, key_prefix="params/GRUCell_0", readout_key="params/Dense_0", embedding_key=False)
    np.testing.assert_array_equal(picked.readout_weight, dense["kernel"].T)
    assert picked.embedding is None
    by_array = load_flax(tree, key_prefix="params/GRUCell_0", embedding_key="params/Embed_0/embedding")
    np.testing.assert_array_equal(by_array.embedding, embed)


def test_stack_embedding_feeds_the_first_layer_only_even_when_sizes_allow_more():
    """With M == H the embedding fits every layer: only the first (by Flax's numbers) gets it."""
    tree = _stacked_classifier(H=4, M=4)
    first = load_flax(tree, key_prefix="params/GRUCell_0")
    last = load_flax(tree, key_prefix="params/GRUCell_1")
    np.testing.assert_array_equal(first.embedding, tree["params"]["Embed_0"]["embedding"])
    assert first.readout_weight is None and last.embedding is None and last.readout_weight is not None
    assert any("an earlier layer, params/GRUCell_0, has output size 4" in n for n in last.metadata["extras"])


def test_stack_order_is_numeric_not_the_key_order():
    """Eleven layers whose keys come sorted as strings (RNN_10 before RNN_2, as jax.tree_util
    rebuilds dicts): the readout belongs to RNN_10."""
    H = 3
    cells = {f"RNN_{i}": {"cell": _gru_tree(H, H)["params"]} for i in range(11)}
    dense = {"kernel": np.ones((H, 2), np.float32)}
    tree = {"params": dict(sorted({**cells, "Dense_0": dense}.items()))}
    assert list(tree["params"])[:3] == ["Dense_0", "RNN_0", "RNN_1"] and "RNN_10" < "RNN_2"
    assert load_flax(tree, key_prefix="params/RNN_10").readout_weight is not None
    for i in (2, 9):
        assert load_flax(tree, key_prefix=f"params/RNN_{i}").readout_weight is None


def test_cells_whose_names_do_not_tell_the_order_get_no_guess():
    H = 3
    tree = {"params": {"encoder": _gru_tree(H, 2)["params"], "decoder": _gru_tree(H, H)["params"],
                       "Embed_0": {"embedding": np.ones((5, 2), np.float32)},
                       "Dense_0": {"kernel": np.ones((H, 2), np.float32)}}}
    m = load_flax(tree, key_prefix="params/encoder")
    # only the encoder takes inputs of the embedding's size: it gets it; the readout is not guessed
    np.testing.assert_array_equal(m.embedding, tree["params"]["Embed_0"]["embedding"])
    assert m.readout_weight is None
    assert any("order its key names do not tell; pass readout_key=" in n for n in m.metadata["extras"])
    tree["params"]["decoder"] = _gru_tree(H, 2)["params"]  # now both take inputs of size 2
    m = load_flax(tree, key_prefix="params/encoder")
    assert m.embedding is None
    assert any("also take inputs of size 2" in n and "pass embedding_key=" in n for n in m.metadata["extras"])
    assert load_flax(tree, key_prefix="params/encoder", embedding_key="params/Embed_0").embedding is not None


@pytest.mark.parametrize("names", [("GRUCell_0", "GRUCell_1"), ("bi/forward_rnn/cell", "bi/backward_rnn/cell")])
def test_both_directions_of_a_bidirectional_layer_get_the_embedding(names):
    """nn.Bidirectional: two cells read the embedding (M = 3), neither feeds the other (H = 4)."""
    E = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    params = {"Embed_0": {"embedding": E}}
    for name in names:
        node = params
        *parents, last = name.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = _gru_tree(4, 3)["params"]
    tree = {"params": params}
    for name in names:
        np.testing.assert_array_equal(load_flax(tree, key_prefix=f"params/{name}").embedding, E)


@pytest.mark.parametrize("kwargs, match", [
    (dict(readout_key="params/Dense_9"), r"argument 'readout_key': got 'params/Dense_9', .*no key 'Dense_9'.*Dense_0"),
    (dict(readout_key="params/Embed_0"), r"argument 'readout_key': 'params/Embed_0' holds no 'kernel'"),
    (dict(readout_key=""), r"argument 'readout_key': got ''"),
    (dict(embedding_key="params/Dense_0"), r"argument 'embedding_key': 'params/Dense_0' holds a dict.*\(V, 4\)"),
    (dict(layer=1), r"argument 'layer': got 1, .*key_prefix="),
    (dict(direction=1), r"argument 'direction': got 1"),
    (dict(cell="lstm"), r"argument 'source': .*x.msgpack: cell='lstm' given"),
])
def test_stack_option_errors_name_the_option(tmp_path, kwargs, match):
    path = _write(tmp_path, _pack(_stacked_classifier()))
    with pytest.raises(InvalidOptionError, match=match):
        fastfp.load(path, key_prefix="params/GRUCell_1", **kwargs)


def test_a_directory_is_refused_with_the_orbax_route(tmp_path):
    (tmp_path / "ckpt").mkdir()
    for fn in (fastfp.load, load_flax):
        with pytest.raises(FileFormatError, match=r"argument 'source': .*ckpt is a directory.*orbax"):
            fn(str(tmp_path / "ckpt"))


def test_msgpack_errors_through_load_name_its_argument(tmp_path):
    path = _write(tmp_path, _pack(_gru_tree()) + b"\x00")
    with pytest.raises(FileFormatError, match=r"^argument 'source': .*not a readable Flax msgpack"):
        load_flax(path)
    with pytest.raises(FileFormatError, match=r"^argument 'path': "):
        read_flax_msgpack(path)


def test_renn_network_tuple_parts_with_and_without_keys():
    """renn's (embedding, rnn, (W, b)): readout_key=False keeps the embedding, readout_key='2'
    picks renn's pair; an in-memory tree's errors name load_flax's argument 'source'."""
    W, b, E = np.arange(12.0).reshape(3, 4), np.arange(4.0), np.ones((5, 2))
    renn = {"0": E, "1": _renn_tree(("update_gate", "cell_state"), 3, 2, 0), "2": {"0": W, "1": b}}
    both = load_flax(renn)
    np.testing.assert_array_equal(both.readout_weight, W.T)
    no_readout = load_flax(renn, readout_key=False)
    assert no_readout.readout_weight is None
    np.testing.assert_array_equal(no_readout.embedding, E)
    picked = load_flax(renn, readout_key="2", embedding_key=False)
    np.testing.assert_array_equal(picked.readout_weight, W.T)
    np.testing.assert_array_equal(picked.readout_bias, b)
    assert picked.embedding is None
    with pytest.raises(InvalidOptionError, match=r"^argument 'source': cell='lstm' given"):
        load_flax(renn, cell="lstm")


def test_the_first_dense_of_an_mlp_head_is_not_taken_for_the_readout():
    # Dense(3)(relu(Dense(6)(h))) in a compact module: Dense_0 is the (6, 3) one, built first.
    rng = np.random.default_rng(6)
    tree = {"params": {"GRUCell_0": _gru_tree(4, 2)["params"],
                       "Dense_1": {"kernel": rng.standard_normal((4, 6)).astype(np.float32)},
                       "Dense_0": {"kernel": rng.standard_normal((6, 3)).astype(np.float32)}}}
    m = load_flax(tree)
    assert m.readout_weight is None
    assert "no readout from params/Dense_1: params/Dense_0 takes its output" in " ".join(m.metadata["extras"])
    forced = load_flax(tree, readout_key="params/Dense_1")
    np.testing.assert_array_equal(forced.readout_weight, tree["params"]["Dense_1"]["kernel"].T)
    # An input projection Dense (6, M) takes 6-vectors too, but feeds the cell: no MLP (review).
    proj = {"params": {"GRUCell_0": tree["params"]["GRUCell_0"], "Dense_1": tree["params"]["Dense_1"],
                       "Dense_0": {"kernel": rng.standard_normal((6, 2)).astype(np.float32)}}}
    np.testing.assert_array_equal(load_flax(proj).readout_weight, tree["params"]["Dense_1"]["kernel"].T)
    del tree["params"]["Dense_0"]  # alone, the (4, 6) Dense is a readout of 6 classes
    np.testing.assert_array_equal(load_flax(tree).readout_weight, tree["params"]["Dense_1"]["kernel"].T)


def test_key_prefix_scopes_the_embedding_and_readout_to_its_top_level_key():
    # A checkpoint of params and Adam's moments: every weight has two copies under opt_state.
    import copy

    params = _stacked_classifier()["params"]
    del params["GRUCell_1"]
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"][:, :2].copy()
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"][:2].copy()
    tree = {"params": params, "step": np.array(3),
            "opt_state": {"0": {"mu": {"params": copy.deepcopy(params)}, "nu": {"params": copy.deepcopy(params)}}}}
    with pytest.raises(FileFormatError, match="several recurrent cells.*opt_state/0/mu/params/GRUCell_0"):
        load_flax(tree)
    for prefix in ("params", "params/GRUCell_0"):
        m = load_flax(tree, key_prefix=prefix)
        np.testing.assert_array_equal(m.embedding, params["Embed_0"]["embedding"])
        np.testing.assert_array_equal(m.readout_weight, params["Dense_0"]["kernel"].T)
        assert "looked for under key_prefix's 'params'" in " ".join(m.metadata["extras"])
    # A tree without the 'params' level (state.params): the prefix names the cell, and the
    # Embed and Dense beside it are found as without a prefix (review).
    bare = _stacked_classifier()["params"]
    del bare["GRUCell_1"]
    for prefix in ("GRUCell_0", None):
        m = load_flax(bare, key_prefix=prefix)
        np.testing.assert_array_equal(m.embedding, bare["Embed_0"]["embedding"])
        np.testing.assert_array_equal(m.readout_weight, bare["Dense_0"]["kernel"].T)
    stack = _stacked_classifier()["params"]
    np.testing.assert_array_equal(load_flax(stack, key_prefix="GRUCell_1").readout_weight, stack["Dense_0"]["kernel"].T)
