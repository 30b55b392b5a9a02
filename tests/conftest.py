"""Shared test set-up: strict numpy semantics, seeded keys, warnings as errors (pyproject)."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cpu_only`` check XLA:CPU's compiled HLO or the CPU planner on the
    default backend: elsewhere (a GPU host) they would test another compiler."""
    if jax.default_backend() == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only: the default backend is {jax.default_backend()}")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def key():
    """A fixed PRNG key: tests are deterministic."""
    return jax.random.key(0)


@pytest.fixture
def rng():
    """A seeded numpy generator for test data."""
    return np.random.default_rng(0)
