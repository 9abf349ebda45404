"""fastfp.state_dict and the dict path of fastfp.load: no weight is silently replaced, dropped or
picked by key order (review findings 1-5 for in-memory state dicts)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastfp
from fastfp.errors import ArgumentTypeError, FileFormatError, NonFiniteError

H, M = 4, 3


def _gru_sd(prefix="rnn."):
    p = fastfp.RNNParams.random("gru", H, M, seed=0)
    return p, {f"{prefix}weight_ih_l0": p.w_ih, f"{prefix}weight_hh_l0": p.w_hh,
               f"{prefix}bias_ih_l0": p.b_ih, f"{prefix}bias_hh_l0": p.b_hh}


# ---------------------------------------------------------------------------- 1. flattening
def test_dotted_and_nested_key_collision_is_an_error():
    _, sd = _gru_sd()
    clash = {**sd, "rnn": {"weight_hh_l0": np.full((3 * H, H), 7.0)}}
    with pytest.raises(FileFormatError, match=r"\['rnn.weight_hh_l0'\] and \['rnn'\]\['weight_hh_l0'\] "
                                              r"both flatten to the key 'rnn.weight_hh_l0'"):
        fastfp.load(clash, cell="gru")
    # nested alone still works, and gives the dotted keys
    nested = {"rnn": {k.split(".", 1)[1]: v for k, v in sd.items()}}
    assert fastfp.load(nested, cell="gru").metadata["rnn_prefix"] == "rnn."


def test_torch_tensor_collision_is_an_error():
    torch = pytest.importorskip("torch")
    _, sd = _gru_sd()
    clash = {**{k: torch.tensor(v) for k, v in sd.items()}, "rnn": {"weight_hh_l0": torch.full((3 * H, H), 7.0)}}
    with pytest.raises(FileFormatError, match="both flatten to the key 'rnn.weight_hh_l0'"):
        fastfp.load(clash)


def test_a_dict_that_contains_itself_is_an_error():
    _, sd = _gru_sd()
    inner = {}
    inner["loop"] = inner
    with pytest.raises(ArgumentTypeError, match=r"\['extra'\]\['loop'\] contains itself"):
        fastfp.load({**sd, "extra": inner}, cell="gru")


# ---------------------------------------------------------------------------- 2. non-array values
def test_a_list_where_a_weight_belongs_is_an_error_not_zeros():
    p, sd = _gru_sd()
    with pytest.raises(FileFormatError, match=r"key 'rnn.bias_hh_l0' holds a list, expected an array"):
        fastfp.load({**sd, "rnn.bias_hh_l0": p.b_hh.tolist()}, cell="gru")
    with pytest.raises(FileFormatError, match=r"no recurrent layer found .*not arrays, left out: rnn.weight_ih_l0 \(list\)"):
        fastfp.load({k: v.tolist() for k, v in sd.items()}, cell="gru")
    # a scalar (or None) standing exactly where the layer's bias is looked up
    with pytest.raises(FileFormatError, match=r"key 'rnn.bias_ih_l0' holds a NoneType"):
        fastfp.load({**sd, "rnn.bias_ih_l0": None}, cell="gru")
    # a flat dict cannot say whether a list is a weight or a setting: left out, with a warning
    with pytest.warns(UserWarning, match=r"left out 1 list\(s\) under parameter names, not arrays: 'fc.weight'"):
        assert fastfp.load({**sd, "fc.weight": np.ones((2, H)).tolist()}, cell="gru").readout_weight is None
    # the bias of the readout that was picked
    with pytest.raises(FileFormatError, match=r"key 'fc.bias' holds a list"):
        fastfp.load({**sd, "fc.weight": np.ones((2, H)), "fc.bias": [0.0, 1.0]}, cell="gru")


def test_metadata_entries_that_are_not_arrays_are_still_accepted():
    p, sd = _gru_sd()
    ckpt = {"state_dict": sd, "epoch": 3, "note": "x", "config": {"bias": True, "layers": [1, 2]}, "best": None}
    m = fastfp.load(ckpt, cell="gru")
    assert_array_equal(m.params.b_hh, p.b_hh)
    assert m.metadata["rnn_prefix"] == "state_dict.rnn."


def test_a_value_with_no_numpy_form_is_named():
    class NoArray:  # as a JAX typed PRNG key: __array__ exists but raises
        def __array__(self, *args, **kwargs):
            raise TypeError("no NumPy form")

    with pytest.raises(ArgumentTypeError, match=r"entry \['rnn.weight_hh_l0'\] \(NoArray\) could not be converted"):
        fastfp.load({"rnn.weight_hh_l0": NoArray()}, cell="gru")


def test_lists_of_settings_outside_the_model_or_private_are_accepted():
    # a training checkpoint's config ('config.loss.weight') and a module's _extra_state are not
    # weights; a list beside the RNN in the same model is (above)
    p, sd = _gru_sd()
    for ckpt in ({"model_state_dict": sd, "config": {"loss": {"weight": [0.3, 0.7]}}, "hp": {"bias": (0.1,)}},
                 {**sd, "rnn._extra_state": {"weight": [1, 2]}}, {**sd, "config": {"loss": {"weight": [0.3]}}}):
        with pytest.warns(UserWarning, match="left out .* list\\(s\\) under parameter names"):
            assert_array_equal(fastfp.load(ckpt, cell="gru").params.w_hh, p.w_hh)
    with pytest.raises(FileFormatError, match=r"key 'model_state_dict.fc.weight' holds a list"):
        fastfp.load({"model_state_dict": {**sd, "fc.weight": np.ones((2, H)).tolist()}}, cell="gru")


def test_no_layer_message_lists_the_entries_that_are_not_arrays():
    with pytest.raises(FileFormatError, match=r"keys: no arrays; not arrays, left out: epoch \(int\)"):
        fastfp.load({"epoch": 3})


# ---------------------------------------------------------------------------- 3. key order
@pytest.mark.parametrize("cell_first", [True, False])
def test_cell_and_layered_keys_under_one_prefix_are_ambiguous_in_either_order(cell_first):
    p, sd = _gru_sd()
    cell = {"rnn.weight_hh": np.full((3 * H, H), 9.0), "rnn.weight_ih": p.w_ih}
    mixed = {**cell, **sd} if cell_first else {**sd, **cell}
    with pytest.raises(FileFormatError, match=r"the RNN 'rnn' has both an RNN cell's key \('rnn.weight_hh'\) "
                                              r"and a stacked RNN's keys \('rnn.weight_hh_l0'\).*ambiguous"):
        fastfp.load(mixed, cell="gru")
    # the two under different prefixes are two RNNs, picked by key_prefix
    both = {**sd, **{k.replace("rnn.", "cell."): v for k, v in cell.items()}}
    assert fastfp.load(both, cell="gru", key_prefix="rnn").metadata["rnn_prefix"] == "rnn."
    assert fastfp.load(both, cell="gru", key_prefix="cell").params.w_hh[0, 0] == 9.0


# ---------------------------------------------------------------------------- 4. readout
@pytest.mark.parametrize("bias_shape", [(3,), (2, 1), ()])
def test_readout_bias_of_the_wrong_shape_is_an_error(bias_shape):
    _, sd = _gru_sd()
    message = f"readout bias 'fc.bias' has shape {bias_shape}, expected (2,) to match readout weight 'fc.weight' of shape (2, 4)"
    with pytest.raises(FileFormatError, match=re.escape(message)):
        fastfp.load({**sd, "fc.weight": np.ones((2, H)), "fc.bias": np.ones(bias_shape)}, cell="gru")
    m = fastfp.load({**sd, "fc.weight": np.ones((2, H)), "fc.bias": np.arange(2.0)}, cell="gru")
    assert_array_equal(m.readout_bias, [0.0, 1.0])


def test_readout_errors_name_the_keys():
    _, sd = _gru_sd()
    with pytest.raises(NonFiniteError, match=r"dict of arrays\): key 'fc.weight': argument 'readout_weight'"):
        fastfp.load({**sd, "fc.weight": np.full((2, H), np.nan)}, cell="gru")


# ---------------------------------------------------------------------------- 5. hints
def test_missing_key_hint_lists_similar_keys():
    _, sd = _gru_sd()
    typo = {k.replace("_l0", "_l00"): v for k, v in sd.items()}
    with pytest.raises(FileFormatError, match=r"lacks the key 'rnn.weight_hh_l0'; similar keys found: "
                                              r"'rnn.weight_hh_l00'"):
        fastfp.load(typo, cell="gru")
    # no hint when nothing is close
    with pytest.raises(FileFormatError, match=r"lacks the key 'rnn.weight_ih_l0'$"):
        fastfp.load({k: v for k, v in sd.items() if "weight_ih" not in k}, cell="gru")


def test_misspelt_bias_is_an_error_not_zeros():
    p, sd = _gru_sd("")
    sd["bias_hh_10"] = sd.pop("bias_hh_l0")
    with pytest.raises(FileFormatError, match=r"lacks the key 'bias_hh_l0' but has the similar key\(s\) 'bias_hh_10'"):
        fastfp.load(sd, cell="gru")
    # bias=False stays valid: the other layer keys do not count as misspellings
    two = fastfp.RNNParams.random("gru", H, H, seed=1)
    nobias = {"weight_ih_l0": p.w_ih, "weight_hh_l0": p.w_hh, "weight_ih_l1": two.w_ih, "weight_hh_l1": two.w_hh}
    m = fastfp.load(nobias, cell="gru")
    assert_array_equal(m.params.b_hh, np.zeros(3 * H))
    assert "absent (bias=False)" in m.params.source


def test_one_bias_of_two_is_refused_in_torch_files_and_warned_elsewhere(tmp_path):
    torch = pytest.importorskip("torch")
    sd = torch.nn.GRU(3, 4).state_dict()
    del sd["bias_hh_l0"]
    torch.save(sd, tmp_path / "g.pt")
    with pytest.raises(FileFormatError, match=r"has 'bias_ih_l0' but not 'bias_hh_l0'; expected both biases or neither"):
        fastfp.load(tmp_path / "g.pt")
    arrays = {k: v.numpy() for k, v in sd.items()}
    with pytest.warns(UserWarning, match=r"has 'bias_ih_l0' but not 'bias_hh_l0'.*taken as zeros"):
        m = fastfp.load(arrays, cell="gru")
    assert_array_equal(m.params.b_hh, np.zeros(12))


# ---------------------------------------------------------------------------- layers and heads
def _stacked_sd(n_layers, bidirectional, rng):
    sd = {}
    for k in range(n_layers):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            m = M if k == 0 else H * (2 if bidirectional else 1)
            sd.update({f"rnn.weight_ih_l{k}{suffix}": rng.normal(size=(3 * H, m)),
                       f"rnn.weight_hh_l{k}{suffix}": rng.normal(size=(3 * H, H)),
                       f"rnn.bias_ih_l{k}{suffix}": rng.normal(size=3 * H),
                       f"rnn.bias_hh_l{k}{suffix}": rng.normal(size=3 * H)})
    return sd


def test_a_stack_loaded_without_layer_or_direction_warns_and_picking_one_does_not():
    import warnings

    rng = np.random.default_rng(0)
    sd = {**_stacked_sd(2, True, rng), "fc.weight": rng.normal(size=(3, 2 * H)), "fc.bias": np.zeros(3)}
    with pytest.warns(UserWarning, match=r"has 2 layers and 2 directions; loaded layer 0, direction 0"):
        first = fastfp.load(sd, cell="gru")
    assert_array_equal(first.params.w_hh, sd["rnn.weight_hh_l0"])
    with pytest.warns(UserWarning, match=r"has 2 directions; loaded layer 1, direction 0") as caught:
        fastfp.load(sd, cell="gru", layer=1)
    assert not any("layers" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        last = fastfp.load(sd, cell="gru", layer=1, direction=1)
        fastfp.load(sd, cell="gru", layer=0, direction=0)  # an explicit 0 is a choice too
    assert_array_equal(last.params.w_hh, sd["rnn.weight_hh_l1_reverse"])
    # The (3, 2H) head reads both directions: no single cell's readout, and the notes say why.
    assert last.readout_weight is None and "bidirectional RNN's readout reads both directions" in last.params.source
    one_way = {**_stacked_sd(2, False, rng), "fc.weight": rng.normal(size=(3, H))}
    with pytest.warns(UserWarning, match="has 2 layers"):
        lower = fastfp.load(one_way, cell="gru")
    assert lower.readout_weight is None and "a readout reads the last layer (1)" in lower.params.source
    assert_array_equal(fastfp.load(one_way, cell="gru", layer=1).readout_weight, one_way["fc.weight"])


def test_the_first_layer_of_an_mlp_head_is_not_taken_for_the_readout():
    p, sd = _gru_sd()
    rng = np.random.default_rng(1)
    mlp = {**sd, "head.0.weight": rng.normal(size=(6, H)), "head.0.bias": np.zeros(6),
           "head.2.weight": rng.normal(size=(3, 6)), "head.2.bias": np.zeros(3)}
    model = fastfp.load(mlp, cell="gru")
    assert model.readout_weight is None
    assert model.metadata["readout_hidden_layers"] == {"head.0.weight": ["head.2.weight"]}
    assert "no readout from 'head.0.weight' (6, 4): 'head.2.weight' takes its output" in model.params.source
    forced = fastfp.load(mlp, cell="gru", readout_key="head.0.weight")
    assert_array_equal(forced.readout_weight, mlp["head.0.weight"])
    # An input projection (M, C) ahead of the RNN takes C-vectors too, but feeds the RNN: the (C, H)
    # weight is still the readout, in module order and in sorted (safetensors) order (review).
    proj = {"inp.weight": rng.normal(size=(M, 3)), **sd, "fc.weight": rng.normal(size=(3, H))}
    assert_array_equal(fastfp.load(proj, cell="gru").readout_weight, proj["fc.weight"])
    from fastfp.state_dict import model_from_state_dict

    unordered = model_from_state_dict(proj, "test", fmt="test", torch_convention=True, keys_in_module_order=False)
    assert_array_equal(unordered.readout_weight, proj["fc.weight"])
    # A linear readout beside an unrelated weight of another width is still found.
    linear = {**sd, "fc.weight": rng.normal(size=(3, H)), "aux.weight": rng.normal(size=(5, 7))}
    assert_array_equal(fastfp.load(linear, cell="gru").readout_weight, linear["fc.weight"])


def test_weights_left_out_are_named_and_an_embedding_not_taken_is_said():
    # A file sorted by name (safetensors) cannot say which (V, M) weight comes before the RNN:
    # the embedding is not taken, and the model says so (it had been dropped without a word, and
    # the CLI then fed one-hot inputs to a model that embeds its words).
    from fastfp.state_dict import model_from_state_dict

    p, sd = _gru_sd()
    rng = np.random.default_rng(2)
    clf = {"emb.weight": rng.normal(size=(10, M)), **sd, "out.weight": rng.normal(size=(5, H)),
           "out.bias": np.zeros(5), "aux.scale": np.ones(5)}
    model = model_from_state_dict(clf, "test", fmt="test", torch_convention=True, keys_in_module_order=False)
    assert model.embedding is None and model.metadata["embedding_not_taken"] == ["emb.weight"]
    assert ("no embedding: 'emb.weight' (10, 3) takes 3-vectors but a file sorted by name cannot say which weight "
            "comes before the RNN (pass embedding_key='emb.weight' if it is the embedding)") in model.params.source
    assert model.metadata["unused_keys"] == ["emb.weight", "aux.scale"]
    assert "not used: 'emb.weight' (10, 3), 'aux.scale' (5,)" in model.params.source
    taken = model_from_state_dict(clf, "test", fmt="test", torch_convention=True, keys_in_module_order=False,
                                  embedding_key="emb.weight")
    assert_array_equal(taken.embedding, clf["emb.weight"])
    assert taken.metadata["unused_keys"] == ["aux.scale"] and "embedding_not_taken" not in taken.metadata
    # In module order the embedding is found by its place; a classifier uses every key.
    whole = fastfp.load({k: v for k, v in clf.items() if k != "aux.scale"}, cell="gru")
    assert whole.embedding is not None and "unused_keys" not in whole.metadata and "not used" not in whole.params.source


def test_a_bad_weight_is_named_by_its_key_and_a_module_path_gets_a_hint():
    p, sd = _gru_sd()
    bad = dict(sd)
    bad["rnn.weight_hh_l0"] = np.array(p.w_hh)
    bad["rnn.weight_hh_l0"][1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"key 'rnn.weight_hh_l0': holds NaN or Inf \(first at index \(1, 2\)\)"):
        fastfp.load(bad, cell="gru")
    clf = {**sd, "out.weight": np.ones((3, H))}
    with pytest.raises(FileFormatError, match=r"got 'out', which is not a key .*did you mean 'out.weight'"):
        fastfp.load(clf, cell="gru", readout_key="out")


def test_a_readout_taking_m_vectors_is_not_called_an_embedding():
    # M == H: the readout fc.weight (5, H) takes M-vectors too, and is the readout, not an
    # embedding left out; a weight with a bias is a linear layer, not an nn.Embedding.
    from fastfp.state_dict import model_from_state_dict

    p = fastfp.RNNParams.random("gru", 6, 6, seed=0)
    sd = {"rnn.weight_ih_l0": p.w_ih, "rnn.weight_hh_l0": p.w_hh, "rnn.bias_ih_l0": p.b_ih,
          "rnn.bias_hh_l0": p.b_hh, "fc.weight": np.ones((5, 6)), "fc.bias": np.zeros(5)}
    model = model_from_state_dict(sd, "test", fmt="test", torch_convention=True, keys_in_module_order=False)
    assert model.metadata["readout_key"] == "fc.weight"
    assert "embedding_not_taken" not in model.metadata and "no embedding" not in model.params.source
    proj = {"proj.weight": np.ones((4, 6)), "proj.bias": np.zeros(4), **sd}
    # two (C, H) weights: no readout is taken, and that is said, not only noted in the metadata
    with pytest.warns(UserWarning, match=r"test: no readout taken: 2 weights could be it \('proj.weight', 'fc.weight'\); "
                                         "pass readout_key= to pick one"):
        model = model_from_state_dict(proj, "test", fmt="test", torch_convention=True, keys_in_module_order=False)
    assert "embedding_not_taken" not in model.metadata
    assert model.readout_weight is None and model.metadata["readout_candidates"] == ["proj.weight", "fc.weight"]
