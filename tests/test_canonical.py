"""Every convolution fit compiles is canonical for XLA:CPU, loop bodies included
(``jaxconv._canonical``): the rewrite computes what lax computes, for any dimension numbers,
groups, dilations and padding, and fit's compiled loop holds no other convolution (the cause
of LeNet-5's 3.2x slower steps inside the loop, benchmarks/NOTES.md)."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
from jaxconv import _canonical, _trainer, nn

pytestmark = pytest.mark.cpu_only  # XLA:CPU facts: see conftest.py

LABELS = re.compile(r"dim_labels=([^,\s]+)")


def conv_labels(compiled) -> set[str]:
    return set(LABELS.findall(compiled.as_text()))


def all_canonical(labels) -> bool:
    """b0f_0io->b0f, b01f_01io->b01f, b012f_012io->b012f: XLA:CPU's fast-kernel form."""
    def ok(label):
        lhs, rest = label.split("_", 1)
        rhs, out = rest.split("->")
        sp = lhs[1:-1]
        return lhs == f"b{sp}f" and rhs == f"{sp}io" and out == lhs and sp == "012"[:len(sp)]
    return all(ok(label) for label in labels)


def ints(key, shape):
    """Small integers as float32: every sum of products is exact whatever its order."""
    return jax.random.randint(key, shape, -3, 4).astype(jnp.float32)


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    batch_groups = draw(st.booleans()) and groups > 1
    per_group_in = draw(st.integers(1, 3))
    out_per_group = draw(st.integers(1, 3))
    channels = per_group_in * (1 if batch_groups else groups)
    batch = draw(st.integers(1, 2)) * (groups if batch_groups else 1)
    kernel = [draw(st.integers(1, 3)) for _ in range(n)]
    spatial = [draw(st.integers(k, k + 4)) for k in kernel]
    return dict(
        n=n, batch=batch, channels=channels, spatial=spatial, kernel=kernel,
        in_per_group=per_group_in, out=out_per_group * groups,
        feature_group_count=1 if batch_groups else groups,
        batch_group_count=groups if batch_groups else 1,
        window_strides=[draw(st.integers(1, 2)) for _ in range(n)],
        padding=[(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(n)],
        lhs_dilation=[draw(st.integers(1, 2)) for _ in range(n)],
        rhs_dilation=[draw(st.integers(1, 2)) for _ in range(n)],
        perms=[draw(st.permutations(range(n + 2))) for _ in range(3)],
        seed=draw(st.integers(0, 2**16)),
    )


def make_case(c):
    """(lhs, rhs, params) of a conv with dimension numbers permuted as drawn."""
    n = c["n"]
    lhs_logical = (c["batch"], c["channels"], *c["spatial"])  # (batch, feature, *spatial)
    rhs_logical = (c["out"], c["in_per_group"], *c["kernel"])  # (out, in, *spatial)
    lp, rp, op = c["perms"]
    # position of logical dim i is lp[i]: the array's shape is logical shape permuted
    lhs_shape = [0] * (n + 2)
    rhs_shape = [0] * (n + 2)
    for i, p in enumerate(lp):
        lhs_shape[p] = lhs_logical[i]
    for i, p in enumerate(rp):
        rhs_shape[p] = rhs_logical[i]
    k1, k2 = jax.random.split(jax.random.key(c["seed"]))
    lhs, rhs = ints(k1, lhs_shape), ints(k2, rhs_shape)
    params = dict(
        window_strides=tuple(c["window_strides"]), padding=tuple(c["padding"]),
        lhs_dilation=tuple(c["lhs_dilation"]), rhs_dilation=tuple(c["rhs_dilation"]),
        dimension_numbers=lax.ConvDimensionNumbers(tuple(lp), tuple(rp), tuple(op)),
        feature_group_count=c["feature_group_count"],
        batch_group_count=c["batch_group_count"], precision=None,
        preferred_element_type=None)
    return lhs, rhs, params


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_lowered_with_the_rule_every_convolution_computes_what_lax_computes(case):
    """Any dimension numbers (1-3 spatial dims), stride, padding, both dilations, feature or
    batch groups; small integers, so any summation order gives the same floats."""
    lhs, rhs, params = make_case(case)

    def f(lhs, rhs):
        return lax.conv_general_dilated_p.bind(lhs, rhs, **params, out_sharding=None)

    traced = jax.jit(f).trace(lhs, rhs)
    compiled = _canonical.lower(traced, "cpu").compile()
    np.testing.assert_array_equal(np.asarray(compiled(lhs, rhs)), np.asarray(f(lhs, rhs)))
    assert all_canonical(conv_labels(compiled))


def loop_loss(p, x):
    """Convolutions a user might write in a loss: NCHW/OIHW, a grouped one, 1-D and 3-D."""
    y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW",
                                                                              "NCHW"))
    y = jnp.tanh(y)
    y = lax.conv_general_dilated(y, p["g"], (2, 1), "VALID", rhs_dilation=(1, 2),
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                 feature_group_count=2)
    z = lax.conv_general_dilated(x[:, :, 0, :], p["k1"], (1,), "SAME",
                                 dimension_numbers=("NCW", "OIW", "NCW"))
    v = lax.conv_general_dilated(x[:, :, None, :, :], p["k3"], (1, 1, 1), "SAME",
                                 dimension_numbers=("NCDHW", "OIDHW", "NCDHW"))
    return jnp.mean(y ** 2) + jnp.mean(z ** 2) + jnp.mean(v ** 2)


def loop_params():
    k = jax.random.split(jax.random.key(1), 4)
    return {"w": 0.3 * jax.random.normal(k[0], (4, 2, 3, 3)),
            "g": 0.3 * jax.random.normal(k[1], (4, 2, 3, 3)),
            "k1": 0.3 * jax.random.normal(k[2], (3, 2, 5)),
            "k3": 0.3 * jax.random.normal(k[3], (2, 2, 1, 3, 3))}


def sgd_loop(p, x):
    def body(_, p):
        g = jax.grad(loop_loss)(p, x)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
    return jax.lax.fori_loop(0, 3, body, p)


def test_inside_a_loop_xla_leaves_gradient_convs_non_canonical_and_the_rule_fixes_them():
    x = jax.random.normal(jax.random.key(0), (2, 2, 8, 8))
    p = loop_params()
    traced = jax.jit(sgd_loop).trace(p, x)
    plain = traced.lower().compile()
    assert not all_canonical(conv_labels(plain))  # the premise: XLA's pass skips loop bodies
    fixed = _canonical.lower(traced, "cpu").compile()
    assert conv_labels(fixed) and all_canonical(conv_labels(fixed))
    for a, b in zip(jax.tree.leaves(fixed(p, x)), jax.tree.leaves(plain(p, x)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_float64_and_complex_convolutions_keep_jaxs_lowering():
    x = jnp.arange(12.0).reshape(1, 1, 12) + 1j
    w = jnp.ones((1, 1, 3), jnp.complex64)

    def f(x, w):
        return lax.conv_general_dilated(x, w, (1,), "SAME")

    got = _canonical.lower(jax.jit(f).trace(x, w), "cpu").compile()(x, w)
    np.testing.assert_allclose(np.asarray(got), np.asarray(f(x, w)), rtol=1e-6)


@pytest.mark.parametrize("mode", ["scan", "step"])
def test_fit_compiles_only_canonical_convolutions(mode):
    """LeNet's first layer (shift_add: its kernel gradient was bf01_oi01->01bf inside the
    loop), a strided grouped conv and a user's NCHW lax conv in the same loss."""
    model = nn.Stack([nn.Conv(6, 5, padding="VALID"), nn.Activation("relu"),
                      nn.Conv(4, 3, stride=2, groups=2), nn.Flatten(), nn.Dense(3)])
    x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 1))
    params = {"m": model.init(jax.random.key(1), x.shape),
              "w": 0.1 * jnp.ones((2, 1, 3, 3))}

    def loss(p, b):
        extra = lax.conv_general_dilated(jnp.moveaxis(b, -1, 1), p["w"], (1, 1), "SAME")
        return jnp.mean(model.apply(p["m"], b) ** 2) + jnp.mean(extra ** 2)

    jaxconv.clear_caches()
    out = jaxconv.fit(loss, params, optax.adam(1e-2), x, steps=4, mode=mode, progress=False)
    assert out.mode == mode
    labels = set()
    for compiled in _trainer._CACHE.values():
        labels |= conv_labels(compiled)
    assert labels and all_canonical(labels)


def test_without_the_lowering_parameters_lower_warns_and_lowers_as_jax_does(monkeypatch):
    monkeypatch.setattr(_canonical, "_lowering_parameters", lambda: None)
    _canonical._warn_unavailable.cache_clear()
    traced = jax.jit(sgd_loop).trace(loop_params(), jnp.ones((2, 2, 8, 8)))
    with pytest.warns(RuntimeWarning, match="no lowering parameters to rewrite convolutions"):
        lowered = _canonical.lower(traced, "cpu")
    assert not all_canonical(conv_labels(lowered.compile()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _canonical.lower(traced, "cpu")  # once per process
    _canonical._warn_unavailable.cache_clear()


def test_other_platforms_are_lowered_as_jax_does():
    traced = jax.jit(sgd_loop).trace(loop_params(), jnp.ones((2, 2, 8, 8)))
    assert _canonical.lower(traced, "gpu").as_text() == traced.lower().as_text()


@pytest.mark.parametrize("algorithm,x_shape,w_shape,opts", [
    ("xla", (4, 9, 9, 3), (3, 3, 3, 4), dict(stride=2, dilation=1)),
    ("xla", (2, 5, 6, 7, 2), (2, 3, 2, 2, 3), dict(stride=1, dilation=2)),
    ("shift_add", (8, 12, 12, 1), (5, 5, 1, 6), dict(stride=1, dilation=1)),
    ("shift_add", (2, 10, 3), (3, 3, 2), dict(stride=2, dilation=1)),
    ("depthwise", (2, 10, 10, 4), (3, 3, 1, 4), dict(stride=1, dilation=1, groups=4)),
])
def test_every_lowering_is_canonical_inside_a_loop_without_fits_rule(
        monkeypatch, algorithm, x_shape, w_shape, opts):
    """Users' own loops get no lowering rule: jaxconv's lowerings write their convolutions
    (gradients included) canonically themselves. shift_add's large-patch kernel gradient (a
    lax conv on [C, N, *sp]) was the non-canonical one."""
    from jaxconv.lowering import shift_add

    monkeypatch.setattr(shift_add, "DOT_MAX_PATCH_BYTES", 0)  # its conv kernel gradient
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = 0.1 * jax.random.normal(jax.random.key(1), w_shape)

    n = len(x_shape) - 2
    spec = "DHW"[3 - n:]

    def loss(w, lax_conv=False):
        if lax_conv:  # the oracle: lax's conv, differentiated by autodiff
            y = lax.conv_general_dilated(
                x, w, (opts["stride"],) * n, "VALID", rhs_dilation=(opts["dilation"],) * n,
                dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"),
                feature_group_count=opts.get("groups", 1))
        else:
            y = jaxconv.conv(x, w, padding="VALID", algorithm=algorithm, **opts)
        return jnp.sum(jnp.tanh(y) ** 2)

    def loop(w, lax_conv=False):
        step = lambda _, w: w - 0.1 * jax.grad(loss)(w, lax_conv)
        return jax.lax.fori_loop(0, 2, step, w)

    compiled = jax.jit(loop).lower(w).compile()
    labels = conv_labels(compiled)
    if algorithm == "depthwise":  # multiply-add loops and row-block reductions: no conv at all
        assert not labels
    else:
        assert labels and all_canonical(labels)
    np.testing.assert_allclose(np.asarray(compiled(w)), np.asarray(loop(w, True)),
                               rtol=1e-3, atol=1e-4)
