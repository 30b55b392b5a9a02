"""Tests for jaxconv/_compile.py: compiler_options() gives options the installed jaxlib
accepts, and they do what they say."""

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxconv
from jaxconv import _compile

pytestmark = pytest.mark.cpu_only  # XLA:CPU facts: see conftest.py


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


def test_a_refused_value_keeps_the_defaults_with_a_warning(monkeypatch):
    # the option exists but this jaxlib refuses its fusion kinds: no silent fallback to ""
    accepted = {_compile._YNN_WITHOUT_CONVOLUTIONS: False, "": True}
    monkeypatch.setattr(_compile, "_accepted", lambda backend, name, value: accepted[value])
    with pytest.warns(RuntimeWarning, match="refuses .*keeping XLA's default options"):
        assert jaxconv.compiler_options(ynnpack=False) == {}


def test_off_cpu_there_is_nothing_to_set():
    assert jaxconv.compiler_options(ynnpack=False, backend="gpu") == {}


def test_ynnpack_must_be_a_bool():
    with pytest.raises(TypeError, match="ynnpack must be a bool, got 'no'"):
        jaxconv.compiler_options(ynnpack="no")


@pytest.mark.parametrize(
    ("options", "eigen"),
    [({}, False), (None, False), ({_compile._YNN_FUSION: ""}, True),
     ({_compile._YNN_FUSION: _compile._YNN_WITHOUT_CONVOLUTIONS}, True),
     ({_compile._YNN_FUSION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}, False)],
)
def test_convs_on_eigen_reads_the_ynnpack_option(options, eigen):
    assert _compile.convs_on_eigen(options) is eigen


def test_plan_for_compiler_options_moves_many_channels_to_eigen():
    """Compiled with YNNPACK's convolutions off, XLA's Eigen conv beats im2col's GEMM (1.4-2x,
    benchmarks/NOTES.md), so the plan for those options is xla for every part; the default
    flags keep rows forward (a 1-D conv YNNPACK declines) and im2col for the gradients."""
    shapes = ((32, 64, 64, 16), (3, 3, 16, 32))
    p = jaxconv.plan(*shapes, backend="cpu")
    assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == (
        "rows", "im2col", "im2col")
    options = {_compile._YNN_FUSION: _compile._YNN_WITHOUT_CONVOLUTIONS}
    p = jaxconv.plan(*shapes, backend="cpu", compiler_options=options)
    assert p.algorithm == p.input_grad.algorithm == p.kernel_grad.algorithm == "xla"
    assert "Eigen" in p.reason
    # what does not depend on XLA's conv keeps its lowering
    assert jaxconv.plan((64, 16, 16, 1), (3, 3, 1, 1), compiler_options=options).algorithm == (
        "shift_add")


def test_fit_traces_its_step_for_the_options_it_compiles_with():
    from jaxconv.lowering import _base

    seen = []

    def loss_fn(params, batch):
        seen.append(_base.convs_on_eigen())
        return jnp.sum(params["w"] ** 2)

    params = {"w": jnp.ones(3)}
    for options, want in (({}, False), (jaxconv.compiler_options(), bool(
            jaxconv.compiler_options()))):
        seen.clear()
        jaxconv.fit(loss_fn, params, optax.sgd(0.1), jnp.zeros((4, 1)), steps=2,
                    compiler_options=options, progress=False)
        assert seen and set(seen) == {want}, (options, seen)
