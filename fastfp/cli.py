"""The ``fastfp`` command line.

Imports of the engine (numpy, numba, ...) stay inside the commands so that ``fastfp --version`` is
fast. JSON summaries go to stdout, logs to stderr (silenced by ``--quiet``). Exit codes: 0 ok, 1 a
fastfp error (one line on stderr; ``--debug`` prints the traceback), 2 a usage error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ._version import __version__

DEFAULT_MODEL = "gru64_cat3.npz"
DEFAULT_REPORT = "fastfp-report.html"
TASKS = ("categorical", "ordered", "multilabel", "correlated")


# API arguments that mean what the command's option of the same name means (an argument 'states'
# of part_speed_scale is a batch of states, the option --states a count: not renamed).
_SAME_AS_OPTION = {"slow_ratio", "slow_speed", "seed", "noise", "atol", "maxiter", "tol_q", "restart_steps",
                   "adam_lr", "adam_stop", "adam_schedule", "batch_size", "dtype", "method", "backend", "jacobian",
                   "encoding", "text_column", "label_column", "results_dir", "shard_size", "connect_timeout",
                   "horizon", "nonlinearity", "layer", "direction", "key_prefix", "embedding_key", "readout_key",
                   "cell", "workers", "scheduler", "length", "classes", "task", "unk", "eig_k"}
# Python arguments that stand for an option of another name: (the options it needs, its name).
_ARGUMENT_AS_OPTION = {"h0": (("states", "noise"), "the initial states (--states, --noise)"),
                       "x": (("input_spec",), "option '--input'"),
                       "out_dir": (("out_dir",), "option '--out'")}


def _cli_names(message: str, command) -> str:
    """An error message of the Python API with its argument names spelt as the command's options
    ("argument 'slow_speed'" -> "option '--slow-speed'")."""
    import re

    if command is None:
        return message
    options, names = {}, set()
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            names.add(param.name)
            if param.name in _SAME_AS_OPTION:
                options[param.name] = f"option '{max(param.opts, key=len)}'"
    for name, (needs, text) in _ARGUMENT_AS_OPTION.items():
        if set(needs) <= names:
            options[name] = text

    def spell(match):
        return options.get(match.group(1)) or match.group(0)

    def spell_two(match):
        a, b = (options.get(n) for n in match.group(1, 2))
        if a and b and a.startswith("option ") and b.startswith("option "):
            return f"options {a.split(' ', 1)[1]} and {b.split(' ', 1)[1]}"
        return match.group(0)

    message = re.sub(r"arguments '([A-Za-z_]\w*)' and '([A-Za-z_]\w*)'", spell_two, message)
    return re.sub(r"argument '([A-Za-z_][A-Za-z0-9_]*)'", spell, message)


class _Group(click.Group):
    """Turns fastfp errors (and unreadable files) into a one-line message and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            from .errors import FastFPError

            if not isinstance(exc, (FastFPError, OSError, MemoryError)):
                raise
            if (ctx.obj or {}).get("debug"):
                import traceback

                traceback.print_exc(file=sys.stderr)
            message = str(exc)
            if isinstance(exc, MemoryError) and not isinstance(exc, FastFPError):
                message = (f"out of memory ({message or 'MemoryError'}); fewer or smaller of --states, --docs, "
                           "--length, --classes or --batch-size would fit")
            message = _cli_names(message, self.commands.get(ctx.invoked_subcommand))
            # A list of bad records keeps its lines; other messages are one line.
            lines = [ln.rstrip() for ln in message.strip().splitlines() if ln.strip()]
            text = "\n".join([" ".join(lines[0].split())] + lines[1:]) if lines else type(exc).__name__
            click.echo(f"fastfp: error: {text}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastfp")
@click.option("--debug", is_flag=True, help="Print the full traceback of an error.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
@click.pass_context
def main(ctx, debug: bool, quiet: bool) -> None:
    """fastfp: fixed points and attractor geometry of recurrent networks."""
    ctx.ensure_object(dict)
    ctx.obj.update(debug=debug, quiet=quiet)


# ============================================================================ helpers
def _quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.obj or {}).get("quiet"))


def _log(msg: str) -> None:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is not None and (root.obj or {}).get("quiet"):
        return
    click.echo(msg, err=True)


def _check_connect_timeout(scheduler) -> None:
    ctx = click.get_current_context()
    if scheduler is None and ctx.get_parameter_source("connect_timeout") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--connect-timeout: an option of --scheduler (a local --workers cluster needs none)")


def _json_safe(obj):
    """``obj`` with non-finite floats as null: strict JSON has no NaN or Infinity."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        return None
    return obj


def _echo_json(obj) -> None:
    import json

    click.echo(json.dumps(_json_safe(obj), indent=2, default=_json_default, allow_nan=False))


class _FiniteFloatRange(click.FloatRange):
    """click's FloatRange, which lets 'nan' (and 'inf' past an open end) through, made finite."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number in the range {self._describe_range()}.", param, ctx)
        return rv


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def default_model_resource():
    """The shipped trained model (a Traversable inside the installed package)."""
    from importlib.resources import files

    return files("fastfp").joinpath("data", DEFAULT_MODEL)


_RESOURCE = "fastfp:data/"  # fastfp.model.SHIPPED_PREFIX
_SHIPPED_PATHS = "fastfp.shipped_paths"  # ctx.meta key: resolved path -> shipped model name


class _WeightsPath(click.Path):
    """An existing file, or ``fastfp:data/NAME``: a model shipped inside the package (the name
    ``fastfp run`` prints), resolved to its file so every command can read it."""

    name = "weights"

    def __init__(self):
        # a directory goes on to fastfp.load, whose error names the way out (an orbax checkpoint)
        super().__init__(exists=True, dir_okay=True)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith(_RESOURCE):
            from importlib.resources import as_file

            from .errors import FileFormatError
            from .model import shipped_resource

            try:
                resource = shipped_resource(value)
            except FileFormatError as exc:
                self.fail(str(exc), param, ctx)
            name = value[len(_RESOURCE):]
            # A package imported from a zip file has no file on disk: as_file extracts a
            # temporary copy, kept until the command ends (an ordinary install gives the file).
            if ctx is not None:
                path = ctx.with_resource(as_file(resource))
                ctx.meta.setdefault(_SHIPPED_PATHS, {})[str(path)] = name
            else:  # called outside a click command: nothing keeps a copy open
                path = resource
                if not Path(str(path)).is_file():
                    self.fail(f"{value!r}: the installed package has no file on disk for it (imported from a zip "
                              "file?); pass it to a fastfp command, or extract it with importlib.resources.as_file("
                              f"importlib.resources.files('fastfp') / 'data' / {name!r})", param, ctx)
            value = str(path)
        return super().convert(value, param, ctx)


def _percent(fraction: float) -> str:
    """'67.7%', and two significant digits below 0.1% ('0.049%', never a 0.0% of something)."""
    p = 100.0 * fraction
    return f"{p:.1f}%" if p >= 0.1 or p == 0 else f"{p:.2g}%"


def _output_problem(output, inputs):
    """Why an output path cannot be written before any work is done, or None: a folder that is
    missing or not writable, a folder or device at the path, or one of the command's input files."""
    import os

    from fastfp._atomic import check_writable

    from .errors import InvalidOptionError

    out = Path(output)
    if str(output) == "-":
        return "got '-': results go to a file, not to standard output; give a file path"
    if not str(output).strip():
        return f"got {str(output)!r}: expected a file path"
    if str(output).endswith(("/", os.sep)) or out.is_dir():
        return f"got {str(output)!r}, which names a folder: expected a file path"
    if not out.parent.is_dir():
        return f"got {str(output)!r}: the folder {str(out.parent)!r} does not exist"
    try:
        check_writable(out, probe=True)
    except InvalidOptionError as exc:
        return str(exc).replace("argument 'path': ", "")
    if out.exists():
        for src in inputs:
            if src is not None and Path(src).exists() and out.resolve() == Path(src).resolve():
                return f"got {str(output)!r}, an input file of this command ({src}); writing there would replace it"
    return None


def _check_output(output, *inputs) -> None:
    """Refuse, before any work, an output path that cannot be written or that names an input."""
    problem = _output_problem(output, inputs)
    if problem:
        raise click.BadParameter(problem, param_hint="'-o' / '--output'")
    if Path(output).exists():
        # Said even under -q: a file is about to be lost.
        click.echo(f"fastfp: note: {output} exists; it will be replaced", err=True)


_CLI_NAMES = {"source": "WEIGHTS", "path": "WEIGHTS", "cell": "option '--cell'", "layer": "option '--layer'",
              "direction": "option '--direction'", "key_prefix": "option '--key-prefix'",
              "embedding_key": "option '--embedding-key'", "readout_key": "option '--readout-key'",
              "nonlinearity": "option '--nonlinearity'"}


def _load(weights, *, has_load_options=False, **options):
    """fastfp.load, its errors naming the command line's WEIGHTS and options instead of Python's arguments.

    ``has_load_options``: the command has --cell, --layer, ... (``convert``); the others are told
    to convert the file first when the error asks for one of them.
    """
    import re

    import fastfp
    from .errors import FastFPError

    pattern = r"argument '(" + "|".join(_CLI_NAMES) + r")'"
    # "cell='gru' given", "pass embedding_key=": the options as the command line spells them
    asks = r"\b(cell|layer|direction|key_prefix|embedding_key|readout_key|nonlinearity)="

    def cli_text(text):
        text = re.sub(pattern, lambda m: _CLI_NAMES[m.group(1)], text)
        if re.search(asks, text) and not has_load_options:
            text += ("; these are options of fastfp convert: fastfp convert WEIGHTS -o model.npz --cell ... "
                     "(--layer, --direction, --key-prefix, --nonlinearity, --embedding-key, --readout-key), "
                     "then pass model.npz")
        # "layer=" -> "--layer " ("cell='gru'" -> "--cell 'gru'"), without a doubled space before "or"
        return re.sub(asks + r" ?", lambda m: "--" + m.group(1).replace("_", "-") + " ", text)

    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fastfp.load(weights, **options)
        for w in caught:
            if isinstance(w.message, UserWarning) and str(w.message).startswith("argument "):
                # fastfp's own (e.g. the tanh assumed for a vanilla RNN's state dict): as the CLI says it
                click.echo(f"fastfp: warning: {cli_text(str(w.message))}", err=True)
            else:  # anyone else's, under the user's own warning filters
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model
    except FastFPError as exc:
        if vars(exc):  # state that a new error would lose
            raise
        text = cli_text(str(exc))
        try:
            renamed = type(exc)(text)
        except Exception:  # an error type with other constructor arguments: keep it as it is
            raise exc from None
        raise renamed.with_traceback(exc.__traceback__) from None


def _load_model(weights):
    """fastfp.load(weights), or the shipped model when ``weights`` is None; returns (model, name)."""
    import fastfp

    if weights is None:
        from importlib.resources import as_file

        with as_file(default_model_resource()) as path:
            return fastfp.load_params(path), f"{_RESOURCE}{DEFAULT_MODEL}"
    return _load(weights), _weights_name(weights)


def _weights_for_workers(weights, shards) -> str:
    """The weights file Dask workers read: a shipped model is copied into the shards folder.

    A shipped model's file lies in this machine's installation, or is a temporary copy extracted
    from a zip import: a remote worker sees neither, but it must see the shards folder.
    """
    ctx = click.get_current_context(silent=True)
    name = (ctx.meta.get(_SHIPPED_PATHS, {}) if ctx is not None else {}).get(str(weights))
    if name is None:
        return weights
    from fastfp.distributed import _check_results_dir

    copy = _check_results_dir(shards) / f"shipped-{name}"
    data = Path(weights).read_bytes()
    if not copy.is_file() or copy.read_bytes() != data:
        from fastfp._atomic import atomic_path

        with atomic_path(copy) as tmp:
            Path(tmp).write_bytes(data)
    ctx.meta[_SHIPPED_PATHS][str(copy)] = name
    return str(copy)


def _weights_name(weights) -> str:
    """How output names a weights file: ``fastfp:data/NAME`` for a shipped one, else its path."""
    ctx = click.get_current_context(silent=True)
    given = (ctx.meta.get(_SHIPPED_PATHS, {}) if ctx is not None else {}).get(str(weights))
    if given is not None:
        return f"{_RESOURCE}{given}"
    shipped = Path(weights).parent == Path(str(default_model_resource())).parent
    return f"{_RESOURCE}{Path(weights).name}" if shipped else str(weights)


_CORPUS_OPTIONS = ("text_column", "label_column", "encoding", "skip_bad_rows")


def _store_corpus_option(ctx, param, value):
    ctx.meta.setdefault("fastfp_corpus", {})[param.name] = value
    return value


def _corpus_options() -> dict:
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get("fastfp_corpus", {})) if ctx is not None else {}


def _read_corpus_for(model, corpus, n_docs, length):
    """The corpus file as the model reads it (its vocabulary and recorded settings), all of its
    documents or the first --docs, truncated at --length; notes on stderr for what a reader of the
    numbers must know (unknown words, suspect rows)."""
    import warnings

    import numpy as np

    import fastfp
    from .errors import FileFormatError, InvalidOptionError

    opts = _corpus_options()
    kwargs = dict(text_column=opts.get("text_column") or "text", label_column=opts.get("label_column") or "label",
                  encoding=opts.get("encoding") or "utf-8", on_error="skip" if opts.get("skip_bad_rows") else "raise",
                  max_length=length)
    if model.vocab is not None:  # its words name the embedding rows, or the one-hot input columns
        kwargs["model"] = model
    else:
        # Word ids of a vocabulary built from this corpus would pick arbitrary embedding rows.
        raise InvalidOptionError(
            "--corpus: the model has no vocabulary, so its embedding rows (or one-hot inputs) cannot be matched "
            "to the corpus' words; attach the tokenizer's vocabulary first: fastfp convert WEIGHTS -o model.npz "
            "--vocab vocab.txt [--labels labels.txt], then pass model.npz"
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            corpus_data = fastfp.read_corpus(corpus, **kwargs)
    except FileFormatError as exc:
        # read_corpus names its Python arguments; name the options instead.
        text = (str(exc).replace("pass on_error='skip' to drop them (they are then listed in Corpus.report)",
                                 "pass --skip-bad-rows to drop them")
                .replace("pass text_column=... / label_column=...", "pass --text-column / --label-column")
                .replace("pass encoding='utf-16'", "pass --encoding utf-16")
                .replace("give the file's encoding with encoding=...", "give the file's encoding with --encoding")
                .replace("(pass encoding=... if the file is in another one)", "(pass --encoding if the file is in another one)"))
        raise FileFormatError(text) from None
    except InvalidOptionError as exc:
        if "the vocabulary has no '<unk>'" in str(exc):
            raise InvalidOptionError(str(exc).replace("argument 'model': ", "--corpus: the model's vocabulary: ")
                                     + "; if it spells its unknown-word token otherwise, name it: fastfp convert "
                                     "WEIGHTS -o model.npz --vocab vocab.txt --unk TOKEN") from None
        if str(exc).startswith("argument 'path': "):
            raise InvalidOptionError("--corpus: " + str(exc)[len("argument 'path': "):].replace(
                "(or pass labels= naming its outputs in order and skip the other rows)",
                "(or name its outputs in order with fastfp convert ... --labels FILE and pass --skip-bad-rows)")) from None
        if "tokenizer" in str(exc):
            raise InvalidOptionError(
                f"--corpus: the model was trained on a corpus split by a custom tokenizer, which the CLI cannot "
                f"apply; read it from Python: fastfp.read_corpus({str(corpus)!r}, model=model, tokenizer=...)"
            ) from None
        raise
    for w in caught:
        click.echo(f"fastfp: warning: {str(w.message).replace('; see Corpus.report.suspects', '')}"
                   .replace("pass labels= naming the model's outputs in order",
                            "name the model's outputs in order with fastfp convert ... --labels FILE"), err=True)
    rep = corpus_data.report
    if rep.n_skipped:
        click.echo(f"fastfp: note: {corpus}: {rep.n_skipped} bad record(s) skipped (--skip-bad-rows); first: "
                   f"{rep.problems[0]}", err=True)
    data = corpus_data.train
    if n_docs is not None and n_docs < data.n_docs:
        # The first --docs documents, padded to their own longest (not the file's).
        width = int(data.lengths[:n_docs].max())
        data = type(data)(tokens=data.tokens[:n_docs, :width], lengths=data.lengths[:n_docs],
                          labels=data.labels[:n_docs], vocab=data.vocab, evidence=data.evidence, name=data.name,
                          params=dict(data.params, first_docs=int(n_docs)))
    unk = data.vocab.index("<unk>") if "<unk>" in data.vocab else None
    kept = np.asarray(data.tokens)[data.mask()]
    n_unk = int((kept == unk).sum()) if unk is not None else 0
    share = n_unk / kept.size if kept.size else 0.0
    if "model" in kwargs and share > 0:
        # Shown even with -q: words the model never saw all read as one <unk> row.
        used = f" (the first {n_docs} documents)" if "first_docs" in data.params else ""
        click.echo(f"fastfp: note: {corpus}{used}: {n_unk} of {kept.size} tokens ({_percent(share)}) are not in the "
                   "model's vocabulary and read as <unk>", err=True)
        trained = model.task_record
        record = (trained.get("params") or {}) if trained.get("name") == "corpus" else {}
        # A model trained on a corpus read with a small vocabulary saw its <unk> share in training:
        # the text is its own then. Without that record, a vocabulary built with max_vocab or
        # min_count > 1 made <unk> of the rest, as much as it may be.
        seen = record.get("unknown_fraction")
        capped = record.get("vocab") == "built" and (record.get("max_vocab") is not None
                                                     or (record.get("min_count") or 1) > 1)
        limit = 0.5 if seen is None and not capped else (max(0.5, float(seen) + 0.25) if seen is not None else 1.0)
        given = opts.get("max_unknown")
        if share > (limit if given is None else given):
            raise InvalidOptionError(
                f"--corpus: {100 * share:.0f}% of the tokens of {corpus}{used} are unknown to the "
                "model" + (f" ({100 * seen:.0f}% in the corpus it was trained on)" if seen is not None else "")
                + ": this is not text of the model's vocabulary (another tokenizer, language or corpus?); "
                + (f"--max-unknown {given:g} given" if given is not None else
                   f"the limit is {100 * limit:.0f}%, --max-unknown FRACTION sets another")
            )
    longest, median = int(data.lengths.max()), float(np.median(data.lengths))
    if longest > 8 * max(median, 1.0) and longest > 200:
        # Every document is padded to the longest: memory and time follow it, not the typical one.
        click.echo(f"fastfp: note: {corpus}: the longest document has {longest} tokens, the median {median:g}; "
                   "every document is padded to the longest (--length N truncates them)", err=True)
    if rep.n_truncated:
        whole = " of the whole file" if "first_docs" in data.params else ""  # which ones, read_corpus does not say
        click.echo(f"fastfp: note: {corpus}: {rep.n_truncated} document(s){whole} truncated at --length {length} "
                   f"({rep.n_tokens_truncated} tokens dropped)", err=True)
    return data


def _task_data(model, task, classes, length, corpus, n_docs, seed):
    """TaskData for the rollouts: a corpus file, the options, or the model's own task (metadata)."""
    import fastfp
    from .errors import InvalidOptionError

    given = [f"--{k.replace('_', '-')}" for k, v in _corpus_options().items() if v]
    if corpus is not None:
        if task is not None or classes is not None:
            raise InvalidOptionError("options '--corpus' and '--task/--classes': give one or the other")
        return _read_corpus_for(model, corpus, n_docs, length)
    if given:
        raise InvalidOptionError(f"{', '.join(given)}: say how to read a corpus; give --corpus FILE too")
    trained_on = model.task_record
    if trained_on.get("name") == "corpus" and task is None and classes is None:
        src = (trained_on.get("params") or {}).get("source")
        attached = str((trained_on.get("params") or {}).get("vocab", "")).startswith("attached")
        what = ("the model reads text (a vocabulary was attached to it)" if attached
                else f"the model was trained on a text corpus{f' ({src})' if src else ''}")
        raise InvalidOptionError(
            f"{what}, whose words synthetic task documents do not hold (they would all read as <unk>); pass "
            "--corpus FILE, or --task/--classes to drive it with synthetic documents anyway"
        )
    n_docs = 256 if n_docs is None else n_docs
    # The task the model was trained on: fastfp.train records {'name', 'params'}; the shipped
    # model (and files of fastfp before it) a name and 'task_params'.
    if trained_on.get("name") in TASKS:
        recorded, meta = trained_on["name"], dict(trained_on.get("params") or {})
    elif model.metadata.get("task") in TASKS:
        recorded, meta = model.metadata["task"], dict(model.metadata.get("task_params") or {})
    else:
        recorded, meta = None, {}
    if task is None:
        task = recorded or "categorical"
    if task != recorded:
        meta = {}  # another task than the model's: its recorded settings say nothing of this one
    if classes is None:
        classes = meta.get("n_classes", meta.get("n_labels"))
    if classes is None:
        classes = int(model.readout_weight.shape[0]) if model.readout_weight is not None and task == "categorical" else 3
    if length is None:
        length = int(meta.get("length", 50))
    make = getattr(fastfp.tasks, task)
    key = "n_labels" if task == "multilabel" else "n_classes"
    # The recorded sampler settings (bank, sampler, mixing, min_length, ...) that this task takes;
    # n and seed are this run's.
    import inspect

    takes = set(inspect.signature(make).parameters) - {"n", "seed", key, "length"}
    extra = {k: v for k, v in meta.items() if k in takes and v is not None}
    if extra.get("min_length") is not None and extra["min_length"] > length:  # a --length below it
        del extra["min_length"]
    return make(n_docs, **{key: classes, "length": length, "seed": seed}, **extra)


def _token_ids(model, data):
    """Map the data's token ids onto the model's vocabulary (by string) where the model has one."""
    import numpy as np

    from .errors import InvalidOptionError

    if model.vocab is None:
        # Shown even with -q: every number that follows depends on this mapping.
        click.echo(f"fastfp: note: the model has an embedding but no vocabulary; the {data.name} data's word ids "
                   f"are used as its rows ({', '.join(f'{w}={i}' for i, w in enumerate(data.vocab[:6]))}"
                   f"{', ...' if len(data.vocab) > 6 else ''}); right for a model trained on fastfp.tasks ids, "
                   "arbitrary otherwise: attach its vocabulary (fastfp convert WEIGHTS -o model.npz --vocab "
                   "vocab.txt, or Model.with_vocab) and pass --corpus", err=True)
        return np.asarray(data.tokens)
    index = {w: i for i, w in enumerate(model.vocab)}
    unk = index.get("<unk>")
    table = np.empty(len(data.vocab), dtype=np.int64)
    missing = []
    for j, w in enumerate(data.vocab):
        i = index.get(w, unk)
        if i is None:
            missing.append(w)
            i = 0
        table[j] = i
    used = np.unique(np.asarray(data.tokens)[data.mask()])
    missing = [w for w in missing if data.vocab.index(w) in set(used.tolist())]
    if missing:
        raise InvalidOptionError(
            f"the model's vocabulary lacks the words {missing[:5]} of the task data (and has no '<unk>'); "
            "pick the matching --task/--classes or --corpus"
        )
    return table[np.asarray(data.tokens)]


def _input_sequences(model, data):
    """(n, L, M) float64 inputs of the documents through the model's embedding (zero past lengths)."""
    import numpy as np

    from .errors import InvalidOptionError

    mask = data.mask()
    if model.embedding is not None:
        ids = _token_ids(model, data)
        if ids.max(initial=0) >= model.embedding.shape[0]:
            raise InvalidOptionError(
                f"the task data has token ids up to {int(ids.max())}, but the model's embedding has "
                f"{model.embedding.shape[0]} rows; pick the matching --task/--classes or --corpus"
            )
        return model.inputs(ids).astype(np.float64) * mask[..., None]
    if model.params.input_size == data.vocab_size:
        untaken = model.metadata.get("embedding_not_taken") or []
        if untaken:
            # Shown even with -q: the model may look its words up in that table, not take one-hot vectors.
            click.echo(f"fastfp: note: the weights file holds {', '.join(map(repr, untaken[:3]))}, which could be an "
                       f"embedding but was not taken as one; the {data.name} data's words enter as one-hot vectors of "
                       f"{data.vocab_size}; if the model embeds its words: fastfp convert WEIGHTS -o model.npz "
                       f"--embedding-key {untaken[0]}, then pass model.npz", err=True)
        return data.one_hot(np.float64)
    raise InvalidOptionError(
        f"the model has no embedding and input size {model.params.input_size}, but the task data has "
        f"{data.vocab_size} words (one-hot inputs need equal sizes); use weights with an embedding (one "
        "stored under a key fastfp does not recognise: fastfp convert WEIGHTS -o model.npz --embedding-key KEY), "
        "task data of that vocabulary size (--classes, --corpus), or, for a bare RNN layer, "
        "fastfp.find_fixed_points(params, h0, x) from Python with your own states and input"
    )


def _initial_states(params, xs, data, states, noise, seed):
    import fastfp

    traj = fastfp.rollout(params, None, xs, lengths=data.lengths)
    return fastfp.sample_states(traj, states, noise=noise, mask=data.mask(), seed=seed)


def _resolve_input(spec, model, data, xs, *, choices="zero, mean, word:<w> or a FILE.npy"):
    """The constant input of ``find``: zero, mean, word:<w> or a .npy file."""
    import numpy as np

    from .errors import DTypeError, FileFormatError, InvalidOptionError, NonFiniteError, ShapeError

    M = model.params.input_size
    if spec == "zero":
        return np.zeros(M)
    if spec == "mean":
        mask = data.mask()
        return xs[mask].mean(axis=0)
    if spec.startswith("word:"):
        w = spec[5:]
        # Without a vocabulary of its own the data's word ids stand for the model's inputs (one-hot
        # columns or embedding rows, as the rollouts take them; _token_ids notes the latter).
        vocab = model.vocab if model.vocab is not None else data.vocab
        if vocab is None or w not in vocab:
            whose = "the model's vocabulary" if model.vocab is not None else f"the {data.name} data's words"
            raise InvalidOptionError(
                f"option '--input': word {w!r} is not in {whose}"
                + (f" ({', '.join(vocab[:10])}{', ...' if len(vocab) > 10 else ''})" if vocab else "")
            )
        i = list(vocab).index(w)
        if model.embedding is not None:
            return np.asarray(model.embedding[i], dtype=np.float64)
        x = np.zeros(M)
        x[i] = 1.0
        return x
    if spec.endswith(".npy"):
        try:
            x = np.load(spec, allow_pickle=False)
        except FileNotFoundError:
            raise InvalidOptionError(f"option '--input': no file {spec!r} (expected {choices})") from None
        except Exception as exc:
            raise FileFormatError(f"option '--input': {spec} is not a readable .npy file ({exc})") from None
        if x.ndim not in (1, 2) or x.shape[-1] != M:
            raise ShapeError(f"option '--input': {spec} holds shape {x.shape}, expected ({M},) or (B, {M})")
        if x.dtype.kind in "iu" and np.abs(x.astype(np.float64)).max(initial=0) >= 2 ** 53:
            raise DTypeError(f"option '--input': {spec} holds integers of magnitude 2**53 or more, which float64 "
                             "does not hold exactly; expected float values (or ints below 2**53, or bools)")
        if x.dtype.kind in "biu":
            x = x.astype(np.float64)  # a one-hot vector saved as ints: exact in float64
        if x.dtype.kind != "f":
            raise DTypeError(f"option '--input': {spec} holds dtype {x.dtype}, expected float (or int / bool) values")
        if not np.isfinite(x).all():
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise NonFiniteError(f"option '--input': {spec} holds NaN or Inf (first at index {first}), expected finite values")
        return x
    raise InvalidOptionError(f"option '--input': got {spec!r}, expected {choices}")


def _status_counts(fp):
    import numpy as np

    from .status import Status

    return {Status(int(s)).name.lower(): int((fp.status == s).sum()) for s in np.unique(fp.status)}


def _data_options(f):
    f = click.option("--max-unknown", type=_FiniteFloatRange(0, 1), default=None, expose_value=False,
                     callback=_store_corpus_option, metavar="FRACTION",
                     help="--corpus: refuse the corpus when more of its tokens than this are unknown to the model "
                          "(default 0.5, or the share in the corpus the model was trained on + 0.25; 1: never).")(f)
    f = click.option("--encoding", default=None, expose_value=False, callback=_store_corpus_option,
                     help="--corpus: the file's text encoding (default utf-8).")(f)
    f = click.option("--skip-bad-rows", is_flag=True, default=False, expose_value=False, callback=_store_corpus_option,
                     help="--corpus: drop bad records (empty text, unknown label, ...) instead of stopping; they are counted on stderr.")(f)
    f = click.option("--label-column", default=None, expose_value=False, callback=_store_corpus_option,
                     help="--corpus: CSV column / JSON key of the label (default 'label').")(f)
    f = click.option("--text-column", default=None, expose_value=False, callback=_store_corpus_option,
                     help="--corpus: CSV column / JSON key of the text (default 'text').")(f)
    f = click.option("--length", type=click.IntRange(min=1), default=None,
                     help="Document length (default: the model's task, else 50); with --corpus, truncate documents to it.")(f)
    f = click.option("--docs", "n_docs", type=click.IntRange(min=1), default=None,
                     help="Documents to roll out (default 256; with --corpus, all of them, or the first --docs: "
                          "the whole file is still read and checked).")(f)
    f = click.option("--corpus", type=click.Path(exists=True, dir_okay=False),
                     help="A CSV / JSON Lines corpus (fastfp.read_corpus) as the input data, read with the model's "
                          "vocabulary and, for a model trained on a corpus, its recorded label names and casing.")(f)
    f = click.option("--classes", type=click.IntRange(min=2), default=None,
                     help="Classes (labels for multilabel) of the task.")(f)
    f = click.option("--task", type=click.Choice(TASKS), default=None,
                     help="Synthetic task whose documents drive the rollouts (default: the model's).")(f)
    return f


class _BatchSize(click.ParamType):
    """A positive integer or 'auto' (find_fixed_points' batch_size)."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto" or isinstance(value, int):
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"got {value!r}, expected a positive integer or 'auto'", param, ctx)
        return n


def _search_options(f):
    f = click.option("--batch-size", type=_BatchSize(), default=None,
                     help="Solve the states in chunks of this many ('auto': as many as fit in memory); by "
                          "default all at once, or an error saying what fits.")(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)(f)
    f = click.option("--noise", type=_FiniteFloatRange(min=0), default=0.5, show_default=True,
                     help="Std of the Gaussian noise added to sampled states.")(f)
    f = click.option("--states", type=click.IntRange(min=1), default=1024, show_default=True,
                     help="Initial states sampled from the rollouts.")(f)
    return f


class _Bar:
    """A minimal progress bar on stderr (no dependency): shown on a terminal or when forced.

    Silent under --quiet; redraws at most every 0.1 s and always on completion.
    """

    def __init__(self, label, total, *, force=False):
        ctx = click.get_current_context(silent=True)
        quiet = bool(ctx is not None and (ctx.find_root().obj or {}).get("quiet"))
        # sys.stderr at call time: click's test runner swaps it, and get_text_stream goes in Click 9.
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = not quiet and (force or bool(isatty and isatty()))
        self.label, self.total, self.done, self._last = label, max(int(total), 0), 0, -1.0

    def __call__(self, n_done, n_total=None):
        if n_total is not None:
            self.total = int(n_total)
        self.done = min(int(n_done), self.total)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= 0.1 or self.done >= self.total):
            self._last = now
            width = 30
            fill = width * self.done // self.total if self.total else width
            click.echo(f"\r{self.label} [{'#' * fill}{'-' * (width - fill)}] {self.done}/{self.total}", err=True, nl=False)

    def __enter__(self):
        self(0)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            click.echo("", err=True)
        return False


def _report_target(report, no_report, *inputs):
    """(path, explicit) of the report to write, or (None, False); checks the path (not one of the
    command's ``inputs``) and matplotlib up front.

    An explicit --report without matplotlib is an error; the implicit default report is skipped
    with a note on stderr (printed even with --quiet: a missing report must not go unnoticed).
    """
    from .errors import MissingDependencyError

    if report is not None and no_report:
        raise click.UsageError("options '--report' and '--no-report' exclude each other")
    if no_report:
        return None, False
    path, explicit = (report, True) if report is not None else (DEFAULT_REPORT, False)
    import os

    folder = os.path.dirname(os.path.abspath(path))
    problem = (f"got {path}, but the folder {folder} does not exist" if not os.path.isdir(folder)
               else _output_problem(path, inputs))
    if problem and explicit:  # a usage error (exit 2), as the same problem with -o
        raise click.BadParameter(problem, param_hint="'--report'")
    if problem:
        from .errors import InvalidOptionError

        raise InvalidOptionError(f"option '--report': {problem}" + ("" if explicit else
                                 f" (the default report {DEFAULT_REPORT}; pass --report PATH or --no-report)"))
    replaces = os.path.exists(path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        msg = "the HTML report needs matplotlib; install the extra: pip install 'fastfp-rnn[report]'"
        if explicit:
            raise MissingDependencyError(f"option '--report': {msg}") from None
        click.echo(f"fastfp: note: no report written: {msg} (or pass --no-report)", err=True)
        return None, False
    if replaces:
        # A path the user named is said even under -q; the default report is fastfp's own file, which
        # every run rewrites.
        if explicit:
            click.echo(f"fastfp: note: {path} exists; it will be replaced", err=True)
        else:
            _log(f"note: {path} exists; it will be replaced")
    return path, explicit


def _report_options(f):
    f = click.option("--no-report", is_flag=True, help="Do not write the HTML report.")(f)
    f = click.option("--report", "report", type=click.Path(dir_okay=False), default=None,
                     help=f"HTML report to write (default: {DEFAULT_REPORT} in the current folder; "
                          "needs the 'report' extra).")(f)
    return f


# find, convert and info print JSON whatever is asked; --json, as run, analyze and bench take it,
# must not be an unknown option there.
_json_always_option = click.option("--json", "_json", is_flag=True, expose_value=False,
                                   help="Accepted for symmetry with run, analyze and bench: this command always "
                                        "prints JSON on stdout.")

_progress_option = click.option("--progress", "force_progress", is_flag=True,
                                help="Show progress bars even when stderr is not a terminal.")


# ============================================================================ commands
@main.command()
@click.argument("weights", required=False, type=_WeightsPath())
@_data_options
@_search_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--input", "input_spec", default="auto", show_default=True,
              help="Constant input of the search: auto (the neutral word 'the' when the vocabulary has it, "
                   "else zero), zero, mean, word:<w> or FILE.npy.")
@click.option("--slow-speed", type=_FiniteFloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Slow-point mode keeps points with ||F(h) - h||_inf below this (in --speed-units).")
@click.option("--speed-units", type=click.Choice(["state", "parts"]), default="state", show_default=True,
              help="Units of the slow-speed test: the state's own, or each part of the state (an LSTM's h and c) "
                   "in units of its spread over the visited states, h's as 1 (fastfp.part_speed_scale).")
@_report_options
@_progress_option
def run(weights, task, classes, corpus, n_docs, length, states, noise, seed, batch_size, as_json, input_spec,
        slow_speed, speed_units, report, no_report, force_progress) -> None:
    """Analyse a network: roots, slow manifold, dimension, word counts.

    WEIGHTS (optional) is any file fastfp.load reads (torch .pt, .safetensors, Flax msgpack, .npz)
    or fastfp:data/gru64_cat3.npz; without it that shipped 3-class GRU classifier is analysed on
    its own task. Reports the exact
    fixed points, the slow manifold (slow-point mode) and its dimension, integration modes, the
    word-count prediction of the dimension and the readout geometry, and writes them with figures
    to a self-contained HTML report (--report PATH; --no-report to skip).
    """
    t0 = time.perf_counter()
    report_path, _ = _report_target(report, no_report, weights, corpus, input_spec)
    import numpy as np

    import fastfp
    from fastfp import analysis

    model, name = _load_model(weights)
    params = model.params.astype(np.float64)
    data = _task_data(model, task, classes, length, corpus, n_docs, seed)
    _log(f"model {name}: {params.cell} N={params.state_size}; data {data.name} n={data.n_docs} L={data.max_length}")
    xs = _input_sequences(model, data)
    traj = fastfp.rollout(params, None, xs, lengths=data.lengths)
    h0 = fastfp.sample_states(traj, states, noise=noise, mask=data.mask(), seed=seed)
    if input_spec == "auto":
        # A one-hot classifier never sees x = 0; between evidence words it reads the neutral word,
        # so its integrating dynamics are those of F(h, x_the) (see docs/reproduction.md).
        vocab = model.vocab if model.vocab is not None else (data.vocab if model.embedding is None else None)
        input_spec = "word:" + fastfp.tasks.NEUTRAL if vocab is not None and fastfp.tasks.NEUTRAL in vocab else "zero"
    x = _resolve_input(input_spec, model, data, xs, choices="auto, zero, mean, word:<w> or a FILE.npy")
    if x.ndim != 1:
        raise click.BadParameter("expected one input vector for run", param_hint="'--input'")

    _log(f"solving for exact fixed points from {states} states ...")
    with _Bar("exact fixed points", states, force=force_progress) as bar:
        exact = fastfp.find_fixed_points(params, h0, x, progress=bar, batch_size=batch_size)
    roots = exact[exact.success].unique(1e-3)
    roots_d = roots.decompose(params)
    speed_scale = None
    if speed_units == "parts":
        # The spread of the visited states, not of the noisy starts (the noise is the same on h and c);
        # a sample of them is enough for a mean std and bounds the copy on a large corpus.
        visited = np.flatnonzero(data.mask().ravel())
        if len(visited) > 100_000:
            visited = np.sort(np.random.default_rng(seed).choice(visited, 100_000, replace=False))
        speed_scale = fastfp.part_speed_scale(params, traj.reshape(-1, traj.shape[-1])[visited])
    _log(f"solving in slow-point mode (slow_ratio 0.05, slow_speed {slow_speed:g}, {speed_units} units) at input "
         f"{input_spec} ...")
    with _Bar("slow points       ", states, force=force_progress) as bar:
        slow = fastfp.find_fixed_points(params, h0, x, slow_ratio=0.05, slow_speed=slow_speed, batch_size=batch_size,
                                        speed_scale=speed_scale, progress=bar)
    # A slow point where the damping ran out (q stationary) can move faster than slow_speed; the
    # summary says "speed below slow_speed", so those are dropped and counted, as in the study.
    found = slow.success | slow.is_slow_point
    kept = slow[slow.on_slow_manifold(slow_speed, speed_scale)]
    if _distinct_count(kept) >= 2:  # copies of one point span no manifold: their PR is rounding's
        dim = analysis.manifold_dimension(kept)
        manifold = {"participation_ratio": dim.participation_ratio, "n95": dim.n_components_95,
                    "n90": dim.n_components_90, "top_variance": dim.explained_variance_ratio[:4]}
    else:
        manifold = {"participation_ratio": None, "n95": None, "n90": None, "top_variance": []}
    _log(f"eigen-decomposition of {len(kept.unique(1e-3))} distinct slow points ...")
    kept_d = kept.unique(1e-3).decompose(params)
    horizon = float(np.median(data.lengths))
    one = analysis.integration_modes(kept_d, horizon=horizon) if len(kept_d) else None
    two = analysis.integration_modes(kept_d, horizon=horizon, two_sided=True) if len(kept_d) else None
    half = analysis.integration_modes(kept_d, horizon=horizon / 2, two_sided=True) if len(kept_d) else None
    wc = analysis.wordcount_prediction(data)
    readout = None
    multilabel = np.ndim(data.labels) == 2
    if model.readout_weight is not None and model.readout_weight.shape[0] >= 2:
        rg = analysis.readout_geometry(model)
        # Classes read out at the corners of a simplex; independent labels by orthogonal readouts
        # (the study's multi-label networks: 89.6-90.0 deg).
        reference = 90.0 if multilabel else rg.simplex_angle
        readout = {"pairwise_angles": rg.pairwise, "simplex_angle": rg.simplex_angle, "max_deviation": rg.max_deviation,
                   "reference": "orthogonal (independent labels)" if multilabel else "simplex",
                   "reference_angle": reference,
                   "max_deviation_from_reference": float(np.max(np.abs(rg.pairwise - reference)))}
    summary = {
        "model": name,
        "cell": params.cell,
        "state_size": params.state_size,
        "data": {"name": data.name, "docs": data.n_docs, "length": data.max_length, "classes": data.n_classes,
                 "multilabel": bool(multilabel)},
        "initial_states": states,
        "input": input_spec,
        "slow_speed": slow_speed,
        "speed_units": speed_units,
        # one unit per part of the state (h, then c for an LSTM)
        "part_units": ([float(u) for u in speed_scale[::params.hidden_size]] if speed_scale is not None
                       else [1.0] * (params.state_size // params.hidden_size)),
        "fixed_points": {
            "found": len(exact),
            "converged": int(exact.success.sum()),
            "distinct": len(roots),
            "stable": int(roots_d.is_stable.sum()) if len(roots_d) else 0,
            "status": _status_counts(exact),
        },
        "slow_points": {
            "kept": len(kept),
            "distinct": len(kept_d),
            "too_fast": int(found.sum() - len(kept)),
            "status": _status_counts(slow),
            **manifold,
        },
        "integration_modes": {
            "horizon": horizon,
            "median": one.median if one else None,
            "median_two_sided": two.median if two else None,
            "median_two_sided_half_horizon": half.median if half else None,
        },
        "wordcount_prediction": {"dimension": wc.dimension, "participation_ratio": wc.participation_ratio},
        "readout": readout,
        "report": None,
        "wall_time_s": time.perf_counter() - t0,  # the analysis; updated below to include the report
    }
    if states >= 2 and len(kept) < max(2, 0.1 * states):
        # Shown even with -q: every manifold number below rests on these few points.
        why = [t for t in (_gave_up(slow), f"{int(found.sum() - len(kept))} moved faster" if found.sum() > len(kept)
                           else "") if t]
        click.echo(f"fastfp: warning: only {len(kept)} of {states} slow-point searches settled within "
                   f"{slow_speed:g} ({'; '.join(why)}): the manifold and mode numbers rest on them; at this input the "
                   "network may have no slow manifold near the states it visits (see the exact roots, or try "
                   "another --input or --speed-units parts)", err=True)
    if report_path is not None:
        _log("drawing the figures of the report ...")
        _write_run_report(report_path, summary, model=model, data=data, traj=traj, roots=roots, kept=kept_d,
                          kept_all=kept)
        summary["report"] = str(report_path)
        _log(f"report written to {report_path}")
    summary["wall_time_s"] = time.perf_counter() - t0
    if as_json:
        _echo_json(summary)
        return
    fp, sp, im = summary["fixed_points"], summary["slow_points"], summary["integration_modes"]
    pr = sp["participation_ratio"]
    gave_up_exact = _gave_up(exact)
    gave_up_slow = _gave_up(slow)
    lines = [
        f"model            {name} ({params.cell}, N={params.state_size})",
        f"data             {data.name}: {data.n_docs} docs, length {data.max_length}, {data.n_classes} "
        + {(False, True): "class", (False, False): "classes", (True, True): "label", (True, False): "labels"}[
            (bool(multilabel), data.n_classes == 1)],
        f"input            {summary['input']} (held fixed during the search)",
        f"fixed points     {fp['found']} found, {fp['converged']} converged, {fp['distinct']} distinct, "
        f"{fp['stable']} stable" + (f"; {gave_up_exact}" if gave_up_exact else ""),
        f"slow points      {sp['kept']} kept ({sp['distinct']} distinct), speed below {summary['slow_speed']:g} "
        f"in {_units_text(summary)}" + (f"; {sp['too_fast']} stalled faster, dropped" if sp["too_fast"] else "")
        + (f"; {gave_up_slow}" if gave_up_slow else ""),
        f"manifold         PR {pr:.2f}, n95 {sp['n95']}" if pr is not None else
        f"manifold         (too few points: {sp['distinct']} distinct)",
        f"integration      median modes {im['median']} (two-sided {im['median_two_sided']}) at horizon {horizon:g}, "
        f"{im['median_two_sided_half_horizon']} at {horizon / 2:g}",
        f"word-count pred  dimension {wc.dimension} (PR {wc.participation_ratio:.2f})",
    ]
    if readout is not None:
        angles = ", ".join(f"{a:.1f}" for a in readout["pairwise_angles"])
        lines.append(f"readout angles   {angles} deg (" + (f"independent labels: orthogonal, {readout['reference_angle']:.1f}"
                                                            if multilabel else f"simplex {readout['simplex_angle']:.1f}") + ")")
    if summary["report"] is not None:
        lines.append(f"report           {summary['report']}")
    lines.append(f"wall time        {summary['wall_time_s']:.2f} s")
    click.echo("\n".join(lines))


def _settled(fp):
    """Mask of the points a search settled: converged, slow points, the study's q tolerance."""
    import numpy as np

    import fastfp

    return np.isin(fp.status, (fastfp.Status.CONVERGED, fastfp.Status.SLOW_POINT, fastfp.Status.Q_TOLERANCE))


def _too_fast(fp):
    """Mask of a slow-manifold search's slow points that move faster than its slow_speed: where
    the damping ran out at a local minimum of q (q stationary), which is no point of the slow
    manifold (FixedPoints.on_slow_manifold); none outside slow-manifold mode."""
    import numpy as np

    md = fp.metadata
    if md.get("slow_ratio") is None or md.get("slow_speed") is None:
        return np.zeros(len(fp), dtype=bool)
    scale = md.get("speed_scale")
    return fp.is_slow_point & ~fp.on_slow_manifold(md["slow_speed"], None if scale is None else np.asarray(scale))


def _distinct_count(fp, tol=1e-3) -> int:
    return len(fp.unique(tol)) if len(fp) else 0


def _gave_up(fp) -> str:
    """'N not settled (max_iter K, ...)' for the points a search neither converged nor stopped as slow
    points or at the q tolerance; '' when there are none."""
    bad = ~_settled(fp)
    if not bad.any():
        return ""
    counts = _status_counts(fp[bad])
    return f"{int(bad.sum())} not settled (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"


# A point at the iteration cap that moves by less than this per step is far slower than any
# document moves the state: the mark of a slow manifold, where root finding creeps along.
_SLOW_HINT_SPEED = 1e-2


def _slow_hint(unsettled) -> str:
    """A pointer to the slow-manifold mode when points at the iteration cap barely move; '' if none."""
    import numpy as np

    import fastfp

    capped = unsettled.status == fastfp.Status.MAX_ITER
    slow = capped & (unsettled.residual <= _SLOW_HINT_SPEED)
    if not slow.any():
        return ""
    return (f"{int(slow.sum())} of the {int(capped.sum())} at the iteration cap move by less than "
            f"{_SLOW_HINT_SPEED:g} per step (median |F(h) - h|_inf {np.median(unsettled.residual[slow]):.1e}): "
            "approximate fixed points on a slow manifold rather than roots; --slow-ratio 0.05 --slow-speed 1e-2 "
            "stops them as slow points (as fastfp run does)")


def _units_text(summary):
    if summary.get("speed_units") != "parts":
        return "state units"
    return "part units " + " / ".join(f"{u:.2f}" for u in summary["part_units"]) + " (h / c)" * (
        len(summary["part_units"]) == 2)


def _summary_rows(summary):
    """The run summary as (label, value) rows of the HTML report's table."""
    fp, sp, im, wc = summary["fixed_points"], summary["slow_points"], summary["integration_modes"], summary["wordcount_prediction"]
    d = summary["data"]
    rows = [
        ("model", f"{summary['model']} ({summary['cell']}, N={summary['state_size']})"),
        ("data", f"{d['name']}: {d['docs']} docs, length {d['length']}, {d['classes']} classes"),
        ("initial states", summary["initial_states"]),
        ("input held fixed", summary.get("input", "zero")),
        ("fixed points", f"{fp['found']} found, {fp['converged']} converged, {fp['distinct']} distinct, {fp['stable']} stable"),
        ("solver status (exact)", ", ".join(f"{k} {v}" for k, v in fp["status"].items())),
        ("slow points", f"{sp['kept']} kept ({sp['distinct']} distinct); status "
                        + ", ".join(f"{k} {v}" for k, v in sp["status"].items())
                        + (f"; {sp['too_fast']} stalled faster than the slow-speed test, dropped"
                           if sp.get("too_fast") else "")),
        ("slow-speed test", f"|F(h) - h|_inf below {summary.get('slow_speed', 1e-3):g} in {_units_text(summary)}"),
        ("manifold participation ratio", sp["participation_ratio"]),
        ("components for 90% / 95%", f"{sp['n90']} / {sp['n95']}"),
        ("explained variance, top 4", ", ".join(f"{v:.3f}" for v in sp["top_variance"]) or None),
        ("integration modes (median)", f"{im['median']} (two-sided {im['median_two_sided']}) at horizon {im['horizon']:g} steps, "
                                       f"{im.get('median_two_sided_half_horizon')} at {im['horizon'] / 2:g}"),
        ("word-count prediction", f"dimension {wc['dimension']} (PR {wc['participation_ratio']:.2f})"),
    ]
    if summary["readout"] is not None:
        r = summary["readout"]
        ref = (f"independent labels: orthogonal, {r['reference_angle']:.1f}" if r.get("reference", "simplex") != "simplex"
               else f"simplex {r['simplex_angle']:.1f}")
        rows.append(("readout angles", ", ".join(f"{a:.1f}" for a in r["pairwise_angles"])
                     + f" deg ({ref}, max deviation {r.get('max_deviation_from_reference', r['max_deviation']):.1f})"))
    rows.append(("wall time of the analysis", f"{summary['wall_time_s']:.2f} s"))
    return rows


def _write_run_report(path, summary, *, model, data, traj, roots, kept, kept_all):
    """The HTML report of `fastfp run`: summary table and the study's four figures."""
    import numpy as np

    from . import analysis, report as rp

    horizon = summary["integration_modes"]["horizon"]
    mask = data.mask()
    states_pca = analysis.pca(traj[mask])  # one SVD for the PC figure and the variance figure
    labels = data.labels if np.ndim(data.labels) == 1 else None
    figures = []
    if len(kept) >= 1:
        figures.append((
            "Slow points (colour: log10 q, the speed) and exact fixed points (stars) with test trajectories "
            "(coloured by class) on the principal components of the hidden states; arrows: readout directions.",
            rp.fixed_points_figure(kept, states=traj, state_mask=mask, labels=labels, readout=model.readout_weight,
                                   highlight=roots.x, point_label="distinct slow points", basis=states_pca,
                                   title=f"{summary['model']}: attractor in PC space"),
        ))
        figures.append((
            "Eigenvalues of the Jacobian at each distinct slow point, with the unit circle; right: close-up at 1, "
            "where the integrating (slow) modes lie.",
            rp.eigenvalue_figure(kept),
        ))
        figures.append((
            f"Time constants τ = 1/|ln|λ|| by rank at each slow point; modes above the horizon "
            f"({horizon:g} steps, the median document length) integrate over a document.",
            rp.time_constants_figure(kept, horizon=horizon),
        ))
    sets = {"hidden states": states_pca}
    if len(kept_all) >= 2:  # all kept points, as in the summary's participation ratio
        sets = {"slow points": kept_all.x, **sets}
    figures.append(("Explained variance of the principal components (bars) and cumulative (lines).",
                    rp.explained_variance_figure(sets)))
    notes = [
        f"Exact fixed points solve F(h, x*) = h to 1e-10 with the input x* held at {summary.get('input', 'zero')}; "
        f"slow points are where the solver stopped on the slow manifold (slow_ratio 0.05, "
        f"|F(h) - h|_inf below {summary.get('slow_speed', 1e-3):g} in {_units_text(summary)}"
        + ("; part units: each part of the state in units of its spread over the visited states, h's as 1"
           if summary.get("speed_units") == "parts" else "")
        + "). q = |F(h) - h|^2 / 2 is the speed of a point.",
        "Participation ratio PR = (sum v)^2 / sum v^2 of the explained-variance ratios v; the word-count "
        "prediction is the dimension of the class-mean word-frequency matrix (Aitken et al., 2021).",
    ]
    if len(kept) == 0:
        notes.append("No slow point was found: the eigenvalue and time-constant figures are left out.")
    rp.write_html_report(path, title=f"fastfp run: {summary['model']}", summary_rows=_summary_rows(summary),
                         figures=figures, notes=notes)


@main.command()
@click.argument("weights", type=_WeightsPath())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FixedPoints .npz to write.")
@click.option("--input", "input_spec", default="zero", show_default=True,
              help="Constant input: zero, mean, word:<w> or FILE.npy.")
@_search_options
@click.option("--method", type=click.Choice(["hybrid", "newton", "lm", "adam"]), default="hybrid", show_default=True)
@click.option("--backend", type=click.Choice(["cpu", "numpy", "gpu"]), default="cpu", show_default=True)
@click.option("--jacobian", type=click.Choice(["auto", "dense", "matrix_free"]), default="auto", show_default=True,
              help="Dense Newton or matrix-free Newton-Krylov (auto: matrix-free from N = 128 or when dense "
                   "does not fit in memory).")
@click.option("--eig-k", type=click.IntRange(min=1), default=None,
              help="Keep only the k eigenvalues of largest |lambda| (matrix-free; default: all when N < 1024, "
                   "else 8).")
@click.option("--scheduler", type=str, default=None, metavar="tcp://HOST:PORT",
              help="Solve in shards on this Dask scheduler (needs the 'dask' extra).")
@click.option("--connect-timeout", type=_FiniteFloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="With --scheduler: how long to wait for it before giving up.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Solve in shards on a local Dask cluster of this many workers (needs the 'dask' extra).")
@click.option("--shard-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Initial states per Dask task.")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              help="Where the Dask shards go (default: OUTPUT's name + '.shards'); a rerun resumes there.")
@click.option("--atol", type=_FiniteFloatRange(min=0), default=None,
              help="Convergence tolerance (default 1e-10 / 1e-5 in float32).")
@click.option("--maxiter", type=click.IntRange(min=0, max=2**31 - 1), default=None, help="Iteration cap (default per method).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--slow-ratio", type=_FiniteFloatRange(min=0, min_open=True), default=None,
              help="Slow-manifold mode (lm/hybrid), e.g. 0.05.")
@click.option("--slow-speed", type=_FiniteFloatRange(min=0, min_open=True), default=None,
              help="With --slow-ratio: a slow point moves by at most this per step (|F(h) - h|_inf; "
                   "default 1e-3; `fastfp run` uses 1e-2).")
@click.option("--tol-q", type=_FiniteFloatRange(min=0, min_open=True), default=None,
              help="Also stop points with q = ||F(h) - h||^2 / 2 below this (the study's rule; adam's "
                   "default 1e-12).")
@click.option("--restart-steps", type=click.IntRange(min=0), default=None,
              help="Steps of the map from a point that stalled (diverged, no decrease, singular, or at the default "
                   "iteration cap still moving faster than 1e-2) before one more solve; 0: none (default 100, "
                   "0 for adam).")
@click.option("--adam-lr", type=_FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="adam: initial learning rate (the study's code: 0.01).")
@click.option("--adam-stop", type=click.Choice(["all", "mean"]), default="all", show_default=True,
              help="adam: stop when every point's q is below --tol-q (FixedPointFinder) or their mean "
                   "is (renn, the study's code; the study's whole search, with --maxiter 10000 and its "
                   "0.025 merge, is fastfp.study.study_search).")
@click.option("--adam-schedule", type=click.Choice(["plateau", "constant"]), default="plateau", show_default=True,
              help="adam: learning rate x0.95 on plateaus (FixedPointFinder-Torch) or constant (renn).")
@click.option("--keep", type=click.Choice(["distinct", "all"]), default="distinct", show_default=True,
              help="Save the distinct points (unique 1e-3; every status, each point keeps its own) or every point.")
@_data_options
@_json_always_option
@_progress_option
def find(weights, output, input_spec, states, noise, seed, batch_size, method, backend, jacobian, eig_k, scheduler,
         connect_timeout, workers,
         shard_size, results_dir, atol, maxiter, dtype, slow_ratio, slow_speed, tol_q, restart_steps, adam_lr, adam_stop,
         adam_schedule, keep,
         task, classes, corpus, n_docs, length, force_progress) -> None:
    """Find fixed points of WEIGHTS and save them (-o) as a .npz.

    WEIGHTS is any file fastfp.load reads, or fastfp:data/gru64_cat3.npz (the shipped model). Initial states come from rollouts of task (or corpus)
    documents; the points are saved eigen-decomposed (see `fastfp analyze`).
    """
    t0 = time.perf_counter()
    import numpy as np

    import fastfp

    # Options that do not go together are refused before loading, rollouts or a solve.
    if slow_speed is not None and slow_ratio is None:
        raise click.UsageError("--slow-speed: the speed limit of slow-manifold mode; give --slow-ratio too (e.g. 0.05)")
    if scheduler is not None and workers is not None:
        raise click.UsageError("give --scheduler (an existing Dask cluster) or --workers (a local one), not both")
    _check_connect_timeout(scheduler)
    ctx_find = click.get_current_context()
    if scheduler is None and workers is None:
        sharding = [f"--{n.replace('_', '-')}" for n in ("shard_size", "results_dir")
                    if ctx_find.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
        if sharding:
            raise click.UsageError(f"{', '.join(sharding)}: options of a sharded run; give --workers N or "
                                   "--scheduler too")
    solver_options = dict(method=method, backend=backend, jacobian=jacobian, atol=atol, maxiter=maxiter,
                          dtype=np.dtype(dtype), slow_ratio=slow_ratio, slow_speed=slow_speed, tol_q=tol_q,
                          batch_size=batch_size)
    if restart_steps is not None:
        solver_options["restart_steps"] = restart_steps
    if method == "adam":
        solver_options.update(adam_lr=adam_lr, adam_stop=adam_stop, adam_schedule=adam_schedule)
    else:
        ctx = click.get_current_context()
        given = [f"--{n.replace('_', '-')} {v}" for n, v in (("adam_lr", adam_lr), ("adam_stop", adam_stop),
                                                               ("adam_schedule", adam_schedule))
                 if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"got {', '.join(given)} with --method {method}; these are options of --method adam")
    _check_output(output, weights, corpus, input_spec if input_spec.endswith(".npy") else None)
    model, name = _load_model(weights)
    params = model.params.astype(np.float64)
    k = eig_k if eig_k is not None else (None if params.state_size < 1024 else 8)
    if k is not None and k >= params.state_size:  # before the solve, which can take long
        raise click.BadParameter(f"got {k}, expected fewer than N = {params.state_size}", param_hint="'--eig-k'")
    data = _task_data(model, task, classes, length, corpus, n_docs, seed)
    xs = _input_sequences(model, data)
    x = _resolve_input(input_spec, model, data, xs)
    if x.ndim == 2 and x.shape[0] not in (1, states):  # before the rollouts and the solve
        from .errors import ShapeError

        # A data error (exit 1), as the file's other shape checks in _resolve_input.
        raise ShapeError(f"option '--input': {input_spec} holds {x.shape[0]} input vectors; expected one, shape "
                         f"({x.shape[1]},), or one per state, ({states}, {x.shape[1]}) with --states {states}")
    h0 = _initial_states(params, xs, data, states, noise, seed)
    if scheduler is not None or workers is not None:
        from fastfp.distributed import find_fixed_points_sharded

        shards = results_dir or (str(output) + ".shards")
        weights = _weights_for_workers(weights, shards)
        _log(f"solving {states} states in shards of {shard_size} on Dask; shards in {shards} ...")
        if scheduler is not None:
            _log(f"connecting to {scheduler} (up to {connect_timeout:g} s; --connect-timeout) ...")
        fp = find_fixed_points_sharded(weights, h0, shards, x=x, shard_size=shard_size, scheduler=scheduler,
                                       n_workers=workers, progress=not _quiet(), unique_tol=None,
                                       connect_timeout=connect_timeout, **solver_options)
    else:
        _log(f"solving {states} states with {method} on {backend} ({dtype}) ...")
        with _Bar("fixed points", states, force=force_progress) as bar:
            fp = fastfp.find_fixed_points(params, h0, x, progress=bar, **solver_options)
    # Settled and unsettled points apart: unique keeps the lowest-q point of a cluster, and a point
    # at the iteration cap must not absorb a slow point next to it.
    settled = _settled(fp) & ~_too_fast(fp)
    parts = [part.unique(1e-3) for part in (fp[settled], fp[~settled]) if len(part)]
    distinct = (fastfp.concatenate(parts) if len(parts) > 1 else parts[0]) if parts else fp.unique(1e-3)
    out = distinct if keep == "distinct" else fp
    _log(f"eigen-decomposition of {len(out)} points{'' if k is None else f' (top {k}, matrix-free)'} ...")
    out = out.decompose(params.astype(np.dtype(dtype)), k=k, backend=backend)
    out.metadata.update(model=name, input=input_spec, seed=seed, noise=noise, kept=keep)
    out.save(output)
    saved_bytes = Path(output).stat().st_size
    # Full decompositions hold 3 N x N arrays per point: a file size worth knowing before --keep all.
    _log(f"saved {len(out)} points to {output} ({saved_bytes / 1e6:.1f} MB)")
    gave_up = ~_settled(out)
    if gave_up.any():  # shown even with -q: they are in the file, but they are no fixed points
        click.echo(f"fastfp: note: {int(gave_up.sum())} of the {len(out)} saved points did not settle "
                   f"({_status_counts(out[gave_up])}); fastfp analyze leaves them out unless --points all", err=True)
        hint = _slow_hint(out[gave_up]) if slow_ratio is None and method != "adam" else ""
        if hint:
            click.echo(f"fastfp: note: {hint}", err=True)
    fast = _too_fast(out)
    if fast.any():
        click.echo(f"fastfp: note: {int(fast.sum())} of the {len(out)} saved points are slow points that move faster "
                   f"than --slow-speed {out.metadata['slow_speed']:g} (median {np.median(out.residual[fast]):.2g} per step: local minima "
                   "of the speed where the damping ran out, not on the slow manifold); fastfp analyze leaves them out "
                   "unless --points all", err=True)
    _echo_json({
        "model": name,
        "output": str(output),
        "saved_bytes": saved_bytes,
        "points": len(fp),
        "status": _status_counts(fp),
        "distinct": len(distinct),
        "distinct_status": _status_counts(distinct),  # every status is saved: what the distinct points are
        "saved": len(out),
        "wall_time_s": time.perf_counter() - t0,
    })


@main.command()
@click.argument("fixedpoints", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write an HTML report with the figures (needs the 'report' extra).")
@click.option("--no-report", is_flag=True, help="Write no report (the default; excludes --report).")
@click.option("--horizon", type=_FiniteFloatRange(min=0, min_open=True), default=None,
              help="Steps a mode must last to integrate (e.g. the document length): counts integration "
                   "modes and draws the line in the time-constant figure.")
@click.option("--points", "which", type=click.Choice(["found", "all"]), default="found", show_default=True,
              help="Analyse the points the solver found (converged, slow point, q tolerance) or every point of "
                   "the file (also those that did not settle: max iterations, diverged, ...).")
def analyze(fixedpoints, as_json, report, no_report, horizon, which) -> None:
    """Eigen-analysis summary of a saved (decomposed) FixedPoints file; figures with --report."""
    if report is not None and no_report:
        raise click.UsageError("options '--report' and '--no-report' exclude each other")
    if report is not None:
        _report_target(report, False, fixedpoints)  # fails now, before any work, when matplotlib is missing
    import numpy as np

    import fastfp
    from fastfp import analysis

    try:
        whole = fastfp.FixedPoints.load(fixedpoints)
    except fastfp.FastFPError as exc:
        if vars(exc) or "argument 'path'" not in str(exc):
            raise
        raise type(exc)(str(exc).replace("argument 'path'", "FIXEDPOINTS")) from None
    if whole.eigvals is None:
        from .errors import InvalidOptionError

        raise InvalidOptionError(
            f"FIXEDPOINTS: {fixedpoints} holds no eigenvalues (saved before decompose); write it with fastfp find "
            "(which saves them), or in Python call fp.decompose(params) before fp.save(path)"
        )
    fast = _too_fast(whole)
    found = _settled(whole) & ~fast
    # A point that did not settle is no fixed point: its eigenvalues describe nothing in particular.
    fp = whole[found] if which == "found" else whole
    top = np.abs(fp._need("eigvals"))[:, 0] if len(fp) else np.zeros(0)
    finite = np.isfinite(top)
    # One point (however many copies of it) spans no manifold: a PR there is the PR of rounding.
    pr = analysis.manifold_dimension(fp) if _distinct_count(fp) >= 2 else None
    stats = (lambda a: {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())} if a.size else None)
    summary = {
        "file": str(fixedpoints),
        "n_points": len(whole),
        "analysed_points": which,
        "n_analysed": len(fp),
        "state_size": int(whole.x.shape[1]) if whole.x.ndim == 2 else None,
        "status": _status_counts(whole),
        "too_fast": int(fast.sum()),
        "stable": int(fp.is_stable.sum()),
        "unstable_counts": {int(k): int(v) for k, v in zip(*np.unique(fp.n_unstable, return_counts=True))},
        "top_abs_eigenvalue": stats(top[finite]),
        "max_residual": float(np.max(fp.residual)) if len(fp) else None,
        "participation_ratio": pr.participation_ratio if pr else None,
        "n95": pr.n_components_95 if pr else None,
        "integration_modes": None,
        # decompose(k=...) keeps the top k eigenvalues only: counts of k mean "k or more"
        "eigenvalues_per_point": int(whole._need("eigvals").shape[1]),
        "counts_capped_at": int(whole.eigvals.shape[1]) if whole.eigvals.shape[1] < whole.x.shape[1] else None,
        "report": None,
    }
    if horizon is not None and len(fp):
        modes = analysis.integration_modes(fp, horizon=horizon)
        summary["integration_modes"] = {"horizon": horizon, "median": modes.median,
                                        "counts": {int(k): int(v) for k, v in zip(*np.unique(modes.n_modes[modes.valid], return_counts=True))}}
    if report is not None:
        _write_analyze_report(report, summary, fp, horizon)
        summary["report"] = str(report)
        _log(f"report written to {report}")
    if as_json:
        _echo_json(summary)
        return
    t = summary["top_abs_eigenvalue"]
    im = summary["integration_modes"]
    cap = summary["counts_capped_at"]
    counts = "{" + ", ".join(f"{'>=' if k == cap else ''}{k if k >= 0 else 'not finite'}: {v}"
                             for k, v in summary["unstable_counts"].items()) + "}"
    left_out = summary["n_points"] - summary["n_analysed"]
    n_fast = summary["too_fast"] if which == "found" else 0
    why = " and ".join(t for t in (f"{left_out - n_fast} that did not settle" if left_out - n_fast else "",
                                   f"{n_fast} slow points faster than the search's slow_speed "
                                   f"{whole.metadata.get('slow_speed', 0):g}" if n_fast else "") if t)
    lines = [
        f"file             {fixedpoints}",
        f"points           {summary['n_points']} (N={summary['state_size']}), status {summary['status']}"
        + (f"; the {why} are left out (--points all keeps them)" if left_out else ""),
        f"stable           {summary['stable']}; unstable-eigenvalue counts {counts}",
        "top |lambda|     " + (f"min {t['min']:.4f}, median {t['median']:.4f}, max {t['max']:.4f}" if t else "-"),
        "points PR        " + (f"{pr.participation_ratio:.2f} (n95 {pr.n_components_95})" if pr else
                                 "- (fewer than 2 distinct points)" if len(fp) else "-"),
    ]
    if im is not None:
        lines.append(f"integration      median modes {im['median']} at horizon {horizon:g}")
    if cap is not None:
        lines.append(f"eigenvalues      the top {cap} of {summary['state_size']} per point (saved with --eig-k): "
                     f"a count of {cap} means {cap} or more")
    if summary["report"] is not None:
        lines.append(f"report           {summary['report']}")
    click.echo("\n".join(lines))


def _write_analyze_report(path, summary, fp, horizon):
    """The HTML report of `fastfp analyze`: its summary and the figures a FixedPoints file supports."""
    import numpy as np

    from . import report as rp
    from .errors import InvalidOptionError

    finite = np.isfinite(fp.x).all(axis=1)
    if finite.sum() < 2:
        raise InvalidOptionError(
            f"option '--report': {int(finite.sum())} finite point(s) to draw"
            + (f" of the {summary['n_points']} in the file (the others did not settle; --points all draws them)"
               if summary["n_analysed"] < summary["n_points"] else " in the file") + "; the figures need at least 2"
        )
    t, im = summary["top_abs_eigenvalue"], summary["integration_modes"]
    rows = [
        ("file", summary["file"]),
        ("points", f"{summary['n_points']} (N={summary['state_size']})"),
        ("analysed", f"{summary['n_analysed']} ({'every point' if summary['analysed_points'] == 'all' else 'the ones that settled: converged, slow point, q tolerance'})"),
        ("solver status", ", ".join(f"{k} {v}" for k, v in summary["status"].items())),
        ("method", fp.metadata.get("method")),
        ("model", fp.metadata.get("model")),
        ("stable points", summary["stable"]),
        ("unstable-eigenvalue counts", ", ".join(f"{'>=' if k == summary.get('counts_capped_at') else ''}"
                                                 f"{k if k >= 0 else 'not finite'}: {v}"
                                                 for k, v in summary["unstable_counts"].items())
         + (f" (top {summary['counts_capped_at']} eigenvalues per point)" if summary.get("counts_capped_at") else "")),
        ("top |λ| (min / median / max)", f"{t['min']:.4f} / {t['median']:.4f} / {t['max']:.4f}" if t else None),
        ("max residual", summary["max_residual"]),
        ("participation ratio of the points", summary["participation_ratio"]),
        ("components for 95%", summary["n95"]),
    ]
    if im is not None:
        rows.append(("integration modes (median)", f"{im['median']} at horizon {im['horizon']:g} steps"))
    figures = [
        ("Points on their principal components (colour: log10 q, the speed).",
         rp.fixed_points_figure(fp[finite], title=f"{summary['file']}: points in PC space")),
        ("Eigenvalues of the Jacobian at each point, with the unit circle; right: close-up at 1.",
         rp.eigenvalue_figure(fp[finite])),
        ("Time constants by rank at each point"
         + (f"; the dashed line is the horizon ({horizon:g} steps)." if horizon else " (pass --horizon to draw the horizon)."),
         rp.time_constants_figure(fp[finite], horizon=horizon)),
        ("Explained variance of the points' principal components.",
         rp.explained_variance_figure({"points": fp.x[finite]})),
    ]
    rp.write_html_report(path, title=f"fastfp analyze: {summary['file']}", summary_rows=rows, figures=figures)


def _word_list(path, option) -> list:
    """Tokens (or labels) of a file: a JSON list (or {token: id} object) when it ends in .json, else
    one per line (UTF-8, a byte-order mark dropped; trailing newline and carriage returns dropped,
    nothing else stripped: a token may hold spaces)."""
    import json

    from .errors import FileFormatError

    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first token
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{option} {path}: not UTF-8 text ({exc})") from None
    if str(path).lower().endswith(".json"):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise FileFormatError(f"{option} {path}: not JSON ({exc})") from None
        if isinstance(items, dict):  # {token: id}, as Hugging Face's vocab.json: in id order
            ids = sorted(items.values()) if all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in items.values()) else None
            if ids != list(range(len(items))):
                detail = ""
                if ids is not None:
                    missing = sorted(set(range(len(items))) - set(ids))
                    extra = sorted({i for i in ids if not 0 <= i < len(items)} | {i for i in ids if ids.count(i) > 1})
                    detail = "; " + "; ".join(t for t in (f"missing id(s) {missing[:5]}" if missing else "",
                                                          f"id(s) {extra[:5]} out of range or repeated" if extra else "")
                                              if t)
                raise FileFormatError(f"{option} {path}: a JSON object must map each token to its id, "
                                      f"0..{len(items) - 1} once each{detail}")
            return sorted(items, key=items.get)
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise FileFormatError(f"{option} {path}: expected a JSON list of strings or an object {{token: id}}")
        return items
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    empty = [i + 1 for i, ln in enumerate(lines) if ln == ""]
    if empty:
        raise FileFormatError(f"{option} {path}: line {empty[0]} is empty; expected one token per line")
    return lines


@main.command()
@click.argument("weights", type=_WeightsPath())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="fastfp params .npz to write.")
@click.option("--cell", type=click.Choice(["vanilla", "gru", "gru_reset_before", "ugrnn", "lstm"]), default=None,
              help="The fastfp cell when the file cannot tell (fastfp.CELLS).")
@click.option("--layer", type=click.IntRange(min=0), default=None,
              help="Layer of a stacked RNN (default 0, with a warning when there are several).")
@click.option("--direction", type=click.IntRange(0, 1), default=None,
              help="1: the reverse direction of a bidirectional RNN (default 0, with a warning when it has two).")
@click.option("--key-prefix", type=str, default=None, help="Key prefix of the RNN in a state dict.")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), default=None,
              help="Activation of a vanilla RNN, which a state dict does not store (default: tanh, with a warning).")
@click.option("--embedding-key", type=str, default=None, metavar="KEY",
              help="State-dict key of the embedding (V, M) when fastfp's guess misses; 'none' for no embedding.")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The tokenizer's vocabulary: one token per line (or a .json list, or a .json object {token: id}), "
                   "line i naming embedding row i; needed to read text (--corpus) with the model.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The readout's outputs in order, one label string per line (or a .json list), as they appear in "
                   "a corpus' label column (with --vocab).")
@click.option("--cased", is_flag=True, help="With --vocab: the training text was not lowercased.")
@click.option("--multilabel", is_flag=True, help="With --vocab: the outputs are independent labels (sigmoid).")
@click.option("--unk", type=str, default=None, metavar="TOKEN",
              help="With --vocab: the vocabulary's unknown-word token when it is not '<unk>' (e.g. '[UNK]').")
@click.option("--readout-key", type=str, default=None, metavar="KEY",
              help="State-dict key of the readout weight (C, H) when fastfp's guess misses; 'none' for no readout.")
@_json_always_option
def convert(weights, output, cell, layer, direction, key_prefix, nonlinearity, embedding_key, vocab_file, labels_file,
            cased, multilabel, unk, readout_key) -> None:
    """Convert a weights file to fastfp's params .npz.

    WEIGHTS is any file fastfp.load reads (torch .pt, .safetensors, Flax msgpack, .npz), or
    fastfp:data/gru64_cat3.npz (the shipped model).
    """
    import fastfp

    _check_output(output, weights, vocab_file, labels_file)
    keys = {name: (False if value == "none" else value)
            for name, value in (("embedding_key", embedding_key), ("readout_key", readout_key))}
    model = _load(weights, has_load_options=True, cell=cell, layer=layer, direction=direction, key_prefix=key_prefix,
                  nonlinearity=nonlinearity, **keys)
    if labels_file is not None and vocab_file is None:
        raise click.UsageError("--labels: give --vocab too (labels say how to read a corpus, which needs the vocabulary)")
    given = [f for f, v in (("--cased", cased), ("--multilabel", multilabel), ("--unk", unk is not None)) if v]
    if given and vocab_file is None:
        raise click.UsageError(f"{', '.join(given)}: say how the vocabulary was used; give --vocab too")
    if vocab_file is not None:
        from .errors import FastFPError

        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = model.with_vocab(_word_list(vocab_file, "--vocab"),
                                         labels=None if labels_file is None else _word_list(labels_file, "--labels"),
                                         lowercase=False if cased else None, multilabel=True if multilabel else None,
                                         unk=unk)
            for w in caught:
                click.echo("fastfp: warning: " + str(w.message).replace("argument 'vocab'", f"--vocab {vocab_file}")
                           .replace("pass lowercase=False", "pass --cased"), err=True)
        except FastFPError as exc:
            text = (str(exc).replace("argument 'vocab'", f"--vocab {vocab_file}")
                    .replace("argument 'labels'", f"--labels {labels_file}").replace("argument 'unk'", "--unk"))
            raise type(exc)(text) from None
    fastfp.save_params(output, model)
    p = model.params
    unused = list(model.metadata.get("unused_keys") or [])
    if unused:
        # Not a warning (optimiser state, epochs and step counts are usual), but nothing is dropped unsaid.
        click.echo(f"fastfp: note: {len(unused)} entr{'y' if len(unused) == 1 else 'ies'} of WEIGHTS not used: "
                   + ", ".join(map(repr, unused[:8])) + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""),
                   err=True)
    _echo_json({
        "input": _weights_name(weights),
        "output": str(output),
        "cell": p.cell,
        "nonlinearity": p.nonlinearity if p.cell == "vanilla" else None,
        "hidden_size": p.hidden_size,
        "input_size": p.input_size,
        "embedding": model.embedding is not None,
        "embedding_key": model.metadata.get("embedding_key"),
        "readout": model.readout_weight is not None,
        "readout_key": model.metadata.get("readout_key"),
        "unused_keys": unused,
        "vocab": model.vocab is not None,
        "labels": ((model.metadata.get("task") or {}).get("params") or {}).get("label_names")
        if isinstance(model.metadata.get("task"), dict) else None,
    })


@main.command()
@click.option("--quick", is_flag=True, help="Smallest grid (one cell, one size; about a second).")
@click.option("--full", is_flag=True, help="Larger grid (four cells, H up to 512; 10-20 s on 2 cores).")
@click.option("--repeats", type=click.IntRange(min=1, max=1000), default=None,
              help="Timed repeats per case (default 3 / 5 / 7).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--reference", is_flag=True, help="Also time the NumPy reference backend (step, Jacobian).")
@click.option("--json", "as_json", is_flag=True, help="Print the machine and the rows as JSON.")
@_progress_option
def bench(quick, full, repeats, dtype, reference, as_json, force_progress) -> None:
    """A quick timing table of step, Jacobian and solve on this machine.

    Random layers (PyTorch's initialisation), B states with N = H (2H for the LSTM); every case is
    warmed up once (Numba compiles or loads its cache there), then timed with time.perf_counter;
    the median over the repeats is shown. The GPU is timed when there is one it can use.
    """
    import numpy as np

    from . import _bench

    if quick and full:
        raise click.UsageError("options '--quick' and '--full' exclude each other")
    size = "quick" if quick else "full" if full else "default"
    backends = ("cpu", "numpy") if reference else ("cpu",)
    gpu = _bench.gpu_status()
    if gpu == "available":
        backends = backends + ("gpu",)
    grid = _bench.SIZES[size]
    n = len(grid["cells"]) * len(grid["hidden"]) * (2 * len(backends) + 1)
    with _Bar(f"bench ({size})", n, force=force_progress) as bar:
        rows = _bench.run_bench(size, repeats=repeats, backends=backends, dtype=np.dtype(dtype), on_case=bar)
    machine = _bench.machine_info()
    if as_json:
        _echo_json({"size": size, "dtype": dtype, "machine": machine, "gpu": gpu, "rows": [r.as_dict() for r in rows]})
        return
    head = (f"fastfp bench ({size}, {dtype}) on {machine['processor']}: {machine['cpu_count']} CPUs, numba threads "
            f"{machine['numba_threads']}; median of {rows[0].repeats} repeats after a warm-up")
    table = [("op", "cell", "backend", "H", "N", "B", "median", "per state", "note")]
    for r in rows:
        table.append((r.op, r.cell, r.backend, str(r.hidden_size), str(r.state_size), str(r.batch),
                      _seconds(r.median_s), _seconds(r.per_state_us * 1e-6), r.note))
    widths = [max(len(row[k]) for row in table) for k in range(len(table[0]) - 1)]
    lines = [head, ""]
    for row in table:
        lines.append("  ".join(c.rjust(w) if 3 <= k <= 7 else c.ljust(w) for k, (c, w) in enumerate(zip(row, widths)))
                     + ("  " + row[-1] if row[-1] else ""))
    lines += ["", f"gpu: {gpu}"]
    click.echo("\n".join(lines))


def _seconds(t):
    """A duration with a unit that keeps 3 significant digits readable."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t * 1e9:.3g} ns"


@main.command()
@_json_always_option
def info() -> None:
    """Versions, backends available and threads, as JSON on stdout."""
    import json
    import platform

    import numba
    import numpy
    import scipy

    try:
        import cupy  # noqa: F401

        gpu = "cupy installed"
    except ImportError:
        gpu = "not available (pip install 'fastfp-rnn[gpu]')"
    click.echo(
        json.dumps(
            {
                "fastfp": __version__,
                "python": platform.python_version(),
                "numpy": numpy.__version__,
                "scipy": scipy.__version__,
                "numba": numba.__version__,
                "numba_threads": numba.config.NUMBA_NUM_THREADS,
                "backends": {"cpu": "numba", "numpy": "reference", "gpu": gpu},
            },
            indent=2,
        )
    )


@main.command()
@click.option("--battery", "battery_name", type=click.Choice(["quick", "paper", "extra", "low-l2", "study-cell"]), default="quick", show_default=True,
              help="Networks to train and analyse (fastfp.study.battery).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for models, fixed points, figure data and the tables; finished networks are skipped.")
@click.option("--states", type=click.IntRange(min=2), default=512, show_default=True,
              help="Initial states of the fixed-point search per network.")
@click.option("--input", "fp_input", type=click.Choice(["neutral", "zero", "mean"]), default="neutral",
              show_default=True, help="Input held fixed in the search (neutral: the word 'the').")
@click.option("--slow-speed", type=_FiniteFloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Largest ||F(h) - h||_inf of a slow point.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of the table.")
@click.option("--scheduler", type=str, default=None, metavar="tcp://HOST:PORT",
              help="Run the networks as tasks on this Dask scheduler (needs the 'dask' extra).")
@click.option("--connect-timeout", type=_FiniteFloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="With --scheduler: how long to wait for it before giving up.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Run the networks on a local Dask cluster of this many workers (needs the 'dask' extra).")
@click.option("--report", "with_report", is_flag=True,
              help="Also write OUT/study.html with each network's figures (needs the 'report' extra).")
def study(battery_name, out_dir, states, fp_input, slow_speed, as_json, scheduler, connect_timeout, workers,
          with_report) -> None:
    """Reproduce the study: train or load a battery of classifiers, find fixed points, measure.

    Prints a table of measured vs predicted dimension (the study's values beside fastfp's) and
    writes study.md, study.csv and study.json into --out. Training needs the torch extra; networks
    whose model file is in --out are loaded, and networks with a row file measured with the same
    options are not run again.
    """
    from fastfp import study as _study

    specs = _study.battery(battery_name)
    if with_report:
        try:  # fail now, before any training, when matplotlib is missing
            import matplotlib  # noqa: F401
        except ImportError:
            from .errors import MissingDependencyError

            raise MissingDependencyError("option '--report': the HTML report needs matplotlib; install the "
                                         "extra: pip install 'fastfp-rnn[report]'") from None
    if scheduler is not None and workers is not None:
        raise click.UsageError("give --scheduler (an existing Dask cluster) or --workers (a local one), not both")
    _check_connect_timeout(scheduler)
    if scheduler is not None or workers is not None:
        import functools

        from fastfp.distributed import run_tasks

        fn = functools.partial(_study.run_network, n_states=states, fp_input=fp_input, slow_speed=slow_speed)
        if scheduler is not None:
            _log(f"connecting to {scheduler} (up to {connect_timeout:g} s; --connect-timeout) ...")
        run = run_tasks(specs, fn, out_dir, scheduler=scheduler, n_workers=workers, progress=not _quiet(),
                        connect_timeout=connect_timeout)
        rows = list(run.rows)
        tables = _study.write_table(rows, out_dir)
        _log(f"{len(rows)} networks; tables: {tables['markdown']}")
        if with_report:
            _log(f"report: {_study.write_report(rows, out_dir)}")
        if as_json:
            _echo_json({"battery": battery_name, "out": str(out_dir), "tables": tables, "rows": rows})
        else:
            click.echo(_study.table_markdown(rows), nl=False)
        return
    result = _study.run_study(specs, out_dir, progress=_log, n_states=states, fp_input=fp_input,
                              slow_speed=slow_speed)
    _log(f"{len(result.ran)} run, {len(result.skipped)} already done; tables: {result.tables['markdown']}")
    if with_report:
        _log(f"report: {_study.write_report(result.rows, result.out_dir)}")
    if as_json:
        _echo_json({"battery": battery_name, "out": result.out_dir, "ran": list(result.ran),
                    "skipped": list(result.skipped), "tables": result.tables, "rows": list(result.rows)})
        return
    click.echo(result.table_markdown(), nl=False)


def _set_quiet(ctx, param, value) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["quiet"] = True


# `fastfp run -q` as well as `fastfp -q run`: the flag is where users put it.
for _command in main.commands.values():
    _command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_set_quiet, help="No progress messages on stderr (as fastfp -q)."))


if __name__ == "__main__":  # pragma: no cover
    main()
