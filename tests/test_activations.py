"""Tests for jaxconv._activations: same values as jax.nn and a numpy oracle, grads, lookup."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import _activations as activations

X = np.array([-30.0, -3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0, 30.0], np.float32)
_erf = np.vectorize(math.erf)

# name -> (jaxconv function, kwargs, jax.nn reference, independent numpy formula)
CASES = {
    "relu": (jaxconv.relu, {}, jax.nn.relu, lambda x: np.maximum(x, 0)),
    "leaky_relu": (
        jaxconv.leaky_relu,
        {"negative_slope": 0.2},
        jax.nn.leaky_relu,
        lambda x: np.where(x >= 0, x, 0.2 * x),
    ),
    "tanh": (jaxconv.tanh, {}, jax.nn.tanh, np.tanh),
    "sigmoid": (jaxconv.sigmoid, {}, jax.nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "gelu_exact": (
        jaxconv.gelu,
        {"approximate": False},
        jax.nn.gelu,
        lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    ),
    "gelu_tanh": (
        jaxconv.gelu,
        {"approximate": True},
        jax.nn.gelu,
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    "elu": (
        jaxconv.elu,
        {"alpha": 0.5},
        jax.nn.elu,
        lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))),
    ),
    "softplus": (jaxconv.softplus, {}, jax.nn.softplus, lambda x: np.logaddexp(x, 0)),
    "silu": (jaxconv.silu, {}, jax.nn.silu, lambda x: x / (1 + np.exp(-x))),
}
FUNCTIONS = sorted({id(c[0]): c[0] for c in CASES.values()}.values(), key=lambda f: f.__name__)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_equals_jax_nn_and_numpy(case):
    fn, kwargs, ref, oracle = CASES[case]
    got = fn(X, **kwargs)
    assert got.dtype == jnp.float32 and got.shape == X.shape
    np.testing.assert_array_equal(got, ref(X, **kwargs))
    np.testing.assert_allclose(got, oracle(X.astype(np.float64)), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.slow
def test_grads_finite_and_jit_equals_eager(case):
    fn, kwargs, _, _ = CASES[case]
    value_and_grads = jax.jit(jax.vmap(jax.value_and_grad(lambda x: fn(x, **kwargs))))
    values, grads = value_and_grads(X)
    assert np.all(np.isfinite(grads))
    np.testing.assert_allclose(values, fn(X, **kwargs), rtol=1e-6, atol=1e-7)


def test_relu_grad_at_zero_is_zero():
    assert float(jax.grad(jaxconv.relu)(0.0)) == 0.0


@pytest.mark.parametrize("fn", [jaxconv.relu, jaxconv.sigmoid], ids=lambda f: f.__name__)
def test_keeps_dtype_and_shape(fn):
    y = fn(jnp.ones((2, 3, 4), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 3, 4)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_options_keyword_only(fn):
    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == "x"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_leaky_relu_slope_is_keyword_only():
    with pytest.raises(TypeError):
        jaxconv.leaky_relu(X, 0.1)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("relu", jaxconv.relu),
        ("ReLU", jaxconv.relu),
        ("LEAKY_RELU", jaxconv.leaky_relu),
        ("tanh", jaxconv.tanh),
        ("Sigmoid", jaxconv.sigmoid),
        ("gelu", jaxconv.gelu),
        ("elu", jaxconv.elu),
        ("softplus", jaxconv.softplus),
        ("SiLU", jaxconv.silu),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_lookup_by_name(name, fn):
    assert jaxconv.activation(name) is fn


@pytest.mark.parametrize("name", ["identity", "linear", "Identity", "LINEAR"])
def test_identity_and_linear(name):
    f = jaxconv.activation(name)
    np.testing.assert_array_equal(f(X), X)
    np.testing.assert_array_equal(jax.grad(lambda x: f(x).sum())(X), np.ones_like(X))


def test_every_listed_name_resolves():
    assert set(activations.NAMES) >= {"relu", "identity", "linear", "silu"}
    for name in activations.NAMES:
        assert callable(jaxconv.activation(name))
        assert jaxconv.activation(name)(X).shape == X.shape


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"activation: unknown name 'swish'.*relu.*identity"):
        jaxconv.activation("swish")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="activation: name must be a string"):
        jaxconv.activation(jaxconv.relu)


@pytest.mark.parametrize("fn", [*FUNCTIONS, jaxconv.activation("identity")],
                         ids=lambda f: f.__name__)
def test_integer_input_is_a_type_error(fn):
    name = fn.__name__.lstrip("_")
    with pytest.raises(TypeError, match=rf"{name}: x must have a real floating dtype.*int32"):
        fn(jnp.arange(3, dtype=jnp.int32))


def test_python_int_is_a_type_error():
    with pytest.raises(TypeError, match="relu: x must have a real floating dtype"):
        jaxconv.relu(3)


@pytest.mark.parametrize(
    ("fn", "option"), [(jaxconv.leaky_relu, "negative_slope"), (jaxconv.elu, "alpha")],
    ids=["leaky_relu", "elu"],
)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.slow
def test_float32_option_keeps_low_precision_dtype(fn, option, dtype):
    """A float32 (strongly typed) slope or alpha must not promote x, as documented."""
    x = jnp.asarray(X, dtype)
    for value in (np.float32(0.5), jnp.float32(0.5)):
        y = fn(x, **{option: value})
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, fn(x, **{option: 0.5}))


@pytest.mark.parametrize("x", [[1.0, -1.0], None, "float32"], ids=["list", "none", "str"])
def test_non_array_input_is_a_type_error(x):
    """Our message, naming the op and the fix, instead of jax's 'Cannot determine dtype'."""
    with pytest.raises(TypeError, match=r"^relu: x must be an array or a scalar \(jax.typing"
                                        r".ArrayLike\), got (list|NoneType|str); convert it"):
        jaxconv.relu(x)
