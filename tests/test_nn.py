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
    "unet": (
        [nn.Conv(4, 3, padding="SAME"),
         nn.Parallel([nn.Identity(), [nn.MaxPool(2), nn.Conv(8, 3, padding="SAME"),
                                      nn.ConvTranspose(4, 2, stride=2)]]),
         nn.Conv(1, 1)], (2, 8, 6, 1)
    ),
    "inception": (
        [nn.Parallel([nn.Conv(2, 1), [nn.Conv(2, 1), nn.Conv(3, 3, padding="SAME")],
                      [nn.MaxPool(3, stride=1, padding="SAME"), nn.Conv(1, 1)]],
                     names=["a", "b", "c"])], (2, 7, 7, 3)
    ),
    "residual_projection": (
        [nn.Parallel([[nn.Conv(6, 3, stride=2, padding="SAME"), nn.Activation("relu"),
                       nn.Conv(6, 3, padding="SAME")], nn.Conv(6, 1, stride=2)], merge="add"),
         nn.GlobalPool(), nn.Dense(2)], (2, 9, 9, 3)
    ),
    "conv_transpose_1d_valid_s_gt_k": ([nn.ConvTranspose(3, 2, stride=3)], (2, 5, 2)),
    "conv_transpose_3d_grouped": (
        [nn.ConvTranspose(4, 3, stride=(1, 2, 2), padding="SAME", groups=2, dilation=2)],
        (1, 3, 4, 5, 2)
    ),
    "conv_transpose_pairs_output_padding": (
        [nn.ConvTranspose(2, 3, stride=2, padding=((1, 0), (0, 1)), output_padding=1)],
        (1, 4, 5, 3)
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


# ---- ConvTranspose, Identity, Parallel (issue 20) ----

@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "dilation", "shape"),
    [
        ((3, 3), (2, 2), "SAME", (1, 1), (2, 4, 5, 2)),
        ((2, 3), (2, 1), "valid", (1, 2), (2, 4, 5, 2)),
        ((1, 1), (3, 3), "VALID", (1, 1), (1, 3, 3, 4)),
    ],
    ids=["same_s2", "valid_dilated", "valid_s_gt_k"],
)
@pytest.mark.slow
def test_conv_transpose_layer_equals_lax_conv_transpose(kernel_size, stride, padding, dilation,
                                                       shape, key):
    layer = nn.ConvTranspose(3, kernel_size, stride=stride, padding=padding, dilation=dilation)
    params = layer.init(key, shape)
    x = jax.random.normal(jax.random.key(1), shape)
    want = jax.lax.conv_transpose(
        x, params["kernel"], stride, padding.upper(), rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True,
        precision="highest") + params["bias"][None, None, None]
    got = layer.apply(params, x)
    assert got.shape == want.shape == layer.output_shape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_conv_transpose_layer_equals_the_numpy_oracle_with_groups(key):
    layer = nn.ConvTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2)
    x = jax.random.normal(jax.random.key(1), (2, 4, 3, 6))
    params = layer.init(key, x.shape)
    assert params["kernel"].shape == (3, 3, 2, 6)  # conv_transpose's w: (*k, features // g, C)
    want = ref.conv_transpose(x, params["kernel"], stride=2, padding=1, output_padding=1,
                              groups=2) + np.asarray(params["bias"])
    np.testing.assert_allclose(layer.apply(params, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_conv_transpose_is_initialised_in_its_own_orientation(key):
    # fan-in is the transposed conv's own: 3 * 3 * 16 input channels, not 3 * 3 * 64
    params = nn.ConvTranspose(64, 3).init(key, (1, 5, 5, 16))
    assert params["kernel"].shape == (3, 3, 64, 16)
    std = float(jnp.std(params["kernel"]))
    assert abs(std * np.sqrt(3 * 3 * 16) - 1) < 0.05


def test_conv_transpose_grouped_kernel_swaps_channels_within_each_group(key):
    seen = {}

    def init(key, shape, dtype):
        seen["shape"] = shape
        return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape)

    layer = nn.ConvTranspose(6, 1, groups=3, kernel_init=init, use_bias=False)
    kernel = np.asarray(layer.init(key, (1, 2, 2, 6))["kernel"])
    own = np.arange(1 * 1 * 2 * 6).reshape(1, 1, 2, 6)
    assert seen["shape"] == (1, 1, 2, 6) and kernel.shape == (1, 1, 2, 6)
    for g in range(3):  # own[..., c, g * 2 + f] is forward[..., f, g * 2 + c]
        for c in range(2):
            for f in range(2):
                assert kernel[0, 0, f, g * 2 + c] == own[0, 0, c, g * 2 + f]


def _inception():
    return nn.Parallel([nn.Conv(2, 1), [nn.Conv(2, 1), nn.Conv(3, 3, padding="SAME")],
                        [nn.MaxPool(3, stride=1, padding="SAME"), nn.Conv(1, 1)]],
                       names=["one", "three", "pool"])


@pytest.mark.slow
def test_parallel_concat_equals_the_branches_concatenated(key):
    block = _inception()
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    params = block.init(key, x.shape)
    assert sorted(params) == ["one", "pool", "three"]
    one = nn.Conv(2, 1).apply(params["one"], x)
    three = nn.Stack([nn.Conv(2, 1), nn.Conv(3, 3, padding="SAME")]).apply(params["three"], x)
    pool = nn.Conv(1, 1).apply(params["pool"]["conv_1"],
                               jaxconv.max_pool(x, 3, stride=1, padding="SAME"))
    got = block.apply(params, x)
    assert got.shape == block.output_shape(x.shape) == (2, 6, 6, 6)
    np.testing.assert_allclose(got, np.concatenate([one, three, pool], -1), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.slow
def test_parallel_add_is_a_residual_block_with_a_projection(key):
    block = nn.Parallel([[nn.Conv(4, 3, padding="SAME"), nn.Activation("relu")],
                         nn.Conv(4, 1, use_bias=False)], names=["body", "shortcut"],
                        merge="ADD")
    assert block.merge == "add"
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 2))
    params = block.init(key, x.shape)
    p = params["body"]["conv_0"]
    body = np.maximum(ref.conv(x, p["kernel"], padding="SAME") + np.asarray(p["bias"]), 0)
    shortcut = ref.conv(x, params["shortcut"]["kernel"])
    np.testing.assert_allclose(block.apply(params, x), body + shortcut, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_unet_jit_equals_eager_vmap_equals_loop_and_grads_reach_every_leaf(key):
    model = nn.Stack(CONFIGS["unet"][0])
    x = jax.random.normal(jax.random.key(1), (3, 8, 6, 1))
    params = model.init(key, x.shape)
    eager = model.apply(params, x)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), eager, rtol=1e-5, atol=1e-5)
    per_example = jax.vmap(lambda xi: model.apply(params, xi[None])[0])(x)
    np.testing.assert_allclose(per_example, eager, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, path


def test_new_layers_repr_and_hash():
    assert repr(nn.ConvTranspose(4, 2, stride=2, padding="same")) == (
        "ConvTranspose(features=4, kernel_size=2, stride=2, padding='SAME')")
    assert nn.ConvTranspose(4, [2, 2]) == nn.ConvTranspose(4, (2, 2))
    assert repr(nn.Parallel([nn.Identity(), nn.Conv(2, 1)], names=["skip", "proj"],
                            merge="add")) == (
        "Parallel(\n  merge='add',\n  skip: Identity(),\n  proj: Conv(features=2, "
        "kernel_size=1),\n)")
    assert hash(_inception()) == hash(_inception()) and _inception() == _inception()


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: nn.ConvTranspose(0), ValueError, r"^nn\.ConvTranspose: features must be a "
                                                  r"positive int"),
        (lambda: nn.ConvTranspose(4, padding="SMAE"), ValueError,
         r"^nn\.ConvTranspose: unknown padding 'SMAE'.* Did you mean 'SAME'\?$"),
        (lambda: nn.ConvTranspose(4, output_padding=-1), ValueError,
         r"^nn\.ConvTranspose: output_padding must be >= 0"),
        (lambda: nn.ConvTranspose(5, groups=2), ValueError,
         r"^nn\.ConvTranspose: features \(=5\) must be divisible by groups \(=2\)\.$"),
        (lambda: nn.ConvTranspose(4, algorithm="XLA"), ValueError,
         r"^nn\.ConvTranspose: unknown algorithm 'XLA'"),
        (lambda: nn.ConvTranspose(4, kernel_init=None), TypeError,
         r"^nn\.ConvTranspose: kernel_init must be callable"),
        (lambda: nn.Parallel(nn.Conv(2)), TypeError,
         r"^nn\.Parallel: branches must be a sequence of branches"),
        (lambda: nn.Parallel([nn.Conv(2)]), ValueError,
         r"^nn\.Parallel: needs at least two branches to merge, got 1\.$"),
        (lambda: nn.Parallel([nn.Conv(2), "relu"]), TypeError,
         r"^nn\.Parallel: branches\[1\] must be a layer"),
        (lambda: nn.Parallel([nn.Conv(2), nn.Identity()], names=["a", "a"]), ValueError,
         r"^nn\.Parallel: names must be unique, one per branch \(2\)"),
        (lambda: nn.Parallel([nn.Conv(2), nn.Identity()], names=["a", 1]), TypeError,
         r"^nn\.Parallel: names must be a sequence of strings"),
        (lambda: nn.Parallel([nn.Conv(2), nn.Identity()], merge="sum"), ValueError,
         r"^nn\.Parallel: unknown merge 'sum'; expected one of 'concat', 'add'\."),
    ],
    ids=["ct_features", "ct_padding", "ct_output_padding", "ct_groups", "ct_algorithm",
         "ct_init", "par_not_seq", "par_one", "par_not_layer", "par_dup_names",
         "par_names_type", "par_merge"],
)
def test_new_layer_settings_are_checked_when_made(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize(
    ("block", "shape", "match"),
    [
        (nn.Parallel([nn.Identity(), nn.Conv(2, 3)]), (1, 6, 6, 1),
         r"^nn\.Parallel: merge='concat' joins the branches along the channel \(last\) axis, so "
         r"all other dims must agree, got identity_0: \(1, 6, 6, 1\), conv_1: \(1, 4, 4, 2\)"),
        (nn.Parallel([nn.Identity(), nn.Conv(2, 3, padding="SAME")], merge="add"), (1, 6, 6, 1),
         r"^nn\.Parallel: merge='add' needs every branch to give the same shape, got "
         r"identity_0: \(1, 6, 6, 1\), conv_1: \(1, 6, 6, 2\)"),
        (nn.ConvTranspose(4, 2, groups=2), (1, 5, 5, 3),
         r"^nn\.ConvTranspose: in_channels \(=3\) must be divisible by groups \(=2\)\.$"),
        (nn.ConvTranspose(4, 3, padding=3), (1, 2, 2, 1),
         r"^nn\.ConvTranspose: padding 3 is too large"),
    ],
    ids=["concat_spatial", "add_channels", "ct_in_groups", "ct_too_much_padding"],
)
def test_shape_errors_at_init_name_the_layer(block, shape, match, key):
    with pytest.raises(ValueError, match=match):
        block.init(key, shape)
    with pytest.raises(ValueError, match=match):
        block.output_shape(shape)


@pytest.mark.slow
def test_errors_inside_a_parallel_name_the_branch(key):
    block = nn.Parallel([nn.Identity(), [nn.MaxPool(2), nn.ConvTranspose(2, 2, stride=2)]],
                        names=["skip", "up"])
    params = block.init(key, (1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"^nn\.Parallel branch 'up' \(Stack\): nn\.Stack layer "
                                         r"'conv_transpose_1' \(ConvTranspose\): params"
                                         r"\['kernel'\] has shape \(2, 2, 2, 3\), made for "
                                         r"inputs with 3 channel\(s\), but x has shape "
                                         r"\(1, 2, 2, 5\).*model\.init"):
        block.apply(params, jnp.ones((1, 4, 4, 5)))
