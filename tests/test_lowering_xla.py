"""Tests for jaxconv/lowering/xla.py: its custom JVP computes autodiff's derivatives of
lax.conv_general_dilated, and every convolution it emits, gradients included, is canonical
inside a loop body, where XLA:CPU's ConvCanonicalization pass does not reach."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv

LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
CASES = [
    dict(n=n, channels_first=cf, stride=s, dilation=d, groups=g)
    for n, cf, s, d, g in itertools.product([1, 2, 3], [False, True], [1, 2], [1, 2], [1, 2])
    if not (n == 3 and (s, d) == (2, 2))  # keep the 3-D cases few
]


def _ids(c):
    return (f"{c['n']}d-{'cf' if c['channels_first'] else 'cl'}-s{c['stride']}"
            f"-d{c['dilation']}-g{c['groups']}")


def _problem(case, rng):
    n, g = case["n"], case["groups"]
    sp, k = (7, 6, 5)[:n], (3, 2, 3)[:n]
    x = rng.standard_normal((2, *sp, 4))
    w = rng.standard_normal((*k, 4 // g, 6))
    layout = LAYOUTS[n][case["channels_first"]]
    if case["channels_first"]:
        x = np.moveaxis(x, -1, 1)
        w = np.moveaxis(w, (n, n + 1), (1, 0))
    opts = dict(stride=case["stride"], dilation=case["dilation"], groups=g, layout=layout,
                padding=[(1, 0)] * n)
    return x, w, opts


def _raw(x, w, opts, n):
    """The same convolution as plain lax, differentiated by jax's own rules (the oracle)."""
    layout = opts["layout"]
    kernel = "OI" + "DHW"[3 - n:] if layout[1] == "C" else "DHW"[3 - n:] + "IO"
    return lax.conv_general_dilated(
        x, w, (opts["stride"],) * n, opts["padding"], rhs_dilation=(opts["dilation"],) * n,
        dimension_numbers=(layout, kernel, layout), feature_group_count=opts["groups"],
        precision=lax.Precision.HIGHEST,
    )


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.slow
def test_derivatives_equal_autodiff_of_lax(case, rng):
    x, w, opts = _problem(case, rng)
    n = case["n"]
    ours = lambda x, w: jnp.sum(jnp.sin(jaxconv.conv(x, w, algorithm="xla", **opts)))
    ref = lambda x, w: jnp.sum(jnp.sin(_raw(x, w, opts, n)))
    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-12)
    for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    tx, tw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    np.testing.assert_allclose(jax.jvp(ours, (x, w), (tx, tw))[1],
                               jax.jvp(ref, (x, w), (tx, tw))[1], rtol=1e-10)
    # second order: a Hessian-vector product through the custom JVP's own derivative
    hvp = lambda f: jax.jvp(jax.grad(lambda w: f(x, w)), (w,), (tw,))[1]
    np.testing.assert_allclose(hvp(ours), hvp(ref), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_vmap_equals_a_loop(rng):
    x = rng.standard_normal((3, 2, 6, 6, 2))
    w = rng.standard_normal((3, 3, 2, 4))
    f = lambda x: jax.grad(lambda w: jnp.sum(jaxconv.conv(x, w, algorithm="xla") ** 2))(w)
    np.testing.assert_allclose(jax.vmap(f)(x), np.stack([f(xi) for xi in x]), rtol=1e-12)


def _dim_labels(compiled_text):
    return re.findall(r"convolution\(.*?dim_labels=([^,]+)", compiled_text)


CANONICAL = {1: "b0f_0io->b0f", 2: "b01f_01io->b01f", 3: "b012f_012io->b012f"}


@pytest.mark.parametrize("case", [c for c in CASES if c["dilation"] == 1], ids=_ids)
@pytest.mark.slow
def test_every_convolution_in_a_scan_of_training_steps_is_canonical(case, rng):
    x, w, opts = _problem(case, rng)
    x, w = x.astype(np.float32), w.astype(np.float32)

    def step(carry, _):
        w, x = carry
        loss = lambda w, x: jnp.mean(jaxconv.conv(x, w, algorithm="xla", **opts) ** 2)
        gw, gx = jax.grad(loss, (0, 1))(w, x)
        return (w - 0.1 * gw, x - 0.1 * gx), None

    text = jax.jit(lambda c: lax.scan(step, c, None, length=3)[0]).lower((w, x)).compile()
    labels = _dim_labels(text.as_text())
    assert len(labels) == 3, labels  # forward, input gradient, kernel gradient
    assert set(labels) == {CANONICAL[case["n"]]}, labels


@pytest.mark.slow
def test_raw_autodiff_in_a_scan_is_not_canonical(rng):
    # the premise of the custom JVP: without it the kernel gradient keeps raw labels
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)

    def step(w, _):
        loss = lambda w: jnp.mean(lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2)
        return w - 0.1 * jax.grad(loss)(w), None

    text = jax.jit(lambda w: lax.scan(step, w, None, length=3)[0]).lower(w).compile().as_text()
    assert set(_dim_labels(text)) != {CANONICAL[2]}


@pytest.mark.cpu_only
@pytest.mark.parametrize("dilation", [1, 2], ids=["phase_conv", "dilated_transpose"])
def test_conv_transpose_is_canonical_inside_a_loop(dilation, rng):
    # dilation 1: one ordinary conv of y (the phases as channels); 2: the forward's transpose
    y = rng.standard_normal((2, 5, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    body = lambda y, _: (jaxconv.conv_transpose(y, w, padding=dilation, dilation=dilation,
                                                algorithm="xla"), None)
    text = jax.jit(lambda y: lax.scan(body, y, None, length=2)[0]).lower(y).compile()
    assert set(_dim_labels(text.as_text())) == {CANONICAL[2]}
