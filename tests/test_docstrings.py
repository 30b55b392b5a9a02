"""Every ``Example:`` in jaxconv's docstrings runs as written and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import jaxconv

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxconv.__path__, "jaxconv."))


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.slow
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.slow
def test_the_examples_are_found():
    attempted = sum(
        doctest.testmod(importlib.import_module(n), verbose=False, report=False).attempted
        for n in ("jaxconv._conv", "jaxconv._fitting")
    )
    assert attempted >= 5
