"""Tests for jaxconv.nn: init/apply shape agreement over a grid, plain-pytree params,
features by name, and errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import nn

CONFIGS = {
    "conv_relu_conv": ([nn.Conv(4, 3), nn.Activation("relu"), nn.Conv(2, (3, 1))], (2, 12, 12, 1)),
    "same_stride": ([nn.Conv(3, 3, stride=2, padding="SAME")], (2, 11, 9, 2)),
    "dilated_reflect": ([nn.Conv(2, 3, dilation=2, padding=2, pad_mode="reflect")], (1, 9, 9, 1)),
    "grouped_nobias": ([nn.Conv(4, 3, groups=2, use_bias=False)], (3, 8, 8, 4)),
    "pools": ([nn.Conv(4, 3, padding=1), nn.MaxPool(2), nn.AvgPool(3, stride=1)], (2, 10, 10, 1)),
    "classifier": (
        [nn.Conv(8, 3), nn.Activation("gelu"), nn.GlobalPool(), nn.Dense(4)], (5, 12, 12, 1)
    ),
    "flatten_dense": ([nn.Conv(2, 3), nn.Flatten(), nn.Dense(3)], (2, 6, 6, 1)),
    "conv1d": ([nn.Conv(3, 5, padding="CAUSAL"), nn.Activation("tanh")], (2, 20, 2)),
    "conv3d": ([nn.Conv(2, 3), nn.GlobalPool("max")], (1, 5, 6, 7, 1)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_init_predicts_the_shapes_apply_produces(name, key):
    layers, shape = CONFIGS[name]
    model = nn.Stack(layers)
    params = model.init(key, shape)
    x = jax.random.normal(key, shape)
    y, feats = model.apply(params, x, return_features=True)
    predicted = model.shapes(shape)
    assert list(feats) == list(model.names) == list(predicted)
    for layer_name, f in feats.items():
        assert f.shape == predicted[layer_name], layer_name
    assert y.shape == model.output_shape(shape)
    assert y is feats[model.names[-1]]


def test_params_are_plain_pytrees_of_arrays(key):
    model = nn.Stack([nn.Conv(2, 3), nn.Activation("relu"), nn.Conv(1, 3)])
    params = model.init(key, (1, 8, 8, 1))
    assert set(params) == {"conv_0", "conv_2"}
    assert params["conv_0"]["kernel"].shape == (3, 3, 1, 2)
    assert params["conv_0"]["bias"].shape == (2,)
    for leaf in jax.tree.leaves(params):
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
    # settings never become leaves: the model hashes and can be a static jit argument
    hash(model)
    apply = jax.jit(lambda m, p, x: m.apply(p, x), static_argnums=0)
    assert apply(model, params, jnp.ones((1, 8, 8, 1))).shape == (1, 4, 4, 1)


def test_apply_matches_the_functional_ops(key):
    model = nn.Stack([nn.Conv(2, 3, padding="SAME"), nn.Activation("leaky_relu"), nn.MaxPool(2)])
    params = model.init(key, (2, 8, 8, 1))
    x = jax.random.normal(key, (2, 8, 8, 1))
    p = params["conv_0"]
    pre = jaxconv.conv(x, p["kernel"], padding="SAME") + p["bias"][None, None, None]
    ref = jaxconv.max_pool(jaxconv.leaky_relu(pre), 2)
    np.testing.assert_allclose(model.apply(params, x), ref, rtol=1e-6, atol=1e-6)


def test_default_kernel_init_is_lecun_normal(key):
    params = nn.Conv(64, 3).init(key, (1, 9, 9, 16))
    std = float(jnp.std(params["kernel"]))
    assert abs(std - 1 / np.sqrt(3 * 3 * 16)) < 0.01
    assert float(jnp.abs(params["bias"]).max()) == 0.0


@pytest.mark.parametrize(("mode", "fan"), [("fan_in", 5 * 5 * 16), ("fan_out", 5 * 5 * 64),
                                         ("fan_avg", 5 * 5 * (16 + 64) / 2)])
def test_kernel_init_sees_the_conv_fans(mode, fan, key):
    """As flax's Conv: both fans include the receptive field (glorot/he scale correctly)."""
    init = jax.nn.initializers.variance_scaling(1.0, mode, "normal")
    params = nn.Conv(64, 5, kernel_init=init).init(key, (1, 9, 9, 16))
    assert abs(float(jnp.std(params["kernel"])) * np.sqrt(fan) - 1) < 0.03


def test_custom_names_and_initializers(key):
    model = nn.Stack(
        [nn.Conv(1, 3, kernel_init=jax.nn.initializers.ones), nn.Activation("relu")],
        names=["detector", "relu"],
    )
    params = model.init(key, (1, 5, 5, 1))
    assert list(params) == ["detector"]
    np.testing.assert_array_equal(params["detector"]["kernel"], np.ones((3, 3, 1, 1)))


def test_vmap_init_gives_restart_params(key):
    model = nn.Stack([nn.Conv(2, 3)])
    params = jax.vmap(lambda k: model.init(k, (1, 6, 6, 1)))(jax.random.split(key, 5))
    assert params["conv_0"]["kernel"].shape == (5, 3, 3, 1, 2)


def test_list_settings_become_tuples_so_the_model_hashes(key):
    # flax-style lists: Stack.init compiles once per model, so the model must hash
    listed = nn.Stack([nn.Conv(2, [3, 3], padding=[(1, 1), (1, 1)]), nn.MaxPool([2, 2])])
    tupled = nn.Stack([nn.Conv(2, (3, 3), padding=((1, 1), (1, 1))), nn.MaxPool((2, 2))])
    assert listed == tupled and hash(listed) == hash(tupled)
    got, want = listed.init(key, (1, 6, 6, 1)), tupled.init(key, (1, 6, 6, 1))
    np.testing.assert_array_equal(got["conv_0"]["kernel"], want["conv_0"]["kernel"])
    assert listed.output_shape((1, 6, 6, 1)) == (1, 3, 3, 2)


def test_layers_are_frozen(key):
    layer = nn.Conv(2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.features = 3


@pytest.mark.parametrize(
    ("make", "shape", "exc", "match"),
    [
        (lambda: nn.Stack([]), None, ValueError, "needs at least one layer"),
        (lambda: nn.Stack([nn.Conv(1), nn.Conv(1)], names=["a", "a"]), None, ValueError,
         "names must be unique"),
        (lambda: nn.Stack([nn.Conv(2, 3, groups=2)]), (1, 5, 5, 3), ValueError,
         r"in_channels \(=3\) must be divisible by groups \(=2\)"),
        (lambda: nn.Stack([nn.Conv(2, 7)]), (1, 5, 5, 1), ValueError, "larger than the padded"),
        (lambda: nn.Stack([nn.Conv(2, (3, 3))]), (1, 5, 5, 5, 1), ValueError,
         "sequence of 3 ints"),
        (lambda: nn.Stack([nn.Conv(2, 3)]), (5, 5), ValueError, "rank >= 3"),
        (lambda: nn.Stack([nn.Activation("nope")]), (1, 5, 5, 1), ValueError,
         "unknown name"),
        (lambda: nn.Stack([nn.GlobalPool("median")]), (1, 5, 5, 1), ValueError,
         "unknown reduce"),
        (lambda: nn.Stack([nn.MaxPool(0)]), (1, 5, 5, 1), ValueError, "window"),
        # Stack.init once cast with int(): 5.5 became 5 and True became 1, silently
        (lambda: nn.Stack([nn.Conv(2, 3)]), (1, 5.5, 5, 1), TypeError,
         r"Stack: input_shape must contain ints, got \(1, 5.5, 5, 1\)"),
        (lambda: nn.Stack([nn.Conv(2, 3)]), (1, True, 5, 1), TypeError,
         "input_shape must contain ints"),
        (lambda: nn.Stack([nn.Conv(2, 3)]), "1551", TypeError,
         "input_shape must be a sequence of ints"),
    ],
    ids=["empty", "dup_names", "groups", "too_big", "kernel_len", "rank", "activation",
         "global_pool", "pool_window", "float_shape", "bool_shape", "str_shape"],
)
def test_errors(make, shape, exc, match, key):
    with pytest.raises(exc, match=match):
        model = make()
        model.init(key, shape)
