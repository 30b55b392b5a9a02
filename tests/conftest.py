"""Shared test set-up: strict numpy semantics, seeded keys, warnings as errors (pyproject)."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fixed PRNG key: tests are deterministic."""
    return jax.random.key(0)


@pytest.fixture
def rng():
    """A seeded numpy generator for test data."""
    return np.random.default_rng(0)
