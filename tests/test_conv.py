"""Tests for jaxconv.conv: conv, conv_transpose and the scipy-style 2-D filters, against the
numpy oracle in _reference.py and scipy.signal; plus jit/vmap/grad, dtypes, HLO, errors."""

import collections
import functools
import re

import _reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import jaxconv

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
PAD_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")


@pytest.fixture(autouse=True)
def _highest_precision():
    # float32 comparisons at 1e-4 need true float32 products on every backend (no TF32/bf16
    # passes on GPU/TPU); the planner still sees precision=None and picks its lowering.
    with jax.default_matmul_precision("highest"):
        yield


def _channels_first(layout):
    return layout is not None and not layout.upper().endswith("C")


def make_inputs(rng, *, n, batch, sizes, cin, cout, ksize, groups, layout=None):
    """Random x and w for ``conv`` in ``layout`` (float32)."""
    x = rng.standard_normal((batch, *sizes, cin)).astype(np.float32)
    w = rng.standard_normal((*ksize, cin // groups, cout)).astype(np.float32)
    if _channels_first(layout):
        x, w = ref.x_to_channels_first(x), ref.w_to_channels_first(w)
    return x, w


def assert_close(got, want, rtol=1e-4):
    """float32 result vs float64 oracle: relative, with an atol scaled to the result."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def check_vs_reference(x, w, *, auto=False, **options):
    """conv vs the oracle. By default through ``algorithm="xla"`` (a single lax conv, cheap
    to compile eagerly); ``auto=True`` runs the planner's choice of lowering, under jit."""
    if auto:
        got = jax.jit(functools.partial(jaxconv.conv, **options))(x, w)
    else:
        got = jaxconv.conv(x, w, precision="highest", **{"algorithm": "xla", **options})
    assert got.dtype == jnp.float32
    options.pop("algorithm", None)
    assert_close(got, ref.conv(x, w, **options))


# --- the oracle itself -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3], ids=lambda n: f"{n}d")
def test_reference_matches_scipy(n, rng):
    """The oracle agrees with scipy.signal.correlate (single channel, VALID and FULL)."""
    x = rng.standard_normal((1, *[6] * n, 1))
    w = rng.standard_normal((*[3] * n, 1, 1))
    for padding, mode in (("VALID", "valid"), ("FULL", "full")):
        got = ref.conv(x, w, padding=padding)[0, ..., 0]
        want = scipy.signal.correlate(x[0, ..., 0], w[..., 0, 0], mode=mode, method="direct")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reference_transpose_is_adjoint(rng):
    """<conv(x), y> == <x, conv_transpose(y)> holds inside the oracle, strides and groups."""
    x = rng.standard_normal((2, 9, 8, 4))
    w = rng.standard_normal((3, 2, 2, 6))
    opts = dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)
    y = rng.standard_normal(ref.conv(x, w, **opts).shape)
    lhs = np.vdot(ref.conv(x, w, **opts), y)
    xt = ref.conv_transpose(y, w, output_padding=(1, 0), **opts)
    assert xt.shape == x.shape
    np.testing.assert_allclose(lhs, np.vdot(x, xt), rtol=1e-12)


# --- conv: parametrized grids ----------------------------------------------------------------


@pytest.mark.parametrize(
    "padding",
    [*STRINGS, "same", "Full", 0, 2, (1, 2), ((0, 2), (1, 0)), [(3, 1), 0]],
    ids=[*STRINGS, "same_lc", "full_mc", "int0", "int2", "per_dim", "pairs", "mixed"],
)
@pytest.mark.parametrize("stride", [1, 2, (1, 3)], ids=["s1", "s2", "s13"])
@pytest.mark.parametrize("dilation", [1, (2, 1)], ids=["d1", "d21"])
def test_conv_padding_grid(padding, stride, dilation, rng):
    x, w = make_inputs(rng, n=2, batch=2, sizes=(9, 8), cin=3, cout=4, ksize=(3, 2), groups=1)
    check_vs_reference(x, w, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("n", [1, 2, 3], ids=lambda n: f"{n}d")
@pytest.mark.parametrize("layout_kind", ["default", "last", "first"])
@pytest.mark.parametrize("groups", [1, 4], ids=lambda g: f"g{g}")
@pytest.mark.slow
def test_conv_layout_groups_grid(n, layout_kind, groups, rng):
    layout = {"default": None, "last": LAYOUTS[n][0], "first": LAYOUTS[n][1]}[layout_kind]
    sizes = (7, 6, 5)[:n]
    ksize = (3, 2, 3)[:n]
    x, w = make_inputs(
        rng, n=n, batch=2, sizes=sizes, cin=4, cout=8, ksize=ksize, groups=groups, layout=layout
    )
    check_vs_reference(x, w, groups=groups, layout=layout, padding="SAME", stride=2)


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize(
    ("padding", "layout"),
    [("SAME", None), ("FULL", "NCHW"), (((0, 3), (2, 1)), "NCHW")],
    ids=["SAME-NHWC", "FULL-NCHW", "pairs-NCHW"],
)
@pytest.mark.slow
def test_conv_pad_mode_grid(pad_mode, padding, layout, rng):
    x, w = make_inputs(
        rng, n=2, batch=1, sizes=(6, 5), cin=2, cout=3, ksize=(3, 4), groups=1, layout=layout
    )
    check_vs_reference(x, w, padding=padding, pad_mode=pad_mode, layout=layout)


@pytest.mark.slow
def test_strings_case_insensitive(rng):
    """padding, pad_mode and layout strings are case-insensitive."""
    x, w = make_inputs(rng, n=2, batch=1, sizes=(6, 5), cin=2, cout=2, ksize=(3, 2), groups=1,
                       layout="NCHW")
    opts = dict(padding="same_lower", pad_mode="Circular", layout="nchw", precision="highest")
    got = jaxconv.conv(x, w, **opts)
    want = jaxconv.conv(
        x, w, padding="SAME_LOWER", pad_mode="circular", layout="NCHW", precision="highest"
    )
    np.testing.assert_array_equal(got, want)
    assert_close(got, ref.conv(x, w, padding="SAME_LOWER", pad_mode="circular", layout="NCHW"))


@pytest.mark.parametrize("n", [1, 2, 3], ids=lambda n: f"{n}d")
@pytest.mark.parametrize("layout_kind", ["last", "first"])
@pytest.mark.slow
def test_conv_flip(n, layout_kind, rng):
    """flip=True is a true convolution: the kernel reversed on every spatial axis."""
    layout = LAYOUTS[n][0 if layout_kind == "last" else 1]
    x, w = make_inputs(
        rng, n=n, batch=1, sizes=(6, 5, 4)[:n], cin=2, cout=2, ksize=(3, 2, 2)[:n], groups=1,
        layout=layout,
    )
    check_vs_reference(x, w, flip=True, layout=layout, padding="FULL")
    if n == 1 and layout == "NWC":
        want = np.convolve(x[0, :, 0], w[:, 0, 0]) + np.convolve(x[0, :, 1], w[:, 1, 0])
        np.testing.assert_allclose(
            jaxconv.conv(x, w, flip=True, padding="FULL")[0, :, 0], want, rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_conv_single_channel_cross(rng):
    """The 3x3 cross on one channel (the shift-and-add shape) vs scipy."""
    x = rng.standard_normal((4, 12, 12, 1)).astype(np.float32)
    k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)
    got = jax.jit(functools.partial(jaxconv.conv, padding="SAME"))(x, k[:, :, None, None])
    for b in range(4):
        want = scipy.signal.correlate2d(x[b, :, :, 0], k, mode="same")
        np.testing.assert_allclose(got[b, :, :, 0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_conv_4d_smoke(rng):
    x, w = make_inputs(
        rng, n=4, batch=2, sizes=(5, 4, 4, 3), cin=2, cout=3, ksize=(2, 2, 3, 2), groups=1
    )
    check_vs_reference(x, w, stride=(1, 2, 1, 1), padding="SAME", dilation=(2, 1, 1, 1))
    check_vs_reference(x, w, padding=1, pad_mode="circular", flip=True)


@pytest.mark.parametrize(
    "case",
    [
        dict(sizes=(16, 16), cin=1, cout=1, ksize=(3, 3)),
        dict(sizes=(16, 16), cin=1, cout=2, ksize=(5, 5)),
        dict(sizes=(12, 10), cin=3, cout=4, ksize=(3, 3)),
    ],
    ids=["cross_1ch", "1ch_to_2", "rgb"],
)
@pytest.mark.slow
def test_conv_auto(case, rng):
    """Shapes the planner sends to different lowerings, vs the oracle."""
    x, w = make_inputs(rng, n=2, batch=3, groups=1, **case)
    check_vs_reference(x, w, padding="SAME", auto=True)


# --- conv: hypothesis ------------------------------------------------------------------------


def _paddings(n):
    pair = st.tuples(st.integers(0, 2), st.integers(0, 2))
    return st.one_of(
        st.sampled_from([*STRINGS, "same", "causal"]),
        st.integers(0, 2),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(pair, min_size=n, max_size=n),
        st.lists(st.one_of(st.integers(0, 2), pair), min_size=n, max_size=n),
    )


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    per_dim = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    groups = draw(st.integers(1, 3))
    case = dict(
        n=n,
        batch=draw(st.integers(1, 2)),
        sizes=tuple(draw(per_dim(1, 8))),
        cin=groups * draw(st.integers(1, 2)),
        cout=groups * draw(st.integers(1, 2)),
        ksize=tuple(draw(per_dim(1, 3))),
        groups=groups,
        layout=draw(st.sampled_from([None, *LAYOUTS[n]])),
    )
    options = dict(
        stride=draw(st.one_of(st.integers(1, 3), per_dim(1, 3).map(tuple))),
        dilation=draw(st.one_of(st.integers(1, 2), per_dim(1, 2).map(tuple))),
        padding=draw(_paddings(n)),
        pad_mode=draw(st.sampled_from(PAD_MODES)),
        flip=draw(st.booleans()),
        groups=groups,
        layout=case["layout"],
    )
    return case, options, draw(st.integers(0, 2**16))


def _expected_error(case, options):
    """The ValueError conv must raise for this case, as a regex, or None."""
    n = case["n"]
    per = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    dilation = per(options["dilation"])
    k_eff = [ref.effective_size(k, d) for k, d in zip(case["ksize"], dilation, strict=True)]
    pairs = ref.padding_pairs(options["padding"], case["sizes"], k_eff, per(options["stride"]))
    for size, k, (lo, hi) in zip(case["sizes"], k_eff, pairs, strict=True):
        if k > size + lo + hi:
            return r"larger than the padded input"
    mode = options["pad_mode"]
    for size, (lo, hi) in zip(case["sizes"], pairs, strict=True):
        if (mode == "reflect" and max(lo, hi) >= size) or (
            mode in ("circular", "symmetric") and max(lo, hi) > size
        ):
            return rf"{mode} padding"
    return None


def _check_case(args, auto):
    case, options, seed = args
    x, w = make_inputs(np.random.default_rng(seed), **case)
    error = _expected_error(case, options)
    if error is not None:
        with pytest.raises(ValueError, match=r"^conv: .*" + error):
            jaxconv.conv(x, w, **options)
        return
    check_vs_reference(x, w, auto=auto, **options)


@SETTINGS
@given(conv_cases())
@pytest.mark.slow
def test_conv_property(args):
    _check_case(args, auto=False)


@settings(SETTINGS, max_examples=10)
@given(conv_cases())
@pytest.mark.slow
def test_conv_property_auto(args):
    """The same space through the planner's lowerings (jit: one compile per case)."""
    _check_case(args, auto=True)


# --- conv_transpose --------------------------------------------------------------------------


@st.composite
def transpose_cases(draw):
    n = draw(st.integers(1, 3))
    per_dim = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    groups = draw(st.integers(1, 2))
    stride = tuple(draw(per_dim(1, 3)))
    pair = st.tuples(st.integers(0, 2), st.integers(0, 2))
    padding = draw(
        st.one_of(
            # "SAME"/"VALID" follow lax (they set output_padding): test_conv_transpose_padding.py
            st.sampled_from(["FULL", "CAUSAL", "full"]),
            st.integers(0, 2),
            st.lists(st.one_of(st.integers(0, 2), pair), min_size=n, max_size=n),
        )
    )
    case = dict(
        n=n,
        batch=draw(st.integers(1, 2)),
        sizes=tuple(draw(per_dim(1, 5))),  # y's spatial sizes
        cin=groups * draw(st.integers(1, 2)),
        cout=groups * draw(st.integers(1, 2)),
        ksize=tuple(draw(per_dim(1, 3))),
        groups=groups,
        layout=draw(st.sampled_from([None, *LAYOUTS[n]])),
    )
    options = dict(
        stride=stride,
        padding=padding,
        output_padding=tuple(draw(st.integers(0, s - 1)) for s in stride),
        dilation=draw(st.one_of(st.integers(1, 2), per_dim(1, 2).map(tuple))),
        groups=groups,
        layout=case["layout"],
    )
    return case, options, draw(st.integers(0, 2**16))


def _transpose_out_sizes(case, options):
    """The documented shape formula, from the oracle's padding pairs."""
    n = case["n"]
    dil = options["dilation"]
    dil = (dil,) * n if isinstance(dil, int) else dil
    k_eff = [ref.effective_size(k, d) for k, d in zip(case["ksize"], dil, strict=True)]
    pairs = ref.padding_pairs(options["padding"], case["sizes"], k_eff, options["stride"])
    return [
        (ny - 1) * s - lo - hi + k + op
        for ny, s, (lo, hi), k, op in zip(
            case["sizes"], options["stride"], pairs, k_eff, options["output_padding"], strict=True
        )
    ]


@settings(SETTINGS, max_examples=20)
@given(transpose_cases())
@pytest.mark.slow
def test_conv_transpose_adjoint(args):
    """<conv(x, w), y> == <x, conv_transpose(y, w)>, with the shape formula and the oracle."""
    case, options, seed = args
    rng = np.random.default_rng(seed)
    cf = _channels_first(case["layout"])
    batch, cin, cout = case["batch"], case["cin"], case["cout"]
    y = rng.standard_normal((batch, *case["sizes"], cout)).astype(np.float32)
    w = rng.standard_normal((*case["ksize"], cin // case["groups"], cout)).astype(np.float32)
    if cf:
        y, w = ref.x_to_channels_first(y), ref.w_to_channels_first(w)
    out_sizes = _transpose_out_sizes(case, options)
    if min(out_sizes) < 1:
        with pytest.raises(ValueError, match=r"^conv_transpose: padding .* is too large"):
            jaxconv.conv_transpose(y, w, **options)
        return
    x_shape = (batch, cin, *out_sizes) if cf else (batch, *out_sizes, cin)
    x = rng.standard_normal(x_shape).astype(np.float32)
    conv_options = {k: v for k, v in options.items() if k != "output_padding"}

    @jax.jit  # one compile for both ops (eager conv_transpose compiles op by op)
    def both(x, y):
        return jaxconv.conv(x, w, **conv_options), jaxconv.conv_transpose(y, w, **options)

    fx, xt = both(x, y)
    assert xt.shape == x_shape
    assert_close(xt, ref.conv_transpose(y, w, **options))
    assert fx.shape == y.shape
    lhs = np.vdot(np.asarray(fx, np.float64), y.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), np.asarray(xt, np.float64))
    scale = np.abs(np.asarray(fx)).sum() * np.abs(y).max() + 1.0
    assert abs(lhs - rhs) <= 1e-5 * scale


@pytest.mark.parametrize(
    ("y_shape", "w_shape", "options", "want"),
    [
        ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2), (1, 9, 9, 2)),
        ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2, padding=1, output_padding=1), (1, 8, 8, 2)),
        ((2, 8, 5, 5), (8, 3, 3, 3), dict(stride=2, padding=1, layout="NCHW"), (2, 3, 9, 9)),
        ((2, 8, 5), (8, 2, 3), dict(groups=2, dilation=2, layout="NCW"), (2, 4, 9)),
        ((1, 5, 6), (4, 1, 6), dict(padding="FULL"), (1, 2, 1)),
        ((1, 5, 6), (4, 1, 6), dict(padding="causal", stride=2), (1, 9, 1)),
    ],
    ids=["doc", "torch_same", "nchw", "groups_dilation", "full", "causal"],
)
@pytest.mark.slow
def test_conv_transpose_shape(y_shape, w_shape, options, want, rng):
    y = rng.standard_normal(y_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    got = jaxconv.conv_transpose(y, w, **options)
    assert got.shape == want
    assert_close(got, ref.conv_transpose(y, w, **options))


@pytest.mark.slow
def test_conv_transpose_output_padding_below_dilation(rng):
    """torch allows output_padding < max(stride, dilation); with stride 1 the extra row is
    beyond every window, so it only receives what the scatter puts there."""
    y = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 2)).astype(np.float32)  # (out, in, kh, kw)
    options = dict(stride=1, dilation=(3, 2), output_padding=(2, 1), layout="NCHW")
    got = jaxconv.conv_transpose(y, w, **options)
    assert got.shape == (2, 3, (3 - 1) + 7 + 2, (4 - 1) + 3 + 1)
    assert_close(got, ref.conv_transpose(y, w, **options))


@pytest.mark.slow
def test_conv_transpose_is_vjp(rng):
    """conv_transpose equals the input-gradient of conv (the definition torch uses)."""
    x = rng.standard_normal((2, 11, 10, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    opts = dict(stride=2, padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    y, vjp = jax.vjp(lambda x: jaxconv.conv(x, w, **opts), x)
    ct = rng.standard_normal(y.shape).astype(np.float32)
    (want,) = vjp(ct)
    got = jaxconv.conv_transpose(ct, w, output_padding=(1, 0), **opts)
    assert_close(got, want)


@pytest.mark.parametrize("dilation", [1, 2])
def test_conv_transpose_passes_precision_to_lax(dilation):
    # (this module's tests run under default_matmul_precision("highest"): ask for HIGH)
    y, w = jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 2, 8))
    high = re.compile(r"\bHIGH\b")
    f = functools.partial(jaxconv.conv_transpose, w=w, dilation=dilation, algorithm="xla")
    jaxpr = str(jax.make_jaxpr(lambda y: f(y, precision=lax.Precision.HIGH))(y))
    assert high.search(jaxpr)
    assert not high.search(str(jax.make_jaxpr(lambda y: f(y))(y)))


# --- gradients (float64) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [
        ("xla", dict(padding=((1, 0), (2, 1)), pad_mode="reflect", flip=True, dilation=(2, 1),
                     groups=2, layout="NCHW")),
        ("auto", dict(padding=1, stride=(2, 1), groups=2, pad_mode="circular")),
    ],
    ids=["xla-nchw_reflect_flip_groups_dilation", "auto-circular_stride_groups"],
)
@pytest.mark.slow
def test_conv_grads(options, algorithm, rng):
    with jax.enable_x64(True):
        cf = _channels_first(options.get("layout"))
        x, w = make_inputs(
            rng, n=2, batch=1, sizes=(4, 4), cin=2, cout=2, ksize=(2, 2),
            groups=options.get("groups", 1), layout="NCHW" if cf else None,
        )
        x, w = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
        f = jax.jit(functools.partial(jaxconv.conv, algorithm=algorithm, **options))
        assert f(x, w).dtype == jnp.float64
        check_grads(f, (x, w), order=2, modes=["rev"])


@pytest.mark.parametrize(
    "options",
    [
        dict(stride=(2, 1), padding=((0, 1), (1, 0)), output_padding=(1, 0), dilation=2,
             groups=2, layout="NCHW"),
    ],
    ids=["nchw_groups_output_padding"],
)
@pytest.mark.slow
def test_conv_transpose_grads(options, rng):
    with jax.enable_x64(True):
        cf = _channels_first(options.get("layout"))
        y = rng.standard_normal((1, 2, 3, 3) if cf else (1, 3, 3, 2))
        w = rng.standard_normal((2, 2 // options.get("groups", 1), 3, 2) if cf else (3, 2, 2, 2))
        y, w = jnp.asarray(y, jnp.float64), jnp.asarray(w, jnp.float64)
        f = jax.jit(functools.partial(jaxconv.conv_transpose, **options))
        assert f(y, w).dtype == jnp.float64
        assert_close(f(y, w), ref.conv_transpose(y, w, **options), rtol=1e-10)
        check_grads(f, (y, w), order=2, modes=["rev"])


@pytest.mark.slow
def test_conv_float64(rng):
    with jax.enable_x64(True):
        x, w = make_inputs(rng, n=2, batch=2, sizes=(7, 6), cin=4, cout=4, ksize=(3, 3), groups=2)
        x, w = x.astype(np.float64), w.astype(np.float64)
        opts = dict(stride=2, padding="SAME_LOWER", groups=2, dilation=(1, 2))
        got = jax.jit(functools.partial(jaxconv.conv, **opts))(x, w)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, ref.conv(x, w, **opts), rtol=1e-12, atol=1e-12)


# --- transformations -------------------------------------------------------------------------


@pytest.mark.slow
def test_jit_matches_eager(rng):
    options = dict(padding=((1, 0), (0, 2)), stride=2, dilation=(2, 1), groups=2, layout="NCHW",
                   pad_mode="symmetric", flip=True)
    x, w = make_inputs(
        rng, n=2, batch=2, sizes=(8, 7), cin=4, cout=4, ksize=(3, 3), groups=2, layout="NCHW"
    )
    eager = jaxconv.conv(x, w, **options)
    jitted = jax.jit(functools.partial(jaxconv.conv, **options))(x, w)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    y = np.ones_like(np.asarray(eager))
    t_opts = {k: v for k, v in options.items() if k not in ("pad_mode", "flip")}
    np.testing.assert_allclose(
        jax.jit(functools.partial(jaxconv.conv_transpose, **t_opts))(y, w),
        jaxconv.conv_transpose(y, w, **t_opts),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.slow
def test_vmap_matches_loop(rng):
    xs = rng.standard_normal((3, 2, 7, 6, 2)).astype(np.float32)
    ws = rng.standard_normal((4, 3, 3, 2, 3)).astype(np.float32)
    f = jax.jit(functools.partial(jaxconv.conv, padding="SAME", stride=(2, 1)))
    # over x (an extra leading batch axis)
    got = jax.vmap(f, in_axes=(0, None))(xs, ws[0])
    for i in range(3):
        np.testing.assert_allclose(got[i], f(xs[i], ws[0]), rtol=1e-6, atol=1e-6)
    # over w (independent restarts), under jit
    got = jax.jit(jax.vmap(f, in_axes=(None, 0)))(xs[0], ws)
    for i in range(4):
        np.testing.assert_allclose(got[i], f(xs[0], ws[i]), rtol=1e-6, atol=1e-6)
    # conv_transpose over y
    g = jax.jit(functools.partial(jaxconv.conv_transpose, stride=2, padding=1, output_padding=1))
    ys = rng.standard_normal((3, 2, 4, 4, 3)).astype(np.float32)
    got = jax.vmap(g, in_axes=(0, None))(ys, ws[0])
    for i in range(3):
        np.testing.assert_allclose(got[i], g(ys[i], ws[0]), rtol=1e-6, atol=1e-6)


# --- dtypes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "tol", "cin"),
    [(jnp.bfloat16, 3e-2, 1), (jnp.float16, 3e-3, 4)],
    ids=["bf16-1ch", "f16-4ch"],
)
@pytest.mark.slow
def test_low_precision(dtype, tol, cin, rng):
    x, w = make_inputs(rng, n=2, batch=2, sizes=(10, 10), cin=cin, cout=2, ksize=(3, 3), groups=1)
    x16, w16 = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    got = jax.jit(functools.partial(jaxconv.conv, padding="SAME"))(x16, w16)
    assert got.dtype == dtype
    # the oracle on the same (rounded) inputs isolates the conv's own accumulation error
    want = ref.conv(np.asarray(x16, np.float64), np.asarray(w16, np.float64), padding="SAME")
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=tol * scale)
    t = jaxconv.conv_transpose(got, w16, padding=1)
    assert t.dtype == dtype and t.shape == x.shape


def test_mixed_dtypes_promote(rng):
    x, w = make_inputs(rng, n=1, batch=1, sizes=(6,), cin=1, cout=1, ksize=(3,), groups=1)
    conv = functools.partial(jax.eval_shape, jaxconv.conv)
    assert conv(x, jnp.asarray(w, jnp.bfloat16)).dtype == jnp.float32
    assert conv(jnp.asarray(x, jnp.float16), jnp.asarray(w, jnp.float16)).dtype == jnp.float16
    assert conv(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.float16)).dtype == jnp.float32


# --- HLO -------------------------------------------------------------------------------------


def _ops(text):
    """Multiset of MLIR op names (dialect.op) in a lowered module's text."""
    return collections.Counter(re.findall(r"\b(?:stablehlo|func|chlo|mhlo)\.[a-z_]+\b", text))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.slow
def test_hlo_is_one_convolution(dtype):
    # 4 input channels (above shift_add's and im2col's few-channel rules, which take <= 3) and
    # 288 multiply-adds per pixel (above shift_add's 150 for many channels)
    x = jnp.zeros((2, 8, 8, 4), dtype)
    w = jnp.zeros((3, 3, 4, 8), dtype)
    ours = jax.jit(lambda x, w: jaxconv.conv(x, w, algorithm="xla")).lower(x, w).as_text()
    raw = jax.jit(
        lambda x, w: lax.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    ).lower(x, w).as_text()
    assert _ops(ours)["stablehlo.convolution"] == 1
    assert _ops(ours) == _ops(raw)
    # the default (auto) is the same single convolution wherever the planner picks xla
    assert jaxconv.plan(x.shape, w.shape, dtype=dtype).algorithm == "xla"
    auto = jax.jit(lambda x, w: jaxconv.conv(x, w)).lower(x, w).as_text()
    assert _ops(auto) == _ops(raw)


# --- correlate2d / convolve2d vs scipy -------------------------------------------------------


FILTERS = {"correlate2d": scipy.signal.correlate2d, "convolve2d": scipy.signal.convolve2d}


@pytest.mark.parametrize("op", sorted(FILTERS))
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize(
    ("in_shape", "k_shape"),
    [((7, 8), (3, 4)), ((3, 4), (6, 7))],
    ids=["odd_even", "k_larger"],
)
@pytest.mark.slow
def test_filter2d_vs_scipy(op, mode, boundary, in_shape, k_shape, rng):
    a = rng.standard_normal(in_shape).astype(np.float32)
    k = rng.standard_normal(k_shape).astype(np.float32)
    want = FILTERS[op](a.astype(np.float64), k.astype(np.float64), mode=mode, boundary=boundary)
    got = jax.jit(functools.partial(getattr(jaxconv, op), mode=mode, boundary=boundary))(a, k)
    assert got.dtype == jnp.float32
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("op", sorted(FILTERS))
@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.slow
def test_filter2d_fillvalue(op, mode, rng):
    a = rng.standard_normal((5, 6)).astype(np.float32)
    k = rng.standard_normal((3, 4)).astype(np.float32)
    want = FILTERS[op](a, k, mode=mode, boundary="fill", fillvalue=2.5)
    assert_close(getattr(jaxconv, op)(a, k, mode=mode, fillvalue=2.5), want, rtol=1e-5)


@pytest.mark.parametrize("op", sorted(FILTERS))
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.slow
def test_filter2d_grad_wrt_fillvalue_alone(op, mode, rng):
    """Issue 14: jax.grad w.r.t. fillvalue alone raised a raw TypeError from lax.pad's
    transpose. The output is linear in fillvalue with slope scipy's filter of a zero image
    filled with 1; checked against that, the joint grad and a float64 central difference."""
    a = rng.standard_normal((5, 6)).astype(np.float32)
    k = rng.standard_normal((3, 4)).astype(np.float32)
    out_shape = FILTERS[op](a, k, mode=mode).shape
    ct = rng.standard_normal(out_shape).astype(np.float32)
    f = getattr(jaxconv, op)

    def loss(a, fill):
        return jnp.sum(f(a, k, mode=mode, fillvalue=fill) * ct)

    slope = FILTERS[op](np.zeros_like(a, np.float64), k.astype(np.float64), mode=mode,
                        boundary="fill", fillvalue=1.0)
    want = float(np.sum(slope * ct))
    alone = jax.grad(lambda fill: loss(a, fill))(0.7)
    jit_alone = jax.jit(jax.grad(lambda fill: loss(a, fill)))(0.7)
    _, joint = jax.grad(loss, argnums=(0, 1))(a, 0.7)
    np.testing.assert_allclose([alone, jit_alone], [joint, joint], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(alone, want, rtol=1e-5, atol=1e-5)
    with jax.enable_x64(True):
        a64, h = a.astype(np.float64), 1e-3
        central = (loss(a64, 0.7 + h) - loss(a64, 0.7 - h)) / (2 * h)
        np.testing.assert_allclose(float(central), want, rtol=1e-9, atol=1e-9)
        assert jax.grad(lambda fill: loss(a64, fill))(0.7).dtype == jnp.float64
    if mode == "valid":
        assert want == 0.0  # no padding: the fill value is never read


@pytest.mark.parametrize("fill", [np.inf, -np.inf, np.nan], ids=["inf", "neg_inf", "nan"])
@pytest.mark.slow
def test_filter2d_non_finite_fillvalue_stays_in_the_border(fill, rng):
    """The fill value enters by a select, not a product with a mask: inf/nan reach exactly
    the outputs whose window covers padding, as in scipy."""
    a = rng.standard_normal((6, 5)).astype(np.float32)
    k = np.abs(rng.standard_normal((3, 3))).astype(np.float32) + 0.1
    want = scipy.signal.correlate2d(a, k, mode="same", fillvalue=fill)
    got = np.asarray(jaxconv.correlate2d(a, k, mode="same", fillvalue=fill))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])


@pytest.mark.parametrize("op", sorted(FILTERS))
@pytest.mark.slow
def test_filter2d_valid_swap(op, rng):
    """scipy's valid mode swaps the inputs when in2 is the larger one."""
    a = rng.standard_normal((3, 2)).astype(np.float32)
    k = rng.standard_normal((5, 4)).astype(np.float32)
    want = FILTERS[op](a, k, mode="valid")
    assert_close(getattr(jaxconv, op)(a, k, mode="valid"), want, rtol=1e-5)


@settings(SETTINGS, max_examples=20)
@given(
    op=st.sampled_from(sorted(FILTERS)),
    mode=st.sampled_from(["full", "same", "valid"]),
    boundary=st.sampled_from(["fill", "wrap", "symm"]),
    shapes=st.lists(st.integers(1, 7), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_filter2d_property(op, mode, boundary, shapes, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shapes[:2]).astype(np.float32)
    k = rng.standard_normal(shapes[2:]).astype(np.float32)
    f = jax.jit(functools.partial(getattr(jaxconv, op), mode=mode, boundary=boundary))
    try:
        want = FILTERS[op](a, k, mode=mode, boundary=boundary)
    except ValueError:
        with pytest.raises(ValueError, match=rf"^{op}: for 'valid' mode one input must be"):
            f(a, k)
        return
    assert_close(f(a, k), want, rtol=1e-5)


@pytest.mark.slow
def test_filter2d_jit_and_vmap(rng):
    a = rng.standard_normal((3, 6, 7)).astype(np.float32)
    k = rng.standard_normal((3, 3)).astype(np.float32)
    f = functools.partial(jaxconv.convolve2d, mode="same", boundary="symm")
    got = jax.jit(jax.vmap(f, in_axes=(0, None)))(a, k)
    for i in range(3):
        assert_close(got[i], scipy.signal.convolve2d(a[i], k, mode="same", boundary="symm"))


# --- errors ----------------------------------------------------------------------------------

X = np.zeros((2, 8, 8, 4), np.float32)
W = np.zeros((3, 3, 4, 6), np.float32)
X_CF = np.zeros((2, 4, 8, 8), np.float32)

CONV_ERRORS = [
    ("w_rank", X, np.zeros((3, 3), np.float32), {}, ValueError,
     r"^conv: w must have rank >= 3 .* got rank 2 with shape \(3, 3\)"),
    ("x_rank", np.zeros((2, 8, 8, 8, 4), np.float32), W, {}, ValueError,
     r"^conv: x must have rank 4 \(batch, 2 spatial, channels in layout NHWC\) .* got rank 5"),
    ("missing_batch", X[0], W, {}, ValueError,
     r"^conv: x must have rank 4 .* got rank 3 with shape \(8, 8, 4\); add a batch axis"),
    ("channels", np.zeros((2, 8, 8, 3), np.float32), W, {}, ValueError,
     r"^conv: x has 3 channels \(layout NHWC\) but w expects 4 \(w.shape\[2\] \* groups"),
    # issue 14: a kernel or data in the other layout convention gets a hint that fixes it
    ("torch_kernel", np.zeros((2, 8, 8, 1), np.float32), np.zeros((6, 1, 3, 3), np.float32), {},
     ValueError,
     r"^conv: x has 1 channels \(layout NHWC\) but w expects 3 .* for NHWC\. w \(shape \(6, 1, "
     r"3, 3\)\) looks like a channels-first \(O, I, kh, kw\) kernel; for NHWC input use \(kh, "
     r"kw, I, O\), e.g. jnp.transpose\(w, \(2, 3, 1, 0\)\)\.$"),
    ("torch_kernel_too_big", np.zeros((2, 8, 8, 3), np.float32),
     np.zeros((16, 3, 3, 3), np.float32), {}, ValueError,
     r"^conv: the kernel \(effective size 16 on spatial dim 0\) is larger than the padded input"
     r".* w \(shape \(16, 3, 3, 3\)\) looks like a channels-first .*jnp.transpose\(w, \(2, 3, 1, "
     r"0\)\)\.$"),
    ("torch_kernel_or_layout", np.zeros((2, 3, 8, 3), np.float32),
     np.zeros((6, 3, 3, 3), np.float32), {}, ValueError,
     r"^conv: the kernel \(effective size 6 on spatial dim 0\) .* jnp.transpose\(w, \(2, 3, 1, "
     r"0\)\), or pass layout='NCHW' if x is channels-first too\.$"),
    ("channels_first_data", np.zeros((2, 3, 8, 8), np.float32),
     np.zeros((16, 3, 3, 3), np.float32), {}, ValueError,
     r"^conv: x has 8 channels \(layout NHWC\) but w expects 3 .* x \(shape \(2, 3, 8, 8\)\) and "
     r"w \(shape \(16, 3, 3, 3\)\) look channels-first \(a \(O, I, kh, kw\) kernel\), not "
     r"channels-last as layout NHWC reads them; pass layout='NCHW'\.$"),
    ("hwio_kernel_nchw", X_CF, np.zeros((3, 3, 4, 6), np.float32), {"layout": "NCHW"},
     ValueError,
     r"^conv: x has 4 channels \(layout NCHW\) but w expects 3 .* w \(shape \(3, 3, 4, 6\)\) looks "
     r"like a channels-last \(kh, kw, I, O\) kernel; for NCHW input use \(O, I, kh, kw\), e.g. "
     r"jnp.transpose\(w, \(3, 2, 0, 1\)\)\.$"),
    ("torch_kernel_3d", np.zeros((1, 6, 6, 6, 2), np.float32),
     np.zeros((4, 2, 3, 3, 3), np.float32), {}, ValueError,
     r"looks like a channels-first \(O, I, kd, kh, kw\) kernel; for NDHWC input use \(kd, kh, kw, "
     r"I, O\), e.g. jnp.transpose\(w, \(2, 3, 4, 1, 0\)\)\.$"),
    ("channels_no_hint", np.zeros((2, 8, 8, 5), np.float32), W, {}, ValueError,
     r"^conv: x has 5 channels \(layout NHWC\) but w expects 4 \(w.shape\[2\] \* groups = 4 \* "
     r"1\); w is \(\*spatial, in_channels // groups, out_channels\) for NHWC\.$"),
    ("channels_first", X_CF, np.zeros((6, 2, 3, 3), np.float32), {"layout": "NCHW"}, ValueError,
     r"^conv: x has 4 channels \(layout NCHW\) but w expects 2 .* \(out_channels, in_channels"),
    ("layout_mismatch", X, np.zeros((6, 4, 3, 3), np.float32), {}, ValueError,
     r"^conv: x has 4 channels \(layout NHWC\) but w expects 3"),
    ("groups_in", np.zeros((2, 8, 8, 3), np.float32), np.zeros((3, 3, 1, 6), np.float32),
     {"groups": 2}, ValueError, r"^conv: in_channels \(=3\) must be divisible by groups \(=2\)"),
    ("groups_out", X, np.zeros((3, 3, 2, 5), np.float32), {"groups": 2}, ValueError,
     r"^conv: out_channels \(=5, w.shape\[3\]\) must be divisible by groups \(=2\)"),
    ("groups_zero", X, W, {"groups": 0}, ValueError,
     r"^conv: groups must be positive, got groups=0"),
    ("groups_float", X, W, {"groups": 2.0}, TypeError, r"^conv: groups must be an int, got 2.0"),
    ("kernel_too_big", X, np.zeros((9, 3, 4, 6), np.float32), {}, ValueError,
     r"^conv: the kernel \(effective size 9 on spatial dim 0\) is larger than the padded "
     r"input \(8 \+ 0 \+ 0 = 8\)"),
    ("dilated_too_big", X, W, {"dilation": (1, 4)}, ValueError,
     r"^conv: the kernel \(effective size 9 on spatial dim 1\)"),
    ("stride_zero", X, W, {"stride": 0}, ValueError,
     r"^conv: stride must be positive, got stride=0"),
    ("stride_neg_tuple", X, W, {"stride": (1, -2)}, ValueError,
     r"^conv: stride must be positive, got stride=\(1, -2\)"),
    ("dilation_zero", X, W, {"dilation": 0}, ValueError, r"^conv: dilation must be positive"),
    ("stride_len", X, W, {"stride": (1, 2, 3)}, ValueError,
     r"^conv: stride must be an int or a sequence of 2 ints \(one per spatial dim\), got 3 "
     r"values: \(1, 2, 3\)"),
    ("dilation_len", X, W, {"dilation": [2]}, ValueError,
     r"^conv: dilation must be an int or a sequence of 2 ints .* got 1 values"),
    ("stride_float", X, W, {"stride": 1.5}, TypeError,
     r"^conv: stride must be an int or a sequence of 2 ints, got 1.5"),
    ("padding_unknown", X, W, {"padding": "HALF"}, ValueError,
     r"^conv: unknown padding 'HALF'; expected one of 'VALID', 'SAME', 'SAME_LOWER', 'FULL', "
     r"'CAUSAL' \(case-insensitive\)"),
    ("padding_len", X, W, {"padding": (1, 1, 1)}, ValueError,
     r"^conv: padding must have one entry per spatial dim \(2\), got 3"),
    ("padding_negative", X, W, {"padding": -1}, ValueError,
     r"^conv: padding must be non-negative, got -1"),
    ("padding_negative_pair", X, W, {"padding": ((0, 0), (-1, 2))}, ValueError,
     r"^conv: padding must be non-negative"),
    ("pad_mode_unknown", X, W, {"pad_mode": "mirror", "padding": 1}, ValueError,
     r"^conv: unknown pad_mode 'mirror'; expected one of 'zeros', 'reflect', 'replicate', "
     r"'circular', 'symmetric'"),
    ("reflect_too_wide", np.zeros((1, 3, 8, 1), np.float32), np.zeros((3, 3, 1, 1), np.float32),
     {"padding": 3, "pad_mode": "reflect"}, ValueError,
     r"^conv: reflect padding \(3, 3\) must be smaller than the input size 3 on spatial dim 0"),
    ("circular_too_wide", np.zeros((1, 8, 2, 1), np.float32), np.zeros((3, 3, 1, 1), np.float32),
     {"padding": ((0, 0), (3, 0)), "pad_mode": "circular"}, ValueError,
     r"^conv: circular padding \(3, 0\) must be at most the input size 2 on spatial dim 1"),
    # issue 14: numpy's "Cannot apply 'edge' padding to empty axis" before
    ("replicate_empty_axis", np.zeros((1, 0, 8, 2), np.float32),
     np.zeros((1, 1, 2, 3), np.float32), {"padding": 1, "pad_mode": "replicate"}, ValueError,
     r"^conv: pad_mode='replicate' cannot pad spatial dim 0, which is empty \(size 0; padding "
     r"\(1, 1\)\)"),
    ("symmetric_empty_axis", np.zeros((1, 2, 8, 0), np.float32),
     np.zeros((3, 2, 1, 1), np.float32), {"padding": 1, "pad_mode": "symmetric",
                                           "layout": "NCHW"}, ValueError,
     r"^conv: pad_mode='symmetric' cannot pad spatial dim 1, which is empty"),
    ("layout_unknown", X, W, {"layout": "NHCW"}, ValueError,
     r"^conv: unknown layout 'NHCW' for 2 spatial dim\(s\); expected one of 'NHWC', 'NCHW' or "
     r"None"),
    ("layout_rank", X, W, {"layout": "NCW"}, ValueError,
     r"^conv: unknown layout 'NCW' for 2 spatial dim\(s\); expected one of 'NHWC', 'NCHW'"),
    ("layout_4d", np.zeros((1, 3, 3, 3, 3, 1), np.float32), np.zeros((1, 1, 1, 1, 1, 1),
     np.float32), {"layout": "NCDHW"}, ValueError,
     r"^conv: unknown layout 'NCDHW' for 4 spatial dim\(s\); expected None \(channels-last\)"),
    ("layout_type", X, W, {"layout": 1}, TypeError,
     r"^conv: layout must be a string or None, got int"),
    ("x_int", X.astype(np.int32), W, {}, TypeError,
     r"^conv: x must have a real floating dtype \(float32, float64, bfloat16, float16\), got "
     r"int32; cast it first"),
    ("w_int", X, W.astype(np.int8), {}, TypeError, r"^conv: w must have a real floating dtype"),
    ("x_complex", X.astype(np.complex64), W, {}, TypeError,
     r"^conv: x must have a real floating dtype .* got complex64"),
    ("x_bool", X.astype(bool), W, {}, TypeError, r"^conv: x must have a real floating dtype"),
    ("x_list", X.tolist(), W, {}, TypeError,
     r"^conv: x must be an array or a scalar \(jax.typing.ArrayLike\), got list; convert it"),
    ("w_none", X, None, {}, TypeError, r"^conv: w must be an array or a scalar .* got NoneType"),
    ("flip_type", X, W, {"flip": "yes"}, TypeError, r"^conv: flip must be a bool, got 'yes'"),
    ("algorithm_unknown", X, W, {"algorithm": "winograd"}, ValueError,
     r"^conv: unknown algorithm 'winograd'; expected one of 'auto', 'xla'"),
]


@pytest.mark.parametrize(
    ("x", "w", "options", "exc", "match"),
    [c[1:] for c in CONV_ERRORS],
    ids=[c[0] for c in CONV_ERRORS],
)
def test_conv_errors(x, w, options, exc, match):
    with pytest.raises(exc, match=match):
        jaxconv.conv(x, w, **options)


def test_conv_errors_under_jit():
    """Validation happens at trace time, so jit raises the same messages."""
    with pytest.raises(ValueError, match=r"^conv: in_channels \(=3\) must be divisible"):
        jax.jit(functools.partial(jaxconv.conv, groups=2))(
            np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 1, 1, 2), np.float32)
        )


Y = np.zeros((2, 4, 4, 6), np.float32)

TRANSPOSE_ERRORS = [
    ("w_rank", Y, np.zeros((3, 6), np.float32), {}, ValueError,
     r"^conv_transpose: w must have rank >= 3 .* got rank 2 with shape \(3, 6\)"),
    ("y_rank", Y[0], W, {}, ValueError,
     r"^conv_transpose: y must have rank 4 \(batch, 2 spatial, channels in layout NHWC\) .* "
     r"got rank 3 with shape \(4, 4, 6\); add a batch axis with y\[None\]"),
    ("channels", np.zeros((2, 4, 4, 5), np.float32), W, {}, ValueError,
     r"^conv_transpose: y has 5 channels \(layout NHWC\) but w has 6 out_channels "
     r"\(w.shape\[3\]\)"),
    ("groups", Y, np.zeros((3, 3, 4, 6), np.float32), {"groups": 4}, ValueError,
     r"^conv_transpose: out_channels \(=6\) must be divisible by groups \(=4\)"),
    ("torch_kernel", np.zeros((1, 4, 4, 16), np.float32), np.zeros((16, 3, 3, 3), np.float32),
     {}, ValueError,
     r"^conv_transpose: y has 16 channels \(layout NHWC\) but w has 3 out_channels .* w \(shape "
     r"\(16, 3, 3, 3\)\) looks like a channels-first \(O, I, kh, kw\) kernel; for NHWC input use "
     r"\(kh, kw, I, O\), e.g. jnp.transpose\(w, \(2, 3, 1, 0\)\)\.$"),
    ("channels_first_data", np.zeros((1, 4, 4, 6), np.float32), W, {"layout": "NCHW"},
     ValueError,
     r"^conv_transpose: y has 4 channels \(layout NCHW\) but w has 3 out_channels .* y \(shape "
     r"\(1, 4, 4, 6\)\) and w \(shape \(3, 3, 4, 6\)\) look channels-last .* pass "
     r"layout='NHWC'\.$"),
    ("groups_zero", Y, W, {"groups": 0}, ValueError,
     r"^conv_transpose: groups must be positive, got groups=0"),
    ("groups_float", Y, W, {"groups": 1.0}, TypeError,
     r"^conv_transpose: groups must be an int, got 1.0"),
    ("output_padding_eq_stride", Y, W, {"stride": 2, "output_padding": 2}, ValueError,
     r"^conv_transpose: output_padding \(\(2, 2\)\) must be smaller than stride \(\(2, 2\)\) or "
     r"dilation \(\(1, 1\)\)"),
    ("output_padding_stride1", Y, W, {"output_padding": (0, 1)}, ValueError,
     r"^conv_transpose: output_padding \(\(0, 1\)\) must be smaller"),
    ("output_padding_negative", Y, W, {"output_padding": -1}, ValueError,
     r"^conv_transpose: output_padding must be >= 0, got output_padding=-1"),
    ("same_output_padding", Y, W, {"padding": "SAME", "stride": 2, "output_padding": 1},
     ValueError, r"^conv_transpose: output_padding \(\(1, 1\)\) cannot be combined with "
     r"padding 'SAME', which sets the output size as lax\.conv_transpose does"),
    ("valid_output_padding", Y, W, {"padding": "valid", "stride": 2, "output_padding": (0, 1)},
     ValueError, r"^conv_transpose: output_padding \(\(0, 1\)\) cannot be combined with "
     r"padding 'valid'"),
    ("padding_unknown", Y, W, {"padding": "HALF"}, ValueError,
     r"^conv_transpose: unknown padding 'HALF'; expected one of 'VALID'"),
    ("padding_negative", Y, W, {"padding": -1}, ValueError,
     r"^conv_transpose: padding must be non-negative"),
    ("padding_too_large", Y, W, {"padding": 3}, ValueError,
     r"^conv_transpose: padding 3 is too large: the output would have spatial size \(0, 0\)"),
    ("stride_zero", Y, W, {"stride": 0}, ValueError, r"^conv_transpose: stride must be positive"),
    ("dilation_len", Y, W, {"dilation": (1, 1, 1)}, ValueError,
     r"^conv_transpose: dilation must be an int or a sequence of 2 ints"),
    ("layout_unknown", Y, W, {"layout": "CHWN"}, ValueError,
     r"^conv_transpose: unknown layout 'CHWN' .* expected one of 'NHWC', 'NCHW'"),
    ("y_int", Y.astype(np.int32), W, {}, TypeError,
     r"^conv_transpose: y must have a real floating dtype .* got int32"),
    ("w_complex", Y, W.astype(np.complex64), {}, TypeError,
     r"^conv_transpose: w must have a real floating dtype .* got complex64"),
]


@pytest.mark.parametrize(
    ("y", "w", "options", "exc", "match"),
    [c[1:] for c in TRANSPOSE_ERRORS],
    ids=[c[0] for c in TRANSPOSE_ERRORS],
)
def test_conv_transpose_errors(y, w, options, exc, match):
    with pytest.raises(exc, match=match):
        jaxconv.conv_transpose(y, w, **options)


A = np.zeros((5, 5), np.float32)
K = np.zeros((3, 3), np.float32)

FILTER_ERRORS = [
    ("in1_rank", np.zeros((1, 5, 5), np.float32), K, {}, ValueError,
     r"in1 must have rank 2 \(a plain 2-D array; batch with jax.vmap\), got rank 3 with shape "
     r"\(1, 5, 5\)"),
    ("in2_rank", A, np.zeros(3, np.float32), {}, ValueError, r"in2 must have rank 2 .* got rank 1"),
    ("mode", A, K, {"mode": "half"}, ValueError,
     r"unknown mode 'half'; expected one of 'full', 'valid', 'same'"),
    ("boundary", A, K, {"boundary": "reflect"}, ValueError,
     r"unknown boundary 'reflect'; expected one of 'fill', 'wrap', 'symm'"),
    ("valid_neither_larger", np.zeros((5, 2), np.float32), np.zeros((3, 3), np.float32),
     {"mode": "valid"}, ValueError,
     r"for 'valid' mode one input must be at least as large as the other in every dimension, "
     r"got shapes \(5, 2\) and \(3, 3\)"),
    ("empty", np.zeros((0, 5), np.float32), K, {}, ValueError,
     r"inputs must be non-empty, got shapes \(0, 5\) and \(3, 3\)"),
    ("int", A.astype(np.int64), K, {}, TypeError, r"in1 must have a real floating dtype"),
    ("fillvalue_complex", A, K, {"fillvalue": np.complex64(1j)}, TypeError,
     r"fillvalue must be a real scalar \(int or float\), got complex64"),
    ("fillvalue_np_bool", A, K, {"fillvalue": np.bool_(True)}, TypeError,
     r"fillvalue must be a real scalar .* got bool"),
    ("fillvalue_none", A, K, {"fillvalue": None}, TypeError,
     r"fillvalue must be a real scalar .* got NoneType None"),
    ("complex", A, K.astype(np.complex64), {}, TypeError, r"in2 must have a real floating dtype"),
]


@pytest.mark.parametrize("op", sorted(FILTERS))
@pytest.mark.parametrize(
    ("a", "k", "options", "exc", "match"),
    [c[1:] for c in FILTER_ERRORS],
    ids=[c[0] for c in FILTER_ERRORS],
)
def test_filter2d_errors(op, a, k, options, exc, match):
    with pytest.raises(exc, match=rf"^{op}: " + match):
        getattr(jaxconv, op)(a, k, **options)


@pytest.mark.parametrize("algorithm", ["auto", "xla", "shift_add", "im2col", "fft"])
@pytest.mark.parametrize("layout", [None, "NCHW"])
@pytest.mark.slow
def test_conv_transpose_through_every_lowering_equals_the_oracle(algorithm, layout, rng):
    """conv_transpose runs one conv of y (the stride's phases as output channels) through the
    named lowering: every lowering gives the oracle's transposed conv, values and gradients."""
    y = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 6)).astype(np.float32)
    if layout:
        y, w = ref.x_to_channels_first(y), ref.w_to_channels_first(w)
    opts = dict(stride=(2, 3), padding=((1, 2), (0, 1)), output_padding=(1, 2), layout=layout)
    got = jax.jit(lambda y, w: jaxconv.conv_transpose(y, w, algorithm=algorithm, **opts))(y, w)
    assert_close(got, ref.conv_transpose(y, w, **opts))
    # gradients: against the xla lowering's (itself checked against autodiff of lax)
    loss = lambda a: lambda y, w: jnp.sum(jnp.sin(jaxconv.conv_transpose(y, w, algorithm=a,
                                                                         **opts)))
    for g, want in zip(jax.grad(loss(algorithm), (0, 1))(y, w),
                       jax.grad(loss("xla"), (0, 1))(y, w), strict=True):
        assert_close(g, want)
    # vmap over the batch: each example alone, as the batched call gives it
    one = lambda yi: jaxconv.conv_transpose(yi[None], w, algorithm=algorithm, **opts)[0]
    assert_close(jax.jit(jax.vmap(one))(y), got)


@pytest.mark.slow
def test_depthwise_conv_transpose_runs_the_depthwise_lowering(rng):
    y = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 8)).astype(np.float32)
    got = jaxconv.conv_transpose(y, w, stride=2, groups=8, algorithm="depthwise")
    assert_close(got, ref.conv_transpose(y, w, stride=2, groups=8))


def test_dilated_conv_transpose_names_the_lowerings_it_can_run():
    y, w = jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 2, 8))
    with pytest.raises(ValueError, match="algorithm 'im2col' cannot run a dilated transposed"):
        jaxconv.conv_transpose(y, w, dilation=2, algorithm="im2col")
    with pytest.raises(ValueError, match="conv_transpose: unknown algorithm 'winograd'; "
                                         "expected one of 'auto', 'xla'"):
        jaxconv.conv_transpose(y, w, dilation=2, algorithm="winograd")
    with pytest.raises(ValueError, match="conv_transpose: unknown algorithm 'im2cl'.*Did you "
                                         "mean 'im2col'"):
        jaxconv.conv_transpose(y, w, algorithm="im2cl")


def _primitive_names(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                names |= _primitive_names(inner)
    return names


@pytest.mark.parametrize("op", ["correlate2d", "convolve2d"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.slow
def test_filter2d_runs_the_planners_lowering_and_batches_under_vmap(op, mode, rng):
    """correlate2d/convolve2d are one conv call through the planner (3x3 on one image:
    shift_add on CPU, no lax conv), and vmap over images equals the per-image results."""
    scipy_signal = pytest.importorskip("scipy.signal")
    fn = getattr(jaxconv, op)
    a = rng.standard_normal((4, 12, 10)).astype(np.float32)
    k = rng.standard_normal((3, 3)).astype(np.float32)
    prims = _primitive_names(jax.make_jaxpr(lambda a: fn(a, k, mode=mode))(a[0]).jaxpr)
    want_algo = jaxconv.plan((1, 12, 10, 1), (3, 3, 1, 1)).algorithm
    assert ("conv_general_dilated" in prims) == (want_algo == "xla"), prims
    batched = jax.jit(jax.vmap(lambda a: fn(a, k, mode=mode)))(a)
    for i in range(a.shape[0]):
        want = getattr(scipy_signal, op)(a[i].astype(np.float64), k.astype(np.float64), mode=mode)
        assert_close(batched[i], want)
