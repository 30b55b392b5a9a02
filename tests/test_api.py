"""The public API contract (dm-pix's api_test): every public function has keyword-only
options, a Google-style docstring with Args/Returns, and any PRNG key is named ``key``."""

import inspect

import pytest

import jaxconv
from jaxconv import data, filters, recovery, viz

# Positional parameters allowed to have defaults (they are data, not options).
POSITIONAL_DEFAULTS = {
    "fit": {"data"},
    "line_images": {"size"},
    "noise_images": {"size"},
    "shape_dataset": {"size"},
}


def _public_functions():
    seen = {}
    for module, names in (
        (jaxconv, jaxconv.__all__),
        (filters, [n for n in dir(filters) if not n.startswith("_")]),
        (data, [n for n in dir(data) if not n.startswith("_")]),
        (recovery, [n for n in dir(recovery) if not n.startswith("_")]),
        (viz, viz.__all__),
    ):
        for name in names:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and obj.__module__.startswith("jaxconv"):
                seen[f"{module.__name__}.{name}"] = obj
    return seen


FUNCTIONS = _public_functions()


def test_all_names_exist():
    for name in jaxconv.__all__:
        assert hasattr(jaxconv, name), name
    assert len(set(jaxconv.__all__)) == len(jaxconv.__all__)


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_options_are_keyword_only(qualname):
    fn = FUNCTIONS[qualname]
    allowed = POSITIONAL_DEFAULTS.get(fn.__name__, set())
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty:
            assert p.name in allowed, f"{qualname}: option {p.name!r} should be keyword-only"


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_docstrings_have_args_and_returns(qualname):
    fn = FUNCTIONS[qualname]
    doc = inspect.getdoc(fn)
    assert doc, f"{qualname} has no docstring"
    if inspect.signature(fn).parameters:
        assert "Args:" in doc, f"{qualname}: docstring lacks an Args: section"
    assert "Returns:" in doc, f"{qualname}: docstring lacks a Returns: section"


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_prng_keys_are_named_key_and_come_first(qualname):
    params = list(inspect.signature(FUNCTIONS[qualname]).parameters)
    for name in params:
        assert name not in ("rng", "prng", "seed_key", "rng_key"), f"{qualname}: use `key`"
    if "key" in params and FUNCTIONS[qualname] is not jaxconv.fit:
        assert params[0] == "key", f"{qualname}: `key` should be the first argument"
