"""One validation vocabulary (issue 12, item 4): every public callable reads its options alike.

Numpy scalars are the Python scalars they hold: ``np.int64(2)`` is an int, ``np.bool_(True)``
a bool, ``np.float32(0.5)`` a float, and each gives the result its Python twin gives. Bools are
not ints (``stride=True`` is a TypeError, as ``stride=np.bool_(True)``), and floats are not ints.
A misspelt choice raises ValueError naming the callable and the option, with the closest valid
choice when there is one. The oracle is the same call with Python scalars.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv
from jaxconv import data, filters, nn

I64, I32, B, F32 = np.int64, np.int32, np.bool_, np.float32
KEY = jax.random.key(0)
X = np.linspace(-1, 1, 2 * 8 * 8 * 4, dtype=np.float32).reshape(2, 8, 8, 4)
W = np.linspace(-1, 1, 3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)  # groups=2
W1 = np.linspace(-1, 1, 3 * 3 * 4 * 4, dtype=np.float32).reshape(3, 3, 4, 4)
A2, K2 = X[0, :, :, 0], W[:, :, 0, 0]
V = np.linspace(-3, 3, 7, dtype=np.float32)


def _conv(**kw):
    return jaxconv.conv(X, W1 if kw.get("groups", 1) == 1 else W, **kw)


def _conv_t(**kw):
    return jaxconv.conv_transpose(X, W1, **kw)


def _layer(make):
    """A layer made with the settings, and its output on X: both must match."""
    def run(**kw):
        layer = make(**kw)
        params = layer.init(KEY, X.shape)
        return layer, layer.apply(params, X)
    return run


def _fit(**kw):
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    y = x @ np.array([1.0, -1.0, 2.0], np.float32)

    def loss(p, batch):
        bx, by = batch
        return jnp.mean((bx @ p["w"] - by) ** 2)

    settings = {"steps": 6, "chunk_size": 3, "batch_size": 4, "progress": False, **kw}
    result = jaxconv.fit(loss, {"w": jnp.zeros(3)}, _OPTIMIZER, (x, y), **settings)
    return result.params, result.losses


_OPTIMIZER = optax.sgd(0.1)

# (id, callable, Python-scalar options, the same options as numpy scalars)
NUMPY_SCALARS = [
    ("conv_stride", _conv, {"stride": 2}, {"stride": I64(2)}),
    ("conv_stride_tuple", _conv, {"stride": (2, 1)}, {"stride": (I32(2), I64(1))}),
    ("conv_dilation", _conv, {"dilation": 2}, {"dilation": I32(2)}),
    ("conv_groups", _conv, {"groups": 2}, {"groups": I64(2)}),
    ("conv_padding_int", _conv, {"padding": 1}, {"padding": I64(1)}),
    ("conv_padding_pairs", _conv, {"padding": ((1, 0), (0, 2))},
     {"padding": ((I64(1), I32(0)), (0, I64(2)))}),
    ("conv_flip", _conv, {"flip": True}, {"flip": B(True)}),
    ("conv_transpose_stride", _conv_t, {"stride": 2, "output_padding": 1},
     {"stride": I64(2), "output_padding": I32(1)}),
    ("conv_transpose_groups", lambda **kw: jaxconv.conv_transpose(X, W, **kw),
     {"groups": 2, "padding": 1}, {"groups": I64(2), "padding": I64(1)}),
    ("max_pool_window", lambda **kw: jaxconv.max_pool(X, **kw),
     {"window": 2, "stride": 1, "padding": 1}, {"window": I64(2), "stride": I32(1),
                                                "padding": I64(1)}),
    ("avg_pool_count_include_pad", lambda **kw: jaxconv.avg_pool(X, 3, padding=1, **kw),
     {"count_include_pad": False}, {"count_include_pad": B(False)}),
    ("output_shape", lambda **kw: jaxconv.output_shape(X.shape, W.shape, **kw),
     {"stride": 2, "groups": 2, "padding": 1}, {"stride": I64(2), "groups": I64(2),
                                                "padding": I32(1)}),
    ("output_shape_pool", lambda **kw: jaxconv.output_shape(X.shape, op="max_pool", **kw),
     {"kernel_shape": 2}, {"kernel_shape": I64(2)}),
    ("plan", lambda **kw: jaxconv.plan(X.shape, W.shape, **kw).algorithm,
     {"stride": 2, "groups": 2}, {"stride": I64(2), "groups": I64(2)}),
    ("receptive_field", lambda **kw: jaxconv.receptive_field([nn.Conv(4, 3, **kw)]),
     {"stride": 2, "dilation": 2}, {"stride": I64(2), "dilation": I32(2)}),
    ("gelu", lambda **kw: jaxconv.gelu(V, **kw), {"approximate": False},
     {"approximate": B(False)}),
    ("leaky_relu", lambda **kw: jaxconv.leaky_relu(V, **kw), {"negative_slope": 0.25},
     {"negative_slope": F32(0.25)}),
    ("elu", lambda **kw: jaxconv.elu(V, **kw), {"alpha": 0.5}, {"alpha": F32(0.5)}),
    ("correlate2d_fillvalue", lambda **kw: jaxconv.correlate2d(A2, K2, **kw),
     {"fillvalue": 2.0}, {"fillvalue": F32(2.0)}),
    ("convolve2d_fillvalue", lambda **kw: jaxconv.convolve2d(A2, K2, **kw),
     {"fillvalue": 2}, {"fillvalue": I64(2)}),
    ("filters_gaussian", lambda **kw: filters.gaussian(**kw), {"sigma": 0.5, "size": 5},
     {"sigma": F32(0.5), "size": I64(5)}),
    ("filters_box", lambda **kw: filters.box(**kw), {"size": 3}, {"size": I32(3)}),
    ("filters_laplacian", lambda **kw: filters.laplacian(**kw), {"neighbours": 8},
     {"neighbours": I64(8)}),
    ("data_line_images", lambda **kw: data.line_images(KEY, **kw),
     {"n": 2, "size": 8, "max_shapes": 2, "noise": 0.5, "length": 3},
     {"n": I64(2), "size": I32(8), "max_shapes": I64(2), "noise": F32(0.5),
      "length": I64(3)}),
    ("data_noise_images", lambda **kw: data.noise_images(KEY, **kw), {"n": 2, "size": 5},
     {"n": I64(2), "size": I32(5)}),
    ("data_shape_dataset", lambda **kw: data.shape_dataset(KEY, **kw),
     {"n": 2, "size": 8, "jitter": 1, "noise": 0.5},
     {"n": I64(2), "size": I64(8), "jitter": I32(1), "noise": F32(0.5)}),
    ("data_teacher_targets", lambda **kw: data.teacher_targets(X[..., 0], K2, **kw),
     {"padding": 1}, {"padding": I64(1)}),
    ("nn_Conv", _layer(nn.Conv),
     {"features": 4, "kernel_size": 3, "stride": 2, "dilation": 1, "groups": 2, "padding": 1,
      "use_bias": False, "flip": True},
     {"features": I64(4), "kernel_size": I32(3), "stride": I64(2), "dilation": I64(1),
      "groups": I64(2), "padding": I64(1), "use_bias": B(False), "flip": B(True)}),
    ("nn_MaxPool", _layer(nn.MaxPool), {"window": 2, "stride": (1, 2), "padding": 1},
     {"window": I64(2), "stride": (I32(1), I64(2)), "padding": I64(1)}),
    ("nn_AvgPool", _layer(nn.AvgPool), {"window": 3, "padding": 1, "count_include_pad": False},
     {"window": I64(3), "padding": I32(1), "count_include_pad": B(False)}),
    ("nn_Dense", _layer(nn.Dense), {"features": 3, "use_bias": False},
     {"features": I64(3), "use_bias": B(False)}),
    ("fit", _fit,
     {"steps": 6, "chunk_size": 3, "batch_size": 4, "check_data": True, "progress": False,
      "max_loss": 1e6},
     {"steps": I64(6), "chunk_size": I32(3), "batch_size": I64(4), "check_data": B(True),
      "progress": B(False), "max_loss": F32(1e6)}),
]


def _same(a, b) -> None:
    if isinstance(a, nn.Conv | nn.MaxPool | nn.AvgPool | nn.Dense):
        assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
        return
    leaves_a, tree_a = jax.tree.flatten(a, is_leaf=lambda v: isinstance(v, nn.Stack))
    leaves_b, tree_b = jax.tree.flatten(b, is_leaf=lambda v: isinstance(v, nn.Stack))
    assert tree_a == tree_b
    for u, v in zip(leaves_a, leaves_b, strict=True):
        if isinstance(u, nn.Conv | nn.MaxPool | nn.AvgPool | nn.Dense):
            _same(u, v)
        else:
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# each compiles a model, a fit or a dataset twice: make test runs them, make test-fast not
SLOW_CASES = {"fit", "nn_Conv", "nn_Dense", "conv_transpose_stride", "conv_transpose_groups",
              "conv_flip", "conv_stride_tuple", "conv_padding_int", "conv_padding_pairs",
              "conv_dilation", "correlate2d_fillvalue", "convolve2d_fillvalue", "gelu",
              "avg_pool_count_include_pad", "data_line_images", "data_noise_images",
              "data_shape_dataset", "data_teacher_targets"}


@pytest.mark.parametrize(
    ("fn", "python", "numpy"),
    [pytest.param(*c[1:], id=c[0], marks=pytest.mark.slow if c[0] in SLOW_CASES else ())
     for c in NUMPY_SCALARS],
)
def test_numpy_scalars_act_as_the_python_scalars_they_hold(fn, python, numpy):
    _same(fn(**python), fn(**numpy))


@pytest.mark.slow
def test_fit_with_numpy_scalar_restarts_is_bit_identical():
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    y = x @ np.array([1.0, -1.0, 2.0], np.float32)

    def loss(p, batch):
        return jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2)

    params = {"w": jnp.stack([jnp.zeros(3), jnp.ones(3)])}
    got = [jaxconv.fit(loss, params, _OPTIMIZER, (x, y), steps=s, restarts=r,
                       check_data=c, progress=False)
           for s, r, c in ((4, 2, True), (I64(4), I32(2), B(True)))]
    np.testing.assert_array_equal(got[0].params["w"], got[1].params["w"])
    np.testing.assert_array_equal(got[0].losses, got[1].losses)


# (id, callable, the bad option, its value, the error type, what the message must say)
# Bools are not ints and floats are not ints, in every callable, as Python or numpy scalars.
NOT_INTS = [
    ("conv_stride_bool", _conv, "stride", B(True), TypeError, "conv: stride must be"),
    ("conv_groups_bool", _conv, "groups", True, TypeError, "conv: groups must be an int"),
    ("conv_groups_npbool", _conv, "groups", B(True), TypeError, "conv: groups must be an int"),
    ("conv_groups_float", _conv, "groups", F32(2.0), TypeError, "conv: groups must be an int"),
    ("conv_flip_int", _conv, "flip", I64(1), TypeError, "conv: flip must be a bool, got"),
    ("conv_padding_npbool", _conv, "padding", B(True), TypeError, "conv: padding must be"),
    ("conv_transpose_groups_bool", _conv_t, "groups", B(True), TypeError,
     "conv_transpose: groups must be an int"),
    ("max_pool_window_float", lambda **kw: jaxconv.max_pool(X, **kw), "window", F32(2.0),
     TypeError, "max_pool: window must be an int"),
    ("avg_pool_count_include_pad_int", lambda **kw: jaxconv.avg_pool(X, 2, **kw),
     "count_include_pad", I64(1), TypeError, "avg_pool: count_include_pad must be a bool"),
    ("gelu_approximate_str", lambda **kw: jaxconv.gelu(V, **kw), "approximate", "no",
     TypeError, "gelu: approximate must be a bool, got 'no'"),
    ("filters_box_bool", lambda **kw: filters.box(**kw), "size", B(True), TypeError,
     "box: size must be an int"),
    ("filters_laplacian_float", lambda **kw: filters.laplacian(**kw), "neighbours", 4.0,
     ValueError, "laplacian: neighbours must be 4 or 8"),
    ("data_noise_images_float", lambda **kw: data.noise_images(KEY, **kw), "n", F32(2.0),
     TypeError, "noise_images: n must be an int"),
    ("nn_Conv_features_bool", lambda **kw: nn.Conv(**kw), "features", B(True), TypeError,
     "nn.Conv: features must be a positive int"),
    ("nn_Conv_groups_float", lambda **kw: nn.Conv(4, **kw), "groups", 2.0, TypeError,
     "nn.Conv: groups must be an int"),
    ("nn_AvgPool_count_include_pad_int", lambda **kw: nn.AvgPool(**kw), "count_include_pad",
     1, TypeError, "nn.AvgPool: count_include_pad must be a bool"),
    ("fit_steps_bool", lambda **kw: _fit(**kw), "steps", B(True), TypeError,
     "fit: steps must be a positive int"),
    ("fit_steps_float", lambda **kw: _fit(**kw), "steps", F32(6.0), TypeError,
     "fit: steps must be a positive int"),
    ("fit_resume_int", lambda **kw: _fit(**kw), "check_data", I64(1), TypeError,
     "fit: check_data must be a bool"),
    ("fit_max_loss_bool", lambda **kw: _fit(**kw), "max_loss", B(True), TypeError,
     "fit: max_loss must be a finite number"),
]


@pytest.mark.parametrize(("fn", "option", "value", "exc", "match"),
                         [c[1:] for c in NOT_INTS], ids=[c[0] for c in NOT_INTS])
def test_bools_are_not_ints_and_floats_are_not_ints(fn, option, value, exc, match):
    with pytest.raises(exc, match=f"^{re.escape(match)}"):
        fn(**{option: value})


# (id, callable, the option, a misspelt value, the closest valid choice or None)
TYPOS = [
    ("conv_padding", _conv, "padding", "SMAE", "SAME"),
    ("conv_pad_mode", _conv, "pad_mode", "reflct", "reflect"),
    ("conv_layout", _conv, "layout", "NHCW", "NHWC"),
    ("conv_precision", _conv, "precision", "higest", "highest"),
    ("conv_transpose_layout", _conv_t, "layout", "NCWH", "NCHW"),
    ("max_pool_padding", lambda **kw: jaxconv.max_pool(X, 2, **kw), "padding", "vaild",
     "VALID"),
    ("avg_pool_layout", lambda **kw: jaxconv.avg_pool(X, 2, **kw), "layout", "NWHC", "NHWC"),
    ("correlate2d_mode", lambda **kw: jaxconv.correlate2d(A2, K2, **kw), "mode", "ful",
     "full"),
    ("convolve2d_boundary", lambda **kw: jaxconv.convolve2d(A2, K2, **kw), "boundary",
     "wrapp", "wrap"),
    ("output_shape_op", lambda **kw: jaxconv.output_shape(X.shape, 2, **kw), "op", "max_pol",
     "max_pool"),
    ("plan_pad_mode", lambda **kw: jaxconv.plan(X.shape, W1.shape, **kw), "pad_mode",
     "circuler", "circular"),
    ("activation", lambda **kw: jaxconv.activation(**kw), "name", "rleu", "relu"),
    ("data_line_images_kinds", lambda **kw: data.line_images(KEY, 2, **kw), "kind",
     "crss", "cross"),
    ("data_teacher_targets_activation",
     lambda **kw: data.teacher_targets(X[..., 0], K2, **kw), "activation", "tahn", "tanh"),
    ("data_teacher_targets_padding",
     lambda **kw: data.teacher_targets(X[..., 0], K2, **kw), "padding", "sme", "SAME"),
    ("nn_Conv_padding", lambda **kw: nn.Conv(8, 3, **kw), "padding", "SMAE", "SAME"),
    ("nn_Conv_pad_mode", lambda **kw: nn.Conv(8, 3, **kw), "pad_mode", "zero", "zeros"),
    ("nn_Conv_algorithm", lambda **kw: nn.Conv(8, 3, **kw), "algorithm", "shiftadd",
     "shift_add"),
    ("nn_Activation", lambda **kw: nn.Activation(**kw), "name", "rleu", "relu"),
    ("nn_MaxPool_padding", lambda **kw: nn.MaxPool(**kw), "padding", "full_", "FULL"),
    ("nn_AvgPool_padding", lambda **kw: nn.AvgPool(**kw), "padding", "casual", "CAUSAL"),
    ("nn_GlobalPool_reduce", lambda **kw: nn.GlobalPool(**kw), "reduce", "mx", "max"),
    ("fit_restarts_by", lambda **kw: _fit(**kw), "restarts_by", "mapp", "map"),
    ("conv_algorithm_far", _conv, "algorithm", "fastest", None),
    ("nn_GlobalPool_reduce_far", lambda **kw: nn.GlobalPool(**kw), "reduce", "median", None),
]


def _callable_name(case_id: str) -> str:
    head = case_id.removeprefix("nn_").removeprefix("data_").removeprefix("filters_")
    for name in ("conv_transpose", "max_pool", "avg_pool", "output_shape", "line_images",
                 "teacher_targets"):
        if head.startswith(name):
            return name
    name = head.split("_")[0]
    return f"nn.{name}" if case_id.startswith("nn_") else name


@pytest.mark.parametrize(("case_id", "fn", "option", "typo", "closest"), TYPOS,
                         ids=[c[0] for c in TYPOS])
def test_typos_name_the_callable_the_option_and_the_closest_choice(case_id, fn, option, typo,
                                                                   closest):
    kwargs = {"kinds": [typo]} if option == "kind" else {option: typo}
    with pytest.raises(ValueError) as info:
        fn(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{_callable_name(case_id)}: "), message
    assert option in message and repr(typo) in message, message
    if closest is None:
        assert "Did you mean" not in message, message
    else:
        assert message.endswith(f" Did you mean {closest!r}?"), message
