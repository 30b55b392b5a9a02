"""Tests for jaxconv.lowering: every lowering equals the xla lowering and the numpy oracle
(forward, both gradients, forward-mode, under jit and vmap), and the planner's decisions."""

import _reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
from jaxconv import lowering
from jaxconv.lowering import depthwise, fft, im2col, plan

FAST = ("shift_add", "im2col", "fft")
_LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}


@st.composite
def conv_configs(draw):
    """A random but valid conv call: rank 1-3, stride, dilation, groups, layout, padding."""
    n = draw(st.integers(1, 3))
    dims = st.lists(st.integers(1, 3), min_size=n, max_size=n)
    kernel = draw(dims)
    stride = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    dilation = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    groups = draw(st.integers(1, 3))
    c_group, o_group = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    extra = 5 if n < 3 else 2
    sizes = [k + draw(st.integers(0, extra)) for k in k_eff]
    padding = draw(
        st.one_of(
            st.sampled_from(["VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL"]),
            st.integers(0, 2),
            st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=n, max_size=n),
        )
    )
    layout = _LAYOUTS[n][draw(st.integers(0, 1))]
    return dict(
        n=n, kernel=kernel, sizes=sizes, c_in=groups * c_group, c_out=groups * o_group,
        options=dict(stride=stride, dilation=dilation, groups=groups, padding=padding,
                     layout=layout),
        seed=draw(st.integers(0, 2**16)),
    )


def _arrays(cfg, batch=2):
    rng = np.random.default_rng(cfg["seed"])
    opts = cfg["options"]
    x = rng.normal(size=(batch, *cfg["sizes"], cfg["c_in"])).astype(np.float32)
    w = rng.normal(size=(*cfg["kernel"], cfg["c_in"] // opts["groups"], cfg["c_out"]))
    w = w.astype(np.float32)
    if not opts["layout"].endswith("C"):
        x, w = ref.x_to_channels_first(x), ref.w_to_channels_first(w)
    return jnp.asarray(x), jnp.asarray(w), rng


def _everything(algorithm, opts):
    """One jitted function: forward, both gradients (VJP), a JVP and a vmapped forward."""

    def conv(x, w):
        return jaxconv.conv(x, w, algorithm=algorithm, **opts)

    def run(x, w, ct, tx, tw):
        y, vjp = jax.vjp(conv, x, w)
        dx, dw = vjp(ct)
        _, y_dot = jax.jvp(conv, (x, w), (tx, tw))
        y_vmap = jax.vmap(lambda xi: conv(xi[None], w)[0])(x)
        return y, dx, dw, y_dot, y_vmap

    return jax.jit(run)


def _close(actual, expected, what):
    """Equal up to float32 rounding, relative to the expected array's scale."""
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0,
                               atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("algorithm", FAST)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(cfg=conv_configs())
@pytest.mark.slow
def test_lowering_matches_xla_and_the_oracle(algorithm, cfg):
    opts = cfg["options"]
    x, w, rng = _arrays(cfg)
    y_ref = ref.conv(np.asarray(x), np.asarray(w), **opts)
    ct = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    tx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    tw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)
    got = _everything(algorithm, opts)(x, w, ct, tx, tw)
    want = _everything("xla", opts)(x, w, ct, tx, tw)
    _close(got[0], y_ref, "forward vs numpy oracle")
    for name, a, b in zip(("forward", "grad x", "grad w", "jvp", "vmap"), got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        _close(a, b, f"{name} vs xla")


@st.composite
def depthwise_configs(draw):
    """conv_configs with one input channel per group (groups 2-3) and a multiplier 1-2."""
    cfg = draw(conv_configs())
    groups = draw(st.integers(2, 3))
    cfg["options"]["groups"] = groups
    cfg["c_in"], cfg["c_out"] = groups, groups * draw(st.integers(1, 2))
    return cfg


@settings(max_examples=20, deadline=None, derandomize=True)
@given(cfg=depthwise_configs())
@pytest.mark.slow
def test_depthwise_matches_xla_and_the_oracle(cfg):
    """The depthwise lowering: forward vs the numpy oracle; forward, both gradients, a JVP and
    vmap vs xla (rank 1-3, stride, dilation, padding, multiplier, both layouts)."""
    opts = cfg["options"]
    x, w, rng = _arrays(cfg)
    y_ref = ref.conv(np.asarray(x), np.asarray(w), **opts)
    ct = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    tx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    tw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)
    got = _everything("depthwise", opts)(x, w, ct, tx, tw)
    want = _everything("xla", opts)(x, w, ct, tx, tw)
    _close(got[0], y_ref, "forward vs numpy oracle")
    for name, a, b in zip(("forward", "grad x", "grad w", "jvp", "vmap"), got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        _close(a, b, f"{name} vs xla")


def test_depthwise_declines_a_dense_conv_by_name():
    x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="algorithm 'depthwise' does not support this call "
                                         r"\(not a depthwise conv: each output value sums 2"):
        jaxconv.conv(x, w, groups=2, algorithm="depthwise")


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "opts"),
    [
        ((3, 11, 1), (3, 1, 1), dict(padding="CAUSAL", dilation=2)),
        ((2, 1, 13), (1, 1, 4), dict(stride=3, padding="SAME", layout="NCW")),
        ((2, 9, 8, 1), (3, 2, 1, 1), dict(stride=(2, 1), padding=((1, 2), (0, 1)))),
        ((2, 1, 9, 8), (1, 1, 3, 3), dict(dilation=(1, 2), padding="FULL", layout="NCHW")),
        ((1, 5, 6, 7, 1), (2, 3, 2, 1, 1), dict(stride=2, padding=1, pad_mode="reflect")),
    ],
    ids=["1d_causal", "1d_ncw", "2d_pads", "2d_nchw", "3d_reflect"],
)
@pytest.mark.slow
def test_single_filter_path_of_shift_add(x_shape, w_shape, opts):
    """A 1 -> 1 filter runs shift_add's channels-last path: equal to xla everywhere."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    y = jaxconv.conv(x, w, algorithm="xla", **opts)
    ct = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    tx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    tw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)
    got = _everything("shift_add", opts)(x, w, ct, tx, tw)
    want = _everything("xla", opts)(x, w, ct, tx, tw)
    for name, a, b in zip(("forward", "grad x", "grad w", "jvp", "vmap"), got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        _close(a, b, f"{name} vs xla")
    # second order: the custom JVP composes with itself
    hess = lambda a: jax.hessian(lambda v: jnp.sum(jaxconv.conv(v, w, algorithm=a, **opts) ** 2))
    small = x[:1]
    _close(hess("shift_add")(small), hess("xla")(small), "hessian vs xla")


@pytest.mark.parametrize("algorithm", FAST)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.slow
def test_low_precision_dtypes_stay_in_their_dtype(algorithm, dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 2)), dtype)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), dtype)
    y = jaxconv.conv(x, w, padding="SAME", algorithm=algorithm)
    y_ref = ref.conv(np.asarray(x, np.float32), np.asarray(w, np.float32), padding="SAME")
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), y_ref, rtol=0, atol=0.25)


@pytest.mark.slow
def test_eager_equals_jit():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 12, 12, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 2)), jnp.float32)
    for algorithm in FAST:
        f = lambda x, w, a=algorithm: jaxconv.conv(x, w, stride=2, padding="SAME", algorithm=a)
        np.testing.assert_allclose(f(x, w), jax.jit(f)(x, w), rtol=1e-6, atol=1e-5)


# --- precision ---------------------------------------------------------------------------------


def _dot_precisions(jaxpr):
    """The precision of every dot_general / conv_general_dilated in a jaxpr, nested included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                found += _dot_precisions(inner)
    return found


@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [((2, 9, 9, 1), (3, 3, 1, 1)), ((2, 9, 9, 2), (3, 3, 2, 3)),
     ((1, 300, 300, 1), (3, 3, 1, 1)), ((1, 300, 300, 2), (3, 3, 2, 2))],
    ids=["single_dot", "channels_dot", "single_big", "channels_big"],
)
@pytest.mark.slow
def test_shift_add_passes_precision_to_every_dot(x_shape, w_shape):
    """Issue 14: forced shift_add ignored precision. Its multiply-adds are elementwise (exact
    float32 on every backend); the dots of its kernel gradient (a matmul of stacked windows,
    or lax's conv above DOT_MAX_PATCH_BYTES) must get the precision asked for."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    w = jax.ShapeDtypeStruct(w_shape, jnp.float32)
    highest = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)

    def grads(x, w, precision):
        f = lambda x, w: jnp.sum(jaxconv.conv(x, w, algorithm="shift_add", precision=precision))
        return jax.grad(f, argnums=(0, 1))(x, w)

    found = _dot_precisions(jax.make_jaxpr(lambda x, w: grads(x, w, "highest"))(x, w).jaxpr)
    assert found and all(p == highest for p in found), found
    found = _dot_precisions(
        jax.make_jaxpr(lambda x, w: grads(x, w, lax.Precision.HIGH))(x, w).jaxpr)
    assert found and all(p == (lax.Precision.HIGH,) * 2 for p in found), found


@pytest.mark.slow
def test_shift_add_with_precision_equals_xla(rng):
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)

    def run(algorithm):
        f = lambda x, w: jnp.sum(jaxconv.conv(x, w, algorithm=algorithm,
                                              precision=lax.Precision.HIGHEST) * ct)
        return jax.value_and_grad(f, argnums=(0, 1))(x, w)

    got, want = run("shift_add"), run("xla")
    for a, b, name in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("y", "dx", "dw"),
                          strict=True):
        _close(a, b, name)


@pytest.mark.parametrize(
    "precision", [lax.Precision.HIGHEST, "highest", "default", (lax.Precision.HIGH,) * 2],
    ids=["enum", "string", "default", "pair"],
)
@pytest.mark.slow
def test_fft_declines_an_explicit_precision(precision):
    """FFT's rounding error is global (relative to the output's maximum), so it cannot honour
    any precision: a forced call with one raises our error naming why; auto still runs xla."""
    x, w = jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1))
    with pytest.raises(
        ValueError,
        match=r"^conv: algorithm 'fft' does not support this call \(precision=.* asks for "
              r"products rounded element by element, while the FFT's rounding error is spread "
              r"over the whole output .* use 'shift_add', which honours it\); use "
              r"algorithm='auto' or 'xla'\.$",
    ):
        jaxconv.conv(x, w, algorithm="fft", precision=precision)
    np.testing.assert_array_equal(jaxconv.conv(x, w, precision=precision), 9.0)


@pytest.mark.parametrize("precision", ["ultra", 3, ("highest",), ("highest", "x")],
                         ids=["string", "int", "one", "pair"])
def test_shift_add_rejects_an_unknown_precision(precision):
    """Its forward pass runs no dot, so a misspelt precision would pass silently."""
    with pytest.raises(ValueError, match=r"^conv: unknown precision .*; expected None, a "
                                         r"lax.Precision or one of 'default', 'high'"):
        jaxconv.conv(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1)), algorithm="shift_add",
                     precision=precision)


@pytest.mark.parametrize("algorithm", ["xla", "shift_add", "im2col"])
@pytest.mark.slow
def test_a_list_precision_works_like_the_tuple(algorithm):
    """lax takes a [lhs, rhs] list; the jitted lowerings need hashable options (jax's
    "Non-hashable static arguments" error before conv normalised it)."""
    x, w = jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 8))
    got = jaxconv.conv(x, w, algorithm=algorithm, precision=["highest", "highest"])
    np.testing.assert_array_equal(got, 72)


@pytest.mark.slow
def test_shift_add_accepts_every_lax_precision_form():
    x, w = jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 1))
    for p in (None, "float32", "tensorfloat32", "bfloat16", lax.Precision.DEFAULT,
              ("high", "highest"), lax.DotAlgorithmPreset.F32_F32_F32, "F32_F32_F32"):
        np.testing.assert_array_equal(jaxconv.conv(x, w, algorithm="shift_add", precision=p), 9)


# --- dtypes narrower than float32 ---------------------------------------------------------------

NARROW = [n for n in ("bfloat16", "float16", "float8_e3m4", "float8_e4m3", "float8_e4m3fn",
                      "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2", "float8_e5m2fnuz",
                      "float8_e8m0fnu", "float4_e2m1fn") if hasattr(jnp, n)]


def _narrow_case(name, rng):
    """x, w exactly representable, with every product and partial sum exact in float32."""
    dtype = jnp.dtype(getattr(jnp, name))
    if name == "float8_e8m0fnu":  # unsigned powers of two, no zero
        x, w = 2.0 ** rng.integers(-2, 3, (2, 7, 6, 2)), 2.0 ** rng.integers(-2, 2, (3, 3, 2, 3))
    else:
        x, w = rng.integers(-4, 5, (2, 7, 6, 2)) / 4, rng.integers(-2, 3, (3, 3, 2, 3)) / 2
    return x.astype(dtype), w.astype(dtype)


@pytest.mark.parametrize("name", NARROW)
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.slow
def test_shift_add_rounds_narrow_dtypes_once(name, padding, rng):
    """shift_add summed its taps in the input dtype: float4 saturated at 4 where the exact sum
    is 6, float8 rounded every partial sum, and float8_e8m0fnu's zero padding was NaN. Now it
    sums in float32 (as XLA's conv does) and rounds once: equal to the oracle rounded."""
    x, w = _narrow_case(name, rng)
    want = ref.conv(x.astype(np.float64), w.astype(np.float64), padding=padding)
    got = jaxconv.conv(x, w, padding=padding, algorithm="shift_add")
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(got).astype(np.float64),
                                  want.astype(x.dtype).astype(np.float64))


@pytest.mark.parametrize("name", NARROW)
@pytest.mark.slow
def test_fft_pads_narrow_dtypes_in_float32(name, rng):
    """float8_e8m0fnu has no zero: padding before the float32 cast filled the border with NaN.
    FFT's own rounding allows one step of the narrow dtype either way."""
    x, w = _narrow_case(name, rng)
    want = ref.conv(x.astype(np.float64), w.astype(np.float64), padding="SAME")
    got = np.asarray(jaxconv.conv(x, w, padding="SAME", algorithm="fft")).astype(np.float64)
    assert np.isfinite(got).all()
    step = float(jnp.finfo(x.dtype).eps) * np.maximum(np.abs(want), 1.0)
    np.testing.assert_array_less(np.abs(got - want), 1.01 * step)


# --- the planner -------------------------------------------------------------------------------

WORKLOADS = {  # issue 4's CPU workloads (NHWC, VALID, float32): (x shape, w shape)
    "A": ((64, 16, 16, 1), (3, 3, 1, 1)),
    "B": ((64, 16, 16, 1), (3, 3, 1, 8)),
    "C": ((32, 64, 64, 16), (3, 3, 16, 32)),
    "D": ((8, 128, 128, 3), (5, 5, 3, 16)),
    "E": ((32, 32, 32, 64), (3, 3, 64, 64)),
    "F": ((1, 512, 512, 1), (3, 3, 1, 1)),
    "G": ((1, 1024, 1024, 1), (31, 31, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
@pytest.mark.parametrize("backend", ["gpu", "tpu", "cuda"])
def test_plan_picks_xla_off_cpu(name, backend):
    x_shape, w_shape = WORKLOADS[name]
    p = plan(x_shape, w_shape, backend=backend)
    assert p.algorithm == "xla" and backend in p.reason


@pytest.mark.parametrize("precision", [lax.Precision.HIGHEST, "highest", "default"])
def test_plan_on_cpu_keeps_its_choice_with_a_precision_except_fft(precision):
    # XLA:CPU computes float32 convs and dots in full float32 whatever the precision says, and
    # every exact lowering honours it, so it does not change the choice; FFT declines it
    p = plan((64, 16, 16, 1), (3, 3, 1, 1), precision=precision, backend="cpu")
    assert p.algorithm == "shift_add"
    assert "algorithm='fft'" in plan(*WORKLOADS["G"], backend="cpu").reason
    assert "fft" not in plan(*WORKLOADS["G"], precision=precision, backend="cpu").reason


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_plan_on_cpu_picks_a_lowering_with_a_reason(name):
    x_shape, w_shape = WORKLOADS[name]
    p = plan(x_shape, w_shape, backend="cpu")
    assert p.algorithm in lowering.algorithms() and p.algorithm != "auto"
    assert isinstance(p.reason, str) and p.reason


def test_plan_expected_choices_for_the_issue_workloads():
    picks = {k: plan(*v, backend="cpu").algorithm for k, v in WORKLOADS.items()}
    assert picks["A"] == picks["F"] == "shift_add"
    assert picks["G"] == "xla"  # fft would be faster, but runs only when asked by name
    # C and E: XLA would run them on YNNPACK; rows forward (1-D, Eigen), im2col's gradients
    assert picks["C"] == picks["E"] == "rows"
    p = plan(*WORKLOADS["C"], backend="cpu")
    assert p.input_grad.algorithm == p.kernel_grad.algorithm == "im2col"
    # H: depthwise 3x3 over 64 channels (9 multiply-adds per output value)
    assert plan((32, 64, 64, 64), (3, 3, 1, 64), groups=64, backend="cpu").algorithm == (
        "depthwise")


def test_auto_never_picks_fft_and_plan_says_when_it_would_be_faster():
    """Issue 18: auto picked FFT from 11x11 taps; its error is not elementwise, so auto now
    only names it (how much faster, its error model) and runs an exact lowering."""
    assert all(low.name != "fft" for low in lowering.AUTO_ORDER)
    for x_shape in ((64, 32, 32, 1), (1, 512, 512, 1), (8, 128, 128, 2)):
        for k in (3, 5, 9, 11, 15, 31):
            for c_in, c_out in ((1, 1), (1, 6), (2, 4), (4, 4), (1, 16)):
                p = plan(x_shape[:3] + (c_in,), (k, k, c_in, c_out), backend="cpu")
                assert p.algorithm != "fft", (x_shape, k, c_in, c_out, p)
                noted = "algorithm='fft'" in p.reason
                assert noted == (k * k >= fft.NOTE_MIN_TAPS), (x_shape, k, c_in, c_out, p)
    # strided: the FFT computes every stride-1 output, so it is not noted
    assert "fft" not in plan((1, 512, 512, 1), (11, 11, 1, 1), stride=2, backend="cpu").reason


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "want"),
    [((64, 32, 32, 1), (5, 5, 1, 6), {}, ("shift_add",) * 3),  # LeNet-5's first: 150 macs
     ((64, 32, 32, 1), (9, 9, 1, 1), {}, ("shift_add",) * 3),
     ((64, 32, 32, 1), (10, 10, 1, 1), {}, ("shift_add",) * 3),
     ((64, 16, 16, 1), (3, 3, 1, 16), {}, ("shift_add",) * 3),
     ((64, 16, 16, 2), (3, 3, 2, 8), {}, ("shift_add",) * 3),
     # few input channels above 150: shift_add forward only, im2col's input gradient
     ((64, 16, 16, 1), (3, 3, 1, 32), {}, ("shift_add", "im2col", "xla")),
     ((64, 32, 32, 1), (5, 5, 1, 16), {}, ("shift_add", "im2col", "xla")),
     ((64, 32, 32, 1), (7, 7, 1, 6), {}, ("shift_add", "im2col", "xla")),
     ((16, 17, 17, 17, 2), (3, 3, 3, 2, 8), {"padding": "SAME"},
      ("shift_add", "im2col", "im2col")),  # 3-D: im2col's kernel gradient too
     # above the limits: more multiply-adds, more taps, more input channels
     ((16, 128, 128, 3), (7, 7, 3, 16), {"stride": 2}, ("xla", "im2col", "xla")),
     ((8, 64, 64, 1), (17, 17, 1, 1), {}, ("xla", "im2col", "xla")),
     ((32, 32, 32, 4), (3, 3, 4, 16), {"padding": "SAME"}, ("xla",) * 3)],
    ids=["lenet_5x5_1to6", "9x9_1to1", "10x10_1to1", "3x3_1to16", "3x3_2to8", "3x3_1to32",
         "5x5_1to16", "7x7_1to6", "3d_3x3x3_2to8", "7x7_3to16_s2", "17x17_1to1", "3x3_4to16"],
)
def test_plan_below_fft_picks_an_exact_lowering_per_part(x_shape, w_shape, kwargs, want):
    """Where FFT no longer applies: shift_add takes up to 150 multiply-adds per pixel for
    every part; with at most 3 input channels per group it takes the forward up to 1,400
    (and 225 taps), while the input gradient goes to im2col (shift_add's is 2-100x slower
    there, xla's slow with that few output features) and a 3-D kernel gradient too."""
    p = plan(x_shape, w_shape, backend="cpu", **kwargs)
    assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == want
    options = jaxconv.compiler_options()
    assert plan(x_shape, w_shape, backend="cpu", compiler_options=options,
                **kwargs).algorithm == want[0]


def test_fft_note_states_speed_and_error_model():
    p = plan(*WORKLOADS["G"], backend="cpu")
    assert p.algorithm == "xla"
    assert "algorithm='fft' (asked by name only)" in p.reason
    assert "faster forward" in p.reason and "with gradients than auto on workload G" in p.reason
    assert "not exact elementwise" in p.reason and "exact zeros come back as noise" in p.reason
    assert "NaN/inf pixel makes every output of its image non-finite" in p.reason


def _sparse(rng, shape, bright=6):
    """A few bright pixels per example on an exactly-zero background (digits-like sparsity)."""
    n, size = shape[0], int(np.prod(shape[1:]))
    x = np.zeros((n, size), np.float32)
    for row in x:
        row[rng.choice(size, bright, replace=False)] = rng.uniform(0.5, 1.0, bright)
    return x.reshape(shape)


def _sparse_images(rng, n=8, size=32, bright=6):
    return _sparse(rng, (n, size, size, 1), bright)


# Issue 18: where FFT's cost model made auto pick it (from 121 taps, few channel pairs), an
# exact zero came back as noise, a NaN poisoned the whole image. (op, x shape, w shape, opts)
LARGE_KERNELS = {
    "11x11_1to1": ("conv", (8, 32, 32, 1), (11, 11, 1, 1), {}),
    "15x15_1to6": ("conv", (8, 32, 32, 1), (15, 15, 1, 6), {}),
    "depthwise_15x15x16": ("conv", (4, 32, 32, 16), (15, 15, 1, 16), {"groups": 16}),
    "3d_5x5x5": ("conv", (4, 12, 12, 12, 1), (5, 5, 5, 1, 1), {}),
    "1d_121": ("conv", (8, 512, 1), (121, 1, 1), {}),
    "transpose_11x11": ("conv_transpose", (8, 24, 24, 1), (11, 11, 1, 1), {}),
    "transpose_22x22_s2": ("conv_transpose", (8, 16, 16, 1), (22, 22, 1, 1), {"stride": 2}),
}


def _large_kernel_op(name, algorithm):
    op, _, _, opts = LARGE_KERNELS[name]
    fn = jaxconv.conv if op == "conv" else jaxconv.conv_transpose
    return jax.jit(lambda x, w: fn(x, w, algorithm=algorithm, **opts))


@pytest.mark.parametrize("name", sorted(LARGE_KERNELS))
@pytest.mark.slow
def test_auto_is_exact_elementwise_for_large_kernels(name):
    """Under auto: the exact zeros of a sparse input's response stay zero (FFT's do not: the
    hazard is present at these shapes), a ReLU's bias gradient equals xla's, a NaN or inf
    pixel reaches only the outputs whose window reads it, and small-integer sums are exact."""
    _, x_shape, w_shape, _ = LARGE_KERNELS[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(_sparse(rng, x_shape))
    w = jnp.asarray(rng.normal(size=w_shape) * 0.3, jnp.float32)
    run = {a: _large_kernel_op(name, a) for a in ("auto", "xla", "fft")}
    y = {a: np.asarray(f(x, w)) for a, f in run.items()}
    zeros = {a: int(np.sum(v == 0)) for a, v in y.items()}
    assert zeros["xla"] > y["xla"].size // 10, zeros  # the sparse input leaves exact zeros
    assert zeros["auto"] == zeros["xla"], zeros
    assert zeros["fft"] < zeros["xla"], zeros  # FFT's noise: the hazard is present here

    def bias_grad(algorithm):
        def loss(b):
            out = run[algorithm](x, w)
            return jnp.mean(jax.nn.relu(out + b.reshape((1,) * (out.ndim - 1) + (-1,))))
        return float(jax.grad(loss)(jnp.zeros((y["xla"].shape[-1],), jnp.float32)).sum())

    assert bias_grad("auto") == pytest.approx(bias_grad("xla"), rel=1e-6, abs=0)
    assert bias_grad("fft") != pytest.approx(bias_grad("xla"), rel=1e-2)

    for bad in (np.nan, np.inf):
        xb = np.zeros(x_shape, np.float32)
        xb[(0,) + tuple(s // 2 for s in x_shape[1:-1]) + (0,)] = bad
        bad_out = {a: int(np.sum(~np.isfinite(np.asarray(run[a](jnp.asarray(xb), w)))))
                   for a in ("auto", "xla")}
        assert 0 < bad_out["auto"] == bad_out["xla"] < y["xla"][:1].size, (bad, bad_out)

    xi = jnp.asarray(rng.integers(-3, 4, size=x_shape), jnp.float32)
    wi = jnp.asarray(rng.integers(-3, 4, size=w_shape), jnp.float32)
    np.testing.assert_array_equal(np.asarray(run["auto"](xi, wi)),
                                  np.asarray(run["xla"](xi, wi)))


@pytest.mark.parametrize(("kernel", "features"), [(11, 1), (15, 6), (5, 6), (9, 1)],
                         ids=["11x11_1to1", "15x15_1to6", "5x5_1to6_lenet", "9x9_1to1"])
@pytest.mark.slow
def test_auto_trains_a_relu_cnn_on_sparse_images_like_xla(kernel, features):
    """Issues 14 and 18: FFT's noise on a blank background opens a ReLU there (LeNet-5 over
    digits: the first layer's bias gradient ~100% wrong; 11x11 on sparse images: 0.54 vs
    0.33). Plain gradient steps through conv + bias + ReLU, from 11x11 taps where auto picked
    FFT before issue 18: auto's gradients equal xla's at every step, the bias gradient
    included."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(_sparse_images(rng))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, features)) * 0.3, jnp.float32)
    params0 = {"w": w, "b": jnp.zeros((features,), jnp.float32)}

    def loss(params, algorithm):
        y = jaxconv.conv(x, params["w"], algorithm=algorithm)
        return jnp.mean(jax.nn.relu(y + params["b"].reshape(1, 1, 1, features)))

    grad = {a: jax.jit(jax.grad(lambda p, a=a: loss(p, a))) for a in ("auto", "xla")}
    params = {a: params0 for a in grad}
    for step in range(3):
        g = {a: grad[a](params[a]) for a in grad}
        for name in ("w", "b"):
            want = np.asarray(g["xla"][name], np.float64)
            scale = np.max(np.abs(want))
            assert scale > 0, (step, name)
            err = np.max(np.abs(np.asarray(g["auto"][name], np.float64) - want)) / scale
            assert err <= 2e-6, (step, name, err, plan(x.shape, w.shape))
        params = {a: jax.tree.map(lambda p, d: p - 0.5 * d, params[a], g[a]) for a in grad}


def test_plan_validates_like_conv():
    with pytest.raises(ValueError, match=r"plan: in_channels \(=3\) must be divisible by groups"):
        plan((1, 8, 8, 3), (3, 3, 1, 2), groups=2)
    with pytest.raises(ValueError, match="plan: unknown layout"):
        plan((1, 8, 8, 3), (3, 3, 3, 2), layout="NWC")
    with pytest.raises(TypeError, match="plan: x must have a real floating dtype"):
        plan((1, 8, 8, 3), (3, 3, 3, 2), dtype=jnp.int32)
    with pytest.raises(ValueError, match="plan: unknown padding"):
        plan((1, 8, 8, 3), (3, 3, 3, 2), padding="BOGUS")


def test_plan_accounts_for_pad_modes():
    # reflect padding enlarges x before the conv, with no zero pads left for the lowering
    p = plan((1, 8, 8, 1), (3, 3, 1, 1), padding="SAME", pad_mode="reflect", backend="cpu")
    assert p.algorithm == "shift_add"


def _primitives(jaxpr):
    """Names of every primitive in a jaxpr, nested ones (custom_jvp, pjit) included; of a
    ``lax.platform_dependent`` switch, the CPU branch's (what runs on this machine)."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        platforms = eqn.params.get("branches_platforms")
        if platforms is not None:
            cpu = [i for i, ps in enumerate(platforms) if ps is not None and "cpu" in ps]
            names |= _primitives(eqn.params["branches"][cpu[0]].jaxpr)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                names |= _primitives(inner)
    return names


@pytest.mark.parametrize("name", sorted(set(WORKLOADS) - {"G"}))
@pytest.mark.slow
def test_auto_runs_what_plan_says(name):
    x_shape, w_shape = WORKLOADS[name]
    x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
    p = plan(x_shape, w_shape)
    prims = _primitives(jax.make_jaxpr(lambda x, w: jaxconv.conv(x, w))(x, w))
    has_conv = "conv_general_dilated" in prims
    # xla is one lax conv; rows is a 1-D lax conv over the stacked rows; the others are none
    assert has_conv == (p.algorithm in ("xla", "rows")), (p, prims)
    assert ("fft" in prims) == (p.algorithm == "fft")


@pytest.mark.slow
def test_xla_lowering_is_exactly_one_lax_conv():
    # one lax conv, wrapped in the custom JVP that keeps its gradients canonical
    x, w = jnp.zeros((2, 9, 9, 3)), jnp.zeros((3, 3, 3, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: jaxconv.conv(x, w, padding="SAME", algorithm="xla"))(x, w)
    assert [e.primitive.name for e in jaxpr.eqns] == ["custom_jvp_call"]
    inner = jaxpr.eqns[0].params["call_jaxpr"].jaxpr
    assert [e.primitive.name for e in inner.eqns] == ["conv_general_dilated"]


def test_unknown_algorithm_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown algorithm 'winograd'.*'auto', 'xla'.*'fft'"):
        jaxconv.conv(jnp.zeros((1, 5, 5, 1)), jnp.zeros((3, 3, 1, 1)), algorithm="winograd")


def test_a_named_lowering_that_declines_raises_and_auto_falls_back():
    # a patch matrix over the size limit: im2col declines; shapes only, no memory is touched
    x = jax.ShapeDtypeStruct((64, 512, 512, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
    with pytest.raises(ValueError, match="algorithm 'im2col' does not support this call"):
        jax.eval_shape(lambda x, w: jaxconv.conv(x, w, algorithm="im2col"), x, w)
    assert plan(x.shape, w.shape, backend="cpu").algorithm == "xla"
    out = jax.eval_shape(lambda x, w: jaxconv.conv(x, w), x, w)
    assert out.shape == (64, 510, 510, 64)


def test_every_lowering_declares_itself_in_one_record():
    names = [low.name for low in lowering.AUTO_ORDER]
    assert set(lowering.algorithms()) == {"auto", *names, "fft"}
    assert [low.name for low in lowering.BY_NAME_ONLY] == ["fft"]
    assert lowering.EXACT_BY_NAME == ()
    assert names[-1] == "xla"  # prefers everything: the fallback, asked last
    x_shape, w_shape = WORKLOADS["C"]
    args, _ = lowering._conv_args("t", x_shape, w_shape, jnp.float32, 1, "VALID", 1, 1, None,
                                 "zeros", None)
    assert im2col.LOWERING.declines(args) is None and im2col.LOWERING.prefers(args)
    assert fft.LOWERING.declines(args) is None and fft.LOWERING.prefers(args) is None
    assert "depthwise needs groups == in_channels" in depthwise.LOWERING.declines(args)
    assert depthwise.LOWERING.prefers(args) is None


@pytest.mark.parametrize("n, want", [(1, 1), (13, 14), (31, 32), (97, 98), (1025, 1029)])
def test_fft_lengths_are_7_smooth_and_minimal(n, want):
    assert fft.fast_length(n) == want


@pytest.mark.slow
def test_im2col_passes_precision_to_its_dots():
    x, w = jnp.ones((2, 6, 6, 8)), jnp.ones((3, 3, 8, 8))
    f = lambda p: jaxconv.conv(x, w, algorithm="im2col", precision=p)
    text = jax.jit(lambda: f(lax.Precision.HIGHEST)).lower().as_text()
    assert "HIGHEST" in text and "dot_general" in text
    assert "HIGHEST" not in jax.jit(lambda: f(None)).lower().as_text()


@pytest.mark.parametrize("algorithm", sorted(set(jaxconv.lowering.algorithms()) - {"auto"}))
def test_every_lowering_rejects_an_unknown_precision(algorithm):
    with pytest.raises(ValueError, match="conv: unknown precision 'higest'"):
        jaxconv.conv(jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 8)), algorithm=algorithm,
                     precision="higest")


@pytest.mark.cpu_only
def test_auto_decides_cpu_vs_accelerator_when_lowering():
    """Issue 18 item 5: the plan's platform is the one the computation is lowered for, not
    jax.default_backend() at trace time. The same traced function lowered for CUDA runs lax's
    convolution (cuDNN); lowered for CPU, shift_add (no convolution); and the compiled CPU
    executable holds no conditional."""
    x, w = jnp.ones((64, 16, 16, 1)), jnp.ones((3, 3, 1, 1))
    f = jax.jit(jax.grad(lambda x, w: jaxconv.conv(x, w).sum(), argnums=(0, 1)))
    traced = f.trace(x, w)
    assert "stablehlo.convolution" not in traced.lower().as_text()
    assert "stablehlo.convolution" in traced.lower(lowering_platforms=("cuda",)).as_text()
    assert "conditional" not in f.lower(x, w).compile().as_text()
    assert plan(x.shape, w.shape, backend="cpu").algorithm == "shift_add"


@pytest.mark.cpu_only
def test_the_compiler_options_intent_is_part_of_jax_trace_cache():
    """Issue 18 item 5: a user's jax.jit(apply) traced once outside fit kept the default plan
    inside fit (the planner read a context variable jax's caches do not see). The intent is now
    in jax's trace context: the same jitted function traces again under compiling_with."""
    from jaxconv.lowering._base import compiling_with

    x, w = jnp.zeros((4, 16, 16, 16)), jnp.zeros((3, 3, 16, 16))  # YNNPACK declines 16 -> 16
    f = jax.jit(lambda x, w: jaxconv.conv(x, w))
    outside = _primitives(jax.make_jaxpr(f)(x, w).jaxpr)
    with compiling_with(jaxconv.compiler_options()):
        inside = _primitives(jax.make_jaxpr(f)(x, w).jaxpr)
    options = jaxconv.compiler_options()
    assert plan(x.shape, w.shape, backend="cpu", compiler_options=options).algorithm == "xla"
    assert plan(x.shape, w.shape, backend="cpu").algorithm == "im2col"
    assert "dot_general" in outside and "conv_general_dilated" not in outside
    assert "conv_general_dilated" in inside and "dot_general" not in inside


@pytest.mark.slow
def test_depthwise_gradient_memory_does_not_grow_with_taps():
    """Issue 18 item 8: plain autodiff padded a copy per kernel tap (7x7 on 16x32x32x32: 103
    MiB of temporaries against lax's 6 MiB). Measured on the compiled gradient, shapes only."""
    x = jax.ShapeDtypeStruct((16, 32, 32, 32), jnp.float32)

    def temp_bytes(k, algorithm):
        w = jax.ShapeDtypeStruct((k, k, 1, 32), jnp.float32)
        loss = lambda x, w: jnp.sum(jaxconv.conv(x, w, groups=32, padding="SAME",
                                                 algorithm=algorithm) ** 2)
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(7, "depthwise") <= 2.5 * temp_bytes(7, "xla")
    assert temp_bytes(7, "depthwise") <= 2 * temp_bytes(3, "depthwise")


@pytest.mark.parametrize("x_shape,kernel,stride,dilation,m,budget", [
    # 9 output rows of 2 x 8 x 3 floats, 6 taps: blocks of 2 rows, the last one past the end
    ((2, 11, 9, 3), (3, 2), (1, 1), (1, 1), 1, 2 * 6 * 192),
    ((2, 13, 8, 2), (3, 3), (2, 1), (2, 1), 2, 1),  # stride and dilation on the looped axis
    ((3, 17, 4), (5,), (2,), (1,), 1, 1),  # 1-D: the only spatial axis is looped
    ((1, 7, 6, 5, 2), (2, 3, 2), (1, 2, 1), (2, 1, 1), 3, 1),  # 3-D, multiplier 3
])
def test_depthwise_kernel_gradient_in_row_blocks_matches_lax(monkeypatch, x_shape, kernel,
                                                             stride, dilation, m, budget):
    """The depthwise kernel gradient loops over blocks of output rows (before: XLA's grouped
    kernel-gradient convolution, 10x slower on workload H; NOTES.md). Blocks forced small, so
    the loop takes several steps and a last block past the end, against lax's gradient."""
    monkeypatch.setattr(depthwise, "KERNEL_GRAD_BLOCK_BYTES", budget)  # 1: a row per step
    rng = np.random.default_rng(0)
    n, c = len(kernel), x_shape[-1]
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w_shape = (*kernel, 1, c * m)
    spec = "DHW"[3 - n:]

    def lax_conv(w):
        return lax.conv_general_dilated(x, w, stride, "VALID", rhs_dilation=dilation,
                                        dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"),
                                        feature_group_count=c)

    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    y, vjp = jax.vjp(lax_conv, w)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    got = depthwise._kernel_grad(x, g, kernel, stride, dilation)
    np.testing.assert_allclose(np.asarray(got), np.asarray(vjp(g)[0]), rtol=1e-5, atol=1e-5)
    # and through the lowering's custom JVP, in reverse mode (traced afresh: a new function)
    grad = jax.grad(lambda w: jnp.vdot(g, jaxconv.conv(x, w, stride=stride, dilation=dilation,
                                                       groups=c, algorithm="depthwise")))
    with jax.disable_jit():
        np.testing.assert_allclose(np.asarray(grad(w)), np.asarray(vjp(g)[0]), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.cpu_only
def test_im2col_shares_its_memory_budget_over_fits_restarts_but_not_other_vmaps():
    """Issue 18 item 5: im2col bounds its patch memory by chunking the batch it sees. Under
    fit's restarts (vmap over the named axis RESTARTS_AXIS) the copies share the budget
    (before: 8 restarts held 8x a single run's temporaries). An unnamed ``jax.vmap`` axis is
    invisible to the traced function, a documented limitation: jax's way to batch differently,
    ``jax.custom_batching.custom_vmap``/``sequential_vmap``, has no reverse-mode autodiff
    (``jax.grad`` of it fails to linearize), which im2col's gradients need."""
    from jaxconv.lowering._base import RESTARTS_AXIS

    x = jax.ShapeDtypeStruct((8, 16, 32, 32, 16), jnp.float32)
    w = jax.ShapeDtypeStruct((8, 3, 3, 16, 32), jnp.float32)
    f = lambda x, w: jnp.sum(jaxconv.conv(x, w, algorithm="im2col") ** 2)

    def temp(g):
        return jax.jit(g).lower(x, w).compile().memory_analysis().temp_size_in_bytes

    # measured: forward 7.2 MiB once, 8 named copies 30.5 (their own inputs and outputs are
    # most of it), 8 unnamed 57.5; gradients 7.7, 36.1, 61.7
    one = temp(lambda x, w: f(x[0], w[0]))
    unnamed = temp(lambda x, w: jnp.sum(jax.vmap(f)(x, w)))
    assert unnamed > 4 * one  # the limitation
    assert temp(lambda x, w: jnp.sum(jax.vmap(f, axis_name=RESTARTS_AXIS)(x, w))) < 0.6 * unnamed
    grad = jax.grad(f, argnums=1)
    assert (temp(jax.vmap(grad, axis_name=RESTARTS_AXIS))
            < 0.7 * temp(jax.vmap(grad)))

    @jax.custom_batching.sequential_vmap
    def g(x):
        return jnp.sin(x)

    with pytest.raises(ValueError, match="Linearization failed"):
        jax.grad(lambda x: jnp.sum(jax.vmap(g)(x)))(jnp.ones((2, 3)))


# --- the plan of each part of a differentiated call (issue 19 item 2) ---------------------

def _spy_lowering(part, traced):
    """A lowering that prefers only ``part`` of a call and records each trace of its conv
    (it computes with the xla lowering, so results must match lax exactly)."""
    from jaxconv.lowering import xla

    def conv(x, w, args):
        traced.append(args.part)
        return xla.conv(x, w, args)

    def prefers(args):
        return f"the spy prefers the {part}" if args.part == part else None

    return lowering.Lowering("spy", conv, declines=lambda args: None, prefers=prefers)


@pytest.fixture
def spy(monkeypatch):
    """Installs a spy lowering first in ``AUTO_ORDER`` for one part; returns its trace log."""
    def install(part):
        traced: list = []
        low = _spy_lowering(part, traced)
        monkeypatch.setattr(lowering, "AUTO_ORDER", (low, *lowering.AUTO_ORDER))
        monkeypatch.setitem(lowering._BY_NAME, "spy", low)
        lowering._compiled.cache_clear()
        return traced

    yield install
    lowering._compiled.cache_clear()


def _lax_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("part", ["forward", "input_grad", "kernel_grad"])
def test_plan_names_a_lowering_for_each_part(spy, part):
    spy(part)
    p = plan((2, 6, 6, 3), (3, 3, 3, 4), padding="SAME", backend="cpu")
    chosen = {"forward": p.algorithm, "input_grad": p.input_grad.algorithm,
              "kernel_grad": p.kernel_grad.algorithm}
    assert chosen[part] == "spy"
    assert all(a != "spy" for k, a in chosen.items() if k != part)
    assert "the spy prefers" in {"forward": p, "input_grad": p.input_grad,
                                 "kernel_grad": p.kernel_grad}[part].reason
    gpu = plan((2, 6, 6, 3), (3, 3, 3, 4), padding="SAME", backend="gpu")
    assert gpu.algorithm == gpu.input_grad.algorithm == gpu.kernel_grad.algorithm == "xla"


@pytest.mark.parametrize(("part", "wrt", "runs"), [
    ("kernel_grad", (), False),      # evaluated only: the forward's lowering
    ("kernel_grad", (1,), True),     # a first layer's step: the kernel gradient's lowering
    ("kernel_grad", (0,), False),    # the input gradient alone does not run it
    ("kernel_grad", (0, 1), True),
    ("input_grad", (1,), False),     # x is data: its gradient's plan is never traced
    ("input_grad", (0,), True),
    ("input_grad", (0, 1), True),
    ("forward", (0, 1), True),       # differentiated, the value is still the forward's
    ("forward", (1,), True),
    ("forward", (), True),
], ids=lambda v: str(v))
def test_each_part_runs_the_lowering_planned_for_it(spy, part, wrt, runs):
    traced = spy(part)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)

    def loss(x, w):
        return jnp.sum(jaxconv.conv(x, w, padding="SAME") * g)

    def want(x, w):
        return jnp.sum(_lax_conv(x, w) * g)

    with jax.default_matmul_precision("highest"):
        if wrt:
            got = jax.jit(jax.value_and_grad(loss, argnums=wrt))(x, w)
            ref_ = jax.value_and_grad(want, argnums=wrt)(x, w)
        else:
            got, ref_ = jax.jit(loss)(x, w), want(x, w)
    assert bool(traced) == runs
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref_), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_a_split_plan_is_the_exact_derivative_under_vmap_jvp_and_second_order(spy):
    spy("kernel_grad")  # forward and input gradient on auto's own lowerings, kernel on spy
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 7, 7, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 5)), jnp.float32)
    dx = jnp.asarray(rng.normal(size=x.shape[1:]), jnp.float32)
    dw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)

    def f(conv):
        return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))

    ours = f(lambda x, w: jaxconv.conv(x, w, padding="SAME"))
    theirs = f(_lax_conv)
    with jax.default_matmul_precision("highest"):
        for fn in (
            lambda h: jax.vmap(jax.grad(h, argnums=(0, 1)), in_axes=(0, None)),
            lambda h: jax.vmap(lambda x, w: jax.jvp(h, (x, w), (dx, dw))[1], in_axes=(0, None)),
            # a Hessian-vector product: the JVP of the gradient
            lambda h: jax.vmap(lambda x, w: jax.jvp(jax.grad(h, argnums=1), (x, w),
                                                     (dx, dw))[1], in_axes=(0, None)),
        ):
            got, want = jax.jit(fn(ours))(x, w), fn(theirs)(x, w)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _conv_precisions(fn, args, platform):
    """The precision_config of every convolution in ``fn`` exported for ``platform`` (no
    device of that platform is needed to lower for it)."""
    import re

    text = jax.export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()
    return [re.findall(r"precision (\w+)", line) for line in text.splitlines()
            if "stablehlo.convolution" in line]


# one shape auto runs on lax's convolution on CPU too, one it runs on shift_add there
@pytest.mark.parametrize("xs,ws", [((2, 8, 8, 4), (3, 3, 4, 8)), ((2, 8, 8, 1), (3, 3, 1, 2))])
def test_auto_asks_for_full_float32_precision_off_cpu(xs, ws):
    # On recent NVIDIA GPUs XLA rounds float32 convolutions to TF32 unless asked for HIGHEST
    # (1e-4 of the elementwise bound on an H200: benchmarks/gpu_check.py), which would break
    # auto's exactness; the forward and both gradients must ask for it off CPU.
    f32 = (jax.ShapeDtypeStruct(xs, jnp.float32), jax.ShapeDtypeStruct(ws, jnp.float32))
    fwd = lambda x, w: jaxconv.conv(x, w, algorithm="auto")
    grads = jax.grad(lambda x, w: jaxconv.conv(x, w).sum(), argnums=(0, 1))
    for fn, n in ((fwd, 1), (grads, 2)):
        assert _conv_precisions(fn, f32, "cuda") == [["HIGHEST", "HIGHEST"]] * n
    # the CPU plan is untouched (XLA:CPU computes float32 fully either way): one convolution
    # where it is xla, none where it is shift_add
    n_cpu = int(plan(xs, ws, backend="cpu").algorithm == "xla")
    assert len(_conv_precisions(fwd, f32, "cpu")) == n_cpu
    # a precision the caller gives is honoured, and other dtypes are left alone
    default = lambda x, w: jaxconv.conv(x, w, algorithm="auto", precision="default")
    assert _conv_precisions(default, f32, "cuda") == [[]]  # DEFAULT prints as no attribute
    bf16 = (jax.ShapeDtypeStruct(xs, jnp.bfloat16), jax.ShapeDtypeStruct(ws, jnp.bfloat16))
    assert _conv_precisions(fwd, bf16, "cuda") == [[]]


@pytest.mark.parametrize("dilation", [1, 2], ids=["phase_conv", "dilated_transpose"])
def test_auto_conv_transpose_asks_for_full_float32_precision_off_cpu(dilation):
    # the dilated transposed conv runs as the transpose of lax's forward conv, not through
    # conv's dispatch: the same promise must hold on that path
    y = jax.ShapeDtypeStruct((2, 6, 6, 4), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    f = lambda y, w: jaxconv.conv_transpose(y, w, stride=2, dilation=dilation)
    precisions = _conv_precisions(f, (y, w), "cuda")
    assert precisions and all(p == ["HIGHEST", "HIGHEST"] for p in precisions)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "groups", "stride", "want", "want_tuned"),
    [((16, 32, 32, 64), (3, 3, 4, 64), 16, 1, ("shift_add", "shift_add", "im2col"),
      ("shift_add", "shift_add", "xla")),
     ((16, 32, 32, 64), (3, 3, 2, 64), 32, 1, ("shift_add", "shift_add", "im2col"),
      ("shift_add", "shift_add", "xla")),
     ((16, 32, 32, 32), (3, 3, 4, 32), 8, 1, ("im2col", "shift_add", "im2col"),
      ("im2col", "shift_add", "xla")),
     ((16, 32, 32, 64), (5, 5, 4, 64), 16, 1, ("shift_add", "shift_add", "im2col"),
      ("shift_add", "shift_add", "xla")),
     # strided: shift_add's input gradient is slow there, so im2col takes it
     ((16, 32, 32, 32), (3, 3, 4, 32), 8, 2, ("im2col", "im2col", "im2col"),
      ("im2col", "xla", "xla")),
     # 8 input channels per group: im2col's forward, not rows' (grouped 1-D conv lost)
     ((16, 32, 32, 64), (3, 3, 8, 64), 8, 1, ("im2col", "im2col", "im2col"), ("xla",) * 3),
     # 1-D grouped convs reach Eigen under both option sets: no grouped rule
     ((16, 512, 64), (5, 4, 64), 16, 1, ("xla",) * 3, ("xla",) * 3)],
    ids=["3x3_g16_4", "3x3_g32_2", "3x3_g8_4", "5x5_g16_4", "3x3_g8_4_s2", "3x3_g8_8", "1d_g16"],
)
def test_plan_grouped_convs_with_few_channels_per_group(x_shape, w_shape, groups, stride,
                                                        want, want_tuned):
    """Grouped 2-D convs with few channels per group avoid XLA:CPU's slow grouped
    convolution (YNNPACK under the default options; Eigen's forward and input gradient under
    compiler_options()): NOTES.md, benchmarks/plan_grouped_results.json."""
    kwargs = dict(groups=groups, stride=stride, padding="SAME", backend="cpu")
    p = plan(x_shape, w_shape, **kwargs)
    assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == want
    p = plan(x_shape, w_shape, compiler_options=jaxconv.compiler_options(), **kwargs)
    assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == want_tuned
    if p.algorithm != "xla" and p.algorithm != "rows":
        assert "grouped" in p.reason


@pytest.mark.parametrize(("groups", "c_group", "stride"), [(16, 2, 1), (4, 4, 1), (4, 3, 2)],
                         ids=["g16_shift_add", "g4_im2col", "g4_strided"])
def test_auto_grouped_conv_and_its_gradients_match_lax(groups, c_group, stride):
    """The planned grouped lowerings (each part its own) are the exact conv and derivative:
    value, both gradients under jit, and under vmap, against lax."""
    rng = np.random.default_rng(groups)
    cin, cout = groups * c_group, groups * 2
    x = jnp.asarray(rng.normal(size=(2, 3, 9, 9, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_group, cout)), jnp.float32)
    p = plan(x.shape[1:], w.shape, groups=groups, stride=stride, padding="SAME", backend="cpu")
    assert "xla" not in (p.algorithm, p.input_grad.algorithm)  # the hazard is exercised

    def ours(x, w):
        return jnp.sum(jnp.sin(jaxconv.conv(x, w, groups=groups, stride=stride,
                                            padding="SAME")))

    def theirs(x, w):
        y = lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups,
                                     precision=lax.Precision.HIGHEST)
        return jnp.sum(jnp.sin(y))

    with jax.default_matmul_precision("highest"):
        got = jax.jit(jax.vmap(jax.value_and_grad(ours, argnums=(0, 1)),
                               in_axes=(0, None)))(x, w)
        want = jax.vmap(jax.value_and_grad(theirs, argnums=(0, 1)), in_axes=(0, None))(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), [
    ((8, 16, 16, 16, 4), (3, 3, 3, 4, 16), {"padding": "SAME"}),
    ((8, 16, 16, 16, 8), (3, 3, 3, 8, 16), {"padding": "SAME"}),
    ((4, 16, 16, 16, 32), (3, 3, 3, 32, 32), {"stride": 2}),
    ((4, 10, 10, 10, 32), (3, 3, 3, 4, 32), {"padding": "SAME", "groups": 8}),
], ids=["4to16", "8to16", "32to32_s2", "g8"])
def test_plan_3d_hidden_layers_on_im2col_under_both_option_sets(x_shape, w_shape, kwargs):
    """XLA:CPU has no fast 3-D convolution: 2-18x behind im2col's GEMMs on every part
    (NOTES.md). Before, auto ran xla for 4-7 input channels, and for every 3-D conv with 4+
    under compiler_options(), i.e. inside fit."""
    for options in (None, jaxconv.compiler_options()):
        p = plan(x_shape, w_shape, backend="cpu", compiler_options=options, **kwargs)
        assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == ("im2col",) * 3
        assert "3-D" in p.reason and "no fast 3-D" in p.input_grad.reason
