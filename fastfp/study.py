"""Reproduce the study: train (or load) a battery of text classifiers, find their fixed points, measure.

The study is Aitken et al., *The geometry of integration in text classification RNNs* (ICLR 2021).
Its claims, checked per network by :func:`run_network`:

* N categorical classes -> an (N-1)-dimensional manifold of slow/fixed points (participation ratio
  of the fixed points near N - 1), readout vectors at the simplex angle arccos(-1/(N-1)), and at the
  fixed points one slow eigenmode (|lambda| near 1) per manifold dimension;
* ordered classes reduce the dimension (5 ordered classes -> about 2), K labels -> about K;
* the word-count statistics of the training data predict the dimension;
* the final state hardly depends on word order.

Building blocks: :class:`NetworkSpec` (one network: task, cell, size, seed, training settings, with
a filesystem-safe ``key``), :func:`battery` (named lists of specs), :func:`run_network` (one network,
top-level and picklable, so a process pool or Dask can map it), :func:`run_study` (a serial runner
that resumes) and :func:`write_table` (markdown, CSV and JSON of measured vs predicted dimension).

Only :func:`run_network` needs PyTorch (``pip install 'fastfp-rnn[torch]'``), and only when the
network's ``<key>.model.npz`` is not in ``out_dir`` yet; importing this module never imports torch.

Artifacts per network in ``out_dir`` (each written to a temporary file, then ``os.replace``):

``<key>.model.npz``
    The trained classifier (:func:`fastfp.save_params`; training facts in its metadata).
``<key>.fixed_points.npz``
    The distinct fixed/slow points with their eigenvalues (:meth:`FixedPoints.save`; the
    Jacobians and eigenvectors are left out to keep the file small).
``<key>.figures.npz``
    What a report needs to draw figures: PCA of the hidden states (top 5 components, mean,
    explained variance), a few hundred trajectory states and the final states projected on the top PCs with
    their labels and time steps, the fixed points projected, their top eigenvalues and time
    constants, the readout weights and their projection.
``<key>.row.json``
    The row returned by :func:`run_network` (its presence marks the network as done).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import analysis
from ._atomic import atomic_path
from ._validate import progress_logger
from . import tasks as _tasks
from ._version import __version__
from .errors import ArgumentTypeError, FileFormatError, InvalidOptionError
from .params import CELLS
from .train import _GAINED_INITS, RECURRENT_INITS, _check_forget_bias

__all__ = [
    "NetworkSpec",
    "StudyResult",
    "TASKS",
    "BATTERIES",
    "FP_INPUTS",
    "battery",
    "expectations",
    "run_network",
    "run_study",
    "study_search",
    "write_table",
    "table_markdown",
]

TASKS = {"categorical": _tasks.categorical, "ordered": _tasks.ordered, "multilabel": _tasks.multilabel,
         "correlated": _tasks.correlated}
# Task keyword arguments a spec may set (n and seed are the runner's).
_TASK_KWARGS = {
    "categorical": ("n_classes", "length", "sampler", "min_length", "balance"),
    "ordered": ("n_classes", "length", "bank"),
    "multilabel": ("n_labels", "length", "sampler"),
    "correlated": ("n_classes", "mixing", "length", "sampler", "min_length", "balance"),
}
BATTERIES = ("quick", "paper", "extra", "low-l2", "study-cell")
FP_INPUTS = ("neutral", "zero", "mean")
_DEFAULT_LR_DECAY = 0.9997
_DEFAULT_ADAM_EPS = 0.1
_DEFAULT_RECURRENT_INIT = "default"
_DEFAULT_RECURRENT_GAIN = 1.0
_DEFAULT_FORGET_BIAS = 0.0
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

# Seed streams: the random draws of a network come from np.random.default_rng([spec.seed, stream]);
# the training documents and weights from train_classifier's own seeding with spec.seed (stream 1 unused).
_EVAL, _TEST, _WORDCOUNT, _SAMPLE, _SHUFFLE, _FIGURE = range(2, 8)


def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected an integer >= {minimum}")
    return int(value)


def _float(name, value, lo, hi, *, lo_open=True):
    try:
        if isinstance(value, (str, bytes)):  # float('1e-3') would parse: a number must be given as one
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a number in {'(' if lo_open else '['}{lo}, {hi}]") from None
    if isinstance(value, bool) or not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
    return v


# =========================================================================== NetworkSpec
@dataclass(frozen=True)
class NetworkSpec:
    """One network of a study: task, architecture, seed and training settings.

    Parameters
    ----------
    task : {'categorical', 'ordered', 'multilabel', 'correlated'}
        The synthetic task (:mod:`fastfp.tasks`).
    task_kwargs : dict or tuple of (name, value) pairs
        Arguments of the task function other than ``n`` and ``seed``, e.g. ``{'n_classes': 3}``,
        ``{'n_classes': 5, 'bank': '3word'}``, ``{'n_labels': 3}``. Stored as a sorted tuple of
        pairs so the spec is hashable; :attr:`task_params` gives them back as a dict.
    cell : str
        A fastfp cell (``fastfp.CELLS``): 'gru', 'lstm', 'ugrnn', 'vanilla', 'gru_reset_before'.
    hidden_size : int
    seed : int
        Seeds the initial weights and every random draw of the network (training, held-out and test
        documents, initial states of the solver, shuffles).
    steps : int
        Maximum optimiser steps.
    target_accuracy : float in (0, 1]
        Training stops at the first held-out evaluation (every ``eval_every`` steps) reaching it;
        if none does, the best evaluation's weights are kept.
    l2, lr, batch_size : training settings (the study's defaults: 5e-4, 0.1, 128).
    eval_every : int
    train_docs : int
        Fresh training documents generated per chunk (training never reuses a document).
    eval_docs : int
        Held-out documents of the stopping rule.
    lr_decay : float in (0, 1]
        The learning rate is ``lr * lr_decay ** step`` (the study's 0.9997 by default). Left out of
        :meth:`to_dict` (and so of the key) at its default, which keeps the keys of specs written
        before this field existed.
    adam_eps : float > 0
        Adam's epsilon (the study's 0.1 by default; 1e-8 is PyTorch's). Left out of
        :meth:`to_dict` at its default, as ``lr_decay``.
    recurrent_init : {'default', 'identity', 'orthogonal', 'normal'}
        Initial recurrent weights (``train_classifier``'s ``recurrent_init``): PyTorch's init by
        default, ``recurrent_gain * I``, ``recurrent_gain`` times a random orthogonal matrix or
        i.i.d. N(0, recurrent_gain^2 / H) entries per gate block. Left out of :meth:`to_dict` at
        its default, as ``lr_decay``.
    recurrent_gain : float in (0, 10]
        The scale of 'identity' / 'orthogonal' / 'normal' (1.0; must stay 1.0 with 'default').
        Left out of :meth:`to_dict` at its default.
    forget_bias : float in [-10, 10]
        'lstm' only (``train_classifier``'s ``forget_bias``): a constant added to the forget gate,
        as renn's LSTM adds 1.0; 0.0 is PyTorch's LSTM. Left out of :meth:`to_dict` at its default.

    Attributes
    ----------
    key : str
        A filesystem-safe id, unique per spec and stable across processes and versions of Python:
        readable fields followed by 10 hex digits of a SHA-1 of every field.
    """

    task: str
    task_kwargs: Any = ()
    cell: str = "gru"
    hidden_size: int = 64
    seed: int = 0
    steps: int = 6000
    target_accuracy: float = 0.98
    l2: float = 5e-4
    lr: float = 0.1
    batch_size: int = 128
    eval_every: int = 100
    train_docs: int = 2048
    eval_docs: int = 1000
    lr_decay: float = 0.9997
    adam_eps: float = 0.1
    recurrent_init: str = "default"
    recurrent_gain: float = 1.0
    forget_bias: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise InvalidOptionError(
                f"argument 'task': got {self.task!r}, expected one of {', '.join(map(repr, TASKS))}"
            )
        kw = self.task_kwargs
        if isinstance(kw, dict):
            items = list(kw.items())
        else:
            try:
                items = [tuple(p) for p in kw]
                if any(len(p) != 2 for p in items):
                    raise ValueError
            except (TypeError, ValueError):
                raise InvalidOptionError(
                    f"argument 'task_kwargs': got {kw!r}, expected a dict or (name, value) pairs"
                ) from None
        allowed = _TASK_KWARGS[self.task]
        for name, value in items:
            if name not in allowed:
                raise InvalidOptionError(
                    f"argument 'task_kwargs': {name!r} is not an argument of task {self.task!r}; "
                    f"expected some of {', '.join(map(repr, allowed))}"
                )
            if not isinstance(value, (str, int, float, bool, type(None))) or isinstance(value, np.generic):
                raise InvalidOptionError(
                    f"argument 'task_kwargs': {name!r} = {value!r} ({type(value).__name__}), expected a str, int, "
                    "float, bool or None"
                )
        if len({n for n, _ in items}) != len(items):
            raise InvalidOptionError(f"argument 'task_kwargs': got repeated names in {kw!r}")
        object.__setattr__(self, "task_kwargs", tuple(sorted(items)))
        # The task function checks the values themselves (n_classes >= 2, known bank, ...).
        TASKS[self.task](4, **self.task_params, seed=0)
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise InvalidOptionError(f"argument 'cell': got {self.cell!r}, expected one of {', '.join(map(repr, CELLS))}")
        for name, minimum in (("hidden_size", 1), ("seed", 0), ("steps", 1), ("batch_size", 1),
                              ("eval_every", 1), ("train_docs", 1), ("eval_docs", 1)):
            object.__setattr__(self, name, _int(name, getattr(self, name), minimum))
        object.__setattr__(self, "target_accuracy", _float("target_accuracy", self.target_accuracy, 0.0, 1.0))
        object.__setattr__(self, "l2", _float("l2", self.l2, 0.0, 1.0, lo_open=False))
        object.__setattr__(self, "lr", _float("lr", self.lr, 0.0, 10.0))
        object.__setattr__(self, "lr_decay", _float("lr_decay", self.lr_decay, 0.0, 1.0))
        object.__setattr__(self, "adam_eps", _float("adam_eps", self.adam_eps, 0.0, 1.0))
        if not isinstance(self.recurrent_init, str) or self.recurrent_init not in RECURRENT_INITS:
            raise InvalidOptionError(f"argument 'recurrent_init': got {self.recurrent_init!r}, expected one of "
                                     f"{', '.join(map(repr, RECURRENT_INITS))}")
        object.__setattr__(self, "recurrent_gain", _float("recurrent_gain", self.recurrent_gain, 0.0, 10.0))
        if self.recurrent_init == "default" and self.recurrent_gain != 1.0:
            raise InvalidOptionError(
                f"argument 'recurrent_gain': got {self.recurrent_gain!r} with recurrent_init 'default' (PyTorch's "
                "init, which has no gain); expected 1.0, or choose recurrent_init " + _GAINED_INITS
            )
        object.__setattr__(self, "forget_bias", _check_forget_bias(
            self.cell, _float("forget_bias", self.forget_bias, -10.0, 10.0, lo_open=False)))

    # ------------------------------------------------------------------ derived
    @property
    def task_params(self) -> dict:
        """The task's keyword arguments as a dict."""
        return dict(self.task_kwargs)

    @property
    def n_outputs(self) -> int:
        """Classes (categorical, ordered, correlated) or labels (multilabel) of the task."""
        p = self.task_params
        default = {"ordered": 5, "correlated": 4}.get(self.task, 3)  # the task functions' defaults
        return int(p.get("n_labels", p.get("n_classes", default)))

    @property
    def length(self) -> int:
        """L, the (maximum) document length of the task."""
        return int(self.task_params.get("length", 50))

    def to_dict(self) -> dict:
        """Every field, JSON-serialisable (``task_kwargs`` as a dict)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["task_kwargs"] = self.task_params
        # Fields added after saved batteries existed are left out at their defaults, so the keys
        # (a hash of this dict) stay those of the specs made before them.
        for name, default in (("lr_decay", _DEFAULT_LR_DECAY), ("adam_eps", _DEFAULT_ADAM_EPS),
                              ("recurrent_init", _DEFAULT_RECURRENT_INIT),
                              ("recurrent_gain", _DEFAULT_RECURRENT_GAIN),
                              ("forget_bias", _DEFAULT_FORGET_BIAS)):
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkSpec":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise ArgumentTypeError(f"argument 'd': got {type(d).__name__}, expected a dict from NetworkSpec.to_dict")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidOptionError(f"argument 'd': unknown NetworkSpec fields {sorted(unknown)}")
        return cls(**d)

    @property
    def key(self) -> str:
        short = {"n_classes": "n", "n_labels": "k", "length": "L", "bank": "", "sampler": "", "min_length": "Lmin",
                 "balance": "bal", "mixing": "mix"}
        parts = [self.task]
        for name, value in self.task_kwargs:
            if name == "sampler" and value == "uniform_score":
                continue  # the default sampler keeps keys short
            parts.append(f"{short.get(name, name)}{value}")
        parts += [self.cell, f"h{self.hidden_size}", f"s{self.seed}"]
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        text = "-".join(parts) + "-" + digest
        return "".join(c if c in _KEY_CHARS else "_" for c in text)

    def make_task(self, n: int, rng) -> "_tasks.TaskData":
        """n documents of the spec's task drawn with ``rng``."""
        return TASKS[self.task](n, **self.task_params, seed=rng)


# =========================================================================== batteries
def battery(name: str) -> list[NetworkSpec]:
    """A named list of networks.

    ``'quick'``
        Two tiny networks (2-class GRU and 3-class vanilla RNN, 12 units, documents of 12 tokens)
        that train in a few seconds: the default tests and a smoke run.
    ``'paper'``
        The study's claims (docs/reproduction.md, "Which claims hold"): categorical N = 2, 3, 4, 5 with GRU, LSTM,
        UGRNN and vanilla cells; ordered 5-class good/bad/the (GRU, L2 1e-2 as the study); multi-label
        K = 3 (GRU); the ordered task once more with L2 5e-4. 64 units, documents of 50 tokens, the
        study's optimiser, except for the vanilla RNN: Adam epsilon 1e-8, lr 1e-3 decaying as
        0.9999^step, up to 20000 steps, from an orthogonal initial recurrent matrix
        (``recurrent_init='orthogonal'``; from PyTorch's init at lr 0.01 it stayed at accuracy
        0.946 at N = 5 with bent manifolds). Its keys are those these networks had in ``'extra'``.
    ``'extra'``
        With the settings of ``'paper'``: seeds 1 and 2 of the 3-class categorical GRU, LSTM and
        UGRNN; the ordered 5-class task with the 5-word bank (GRU, L2 5e-4); correlated classes
        (:func:`fastfp.tasks.correlated`, mixing 0.75) with N = 3 and 4 (GRU); the vanilla RNN at
        N = 5 with 128 units, lr 0.01 decaying as 0.9999^step, up to 20000 steps; the vanilla RNN at
        N = 5, 3, 4 with 64 units, Adam epsilon 1e-8, lr 1e-3 decaying as 0.9999^step, up to 20000 steps;
        seeds 1 and 2 of the LSTM at N = 4 and 5; the vanilla N = 5 of Adam epsilon 1e-8 again with
        up to 40000 steps and lr decaying as 0.99995^step, with 128 units (up to 30000 steps), and with
        batches of 256 at lr 2e-3 (up to 40000 steps); the vanilla RNN of Adam epsilon 1e-8 (lr 1e-3 *
        0.9999^step, up to 20000 steps) from the identity at N = 5, and seed 1 of the orthogonal
        start at N = 5 (seed 0 at N = 2..5 is ``'paper'``'s vanilla RNN; it was here before).
    ``'low-l2'``
        The networks of ``'paper'`` with the L2 penalty at 1e-4 instead of 5e-4 (the study swept
        1e-5..1e-2): categorical N = 3, 2, 4, 5 with GRU, LSTM and UGRNN; the ordered 5-class task
        (3-word bank) and multi-label K = 3 (GRU); the vanilla RNN of ``'paper'`` (orthogonal
        start, Adam epsilon 1e-8, lr 1e-3 * 0.9999^step, up to 20000 steps) at N = 3, 2, 4, 5; seed 1
        of the GRU and LSTM at N = 3, 4, 5.
    ``'study-cell'``
        The GRU as the study's code builds it (renn's ``GRU``): the reset gate applied before the
        recurrent matmul (``cell='gru_reset_before'``) and every recurrent weight drawn from
        N(0, 1/H) (``recurrent_init='normal'``, renn's fan-in normal; the input weights and biases
        keep PyTorch's init, where renn draws N(0, 1/H) and zeros), otherwise ``'paper'``'s
        settings: the ordered 5-class good/bad/the task at the study's L2 1e-2 (64 units, seeds 0
        and 1; 128 units as the study, seed 0), the 3-class categorical task (L2 5e-4) and the
        ordered task again at L2 3e-3 (seeds 0, 1, 2) and 2e-3, and with the 5-word bank at the
        study's L2 5e-3 for it (seeds 0, 1, 2). And renn's ``LSTM``: the same
        normal recurrent init and a constant forget bias of 1 (``forget_bias=1.0``), categorical
        N = 4 and 5, seeds 0, 1, 2, L2 5e-4.
    """
    if name == "quick":
        common = dict(hidden_size=12, steps=600, target_accuracy=0.95, eval_every=50, train_docs=1024, eval_docs=400)
        return [
            NetworkSpec("categorical", {"n_classes": 2, "length": 12}, cell="gru", **common),
            NetworkSpec("categorical", {"n_classes": 3, "length": 12}, cell="vanilla", **common),
        ]
    if name == "paper":
        # Stopping at 0.995 on 2000 held-out documents: a network stopped at its first evaluation
        # above ~0.98 (often step 100-200) has not formed its attractor yet.
        paper = dict(hidden_size=64, steps=6000, target_accuracy=0.995, eval_docs=2000)
        # The vanilla RNN oscillates at the study's lr 0.1 (best held-out accuracy 0.948 in 6000 steps
        # on N = 2); at lr 0.01 (up to 12000 steps) from PyTorch's init its N = 5 stays at 0.946 and
        # its manifolds bend (PR 2.39, 3.67, 4.36 at N = 3, 4, 5). It trains as in 'extra' instead:
        # Adam eps 1e-8, lr 1e-3 * 0.9999^step, up to 20000 steps, from an orthogonal recurrent matrix.
        vanilla = {**paper, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.9999, "steps": 20000,
                   "recurrent_init": "orthogonal"}
        specs = [
            NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell=cell,
                        **(vanilla if cell == "vanilla" else paper))
            for n in (3, 2, 4, 5)
            for cell in ("gru", "lstm", "ugrnn", "vanilla")
        ]
        # Ordered first after N = 3 (the claims with a single network each), then N = 2, 4, 5.
        specs[4:4] = [
            NetworkSpec("ordered", {"n_classes": 5, "length": 50, "bank": "3word"}, cell="gru",
                        **{**paper, "steps": 8000}, l2=1e-2),
            NetworkSpec("multilabel", {"n_labels": 3, "length": 50}, cell="gru", **{**paper, "steps": 8000}),
        ]
        # The ordered task again with the categorical tasks' L2 5e-4 (at the study's 1e-2 the GRU-64
        # settles on a single leaky fixed point and stays below 0.97 accuracy).
        specs.append(NetworkSpec("ordered", {"n_classes": 5, "length": 50, "bank": "3word"}, cell="gru",
                                 **{**paper, "steps": 8000}))
        return specs
    if name == "extra":
        # Beside 'paper' (whose keys change only on purpose, so that its saved models and rows
        # reload): more seeds, the 5-word bank, correlated classes. Same settings as 'paper'.
        paper = dict(hidden_size=64, steps=6000, target_accuracy=0.995, eval_docs=2000)
        cat3 = {"n_classes": 3, "length": 50}
        specs = [NetworkSpec("categorical", cat3, cell=cell, seed=s, **paper) for s in (1, 2) for cell in ("gru", "lstm")]
        specs.append(NetworkSpec("ordered", {"n_classes": 5, "length": 50, "bank": "5word"}, cell="gru",
                                 **{**paper, "steps": 8000}))
        specs += [NetworkSpec("categorical", cat3, cell="ugrnn", seed=s, **paper) for s in (1, 2)]
        specs += [NetworkSpec("correlated", {"n_classes": n, "mixing": 0.75, "length": 50}, cell="gru", **paper)
                  for n in (3, 4)]
        # The vanilla RNN with more room: 128 units and a slower decay of the learning rate
        # (lr 0.01 * 0.9999^step: 0.0014 at step 20000, where 0.9997 leaves 2.5e-5).
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla",
                                 **{**paper, "hidden_size": 128, "lr": 0.01, "lr_decay": 0.9999, "steps": 20000}))
        # ... and with PyTorch's Adam epsilon 1e-8 at lr 1e-3 (the study's eps 0.1 makes Adam close to
        # SGD at 10 x lr for small gradients).
        specs += [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell="vanilla",
                              **{**paper, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.9999, "steps": 20000})
                  for n in (5, 3, 4)]
        # More seeds where the PR missed: the LSTM at N = 4, 5.
        specs += [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell="lstm", seed=s, **paper)
                  for n in (4, 5) for s in (1, 2)]
        # The vanilla N = 5 of eps 1e-8 was still improving at step 20000 (held-out 0.9745 at 19900):
        # twice the steps, with a slower decay so the rate does not vanish (1e-3 * 0.99995^40000 = 1.4e-4).
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla",
                                 **{**paper, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.99995, "steps": 40000}))
        # ... and with 128 units.
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla",
                                 **{**paper, "hidden_size": 128, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.99995,
                                    "steps": 30000}))
        # ... and with batches of 256 at lr 2e-3.
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla",
                                 **{**paper, "lr": 2e-3, "adam_eps": 1e-8, "lr_decay": 0.99995, "steps": 40000,
                                    "batch_size": 256}))
        # The vanilla RNN of Adam eps 1e-8 (lr 1e-3 * 0.9999^step, up to 20000 steps) started from an
        # orthogonal recurrent matrix instead of PyTorch's uniform init (Le et al. 2015: identity-like
        # or orthogonal starts help a vanilla RNN integrate over long inputs): seed 1 of N = 5 (seed 0
        # at N = 5, 3, 4, 2 was here and is 'paper''s vanilla RNN now), and N = 5 from the identity (IRNN).
        vanilla_init = {**paper, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.9999, "steps": 20000}
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla",
                                 **vanilla_init, recurrent_init="identity"))
        specs.append(NetworkSpec("categorical", {"n_classes": 5, "length": 50}, cell="vanilla", seed=1,
                                 **vanilla_init, recurrent_init="orthogonal"))
        return specs
    if name == "low-l2":
        # At L2 5e-4 the outer part of the 3-class GRU's simplex leaks (|lambda| 0.96-0.97 there,
        # tau ~30 < L): the median count at horizon L falls short of N - 1. A weaker penalty keeps it.
        paper = dict(hidden_size=64, steps=6000, target_accuracy=0.995, eval_docs=2000, l2=1e-4)
        specs = [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell=cell, **paper)
                 for n in (3, 2, 4, 5) for cell in ("gru", "lstm", "ugrnn")]
        specs += [
            NetworkSpec("ordered", {"n_classes": 5, "length": 50, "bank": "3word"}, cell="gru", **{**paper, "steps": 8000}),
            NetworkSpec("multilabel", {"n_labels": 3, "length": 50}, cell="gru", **{**paper, "steps": 8000}),
        ]
        vanilla = {**paper, "lr": 1e-3, "adam_eps": 1e-8, "lr_decay": 0.9999, "steps": 20000}
        specs += [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell="vanilla", **vanilla,
                              recurrent_init="orthogonal") for n in (3, 2, 4, 5)]
        # A second seed where the count at horizon L matched N - 1.
        specs += [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell=cell, seed=1, **paper)
                  for n in (3, 4, 5) for cell in ("gru", "lstm")]
        return specs
    if name == "study-cell":
        # renn's GRU: PyTorch's GRU (reset after the matmul, uniform init) at L2 1e-2 spreads the
        # ordered task's states along one dominant direction (PR 1.43-1.59); the study's cell does not.
        paper = dict(hidden_size=64, steps=6000, target_accuracy=0.995, eval_docs=2000)
        renn = dict(cell="gru_reset_before", recurrent_init="normal")
        ordered5 = {"n_classes": 5, "length": 50, "bank": "3word"}
        specs = [NetworkSpec("ordered", ordered5, **renn, **{**paper, "steps": 8000}, l2=1e-2, seed=s) for s in (0, 1)]
        specs.append(NetworkSpec("ordered", ordered5, **renn, **{**paper, "steps": 8000, "hidden_size": 128}, l2=1e-2))
        specs.append(NetworkSpec("categorical", {"n_classes": 3, "length": 50}, **renn, **paper))
        # Between the study's 1e-2 (accuracy 0.962) and 5e-4 (states PR 2.93): two penalties.
        specs += [NetworkSpec("ordered", ordered5, **renn, **{**paper, "steps": 8000}, l2=l2) for l2 in (3e-3, 2e-3)]
        # 3e-3 passed 5 of 6 checks at seed 0: two more seeds.
        specs += [NetworkSpec("ordered", ordered5, **renn, **{**paper, "steps": 8000}, l2=3e-3, seed=s) for s in (1, 2)]
        # The 5-word bank at the study's penalty for it (the study: states PR 2.07 at L2 5e-3).
        specs += [NetworkSpec("ordered", {"n_classes": 5, "length": 50, "bank": "5word"}, **renn,
                              **{**paper, "steps": 8000}, l2=5e-3, seed=s) for s in (0, 1, 2)]
        # renn's LSTM (normal init, constant forget bias 1) where PyTorch's LSTM misses the PR.
        specs += [NetworkSpec("categorical", {"n_classes": n, "length": 50}, cell="lstm", recurrent_init="normal",
                              forget_bias=1.0, **paper, seed=s) for n in (4, 5) for s in (0, 1, 2)]
        return specs
    raise InvalidOptionError(f"argument 'name': got {name!r}, expected one of {', '.join(map(repr, BATTERIES))}")


# =========================================================================== the study's numbers
# Word-count PR of the categorical task (the study's word-count prediction of the dimension).
_WC_PR_CATEGORICAL = {2: 1.00, 3: 1.98, 4: 2.99, 5: 3.99}
# PR of the hidden states measured by the authors (GRU-128), keyed by (task, classes, bank/sampler).
_STATES_PR = {
    ("categorical", 3, "uniform_score"): 2.11,
    ("ordered", 3, "3word"): 1.30,
    ("ordered", 5, "3word"): 2.03,
    ("ordered", 5, "5word"): 2.07,
    ("multilabel", 2, "uniform_score"): 2.11,
    ("multilabel", 3, "uniform_score"): 3.16,
}


def expectations(spec: NetworkSpec) -> dict:
    """The study's expected values for a network (None where the study gives none).

    Returns
    -------
    dict
        ``dimension`` (N - 1 categorical and correlated, 2 for 5 ordered classes, 1 for 3 ordered
        classes, K labels),
        ``pr_range`` (the accepted range of the fixed points' PR: dimension +- 0.35, 1.7-2.3 for 5
        ordered classes, None for correlated classes), ``modes`` (median integration modes = dimension), ``states_pr`` (the
        authors' PR of the hidden states, GRU-128, documents of 50 tokens), ``wordcount_pr``, ``readout_angle`` (simplex
        angle, categorical), ``order_invariance`` (0.98 measured for 3 classes; >= 0.95 claimed),
        ``min_accuracy`` (0.97).
    """
    if not isinstance(spec, NetworkSpec):
        raise ArgumentTypeError(f"argument 'spec': got {type(spec).__name__}, expected a NetworkSpec")
    p = spec.task_params
    K = spec.n_outputs
    variant = p.get("bank", "3word") if spec.task == "ordered" else p.get("sampler", "uniform_score")
    # The authors' numbers are for documents of 50 tokens; other lengths get none.
    study_l = spec.length == 50
    out = dict(dimension=None, pr_range=None, modes=None,
               states_pr=_STATES_PR.get((spec.task, K, variant)) if study_l else None, wordcount_pr=None, readout_angle=None, order_invariance=None, min_accuracy=0.97)
    if spec.task == "categorical":
        out.update(dimension=K - 1, pr_range=[K - 1 - 0.35, K - 1 + 0.35], modes=K - 1,
                   wordcount_pr=_WC_PR_CATEGORICAL.get(K) if study_l else None, readout_angle=math.degrees(math.acos(-1.0 / (K - 1))),
                   order_invariance=0.95)
    elif spec.task == "ordered":
        dim = 2 if K >= 5 else 1
        out.update(dimension=dim, pr_range=[1.7, 2.3] if K >= 5 else [0.65, 1.35], modes=dim)
    elif spec.task == "correlated":
        # The label still depends on every within-pair difference (s_i - s_j = (1 - mixing)(c_i - c_j)),
        # so an exact classifier needs N - 1 numbers; the study gives no PR for this task (no range):
        # its claim is the reduction relative to the categorical task, read off beside the word counts.
        out.update(dimension=K - 1, modes=K - 1, order_invariance=0.95)
    else:
        out.update(dimension=K, pr_range=[K - 0.35, K + 0.35], modes=K)
    return out


# =========================================================================== atomic writes
def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp)`` to a temporary file in the same folder, then rename onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def _write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def _out_dir(out_dir) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ArgumentTypeError(f"argument 'out_dir': got {type(out_dir).__name__}, expected a path (str or os.PathLike)")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InvalidOptionError(f"argument 'out_dir': {str(path)!r} exists and is not a directory; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidOptionError(f"argument 'out_dir': cannot create folder {str(path)!r} ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise InvalidOptionError(f"argument 'out_dir': folder {str(path)!r} is not writable")
    return path


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean(obj):
    """Plain Python (JSON) values: numpy scalars/arrays converted, non-finite floats -> None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


# =========================================================================== one network
def _train(spec: NetworkSpec, threads, progress):
    from .train import train_classifier

    eval_data = spec.make_task(spec.eval_docs, np.random.default_rng([spec.seed, _EVAL]))
    result = train_classifier(
        lambda rng: spec.make_task(spec.train_docs, rng),
        cell=spec.cell, hidden_size=spec.hidden_size, steps=spec.steps, batch_size=spec.batch_size,
        lr=spec.lr, lr_decay=spec.lr_decay, eps=spec.adam_eps, l2=spec.l2, seed=spec.seed, eval_data=eval_data, eval_every=spec.eval_every,
        recurrent_init=spec.recurrent_init, recurrent_gain=spec.recurrent_gain, forget_bias=spec.forget_bias,
        target_accuracy=spec.target_accuracy, keep_best=True, threads=threads,
        progress=(lambda msg: progress(f"[{spec.key}] {msg}")) if progress else False,
    )
    model = result.model
    model.metadata.update(study_spec=spec.to_dict(), study_key=spec.key)
    return model


def _fp_input(name: str, model, data) -> np.ndarray:
    """The constant input of the fixed-point search.

    'neutral' is the neutral word's input vector: with one-hot inputs the network never sees x = 0,
    and between evidence words it sees the neutral word, so the integrating dynamics are F(h, e_the).
    """
    M = model.params.input_size
    E = np.asarray(model.embedding, dtype=np.float64) if model.embedding is not None else np.eye(M)
    if name == "zero":
        return np.zeros(M)
    if name == "mean":
        return E.mean(axis=0)
    vocab = model.vocab if model.vocab is not None else data.vocab
    if _tasks.NEUTRAL not in vocab:
        raise InvalidOptionError(f"argument 'fp_input': 'neutral' needs the word {_tasks.NEUTRAL!r} in the vocabulary")
    return E[list(vocab).index(_tasks.NEUTRAL)]


def _candidates(spec: NetworkSpec, model, params, n_test: int, n_rollout: int, n_states: int):
    """The runner's documents and the search's initial states, drawn from the spec's seed streams.

    Returns (test, docs, traj, mask, h0): ``n_test`` fresh test documents, the first ``n_rollout``
    of them (``docs``), their trajectories (D, L, N) under ``params`` and valid-step mask (D, L), and
    ``n_states`` visited states sampled without noise (the study's candidates). The analysis tools
    use it to rerun exactly the search a row measured.
    """
    from .dynamics import rollout
    from .solvers import sample_states

    test = spec.make_task(n_test, np.random.default_rng([spec.seed, _TEST]))
    docs = test if n_rollout >= n_test else _subset(test, n_rollout)
    E = np.asarray(model.embedding, dtype=np.float64)
    mask = docs.mask()
    traj = rollout(params, None, E[np.asarray(docs.tokens)] * mask[..., None], lengths=docs.lengths)
    h0 = sample_states(traj, n_states, noise=0.0, mask=mask, seed=np.random.default_rng([spec.seed, _SAMPLE]))
    return test, docs, traj, mask, h0


def _kept_mask(slow, slow_speed) -> np.ndarray:
    """The end points the runner keeps: roots and slow points with ||F(h) - h||_inf <= slow_speed.

    A stationary point of q far from zero speed (a local minimum of q with a large residual) is
    not on the slow manifold, hence the speed test on top of the status.
    """
    return slow.on_slow_manifold(slow_speed)


def _solve(params, h0, x, slow_ratio, slow_speed):
    """Slow-manifold search (as `fastfp run`'s slow-point pass); returns (roots, kept, distinct).

    ``kept``: the exact roots and the slow points with ||F(h) - h||_inf <= slow_speed; ``roots``:
    the distinct exact roots among them; ``distinct``: ``kept.unique(1e-3)``, decomposed. No separate
    exact-root search (`fastfp run` runs one): on an LSTM-64 it costs ~30x the slow-manifold pass,
    whose points settle before sliding to the roots.
    """
    from .solvers import find_fixed_points

    # Dense LM, as every row in docs/reproduction.md was measured (from N = 128, e.g. an LSTM-64's
    # state, 'auto' now takes the matrix-free LM, whose inexact steps end a little elsewhere).
    slow = find_fixed_points(params, h0, x, slow_ratio=slow_ratio, slow_speed=slow_speed, jacobian="dense",
                             restart_steps=0)
    kept = slow[_kept_mask(slow, slow_speed)]
    roots = kept[kept.success].unique(1e-3)
    distinct = kept.unique(1e-3).decompose(params) if len(kept) else kept
    return roots, kept, distinct, slow


def _study_accepted(params, slow, x, q_tol):
    """The search's end points that pass the study's own test, q(h) = 1/2 ||F(h, x) - h||_2^2 < q_tol.

    Status-agnostic: a point where the solver stalled above ``slow_speed`` (a leaky stretch of the
    manifold, say) counts when its q is small, as in the study (which thresholds q only).
    Returns (points (k, N), q of all end points (B,)).
    """
    from .dynamics import step

    X = np.asarray(slow.x, dtype=np.float64)
    finite = np.isfinite(X).all(axis=1)
    q = np.full(X.shape[0], np.inf)
    if finite.any():
        r = step(params, X[finite], x, backend="numpy") - X[finite]
        q[finite] = 0.5 * (r ** 2).sum(axis=1)
    return X[q < q_tol], q


STUDY_ADAM_LR = 0.01
STUDY_MAX_STEPS = 10_000
STUDY_UNIQUE_TOL = 0.025
# Recorded in each row's options, so that a row measured with another definition is measured again.
_STUDY_SEARCH = {"method": "adam", "adam_lr": STUDY_ADAM_LR, "adam_schedule": "constant",
                 "adam_stop": "mean (renn: tested after the step)", "maxiter": STUDY_MAX_STEPS,
                 "merge_tol": STUDY_UNIQUE_TOL}


def study_search(params, h0, x=None, *, q_tol: float = 5e-4):
    """The study's fixed-point search, as its code ran it: the comparison for fastfp's own search.

    Adam (lr 0.01, constant) on q(h) = 1/2 ||F(h, x) - h||^2 from ``h0``, the batch stopping once
    its mean q is at most ``q_tol`` (renn's ``optimize``: tested after each step, the stepped
    states returned) or after 10000 steps; the end points with q < ``q_tol`` are kept, whatever
    their status, and merged within 0.025 (2-norm, the lowest-q member kept; the study's
    deduplication). Points stop where the batch does, not each on its own test: a point can be
    kept before it reaches the slow manifold, and 12-44% of the end points were above ``q_tol``
    on the study's networks (docs/reproduction.md).

    Parameters
    ----------
    params : RNNParams
    h0 : array_like, shape (B, N)
    x : array_like, shape (M,), optional
    q_tol : float
        The study's tolerances were 5e-4 to 1e-2 depending on the task.

    Returns
    -------
    FixedPoints
        The kept, merged points (k <= B), not decomposed; ``metadata['nit_batch']`` holds the
        steps the batch ran and ``metadata['n_below_q_tol']`` the end points kept before merging.
    """
    from .solvers import find_fixed_points

    q_tol = _float("q_tol", q_tol, 0.0, 1.0)
    ends = find_fixed_points(params, h0, x, method="adam", adam_lr=STUDY_ADAM_LR, adam_stop="mean",
                             adam_schedule="constant", tol_q=q_tol, tol_dq=0.0, maxiter=STUDY_MAX_STEPS,
                             batch_size=None)
    below = ends[np.asarray(ends.q) < q_tol]
    found = below.unique(STUDY_UNIQUE_TOL) if len(below) else below
    found.metadata.update(nit_batch=int(ends.nit.max()) if len(ends) else 0, n_below_q_tol=len(below))
    return found


# The rotation limit of the ``*_rotation_limited`` counts: |arg lambda| * horizon <= 1 rad, the
# rotational twin of the modulus test (see analysis.integration_modes).
MAX_ROTATION = 1.0


def _modes(distinct, horizon):
    """Median integration modes of decomposed points: two-sided at horizon L and L/2, one-sided at
    L, and the two-sided counts at L and L/2 that also limit the rotation (a complex pair with
    |lambda| ~ 1 and a large angle is an oscillation, not an integrator)."""
    if len(distinct) == 0:
        return dict(median=None, median_half=None, median_one_sided=None,
                    median_rotation_limited=None, median_half_rotation_limited=None)

    def median(h, **kw):
        return analysis.integration_modes(distinct, horizon=h, **kw).median

    return dict(median=median(horizon, two_sided=True), median_half=median(horizon / 2, two_sided=True),
                median_one_sided=median(horizon, two_sided=False),
                median_rotation_limited=median(horizon, two_sided=True, max_rotation=MAX_ROTATION),
                median_half_rotation_limited=median(horizon / 2, two_sided=True, max_rotation=MAX_ROTATION))


_ROTATION_KEYS = ("modes_median_rotation_limited", "modes_median_half_rotation_limited")


def _add_rotation_limited(row: dict, out: Path) -> bool:
    """Give a row measured before the rotation-limited counts existed those counts, from the
    eigenvalues of its saved distinct points (``<key>.fixed_points.npz``); nothing is re-solved.
    Returns whether the row changed."""
    if all(k in row for k in _ROTATION_KEYS):
        return False
    if not row.get("n_distinct"):
        row.update(dict.fromkeys(_ROTATION_KEYS))
        return True
    files = row.get("files")
    name = files.get("fixed_points") if isinstance(files, dict) else None
    path = out / (name if isinstance(name, str) else f"{row['key']}.fixed_points.npz")
    if not path.is_file():
        return False  # left as it is: the table shows '-'
    from .errors import FastFPError
    from .fixed_points import FixedPoints

    again = "; remove the row file to measure the network again"
    try:
        fp = FixedPoints.load(path)
    except FastFPError as exc:
        raise FileFormatError(f"argument 'out_dir': {path} cannot be read ({exc}){again}") from None
    if fp.eigvals is None or len(fp) != row["n_distinct"]:
        raise FileFormatError(
            f"argument 'out_dir': {path} holds {len(fp)} points{'' if fp.eigvals is not None else ' without eigenvalues'}, "
            f"but its row counts {row['n_distinct']} decomposed points{again}"
        )
    m = _clean(_modes(fp, float(row["horizon"])))
    row.update(modes_median_rotation_limited=m["median_rotation_limited"],
               modes_median_half_rotation_limited=m["median_half_rotation_limited"])
    return True


def run_network(
    spec: NetworkSpec,
    out_dir,
    *,
    n_states: int = 512,
    n_test: int = 2000,
    n_rollout: int = 256,
    fp_input: str = "neutral",
    compare_zero_input: bool = True,
    slow_ratio: float = 0.05,
    slow_speed: float = 1e-2,
    n_figure_states: int = 400,
    equalize_resolution: float = 0.1,
    study_q_tol: float = 5e-4,
    study_procedure: bool = True,
    threads: int | None = 1,
    progress: bool | Callable[[str], None] = False,
) -> dict:
    """Train (or load) one network, find its fixed points, measure the study's quantities.

    Parameters
    ----------
    spec : NetworkSpec
    out_dir : str or os.PathLike
        Folder for the artifacts (created if missing). If ``<key>.model.npz`` is there, the model
        is loaded instead of trained (torch is then not needed).
    n_states : int
        Initial states of the solver, drawn without noise from the states visited on test documents
        (the study's candidates).
    n_test : int
        Fresh test documents for the accuracy (fastfp rollouts, no torch).
    n_rollout : int
        Test documents whose trajectories give the PCA of states, the candidates and the shuffles.
    fp_input : {'neutral', 'zero', 'mean'}
        Input held fixed in the search: the neutral word ``the`` (default), zero, or the mean input.
    compare_zero_input : bool
        Also solve at x = 0 and report PR and integration modes there (``row['zero_input']``).
    slow_ratio, slow_speed : float
        Slow-manifold mode of :func:`fastfp.find_fixed_points` (as ``fastfp run``); a point counts
        when it is a root or a slow point with ||F(h) - h||_inf <= slow_speed. The default 1e-2 is
        below the study's tightest tolerance (mean q < 5e-4, i.e. ||F(h) - h||_2 ~ 0.03); ``fastfp
        run`` uses 1e-3, which keeps only the slowest direction of a 2-D manifold whose second
        eigenvalue is ~0.975 (see docs/reproduction.md).
    n_figure_states : int
        Trajectory states saved (projected on the PCs) for figures.
    equalize_resolution : float in (0, 1)
        Spacing, as a fraction of the cloud's extent, of the density-equalised PR of the fixed points
        (:func:`fastfp.analysis.equalized_dimension`), reported beside the raw PR.
    study_q_tol : float in (0, 1]
        The study's acceptance test, reported beside ours: the end points of the search with
        q = 1/2 ||F(h) - h||_2^2 < study_q_tol whatever their status (the study's tightest, 5e-4,
        i.e. ||F(h) - h||_2 < 0.032), their number and PR (``pr_fixed_points_study_q``).
    study_procedure : bool
        Also run the study's own search from the same candidates (:func:`study_search`: Adam
        lr 0.01 on q, the batch stopping when its mean q <= study_q_tol, at most 10000 steps,
        points with q < study_q_tol merged within 0.025) and report its points' number, PR, n95 and
        median integration modes (``*_study_procedure``), beside ours.
    threads : int or None
        torch threads while training.
    progress : bool or callable
        True prints progress lines to stderr; a callable receives them.

    Returns
    -------
    dict
        A JSON-serialisable row: identity (key, task, cell, hidden, seed, classes), accuracy,
        dimension of the fixed points (PR, n90, n95) and of the states, integration modes (median,
        two-sided, at horizon L and L/2; one-sided; two-sided with the rotation limited to 1 rad
        over the horizon, ``*_rotation_limited``), top |lambda|, word-count prediction, readout
        angles, order invariance, the study's expectations (:func:`expectations`), wall times and
        the artifact file names. Also written to ``<key>.row.json``.

    Notes
    -----
    Integration modes follow the study's "|lambda| ~ 1, tau comparable to or longer than the
    document length": an eigenvalue counts when 1/|ln|lambda|| >= horizon (two-sided: a slightly
    growing mode, |lambda| just above 1 at an approximate fixed point, is as slow as a slightly
    decaying one); ``modes_median`` uses horizon L, ``modes_median_half`` L/2. The
    ``*_rotation_limited`` counts also ask |arg lambda| * horizon <= 1: a complex pair near the
    unit circle that turns by 0.7 rad per step passes the modulus test but is a 9-step
    oscillation. They are reported beside the study's count; :func:`checks` uses the study's.
    """
    t_start = time.perf_counter()
    if not isinstance(spec, NetworkSpec):
        raise ArgumentTypeError(f"argument 'spec': got {type(spec).__name__}, expected a fastfp.study.NetworkSpec")
    n_states = _int("n_states", n_states, 2)
    n_test = _int("n_test", n_test, 1)
    n_rollout = _int("n_rollout", n_rollout, 1)
    n_figure_states = _int("n_figure_states", n_figure_states, 1)
    if fp_input not in FP_INPUTS:
        raise InvalidOptionError(f"argument 'fp_input': got {fp_input!r}, expected one of {', '.join(map(repr, FP_INPUTS))}")
    if not isinstance(compare_zero_input, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'compare_zero_input': got {compare_zero_input!r}, expected True or False")
    if not isinstance(study_procedure, (bool, np.bool_)):
        raise InvalidOptionError(f"argument 'study_procedure': got {study_procedure!r}, expected True or False")
    slow_ratio = _float("slow_ratio", slow_ratio, 0.0, 1.0)
    slow_speed = _float("slow_speed", slow_speed, 0.0, 1.0)
    study_q_tol = _float("study_q_tol", study_q_tol, 0.0, 1.0)
    equalize_resolution = _float("equalize_resolution", equalize_resolution, 0.0, 1.0)
    if equalize_resolution == 1.0:
        raise InvalidOptionError(f"argument 'equalize_resolution': got {equalize_resolution!r}, expected a number in (0, 1)")
    log = progress_logger(progress)
    out = _out_dir(out_dir)  # after the checks: a bad argument creates no folder

    from .model import load_params, save_params
    from .train import accuracy

    key = spec.key
    paths = {kind: out / f"{key}.{kind}" for kind in ("model.npz", "fixed_points.npz", "figures.npz", "row.json")}

    # ------------------------------------------------------------ model
    t0 = time.perf_counter()
    if paths["model.npz"].exists():
        model = load_params(paths["model.npz"])
        stored = model.metadata.get("study_key")
        if stored is not None and stored != key:
            raise FileFormatError(
                f"argument 'out_dir': {paths['model.npz']} belongs to network {stored!r}, not {key!r}; "
                "remove it or use another folder"
            )
        trained = False
        if log:
            log(f"[{key}] loaded {paths['model.npz'].name}")
    else:
        if log:
            log(f"[{key}] training {spec.cell} H={spec.hidden_size} on {spec.task} {spec.task_params} ...")
        model = _train(spec, threads, log)
        _atomic(paths["model.npz"], lambda p: save_params(p, model))
        trained = True
    load_or_train_s = time.perf_counter() - t0
    meta = model.metadata

    # ------------------------------------------------------------ data, accuracy, trajectories
    t0 = time.perf_counter()
    params = model.params.astype(np.float64)
    test, docs, traj, mask, h0 = _candidates(spec, model, params, n_test, n_rollout, n_states)
    test_acc = accuracy(model, test)
    states_pca = analysis.pca(traj, mask=mask)
    measure_s = time.perf_counter() - t0

    # ------------------------------------------------------------ fixed points
    t0 = time.perf_counter()
    horizon = float(spec.length)
    x_star = _fp_input(fp_input, model, docs)
    roots, kept, distinct, ends = _solve(params, h0, x_star, slow_ratio, slow_speed)
    fp_dim = analysis.manifold_dimension(kept) if len(kept) >= 2 else None
    # The raw PR weighs each point equally, so it follows where the candidates crowd; the thinned
    # cloud's PR follows the shape only (reported beside the raw PR, never instead of it).
    fp_eq = analysis.equalized_dimension(kept, resolution=equalize_resolution) if len(kept) >= 2 else None
    # The study's acceptance (q < study_q_tol, whatever the solver's status) beside ours: the
    # solver stops near speed slow_speed, and where the manifold is leaky its points stall just
    # above it and are dropped by ours, which can leave a whole corner of a simplex out.
    q_points, _ = _study_accepted(params, ends, x_star, study_q_tol)
    fp_q = analysis.manifold_dimension(q_points) if len(q_points) >= 2 else None
    modes = _modes(distinct, horizon)
    top = np.abs(distinct.eigvals[:, :4]) if len(distinct) else np.zeros((0, 4))
    zero = None
    if compare_zero_input and fp_input != "zero":
        _, kept0, distinct0, _ = _solve(params, h0, np.zeros(params.input_size), slow_ratio, slow_speed)
        dim0 = analysis.manifold_dimension(kept0) if len(kept0) >= 2 else None
        zero = dict(pr_fixed_points=dim0.participation_ratio if dim0 else None, n_points=len(distinct0),
                    **{f"modes_{k}": v for k, v in _modes(distinct0, horizon).items()},
                    top_abs_eig_median=np.median(np.abs(distinct0.eigvals[:, :4]), axis=0) if len(distinct0) else None)
    solve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = None
    if study_procedure:
        found = study_search(params, h0, x_star, q_tol=study_q_tol)
        sp_dim = analysis.manifold_dimension(found) if len(found) >= 2 else None
        proc = dict(n_points=len(found), nit=int(found.metadata["nit_batch"]),
                    pr=sp_dim.participation_ratio if sp_dim else None,
                    n95=sp_dim.n_components_95 if sp_dim else None,
                    **{f"modes_{k}": v for k, v in _modes(found.decompose(params) if len(found) else found,
                                                           horizon).items()})
    study_procedure_s = time.perf_counter() - t0

    # ------------------------------------------------------------ the other measures
    t0 = time.perf_counter()
    wc_data = spec.make_task(4000, np.random.default_rng([spec.seed, _WORDCOUNT]))
    wc = analysis.wordcount_prediction(wc_data)
    readout = analysis.readout_geometry(model) if model.readout_weight.shape[0] >= 2 else None
    multilabel = np.asarray(test.labels).ndim == 2
    order = None if multilabel else analysis.order_invariance(
        model, docs, seed=np.random.default_rng([spec.seed, _SHUFFLE])).fraction
    measure_s += time.perf_counter() - t0

    # ------------------------------------------------------------ artifacts for figures
    fig_rng = np.random.default_rng([spec.seed, _FIGURE])
    b, t = np.nonzero(mask)
    pick = fig_rng.choice(b.size, size=min(n_figure_states, b.size), replace=False)
    n_pc = min(5, states_pca.components.shape[0])
    comps = states_pca.components[:n_pc]
    proj = lambda X: (np.asarray(X, dtype=np.float64) - states_pca.mean) @ comps.T  # noqa: E731
    last = traj[np.arange(traj.shape[0]), np.maximum(np.asarray(docs.lengths) - 1, 0)]
    H = params.hidden_size
    W = np.asarray(model.readout_weight, dtype=np.float64)
    W_state = np.concatenate([W, np.zeros((W.shape[0], params.state_size - H))], axis=1)  # LSTM: c part 0
    labels = np.asarray(docs.labels)
    figures = dict(
        pca_components=comps, pca_mean=states_pca.mean,
        pca_explained_variance_ratio=states_pca.explained_variance_ratio,
        states_pc=proj(traj[b[pick], t[pick]]), states_label=labels[b[pick]], states_t=t[pick],
        final_pc=proj(last), final_label=labels,
        fixed_points_pc=proj(distinct.x) if len(distinct) else np.zeros((0, n_pc)),
        fixed_points_eigvals=distinct.eigvals[:, :10] if len(distinct) else np.zeros((0, 10), complex),
        fixed_points_residual=distinct.residual if len(distinct) else np.zeros(0),
        roots_pc=proj(roots.x) if len(roots) else np.zeros((0, n_pc)),
        readout_weight=W, readout_pc=W_state @ comps.T,
        fp_input=x_star, horizon=np.array(horizon),
        vocab=np.array(list(model.vocab or docs.vocab), dtype=str),
    )
    _atomic(paths["figures.npz"], lambda p: _savez(p, figures))
    if len(distinct):
        slim = replace(distinct, jacobian=None, eigvecs_right=None, eigvecs_left=None, input_jacobian=None)
        slim.metadata.update(study_key=key, fp_input=fp_input)
        _atomic(paths["fixed_points.npz"], lambda p: slim.save(p))

    # ------------------------------------------------------------ the row
    row = dict(
        key=key, task=spec.task, task_params=spec.task_params, cell=spec.cell, hidden=spec.hidden_size,
        state_size=params.state_size, seed=spec.seed, n_classes=spec.n_outputs, length=spec.length,
        trained=trained, train_steps=meta.get("steps"), train_seconds=meta.get("train_seconds"),
        eval_accuracy=meta.get("eval_accuracy"), test_accuracy=test_acc, test_n=n_test,
        fp_input=fp_input, n_states=n_states, n_roots=len(roots), n_kept=len(kept), n_distinct=len(distinct),
        pr_fixed_points=fp_dim.participation_ratio if fp_dim else None,
        n90_fixed_points=fp_dim.n_components_90 if fp_dim else None,
        n95_fixed_points=fp_dim.n_components_95 if fp_dim else None,
        fp_top_variance=fp_dim.explained_variance_ratio[:5] if fp_dim else [],
        pr_fixed_points_equalized=fp_eq.participation_ratio if fp_eq else None,
        n95_fixed_points_equalized=fp_eq.n_components_95 if fp_eq else None,
        n_equalized=len(fp_eq.indices) if fp_eq else 0,
        n_study_q=len(q_points), pr_fixed_points_study_q=fp_q.participation_ratio if fp_q else None,
        n95_fixed_points_study_q=fp_q.n_components_95 if fp_q else None,
        n_study_procedure=proc and proc["n_points"], pr_fixed_points_study_procedure=proc and proc["pr"],
        n95_fixed_points_study_procedure=proc and proc["n95"],
        modes_median_study_procedure=proc and proc["modes_median"],
        modes_median_half_study_procedure=proc and proc["modes_median_half"],
        nit_study_procedure=proc and proc["nit"],
        pr_states=states_pca.participation_ratio, n90_states=states_pca.n_components_90,
        n95_states=states_pca.n_components_95, states_top_variance=states_pca.explained_variance_ratio[:5],
        horizon=horizon, modes_median=modes["median"], modes_median_half=modes["median_half"],
        modes_median_one_sided=modes["median_one_sided"],
        modes_median_rotation_limited=modes["median_rotation_limited"],
        modes_median_half_rotation_limited=modes["median_half_rotation_limited"],
        top_abs_eig_median=np.median(top, axis=0) if len(top) else [],
        wordcount_dimension=wc.dimension, wordcount_pr=wc.participation_ratio,
        wordcount_variance=wc.explained_variance_ratio[:5],
        readout_angles=readout.pairwise if readout else [], readout_simplex_angle=readout.simplex_angle if readout else None,
        readout_max_deviation=readout.max_deviation if readout else None,
        order_invariance=order, zero_input=zero, expected=expectations(spec),
        wall_s=dict(load_or_train=load_or_train_s, measure=measure_s, solve=solve_s,
                    study_procedure=study_procedure_s, total=time.perf_counter() - t_start),
        files={k.split(".")[0]: p.name for k, p in paths.items()},
        spec=spec.to_dict(), options=_measure_options(dict(
            n_states=n_states, n_test=n_test, n_rollout=n_rollout, fp_input=fp_input,
            compare_zero_input=bool(compare_zero_input), slow_ratio=slow_ratio, slow_speed=slow_speed,
            n_figure_states=n_figure_states, equalize_resolution=equalize_resolution,
            study_q_tol=study_q_tol, study_procedure=bool(study_procedure))), fastfp_version=__version__,
    )
    row = _clean(row)
    row["checks"] = checks(row)
    _write_text(paths["row.json"], json.dumps(row, indent=1))
    if log:
        log(f"[{key}] acc {test_acc:.3f}, PR(fp) {row['pr_fixed_points']}, modes {row['modes_median']}, "
            f"word-count dim {wc.dimension} ({row['wall_s']['total']:.0f} s)")
    return row


def _measure_defaults() -> dict:
    import inspect

    skip = {"spec", "out_dir", "threads", "progress"}
    return {name: p.default for name, p in inspect.signature(run_network).parameters.items() if name not in skip}


def _measure_options(given: dict) -> dict:
    """The options that change a row's measurements, defaults filled in, as JSON values."""
    opts = {**_MEASURE_DEFAULTS, **given}
    if opts.get("study_procedure") is True:
        opts["study_procedure"] = dict(_STUDY_SEARCH)  # the definition, not just "on"
    return {k: (float(v) if k in ("slow_ratio", "slow_speed", "equalize_resolution", "study_q_tol") else v)
            for k, v in sorted(opts.items())}


def _subset(data, n):
    return _tasks.TaskData(data.tokens[:n], data.lengths[:n], data.labels[:n], data.vocab, data.evidence,
                           data.name, data.params)


def _savez(path, arrays):
    with open(path, "wb") as fh:
        np.savez_compressed(fh, format_version=np.array(1), **arrays)


def checks(row: dict) -> dict:
    """The study's claims for one row: name -> True / False (None where not applicable/measured).

    ``accuracy`` test accuracy >= 0.97; ``pr`` PR of the fixed points in the expected range;
    ``modes`` / ``modes_half`` median integration modes (horizon L / L/2) equal the dimension;
    ``wordcount`` word-count dimension equals the dimension (ordered tasks with K >= 3 classes:
    the word counts predict the reduction, i.e. their PR is below the categorical task's range,
    K - 1 - 0.35: their spectrum is "one dominant component plus a small one" at every K, so its
    component count is 2 whether the networks' dimension is 1.3 (K = 3) or 2 (K = 5) and cannot
    tell the two apart); ``readout`` every pairwise readout
    angle within 10 degrees of the simplex angle (categorical, N >= 3); ``order`` shuffling keeps
    >= 95% of the predictions (categorical); ``pr_states`` PR of the hidden states in the same
    range (ordered and multi-label tasks only: the claims state them as a "dimension", and
    the study's only numbers for it, around which the ranges are set, are PCA of the hidden
    states; the categorical claim names the fixed points, so no states check is added there,
    although the study gives a states PR for N = 3 too).
    """
    exp = row["expected"]
    dim = exp["dimension"]

    def in_range(pr):
        return None if pr is None or exp["pr_range"] is None else exp["pr_range"][0] <= pr <= exp["pr_range"][1]

    out = dict(
        accuracy=row["test_accuracy"] >= exp["min_accuracy"],
        pr=in_range(row.get("pr_fixed_points")),
        modes=None if row.get("modes_median") is None else row["modes_median"] == dim,
        modes_half=None if row.get("modes_median_half") is None else row["modes_median_half"] == dim,
        wordcount=row["wordcount_dimension"] == dim,
        readout=None, order=None, pr_states=None,
    )
    if row["task"] in ("ordered", "multilabel"):
        out["pr_states"] = in_range(row.get("pr_states"))
    if row["task"] == "ordered" and row["n_classes"] >= 3:
        wc = row.get("wordcount_pr")
        out["wordcount"] = None if wc is None else wc < row["n_classes"] - 1 - 0.35
    if row["task"] == "categorical":
        dev = row.get("readout_max_deviation")
        # Two classes: only w1 - w0 matters to the prediction, the angle of the pair is not constrained.
        out["readout"] = None if dev is None or row["n_classes"] < 3 else dev <= 10.0
        inv = row.get("order_invariance")
        out["order"] = None if inv is None else inv >= 0.95
    elif row["task"] == "correlated":
        inv = row.get("order_invariance")
        out["order"] = None if inv is None else inv >= 0.95
    return out


# =========================================================================== the study
_MEASURE_DEFAULTS = _measure_defaults()


@dataclass(frozen=True)
class StudyResult:
    """Rows of a study run.

    Attributes
    ----------
    rows : tuple of dict
        One row per spec, in the order of the specs (see :func:`run_network`).
    out_dir : str
    ran : tuple of str
        Keys of the networks run now.
    skipped : tuple of str
        Keys whose ``<key>.row.json`` existed (read, not re-run).
    wall_time_s : float
    tables : dict
        Paths of the written tables (``markdown``, ``csv``, ``json``).
    """

    rows: tuple
    out_dir: str
    ran: tuple
    skipped: tuple
    wall_time_s: float
    tables: dict = field(default_factory=dict)

    def table_markdown(self) -> str:
        """The markdown table of :func:`table_markdown`."""
        return table_markdown(self.rows)


def run_study(specs, out_dir, *, progress: bool | Callable[[str], None] = False, **options) -> StudyResult:
    """Run :func:`run_network` for each spec in turn, skipping those already done, and write the tables.

    Parameters
    ----------
    specs : sequence of NetworkSpec
    out_dir : str or os.PathLike
        Artifacts and tables (``study.md``, ``study.csv``, ``study.json``) go here. A network
        whose ``<key>.row.json`` exists and was measured with the same options is not run again
        (its row is read back); measured with other options, it is measured again from its
        saved model.
    progress : bool or callable
        Passed to :func:`run_network`; also reports each network's start.
    **options
        Keyword arguments of :func:`run_network` (``n_states``, ``fp_input``, ...).

    Returns
    -------
    StudyResult
    """
    t0 = time.perf_counter()
    if isinstance(specs, NetworkSpec):
        specs = [specs]
    try:
        specs = list(specs)
    except TypeError:
        raise ArgumentTypeError(f"argument 'specs': got {type(specs).__name__}, expected a sequence of NetworkSpec") from None
    for i, s in enumerate(specs):
        if not isinstance(s, NetworkSpec):
            raise ArgumentTypeError(f"argument 'specs': item {i} is {type(s).__name__}, expected a NetworkSpec")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise InvalidOptionError(f"argument 'specs': the same network appears twice ({dup[0]})")
    log = progress_logger(progress)
    unknown = set(options) - set(_MEASURE_DEFAULTS) - {"threads"}
    if unknown:
        raise InvalidOptionError(
            f"argument {sorted(unknown)[0]!r}: not an option of run_network; expected some of "
            f"{', '.join(sorted(_MEASURE_DEFAULTS))}, threads"
        )
    wanted = _measure_options({k: v for k, v in options.items() if k != "threads"})
    if isinstance(out_dir, (str, os.PathLike)) and any(
            not (Path(out_dir) / f"{s.key}.model.npz").exists() for s in specs):
        # Before anything is written or logged: a network to train needs torch.
        from .train import _import_torch

        _import_torch()
    out = _out_dir(out_dir)
    rows, ran, skipped = [], [], []
    for i, spec in enumerate(specs):
        row_path = out / f"{spec.key}.row.json"
        row = None
        if row_path.exists():
            try:
                row = json.loads(row_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise FileFormatError(f"argument 'out_dir': {row_path} is not a readable row file ({exc}); remove it") from None
            if not isinstance(row, dict) or row.get("options") != wanted:
                # Measured with other options: measure again (from the saved model, no training).
                row = None
            else:
                changed = _add_rotation_limited(row, out)
                row["checks"] = checks(row)  # the claims as this version of fastfp states them
                if changed:
                    _write_text(row_path, json.dumps(row, indent=1))
        if row is not None:
            skipped.append(spec.key)
            if log:
                log(f"[{i + 1}/{len(specs)}] {spec.key}: done before, skipped")
        else:
            if log:
                log(f"[{i + 1}/{len(specs)}] {spec.key} ...")
            row = run_network(spec, out, progress=log or False, **options)
            ran.append(spec.key)
        rows.append(row)
    tables = write_table(rows, out)
    return StudyResult(tuple(rows), str(out), tuple(ran), tuple(skipped), time.perf_counter() - t0, tables)


# =========================================================================== tables
_COLUMNS = [
    # (header, row -> value)
    ("network", lambda r: f"{r['task']} {_variant(r)} {r['cell']}-{r['hidden']} s{r['seed']}{_training(r)}"),
    ("acc", lambda r: _f(r["test_accuracy"], 3)),
    ("expected dim", lambda r: r["expected"]["dimension"]),
    ("PR fixed points", lambda r: _f(r.get("pr_fixed_points"))),
    ("PR fp equalised", lambda r: _f(r.get("pr_fixed_points_equalized"))),
    ("PR fp study-q (n)", lambda r: "-" if r.get("pr_fixed_points_study_q") is None else
     f"{r['pr_fixed_points_study_q']:.2f} ({r['n_study_q']})"),
    ("study's search: n, PR, modes (L, L/2)", lambda r: _study_search_cell(r)),
    ("PR range", lambda r: "-" if not r["expected"]["pr_range"] else "%.2f-%.2f" % tuple(r["expected"]["pr_range"])),
    ("n95 fp", lambda r: r.get("n95_fixed_points")),
    ("PR states", lambda r: _f(r.get("pr_states"))),
    ("study PR states", lambda r: _f(r["expected"]["states_pr"])),
    ("modes (L)", lambda r: _f(r.get("modes_median"), 1)),
    ("modes (L/2)", lambda r: _f(r.get("modes_median_half"), 1)),
    ("modes rotation-limited (L, L/2)", lambda r: f"{_f(r.get('modes_median_rotation_limited'), 1)} / "
     f"{_f(r.get('modes_median_half_rotation_limited'), 1)}"),
    ("modes x=0 (L/2)", lambda r: _f((r.get("zero_input") or {}).get("modes_median_half"), 1)),
    ("top abs(lambda)", lambda r: " ".join(_f(v, 3) for v in (r.get("top_abs_eig_median") or [])[:3]) or "-"),
    ("word-count dim", lambda r: r.get("wordcount_dimension")),
    ("word-count PR", lambda r: _f(r.get("wordcount_pr"))),
    ("study wc PR", lambda r: _f(r["expected"]["wordcount_pr"])),
    ("readout angles", lambda r: ", ".join(_f(a, 1) for a in r.get("readout_angles") or []) or "-"),
    ("order inv", lambda r: _f(r.get("order_invariance"), 3)),
    ("claims held", lambda r: _held(r)),
]


def _study_search_cell(r):
    if r.get("n_study_procedure") is None:
        return "-"
    return (f"{r['n_study_procedure']}, {_f(r.get('pr_fixed_points_study_procedure'))}, "
            f"{_f(r.get('modes_median_study_procedure'), 1)} / {_f(r.get('modes_median_half_study_procedure'), 1)}")


def _variant(r):
    p = r["task_params"]
    n = p.get("n_labels", p.get("n_classes"))
    return (f"{'K' if r['task'] not in ('categorical', 'correlated') else 'N'}={n}" + (f" {p['bank']}" if "bank" in p else "")
            + (f" mix {p['mixing']:g}" if "mixing" in p else ""))


def _training(r):
    """Training settings that differ from the study's defaults, for the network column."""
    spec = r.get("spec") or {}
    out = [f"{name} {spec[name]:g}" if not isinstance(spec[name], str) else f"{name} {spec[name]}"
           for name, default in (("l2", 5e-4), ("lr", 0.1), ("lr_decay", 0.9997), ("adam_eps", 0.1),
                                 ("batch_size", 128), ("recurrent_init", "default"), ("recurrent_gain", 1.0),
                                 ("forget_bias", 0.0))
           if name in spec and spec[name] != default]
    return (" (" + ", ".join(out) + ")") if out else ""


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _held(r):
    c = checks(r)
    known = {k: v for k, v in c.items() if v is not None}
    failed = [k for k, v in known.items() if not v]
    return f"{len(known) - len(failed)}/{len(known)}" + (f" (miss: {', '.join(failed)})" if failed else "")


def table_markdown(rows) -> str:
    """A markdown table of measured vs the study's values, one line per row."""
    rows = list(rows)
    head = [h for h, _ in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(fn(r)) for _, fn in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"


_CSV_FIELDS = [
    "key", "task", "cell", "hidden", "seed", "n_classes", "length", "test_accuracy", "train_steps", "train_seconds",
    "pr_fixed_points", "n90_fixed_points", "n95_fixed_points", "pr_fixed_points_equalized", "n_equalized",
    "pr_fixed_points_study_q", "n_study_q", "pr_fixed_points_study_procedure", "n_study_procedure",
    "n95_fixed_points_study_procedure", "modes_median_study_procedure", "modes_median_half_study_procedure",
    "nit_study_procedure", "pr_states", "n90_states", "n95_states",
    "modes_median", "modes_median_half", "modes_median_one_sided", "modes_median_rotation_limited",
    "modes_median_half_rotation_limited", "wordcount_dimension", "wordcount_pr",
    "readout_max_deviation", "order_invariance", "n_roots", "n_distinct",
]


def write_table(rows, out_dir) -> dict:
    """Write ``study.md`` (markdown), ``study.csv`` (flat fields plus expectations) and ``study.json``
    (the full rows) into ``out_dir``; returns their paths."""
    rows = [dict(r) for r in rows]
    out = _out_dir(out_dir)
    buf = io.StringIO()
    fields = _CSV_FIELDS + ["expected_dimension", "expected_pr_lo", "expected_pr_hi", "study_states_pr",
                            "study_wordcount_pr", "claims_held"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        e = r["expected"]
        flat = {k: r.get(k) for k in _CSV_FIELDS}
        flat.update(expected_dimension=e["dimension"],
                    expected_pr_lo=(e["pr_range"] or [None, None])[0], expected_pr_hi=(e["pr_range"] or [None, None])[1],
                    study_states_pr=e["states_pr"], study_wordcount_pr=e["wordcount_pr"], claims_held=_held(r))
        w.writerow(flat)
    paths = {"markdown": out / "study.md", "csv": out / "study.csv", "json": out / "study.json"}
    _write_text(paths["markdown"], table_markdown(rows))
    _write_text(paths["csv"], buf.getvalue())
    _write_text(paths["json"], json.dumps(rows, indent=1, default=_json_default))
    return {k: str(v) for k, v in paths.items()}


def write_report(rows, out_dir, *, path=None, dpi: int = 80) -> str:
    """A self-contained HTML report of a battery: one summary line per network, then per network its
    fixed points in the PC space of its states (coloured by log q, readout arrows, exact roots as
    stars) and the eigenvalues at them against the unit circle. Needs the ``report`` extra.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`run_network` / :func:`run_study` whose artifacts are in ``out_dir``.
    out_dir : str or os.PathLike
        The battery's folder (``<key>.figures.npz`` per network).
    path : str or os.PathLike, optional
        The HTML file (default ``out_dir/study.html``).

    Returns
    -------
    str
        The path written.
    """
    from . import report as rp
    from .analysis import PCAResult

    rows = [dict(r) for r in rows]
    out = _out_dir(out_dir)
    path = out / "study.html" if path is None else Path(path)
    summary, figures = [], []
    for r in rows:
        label = _COLUMNS[0][1](r)
        e = r["expected"]
        summary.append((label, f"accuracy {_f(r['test_accuracy'], 3)}; PR of fixed points {_f(r.get('pr_fixed_points'))} "
                               f"(expected dimension {e['dimension']}); n95 {r.get('n95_fixed_points')}; "
                               f"modes L/2 {_f(r.get('modes_median_half'), 1)}; word-count dimension "
                               f"{r.get('wordcount_dimension')}; claims held {_held(r)}"))
        fig_path = out / f"{r['key']}.figures.npz"
        if not fig_path.exists():
            raise FileFormatError(f"argument 'out_dir': {fig_path} is missing; run the network again to make it")
        with np.load(fig_path, allow_pickle=False) as d:
            pts, resid = d["fixed_points_pc"], d["fixed_points_residual"]
            K = pts.shape[1]
            # Coordinates are already the states' principal components: project with the identity.
            basis = PCAResult(components=np.eye(K), explained_variance=np.ones(K),
                              explained_variance_ratio=d["pca_explained_variance_ratio"][:K], mean=np.zeros(K),
                              participation_ratio=float("nan"), n_components_90=0, n_components_95=0,
                              n_samples=len(pts))
            if len(pts) >= 1 and K >= 2:
                figures.append((f"{label}: fixed / slow points in the PCs of the states",
                                rp.fixed_points_figure(pts, q=0.5 * resid ** 2, readout=d["readout_pc"],
                                                       highlight=d["roots_pc"] if len(d["roots_pc"]) else None,
                                                       basis=basis, point_label="slow points", title=label)))
            if len(pts):
                figures.append((f"{label}: top eigenvalues at the points", rp.eigenvalue_figure(d["fixed_points_eigvals"], title=label)))
    notes = ["PR: participation ratio; n95: components for 95% of the variance; modes: median number of "
             "eigenvalues with time constant longer than half the document length (two-sided); the "
             "study's claims are listed in docs/reproduction.md."]
    return rp.write_html_report(path, title=f"fastfp study: {len(rows)} networks", summary_rows=summary,
                                figures=figures, notes=notes, dpi=dpi)


if __name__ == "__main__":  # pragma: no cover - `python -m fastfp.study paper --out DIR`
    from .cli import main as _main

    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-"):
        argv = ["--battery", argv[0]] + argv[1:]
    # the usage line of `fastfp study`, not "python -m fastfp.study study"
    _main(["study", *argv], prog_name="fastfp")
