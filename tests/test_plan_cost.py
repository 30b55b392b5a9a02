"""The planner's roofline model (jaxconv/lowering/_cost.py): each lowering's work per part
counted by hand, plan()'s explanation of every part, Plan's backward compatibility, and the
choices the model must not change. No timings: the fitted efficiencies are checked against
benchmarks/plan_model.py's fit of the timings on disk."""

import os
import sys

import jax.numpy as jnp
import pytest

import jaxconv
from jaxconv import lowering
from jaxconv.lowering import (
    _conv_args,
    _cost,
    compiling_with,
    depthwise,
    im2col,
    rows,
    shift_add,
    xla,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import plan_model  # noqa: E402

PARTS = ("forward", "input_grad", "kernel_grad")


def _args(x_shape, w_shape, part="forward", stride=1, padding="VALID", dilation=1, groups=1):
    args, _ = _conv_args("plan", x_shape, w_shape, jnp.float32, stride, padding, dilation,
                         groups, None, "zeros", None)
    return args._replace(part=part)


# C: 32x64x64x16, 3x3 16->32, VALID: 62x62 outputs, 144 multiply-adds per output value
C = ((32, 64, 64, 16), (3, 3, 16, 32))
C_OPERANDS = 4 * (32 * 64 * 64 * 16 + 3 * 3 * 16 * 32 + 32 * 62 * 62 * 32)
C_PATCHES = 32 * (64 * 64) * (9 * 16) * 4  # stride 1: a patch row at every input pixel
C_ROWS = 32 * 62 * 64 * 3 * 16 * 4  # [N * Ho, W, kh * C]
C_X, C_Y = 32 * 64 * 64 * 16 * 4, 32 * 62 * 62 * 32 * 4


@pytest.mark.parametrize("part", PARTS)
def test_flops_are_twice_the_multiply_adds_of_every_part(part):
    flops, _ = _cost.work(_args(*C, part), xla.LOWERING)
    assert flops == 2 * (32 * 62 * 62) * 32 * (3 * 3 * 16)
    flops, _ = _cost.work(_args((2, 10, 3), (3, 3, 4), part, stride=2), im2col.LOWERING)
    assert flops == 2 * (2 * 4) * 4 * (3 * 3)  # 1-D, stride 2: 4 outputs per image


@pytest.mark.parametrize(
    ("low", "part", "temporaries"),
    [(xla.LOWERING, "forward", 0),
     (xla.LOWERING, "input_grad", 0),
     (xla.LOWERING, "kernel_grad", C_X + C_Y),  # x and the cotangent transposed
     (im2col.LOWERING, "forward", C_PATCHES),
     (im2col.LOWERING, "input_grad", C_PATCHES),  # the patches' cotangent
     (im2col.LOWERING, "kernel_grad", C_PATCHES),
     (rows.LOWERING, "forward", C_ROWS),
     (rows.LOWERING, "input_grad", C_ROWS),
     (rows.LOWERING, "kernel_grad", C_PATCHES),  # im2col's kernel gradient
     (shift_add.LOWERING, "forward", C_X),  # the channels-first copy
     (shift_add.LOWERING, "input_grad", 32 * 32 * 66 * 66 * 4),  # padded by 2 each side
     # 9 x 16 x 32 x 62 x 62 x 4 bytes of windows > 1 MiB: xla's kernel gradient, its copies
     (shift_add.LOWERING, "kernel_grad", 2 * C_X + C_Y)],
    ids=lambda v: getattr(v, "name", v),
)
def test_bytes_are_operands_plus_twice_the_temporaries_on_c(low, part, temporaries):
    args = _args(*C, part)
    assert low.temporaries(args) == temporaries
    assert _cost.work(args, low)[1] == C_OPERANDS + 2 * temporaries


@pytest.mark.parametrize(
    ("low", "args", "temporaries"),
    [  # 2x8x8x1 SAME, 3x3 1->2: padded 10x10, 9 windows of 2x8x8 (< 1 MiB: one matmul)
     (shift_add.LOWERING, _args((2, 8, 8, 1), (3, 3, 1, 2), "kernel_grad", padding="SAME"),
      2 * 10 * 10 * 4 + 9 * 2 * 8 * 8 * 4),
     # stride 2, dilation 2 on 9x9: the cotangent dilated and padded to 9 + 5 - 1 per axis
     (shift_add.LOWERING, _args((1, 9, 9, 1), (3, 3, 1, 1), "input_grad", stride=2,
                                dilation=2), 13 * 13 * 4),
     # depthwise with multiplier 2: 2x8x8x4 SAME, 3x3, 4 groups -> 8 channels
     (depthwise.LOWERING, _args((2, 8, 8, 4), (3, 3, 1, 8), "forward", padding="SAME",
                                groups=4), 2 * 10 * 10 * 4 * 2 * 4),
     (depthwise.LOWERING, _args((2, 8, 8, 4), (3, 3, 1, 8), "input_grad", padding="SAME",
                                groups=4), 8 * 2 * 12 * 12 * 4),
     (depthwise.LOWERING, _args((2, 8, 8, 4), (3, 3, 1, 8), "kernel_grad", padding="SAME",
                                groups=4), 2 * 10 * 10 * 4 * 2 * 4 + 9 * 2 * 8 * 8 * 8 * 4),
     # im2col strided, 1-D: 4 outputs x 3 taps x 3 channels per image
     (im2col.LOWERING, _args((2, 10, 3), (3, 3, 4), "forward", stride=2), 2 * 4 * 3 * 3 * 4)],
    ids=["shift_add_window_matmul", "shift_add_strided_dilated", "depthwise_forward",
         "depthwise_input_grad", "depthwise_kernel_grad", "im2col_strided_1d"],
)
def test_temporaries_by_hand(low, args, temporaries):
    assert low.temporaries(args) == temporaries


def _parts(p):
    return {"forward": p, "input_grad": p.input_grad, "kernel_grad": p.kernel_grad}


@pytest.mark.parametrize("options", [None, "tuned"], ids=["default", "compiler_options"])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [(*C, {}), ((64, 28, 28, 1), (3, 3, 1, 32), {}), ((64, 16, 16, 1), (3, 3, 1, 1), {}),
     ((16, 17, 17, 17, 2), (3, 3, 3, 2, 8), {"padding": "SAME"})],
    ids=["C", "first_layer", "task_A", "3d"],
)
def test_plan_explains_every_part_in_roofline_terms(x_shape, w_shape, kwargs, options):
    options = jaxconv.compiler_options() if options else None
    p = jaxconv.plan(x_shape, w_shape, backend="cpu", compiler_options=options, **kwargs)
    peak, bandwidth = _cost.FMA_PEAK_GFLOPS * 1e9, _cost.MEMORY_GBPS * 1e9
    for part, q in _parts(p).items():
        assert "expected by the roofline model" in q.reason, part
        assert "of the FMA peak" in q.reason and "of the memory roof" in q.reason
        assert q.expected, part
        seconds = [e.seconds for e in q.expected]
        assert seconds == sorted(seconds) and q.expected[0].relative_time == 1.0
        for e in q.expected:
            assert e.compute_fraction == pytest.approx(e.flops / e.seconds / peak)
            assert e.memory_fraction == pytest.approx(e.bytes / e.seconds / bandwidth)
            assert max(e.compute_fraction, e.memory_fraction) <= 1.0 + 1e-12
            assert e.relative_time == pytest.approx(e.seconds / seconds[0])
        # where the thresholds' choice is not the model's first, the reason says so
        ranked = [e.algorithm for e in q.expected]
        if q.algorithm in ranked[1:]:
            assert f"the thresholds chose {q.algorithm}, which the model ranks" in q.reason
        else:
            assert "the thresholds chose" not in q.reason


def test_expected_lists_only_the_lowerings_that_accept_the_call():
    p = jaxconv.plan((32, 64, 64, 64), (3, 3, 1, 64), groups=64, padding="SAME", backend="cpu")
    assert [e.algorithm for e in p.expected] == ["depthwise", "xla"]
    p = jaxconv.plan((16, 17, 17, 17, 2), (3, 3, 3, 2, 8), backend="cpu")  # rows: 2-D only
    assert "rows" not in {e.algorithm for e in p.expected}


def test_no_expectation_off_cpu_or_off_float32():
    gpu = jaxconv.plan(*C, backend="gpu")
    assert gpu.expected == () and gpu.reason == (
        "backend 'gpu': lax.conv_general_dilated (cuDNN/TPU convs)")
    p = jaxconv.plan(*C, backend="cpu", dtype=jnp.float64)
    for q in _parts(p).values():
        assert q.expected == ()
        assert q.reason.endswith("no roofline expectation (the model's efficiencies were "
                                 "fitted on float32 timings of the exact lowerings)")


def test_explain_names_an_unmodelled_choice():
    with compiling_with(jaxconv.compiler_options()):  # depthwise was never timed so
        args = _args((32, 64, 64, 64), (3, 3, 1, 64), padding="SAME", groups=64)
        expected = _cost.expect(args, [depthwise.LOWERING, xla.LOWERING])
        assert [e.algorithm for e in expected] == ["xla"]
        assert _cost.explain("depthwise", expected).endswith(
            "; depthwise is not modelled for this part")


def test_expect_takes_a_table_and_skips_lowerings_without_an_entry():
    args = _args(*C)
    table = {("xla", "forward", False, "many"): 0.5, ("im2col", "forward", False, "many"): 0.25}
    expected = _cost.expect(args, [shift_add.LOWERING, im2col.LOWERING, xla.LOWERING], table)
    assert [e.algorithm for e in expected] == ["xla", "im2col"]
    flops = 2 * (32 * 62 * 62) * 32 * 144
    assert expected[0].seconds == pytest.approx(flops / (0.5 * _cost.FMA_PEAK_GFLOPS * 1e9))
    assert expected[1].relative_time == pytest.approx(2.0)
    # an efficiency above the roof never makes the time shorter than the bytes allow
    huge = {("xla", "forward", False, "many"): 1e9}
    (e,) = _cost.expect(args, [xla.LOWERING], huge)
    assert e.seconds == pytest.approx(C_OPERANDS / (_cost.MEMORY_GBPS * 1e9))
    assert e.memory_fraction == pytest.approx(1.0) and e.bound == "memory"
    assert expected[0].bound == "compute"
    assert "~100% of the memory roof (memory-bound;" in _cost.explain("xla", (e,))


def test_regimes():
    assert _cost.regime(_args(*C)) == "many"
    assert _cost.regime(_args((2, 8, 8, 3), (3, 3, 3, 4))) == "few"
    assert _cost.regime(_args((2, 8, 8, 8, 16), (3, 3, 3, 16, 4))) == "3-D"
    assert _cost.regime(_args((2, 8, 8, 4), (3, 3, 1, 4), groups=4)) == "depthwise"


def test_plan_stays_backward_compatible():
    p = lowering.Plan("xla", "why")
    assert p == lowering.Plan("xla", "why", None, None) == lowering.Plan("xla", "why", None,
                                                                          None, ())
    assert p.expected == () and p._replace(reason="because").expected == ()
    algorithm, reason, input_grad, kernel_grad = p[:4]
    assert (algorithm, reason, input_grad, kernel_grad) == ("xla", "why", None, None)
    q = jaxconv.plan(*C, backend="cpu")
    assert q[:2] == (q.algorithm, q.reason) and q[2] is q.input_grad and q[3] is q.kernel_grad


def test_the_fitted_efficiencies_are_the_fit_of_the_timings_on_disk():
    assert _cost.EFFICIENCY == plan_model.fit(plan_model.load())


# plan()'s choices recorded before the roofline model existed (forward, input gradient, kernel
# gradient): XLA's default options, jaxconv.compiler_options(), float64. The model explains;
# it must not change what auto runs.
CHOICES = [
    ((64, 16, 16, 1), (3, 3, 1, 1), {},
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add")),
    ((64, 16, 16, 1), (3, 3, 1, 8), {},
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add"),
     ("xla", "im2col", "im2col")),
    ((32, 64, 64, 16), (3, 3, 16, 32), {},
     ("rows", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((8, 128, 128, 3), (5, 5, 3, 16), {},
     ("xla", "im2col", "xla"),
     ("xla", "im2col", "xla"),
     ("im2col", "im2col", "im2col")),
    ((32, 32, 32, 64), (3, 3, 64, 64), {},
     ("rows", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((1, 512, 512, 1), (3, 3, 1, 1), {},
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add")),
    ((1, 1024, 1024, 1), (31, 31, 1, 1), {},
     ("xla", "xla", "xla"),
     ("xla", "xla", "xla"),
     ("xla", "xla", "xla")),
    ((32, 64, 64, 64), (3, 3, 1, 64), {"groups": 64, "padding": "SAME"},
     ("depthwise", "depthwise", "depthwise"),
     ("depthwise", "depthwise", "depthwise"),
     ("depthwise", "depthwise", "depthwise")),
    ((64, 14, 14, 6), (5, 5, 6, 16), {},
     ("xla", "xla", "xla"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((32, 32, 32, 8), (3, 3, 8, 16), {"padding": "SAME"},
     ("im2col", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((32, 32, 32, 16), (3, 3, 16, 16), {"padding": "SAME"},
     ("im2col", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((8, 26, 26, 20), (7, 7, 20, 1), {"padding": "SAME"},
     ("xla", "xla", "xla"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((16, 56, 56, 32), (3, 3, 32, 64), {"stride": 2},
     ("rows", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((64, 28, 28, 1), (3, 3, 1, 32), {},
     ("shift_add", "im2col", "xla"),
     ("shift_add", "im2col", "xla"),
     ("xla", "im2col", "im2col")),
    ((64, 28, 28, 1), (5, 5, 1, 32), {},
     ("xla", "im2col", "xla"),
     ("xla", "im2col", "xla"),
     ("xla", "im2col", "im2col")),
    ((32, 64, 64, 1), (7, 7, 1, 16), {"padding": "SAME"},
     ("shift_add", "im2col", "xla"),
     ("shift_add", "im2col", "xla"),
     ("xla", "im2col", "im2col")),
    ((8, 64, 64, 3), (7, 7, 3, 64), {"stride": 2, "padding": "SAME"},
     ("xla", "im2col", "xla"),
     ("xla", "im2col", "xla"),
     ("im2col", "im2col", "im2col")),
    ((64, 32, 32, 1), (15, 15, 1, 6), {},
     ("xla", "im2col", "xla"),
     ("xla", "im2col", "xla"),
     ("im2col", "im2col", "im2col")),
    ((16, 17, 17, 17, 2), (3, 3, 3, 2, 8), {"padding": "SAME"},
     ("shift_add", "im2col", "im2col"),
     ("shift_add", "im2col", "im2col"),
     ("im2col", "im2col", "im2col")),
    ((32, 13, 13, 13, 2), (3, 3, 3, 2, 64), {"stride": 2},
     ("im2col", "im2col", "im2col"),
     ("im2col", "im2col", "im2col"),
     ("im2col", "im2col", "im2col")),
    ((16, 16179, 1), (6, 1, 4), {},
     ("shift_add", "shift_add", "shift_add"),
     ("shift_add", "shift_add", "shift_add"),
     ("xla", "im2col", "im2col")),
    ((64, 1024, 3), (6, 3, 64), {"stride": 2, "padding": "SAME"},
     ("shift_add", "im2col", "xla"),
     ("shift_add", "im2col", "xla"),
     ("im2col", "im2col", "im2col")),
    ((8, 1024, 64), (16, 64, 64), {},
     ("im2col", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    ((4, 16, 10, 10), (32, 16, 3, 3), {"layout": "NCHW", "padding": "SAME"},
     ("rows", "im2col", "im2col"),
     ("xla", "xla", "xla"),
     ("im2col", "im2col", "im2col")),
    # since the grouped rule (im2col.GROUPED_FEW_CHANNELS): 4 input channels per group
    ((8, 16, 16, 8), (3, 3, 4, 16), {"groups": 2},
     ("im2col", "shift_add", "im2col"),
     ("im2col", "shift_add", "xla"),
     ("im2col", "im2col", "im2col")),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs", "default", "tuned", "float64"),
                         CHOICES, ids=[f"{x}x{w}" for x, w, *_ in CHOICES])
def test_the_model_changes_no_choice(x_shape, w_shape, kwargs, default, tuned, float64):
    for want, extra in ((default, {}), (tuned, {"compiler_options": jaxconv.compiler_options()}),
                        (float64, {"dtype": jnp.float64})):
        p = jaxconv.plan(x_shape, w_shape, backend="cpu", **kwargs, **extra)
        assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == want


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs", "forward"), [
    ((64, 16, 16, 1), (3, 3, 1, 8), {}, "xla"),  # K 9, 72 per pixel
    ((16, 32, 32, 2), (5, 5, 2, 18), {}, "xla"),  # K 50 (the bound), 900 per pixel (the bound)
    ((16, 32, 32, 3), (3, 3, 3, 32), {"stride": 2}, "xla"),  # K 27, 864
    ((8, 9, 9, 9, 1), (3, 3, 3, 1, 8), {}, "xla"),  # 3-D, K 27
    ((16, 1024, 1), (6, 1, 4), {"dilation": 2}, "xla"),  # 1-D, K 6
    ((16, 32, 32, 17), (3, 3, 17, 8), {}, "im2col"),  # K 153 > 50
    ((16, 32, 32, 2), (5, 5, 2, 19), {}, "im2col"),  # 950 per pixel > 900
    ((16, 32, 32, 16), (1, 1, 16, 32), {}, "im2col"),  # one tap: a plain GEMM, no patches
    ((8, 16, 16, 8), (3, 3, 4, 16), {"groups": 2}, "im2col"),  # grouped: not measured
])
def test_float64_forward_runs_xlas_loop_only_within_its_measured_bounds(x_shape, w_shape,
                                                                         kwargs, forward):
    """float64 forwards with few multiply-adds per output (value and pixel) go to XLA's
    convolution loop, the gradients stay on im2col's GEMM; float32 plans are unchanged."""
    p = jaxconv.plan(x_shape, w_shape, backend="cpu", dtype=jnp.float64, **kwargs)
    assert (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm) == (
        forward, "im2col", "im2col")
    if forward == "xla":
        assert p.reason.startswith("float64 with "), p.reason
        assert "XLA:CPU's float64 convolution loop" in p.reason
    assert "float64" not in jaxconv.plan(x_shape, w_shape, backend="cpu", **kwargs).reason


def test_float64_xla_forward_with_im2col_gradients_is_exact():
    """The mixed plan (xla forward, im2col gradients) against the numpy oracle and lax, under
    jit, vmap and grad."""
    import functools

    import jax
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    import _reference as ref

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 9, 2))
    w = rng.normal(size=(3, 3, 2, 5))
    with jax.enable_x64(True):
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        assert jaxconv.plan(x.shape, w.shape, dtype=jnp.float64).algorithm == "xla"
        f = jax.jit(functools.partial(jaxconv.conv, padding=1))
        want = ref.conv_nd(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        np.testing.assert_allclose(f(xj, wj), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jax.vmap(f, (0, None))(xj[:, None], wj)[:, 0], want,
                                   rtol=1e-12, atol=1e-12)

        def loss(conv, x, w):
            return jnp.sum(jnp.sin(conv(x, w)))

        lax_conv = functools.partial(jaxconv.conv, padding=1, algorithm="xla")
        got = jax.jit(jax.grad(functools.partial(loss, f), (0, 1)))(xj, wj)
        ref_g = jax.grad(functools.partial(loss, lax_conv), (0, 1))(xj, wj)
        for a, b in zip(got, ref_g, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
