"""conv_transpose's "SAME" / "VALID" (/"SAME_LOWER") padding against lax.conv_transpose, the
oracle whose semantics they follow, and against the adjoint of lax's forward conv."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
DIMENSION_NUMBERS = {  # (channels-last, channels-first): lhs, rhs (the forward kernel), out
    1: (("NWC", "WIO", "NWC"), ("NCW", "OIW", "NCW")),
    2: (("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW")),
    3: (("NDHWC", "DHWIO", "NDHWC"), ("NCDHW", "OIDHW", "NCDHW")),
}
HIGHEST = lax.Precision.HIGHEST


@st.composite
def cases(draw, groups=(1,)):
    n = draw(st.integers(1, 3))
    per_dim = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * n)  # noqa: E731
    g = draw(st.sampled_from(groups))
    channels_first = draw(st.booleans())
    case = dict(
        n=n,
        sizes=draw(per_dim(1, 4)),  # y's spatial sizes
        ksize=draw(per_dim(1, 4)),
        cin=g * draw(st.integers(1, 2)),
        cout=g * draw(st.integers(1, 2)),
        channels_first=channels_first,
    )
    options = dict(
        stride=draw(per_dim(1, 4)),
        padding=draw(st.sampled_from(["SAME", "VALID", "same", "valid"])),
        dilation=draw(per_dim(1, 2)),
        groups=g,
        layout=DIMENSION_NUMBERS[n][1][0] if channels_first else None,
    )
    algorithm = draw(st.sampled_from(["auto", "xla"]))
    return case, options, algorithm, draw(st.integers(0, 2**16))


def _arrays(case, seed, groups=1):
    rng = np.random.default_rng(seed)
    cf = case["channels_first"]
    y_shape = ((2, case["cout"], *case["sizes"]) if cf else (2, *case["sizes"], case["cout"]))
    w_last = (*case["ksize"], case["cin"] // groups, case["cout"])
    w_shape = (w_last[-1], w_last[-2], *case["ksize"]) if cf else w_last
    return (rng.standard_normal(y_shape).astype(np.float32),
            rng.standard_normal(w_shape).astype(np.float32))


def _lax(y, w, case, options):
    dn = DIMENSION_NUMBERS[case["n"]][int(case["channels_first"])]
    return lax.conv_transpose(y, w, options["stride"], options["padding"].upper(),
                              rhs_dilation=options["dilation"], dimension_numbers=dn,
                              transpose_kernel=True, precision=HIGHEST)


@SETTINGS
@given(cases())
@pytest.mark.slow
def test_same_and_valid_equal_lax_conv_transpose(args):
    case, options, algorithm, seed = args
    y, w = _arrays(case, seed)
    want = _lax(y, w, case, options)
    got = jaxconv.conv_transpose(y, w, algorithm=algorithm, precision="highest", **options)
    assert got.shape == want.shape
    assert jaxconv.output_shape(y.shape, w.shape, op="conv_transpose", **options) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _forward_input_size(size, k_eff, stride, padding):
    """The documented output size: in * stride for SAME, (in - 1) * stride + max(k, stride)
    for VALID."""
    if padding.upper().startswith("SAME"):
        return size * stride
    return (size - 1) * stride + max(k_eff, stride)


@SETTINGS
@given(cases(groups=(1, 2)))
@pytest.mark.slow
def test_strings_are_the_adjoint_of_lax_forward_conv_groups_and_same_lower(args):
    """The vjp of lax.conv_general_dilated with the same padding string on the documented
    output size: covers feature groups and SAME_LOWER, which lax.conv_transpose lacks."""
    case, options, algorithm, seed = args
    if options["padding"].upper() == "SAME" and seed % 2:
        options = {**options, "padding": "SAME_LOWER"}
    y, w = _arrays(case, seed, options["groups"])
    n, cf = case["n"], case["channels_first"]
    k_eff = [(k - 1) * d + 1 for k, d in zip(case["ksize"], options["dilation"], strict=True)]
    sizes = [_forward_input_size(s, k, st_, options["padding"])
             for s, k, st_ in zip(case["sizes"], k_eff, options["stride"], strict=True)]
    x_shape = (2, case["cin"], *sizes) if cf else (2, *sizes, case["cin"])
    forward = functools.partial(
        lax.conv_general_dilated, rhs=w, window_strides=options["stride"],
        padding=options["padding"].upper(), rhs_dilation=options["dilation"],
        dimension_numbers=DIMENSION_NUMBERS[n][int(cf)], feature_group_count=options["groups"],
        precision=HIGHEST)
    out, vjp = jax.vjp(forward, jnp.zeros(x_shape, jnp.float32))
    assert out.shape == y.shape  # the forward conv maps the documented size back to y's
    (want,) = vjp(jnp.asarray(y))
    got = jaxconv.conv_transpose(y, w, algorithm=algorithm, precision="highest", **options)
    assert got.shape == x_shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(("stride", "ksize", "dilation"), [(2, 3, 1), (3, 2, 1), (2, 2, 2)],
                         ids=["k_gt_s", "s_gt_k", "dilated"])
@pytest.mark.slow
def test_grads_equal_lax_conv_transpose(padding, stride, ksize, dilation, rng):
    y = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((ksize, ksize, 2, 3)).astype(np.float32)
    case = dict(n=2, channels_first=False)
    options = dict(stride=(stride, stride), padding=padding, dilation=(dilation, dilation))
    out = _lax(y, w, case, options)
    ct = rng.standard_normal(out.shape).astype(np.float32)
    ours = lambda y, w: jnp.vdot(  # noqa: E731
        jaxconv.conv_transpose(y, w, precision="highest", **options), ct)
    theirs = lambda y, w: jnp.vdot(_lax(y, w, case, options), ct)  # noqa: E731
    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(y, w)
    want = jax.grad(theirs, argnums=(0, 1))(y, w)
    for g, wt in zip(got, want, strict=True):
        np.testing.assert_allclose(g, wt, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("y_shape", "w_shape", "options", "want"),
    [
        ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2, padding="SAME"), (1, 8, 8, 2)),
        ((1, 4, 4, 8), (2, 2, 2, 8), dict(stride=2, padding="VALID"), (1, 8, 8, 2)),
        ((1, 4, 4, 8), (3, 3, 2, 8), dict(stride=2, padding="VALID"), (1, 9, 9, 2)),
        # stride longer than the kernel: VALID's output is in * stride, as lax's
        ((1, 4, 8), (1, 2, 8), dict(stride=3, padding="valid"), (1, 12, 2)),
        ((1, 5, 8), (4, 2, 8), dict(stride=1, padding="same"), (1, 5, 2)),
    ],
    ids=["same_s2", "valid_k_eq_s", "valid_k_gt_s", "valid_s_gt_k", "same_s1"],
)
def test_shape_grid(y_shape, w_shape, options, want):
    """Worked out by hand from lax's formulas."""
    assert jaxconv.output_shape(y_shape, w_shape, op="conv_transpose", **options) == want


def test_output_padding_with_a_padding_string_raises():
    y, w = jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 2, 8))
    with pytest.raises(ValueError, match=r"^conv_transpose: output_padding \(\(1, 0\)\) cannot be "
                                         r"combined with padding 'SAME', which sets the output "
                                         r"size as lax\.conv_transpose does; pass explicit "
                                         r"padding"):
        jaxconv.conv_transpose(y, w, stride=2, padding="SAME", output_padding=(1, 0))
