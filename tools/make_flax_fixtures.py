"""Write small Flax msgpack fixtures and the Flax cells' own outputs into tests/data/.

Needs jax and flax (CPU). Writes ``tests/data/flax_<name>.msgpack`` (``flax.serialization.to_bytes``
of the cell's ``variables``) and ``tests/data/flax_fixtures_expected.npz`` holding, per fixture, the
inputs ``<name>_x`` (T, M), the initial state ``<name>_h0`` (fastfp layout: [h, c] for LSTMs) and the
Flax outputs ``<name>_states`` (T, N) in fastfp layout. Run: ``python tools/make_flax_fixtures.py``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

H, M, T = 6, 3, 50
SCALE = 2.5
SCALE_SIMPLE = 1.5  # at 2.5 the tanh SimpleCell is chaotic: float32 round-off grows past 1e-6 in 50 steps


def _scaled(params, key, scale=SCALE):
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for leaf, k in zip(leaves, keys):
        if leaf.ndim == 1:  # biases start at zero: draw them
            out.append(jax.random.uniform(k, leaf.shape, leaf.dtype, -1.0, 1.0))
        else:
            out.append(leaf * scale)
    return jax.tree_util.tree_unflatten(treedef, out)


def make_linen(kind: str, seed: int = 0, H: int = H, M: int = M, T: int = T):
    """(variables, x (T, M), h0 (N,), states (T, N)) of a linen cell with weights scaled up."""
    import jax
    import jax.numpy as jnp
    import flax.linen as nn

    cls = {"gru": nn.GRUCell, "lstm": nn.LSTMCell, "optlstm": nn.OptimizedLSTMCell, "simple": nn.SimpleCell,
           "mgu": nn.MGUCell, "mgu_noreset": nn.MGUCell}[kind]
    kw = {"reset_gate": False} if kind == "mgu_noreset" else {}
    cell = cls(features=H, **kw)
    k0, k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k1, (T, M), jnp.float32)
    is_lstm = kind in ("lstm", "optlstm")
    h = jax.random.normal(k2, (H,), jnp.float32) * 0.5
    c = jax.random.normal(k3, (H,), jnp.float32) * 0.5
    carry = (c, h) if is_lstm else h
    variables = cell.init(k0, carry, x[0])
    variables = {"params": _scaled(variables["params"], k3, SCALE_SIMPLE if kind == "simple" else SCALE)}
    h0 = np.concatenate([h, c]) if is_lstm else np.asarray(h)
    states = []
    for t in range(T):
        carry, _ = cell.apply(variables, carry, x[t])
        states.append(np.concatenate([carry[1], carry[0]]) if is_lstm else np.asarray(carry))
    return variables, np.asarray(x), np.asarray(h0, np.float32), np.stack(states).astype(np.float32)


def make_nnx(kind: str, seed: int = 0, H: int = H, M: int = M, T: int = T):
    """(pure-dict state, x, h0, states) of an nnx cell ('gru', 'optlstm', 'simple', 'lstm')."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    cls = {"gru": nnx.GRUCell, "optlstm": nnx.OptimizedLSTMCell, "simple": nnx.SimpleCell,
           "lstm": nnx.LSTMCell}[kind]
    cell = cls(M, H, rngs=nnx.Rngs(seed))
    pure = nnx.to_pure_dict(nnx.state(cell, nnx.Param))
    pure = _scaled(pure, jax.random.PRNGKey(seed + 100), SCALE_SIMPLE if kind == "simple" else SCALE)
    nnx.update(cell, pure)  # put the scaled weights back into the module
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    x = jax.random.normal(k1, (T, M), jnp.float32)
    is_lstm = kind in ("lstm", "optlstm")
    h = jax.random.normal(k2, (H,), jnp.float32) * 0.5
    c = jax.random.normal(k3, (H,), jnp.float32) * 0.5
    carry = (c, h) if is_lstm else h
    h0 = np.concatenate([h, c]) if is_lstm else np.asarray(h)
    states = []
    for t in range(T):
        carry, _ = cell(carry, x[t])
        states.append(np.concatenate([carry[1], carry[0]]) if is_lstm else np.asarray(carry))
    pure = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(cell, nnx.Param)))
    return pure, np.asarray(x), np.asarray(h0, np.float32), np.stack(states).astype(np.float32)


FIXTURES = {  # name -> (maker, kind, fastfp cell)
    "gru": ("linen", "gru", "gru"),
    "lstm": ("linen", "lstm", "lstm"),
    "simple": ("linen", "simple", "vanilla"),
}


def main(out_dir: str) -> None:
    from flax.serialization import to_bytes

    os.makedirs(out_dir, exist_ok=True)
    expected = {}
    for name, (maker, kind, _cell) in FIXTURES.items():
        fn = make_linen if maker == "linen" else make_nnx
        tree, x, h0, states = fn(kind, seed=7, H=4, M=3, T=20)
        with open(os.path.join(out_dir, f"flax_{name}.msgpack"), "wb") as fh:
            fh.write(to_bytes(tree))
        expected[f"{name}_x"], expected[f"{name}_h0"], expected[f"{name}_states"] = x, h0, states
    np.savez_compressed(os.path.join(out_dir, "flax_fixtures_expected.npz"), **expected)
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.startswith("flax_"))
    print(f"wrote {len(FIXTURES)} fixtures to {out_dir} ({total} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
