"""pytest set-up of the benchmark suite.

The benches live in ``bench_*.py`` files, which the default run (``python -m pytest``, testpaths =
["tests"]) never sees. This conftest is only loaded when bench/ is collected, e.g.::

    python -m pytest bench/

and it makes pytest collect the ``bench_*.py`` files there, pins the thread pools of both backends
for the whole session (see ``_benchlib``) and hands the pinning info to the benches.
"""

from __future__ import annotations

import pytest

import _benchlib


def pytest_collect_file(file_path, parent):
    # Files named on the command line are already collected by pytest's own hook.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    return f"fastfp bench: {_benchlib.THREADS_ENV}={_benchlib.bench_threads()} (BLAS and Numba pools)"


@pytest.fixture(scope="session")
def pinned_threads():
    """Both backends on FASTFP_BENCH_THREADS threads for the whole session; yields extra_info."""
    try:
        pinned = _benchlib.PinnedThreads(_benchlib.bench_threads())
    except ValueError as exc:
        pytest.exit(f"fastfp bench: {exc}", returncode=4)
    with pinned:
        yield pinned.info()
