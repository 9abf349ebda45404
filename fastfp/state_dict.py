"""State dicts with PyTorch key names -> :class:`fastfp.Model`: finding the recurrent layer,
choosing the cell, and picking the classifier's embedding and readout.

Used by every reader that ends in a state dict (:mod:`fastfp.io_torch`, :mod:`fastfp.loading`), so
that layer discovery follows one set of rules whatever the file format.
"""

from __future__ import annotations

import difflib
import re

from .errors import FastFPError, FileFormatError, InvalidOptionError, warn_user
from .model import Model
from .params import CELLS, GATE_ORDER, RNNParams

__all__ = ["model_from_state_dict", "choose_cell", "describe_gates"]

_LAYERED = re.compile(r"^(?P<prefix>.*?)weight_hh_l(?P<layer>\d+)(?P<rev>_reverse)?$")
_CELL = re.compile(r"^(?P<prefix>.*?)weight_hh$")
_CELL_OF_G = {1: "vanilla", 3: "gru", 4: "lstm"}
_TORCH_NAMES = {"vanilla": "RNN", "gru": "GRU", "lstm": "LSTM"}


def _rnn_groups(keys) -> dict:
    """{prefix: {'kind', 'layers': {(layer, direction), ...}, 'keys': [weight_hh keys]}} for each RNN found.

    'kind' is 'layered' (``weight_hh_l<k>``), 'cell' (``weight_hh``) or 'mixed' when one prefix has
    both; the caller refuses a mixed group, so the result never depends on the order of the keys.
    """
    groups: dict = {}
    for key in keys:
        kind, m = "layered", _LAYERED.match(key)
        if not (m and (m["prefix"] == "" or m["prefix"].endswith("."))):
            kind, m = "cell", _CELL.match(key)
            if not (m and (m["prefix"] == "" or m["prefix"].endswith("."))):
                continue
        g = groups.setdefault(m["prefix"], {"kind": kind, "layers": set(), "keys": []})
        if g["kind"] != kind:
            g["kind"] = "mixed"
        g["keys"].append(key)
        g["layers"].add((int(m["layer"]), 1 if m["rev"] else 0) if kind == "layered" else (0, 0))
    return groups


_PARAM_NAME = re.compile(r"(weight|bias)(_(ih|hh|hr)(_l\d+(_reverse)?)?)?")


def is_param_name(key: str) -> bool:
    """True when the last dotted part of ``key`` is a PyTorch parameter name (``weight``, ``bias``,
    ``weight_hh_l0`` ...): a value there that is not an array would be a weight silently lost."""
    return _PARAM_NAME.fullmatch(key.rsplit(".", 1)[-1]) is not None


def _not_an_array(key: str, type_name: str) -> str:
    hint = "; convert it first, e.g. np.asarray(value, dtype=np.float32)" if type_name in ("list", "tuple") else ""
    return f"key {key!r} holds a {type_name}, expected an array (a NumPy array or a tensor){hint}"


def _similar(key: str, keys, exclude=()) -> list:
    return difflib.get_close_matches(key, [k for k in keys if k not in exclude], n=3, cutoff=0.8)


def _prefix_text(prefix: str) -> str:
    return repr(prefix[:-1]) if prefix else "'' (top level)"


def _is_rnn_key(rest: str) -> bool:
    return re.fullmatch(r"(weight|bias)_(ih|hh|hr)(_l\d+(_reverse)?)?", rest) is not None


def _is_weight(key: str) -> bool:
    return key == "weight" or key.endswith(".weight")


def _pick(sd, explicit, name, where, candidates, ncols):
    if explicit is False:
        return None
    if explicit is not None:
        if not isinstance(explicit, str) or explicit not in sd:
            hint = ""
            if isinstance(explicit, str) and explicit + ".weight" in sd:
                hint = f"; did you mean {explicit + '.weight'!r} (the key of the weight, not the module)?"
            raise FileFormatError(f"argument {name!r}: got {explicit!r}, which is not a key of the file ({where}){hint}")
        arr = sd[explicit]
        if arr.ndim != 2 or arr.shape[1] != ncols:
            raise FileFormatError(f"argument {name!r}: key {explicit!r} has shape {arr.shape}, expected (*, {ncols})")
        return explicit
    return candidates[0] if len(candidates) == 1 else None


def describe_gates(G: int) -> str:
    cells = [c for c in CELLS if len(GATE_ORDER[c]) == G]
    return f"G = {G} gate blocks (cells with {G}: {', '.join(map(repr, cells)) or 'none'})"


def gru_after_only(where: str) -> InvalidOptionError:
    return InvalidOptionError(
        f"{where}: cell='gru_reset_before' given, but this is a PyTorch nn.GRU layer, and PyTorch's GRU "
        "applies the reset gate after the recurrent matmul (n = tanh(W_n x + b_in + r * (U_n h + b_hn))), "
        "which is fastfp's cell 'gru'; leave cell= out or pass cell='gru'"
    )


def choose_cell(G: int, cell, torch_convention: bool, where: str, w_hh_key: str, shape) -> str:
    found = f"key {w_hh_key!r} has shape {tuple(shape)}: {describe_gates(G)}"
    if cell is not None and len(GATE_ORDER[cell]) != G:
        raise InvalidOptionError(
            f"{where}: cell={cell!r} expects {len(GATE_ORDER[cell])} gate blocks, but {found}"
        )
    if G == 3:
        if torch_convention:
            if cell == "gru_reset_before":
                raise gru_after_only(where)
            return "gru"
        if cell is None:
            raise InvalidOptionError(
                f"{where}: {found}, a GRU, but a state dict from this source does not record which GRU: "
                "pass cell='gru' (reset applied after the recurrent matmul: torch.nn.GRU, Flax GRUCell, "
                "Keras reset_after=True) or cell='gru_reset_before' (reset applied before it: Cho et al. "
                "2014, Keras reset_after=False)"
            )
        return cell
    if G == 2:
        if torch_convention:
            raise FileFormatError(
                f"{where}: {found}, expected 1 (RNN), 3 (GRU) or 4 (LSTM) (PyTorch has no 2-gate cell; for a "
                "UGRNN build RNNParams('ugrnn', ...) directly)"
            )
        if cell is None:
            raise InvalidOptionError(
                f"{where}: {found}; pass cell='ugrnn' if these are UGRNN weights in fastfp's gate order (u, c)"
            )
        return cell
    if G in _CELL_OF_G:
        return _CELL_OF_G[G]
    raise FileFormatError(f"{where}: {found}, expected 1 (RNN), 2 (UGRNN), 3 (GRU) or 4 (LSTM)")


def model_from_state_dict(sd: dict, where: str, *, fmt: str, torch_convention: bool, file=None, cell=None,
                          layer=None, direction=None, key_prefix=None, nonlinearity=None, embedding_key=None,
                          readout_key=None, extra_metadata=None, skipped=None, keys_in_module_order=True,
                          nonlinearity_from=None) -> Model:
    """One recurrent layer of a state dict with PyTorch key names, as a :class:`fastfp.Model`.

    Shared by :func:`fastfp.load_torch_rnn` and :func:`fastfp.load` (torch files, modules,
    safetensors, plain ``.npz``, dicts of arrays). ``where`` prefixes every error message (it names
    the file or object); ``torch_convention`` says that a 3-gate layer is PyTorch's ``nn.GRU``
    (fastfp 'gru') rather than a GRU of unknown convention, for which ``cell=`` is required.
    ``embedding_key`` / ``readout_key`` pick those weights explicitly (``False``: none).
    ``skipped`` maps the reader's entries that are not arrays to their type names: such an entry
    where a weight is needed, or a list under a parameter's name, is an error, not a weight left out.
    ``keys_in_module_order``: the dict lists the keys as the model registered its modules (a torch
    file or module, a dict, an ``.npz``), which lets an embedding be told by its place; False for
    safetensors, whose writer sorts the keys by name. ``nonlinearity_from``: where a given
    ``nonlinearity`` was read (for the notes; default: the caller).
    """
    skipped = skipped or {}
    groups = _rnn_groups(sd)
    for name, value in (("layer", layer), ("direction", direction)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise FileFormatError(f"argument {name!r}: got {value!r}, expected None or an int")
    layer_given, direction_given = layer is not None, direction is not None
    layer, direction = layer or 0, direction or 0
    if key_prefix is not None and not isinstance(key_prefix, str):
        raise FileFormatError(f"argument 'key_prefix': got {key_prefix!r}, expected a str")
    if key_prefix is not None:
        prefix = key_prefix if key_prefix == "" or key_prefix.endswith(".") else key_prefix + "."
        if prefix not in groups and prefix:
            nested = [p for p in groups if p.endswith("." + prefix)]
            if len(nested) == 1:
                prefix = nested[0]
        if prefix not in groups:
            found = ", ".join(_prefix_text(p) for p in sorted(groups)) or "none"
            raise FileFormatError(
                f"{where}: no recurrent layer under key_prefix {key_prefix!r}; RNN prefixes found: {found}"
            )
    else:
        if not groups:
            sample = ", ".join(list(sd)[:8]) or "no arrays"
            if skipped:
                sample += "; not arrays, left out: " + ", ".join(f"{k} ({t})" for k, t in list(skipped.items())[:8])
            raise FileFormatError(
                f"{where}: no recurrent layer found (no 'weight_hh_l<k>' or 'weight_hh' key; keys: {sample})"
            )
        if len(groups) > 1:
            found = ", ".join(_prefix_text(p) for p in sorted(groups))
            raise FileFormatError(f"{where}: holds several recurrent layers ({found}); pass key_prefix= to pick one")
        prefix = next(iter(groups))
    group = groups[prefix]
    # A list under a parameter's name inside the model that holds the RNN ('fc.weight' beside
    # 'rnn.weight_hh_l0') is a weight that would be lost; outside it ('config.loss.weight' beside
    # 'model.rnn.*') or under a private name ('_extra_state') it is a setting.
    model_root = prefix[: prefix.rstrip(".").rfind(".") + 1] if "." in prefix.rstrip(".") else ""
    settings = []
    for key, type_name in skipped.items():
        if type_name not in ("list", "tuple") or not is_param_name(key):
            continue
        inner = key[len(model_root):].split(".")
        if model_root and key.startswith(model_root) and not any(part.startswith("_") for part in inner):
            raise FileFormatError(f"{where}: {_not_an_array(key, type_name)}")
        settings.append(key)

    if group["kind"] == "mixed":
        cell_keys = sorted(k for k in group["keys"] if k.endswith("weight_hh"))
        layered = sorted(k for k in group["keys"] if not k.endswith("weight_hh"))
        raise FileFormatError(
            f"{where}: the RNN {_prefix_text(prefix)} has both an RNN cell's key ({', '.join(map(repr, cell_keys))}) "
            f"and a stacked RNN's keys ({', '.join(map(repr, layered))}); a PyTorch module has one or the "
            "other, so which is meant is ambiguous: remove or rename the keys of the one not wanted"
        )
    if (layer, direction) not in group["layers"]:
        listing = ", ".join(f"(layer={k}, direction={d})" for k, d in sorted(group["layers"]))
        raise FileFormatError(
            f"{where}: the RNN {_prefix_text(prefix)} has no layer={layer}, direction={direction}; available: {listing}"
        )
    n_layers = len({k for k, _ in group["layers"]})
    n_directions = len({d for _, d in group["layers"]})
    unpicked = [f"{n} {what}s" for n, what, given in ((n_layers, "layer", layer_given),
                                                      (n_directions, "direction", direction_given))
                if n > 1 and not given]
    if unpicked:
        # A stack read as its first layer is a different network from the one that feeds the readout.
        warn_user(f"{where}: the RNN {_prefix_text(prefix)} has {' and '.join(unpicked)}; loaded "
                  f"layer {layer}, direction {direction} (pass layer= or direction= to pick one; a readout "
                  "is attached only to the last forward layer)")
    suffix = (f"_l{layer}" + ("_reverse" if direction else "")) if group["kind"] == "layered" else ""
    keys = {name: f"{prefix}{name}{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if group["kind"] == "layered" and f"{prefix}weight_hr{suffix}" in sd:
        raise FileFormatError(
            f"{where}: {prefix}weight_hr{suffix} is present: an LSTM with proj_size > 0, which fastfp does not support"
        )

    rnn_keys = {k for k in sd for p in groups if k.startswith(p) and _is_rnn_key(k[len(p):])}

    def fetch(name, ndim, required):
        key = keys[name]
        if key in skipped:
            raise FileFormatError(f"{where}: {_not_an_array(key, skipped[key])}")
        if key not in sd:
            if required:
                close = _similar(key, sd, exclude=keys.values())
                hint = f"; similar keys found: {', '.join(map(repr, close))}" if close else ""
                raise FileFormatError(f"{where}: lacks the key {key!r}{hint}")
            # An absent bias means bias=False (zeros), unless a misspelt one is there and would be lost.
            close = _similar(key, sd, exclude=rnn_keys)
            if close:
                raise FileFormatError(
                    f"{where}: lacks the key {key!r} but has the similar key(s) {', '.join(map(repr, close))}, "
                    "which would be left out (the bias taken as zeros); rename the key, or remove it if the "
                    "layer has no bias"
                )
            return None
        arr = sd[key]
        if arr.ndim != ndim:
            raise FileFormatError(f"{where}: key {key!r} has shape {arr.shape}, expected a {ndim}-D array")
        if arr.dtype.kind != "f":
            raise FileFormatError(f"{where}: key {key!r} has dtype {arr.dtype}, expected floating weights")
        return arr

    w_hh = fetch("weight_hh", 2, True)
    w_ih = fetch("weight_ih", 2, True)
    b_ih = fetch("bias_ih", 1, False)
    b_hh = fetch("bias_hh", 1, False)
    rows, H = w_hh.shape
    if H == 0 or rows % H != 0:
        raise FileFormatError(
            f"{where}: key {keys['weight_hh']!r} has shape {w_hh.shape}, expected (G*H, H) with G gate blocks"
        )
    G = rows // H
    chosen = choose_cell(G, cell, torch_convention, where, keys["weight_hh"], w_hh.shape)
    if w_ih.shape[0] != rows:
        raise FileFormatError(
            f"{where}: key {keys['weight_ih']!r} has shape {w_ih.shape}, expected ({rows}, M) to match "
            f"{keys['weight_hh']!r} of shape {w_hh.shape}"
        )
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None and b.shape != (rows,):
            raise FileFormatError(f"{where}: key {keys[name]!r} has shape {b.shape}, expected ({rows},)")
    M = w_ih.shape[1]

    torch_module = None
    if torch_convention:
        torch_module = "nn." + _TORCH_NAMES[chosen] + ("Cell" if group["kind"] == "cell" else "")
        notes = [f"PyTorch {torch_module} {fmt} ({where}), keys {keys['weight_ih']!r} etc. (prefix {_prefix_text(prefix)})"]
    else:
        notes = [f"{fmt} {file or ''} with PyTorch key names, keys {keys['weight_ih']!r} etc. (prefix {_prefix_text(prefix)})"]
    if group["kind"] == "layered":
        notes.append(f"layer {layer}, direction {direction}" + (" (runs over the reversed sequence)" if direction else ""))
    notes.append("PyTorch layout and gate order kept as is")
    given = "" if torch_convention or cell is None else f" (cell={cell!r} given by the caller)"
    if chosen == "gru":
        notes.append("GRU reset applied after the recurrent matmul" + (" (torch.nn.GRU)" if torch_convention else given))
    elif chosen == "gru_reset_before":
        notes.append("GRU reset applied before the recurrent matmul" + given)
    elif chosen == "ugrnn":
        notes.append("UGRNN gate order (u, c)" + given)
    elif chosen == "lstm":
        notes.append("LSTM state is [h, c]")
    missing_bias = [keys[n] for n, b in (("bias_ih", b_ih), ("bias_hh", b_hh)) if b is None]
    if len(missing_bias) == 1:
        # PyTorch drops both biases (bias=False) or neither: one alone is a damaged or partial
        # state dict, and a zero in its place changes the dynamics (a GRU's b_hn is inside r * (.)).
        present = keys["bias_hh"] if missing_bias[0] == keys["bias_ih"] else keys["bias_ih"]
        msg = (f"{where}: has {present!r} but not {missing_bias[0]!r}; expected both biases or neither "
               "(bias=False)")
        if torch_convention:
            raise FileFormatError(msg)
        warn_user(msg + ": the missing one is taken as zeros")
    if missing_bias:
        notes.append(f"{', '.join(missing_bias)} absent" + (" (bias=False)" if len(missing_bias) == 2 else "") + ": zeros")
    if chosen == "vanilla":
        if nonlinearity is None:
            nonlinearity = "tanh"
            notes.append("nonlinearity not stored in a state dict: assumed 'tanh' (pass nonlinearity='relu' if needed)")
            # A relu RNN read as tanh gives wrong numbers everywhere: say so where it is assumed.
            warn_user(f"{where}: a vanilla RNN, whose nonlinearity a state dict does not store: assumed "
                      "'tanh' (PyTorch's default); pass nonlinearity='relu' for a relu RNN")
        else:
            notes.append(f"nonlinearity {nonlinearity!r} " + (nonlinearity_from or "given by the caller"))
    elif nonlinearity is None:
        nonlinearity = "tanh"

    metadata: dict = {
        "format": fmt,
        "file": file,
        "torch_module": torch_module,
        "cell": chosen,
        "cell_from": "caller" if cell is not None else ("PyTorch convention" if torch_convention else "gate count"),
        "rnn_prefix": prefix,
        "layer": layer,
        "direction": direction,
        "keys": {n: (keys[n] if keys[n] in sd else None) for n in keys},
        "nonlinearity": nonlinearity if chosen == "vanilla" else None,
    }
    if extra_metadata:
        metadata.update(extra_metadata)
    layers_fwd = [k for k, d in group["layers"] if d == 0]
    bidirectional = any(d == 1 for _, d in group["layers"])
    last_layer = max(layers_fwd) if layers_fwd else 0

    def weights_with_columns(n):  # the 2-D float weights outside the RNNs that take n-vectors
        return [k for k in sd if k not in rnn_keys and _is_weight(k) and sd[k].ndim == 2 and sd[k].shape[1] == n
                and sd[k].dtype.kind == "f"]

    embedding = None
    fits = weights_with_columns(M) if layer == 0 else []
    emb_candidates = [k for k in fits if "embed" in k[: -len("weight")].lower()]
    by_position = False
    if not emb_candidates and embedding_key is None and fits and keys_in_module_order:
        # An nn.Embedding under another name ('emb', 'tok', 'lookup'): state dicts list modules in
        # the order they were registered, and a classifier registers its embedding before the RNN;
        # an nn.Embedding has a weight and no bias. Only ahead of the first RNN of the dict (a
        # later RNN reads an earlier one's output), and never a square matrix (more likely a
        # bias-free input projection) or the only weight that could be the readout.
        order = {k: i for i, k in enumerate(sd)}
        first = min(order[k] for k in rnn_keys)
        if min(order[k] for k in keys.values() if k in order) == first:
            readout_like = weights_with_columns(H)
            emb_candidates = [
                k for k in fits
                if order[k] < first and k[: -len("weight")] + "bias" not in sd and sd[k].shape[0] != M
                and readout_like != [k]
            ]
            by_position = True
    emb_key = _pick(sd, embedding_key, "embedding_key", where, emb_candidates, M)
    metadata["embedding_key"] = emb_key
    if emb_key is None and len(emb_candidates) > 1 and embedding_key is None:
        metadata["embedding_candidates"] = emb_candidates
        notes.append(f"no embedding: ambiguous between {emb_candidates} (pass embedding_key=)")
        # Inputs would be one-hot where the model looks its words up in one of these tables.
        warn_user(f"{where}: no embedding taken: {len(emb_candidates)} weights could be it "
                  f"({', '.join(map(repr, emb_candidates))}); pass embedding_key= to pick one")
    if emb_key is not None:
        embedding = sd[emb_key]
        how = " (the one bias-free (V, M) weight before the RNN; embedding_key= picks another, False none)"
        notes.append(f"embedding {emb_key!r}" + (how if by_position else ""))
    readout_weight = readout_bias = None
    applicable = layer == last_layer and not bidirectional and direction == 0
    ro_candidates = [
        k for k in weights_with_columns(H) if k != emb_key and "embed" not in k.lower()
    ] if applicable else []
    if not applicable and readout_key is None:
        notes.append("no readout: " + ("a bidirectional RNN's readout reads both directions, which one cell does not hold"
                                       if bidirectional else f"a readout reads the last layer ({last_layer}), not this one"))
    if readout_key is None and len(ro_candidates) >= 1:
        # A (C1, H) weight whose output another weight (C2, C1) takes in is an MLP head's first
        # layer, not a linear readout: its C1 outputs are no class scores.
        order = {k: i for i, k in enumerate(sd)}
        feeds = {}
        for k in ro_candidates:
            rows = sd[k].shape[0]
            if rows == H:  # (H, H): cannot be told from a readout of H classes by shape
                continue
            # In a dict in module order the consumer comes after the candidate; in one sorted by
            # name (safetensors) a weight whose output is the RNN's input (an input projection,
            # (M, C1)) is no consumer.
            later = [j for j in weights_with_columns(rows) if j not in (k, emb_key)
                     and (order[j] > order[k] if keys_in_module_order else sd[j].shape[0] != M)]
            if later:
                feeds[k] = later
        if feeds:
            ro_candidates = [k for k in ro_candidates if k not in feeds]
            metadata["readout_hidden_layers"] = {k: v for k, v in feeds.items()}
            for k, later in feeds.items():
                notes.append(f"no readout from {k!r} {sd[k].shape}: {', '.join(map(repr, later))} takes its output "
                             "(an MLP head, not a linear readout; readout_key= uses it anyway)")
    ro_key = _pick(sd, readout_key, "readout_key", where, ro_candidates, H)
    metadata["readout_key"] = ro_key
    if ro_key is None and len(ro_candidates) > 1 and readout_key is None:
        metadata["readout_candidates"] = ro_candidates
        notes.append(f"no readout: ambiguous between {ro_candidates} (pass readout_key=)")
        warn_user(f"{where}: no readout taken: {len(ro_candidates)} weights could be it "
                  f"({', '.join(map(repr, ro_candidates))}); pass readout_key= to pick one")
    metadata["readout_bias_key"] = None
    if ro_key is not None:
        readout_weight = sd[ro_key]
        bias_key = ro_key[: -len("weight")] + "bias"
        if bias_key in skipped:
            raise FileFormatError(f"{where}: {_not_an_array(bias_key, skipped[bias_key])}")
        if bias_key in sd:
            if sd[bias_key].shape != (readout_weight.shape[0],):
                raise FileFormatError(
                    f"{where}: readout bias {bias_key!r} has shape {sd[bias_key].shape}, expected "
                    f"({readout_weight.shape[0]},) to match readout weight {ro_key!r} of shape {readout_weight.shape}"
                )
            readout_bias = sd[bias_key]
            metadata["readout_bias_key"] = bias_key
        notes.append(f"readout {ro_key!r}" + (f" + {bias_key!r}" if readout_bias is not None else " (no bias)"))
    # (After the readout is picked: with M == H the readout takes M-vectors too. A weight with a
    # bias is a linear layer, not an nn.Embedding.)
    untaken = [k for k in fits if k != ro_key and k[: -len("weight")] + "bias" not in sd]
    if emb_key is None and embedding_key is None and untaken and len(emb_candidates) <= 1:
        # A weight that could feed the RNN but was not taken: say so, or inputs would silently
        # be one-hot where the model looks its words up in that table.
        why = ("a file sorted by name cannot say which weight comes before the RNN" if not keys_in_module_order
               else "it is not a bias-free (V, M) weight registered before the RNN")
        listed = ", ".join(f"{k!r} {sd[k].shape}" for k in untaken[:3])
        metadata["embedding_not_taken"] = list(untaken)
        notes.append(f"no embedding: {listed} take{'s' if len(untaken) == 1 else ''} {M}-vectors but {why} "
                     f"(pass embedding_key={untaken[0]!r} if it is the embedding)")
    used = rnn_keys | {k for k in (emb_key, ro_key, metadata["readout_bias_key"]) if k is not None}
    unused = [k for k in sd if k not in used]
    if unused:
        metadata["unused_keys"] = unused
        listed = ", ".join(f"{k!r} {tuple(sd[k].shape)}" for k in unused[:5])
        notes.append(f"not used: {listed}" + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""))
    metadata["conventions"] = (
        "fastfp RNNParams use PyTorch's layout (w_ih (G*H, M), w_hh (G*H, H)) and gate orders; "
        "logits = readout_weight @ h + readout_bias on the h part of the state"
    )
    try:
        params = RNNParams(chosen, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity, source="; ".join(notes))
    except FastFPError as exc:
        text = str(exc)
        field = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
        named = [f for f in field if f"argument {f!r}" in text]
        if len(named) == 1:  # the check of one weight: name the file's key, not RNNParams' field
            raise type(exc)(f"{where}: " + text.replace(f"argument {named[0]!r}", f"key {keys[field[named[0]]]!r}")) from None
        names = ", ".join(repr(keys[n]) for n in keys)
        raise type(exc)(f"{where}: keys {names}: {text}") from None
    try:
        model = Model(params, embedding, readout_weight, readout_bias, None, metadata)
    except FastFPError as exc:  # the embedding / readout checks: name the file and the keys
        used = [repr(k) for k in (emb_key, ro_key, metadata["readout_bias_key"]) if k is not None]
        raise type(exc)(f"{where}: key{'s' if len(used) > 1 else ''} {', '.join(used)}: {exc}") from None
    if settings:
        # Outside the model that holds the RNN (or in a flat dict, which cannot say where the model
        # ends) a list under a parameter's name may be a setting ('config.loss.weight') or a weight
        # kept as a list: it is left out, and said so.
        import warnings

        warnings.warn(f"{where}: left out {len(settings)} list(s) under parameter names, not arrays: "
                      f"{', '.join(map(repr, settings[:5]))}; convert them with np.asarray if they are weights",
                      UserWarning, stacklevel=3)
    return model
