"""Tests for jaxconv/_compile.py: compiler_options() gives options the installed jaxlib
accepts, and they do what they say."""

import jax
import jax.numpy as jnp
import pytest

import jaxconv
from jaxconv import _compile


def _conv_hlo(options):
    x, w = jnp.zeros((2, 16, 16, 32)), jnp.zeros((3, 3, 32, 32))
    f = jax.jit(lambda x, w: jaxconv.conv(x, w, algorithm="xla"), compiler_options=options)
    return f.lower(x, w).compile().as_text()


def test_ynnpack_true_keeps_jaxlib_defaults():
    assert jaxconv.compiler_options(ynnpack=True) == {}
    if _compile._accepted("cpu", _compile._YNN_FUSION, ""):  # jaxlib 0.10: YNNPACK by default
        assert "ynn_fusion" in _conv_hlo({})


def test_default_keeps_convolutions_on_eigen():
    options = jaxconv.compiler_options()
    assert options == jaxconv.compiler_options(ynnpack=False)
    if not _compile._accepted("cpu", _compile._YNN_FUSION, ""):
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    assert options == {_compile._YNN_FUSION: _compile._YNN_WITHOUT_CONVOLUTIONS}
    assert "ynn_fusion" not in _conv_hlo(options)
    assert "convolution(" in _conv_hlo(options)


def test_dots_stay_on_ynnpack():
    x, w = jnp.ones((64, 32)), jnp.ones((32, 32))
    f = jax.jit(lambda x, w: x @ w, compiler_options=jaxconv.compiler_options())
    default = jax.jit(lambda x, w: x @ w).lower(x, w).compile().as_text()
    assert ("ynn" in f.lower(x, w).compile().as_text()) == ("ynn" in default)


def test_an_option_this_jaxlib_lacks_is_left_out(monkeypatch):
    monkeypatch.setattr(_compile, "_YNN_FUSION", "xla_cpu_no_such_option_anywhere")
    assert jaxconv.compiler_options(ynnpack=False) == {}


def test_off_cpu_there_is_nothing_to_set():
    assert jaxconv.compiler_options(ynnpack=False, backend="gpu") == {}


def test_ynnpack_must_be_a_bool():
    with pytest.raises(TypeError, match="ynnpack must be a bool, got 'no'"):
        jaxconv.compiler_options(ynnpack="no")
