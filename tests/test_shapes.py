"""Tests for jaxconv._shapes: output_shape against jax.eval_shape of the real ops (values and
error messages), receptive_field against known nets and a brute-force gradient probe."""

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jaxconv
from jaxconv._shapes import ReceptiveField

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
F32 = jnp.float32


def _channels_first(layout):
    return layout is not None and not layout.upper().endswith("C")


def op_shape(op, input_shape, kernel_shape, **options):
    """The real op's output shape (or its exception), via jax.eval_shape."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), F32)
    if op in ("max_pool", "avg_pool"):
        fn = functools.partial(getattr(jaxconv, op), window=kernel_shape, **options)
        return jax.eval_shape(fn, x).shape
    w = jax.ShapeDtypeStruct(tuple(kernel_shape), F32)
    return jax.eval_shape(functools.partial(getattr(jaxconv, op), **options), x, w).shape


# --- output_shape: conv ----------------------------------------------------------------------


@st.composite
def paddings(draw, n, k_eff, allow_same=True):
    kinds = [*STRINGS] if allow_same else ["VALID", "FULL", "CAUSAL"]
    kind = draw(st.sampled_from([*kinds, "int", "ints", "pairs"]))
    if kind == "int":
        return draw(st.integers(0, 3))
    if kind == "ints":
        return tuple(draw(st.integers(0, 3)) for _ in range(n))
    if kind == "pairs":
        return tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(n))
    return kind


@st.composite
def conv_configs(draw, transpose=False):
    n = draw(st.integers(1, 3))
    layout = draw(st.sampled_from([None, *LAYOUTS[n]]))
    groups = draw(st.sampled_from([1, 2]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    sizes = tuple(draw(st.integers(1, 9)) for _ in range(n))
    padding = draw(paddings(n, k_eff, allow_same=not transpose))
    if transpose:
        x_ch, w_shape_last = cout, (*kernel, cin // groups, cout)
    else:
        x_ch, w_shape_last = cin, (*kernel, cin // groups, cout)
    if _channels_first(layout):
        x_shape = (2, x_ch, *sizes)
        w_shape = (w_shape_last[-1], w_shape_last[-2], *kernel)
    else:
        x_shape, w_shape = (2, *sizes, x_ch), w_shape_last
    options = dict(
        stride=draw(st.sampled_from([stride, stride[0]])),
        padding=padding,
        dilation=draw(st.sampled_from([dilation, dilation[0]])),
        groups=groups,
        layout=layout,
    )
    if transpose:
        options["output_padding"] = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
        )
        options["stride"], options["dilation"] = stride, dilation
    return x_shape, w_shape, options


def _agrees(op, x_shape, w_shape, options):
    """output_shape equals eval_shape of the op, or both raise the same error."""
    try:
        want = op_shape(op, x_shape, w_shape, **options)
    except (ValueError, TypeError) as e:
        with pytest.raises(type(e)) as got:
            jaxconv.output_shape(x_shape, w_shape, op=op, **options)
        assert str(got.value) == str(e)
        return False
    assert jaxconv.output_shape(x_shape, w_shape, op=op, **options) == want
    return True


@SETTINGS
@given(config=conv_configs())
@pytest.mark.slow
def test_conv_matches_eval_shape(config):
    assume(_agrees("conv", *config))


@SETTINGS
@given(config=conv_configs(transpose=True))
@pytest.mark.slow
def test_conv_transpose_matches_eval_shape(config):
    assume(_agrees("conv_transpose", *config))


CONV_GRID = {
    "same_s2": ((8, 32, 32, 3), (3, 3, 3, 16), dict(stride=2, padding="SAME"), (8, 16, 16, 16)),
    "valid_dil": ((1, 10, 4), (3, 4, 5), dict(dilation=2), (1, 6, 5)),
    "nchw_groups": ((2, 4, 9, 9), (6, 2, 3, 3), dict(groups=2, layout="NCHW", padding=1),
                    (2, 6, 9, 9)),
    "3d_full": ((1, 4, 5, 6, 1), (2, 2, 2, 1, 3), dict(padding="FULL"), (1, 5, 6, 7, 3)),
    "causal_stride": ((1, 7, 1), (3, 1, 1), dict(padding="CAUSAL", stride=3), (1, 3, 1)),
    "pairs": ((1, 5, 5, 1), (3, 2, 1, 1), dict(padding=((2, 0), (0, 1))), (1, 5, 5, 1)),
}


@pytest.mark.parametrize(("x", "w", "options", "want"), CONV_GRID.values(), ids=CONV_GRID.keys())
def test_conv_grid(x, w, options, want):
    """Worked out by hand, then confirmed by eval_shape."""
    assert jaxconv.output_shape(x, w, **options) == want
    assert op_shape("conv", x, w, **options) == want


CT_GRID = {
    "s2": ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2), (1, 9, 9, 2)),
    "s2_outpad": ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2, padding=1, output_padding=1),
                  (1, 8, 8, 2)),
    "ncw_groups": ((2, 4, 5), (4, 3, 3), dict(groups=2, layout="NCW", dilation=2), (2, 6, 9)),
    "full": ((1, 7, 1), (3, 1, 1), dict(padding="FULL"), (1, 5, 1)),
}


@pytest.mark.parametrize(("y", "w", "options", "want"), CT_GRID.values(), ids=CT_GRID.keys())
def test_conv_transpose_grid(y, w, options, want):
    assert jaxconv.output_shape(y, w, op="conv_transpose", **options) == want
    assert op_shape("conv_transpose", y, w, **options) == want


# --- output_shape: pooling -------------------------------------------------------------------


@st.composite
def pool_configs(draw):
    n = draw(st.integers(1, 3))
    layout = draw(st.sampled_from([None, *LAYOUTS[n]]))
    window = tuple(draw(st.integers(1, 4)) for _ in range(n))
    sizes = tuple(draw(st.integers(1, 9)) for _ in range(n))
    x_shape = (2, 3, *sizes) if _channels_first(layout) else (2, *sizes, 3)
    kind = draw(st.sampled_from([*STRINGS, "int", "ints", "pairs"]))
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "ints":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
    elif kind == "pairs":
        padding = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(n))
    else:
        padding = kind
    stride = draw(st.sampled_from([None, tuple(draw(st.integers(1, 3)) for _ in range(n))]))
    window_arg = draw(st.sampled_from([window, window[0]]))
    return x_shape, window_arg, dict(stride=stride, padding=padding, layout=layout)


@SETTINGS
@given(config=pool_configs(), op=st.sampled_from(["max_pool", "avg_pool"]))
@pytest.mark.slow
def test_pool_matches_eval_shape(config, op):
    """Every pooling op name agrees, including the generic "pool"; errors agree too."""
    x_shape, window, options = config
    if _agrees(op, x_shape, window, options):
        generic = jaxconv.output_shape(x_shape, window, op="pool", **options)
        assert generic == jaxconv.output_shape(x_shape, window, op=op, **options)


POOL_GRID = {
    "default_stride": ((8, 32, 32, 3), 2, {}, (8, 16, 16, 3)),
    "nchw": ((8, 3, 32, 32), 2, dict(layout="NCHW"), (8, 3, 16, 16)),
    "same_s1": ((1, 7, 2), 3, dict(stride=1, padding="SAME"), (1, 7, 2)),
    "torch_pad": ((1, 2, 9, 9), 3, dict(stride=2, padding=1, layout="NCHW"), (1, 2, 5, 5)),
    "3d_tuple": ((1, 4, 6, 8, 1), (1, 2, 4), {}, (1, 4, 3, 2, 1)),
}


@pytest.mark.parametrize(("x", "window", "options", "want"), POOL_GRID.values(),
                         ids=POOL_GRID.keys())
@pytest.mark.parametrize("op", ["max_pool", "avg_pool", "pool"])
def test_pool_grid(op, x, window, options, want):
    assert jaxconv.output_shape(x, window, op=op, **options) == want
    assert op_shape(op if op != "pool" else "max_pool", x, window, **options) == want


# --- output_shape: errors, word for word the op's own ----------------------------------------

OP_ERRORS = [
    ("conv_channels", "conv", (1, 5, 5, 3), (3, 3, 2, 4), {}, ValueError,
     r"^conv: x has 3 channels \(layout NHWC\) but w expects 2"),
    ("conv_torch_kernel", "conv", (1, 8, 8, 1), (6, 1, 3, 3), {}, ValueError,
     r"^conv: x has 1 channels .* w \(shape \(6, 1, 3, 3\)\) looks like a channels-first "
     r"\(O, I, kh, kw\) kernel; for NHWC input use \(kh, kw, I, O\)"),
    ("conv_channels_first_data", "conv", (1, 3, 8, 8), (16, 3, 3, 3), {}, ValueError,
     r"look channels-first \(a \(O, I, kh, kw\) kernel\), not channels-last as layout NHWC "
     r"reads them; pass layout='NCHW'\."),
    ("conv_in_groups", "conv", (1, 5, 5, 3), (3, 3, 1, 4), dict(groups=2), ValueError,
     r"^conv: in_channels \(=3\) must be divisible by groups \(=2\)"),
    ("conv_out_groups", "conv", (1, 5, 5, 4), (3, 3, 2, 3), dict(groups=2), ValueError,
     r"^conv: out_channels \(=3, w.shape\[3\]\) must be divisible by groups \(=2\)"),
    ("conv_groups_type", "conv", (1, 5, 5, 4), (3, 3, 2, 4), dict(groups=2.0), TypeError,
     r"^conv: groups must be an int, got 2.0"),
    ("conv_groups_zero", "conv", (1, 5, 5, 4), (3, 3, 2, 4), dict(groups=0), ValueError,
     r"^conv: groups must be positive"),
    ("conv_w_rank", "conv", (1, 5, 5, 4), (3, 3), {}, ValueError,
     r"^conv: w must have rank >= 3"),
    ("conv_x_rank", "conv", (5, 5, 1), (3, 3, 1, 1), {}, ValueError,
     r"^conv: x must have rank 4 .* got rank 3 with shape \(5, 5, 1\); add a batch axis"),
    ("conv_too_big", "conv", (1, 2, 5, 1), (3, 3, 1, 1), {}, ValueError,
     r"^conv: the kernel \(effective size 3 on spatial dim 0\) is larger"),
    ("conv_stride0", "conv", (1, 5, 1), (3, 1, 1), dict(stride=0), ValueError,
     r"^conv: stride must be positive"),
    ("conv_layout", "conv", (1, 5, 1), (3, 1, 1), dict(layout="NHWC"), ValueError,
     r"^conv: unknown layout 'NHWC' for 1 spatial dim"),
    ("conv_padding", "conv", (1, 5, 1), (3, 1, 1), dict(padding="same_upper"), ValueError,
     r"^conv: unknown padding 'same_upper'"),
    ("ct_channels", "conv_transpose", (1, 4, 4, 3), (3, 3, 2, 8), {}, ValueError,
     r"^conv_transpose: y has 3 channels \(layout NHWC\) but w has 8 out_channels"),
    ("ct_same", "conv_transpose", (1, 4, 4, 8), (3, 3, 2, 8),
     dict(padding="SAME", stride=2, output_padding=1), ValueError,
     r"^conv_transpose: output_padding \(\(1, 1\)\) cannot be combined with padding 'SAME'"),
    ("ct_outpad", "conv_transpose", (1, 4, 8), (3, 2, 8), dict(output_padding=1), ValueError,
     r"^conv_transpose: output_padding \(\(1,\)\) must be smaller than stride"),
    ("ct_too_much_pad", "conv_transpose", (1, 1, 8), (2, 2, 8), dict(padding=2), ValueError,
     r"^conv_transpose: padding 2 is too large"),
    ("ct_groups", "conv_transpose", (1, 4, 8), (3, 2, 8), dict(groups=3), ValueError,
     r"^conv_transpose: out_channels \(=8\) must be divisible by groups \(=3\)"),
    ("ct_groups_zero", "conv_transpose", (1, 4, 8), (3, 2, 8), dict(groups=0), ValueError,
     r"^conv_transpose: groups must be positive, got groups=0"),
    ("ct_w_rank", "conv_transpose", (1, 4, 8), (3, 8), {}, ValueError,
     r"^conv_transpose: w must have rank >= 3"),
    ("ct_y_rank", "conv_transpose", (4, 8), (3, 2, 8), {}, ValueError,
     r"^conv_transpose: y must have rank 3"),
    ("pool_window0", "max_pool", (1, 4, 4, 1), 0, {}, ValueError,
     r"^max_pool: window must be positive"),
    ("pool_rank", "avg_pool", (4, 4), 2, {}, ValueError, r"^avg_pool: x must have rank >= 3"),
    ("pool_too_big", "max_pool", (1, 4, 1), 5, {}, ValueError,
     r"^max_pool: the window \(effective size 5 on spatial dim 0\) is larger"),
    ("pool_half_window", "avg_pool", (1, 4, 1), 2, dict(padding=2), ValueError,
     r"^avg_pool: padding \(2 on spatial dim 0\) must be at most half the window"),
    ("pool_all_pad", "max_pool", (1, 4, 1), 2, dict(padding=((2, 0),)), ValueError,
     r"^max_pool: padding \(\(2, 0\),\) puts the first window"),
    ("pool_layout", "max_pool", (1, 4, 4, 1), 2, dict(layout="NCW"), ValueError,
     r"^max_pool: unknown layout 'NCW'"),
]


@pytest.mark.parametrize(
    ("op", "x", "w", "options", "error", "match"),
    [e[1:] for e in OP_ERRORS],
    ids=[e[0] for e in OP_ERRORS],
)
def test_errors_are_the_ops_own(op, x, w, options, error, match):
    with pytest.raises(error, match=match) as ours:
        jaxconv.output_shape(x, w, op=op, **options)
    with pytest.raises(error, match=match) as theirs:
        op_shape(op, x, w, **options)
    assert str(ours.value) == str(theirs.value)


SHAPE_ERRORS = [
    ("unknown_op", (1, 4, 1), (3, 1, 1), dict(op="conv2d"), ValueError,
     r"^output_shape: unknown op 'conv2d'; expected one of 'conv', 'conv_transpose', "
     r"'max_pool', 'avg_pool', 'pool'"),
    ("input_not_seq", 5, (3, 1, 1), {}, TypeError,
     r"^output_shape: input_shape must be a sequence of ints, got int 5"),
    ("input_float", (1, 4.0, 1), (3, 1, 1), {}, TypeError,
     r"^output_shape: input_shape must contain ints, got \(1, 4.0, 1\)"),
    ("input_negative", (1, -4, 1), (3, 1, 1), {}, ValueError,
     r"^output_shape: input_shape entries must be non-negative"),
    ("kernel_not_seq", (1, 4, 1), 3, {}, TypeError,
     r"^output_shape: kernel_shape must be a sequence of ints"),
    ("pool_dilation", (1, 4, 1), 2, dict(op="max_pool", dilation=2), ValueError,
     r"^output_shape: dilation=2 does not apply to op='max_pool' \(pooling has no dilation\)"),
    ("pool_dilation_array", (1, 4, 1), 2, dict(op="max_pool", dilation=np.array([2])),
     ValueError, r"^output_shape: dilation=array\(\[2\]\) does not apply to op='max_pool'"),
    ("pool_groups", (1, 4, 1), 2, dict(op="pool", groups=2), ValueError,
     r"^output_shape: groups=2 does not apply to op='pool'"),
    ("pool_output_padding", (1, 4, 1), 2, dict(op="avg_pool", output_padding=(1,)),
     ValueError, r"^output_shape: output_padding=\(1,\) does not apply to op='avg_pool'"),
    ("conv_output_padding", (1, 4, 1), (3, 1, 1), dict(output_padding=1), ValueError,
     r"^output_shape: output_padding=1 applies to op='conv_transpose' only"),
]


@pytest.mark.parametrize(
    ("x", "w", "options", "error", "match"),
    [e[1:] for e in SHAPE_ERRORS],
    ids=[e[0] for e in SHAPE_ERRORS],
)
def test_output_shape_errors(x, w, options, error, match):
    with pytest.raises(error, match=match):
        jaxconv.output_shape(x, w, **options)


def test_pool_accepts_default_options_as_arrays():
    ones = np.array([1, 1])
    assert jaxconv.output_shape((1, 8, 8, 1), 2, op="max_pool", dilation=ones) == (1, 4, 4, 1)


def test_defaults_accept_all_ones_tuples():
    """Per-dim spellings of the defaults are not mistaken for real options."""
    assert jaxconv.output_shape((1, 4, 4, 1), 2, op="pool", dilation=(1, 1),
                                output_padding=(0, 0)) == (1, 2, 2, 1)


@pytest.mark.slow
def test_nn_layers_predict_their_shapes(key):
    """jaxconv.nn layers ask output_shape; it matches the shapes the ops return."""
    conv = jaxconv.nn.Conv(4, 3, stride=2, padding="SAME")
    assert conv.output_shape((2, 13, 11, 3)) == op_shape(
        "conv", (2, 13, 11, 3), (3, 3, 3, 4), stride=2, padding="SAME"
    )
    x = jnp.ones((2, 7, 6, 4))
    for layer in [jaxconv.nn.MaxPool(2), jaxconv.nn.AvgPool(3, stride=1, padding=1)]:
        y = layer.apply(layer.init(key, x.shape), x)
        assert layer.output_shape(x.shape) == y.shape
        x = y


# --- receptive_field: known nets and forms ---------------------------------------------------

ALEXNET = [
    dict(kernel_size=11, stride=4),
    dict(window=3, stride=2),
    dict(kernel_size=5, padding=2),
    dict(window=3, stride=2),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=1),
    dict(window=3, stride=2),
]


def _vgg16():
    layers = []
    for convs in (2, 2, 3, 3, 3):
        layers += [dict(kernel_size=3, padding=1)] * convs + [dict(window=2)]
    return layers


def test_alexnet():
    rf = jaxconv.receptive_field(ALEXNET)
    assert [r.size[0] for r in rf] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert [r.jump[0] for r in rf] == [4, 8, 8, 16, 16, 16, 16, 32]


def test_vgg16():
    """conv5_3 sees 196 pixels, pool5 212 with jump 32; pool5's first centre is at 15.5."""
    rf = jaxconv.receptive_field(_vgg16(), input_shape=(224, 224))
    assert rf[-2] == ReceptiveField((196, 196), (16, 16), (-90, -90))
    assert rf[-1] == ReceptiveField((212, 212), (32, 32), (-90, -90))
    assert rf[-1].start[0] + (rf[-1].size[0] - 1) / 2 == 15.5


@dataclasses.dataclass(frozen=True)
class ConvLike:
    kernel_size: int | tuple
    stride: int | tuple = 1
    dilation: int | tuple = 1
    padding: object = "VALID"


def test_layer_forms_agree():
    """Mappings, tuples, plain objects and jaxconv.nn layers describe the same stack."""
    want = jaxconv.receptive_field(
        [dict(kernel_size=3, stride=2, dilation=2, padding=1), dict(window=2),
         dict(kernel_size=(3, 1), stride=1, padding="FULL")]
    )
    forms = [
        [(3, 2, 2, 1), {"window": 2, "stride": None}, ((3, 1), 1, 1, "FULL")],
        [ConvLike(3, 2, 2, 1), types.SimpleNamespace(window=2),
         ConvLike((3, 1), padding="full")],
        [jaxconv.nn.Conv(1, 3, stride=2, dilation=2, padding=1), jaxconv.nn.MaxPool(2),
         jaxconv.nn.Conv(1, (3, 1), padding="FULL")],
    ]
    for layers in forms:
        assert jaxconv.receptive_field(layers) == want
    assert want[-1] == ReceptiveField(size=(15, 7), jump=(4, 4), start=(-9, -1))


LENET = [
    jaxconv.nn.Conv(6, 5), jaxconv.nn.Activation("relu"), jaxconv.nn.MaxPool(2),
    jaxconv.nn.Conv(16, 5), jaxconv.nn.Activation("tanh"), jaxconv.nn.AvgPool(2),
    jaxconv.nn.Flatten(), jaxconv.nn.Dense(10), jaxconv.nn.Activation("relu"),
]


def test_a_model_can_be_passed_whole():
    """Issue 14: a Stack (anything with a ``layers`` sequence) is accepted; activations keep
    the field of the layer before them; the list stops before Flatten."""
    geometry_only = [dict(kernel_size=5), dict(window=2), dict(kernel_size=5), dict(window=2)]
    want = jaxconv.receptive_field(geometry_only, input_shape=(32, 32))
    got = jaxconv.receptive_field(jaxconv.nn.Stack(LENET), input_shape=(32, 32))
    assert got == [want[0], want[0], want[1], want[2], want[2], want[3]]
    assert got[-1] == ReceptiveField((16, 16), (4, 4), (0, 0))
    assert jaxconv.receptive_field(LENET, input_shape=(32, 32)) == got
    assert jaxconv.receptive_field(types.SimpleNamespace(layers=LENET[:3])) == [
        ReceptiveField((5,), (1,), (0,))] * 2 + [ReceptiveField((6,), (2,), (0,))]


def test_pointwise_and_ending_kinds():
    """Pointwise kinds (also as mappings) repeat the field; GlobalPool and Flatten end it;
    Dense on [N, *spatial, C] is a 1x1 conv: the probe of a 1x1 kernel agrees."""
    layers = [{"kind": "activation"}, (3, 1), jaxconv.nn.Dense(4), {"kind": "Dense"}, (2, 2),
              jaxconv.nn.GlobalPool(), (3, 1)]
    rf = jaxconv.receptive_field(layers)
    one_by_one = jaxconv.receptive_field([(1, 1), (3, 1), (1, 1), (1, 1), (2, 2)])
    assert rf == one_by_one
    assert jaxconv.receptive_field([jaxconv.nn.Flatten(), (3, 1)]) == []
    assert jaxconv.receptive_field([jaxconv.nn.Activation()]) == [ReceptiveField((1,), (1,),
                                                                                 (0,))]


def test_short_tuples_and_defaults():
    assert jaxconv.receptive_field([(3, 1), (2, 2), (3, 1)])[-1] == ReceptiveField(
        (8,), (2,), (0,)
    )
    assert jaxconv.receptive_field([(3, 2, 3)]) == [ReceptiveField((7,), (2,), (0,))]
    assert jaxconv.receptive_field([]) == []


def test_same_needs_input_shape_and_matches_explicit_pads():
    layers = [dict(kernel_size=4, stride=2, padding="SAME"),
              dict(kernel_size=3, padding="SAME_LOWER")]
    rf = jaxconv.receptive_field(layers, input_shape=(9,))
    # SAME on 9 with k=4, s=2: 5 outputs, total pad 3 -> (1, 2); SAME_LOWER k=3 on 5 -> (1, 1).
    explicit = [dict(kernel_size=4, stride=2, padding=((1, 2),)),
                dict(kernel_size=3, padding=((1, 1),))]
    assert rf == jaxconv.receptive_field(explicit)


RF_ERRORS = [
    ("same_without_shape", [dict(kernel_size=3, padding="same")], {}, ValueError,
     r"^receptive_field: layers\[0\]: padding 'same' depends on the input size; pass "
     r"input_shape="),
    ("tuple_too_long", [(3, 1, 1, 0, 7)], {}, ValueError,
     r"^receptive_field: layers\[0\] as a tuple must be \(kernel_size, stride\)"),
    ("tuple_too_short", [(3,)], {}, ValueError, r"layers\[0\] as a tuple must be"),
    ("both", [dict(kernel_size=3, window=2)], {}, ValueError,
     r"^receptive_field: layers\[0\] must give exactly one of kernel_size \(conv\) or window "
     r"\(pooling\), got both"),
    ("neither", [(3, 1), types.SimpleNamespace(kind="attention")], {}, ValueError,
     r"^receptive_field: layers\[1\] must give exactly one of .* got neither in "
     r"namespace\(kind='attention'\); a layer with neither needs a kind in \('activation', "
     r"'dense', 'identity'\) \(pointwise: keeps the field\) or \('flatten', 'global_pool'\) "
     r"\(ends the spatial layers\), or leave it out\.$"),
    ("neither_mapping", [{"stride": 2}], {}, ValueError,
     r"^receptive_field: layers\[0\] must give exactly one of .* got neither"),
    ("model_without_layers", types.SimpleNamespace(layers=None), {}, TypeError,
     r"^receptive_field: layers must be a sequence of layers or an object with a layers "
     r"sequence \(e.g. a jaxconv.nn.Stack\)"),
    ("stride0", [(3, 1), (3, 0)], {}, ValueError,
     r"^receptive_field: layers\[1\]: stride must be positive, got stride=0"),
    ("kernel0", [dict(kernel_size=0)], {}, ValueError,
     r"^receptive_field: layers\[0\]: kernel_size must be positive"),
    ("window_float", [dict(window=2.5)], {}, TypeError,
     r"^receptive_field: layers\[0\]: window must be an int or a sequence"),
    ("dims_mismatch", [((3, 3), 1), (3, (1, 1, 1))], {}, ValueError,
     r"^receptive_field: layers\[1\]: stride must be an int or a sequence of 2 ints"),
    ("dims_vs_input", [((3, 3), 1)], dict(input_shape=(8,)), ValueError,
     r"^receptive_field: layers\[0\]: kernel_size must be an int or a sequence of 1 ints"),
    ("unknown_padding", [dict(kernel_size=3, padding="half")], {}, ValueError,
     r"^receptive_field: layers\[0\]: unknown padding 'half'"),
    ("negative_padding", [dict(kernel_size=3, padding=-1)], {}, ValueError,
     r"^receptive_field: layers\[0\]: padding must be non-negative"),
    ("too_big", [(3, 2), dict(window=4)], dict(input_shape=(8,)), ValueError,
     r"^receptive_field: layers\[1\]: the window \(effective size 4 on spatial dim 0\) is "
     r"larger than the padded input \(3 \+ 0 \+ 0 = 3\)"),
    ("empty_input_shape", [(3, 1)], dict(input_shape=()), ValueError,
     r"^receptive_field: input_shape must be the spatial shape"),
    ("input_shape_float", [(3, 1)], dict(input_shape=(8.0,)), TypeError,
     r"^receptive_field: input_shape must contain ints"),
    ("layers_not_seq", 3, {}, TypeError, r"^receptive_field: layers must be a sequence"),
]


@pytest.mark.parametrize(
    ("layers", "options", "error", "match"),
    [e[1:] for e in RF_ERRORS],
    ids=[e[0] for e in RF_ERRORS],
)
def test_receptive_field_errors(layers, options, error, match):
    with pytest.raises(error, match=match):
        jaxconv.receptive_field(layers, **options)


# --- receptive_field: brute-force gradient probe ---------------------------------------------


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def probe_jacobian(layers, sizes):
    """d out / d input of the stack built from the real ops: all-ones 1-channel conv kernels
    and avg pooling (both positive, so a nonzero entry means "inside the field")."""
    n = len(sizes)

    def stack(x):
        h = x[None, ..., None]
        for layer in layers:
            opts = dict(stride=layer.get("stride"), padding=layer.get("padding", "VALID"))
            if "window" in layer:
                h = jaxconv.avg_pool(h, layer["window"], **opts)
            else:
                w = jnp.ones((*_tuple(layer["kernel_size"], n), 1, 1), x.dtype)
                opts["stride"] = opts["stride"] or 1
                h = jaxconv.conv(h, w, dilation=layer.get("dilation", 1), algorithm="xla",
                                 **opts)
        return h[0, ..., 0]

    return np.asarray(jax.jit(jax.jacrev(stack))(jnp.ones(sizes)))


def check_against_probe(layers, sizes):
    n = len(sizes)
    rf = jaxconv.receptive_field(layers, input_shape=sizes)[-1]
    jac = probe_jacobian(layers, sizes)
    out_sizes = jac.shape[:n]
    assert jac.shape[n:] == tuple(sizes)
    for pos in np.ndindex(*out_sizes):
        hits = np.nonzero(jac[pos])
        assert hits[0].size, f"output {pos} does not see the input at all"
        for d in range(n):
            first = rf.start[d] + pos[d] * rf.jump[d]
            last = first + rf.size[d] - 1
            lo, hi = hits[d].min(), hits[d].max()
            assert first <= lo and hi <= last, (pos, d, rf, lo, hi)
            # the field's extreme taps lie on real input unless they reach into the padding
            if first >= 0:
                assert lo == first, (pos, d, rf, lo)
            if last <= sizes[d] - 1:
                assert hi == last, (pos, d, rf, hi)


PROBE_GRID = {
    "conv_valid": ([dict(kernel_size=3)], (9,)),
    "dilated_strided": ([dict(kernel_size=3, dilation=2, stride=2), dict(kernel_size=2)], (17,)),
    "stride_then_kernel": ([dict(kernel_size=1, stride=2), dict(kernel_size=3)], (12,)),
    "pool_then_conv": ([dict(window=2), dict(kernel_size=3, padding=1)], (10,)),
    "full_then_pool": ([dict(kernel_size=3, padding="FULL"), dict(window=3, stride=2)], (8,)),
    "causal": ([dict(kernel_size=3, padding="CAUSAL"), dict(kernel_size=2, dilation=3,
                                                           padding="CAUSAL")], (10,)),
    "2d_mixed": ([dict(kernel_size=(3, 2), stride=(1, 2), padding="SAME"),
                  dict(window=(2, 3), padding=((1, 0), (1, 1))),
                  dict(kernel_size=2, dilation=(2, 1))], (11, 13)),
    "2d_same_lower": ([dict(kernel_size=4, stride=3, padding="SAME_LOWER"),
                       dict(kernel_size=3, padding=1)], (10, 9)),
}


@pytest.mark.parametrize(("layers", "sizes"), PROBE_GRID.values(), ids=PROBE_GRID.keys())
@pytest.mark.slow
def test_probe_grid(layers, sizes):
    check_against_probe(layers, sizes)


@st.composite
def stacks(draw):
    n = draw(st.integers(1, 2))
    sizes = tuple(draw(st.integers(6, 24 if n == 1 else 12)) for _ in range(n))
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            k = tuple(draw(st.integers(1, 3)) for _ in range(n))
            d = tuple(draw(st.integers(1, 2)) for _ in range(n))
            k_eff = [(a - 1) * b + 1 for a, b in zip(k, d, strict=True)]
            kind = draw(st.sampled_from([*STRINGS, "int", "pairs"]))
            if kind == "int":
                padding = draw(st.integers(0, min(k_eff) - 1))
            elif kind == "pairs":
                padding = tuple(
                    (draw(st.integers(0, e - 1)), draw(st.integers(0, e - 1))) for e in k_eff
                )
            else:
                padding = kind
            layer = dict(kernel_size=k, stride=tuple(draw(st.integers(1, 2)) for _ in range(n)),
                         dilation=d, padding=padding)
        else:
            window = tuple(draw(st.integers(1, 3)) for _ in range(n))
            kind = draw(st.sampled_from([*STRINGS, "int", "pairs"]))
            if kind == "int":
                padding = draw(st.integers(0, min(window) // 2))
            elif kind == "pairs":
                padding = tuple(
                    (draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window
                )
            else:
                padding = kind
            layer = dict(window=window, padding=padding)
            if draw(st.booleans()):
                layer["stride"] = tuple(draw(st.integers(1, 2)) for _ in range(n))
        layers.append(layer)
    return layers, sizes


@SETTINGS
@given(stack=stacks())
@pytest.mark.slow
def test_probe_hypothesis(stack):
    """1-4 layer conv/pool stacks, 1-D and 2-D: every output pixel's field from the probe."""
    layers, sizes = stack
    try:
        jaxconv.receptive_field(layers, input_shape=sizes)
    except ValueError:
        assume(False)  # a kernel does not fit what is left of the input
    check_against_probe(layers, sizes)
    if not any(isinstance(layer["padding"], str) and layer["padding"].upper().startswith("SAME")
               for layer in layers):
        assert jaxconv.receptive_field(layers) == jaxconv.receptive_field(
            layers, input_shape=sizes
        )


# --- receptive_field of nn models with transposed convs and branches -------------------------

nn = jaxconv.nn


def _unet(n):
    """Conv, pool, conv, a stride-2 transposed conv back up, merged with the skip."""
    down_up = [nn.AvgPool(2), nn.Conv(2, 3, padding="SAME"),
               nn.ConvTranspose(2, 2, stride=2, padding="SAME")]
    return nn.Stack([nn.Conv(2, 3, padding="SAME"), nn.Activation("relu"),
                     nn.Parallel([nn.Identity(), down_up], merge="concat"), nn.Conv(1, 3)])


MODEL_PROBES = {
    "transpose_stride1": (lambda n: nn.Stack([nn.Conv(1, 3), nn.ConvTranspose(1, 3)]), (12,)),
    "transpose_dilated_pads": (lambda n: nn.Stack([
        nn.ConvTranspose(1, 3, dilation=2, padding=((1, 3),)), nn.Conv(1, 2)]), (12,)),
    "transpose_output_padding": (lambda n: nn.Stack([
        nn.AvgPool(3), nn.ConvTranspose(1, 5, stride=3, padding=((1, 2),), output_padding=2)]),
        (21,)),
    "pool3_transpose3_k4": (lambda n: nn.Stack([nn.Conv(1, 2), nn.AvgPool(3),
                                                nn.ConvTranspose(1, 4, stride=3)]), (20,)),
    "unet_1d": (_unet, (16,)),
    "unet_2d": (_unet, (12, 12)),
    "residual": (lambda n: nn.Stack([nn.Conv(1, 3), nn.Residual([
        nn.Conv(1, 3, padding="SAME"), nn.Activation("relu"), nn.Conv(1, 5, padding="SAME")])]),
        (16,)),
    "inception": (lambda n: nn.Stack([nn.Parallel([
        nn.Conv(1, 1), [nn.Conv(1, 1), nn.Conv(1, 3, padding="SAME")],
        [nn.AvgPool(3, stride=1, padding="SAME"), nn.Conv(1, 5, padding=2)]]),
        nn.Conv(1, 3, stride=2)]), (15,)),
    "projection_residual": (lambda n: nn.Stack([nn.Parallel([
        [nn.Conv(2, 3, stride=2, padding="SAME"), nn.Conv(2, 3, padding="SAME")],
        nn.Conv(2, 1, stride=2)], merge="add")]), (16,)),
}


@pytest.mark.parametrize("name", list(MODEL_PROBES))
def test_receptive_field_of_nn_models_against_a_gradient_probe(name):
    """Every output's dependencies (the Jacobian of the model with positive weights) lie in
    its field, and the field is the smallest such window: some output reaches each end."""
    build, sizes = MODEL_PROBES[name]
    n = len(sizes)
    model = build(n)
    rf = jaxconv.receptive_field(model, input_shape=sizes)[-1]
    params = jax.tree.map(lambda p: jnp.abs(p) + 0.1,
                          model.init(jax.random.key(0), (1, *sizes, 1)))
    jac = np.asarray(jax.jacrev(
        lambda x: model.apply(params, x[None, ..., None])[0].sum(-1))(jnp.ones(sizes)))
    lows, highs = [[] for _ in range(n)], [[] for _ in range(n)]
    for pos in np.ndindex(*jac.shape[:n]):
        hits = np.nonzero(jac[pos])
        for d in range(n):
            first = rf.start[d] + pos[d] * rf.jump[d]
            last = first + rf.size[d] - 1
            lo, hi = hits[d].min(), hits[d].max()
            assert first <= lo and hi <= last, (pos, d, rf, lo, hi)
            if first >= 0:  # a field end on real input is reached by some output
                lows[d].append(lo - pos[d] * rf.jump[d])
            if last <= sizes[d] - 1:
                highs[d].append(hi - pos[d] * rf.jump[d])
    for d in range(n):
        assert min(lows[d]) == rf.start[d], (d, rf, min(lows[d]))
        assert max(highs[d]) == rf.start[d] + rf.size[d] - 1, (d, rf, max(highs[d]))


def test_receptive_field_of_a_transposed_conv_without_input_shape():
    # stride 1, VALID: a full-padded conv's field; the mapping form names its kind
    want = [ReceptiveField((3,), (1,), (0,)), ReceptiveField((5,), (1,), (-2,))]
    assert jaxconv.receptive_field(nn.Stack([nn.Conv(1, 3), nn.ConvTranspose(1, 3)])) == want
    assert jaxconv.receptive_field(
        [(3, 1), {"kind": "conv_transpose", "kernel_size": 3}]) == want


RF_BRANCH_ERRORS = [
    ("transpose_jump", nn.Stack([nn.ConvTranspose(1, 2, stride=2)]),
     r"^receptive_field: layers\[0\]: a transposed conv with stride \(2,\) after layers of "
     r"jump \(1,\): .* receptive_field needs the jump to be a multiple of the stride"),
    ("merge_jumps", nn.Stack([nn.Parallel([nn.Conv(1, 1, stride=4), nn.AvgPool(13, stride=1)],
                                          merge="add")]),
     r"^receptive_field: layers\[0\] merges branches whose fields have different jumps "
     r"\[\(1,\), \(4,\)\]"),
    ("branch_ends", nn.Stack([nn.Parallel([nn.GlobalPool(), [nn.Conv(1, 1), nn.Flatten()]])]),
     r"^receptive_field: layers\[0\]\.branches\[0\] removes the spatial dims"),
    ("residual_ends", [nn.Residual([nn.Flatten()])],
     r"^receptive_field: layers\[0\]\.block removes the spatial dims"),
    ("nested_error_path", [types.SimpleNamespace(layers=[(3, 1), (3, 0)])],
     r"^receptive_field: layers\[0\]\.layers\[1\]: stride must be positive"),
    ("transpose_bad_padding", [{"kind": "conv_transpose", "kernel_size": 3, "padding": "half"}],
     r"^receptive_field: layers\[0\]: conv_transpose: unknown padding 'half'"),
]


@pytest.mark.parametrize(("layers", "match"), [e[1:] for e in RF_BRANCH_ERRORS],
                         ids=[e[0] for e in RF_BRANCH_ERRORS])
def test_receptive_field_branch_and_transpose_errors(layers, match):
    with pytest.raises(ValueError, match=match):
        jaxconv.receptive_field(layers, input_shape=(16,))
