"""Tests for jaxconv._pooling: max_pool and avg_pool against a plain numpy loop oracle (in this
file) and torch; jit/vmap/grad, dtypes, the lax primitives used, and every error."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxconv

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")


# --- the oracle: textbook padding formulas and a loop over output positions, float64 ---------


def ref_pads(padding, sizes, window, stride):
    """(low, high) per dim for any padding form, from the textbook formulas."""
    n = len(sizes)
    if isinstance(padding, str):
        name = padding.upper()
        if name == "VALID":
            return [(0, 0)] * n
        if name == "FULL":
            return [(k - 1, k - 1) for k in window]
        if name == "CAUSAL":
            return [(k - 1, 0) for k in window]
        pads = []
        for size, k, s in zip(sizes, window, stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            lo, hi = total // 2, total - total // 2
            pads.append((lo, hi) if name == "SAME" else (hi, lo))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def ref_pool(x, window, stride, pads, kind, count_include_pad=True):
    """Channels-last [N, *spatial, C] pooling by looping over output positions."""
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    widths = [(0, 0), *pads, (0, 0)]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, widths, constant_values=fill)
    real = np.pad(np.ones(x.shape[1:-1]), pads, constant_values=0.0)
    out_sizes = [
        (size + lo + hi - k) // s + 1
        for size, (lo, hi), k, s in zip(x.shape[1:-1], pads, window, stride, strict=True)
    ]
    out = np.zeros((x.shape[0], *out_sizes, x.shape[-1]))
    for pos in itertools.product(*map(range, out_sizes)):
        box = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, stride, window, strict=True))
        win = xp[(slice(None), *box, slice(None))].reshape(x.shape[0], -1, x.shape[-1])
        if kind == "max":
            value = win.max(axis=1)
        else:
            count = np.prod(window) if count_include_pad else real[box].sum()
            value = win.sum(axis=1) / count
        out[(slice(None), *pos, slice(None))] = value
    assert n == len(window)
    return out


def to_channels_first(x):
    return np.moveaxis(np.asarray(x), -1, 1)


def to_channels_last(x):
    return np.moveaxis(np.asarray(x), 1, -1)


def run_op(kind, x, window, **options):
    """Calls the op on channels-last ``x``, converting in and out for channels-first layouts."""
    layout = options.get("layout")
    first = layout is not None and not layout.upper().endswith("C")
    fn = jaxconv.max_pool if kind == "max" else jaxconv.avg_pool
    got = fn(to_channels_first(x) if first else x, window, **options)
    return to_channels_last(got) if first else np.asarray(got)


def check(kind, x, window, *, stride=None, padding="VALID", layout=None, count_include_pad=None,
          rtol=1e-5):
    n = x.ndim - 2
    window_t = (window,) * n if isinstance(window, int) else tuple(window)
    if stride is None:
        stride_t = window_t
    else:
        stride_t = (stride,) * n if isinstance(stride, int) else tuple(stride)
    pads = ref_pads(padding, x.shape[1:-1], window_t, stride_t)
    options = dict(stride=stride, padding=padding, layout=layout)
    if kind == "avg":
        options["count_include_pad"] = count_include_pad
    got = run_op(kind, x, window, **options)
    want = ref_pool(x, window_t, stride_t, pads, kind, bool(count_include_pad))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_oracle_hand_checked():
    """The oracle itself on a case worked out by hand (1-D, padded, both counts)."""
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])[None, :, None]
    np.testing.assert_array_equal(ref_pool(x, (2,), (2,), [(1, 0)], "max")[0, :, 0], [1, 3, 5])
    np.testing.assert_array_equal(
        ref_pool(x, (2,), (2,), [(1, 0)], "avg", True)[0, :, 0], [0.5, 2.5, 4.5]
    )
    np.testing.assert_array_equal(
        ref_pool(x, (2,), (2,), [(1, 0)], "avg", False)[0, :, 0], [1.0, 2.5, 4.5]
    )
    assert ref_pads("SAME", [8], [3], [2]) == [(0, 1)]
    assert ref_pads("SAME_LOWER", [8], [3], [2]) == [(1, 0)]


# --- values against the oracle ---------------------------------------------------------------


KINDS = [("max", None), ("avg", True), ("avg", False)]
KIND_IDS = ["max", "avg_incl", "avg_excl"]


@pytest.mark.parametrize(("kind", "count_include_pad"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "padding", [*STRINGS, 1, ((0, 1), (1, 1))], ids=[*STRINGS, "int1", "pairs"]
)
@pytest.mark.slow
def test_2d_grid(padding, kind, count_include_pad, rng):
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    check(kind, x, (3, 2), stride=(2, 1), padding=padding, count_include_pad=count_include_pad)


@pytest.mark.parametrize("layout_index", [0, 1], ids=["channels_last", "channels_first"])
@pytest.mark.parametrize("n", [1, 2, 3], ids=lambda n: f"{n}d")
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.slow
def test_ranks_and_layouts(kind, n, layout_index, rng):
    x = rng.standard_normal((2, *[5] * n, 3)).astype(np.float32)
    layout = LAYOUTS[n][layout_index]
    check(kind, x, 2, stride=1, padding="SAME", layout=layout, count_include_pad=False)
    check(kind, x, 3, stride=2, padding=1, layout=layout.lower(), count_include_pad=True)


@pytest.mark.slow
def test_default_layout_is_channels_last_by_rank(rng):
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(jaxconv.max_pool(x, 2), jaxconv.max_pool(x, 2, layout="NHWC"))


def test_hand_checked_values():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(jaxconv.max_pool(x, 2)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(jaxconv.avg_pool(x, 2)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # a padded corner: the max ignores the -inf pad, the mean counts the zeros or not.
    ones = jnp.ones((1, 3, 1))
    np.testing.assert_array_equal(
        jaxconv.max_pool(-ones, 2, stride=1, padding=1)[0, :, 0], [-1, -1, -1, -1]
    )
    np.testing.assert_array_equal(
        jaxconv.avg_pool(ones, 2, stride=1, padding=1)[0, :, 0], [0.5, 1, 1, 0.5]
    )
    np.testing.assert_array_equal(
        jaxconv.avg_pool(ones, 2, stride=1, padding=1, count_include_pad=False)[0, :, 0],
        [1, 1, 1, 1],
    )


def _padding_strategy(n, window, stride):
    kinds = st.sampled_from([*STRINGS, "same", "int", "ints", "pairs"])

    @st.composite
    def build(draw):
        kind = draw(kinds)
        if kind == "int":
            return draw(st.integers(0, min(window) // 2))
        if kind == "ints":
            return tuple(draw(st.integers(0, k // 2)) for k in window)
        if kind == "pairs":
            return tuple(
                (draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window
            )
        return kind

    return build()


@st.composite
def pool_configs(draw):
    n = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    sizes = tuple(draw(st.integers(1, 6 if n < 3 else 4)) for _ in range(n))
    padding = draw(_padding_strategy(n, window, stride))
    layout = draw(st.sampled_from([None, *LAYOUTS[n]]))
    window_arg = window[0] if draw(st.booleans()) and len(set(window)) == 1 else window
    stride_arg = draw(st.sampled_from([None, stride]))
    return dict(
        n=n, window=window_arg, stride=stride_arg, sizes=sizes, padding=padding, layout=layout,
        count_include_pad=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(config=pool_configs(), kind=st.sampled_from(["max", "avg"]))
@pytest.mark.slow
def test_hypothesis_vs_oracle(config, kind):
    """Ranks 1-3, windows, strides, every padding form, layouts, count_include_pad."""
    n, sizes, window = config["n"], config["sizes"], config["window"]
    window_t = (window,) * n if isinstance(window, int) else window
    stride_t = config["stride"] or window_t
    pads = ref_pads(config["padding"], sizes, window_t, stride_t)
    assume(all(m + lo + hi >= k for m, (lo, hi), k in zip(sizes, pads, window_t, strict=True)))
    x = np.random.default_rng(config["seed"]).standard_normal((2, *sizes, 2)).astype(np.float32)
    check(kind, x, window, stride=config["stride"], padding=config["padding"],
          layout=config["layout"], count_include_pad=config["count_include_pad"])


# --- torch, the semantics we promise for channels-first + int padding ------------------------


@pytest.mark.slow  # importing torch alone takes seconds
@pytest.mark.parametrize("n", [1, 2, 3], ids=lambda n: f"{n}d")
def test_matches_torch(n, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, *[7] * n)).astype(np.float32)
    xt = torch.from_numpy(x)
    max_t = getattr(F, f"max_pool{n}d")
    avg_t = getattr(F, f"avg_pool{n}d")
    layout = LAYOUTS[n][1]
    for window, stride, pad in [(2, None, 0), (3, 2, 1), (3, 1, 1), (2, 3, 1)]:
        opts = dict(stride=stride, padding=pad, layout=layout)
        np.testing.assert_array_equal(
            jaxconv.max_pool(x, window, **opts), max_t(xt, window, stride, pad).numpy()
        )
        for include in (True, False):
            want = avg_t(xt, window, stride, pad, count_include_pad=include).numpy()
            got = jaxconv.avg_pool(x, window, count_include_pad=include, **opts)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# --- dtypes, transforms, lowering ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2), (jnp.float16, 2e-3)],
    ids=["f32", "bf16", "f16"],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.slow
def test_dtypes(kind, dtype, rtol, rng):
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 2)), dtype)
    fn = jaxconv.max_pool if kind == "max" else jaxconv.avg_pool
    got = fn(x, 3, stride=2, padding="SAME")
    assert got.dtype == dtype
    pads = ref_pads("SAME", (6, 6), (3, 3), (2, 2))
    want = ref_pool(np.asarray(x, np.float64), (3, 3), (2, 2), pads, kind)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=rtol)


@pytest.mark.slow
def test_float64(rng):
    with jax.enable_x64(True):
        x = rng.standard_normal((1, 5, 5, 1))
        for kind in ("max", "avg"):
            fn = jaxconv.max_pool if kind == "max" else jaxconv.avg_pool
            got = fn(x, 2, stride=1, padding="FULL")
            assert got.dtype == jnp.float64
            want = ref_pool(x, (2, 2), (1, 1), [(1, 1)] * 2, kind)
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


# Every narrow float XLA holds in an array (ml_dtypes via jnp); the float6 formats are left
# out: XLA:CPU cannot create arrays of them at all.
NARROW_FLOATS = [
    name for name in (
        "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
        "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn",
    ) if hasattr(jnp, name)
]
# float8_e8m0fnu is a scale format: unsigned powers of two, no zero.
UNSIGNED = ("float8_e8m0fnu",)


def _narrow_inputs(name, rng, shape):
    """Values exactly representable in the dtype: all negative (so a pad value that wins the
    max would show), or positive powers of two for the unsigned scale format."""
    dtype = jnp.dtype(getattr(jnp, name))
    if name in UNSIGNED:
        values = 2.0 ** rng.integers(-4, 5, shape)
    else:
        values = -np.abs(rng.standard_normal(shape)) * 2 - 0.25
    x = np.asarray(values).astype(dtype)
    assert np.isfinite(x.astype(np.float64)).all()
    return x


@pytest.mark.parametrize("name", NARROW_FLOATS)
@pytest.mark.parametrize("padding", ["VALID", "SAME", 1], ids=["valid", "same", "int"])
@pytest.mark.slow
def test_max_pool_narrow_floats_exact(name, padding, rng):
    """Issue 14: float8 formats without inf (e4m3fn, e4m3fnuz, ...) turned the -inf pad value
    into NaN, and every window came out NaN. Max is exact: equal to the float64 oracle."""
    x = _narrow_inputs(name, rng, (2, 5, 6, 2))
    got = jaxconv.max_pool(x, 3, stride=2, padding=padding)
    assert got.dtype == x.dtype
    pads = ref_pads(padding, (5, 6), (3, 3), (2, 2))
    want = ref_pool(x.astype(np.float64), (3, 3), (2, 2), pads, "max")
    np.testing.assert_array_equal(np.asarray(got).astype(np.float64), want)


@pytest.mark.parametrize("name", NARROW_FLOATS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl", "excl"])
@pytest.mark.slow
def test_avg_pool_narrow_floats_round_once(name, count_include_pad, rng):
    """Narrow floats are summed in float32 and rounded once: summing in float8 rounded every
    partial sum (e4m3fn: -1.5 for an exact -1.375), and e8m0fnu has no zero to start from."""
    x = _narrow_inputs(name, rng, (2, 5, 6, 2))
    got = jaxconv.avg_pool(x, 3, stride=1, padding=1, count_include_pad=count_include_pad)
    assert got.dtype == x.dtype
    want = ref_pool(x.astype(np.float64), (3, 3), (1, 1), [(1, 1)] * 2, "avg",
                    count_include_pad)
    np.testing.assert_array_equal(np.asarray(got).astype(np.float64),
                                  want.astype(x.dtype).astype(np.float64))


@pytest.mark.parametrize("name", [n for n in NARROW_FLOATS if n not in UNSIGNED])
@pytest.mark.slow
def test_max_pool_narrow_floats_keep_the_max_grad_rule(name):
    """The lowest finite pad value is lax's own max identity there: reduce_window_max, with its
    grad rule, not the generic reduce_window (which has none)."""
    x = jnp.asarray(np.array([[[-3.0], [-1.0], [-2.0], [-4.0]]]), getattr(jnp, name))
    jaxpr = str(jax.make_jaxpr(lambda x: jaxconv.max_pool(x, 2, padding=1))(x))
    assert "reduce_window_max" in jaxpr and "reduce_window[" not in jaxpr
    g = jax.grad(lambda x: jaxconv.max_pool(x, 2, padding=1).astype(jnp.float32).sum())(x)
    np.testing.assert_array_equal(np.asarray(g, np.float32)[0, :, 0], [1, 1, 0, 1])


def test_uses_the_window_primitives():
    """max -> reduce_window_max, avg -> reduce_window_sum (dedicated grad rules, fast paths)."""
    x = jnp.ones((1, 4, 4, 1))
    max_jaxpr = str(jax.make_jaxpr(lambda x: jaxconv.max_pool(x, 2, padding=1))(x))
    avg_jaxpr = str(jax.make_jaxpr(lambda x: jaxconv.avg_pool(x, 2, padding=1))(x))
    assert "reduce_window_max" in max_jaxpr and "reduce_window[" not in max_jaxpr
    assert "reduce_window_sum" in avg_jaxpr and "reduce_window[" not in avg_jaxpr


def _distinct(rng, shape):
    """Values 0.1 apart in random order: no ties, so max_pool is differentiable here."""
    return rng.permutation(np.arange(math.prod(shape))).reshape(shape) * 0.1


@pytest.mark.parametrize(
    ("window", "stride", "padding", "count_include_pad"),
    [(3, 1, "SAME", False), (3, 2, 1, True), ((2, 3), (1, 2), ((1, 0), (2, 1)), False)],
    ids=["same_overlap", "int_pad", "pairs"],
)
@pytest.mark.slow
def test_grads(window, stride, padding, count_include_pad, rng):
    """check_grads in float64, forward and reverse; max_pool on tie-free inputs."""
    with jax.enable_x64(True):
        x = _distinct(rng, (1, 5, 4, 2))
        options = dict(stride=stride, padding=padding)
        check_grads(lambda x: jaxconv.max_pool(x, window, **options), (x,), order=1)
        check_grads(
            lambda x: jaxconv.avg_pool(x, window, count_include_pad=count_include_pad, **options),
            (x,), order=1,
        )


@pytest.mark.slow
def test_max_grad_routes_to_the_argmax():
    x = jnp.array([[1.0, 3.0, 2.0, 0.0]])[..., None]
    g = jax.grad(lambda x: jaxconv.max_pool(x, 2).sum())(x)
    np.testing.assert_array_equal(g[0, :, 0], [0, 1, 1, 0])


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.slow
def test_jit_and_vmap(kind, rng):
    fn = jaxconv.max_pool if kind == "max" else jaxconv.avg_pool
    extra = {} if kind == "max" else {"count_include_pad": False}
    f = lambda x: fn(x, 3, stride=2, padding="SAME", layout="NCHW", **extra)
    xs = jnp.asarray(rng.standard_normal((3, 2, 2, 7, 6)), jnp.float32)
    eager = f(xs[0])
    np.testing.assert_array_equal(jax.jit(f)(xs[0]), eager)
    batched = jax.vmap(f)(xs)
    np.testing.assert_allclose(batched, np.stack([f(x) for x in xs]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(xs), batched, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_accepts_numpy_returns_jax_array():
    got = jaxconv.avg_pool(np.array([[[1.0], [3.0]]], np.float32), 2)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(got, [[[2.0]]])


# --- errors ----------------------------------------------------------------------------------

X1 = np.zeros((1, 4, 1), np.float32)
X2 = np.zeros((1, 4, 4, 1), np.float32)

ERRORS = [
    ("int_dtype", X2.astype(np.int32), 2, {}, TypeError,
     r"x must have a real floating dtype .* got int32"),
    ("bool_dtype", X2.astype(bool), 2, {}, TypeError, r"got bool"),
    ("complex", X2.astype(np.complex64), 2, {}, TypeError, r"got complex64"),
    ("rank2", np.zeros((4, 4), np.float32), 2, {}, ValueError,
     r"x must have rank >= 3 .* got rank 2 with shape \(4, 4\); add a batch axis"),
    ("window0", X2, 0, {}, ValueError, r"window must be positive, got window=0"),
    ("window_neg", X2, (2, -1), {}, ValueError, r"window must be positive"),
    ("window_len", X2, (2, 2, 2), {}, ValueError,
     r"window must be an int or a sequence of 2 ints .* got 3 values"),
    ("window_float", X2, 2.0, {}, TypeError, r"window must be an int or a sequence of 2 ints"),
    ("stride0", X2, 2, {"stride": 0}, ValueError, r"stride must be positive, got stride=0"),
    ("stride_len", X2, 2, {"stride": (1,)}, ValueError, r"stride must be an int or a sequence"),
    ("too_big", X2, 5, {}, ValueError,
     r"the window \(effective size 5 on spatial dim 0\) is larger than the padded input "
     r"\(4 \+ 0 \+ 0 = 4\)"),
    ("too_big_1d", X1, (6,), {"padding": ((1, 0),)}, ValueError, r"\(4 \+ 1 \+ 0 = 5\)"),
    ("unknown_padding", X2, 2, {"padding": "SAMEE"}, ValueError, r"unknown padding 'SAMEE'"),
    ("padding_float", X2, 2, {"padding": 1.5}, TypeError,
     r"padding must be a string, an int or a sequence"),
    ("padding_negative", X2, 2, {"padding": ((0, -1), (0, 0))}, ValueError,
     r"padding must be non-negative"),
    ("padding_len", X2, 2, {"padding": (1, 1, 1)}, ValueError,
     r"padding must have one entry per spatial dim \(2\), got 3"),
    ("torch_half_window", X2, 2, {"padding": 2}, ValueError,
     r"padding \(2 on spatial dim 0\) must be at most half the window \(2 // 2 = 1\)"),
    ("torch_half_window_per_dim", X2, 3, {"padding": (1, 2)}, ValueError,
     r"padding \(2 on spatial dim 1\) must be at most half the window \(3 // 2 = 1\)"),
    ("first_window_all_pad", X1, 2, {"padding": ((2, 0),)}, ValueError,
     r"puts the first window on spatial dim 0 entirely in the padding"),
    ("last_window_all_pad", X1, 2, {"padding": ((0, 2),)}, ValueError,
     r"puts the last window on spatial dim 0 entirely in the padding .* input size 4\)"),
    ("unknown_layout", X2, 2, {"layout": "NHCW"}, ValueError,
     r"unknown layout 'NHCW' for 2 spatial dim\(s\); expected one of 'NHWC', 'NCHW'"),
    ("layout_rank", X1, 2, {"layout": "NCHW"}, ValueError, r"unknown layout 'NCHW' for 1"),
    ("layout_type", X2, 2, {"layout": 2}, TypeError, r"layout must be a string or None"),
]


@pytest.mark.parametrize(
    ("x", "window", "options", "error", "match"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_errors(op, x, window, options, error, match):
    with pytest.raises(error, match=rf"^{op}: .*" + match):
        getattr(jaxconv, op)(x, window, **options)


def test_count_include_pad_must_be_bool():
    with pytest.raises(TypeError, match=r"^avg_pool: count_include_pad must be a bool, got 1"):
        jaxconv.avg_pool(X2, 2, count_include_pad=1)


def test_every_raise_fires_at_trace_time():
    """Errors come from our checks under jit too, before lax sees anything."""
    with pytest.raises(ValueError, match=r"^max_pool: window must be positive"):
        jax.jit(lambda x: jaxconv.max_pool(x, 0))(X2)
