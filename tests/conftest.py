"""Shared fixtures for the fastfp test suite.

Helpers that tests import directly live in ``support.py`` (this directory is on ``sys.path`` under
pytest's default import mode because ``tests/`` is not a package).
"""

from __future__ import annotations

import numpy as np
import pytest

from support import VARIANT_IDS, VARIANTS, make_params


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test (tests stay independent of execution order)."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def variant(request) -> tuple[str, str]:
    """(cell, nonlinearity) for every cell, the vanilla cell with both activations."""
    return request.param


@pytest.fixture
def params(variant):
    """Random float64 params with gates in their non-linear range (H = 5, M = 3)."""
    cell, nonlinearity = variant
    return make_params(cell, nonlinearity)


@pytest.fixture(params=["cpu", "numpy"])
def backend(request) -> str:
    return request.param


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="Also run tests marked slow.")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def first_pass(monkeypatch):
    """The solvers' first attempt alone (no restart of stalled points, find_fixed_points'
    restart_steps default 0): for tests of what that attempt does, which a restart could mask."""
    import fastfp.solvers

    monkeypatch.setattr(fastfp.solvers, "_DEFAULT_RESTART_STEPS", 0)
