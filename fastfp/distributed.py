"""Scale-out on a Dask cluster: batteries of tasks and shards of one large set of initial states.

Two entry points, both resumable:

:func:`run_tasks`
    Runs ``fn(spec, out_dir) -> dict`` for every spec of a battery (e.g. one network of a study
    each) as Dask tasks. ``spec`` is any small picklable object with a ``.key`` (a filesystem-safe
    id, unique in the battery); ``fn`` a picklable (top-level) function.
:func:`find_fixed_points_sharded`
    Splits the initial states of one network into shards, solves each shard on a worker and merges
    the shards with a global :meth:`FixedPoints.unique`.

What a results directory holds (``run_tasks``)::

    results_dir/
        manifest.json        the specs, each task's status and timestamps, one record per run
        rows/<key>.json      one file per finished task: the row fn returned, worker, timings
        <key>.*              whatever fn writes into out_dir (= results_dir)

Every file is written to a temporary name in the same directory and renamed (``os.replace``), so a
file either exists whole or not at all. A task counts as finished exactly when ``rows/<key>.json``
exists (the worker writes it after ``fn`` returned): a run that is killed and started again does
not recompute those tasks and recomputes all others; the manifest is a record, not the source of
truth. A task whose worker process dies is rescheduled by Dask (its nanny restarts the worker;
after ``distributed.scheduler.allowed-failures`` deaths the task fails with ``KilledWorker``); a
task that raises is retried ``retries`` times. Tasks that still fail are recorded in the manifest
and reported together in one :class:`fastfp.errors.TaskFailedError` after every other task has
finished and been saved.

Workers receive the spec, the function and paths, never large arrays: each worker reads the
weights and its slice of the initial states itself. With a cluster on other machines the results
directory (and every path a spec names) must be on a filesystem the workers share; this is checked
before any task is sent.

``dask[distributed]`` is an optional dependency (``pip install 'fastfp-rnn[dask]'``), imported
only when one of these functions runs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import inspect
import json
import logging
import os
import pickle
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import TMP_MARK, atomic_path
from ._version import __version__
from .errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    FastFPError,
    FileFormatError,
    InvalidOptionError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
    TaskFailedError,
)

__all__ = ["run_tasks", "TaskRun", "find_fixed_points_sharded", "ShardSpec", "MANIFEST_NAME", "ROWS_DIR"]

MANIFEST_NAME = "manifest.json"
ROWS_DIR = "rows"
_MANIFEST_FORMAT = "fastfp-task-manifest"
_MANIFEST_VERSION = 1
_SHARDS_CONFIG = "shards.json"
_SHARDS_FORMAT = "fastfp-sharded-run"
_INSTALL = "pip install 'fastfp-rnn[dask]'"
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")
_SCHEDULER_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$")
# A spec travels through the scheduler with every task: it must stay a description (paths, seeds,
# sizes), never data.
_MAX_SPEC_BYTES = 1 << 20
_TMP_MARK = TMP_MARK


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # also raised when sys.modules['distributed'] is None
        raise MissingDependencyError(
            f"fastfp.distributed needs dask.distributed, which could not be imported ({exc}); "
            f"install it with: {_INSTALL}"
        ) from None
    return distributed


# ============================================================================ atomic files
def _atomic(path):
    """A temporary path next to ``path``, fsynced and renamed onto it on success."""
    return atomic_path(path, fsync=True)


def _atomic_write_text(path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _atomic_save_array(path, array) -> None:
    with _atomic(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _atomic_save_fixed_points(path, fp) -> None:
    with _atomic(path) as tmp:
        fp.save(tmp)  # FixedPoints.save writes to exactly the path given (no suffix added)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.dtype):
        return obj.name
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"<array shape={obj.shape} dtype={obj.dtype}>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return repr(obj)


def _describe(spec) -> dict:
    """A JSON-safe description of a spec for the manifest (its fields, or its repr)."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        desc = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    else:
        desc = {"repr": repr(spec)}
    desc = {"type": f"{type(spec).__module__}.{type(spec).__qualname__}", **desc}
    return json.loads(json.dumps(desc, default=_json_default))


def _fn_name(fn) -> str:
    """The task function's identity in the manifest: stable across processes (no memory address),
    a functools.partial with its bound arguments."""
    import functools
    import re

    if isinstance(fn, functools.partial):
        def arg(v):
            return _fn_name(v) if callable(v) else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))

        bound = [arg(a) for a in fn.args] + [f"{k}={arg(v)}" for k, v in sorted(fn.keywords.items())]
        return f"functools.partial({', '.join([_fn_name(fn.func)] + bound)})"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


# ============================================================================ argument checks
def _check_results_dir(results_dir) -> Path:
    if not isinstance(results_dir, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"argument 'results_dir': got {type(results_dir).__name__}, expected a directory path (str or os.PathLike)"
        )
    path = Path(results_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidOptionError(
            f"argument 'results_dir': {str(path)!r} exists and is not a directory; expected a directory "
            "(it is created if missing)"
        )
    try:
        (path / ROWS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidOptionError(f"argument 'results_dir': cannot create {str(path)!r} ({exc})") from None
    if not os.access(path, os.W_OK) or not os.access(path / ROWS_DIR, os.W_OK):
        raise InvalidOptionError(f"argument 'results_dir': {str(path)!r} is not writable")
    return path.resolve()


def _check_scheduler(scheduler) -> str:
    match = _SCHEDULER_RE.match(scheduler) if isinstance(scheduler, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise InvalidOptionError(
            f"argument 'scheduler': got {scheduler!r}, expected an address 'tcp://HOST:PORT' with a port in "
            "1..65535 (e.g. 'tcp://10.0.0.5:8786'); for TLS or other setups pass client=distributed.Client(...)"
        )
    return scheduler


def _check_worker_files(worker_files) -> dict:
    if worker_files is None:
        return {}
    if not isinstance(worker_files, dict):
        raise ArgumentTypeError(
            f"argument 'worker_files': got {type(worker_files).__name__}, expected a dict of argument name to file path"
        )
    checked = {}
    for name, path in worker_files.items():
        if not isinstance(name, str) or not isinstance(path, (str, os.PathLike)):
            raise ArgumentTypeError(
                f"argument 'worker_files': got the entry {name!r}: {path!r}, expected an argument name (str) "
                "and a file path"
            )
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise InvalidOptionError(f"argument {name!r}: {str(path)!r} is not a file")
        checked[name] = str(path)
    return checked


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise InvalidOptionError(f"argument {name!r}: got {value!r}, expected an integer >= {minimum}")
    return int(value)


def _check_specs(specs) -> list:
    if isinstance(specs, (str, bytes)) or not hasattr(specs, "__iter__"):
        raise ArgumentTypeError(f"argument 'specs': got {type(specs).__name__}, expected a sequence of specs with a .key")
    specs = list(specs)
    seen = {}
    for i, spec in enumerate(specs):
        key = getattr(spec, "key", None)
        if not isinstance(key, str):
            raise ArgumentTypeError(
                f"argument 'specs': item {i} ({type(spec).__name__}) has no str attribute 'key' "
                f"(got {type(key).__name__}); expected objects with a filesystem-safe .key"
            )
        if not _KEY_RE.match(key):
            raise InvalidOptionError(
                f"argument 'specs': item {i} has key {key!r}, expected 1-200 characters from A-Z a-z 0-9 . _ + = - "
                "not starting with '.', '_', '+', '=' or '-' (it names files)"
            )
        # Keys name files: two that differ only in case would collide on macOS or Windows.
        if key.lower() in seen:
            j = seen[key.lower()]
            raise InvalidOptionError(
                f"argument 'specs': items {j} and {i} share the key {key!r}"
                + ("" if specs[j].key == key else f" (up to case: {specs[j].key!r})")
                + "; keys must be unique, ignoring case"
            )
        seen[key.lower()] = i
        try:
            size = len(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # unpicklable by pickle; cloudpickle may still manage (dask checks at submit)
            size = 0
        if size > _MAX_SPEC_BYTES:
            raise InvalidOptionError(
                f"argument 'specs': item {i} ({key!r}) pickles to {size / 2**20:.1f} MiB, expected at most "
                f"{_MAX_SPEC_BYTES / 2**20:.0f} MiB; put arrays in files and pass their paths in the spec"
            )
    return specs


# ============================================================================ worker side
def _execute(spec, fn, results_dir: str):
    """Run one task on a worker and save its row; returns the saved record (small)."""
    started, t0 = _now(), time.perf_counter()
    out_dir = Path(results_dir)
    row = fn(spec, out_dir)
    if not isinstance(row, dict):
        raise ArgumentTypeError(
            f"task {spec.key!r}: {_fn_name(fn)} returned {type(row).__name__}, expected a dict (a JSON-serialisable row)"
        )
    try:
        worker = _worker_address()
    except Exception:
        worker = None
    record = {
        "key": spec.key,
        "row": row,
        "started": started,
        "finished": _now(),
        "wall_time_s": time.perf_counter() - t0,
        "worker": worker,
        "pid": os.getpid(),
        "fastfp_version": __version__,
    }
    try:
        text = json.dumps(record, indent=1)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"task {spec.key!r}: {_fn_name(fn)} returned a row that is not JSON-serialisable ({exc}); "
            "convert arrays to lists or save them to files under out_dir"
        ) from None
    _atomic_write_text(out_dir / ROWS_DIR / f"{spec.key}.json", text)
    return record


def _worker_address():
    from distributed import get_worker

    return get_worker().address


def _read_record(path: Path, key: str) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("row"), dict):
            raise ValueError(f"expected a JSON object with key {key!r} and a 'row' object")
    except (OSError, ValueError) as exc:
        raise FileFormatError(
            f"result file {str(path)!r} is not a readable fastfp task result ({exc}); delete it to recompute the task"
        ) from None
    return record


# ============================================================================ manifest
class _Manifest:
    """The run record: written by the client process only, always atomically."""

    def __init__(self, results_dir: Path, fn_name: str):
        self.path = results_dir / MANIFEST_NAME
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                ok = isinstance(data, dict) and data.get("format") == _MANIFEST_FORMAT
            except (OSError, ValueError):
                ok = False
            if not ok:
                raise FileFormatError(
                    f"argument 'results_dir': {str(self.path)!r} is not a fastfp task manifest; "
                    "use another results_dir (or remove the file)"
                )
            if int(data.get("version", 0)) > _MANIFEST_VERSION:
                raise FileFormatError(
                    f"argument 'results_dir': {str(self.path)!r} has manifest version {data['version']}, this fastfp "
                    f"writes version {_MANIFEST_VERSION}: upgrade fastfp (pip install -U fastfp-rnn)"
                )
            if data.get("fn") != fn_name:
                old_fn = str(data.get("fn"))
                same = old_fn.split(",")[0] == fn_name.split(",")[0] and fn_name.startswith("functools.partial(")
                raise InvalidOptionError(
                    f"argument 'fn': {str(results_dir)!r} holds results of {old_fn!r}, got {fn_name!r}; "
                    + ("the same function with other bound arguments (for fastfp study: other --states, --input "
                       "or --slow-speed); " if same else "")
                    + "results of different functions cannot share a results_dir: pass another results_dir"
                )
        else:
            data = {"format": _MANIFEST_FORMAT, "version": _MANIFEST_VERSION, "fn": fn_name,
                    "created": _now(), "tasks": {}, "runs": []}
        self.data = data
        self._saved_at = -np.inf

    @property
    def tasks(self) -> dict:
        return self.data["tasks"]

    def save(self, *, at_most_every: float = 0.0) -> None:
        # During a run the manifest is rewritten at most once a second: with thousands of tasks,
        # rewriting it after every task would cost O(T^2). The rows/ files are the source of truth,
        # so a manifest a second behind loses nothing.
        now = time.monotonic()
        if at_most_every and now - self._saved_at < at_most_every:
            return
        self.data["updated"] = _now()
        _atomic_write_text(self.path, json.dumps(self.data, indent=1, default=_json_default))
        self._saved_at = now


# ============================================================================ clients
@contextmanager
def _client(distributed, client, scheduler, n_workers, connect_timeout):
    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            own = distributed.Client(scheduler, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailableError(
                f"argument 'scheduler': cannot connect to {scheduler} within {connect_timeout} s ({exc}); "
                "is a dask scheduler running there, and reachable from here?"
            ) from None
        try:
            yield own
        finally:
            own.close()
        return
    # One single-threaded process per worker, on loopback only: the default never listens on a
    # public interface (the dashboard, if bokeh is installed, takes a free loopback port).
    # NUMBA_NUM_THREADS=1 keeps each worker's kernels off the cores the other workers use (the
    # nanny already sets OMP/MKL/OpenBLAS to 1).
    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": "1"},
    )
    try:
        own = distributed.Client(cluster, set_as_default=False)
        try:
            yield own
        finally:
            own.close()
    finally:
        cluster.close()


# ============================================================================ task batteries
@dataclass(frozen=True)
class TaskRun:
    """What :func:`run_tasks` did.

    Attributes
    ----------
    keys : tuple of str, length T
        The specs' keys, in the order given.
    rows : tuple of dict, length T
        The row each task returned, in the order of ``keys`` (the same list a serial loop
        ``[fn(spec, results_dir) for spec in specs]`` gives), whether computed now or read back.
    computed : tuple of str
        Keys computed by this call.
    reused : tuple of str
        Keys whose result file existed already (not recomputed).
    results_dir, manifest_path : str
    wall_time_s : float
    """

    keys: tuple
    rows: tuple
    computed: tuple
    reused: tuple
    results_dir: str
    manifest_path: str
    wall_time_s: float

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, key: str) -> dict:
        """The row of task ``key``."""
        try:
            return self.rows[self.keys.index(key)]
        except ValueError:
            raise InvalidOptionError(f"argument 'key': got {key!r}, expected one of the run's keys") from None


def run_tasks(
    specs,
    fn,
    results_dir,
    *,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    retries: int = 2,
    progress: bool = True,
    connect_timeout: float = 30.0,
    worker_files: dict | None = None,
) -> TaskRun:
    """Run ``fn(spec, results_dir)`` for every spec as Dask tasks; resumable.

    Parameters
    ----------
    specs : sequence, length T
        Small picklable task descriptions (e.g. ``fastfp.study.NetworkSpec``), each with a ``.key``:
        a str of ``A-Z a-z 0-9 . _ + = -`` (not starting with punctuation), unique in ``specs``.
        A spec must pickle to at most 1 MiB: arrays go in files, specs carry their paths.
    fn : callable
        ``fn(spec, out_dir: pathlib.Path) -> dict``, a top-level (importable) function. It may write
        files ``out_dir/<key>.*``; it returns a JSON-serialisable row. It runs in worker processes.
    results_dir : str or os.PathLike
        Created if missing. Holds ``manifest.json``, ``rows/<key>.json`` and what ``fn`` writes.
        Tasks whose ``rows/<key>.json`` exists are not run again.
    client : distributed.Client, optional
        An existing client to run on (not closed here).
    scheduler : str, optional
        ``'tcp://HOST:PORT'`` of a running ``dask scheduler`` to connect to. Default (neither
        ``client`` nor ``scheduler``): a LocalCluster on 127.0.0.1 with ``n_workers`` processes of
        one thread, started only if there is something to compute and closed at the end.
    n_workers : int, optional
        Worker processes of the default LocalCluster (>= 1; default 2). Refused with ``client`` or
        ``scheduler``, whose cluster has its own workers.
    retries : int
        Times a task that raised is run again (>= 0). A task whose worker died is rescheduled by
        Dask independently of this (see the module docs).
    progress : bool
        One line per finished task, and a summary, on stderr.
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    worker_files : dict of str to path, optional
        Files the tasks read, keyed by the argument that named them (e.g. ``{'weights_path': p}``):
        each must exist here and, before any task is sent, be seen by every worker, as
        ``results_dir`` must, so a cluster without a shared filesystem fails once with the file's
        name instead of in every task.

    Returns
    -------
    TaskRun
        Rows in the order of ``specs``, and which tasks were computed or reused.

    Raises
    ------
    TaskFailedError
        Some tasks still failed after their retries (``.failures``: key -> error text); all other
        tasks have finished and are saved, so running again computes only the failed ones.
    MissingDependencyError
        dask.distributed is not installed (``pip install 'fastfp-rnn[dask]'``).
    BackendUnavailableError
        ``scheduler`` cannot be reached.
    InvalidOptionError, ArgumentTypeError
        Bad arguments; a results directory that is a file, not writable, holds results of another
        function, or is not visible from the workers; a file of ``worker_files`` the workers do
        not see.
    """
    t0 = time.perf_counter()
    distributed = _import_distributed()
    specs = _check_specs(specs)
    if not callable(fn):
        raise ArgumentTypeError(f"argument 'fn': got {type(fn).__name__}, expected a callable fn(spec, out_dir) -> dict")
    if client is not None and scheduler is not None:
        raise InvalidOptionError("arguments 'client' and 'scheduler': both given, expected at most one")
    if client is not None and not isinstance(client, distributed.Client):
        raise ArgumentTypeError(f"argument 'client': got {type(client).__name__}, expected a distributed.Client")
    if scheduler is not None:
        _check_scheduler(scheduler)
    if n_workers is not None and (client is not None or scheduler is not None):
        raise InvalidOptionError(
            f"argument 'n_workers': got {n_workers!r} with {'client' if client is not None else 'scheduler'}=, "
            "expected None: it sizes the default LocalCluster only (an existing cluster has its own workers)"
        )
    n_workers = _check_int("n_workers", 2 if n_workers is None else n_workers, 1)
    retries = _check_int("retries", retries, 0)
    connect_timeout = float(connect_timeout)
    if not np.isfinite(connect_timeout) or connect_timeout <= 0:
        raise InvalidOptionError(f"argument 'connect_timeout': got {connect_timeout!r}, expected a number > 0")
    results_dir = _check_results_dir(results_dir)
    worker_files = _check_worker_files(worker_files)
    rows_dir = results_dir / ROWS_DIR
    log = _Log(progress)

    manifest = _Manifest(results_dir, _fn_name(fn))
    for stale in rows_dir.glob(f".*{_TMP_MARK}*"):  # left by a worker killed mid-write
        stale.unlink(missing_ok=True)

    records, pending = {}, []
    for spec in specs:
        entry = manifest.tasks.setdefault(spec.key, {})
        entry["spec"] = _describe(spec)
        path = rows_dir / f"{spec.key}.json"
        if path.exists():
            records[spec.key] = rec = _read_record(path, spec.key)
            entry.update(status="done", started=rec["started"], finished=rec["finished"],
                         wall_time_s=rec["wall_time_s"], worker=rec["worker"], result=f"{ROWS_DIR}/{path.name}")
            entry.pop("error", None)
        else:
            entry.update(status="pending")
            for name in ("started", "finished", "wall_time_s", "worker", "result", "error"):
                entry.pop(name, None)
            pending.append(spec)
    reused = tuple(spec.key for spec in specs if spec.key in records)
    run = {"started": _now(), "n_tasks": len(specs), "reused": len(reused), "to_run": len(pending),
           "computed": [], "failed": {}, "finished": None}
    manifest.data["runs"].append(run)
    if not pending:
        manifest.save()

    computed, failures, first_exc = [], {}, None
    if pending:
        # The manifest is written once a cluster is there: a scheduler that cannot be reached
        # leaves the results folder as it was.
        with _client(distributed, client, scheduler, n_workers, connect_timeout) as cl:
            manifest.save()
            where = _describe_client(cl)
            _check_visible(cl, results_dir, worker_files)
            log(f"{len(specs)} tasks: {len(reused)} done before, {len(pending)} to run on {where}")
            run["client"] = where
            token = os.urandom(4).hex()
            futures = {}
            for spec in pending:
                fut = cl.submit(_execute, spec, fn, str(results_dir), key=f"fastfp-{spec.key}-{token}",
                                retries=retries, pure=False)
                futures[fut] = spec.key
                manifest.tasks[spec.key].update(status="submitted", submitted=_now())
            manifest.save()
            done = len(reused)
            for fut in distributed.as_completed(list(futures), loop=cl.loop):
                key = futures.pop(fut)
                entry = manifest.tasks[key]
                done += 1
                if fut.status == "finished":
                    rec = fut.result()
                    records[key] = rec
                    computed.append(key)
                    run["computed"].append(key)
                    entry.update(status="done", started=rec["started"], finished=rec["finished"],
                                 wall_time_s=rec["wall_time_s"], worker=rec["worker"],
                                 result=f"{ROWS_DIR}/{key}.json")
                    log(f"[{done}/{len(specs)}] {key} done in {rec['wall_time_s']:.2f} s on {rec['worker']}")
                else:
                    exc = fut.exception() if fut.status == "error" else None
                    text = f"{type(exc).__name__}: {exc}" if exc is not None else f"task {fut.status}"
                    first_exc = first_exc or exc
                    failures[key] = text
                    run["failed"][key] = text
                    entry.update(status="failed", finished=_now(), error=text)
                    log(f"[{done}/{len(specs)}] {key} FAILED: {text}")
                fut.release()
                manifest.save(at_most_every=1.0)
    run["finished"] = _now()
    manifest.save()
    wall = time.perf_counter() - t0
    log(f"{len(specs)} tasks: {len(computed)} computed, {len(reused)} reused, {len(failures)} failed "
        f"in {wall:.1f} s; manifest {manifest.path}")
    if failures:
        listing = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        err = TaskFailedError(
            f"{len(failures)} of {len(specs)} tasks failed: {listing}{more}. The {len(specs) - len(failures)} "
            f"finished tasks are saved in {str(rows_dir)!r} and {str(manifest.path)!r} records the errors; "
            "fix the cause and run again to compute only the failed tasks",
            failures,
        )
        raise err from first_exc
    keys = tuple(spec.key for spec in specs)
    return TaskRun(
        keys=keys, rows=tuple(records[k]["row"] for k in keys), computed=tuple(computed), reused=reused,
        results_dir=str(results_dir), manifest_path=str(manifest.path), wall_time_s=wall,
    )


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = bool(enabled)

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"fastfp: {msg}", file=sys.stderr, flush=True)


def _describe_client(cl) -> str:
    try:
        n = len(cl.scheduler_info(n_workers=-1)["workers"])
    except TypeError:  # older distributed: no n_workers argument
        n = len(cl.scheduler_info()["workers"])
    except Exception:
        n = "?"
    return f"{n} workers at {cl.scheduler.address}"


def _check_visible(cl, results_dir: Path, worker_files: dict) -> None:
    # A worker that is restarting (or dies) meanwhile answers with an exception: it is not counted
    # as blind; whether it sees the directory is checked when it writes its first result.
    def blind_to(test, path):
        return sorted(addr for addr, ok in cl.run(test, str(path), on_error="return").items() if ok is False)

    blind = blind_to(os.path.isdir, results_dir)
    if blind:
        raise InvalidOptionError(
            f"argument 'results_dir': {str(results_dir)!r} does not exist on the workers {', '.join(blind)}; "
            "with a remote cluster the results directory must be on a filesystem the workers share"
        )
    for name, path in worker_files.items():
        blind = blind_to(os.path.isfile, path)
        if blind:
            raise InvalidOptionError(
                f"argument {name!r}: {path!r} is not a file on the workers {', '.join(blind)}; with a remote "
                "cluster the files the tasks read must be on a filesystem the workers share"
            )


# ============================================================================ sharded fixed points
@dataclass(frozen=True)
class ShardSpec:
    """One shard of :func:`find_fixed_points_sharded`: paths and a row range, never arrays.

    Attributes
    ----------
    index : int
    lo, hi : int
        Rows ``lo:hi`` of the initial states (and of a per-point input).
    weights_path, h0_path : str
    x_path : str or None
        ``.npy`` of the input, (M,) or (B, M); None for the zero input.
    solver_options, load_options : tuple of (name, value)
        Keyword arguments of :func:`fastfp.find_fixed_points` and :func:`fastfp.load`.
    width : int
        Digits of the shard number in the key.
    """

    index: int
    lo: int
    hi: int
    weights_path: str
    h0_path: str
    x_path: str | None
    solver_options: tuple = ()
    load_options: tuple = ()
    width: int = 4

    @property
    def key(self) -> str:
        return f"shard-{self.index:0{self.width}d}"


def _solve_shard(spec: ShardSpec, out_dir: Path) -> dict:
    """Worker side: load the weights and the shard's rows from their files, solve, save the shard."""
    from .loading import load
    from .solvers import find_fixed_points
    from .status import Status

    model = load(spec.weights_path, **dict(spec.load_options))
    # mmap: the worker reads only its rows of a possibly huge file.
    h0 = np.array(np.load(spec.h0_path, mmap_mode="r", allow_pickle=False)[spec.lo:spec.hi])
    x = None
    if spec.x_path is not None:
        xa = np.load(spec.x_path, mmap_mode="r", allow_pickle=False)
        x = np.array(xa[spec.lo:spec.hi] if xa.ndim == 2 else xa)
    fp = find_fixed_points(model.params, h0, x, **dict(spec.solver_options))
    fp.metadata.update(shard=spec.key, rows=[spec.lo, spec.hi])
    _atomic_save_fixed_points(out_dir / f"{spec.key}.npz", fp)
    codes, counts = np.unique(fp.status, return_counts=True)
    return {
        "shard": spec.key, "lo": spec.lo, "hi": spec.hi, "points": len(fp),
        "status": {Status(int(c)).name.lower(): int(n) for c, n in zip(codes, counts)},
        "solver_wall_time_s": float(fp.metadata.get("wall_time_s", float("nan"))),
    }


def _digest_file(path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _digest_array(a: np.ndarray) -> tuple[str, bool]:
    """(blake2b hex digest of dtype, shape and data; whether every entry is finite), in one pass."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    flat = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)
    step = max(1, (1 << 24) // max(1, flat[:1].nbytes))  # ~16 MiB at a time: memory maps stay cheap
    finite = True
    for lo in range(0, len(flat), step):
        block = np.ascontiguousarray(flat[lo:lo + step])
        h.update(block.data)
        finite = finite and bool(np.isfinite(block).all())
    return h.hexdigest(), finite


def _solver_option_names():
    from .solvers import find_fixed_points

    names = list(inspect.signature(find_fixed_points).parameters)
    return [n for n in names if n not in ("params", "h0", "x", "progress")]


def find_fixed_points_sharded(
    weights_path,
    h0,
    results_dir,
    *,
    x=None,
    shard_size: int = 4096,
    unique_tol: float | None = 1e-3,
    load_options: dict | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    retries: int = 2,
    progress: bool = True,
    connect_timeout: float = 30.0,
    **solver_options,
):
    """Fixed points of one network from a large set of initial states, in shards on a Dask cluster.

    The B initial states are cut into ``ceil(B / shard_size)`` shards; every shard is one task of
    :func:`run_tasks` in which a worker loads the weights from ``weights_path`` and its rows of the
    states from a ``.npy`` (memory-mapped), solves them with :func:`fastfp.find_fixed_points` and
    saves ``results_dir/shard-XXXX.npz``. At the end the shards are joined in order into
    ``results_dir/all-points.npz`` (one row per initial state, as a serial
    ``find_fixed_points(params, h0, x)`` gives) and merged with one global
    :meth:`FixedPoints.unique` into ``results_dir/fixed-points.npz``. A killed run resumes: shards
    already saved are not solved again. A results directory belongs to one problem: resuming with
    other weights, states, input, shard size or options is refused.

    Parameters
    ----------
    weights_path : str or os.PathLike
        Any file :func:`fastfp.load` reads; read by the client (to check the arguments) and by
        every worker (each must see it, as it must see ``results_dir``: checked before any shard
        is sent).
    h0 : str, os.PathLike or array_like, shape (B, N)
        Initial states: the path of a ``.npy`` (used in place), or an array, which is written once
        to ``results_dir/h0.npy`` for the workers to read.
    results_dir : str or os.PathLike
        See :func:`run_tasks`; also holds ``shards.json`` (the problem's fingerprint), ``h0.npy``,
        ``x.npy``, the shard files and the merged files.
    x : array_like, shape (M,) or (B, M), optional
        Input held fixed (None: zero input), written to ``results_dir/x.npy``.
    shard_size : int
        Initial states per shard (>= 1). Each worker holds one shard's dense solver memory (see
        ``batch_size``) at a time.
    unique_tol : float or None
        Tolerance of the global :meth:`FixedPoints.unique`; None returns every point.
    load_options : dict, optional
        Keyword arguments of :func:`fastfp.load` (e.g. ``{"cell": "gru"}``).
    client, scheduler, n_workers, retries, progress, connect_timeout
        As for :func:`run_tasks`.
    **solver_options
        Keyword arguments of :func:`fastfp.find_fixed_points` (method, atol, maxiter, dtype,
        backend, batch_size, ...), checked here before any task is sent. Each shard is solved
        independently: for ``method='adam'``, whose learning-rate schedule follows the mean q of
        its batch, results differ from one serial solve; every other method solves each point on
        its own and gives the serial result.

    Returns
    -------
    FixedPoints
        The distinct points (``unique_tol`` set) or all B points, with ``metadata['sharded']``.
    """
    from .fixed_points import FixedPoints, concatenate
    from .loading import load
    from .solvers import find_fixed_points

    _import_distributed()
    if not isinstance(weights_path, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"argument 'weights_path': got {type(weights_path).__name__}, expected a file path: workers load "
            "the weights themselves (save an RNNParams or Model with fastfp.save_params first)"
        )
    shard_size = _check_int("shard_size", shard_size, 1)
    if unique_tol is not None:
        unique_tol = float(unique_tol)
        if not np.isfinite(unique_tol) or unique_tol <= 0:
            raise InvalidOptionError(f"argument 'unique_tol': got {unique_tol!r}, expected a number > 0 or None")
    if load_options is not None and not isinstance(load_options, dict):
        raise ArgumentTypeError(
            f"argument 'load_options': got {type(load_options).__name__}, expected a dict of fastfp.load options"
        )
    load_options = dict(load_options or {})
    load_names = [n for n in inspect.signature(load).parameters if n != "source"]
    unknown = sorted(set(load_options) - set(load_names))
    if unknown:
        raise InvalidOptionError(
            f"argument 'load_options': {unknown[0]!r} is not an option of fastfp.load; expected some of {', '.join(load_names)}"
        )
    allowed = _solver_option_names()
    unknown = sorted(set(solver_options) - set(allowed))
    if unknown:
        raise InvalidOptionError(
            f"argument {unknown[0]!r}: not an option of fastfp.find_fixed_points; expected some of {', '.join(allowed)}"
        )
    if solver_options.get("speed_scale") is not None:
        # In full in the resume fingerprint (a long array would otherwise be summarised by its shape).
        solver_options["speed_scale"] = [float(v) for v in np.ravel(np.asarray(solver_options["speed_scale"], float))]
    if "dtype" in solver_options:
        try:
            solver_options["dtype"] = np.dtype(solver_options["dtype"]).name  # a JSON-safe, comparable name
        except TypeError:
            raise InvalidOptionError(
                f"argument 'dtype': got {solver_options['dtype']!r}, expected float32 or float64"
            ) from None
    results_dir = _check_results_dir(results_dir)
    weights_path = Path(weights_path).expanduser().resolve()
    model = load(weights_path, **load_options)
    params = model.params

    if isinstance(h0, (str, os.PathLike)):
        h0_path = Path(h0).expanduser().resolve()
        try:
            H0 = np.load(h0_path, mmap_mode="r", allow_pickle=False)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise FileFormatError(f"argument 'h0': {str(h0_path)!r} is not a readable .npy file ({exc})") from None
        except Exception as exc:
            raise FileFormatError(f"argument 'h0': {str(h0_path)!r} is not a readable .npy file ({exc})") from None
        if not isinstance(H0, np.ndarray):
            H0.close()
            raise FileFormatError(f"argument 'h0': {str(h0_path)!r} is an .npz archive, expected one .npy array")
    else:
        h0_path = None
        H0 = np.asarray(h0)
    if H0.dtype.kind not in "fiu" or H0.ndim != 2 or H0.shape[1] != params.state_size:
        raise ShapeError(
            f"argument 'h0': got a {H0.dtype} array of shape {H0.shape}, expected real numbers of shape "
            f"(B, {params.state_size}) (the state size of {str(weights_path)!r})"
        )
    B = H0.shape[0]
    if B == 0:
        raise ShapeError("argument 'h0': got 0 initial states, expected at least one")
    X = None
    if x is not None:
        X = np.asarray(x, dtype=np.float64)
        if not (X.shape == (params.input_size,) or X.shape == (B, params.input_size)):
            raise ShapeError(
                f"argument 'x': got shape {X.shape}, expected ({params.input_size},) or ({B}, {params.input_size})"
            )
    # Every option is checked once here (a cheap maxiter=0 solve of one point) rather than failing
    # in every task on the cluster. The probe runs on the NumPy backend: the workers may have a GPU
    # this process lacks, so only the backend's name is checked here.
    from .backends import BACKENDS

    backend = solver_options.get("backend", "cpu")
    if backend not in BACKENDS:
        raise InvalidOptionError(f"argument 'backend': got {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}")
    probe = {**solver_options, "maxiter": 0, "backend": "numpy"}
    find_fixed_points(params, np.array(H0[:1]), None if X is None else (X if X.ndim == 1 else X[:1]), **probe)

    h0_digest, h0_finite = _digest_array(H0)
    if not h0_finite:
        raise NonFiniteError("argument 'h0': holds NaN or Inf, expected finite initial states")
    x_digest = None
    if X is not None:
        x_digest, x_finite = _digest_array(X)
        if not x_finite:
            raise NonFiniteError("argument 'x': holds NaN or Inf, expected a finite input")

    n_shards = -(-B // shard_size)
    config = {
        "format": _SHARDS_FORMAT, "version": 1,
        "weights": {"path": str(weights_path), "blake2b": _digest_file(weights_path)},
        "h0": {"shape": list(H0.shape), "dtype": H0.dtype.str, "blake2b": h0_digest},
        "x": None if X is None else {"shape": list(X.shape), "blake2b": x_digest},
        "shard_size": shard_size, "n_shards": n_shards,
        "solver_options": json.loads(json.dumps(solver_options, default=_json_default, sort_keys=True)),
        "load_options": json.loads(json.dumps(load_options, default=_json_default, sort_keys=True)),
        "solver_defaults": _SOLVER_DEFAULTS,
    }
    config_path = results_dir / _SHARDS_CONFIG
    if config_path.exists():
        try:
            old = json.loads(config_path.read_text(encoding="utf-8"))
            assert isinstance(old, dict) and old.get("format") == _SHARDS_FORMAT
        except (OSError, ValueError, AssertionError):
            raise FileFormatError(
                f"argument 'results_dir': {str(config_path)!r} is not a fastfp sharded-run file; use another results_dir"
            ) from None
        if old.get("solver_defaults", 1) < 2 and isinstance(old.get("solver_options"), dict):
            # Written before find_fixed_points restarted stalled points by default: its shards were
            # solved as restart_steps=0 asks now (for the methods restarts are on for).
            old["solver_options"].setdefault("restart_steps", 0 if _restarts_on(old["solver_options"]) else None)
        differ = [k for k in ("weights", "h0", "x", "shard_size", "solver_options", "load_options")
                  if _comparable(k, old.get(k)) != _comparable(k, config[k])]
        if "solver_options" in differ:
            before = _comparable("solver_options", old.get("solver_options"))
            before = before if isinstance(before, dict) else {}
            now = _comparable("solver_options", config["solver_options"])
            keys = sorted(k for k in set(before) | set(now) if before.get(k, "<default>") != now.get(k, "<default>"))
            differ[differ.index("solver_options")] = f"solver_options: {', '.join(keys)}"
        if old.get("solver_defaults", 1) < 2 and any(d.startswith("solver_options") and "restart_steps" in d
                                                     for d in differ):
            differ.append("its shards were solved without restarts of stalled points, which find_fixed_points "
                          "now makes by default: pass restart_steps=0 to resume it as it was")
        elif (old.get("solver_defaults", 1) == 2 and _restarts_on(config["solver_options"])
              and config["solver_options"].get("restart_steps") is None):
            differ.append("solver defaults: its shards were solved under an earlier rule for restarts of stalled "
                          "points; pass a fresh results_dir")
        if differ:
            raise InvalidOptionError(
                f"argument 'results_dir': {str(results_dir)!r} holds shards of another problem (different "
                f"{', '.join(differ)}); pass a fresh results_dir, or the same arguments to resume"
            )
    fresh = not config_path.exists()
    if h0_path is None:
        h0_path = results_dir / "h0.npy"
        if fresh or not h0_path.exists():
            _atomic_save_array(h0_path, H0)
    x_path = None
    if X is not None:
        x_path = results_dir / "x.npy"
        if fresh or not x_path.exists():
            _atomic_save_array(x_path, X)
    config["h0"]["path"] = str(h0_path)
    _atomic_write_text(config_path, json.dumps(config, indent=1))

    width = max(4, len(str(n_shards - 1)))
    specs = [
        ShardSpec(i, lo, min(B, lo + shard_size), str(weights_path), str(h0_path),
                  None if x_path is None else str(x_path), tuple(sorted(solver_options.items())),
                  tuple(sorted(load_options.items())), width)
        for i, lo in enumerate(range(0, B, shard_size))
    ]
    # A shard whose row says done but whose result file is missing or damaged (deleted by hand, a
    # disk error) is computed again: its row goes, so run_tasks sees it pending.
    for spec in specs:
        row, shard = results_dir / ROWS_DIR / f"{spec.key}.json", results_dir / f"{spec.key}.npz"
        if row.exists():
            try:
                ok = len(FixedPoints.load(shard)) == spec.hi - spec.lo
            except (OSError, FastFPError):
                ok = False
            if not ok:
                row.unlink()
                if progress:
                    print(f"fastfp: {spec.key}: its result file is missing or damaged; computing it again",
                          file=sys.stderr)
    files = {"weights_path": weights_path, "h0": h0_path}
    if x_path is not None:
        files["x"] = x_path
    report = run_tasks(specs, _solve_shard, results_dir, client=client, scheduler=scheduler, n_workers=n_workers,
                       retries=retries, progress=progress, connect_timeout=connect_timeout, worker_files=files)

    parts = []
    for spec in specs:
        path = results_dir / f"{spec.key}.npz"
        part = FixedPoints.load(path)
        if len(part) != spec.hi - spec.lo:
            raise FileFormatError(
                f"shard file {str(path)!r} holds {len(part)} points, expected {spec.hi - spec.lo} (rows {spec.lo}:{spec.hi}); "
                "delete it and rows/" + spec.key + ".json to recompute the shard"
            )
        parts.append(part)
    everything = concatenate(parts)
    everything.metadata.pop("shard", None)
    everything.metadata.pop("rows", None)
    everything.metadata["wall_time_s"] = float(sum(p.metadata.get("wall_time_s", 0.0) for p in parts))
    everything.metadata["sharded"] = {
        "weights": str(weights_path), "h0": str(h0_path), "n_points": B, "shard_size": shard_size,
        "n_shards": n_shards, "computed_shards": len(report.computed), "reused_shards": len(report.reused),
        "unique_tol": unique_tol, "run_wall_time_s": report.wall_time_s,
    }
    _atomic_save_fixed_points(results_dir / "all-points.npz", everything)
    if unique_tol is None:
        return everything
    distinct = everything.unique(unique_tol)
    _atomic_save_fixed_points(results_dir / "fixed-points.npz", distinct)
    return distinct


def _restarts_on(solver_options) -> bool:
    """find_fixed_points restarts stalled points at these options' defaults (root-finding methods)."""
    return solver_options.get("method", "hybrid") != "adam"


# What find_fixed_points does at its defaults, for resumed runs: 1 (no entry) = no restarts,
# 2 = stalled points restarted in root-finding mode, 3 = also fast points at the cap, and in
# slow-manifold mode.
_SOLVER_DEFAULTS = 3


def _solver_defaults_json() -> dict:
    from .solvers import find_fixed_points

    out = {}
    for name, p in inspect.signature(find_fixed_points).parameters.items():
        if name in ("params", "h0", "x", "progress"):
            continue
        d = np.dtype(p.default).name if name == "dtype" else p.default
        out[name] = json.loads(json.dumps(d, default=_json_default))
    return out


def _comparable(name, value):
    """A fingerprint entry without where the file lies (moving a file does not change a problem)
    and, for the solver options, without those at find_fixed_points' defaults (passing a default
    explicitly, or a run written before an option existed, is the same problem)."""
    if isinstance(value, dict) and name in ("weights", "h0"):
        return {k: v for k, v in value.items() if k != "path"}
    if isinstance(value, dict) and name == "solver_options":
        defaults = _solver_defaults_json()
        # How many points a worker solves at once does not change the answer but for adam (its
        # schedule follows the batch's mean q), nor the memory it may use where the Jacobian
        # mode is given (under 'auto' the limit can choose it): a run whose workers ran out of
        # memory resumes with a smaller batch_size.
        neutral = set()
        if value.get("slow_ratio") is None:
            # Unused outside slow-manifold mode (runs before 2026-12-03 recorded the CLI's 1e-3 there).
            neutral.add("slow_speed")
        elif value.get("slow_speed") is None:
            from .solvers import DEFAULT_SLOW_SPEED

            value = {**value, "slow_speed": DEFAULT_SLOW_SPEED}  # what None means there, as earlier runs recorded it
        if value.get("method", "hybrid") != "adam":
            neutral.add("batch_size")
            if value.get("jacobian", "auto") != "auto":
                neutral.add("memory_limit")
        return {k: v for k, v in value.items()
                if k not in neutral and (k not in defaults or defaults[k] != v)}
    return value
