#!/usr/bin/env python3
"""Train the small classifiers stored in tests/data/ and write them in fastfp's params layout.

Task: 3-class categorical, uniform-score sampler, length 50, one-hot inputs (V = 4, no embedding
layer): ``fastfp.tasks.categorical(n, n_classes=3, length=50)``. Models: ``nn.GRU`` with 64 units
(fastfp cell 'gru') and ``nn.LSTM`` with 32 units (fastfp cell 'lstm'), each followed by a linear
readout with bias on the last hidden state h. Softmax cross-entropy, batch 128, fresh training
documents every step (drawn from one seeded generator).

Optimiser: the study's settings (Aitken et al., ICLR 2021, the training of its synthetic
networks): Adam (b1 0.9, b2 0.99, eps 0.1), lr 0.1 * 0.9997^step, gradient clipping at
global norm 10, L2 penalty 5e-4 * sum of squared weights (all parameters) added to the loss.
Training stops at the first evaluation (every ``EVAL_EVERY`` steps, on a fixed held-out set) whose
accuracy reaches ``TARGET``; if none does by ``MAX_STEPS``, the weights of the best evaluation are kept.

Then each model is checked with fastfp alone: ``fastfp.rollout(..., backend='cpu')`` on a fresh
500-document test set (seed ``TEST_SEED``), predictions from ``Model.logits`` of the last state;
they must reach accuracy >= 0.97 and agree with the torch model's predictions.

Training is :func:`fastfp.train.train_classifier` (deterministic: fixed seeds,
``torch.use_deterministic_algorithms(True)``; one thread unless ``--threads``).

    python tools/make_classifier_fixtures.py            # writes tests/data/{gru64,lstm32}_cat3.npz
    python tools/make_classifier_fixtures.py --out /tmp  # somewhere else
    python tools/make_classifier_fixtures.py --bench --threads 2  # bench/data/gru{128,256}_cat3.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastfp  # noqa: E402
from fastfp import tasks  # noqa: E402
from fastfp.train import train_classifier  # noqa: E402

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


MODELS = [
    # (file name, fastfp cell, hidden size, torch seed)
    ("gru64_cat3.npz", "gru", 64, 1),
    ("lstm32_cat3.npz", "lstm", 32, 2),
]
# Larger networks for the solver benchmark (bench/data/, written with --bench).
BENCH_MODELS = [
    ("gru128_cat3.npz", "gru", 128, 3),
    ("gru256_cat3.npz", "gru", 256, 4),
]


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
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    test = tasks.categorical(TEST_N, seed=TEST_SEED, **TASK)
    eval_data = tasks.categorical(EVAL_N, seed=EVAL_SEED, **TASK)
    ok = True
    for fname, cell, hidden, seed in models:
        log(f"training {cell} H={hidden}")
        gen = np.random.default_rng(TRAIN_SEED_BASE + seed)  # fresh training documents, CHUNK batches at a time
        result = train_classifier(
            lambda rng: tasks.categorical(CHUNK * BATCH, seed=gen, **TASK), cell=cell, hidden_size=hidden,
            readout_bias=True, steps=MAX_STEPS, batch_size=BATCH, seed=seed, eval_data=eval_data,
            eval_every=EVAL_EVERY, target_accuracy=TARGET, threads=args.threads, progress=log,
        )
        torch_pred = result.module.predict(test)
        torch_acc = float((torch_pred == test.labels).mean())
        meta = dict(
            task="categorical", task_params=dict(TASK), input="one-hot (embedding = identity)",
            readout="linear with bias on the last hidden state h",
            test_accuracy=round(torch_acc, 4), test_n=TEST_N, test_seed=TEST_SEED,
            held_out_accuracy=round(result.accuracy, 4), held_out_n=EVAL_N, held_out_seed=EVAL_SEED,
            steps=result.steps, batch=BATCH, seed=seed, train_seed=TRAIN_SEED_BASE + seed,
            optimizer=("Adam(b1 0.9, b2 0.99, eps 0.1), lr 0.1*0.9997^step, clip global norm 10, "
                       "L2 5e-4 on all parameters"),
            loss="softmax cross-entropy", train_seconds=round(result.seconds, 1),
            torch_version=torch.__version__, fastfp_version=fastfp.__version__,
            script="tools/make_classifier_fixtures.py",
        )
        model = dataclasses.replace(result.model, metadata=meta)
        path = os.path.join(args.out, fname)
        fastfp.save_params(path, model)
        loaded = fastfp.load_params(path)
        ff_pred = fastfp.train.predict(loaded, test, backend="cpu")
        ff_acc = float((ff_pred == test.labels).mean())
        agree = float((ff_pred == torch_pred).mean())
        log(f"{fname}: {result.steps} steps, {result.seconds:.1f} s; test acc torch {torch_acc:.4f}, "
            f"fastfp {ff_acc:.4f}, prediction agreement {agree:.4f}; {os.path.getsize(path)} bytes")
        ok &= ff_acc >= 0.97 and agree >= 0.99
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
