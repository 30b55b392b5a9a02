"""Tests for jaxconv/lowering/rows.py: the 2-D convolution as a 1-D one over W of the stacked
kernel rows equals the numpy oracle and lax (values, jit, vmap, first and second derivatives),
and its compiled forward holds no YNNPACK fusion where lax's 2-D convolution does."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv
from jaxconv.lowering import _conv_args, compiling_with, rows
from tests import _reference as ref

CASES = [
    dict(channels_first=cf, stride=s, dilation=d, groups=g, padding=p)
    for cf, s, d, g, p in itertools.product(
        [False, True], [1, (2, 1)], [1, (1, 2)], [1, 2], ["VALID", [(1, 2), (2, 0)]]
    )
]


def _ids(c):
    pad = "valid" if c["padding"] == "VALID" else "pad"
    return (f"{'cf' if c['channels_first'] else 'cl'}-s{c['stride']}-d{c['dilation']}"
            f"-g{c['groups']}-{pad}").replace(" ", "")


def _problem(case, rng, dtype=np.float64):
    g = case["groups"]
    x = rng.standard_normal((2, 7, 8, 4)).astype(dtype)
    w = rng.standard_normal((3, 2, 4 // g, 6)).astype(dtype)
    layout = "NHWC"
    if case["channels_first"]:
        x, w, layout = np.moveaxis(x, -1, 1), np.moveaxis(w, (2, 3), (1, 0)), "NCHW"
    opts = dict(stride=case["stride"], dilation=case["dilation"], groups=g, layout=layout,
                padding=case["padding"])
    return x, w, opts


def _rows_conv(x, w, opts, precision=None):
    args, _ = _conv_args("conv", x.shape, w.shape, x.dtype, opts["stride"], opts["padding"],
                         opts["dilation"], opts["groups"], opts["layout"], "zeros", precision)
    return rows.conv(x, w, args)


def _lax(x, w, opts):
    """The same convolution as plain lax, differentiated by jax's own rules."""
    args, _ = _conv_args("conv", x.shape, w.shape, x.dtype, opts["stride"], opts["padding"],
                         opts["dilation"], opts["groups"], opts["layout"], "zeros", None)
    kernel = "OIHW" if opts["layout"] == "NCHW" else "HWIO"
    return lax.conv_general_dilated(
        x, w, args.stride, args.pads, rhs_dilation=args.dilation,
        dimension_numbers=(opts["layout"], kernel, opts["layout"]),
        feature_group_count=opts["groups"], precision=lax.Precision.HIGHEST,
    )


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_equals_numpy_oracle_under_jit(case, rng, x64):
    x, w, opts = _problem(case, rng)
    expected = ref.conv(x, w, **opts)
    eager = _rows_conv(x, w, opts)
    jitted = jax.jit(lambda x, w: _rows_conv(x, w, opts))(x, w)
    np.testing.assert_allclose(eager, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jitted, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES[::3], ids=_ids)
@pytest.mark.slow
def test_derivatives_equal_autodiff_of_lax(case, rng, x64):
    x, w, opts = _problem(case, rng)
    ours = lambda x, w: jnp.sum(jnp.sin(_rows_conv(x, w, opts)))
    theirs = lambda x, w: jnp.sum(jnp.sin(_lax(x, w, opts)))
    grads = jax.jit(jax.grad(ours, (0, 1)))(x, w)
    for a, b in zip(grads, jax.grad(theirs, (0, 1))(x, w), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    tx, tw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    np.testing.assert_allclose(jax.jvp(ours, (x, w), (tx, tw))[1],
                               jax.jvp(theirs, (x, w), (tx, tw))[1], rtol=1e-10)
    hvp = lambda f: jax.jvp(jax.grad(lambda w: f(x, w)), (w,), (tw,))[1]
    np.testing.assert_allclose(hvp(ours), hvp(theirs), rtol=1e-9, atol=1e-12)


def test_vmap_equals_a_loop(rng, x64):
    case = dict(channels_first=False, stride=1, dilation=1, groups=2, padding="SAME")
    xs = rng.standard_normal((3, 2, 6, 5, 4))
    w = rng.standard_normal((3, 3, 2, 4))
    opts = dict(stride=1, dilation=1, groups=2, layout="NHWC", padding="SAME")
    assert case["padding"] == opts["padding"]
    f = lambda x, w: _rows_conv(x, w, opts)
    batched = jax.jit(jax.vmap(f, in_axes=(0, None)))(xs, w)
    for i in range(xs.shape[0]):
        np.testing.assert_allclose(batched[i], ref.conv(xs[i], w, **opts), rtol=1e-12)
    # and the gradient of a vmapped loss equals the sum of the per-example gradients
    loss = lambda w: jnp.sum(jax.vmap(f, in_axes=(0, None))(xs, w) ** 2)
    per_example = sum(jax.grad(lambda w, x=x: jnp.sum(f(x, w) ** 2))(w) for x in xs)
    np.testing.assert_allclose(jax.grad(loss)(w), per_example, rtol=1e-10)


def test_float32_keeps_direct_summations_error_bound(rng):
    """Every output is a direct sum of the same products: within a few ulps of the float64
    oracle relative to the sum of the products' magnitudes, not the output's maximum. Off CPU
    in full precision: a lowering asked for by name keeps XLA's default there (TF32 on recent
    NVIDIA GPUs), as lax itself does."""
    x = rng.standard_normal((2, 9, 10, 24)).astype(np.float32)
    w = rng.standard_normal((3, 3, 24, 20)).astype(np.float32)
    opts = dict(stride=1, dilation=1, groups=1, layout="NHWC", padding="SAME")
    precision = None if jax.default_backend() == "cpu" else "highest"
    got = np.asarray(jax.jit(lambda x, w: _rows_conv(x, w, opts, precision))(x, w), np.float64)
    exact = ref.conv(x, w, padding="SAME")
    magnitude = ref.conv(np.abs(x), np.abs(w), padding="SAME")
    bound = 9 * 24 * np.finfo(np.float32).eps * magnitude
    assert np.all(np.abs(got - exact) <= bound)


def _hlo(f, *args):
    return jax.jit(f).lower(*args).compile().as_text()


def test_forward_stays_off_ynnpack_where_lax_does_not(rng):
    """The reason the lowering exists: a 2-D float32 conv with > 16 channels compiles to a
    YNNPACK fusion under XLA's default options; the rows form compiles to none."""
    x = jnp.asarray(rng.standard_normal((2, 10, 10, 24)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 24, 32)), jnp.float32)
    opts = dict(stride=1, dilation=1, groups=1, layout="NHWC", padding="VALID")
    plain = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if "ynn_fusion" not in _hlo(plain, x, w):
        pytest.skip("this jaxlib does not send 2-D convolutions to YNNPACK")
    assert "ynn_fusion" not in _hlo(lambda x, w: _rows_conv(x, w, opts), x, w)
    assert "convolution(" in _hlo(lambda x, w: _rows_conv(x, w, opts), x, w)


@pytest.mark.parametrize("shape, kernel, expected", [
    ((8, 16, 16, 16), (3, 3, 16, 32), True),  # 32 output features: YNNPACK's
    ((8, 16, 16, 24), (3, 3, 24, 8), True),  # 24 input features
    ((8, 16, 16, 3), (5, 5, 3, 16), False),  # D: 16 at most, Eigen already
    ((8, 16, 16, 16), (3, 3, 16, 16), False),
])
@pytest.mark.cpu_only
def test_prefers_exactly_the_calls_ynnpack_would_take(shape, kernel, expected):
    args, _ = _conv_args("conv", shape, kernel, jnp.float32, 1, "VALID", 1, 1, None, "zeros",
                         None)
    assert (rows.prefers(args) is not None) == expected
    assert rows.reaches_ynnpack(args) == expected
    with compiling_with(jaxconv.compiler_options()):  # fit's executables: Eigen already
        assert rows.prefers(args) is None
    args64 = args._replace(dtype=np.dtype(np.float64))
    assert rows.prefers(args64) is None


@pytest.mark.parametrize("n", [1, 3])
def test_declines_other_than_2d(n):
    shape, kernel = (2, *(6,) * n, 4), (*(3,) * n, 4, 4)
    args, _ = _conv_args("conv", shape, kernel, jnp.float32, 1, "VALID", 1, 1, None, "zeros",
                         None)
    assert rows.declines(args) == (f"a {n}-D convolution: this lowering rewrites 2-D ones "
                                   "(1-D and 3-D convolutions reach Eigen as they are)")
    assert rows.prefers(args) is None
