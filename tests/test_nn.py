"""Tests for jaxconv.nn: init/apply shape agreement over a grid, plain-pytree params,
features by name, and errors."""

import dataclasses

import _reference as ref
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
    "residual": (
        [nn.Conv(4, 3, padding="SAME"),
         nn.Residual([nn.Conv(4, 3, padding="SAME"), nn.Activation("relu"),
                      nn.Conv(4, 3, padding="SAME")]),
         nn.GlobalPool(), nn.Dense(3)], (2, 9, 7, 2)
    ),
    "residual_of_stack_1d": (
        [nn.Residual(nn.Stack([nn.Conv(2, 5, padding="SAME"), nn.Activation("tanh")])),
         nn.Residual([nn.Activation("relu")])], (2, 11, 2)
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_apply_matches_the_functional_ops(key):
    model = nn.Stack([nn.Conv(2, 3, padding="SAME"), nn.Activation("leaky_relu"), nn.MaxPool(2)])
    params = model.init(key, (2, 8, 8, 1))
    x = jax.random.normal(key, (2, 8, 8, 1))
    p = params["conv_0"]
    pre = jaxconv.conv(x, p["kernel"], padding="SAME") + p["bias"][None, None, None]
    ref = jaxconv.max_pool(jaxconv.leaky_relu(pre), 2)
    np.testing.assert_allclose(model.apply(params, x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_default_kernel_init_is_lecun_normal(key):
    params = nn.Conv(64, 3).init(key, (1, 9, 9, 16))
    std = float(jnp.std(params["kernel"]))
    assert abs(std - 1 / np.sqrt(3 * 3 * 16)) < 0.01
    assert float(jnp.abs(params["bias"]).max()) == 0.0


@pytest.mark.parametrize(("mode", "fan"), [("fan_in", 5 * 5 * 16), ("fan_out", 5 * 5 * 64),
                                         ("fan_avg", 5 * 5 * (16 + 64) / 2)])
@pytest.mark.slow
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


@pytest.mark.slow
def test_vmap_init_gives_restart_params(key):
    model = nn.Stack([nn.Conv(2, 3)])
    params = jax.vmap(lambda k: model.init(k, (1, 6, 6, 1)))(jax.random.split(key, 5))
    assert params["conv_0"]["kernel"].shape == (5, 3, 3, 1, 2)


@pytest.mark.slow
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


# ---- Residual ----

def _residual_block():
    return [nn.Conv(3, 3, padding="SAME"), nn.Activation("relu"),
            nn.Conv(3, 3, padding="SAME", use_bias=False)]


@pytest.mark.slow
def test_residual_adds_its_input_to_the_block_output(key):
    block = nn.Residual(_residual_block())
    params = block.init(key, (2, 7, 6, 3))
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, 3))
    # the numpy oracle, in float64: x + conv(relu(conv(x) + b))
    p0, p2 = params["conv_0"], params["conv_2"]
    h = np.maximum(ref.conv(x, p0["kernel"], padding="SAME") + np.asarray(p0["bias"]), 0)
    want = np.asarray(x, np.float64) + ref.conv(h, p2["kernel"], padding="SAME")
    got = block.apply(params, x)
    assert got.shape == block.output_shape(x.shape) == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # params and output are the inner Stack's, plus x
    stack = nn.Stack(_residual_block())
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, stack.init(key, x.shape))
    np.testing.assert_allclose(got, x + stack.apply(params, x), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_residual_in_a_stack_jit_equals_eager_and_grad_works(key, rng):
    model = nn.Stack([nn.Conv(3, 3, padding="SAME"), nn.Residual(_residual_block()),
                      nn.Activation("relu"), nn.GlobalPool(), nn.Dense(2)])
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 1))
    params = model.init(key, x.shape)
    assert set(params["residual_1"]) == {"conv_0", "conv_2"}
    eager = model.apply(params, x)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), eager, rtol=1e-6, atol=1e-6)
    loss = lambda p, x: jnp.sum(jnp.sin(model.apply(p, x)))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, (params, x))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    # against a central finite difference along a random direction of params and input (an
    # independent oracle of the gradient; the arithmetic in numpy, one compiled loss)
    leaves, tree = jax.tree.flatten((params, x))
    leaves = [np.asarray(v, np.float32) for v in leaves]
    direction = [rng.standard_normal(v.shape).astype(np.float32) for v in leaves]
    f = jax.jit(lambda *ls: loss(*jax.tree.unflatten(tree, ls)))
    eps = 1e-3  # small enough that no ReLU kink is crossed (1e-2 crosses some)
    fd = (float(f(*[v + eps * d for v, d in zip(leaves, direction, strict=True)]))
          - float(f(*[v - eps * d for v, d in zip(leaves, direction, strict=True)]))) / (2 * eps)
    dot = sum(float(np.vdot(g, d))
              for g, d in zip(jax.tree.leaves(grads), direction, strict=True))
    np.testing.assert_allclose(dot, fd, rtol=2e-3)


@pytest.mark.slow
def test_residual_grad_of_the_skip_is_the_identity(key):
    # a block that outputs zeros: the residual is x itself, so d sum(residual)/dx is all ones
    zero = jax.nn.initializers.zeros
    block = nn.Residual([nn.Conv(2, 3, padding="SAME", kernel_init=zero)])
    params = block.init(key, (1, 5, 5, 2))
    x = jax.random.normal(key, (1, 5, 5, 2))
    np.testing.assert_array_equal(block.apply(params, x), x)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(block.apply(params, x)))(x),
                                  np.ones(x.shape))


@pytest.mark.parametrize(
    ("block", "shape", "match"),
    [
        ([nn.Conv(3, 3)], (2, 8, 8, 3),
         r"Residual: the block must keep its input's shape .* maps \(2, 8, 8, 3\) to "
         r"\(2, 6, 6, 3\); keep the spatial size \(stride 1, padding=\"SAME\""),
        ([nn.Conv(5, 3, padding="SAME")], (2, 8, 8, 3),
         r"maps \(2, 8, 8, 3\) to \(2, 8, 8, 5\).*the last Conv's features = 3"),
        ([nn.Conv(3, 3, stride=2, padding="SAME")], (2, 8, 8, 3), r"to \(2, 4, 4, 3\)"),
        ([nn.MaxPool(2)], (2, 8, 8, 3), r"to \(2, 4, 4, 3\)"),
    ],
    ids=["valid", "channels", "stride", "pool"],
)
def test_residual_block_must_keep_the_shape(block, shape, match, key):
    residual = nn.Residual(block)
    with pytest.raises(ValueError, match=match):
        residual.output_shape(shape)
    with pytest.raises(ValueError, match=match):
        residual.init(key, shape)
    with pytest.raises(ValueError, match=match):
        nn.Stack([nn.Residual(block)]).init(key, shape)


def test_residual_construction_errors():
    with pytest.raises(TypeError, match=r"Residual: layers must be a sequence of layers or an "
                                        r"nn.Stack, got Conv; wrap a single layer"):
        nn.Residual(nn.Conv(1, 3))
    with pytest.raises(ValueError, match="Residual: names are for a sequence of layers"):
        nn.Residual(nn.Stack([nn.Conv(1, 3)]), names=["a"])
    with pytest.raises(ValueError, match="Stack: needs at least one layer"):
        nn.Residual([])


def test_residual_is_frozen_and_hashes():
    a, b = nn.Residual(_residual_block()), nn.Residual(nn.Stack(_residual_block()))
    assert a == b and hash(a) == hash(b) and a.kind == "residual"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.block = None


# ---- params made for another input shape (issue 14 item 9) ----

MLP = nn.Stack([nn.Conv(8, 3), nn.Activation("relu"), nn.MaxPool(2), nn.Flatten(),
                nn.Dense(32), nn.Dense(10)])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.slow
def test_dense_params_for_another_input_shape_name_the_layer(jit, key):
    params = MLP.init(key, (4, 8, 8, 1))  # flatten gives 3 * 3 * 8 = 72 features
    apply = jax.jit(MLP.apply) if jit else MLP.apply
    # once jax's raw "dot_general requires contracting dimensions to have the same shape"
    with pytest.raises(ValueError, match=r"^nn\.Stack layer 'dense_4' \(Dense\): x of shape "
                                         r"\(4, 392\) has 392 features on its last axis, but "
                                         r"params\['kernel'\] has shape \(72, 32\), made for "
                                         r"inputs with 72 features; the params were likely made "
                                         r"by model.init for a different input shape"):
        apply(params, jnp.ones((4, 16, 16, 1)))


@pytest.mark.slow
def test_dense_alone_names_itself(key):
    params = nn.Dense(3).init(key, (2, 5))
    with pytest.raises(ValueError, match=r"^nn\.Dense: x of shape \(2, 4\) has 4 features .* "
                                         r"\(5, 3\), made for inputs with 5 features"):
        nn.Dense(3).apply(params, jnp.ones((2, 4)))


@pytest.mark.slow
def test_conv_params_for_another_channel_count_name_the_layer(key):
    params = MLP.init(key, (4, 8, 8, 1))
    with pytest.raises(ValueError, match=r"^nn\.Stack layer 'conv_0' \(Conv\): params\['kernel'\] "
                                         r"has shape \(3, 3, 1, 8\), made for inputs with 1 "
                                         r"channel\(s\), but x has shape \(4, 8, 8, 3\) "
                                         r"\(conv: x has 3 channels.*model.init"):
        MLP.apply(params, jnp.ones((4, 8, 8, 3)))


@pytest.mark.slow
def test_errors_inside_a_residual_name_the_path(key):
    model = nn.Stack([nn.Residual([nn.Conv(2, 3, padding="SAME")]), nn.GlobalPool()],
                     names=["skip", "pool"])
    params = model.init(key, (1, 6, 6, 2))
    with pytest.raises(ValueError, match=r"^nn\.Stack layer 'skip' \(Residual\): nn\.Stack layer "
                                         r"'conv_0' \(Conv\): params\['kernel'\] has shape "
                                         r"\(3, 3, 2, 2\)"):
        model.apply(params, jnp.ones((1, 6, 6, 1)))


@pytest.mark.parametrize("make", [np.ones, jnp.ones], ids=["numpy", "jax"])
def test_init_with_an_array_shows_its_shape_not_its_values(make, key):
    x = make((64, 8, 8, 1), np.float32)
    with pytest.raises(TypeError, match=r"^nn\.Stack: input_shape must be a sequence of ints, "
                                        r"got an array of shape \(64, 8, 8, 1\); pass its "
                                        r"\.shape\.$"):
        MLP.init(key, x)
    with pytest.raises(TypeError, match=r"^nn\.Conv: .*got an array of shape \(64, 8, 8, 1\)"):
        nn.Conv(2).init(key, x)


# ---- settings are checked when a layer is made, naming the layer ----

@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: nn.Activation("rleu"), ValueError,
         r"^nn\.Activation: unknown name 'rleu'; expected one of 'relu', .* Did you mean "
         r"'relu'\?$"),
        (lambda: nn.Activation(3), TypeError, r"^nn\.Activation: name must be a string"),
        (lambda: nn.Conv(8, 3, padding="SMAE"), ValueError,
         r"^nn\.Conv: unknown padding 'SMAE'; expected one of 'VALID', .* Did you mean "
         r"'SAME'\?$"),
        (lambda: nn.Conv(8, 3, padding=-1), ValueError,
         r"^nn\.Conv: padding must be non-negative, got -1"),
        (lambda: nn.Conv(8, 3, pad_mode="reflct"), ValueError,
         r"^nn\.Conv: unknown pad_mode 'reflct'.* Did you mean 'reflect'\?$"),
        (lambda: nn.Conv(8, 3, algorithm="fastest"), ValueError,
         r"^nn\.Conv: unknown algorithm 'fastest'; expected one of 'auto', 'xla'"),
        (lambda: nn.Conv(8, 3, algorithm="XLA"), ValueError,
         r"^nn\.Conv: unknown algorithm 'XLA'.* Did you mean 'xla'\?$"),
        (lambda: nn.Conv(0), ValueError, r"^nn\.Conv: features must be a positive int, got 0"),
        (lambda: nn.Conv("4"), TypeError, r"^nn\.Conv: features must be a positive int, got '4'"),
        (lambda: nn.Conv(4, 0), ValueError, r"^nn\.Conv: kernel_size must be positive"),
        (lambda: nn.Conv(4, 3, stride=(1, 0)), ValueError,
         r"^nn\.Conv: stride must be positive, got stride=\(1, 0\)"),
        (lambda: nn.Conv(4, 3, stride=1.5), TypeError,
         r"^nn\.Conv: stride must be an int or a sequence of ints, got 1\.5"),
        (lambda: nn.Conv(4, 3, dilation=()), ValueError,
         r"^nn\.Conv: dilation must be an int or a non-empty sequence of ints"),
        (lambda: nn.Conv(4, 3, groups=0), ValueError, r"^nn\.Conv: groups must be positive"),
        (lambda: nn.Conv(4, 3, groups=2.0), TypeError, r"^nn\.Conv: groups must be an int"),
        (lambda: nn.Conv(4, 3, use_bias="yes"), TypeError,
         r"^nn\.Conv: use_bias must be a bool, got 'yes'"),
        (lambda: nn.Conv(4, 3, flip=1), TypeError, r"^nn\.Conv: flip must be a bool, got 1"),
        (lambda: nn.Conv(4, 3, kernel_init="lecun"), TypeError,
         r"^nn\.Conv: kernel_init must be callable, got str 'lecun'"),
        (lambda: nn.MaxPool(0), ValueError, r"^nn\.MaxPool: window must be positive"),
        (lambda: nn.MaxPool(2, stride="1"), TypeError, r"^nn\.MaxPool: stride must be an int"),
        (lambda: nn.AvgPool(2, padding="vaild"), ValueError,
         r"^nn\.AvgPool: unknown padding 'vaild'.* Did you mean 'VALID'\?$"),
        (lambda: nn.AvgPool(2, count_include_pad="no"), TypeError,
         r"^nn\.AvgPool: count_include_pad must be a bool, got 'no'"),
        (lambda: nn.GlobalPool("mean"), ValueError,
         r"^nn\.GlobalPool: unknown reduce 'mean'; expected one of 'avg', 'max'\.$"),
        (lambda: nn.Dense(-2), ValueError, r"^nn\.Dense: features must be a positive int"),
        (lambda: nn.Dense(4, use_bias=None), TypeError, r"^nn\.Dense: use_bias must be a bool"),
        (lambda: nn.Stack(nn.Conv(1)), TypeError,
         r"^nn\.Stack: layers must be a sequence of layers, got Conv; wrap a single layer"),
        (lambda: nn.Stack([nn.Conv(1), "relu"]), TypeError,
         r"^nn\.Stack: layers\[1\] must be a layer \(with init, apply and output_shape"),
        (lambda: nn.Stack([nn.Conv(1)], names=[0]), TypeError,
         r"^nn\.Stack: names must be strings, got \(0,\)"),
    ],
    ids=[
        "activation_typo",
        "activation_type",
        "conv_padding_typo",
        "conv_padding_negative",
        "conv_pad_mode_typo",
        "conv_algorithm_unknown",
        "conv_algorithm_case",
        "conv_features_0",
        "conv_features_str",
        "conv_kernel_0",
        "conv_stride_0",
        "conv_stride_float",
        "conv_dilation_empty",
        "conv_groups_0",
        "conv_groups_float",
        "conv_use_bias_str",
        "conv_flip_int",
        "conv_kernel_init_str",
        "maxpool_window_0",
        "maxpool_stride_str",
        "avgpool_padding_typo",
        "avgpool_count_include_pad",
        "globalpool_reduce",
        "dense_features_negative",
        "dense_use_bias_none",
        "stack_not_a_sequence",
        "stack_not_a_layer",
        "stack_names_not_str",
    ],
)
def test_settings_are_checked_when_the_layer_is_made(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_shape_dependent_settings_are_checked_at_init_naming_the_layer(key):
    with pytest.raises(ValueError, match=r"^nn\.Conv: kernel_size must be an int or a sequence "
                                         r"of 2 ints \(one per spatial dim\), got 3 values"):
        nn.Conv(4, (3, 3, 3)).init(key, (1, 6, 6, 2))
    with pytest.raises(ValueError, match=r"^nn\.Conv: the kernel \(effective size 7 on spatial "
                                         r"dim 0\) is larger than the padded input"):
        nn.Conv(4, 7).output_shape((1, 6, 6, 2))
    with pytest.raises(ValueError, match=r"^nn\.MaxPool: padding \(2 on spatial dim 0\) must be "
                                         r"at most half the window"):
        nn.MaxPool(2, padding=2).init(key, (1, 6, 6, 2))
    with pytest.raises(TypeError, match=r"^nn\.Conv\.init: key must be a PRNG key"):
        nn.Conv(4).init(0, (1, 6, 6, 2))


@pytest.mark.slow
def test_numpy_scalar_settings_equal_python_ones(key):
    made = nn.Conv(np.int64(4), np.int32(3), stride=(np.int64(1), 1), groups=np.int64(2),
                   use_bias=np.bool_(True), flip=np.bool_(False))
    assert made == nn.Conv(4, 3, stride=(1, 1), groups=2)
    assert hash(made) == hash(nn.Conv(4, 3, stride=(1, 1), groups=2))
    assert type(made.groups) is int and type(made.use_bias) is bool
    # groups=np.int64(2) once passed nn's own check and then failed in init
    params = made.init(key, (1, 6, 6, 4))
    assert params["kernel"].shape == (3, 3, 2, 4)
    assert nn.AvgPool(np.int64(2), count_include_pad=np.bool_(False)) == nn.AvgPool(
        2, count_include_pad=False)
    assert nn.GlobalPool("MAX").reduce == "max"  # once accepted, then applied as avg's else


@pytest.mark.slow
def test_global_pool_reduce_is_case_insensitive(key):
    x = jnp.arange(8.0).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(nn.GlobalPool("MAX").apply({}, x), [[6.0, 7.0]])
    np.testing.assert_array_equal(nn.GlobalPool("Avg").apply({}, x), [[3.0, 4.0]])


# ---- repr ----

def test_layer_repr_shows_the_class_and_changed_settings():
    assert repr(nn.Conv(8)) == "Conv(features=8)"
    assert repr(nn.Conv(8, 5, stride=2, padding="SAME", use_bias=False)) == (
        "Conv(features=8, kernel_size=5, stride=2, padding='SAME', use_bias=False)")
    assert repr(nn.Conv(8, padding=[(1, 1), (0, 0)])) == (
        "Conv(features=8, padding=((1, 1), (0, 0)))")
    assert repr(nn.Activation()) == "Activation(name='relu')"
    assert repr(nn.MaxPool(3, stride=1)) == "MaxPool(window=3, stride=1)"
    assert repr(nn.AvgPool(count_include_pad=False)) == "AvgPool(count_include_pad=False)"
    assert repr(nn.GlobalPool("max")) == "GlobalPool(reduce='max')"
    assert repr(nn.Flatten()) == "Flatten()"
    assert repr(nn.Dense(3)) == "Dense(features=3)"


def test_layer_repr_names_functions_without_an_address():
    text = repr(nn.Conv(2, kernel_init=jax.nn.initializers.he_normal(),
                        bias_init=jax.nn.initializers.ones))
    assert "0x" not in text and " at " not in text
    assert text.startswith("Conv(features=2, kernel_init=<function jax.nn.initializers.")
    assert text.endswith("bias_init=<function jax.nn.initializers.ones>)")


def test_stack_repr_lists_named_layers_with_nested_blocks_indented():
    model = nn.Stack([
        nn.Conv(4, 3, padding="SAME"),
        nn.Activation("relu"),
        nn.Residual([nn.Conv(4, 3, padding="SAME"), nn.Activation("tanh")], names=["a", "b"]),
        nn.GlobalPool(),
        nn.Dense(2),
    ])
    assert repr(model) == (
        "Stack(\n"
        "  conv_0: Conv(features=4, padding='SAME'),\n"
        "  activation_1: Activation(name='relu'),\n"
        "  residual_2: Residual(\n"
        "    a: Conv(features=4, padding='SAME'),\n"
        "    b: Activation(name='tanh'),\n"
        "  ),\n"
        "  global_pool_3: GlobalPool(reduce='avg'),\n"
        "  dense_4: Dense(features=2),\n"
        ")"
    )
    assert "0x" not in repr(MLP) and "<function" not in repr(MLP)


# ---- small fixes found by an adversarial pass (issue 20) ----

def test_global_pool_on_a_rank_2_input_raises_instead_of_returning_it(key):
    # apply on [N, C] once returned x unchanged while init and output_shape raised
    with pytest.raises(ValueError, match=r"^nn\.GlobalPool: x must have rank >= 3 \(\[N, "
                                         r"\*spatial, C\]\), got shape \(4, 3\), which has no "
                                         r"spatial dim to pool"):
        nn.GlobalPool().apply({}, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"^nn\.GlobalPool: input_shape must have rank >= 3"):
        nn.GlobalPool().init(key, (4, 3))
    with pytest.raises(ValueError, match=r"^nn\.Stack layer 'global_pool_2' \(GlobalPool\): x "
                                         r"must have rank >= 3"):
        model = nn.Stack([nn.Conv(2, 3), nn.GlobalPool(), nn.GlobalPool()])
        model.apply({"conv_0": nn.Conv(2, 3).init(key, (1, 5, 5, 1))}, jnp.ones((1, 5, 5, 1)))


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (lambda: nn.Conv(4, pad_mode="Reflect", padding=1), lambda: nn.Conv(4, pad_mode="reflect",
                                                                            padding=1)),
        (lambda: nn.Conv(4, padding="same"), lambda: nn.Conv(4, padding="SAME")),
        (lambda: nn.Conv(4, padding="Causal"), lambda: nn.Conv(4, padding="CAUSAL")),
        (lambda: nn.MaxPool(2, padding="same"), lambda: nn.MaxPool(2, padding="SAME")),
        (lambda: nn.AvgPool(3, padding="Valid"), lambda: nn.AvgPool(3, padding="VALID")),
        (lambda: nn.Activation("ReLU"), lambda: nn.Activation("relu")),
        (lambda: nn.GlobalPool("MAX"), lambda: nn.GlobalPool("max")),
    ],
    ids=["pad_mode", "padding_same", "padding_causal", "maxpool", "avgpool", "activation",
         "global_pool"],
)
def test_settings_are_kept_in_one_case_so_equal_layers_compare_equal(given, canonical):
    a, b = given(), canonical()
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)


@pytest.mark.parametrize(
    ("init", "shown"),
    [
        (jax.nn.initializers.he_normal(), "he_normal()"),
        (jax.nn.initializers.he_uniform(), "he_uniform()"),
        (jax.nn.initializers.glorot_uniform(), "glorot_uniform()"),
        (jax.nn.initializers.glorot_normal(), "glorot_normal()"),
        (jax.nn.initializers.lecun_normal(), "lecun_normal()"),
        (jax.nn.initializers.lecun_uniform(), "lecun_uniform()"),
        (jax.nn.initializers.glorot_uniform(in_axis=-3), "glorot_uniform(in_axis=-3)"),
        (jax.nn.initializers.variance_scaling(0.5, "fan_out", "normal"),
         "variance_scaling(scale=0.5, mode='fan_out', distribution='normal')"),
    ],
    ids=["he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal",
         "lecun_uniform", "glorot_in_axis", "variance_scaling"],
)
def test_initializers_print_by_their_own_name(init, shown):
    # all six once printed as the same variance_scaling.<locals>.init
    assert repr(nn.Dense(2, kernel_init=init)) == (
        f"Dense(features=2, kernel_init=<function jax.nn.initializers.{shown}>)")


def test_init_with_the_sizes_in_an_integer_array_does_not_say_pass_its_shape(key):
    with pytest.raises(TypeError, match=r"^nn\.Stack: input_shape must be a sequence of ints, "
                                        r"got an integer array \(2, 8, 8, 3\); if those are the "
                                        r"sizes, pass them as a tuple"):
        MLP.init(key, np.array([2, 8, 8, 3]))
    with pytest.raises(TypeError, match=r"^nn\.Conv: .*got an integer array \(2, 8, 8, 3\)"):
        nn.Conv(2).init(key, jnp.array([2, 8, 8, 3]))
