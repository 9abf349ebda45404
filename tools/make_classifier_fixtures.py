#!/usr/bin/env python3
"""Train the small classifiers stored in tests/data/ and write them in fastfp's params layout.

Task: 3-class categorical, uniform-score sampler, length 50, one-hot inputs (V = 4, no embedding
layer): ``fastfp.tasks.categorical(n, n_classes=3, length=50)``. Models: ``nn.GRU`` with 64 units
(fastfp cell 'gru') and ``nn.LSTM`` with 32 units (fastfp cell 'lstm'), each followed by a linear
readout with bias on the last hidden state h. Softmax cross-entropy, batch 128, fresh training
documents every step (drawn from one seeded generator).

Optimiser: the study's settings (see /work/shared/docs/paper-notes.md, "Training used for the
synthetic networks"): Adam (b1 0.9, b2 0.99, eps 0.1), lr 0.1 * 0.9997^step, gradient clipping at
global norm 10, L2 penalty 5e-4 * sum of squared weights (all parameters) added to the loss.
Training stops at the first evaluation (every ``EVAL_EVERY`` steps, on a fixed held-out set) whose
accuracy reaches ``TARGET``; if none does by ``MAX_STEPS``, the weights of the best evaluation are kept.

Then each model is checked with fastfp alone: ``fastfp.rollout(..., backend='cpu')`` on a fresh
500-document test set (seed ``TEST_SEED``), predictions from ``Model.logits`` of the last state;
they must reach accuracy >= 0.97 and agree with the torch model's predictions.

Deterministic: fixed seeds, ``torch.use_deterministic_algorithms(True)``, one thread.

    python tools/make_classifier_fixtures.py            # writes tests/data/{gru64,lstm32}_cat3.npz
    python tools/make_classifier_fixtures.py --out /tmp  # somewhere else
    python tools/make_classifier_fixtures.py --bench --threads 2  # bench/data/gru{128,256}_cat3.npz
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fastfp  # noqa: E402
from fastfp import Model, RNNParams, tasks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TASK = dict(n_classes=3, length=50, sampler="uniform_score")
BATCH = 128
EVAL_EVERY = 100
EVAL_N = 2000           # held-out documents used for the stopping rule
TARGET = 0.99           # stop when the held-out accuracy reaches this (the fixtures need >= 0.97)
MAX_STEPS = 6000
TEST_N = 500            # fresh documents for the fastfp check
TRAIN_SEED_BASE = 1000  # training documents: tasks.categorical(..., seed=Generator(TRAIN_SEED_BASE + k))
EVAL_SEED = 2000
TEST_SEED = 3000
CHUNK = 50              # training batches generated at a time

# the study's optimiser (paper-notes.md)
OPT = dict(lr0=0.1, decay=0.9997, betas=(0.9, 0.99), eps=0.1, clip=10.0, l2=5e-4)

MODELS = [
    # (file name, fastfp cell, torch class, hidden size, torch seed)
    ("gru64_cat3.npz", "gru", nn.GRU, 64, 1),
    ("lstm32_cat3.npz", "lstm", nn.LSTM, 32, 2),
]
# Larger networks for the solver benchmark (bench/data/, written with --bench).
BENCH_MODELS = [
    ("gru128_cat3.npz", "gru", nn.GRU, 128, 3),
    ("gru256_cat3.npz", "gru", nn.GRU, 256, 4),
]


class Classifier(nn.Module):
    def __init__(self, rnn_cls, vocab_size: int, hidden: int, n_classes: int):
        super().__init__()
        self.rnn = rnn_cls(vocab_size, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, n_classes)

    def forward(self, x):
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        return self.readout(h[0])


def accuracy(net, data) -> tuple[float, np.ndarray]:
    with torch.no_grad():
        pred = net(torch.from_numpy(data.one_hot())).argmax(1).numpy()
    return float((pred == data.labels).mean()), pred


def train(cell, rnn_cls, hidden, torch_seed, log):
    torch.manual_seed(torch_seed)
    V, C = TASK["n_classes"] + 1, TASK["n_classes"]
    net = Classifier(rnn_cls, V, hidden, C)
    opt = torch.optim.Adam(net.parameters(), lr=OPT["lr0"], betas=OPT["betas"], eps=OPT["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: OPT["decay"] ** s)
    loss_fn = nn.CrossEntropyLoss()
    eval_data = tasks.categorical(EVAL_N, seed=EVAL_SEED, **TASK)
    gen = np.random.default_rng(TRAIN_SEED_BASE + torch_seed)
    t0 = time.perf_counter()
    acc, step = 0.0, 0
    best = (-1.0, 0, None)  # (held-out accuracy, step, state_dict)
    while step < MAX_STEPS:
        chunk = tasks.categorical(CHUNK * BATCH, seed=gen, **TASK)
        xs, ys = torch.from_numpy(chunk.one_hot()), torch.from_numpy(np.array(chunk.labels))
        for k in range(CHUNK):
            sl = slice(k * BATCH, (k + 1) * BATCH)
            loss = loss_fn(net(xs[sl]), ys[sl])
            if OPT["l2"]:
                loss = loss + OPT["l2"] * sum((p * p).sum() for p in net.parameters())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), OPT["clip"])
            opt.step()
            sched.step()
            step += 1
            if step % EVAL_EVERY == 0:
                acc, _ = accuracy(net, eval_data)
                if acc > best[0]:
                    best = (acc, step, copy.deepcopy(net.state_dict()))
                log(f"  {cell}{hidden} step {step:5d} loss {loss.item():.4f} held-out acc {acc:.4f} "
                    f"({time.perf_counter() - t0:.0f} s)")
                if acc >= TARGET:
                    break
        if acc >= TARGET:
            break
    if acc < TARGET and best[2] is not None:
        log(f"  {cell}{hidden}: target not reached; keeping step {best[1]} (held-out acc {best[0]:.4f})")
        acc, step = best[0], best[1]
        net.load_state_dict(best[2])
    return net, step, acc, time.perf_counter() - t0


def to_fastfp(net, cell, meta) -> Model:
    r = net.rnn
    get = lambda name: getattr(r, name).detach().numpy().astype(np.float32)  # noqa: E731
    params = RNNParams(
        cell, get("weight_ih_l0"), get("weight_hh_l0"), get("bias_ih_l0"), get("bias_hh_l0"),
        source=f"torch.nn.{type(r).__name__}(input_size={r.input_size}, hidden_size={r.hidden_size}), "
               "weights copied as is (PyTorch layout); trained by tools/make_classifier_fixtures.py",
    )
    V = r.input_size
    return Model(
        params,
        embedding=np.eye(V, dtype=np.float32),
        readout_weight=net.readout.weight.detach().numpy().astype(np.float32),
        readout_bias=net.readout.bias.detach().numpy().astype(np.float32),
        vocab=tasks.categorical(1, **TASK, seed=0).vocab,
        metadata=meta,
    )


def fastfp_accuracy(model: Model, data) -> tuple[float, np.ndarray]:
    states = fastfp.rollout(model.params, None, data.one_hot(np.float32), lengths=data.lengths, backend="cpu")
    pred = model.logits(states[:, -1]).argmax(1)
    return float((pred == data.labels).mean()), pred


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder (default tests/data, or bench/data with --bench)")
    ap.add_argument("--bench", action="store_true", help="train the larger benchmark GRUs (128, 256 units)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    args = ap.parse_args(argv)
    models = BENCH_MODELS if args.bench else MODELS
    if args.out is None:
        args.out = os.path.join(ROOT, "bench" if args.bench else "tests", "data")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    test = tasks.categorical(TEST_N, seed=TEST_SEED, **TASK)
    ok = True
    for fname, cell, rnn_cls, hidden, seed in models:
        log(f"training {cell} H={hidden}")
        net, steps, acc, secs = train(cell, rnn_cls, hidden, seed, log)
        torch_acc, torch_pred = accuracy(net, test)
        meta = dict(
            task="categorical", task_params=dict(TASK), input="one-hot (embedding = identity)",
            readout="linear with bias on the last hidden state h",
            test_accuracy=round(torch_acc, 4), test_n=TEST_N, test_seed=TEST_SEED,
            held_out_accuracy=round(acc, 4), held_out_n=EVAL_N, held_out_seed=EVAL_SEED,
            steps=steps, batch=BATCH, seed=seed, train_seed=TRAIN_SEED_BASE + seed,
            optimizer=("Adam(b1 0.9, b2 0.99, eps 0.1), lr 0.1*0.9997^step, clip global norm 10, "
                       "L2 5e-4 on all parameters"),
            loss="softmax cross-entropy", train_seconds=round(secs, 1),
            torch_version=torch.__version__, fastfp_version=fastfp.__version__,
            script="tools/make_classifier_fixtures.py",
        )
        model = to_fastfp(net, cell, meta)
        path = os.path.join(args.out, fname)
        fastfp.save_params(path, model)
        loaded = fastfp.load_params(path)
        ff_acc, ff_pred = fastfp_accuracy(loaded, test)
        agree = float((ff_pred == torch_pred).mean())
        log(f"{fname}: {steps} steps, {secs:.1f} s; test acc torch {torch_acc:.4f}, fastfp {ff_acc:.4f}, "
            f"prediction agreement {agree:.4f}; {os.path.getsize(path)} bytes")
        ok &= ff_acc >= 0.97 and agree >= 0.99
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
