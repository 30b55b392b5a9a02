"""Shift-and-add lowering: one strided slice per kernel tap, multiplied and summed.

Exact for every option of ``conv`` in the sense ``auto`` requires: each output value is a
direct sum of its products (exact zeros stay zero, a NaN reaches only the outputs whose window
reads it); fast on CPU when ``taps * in_channels/groups * out`` is
small, where XLA's CPU convolution is slow. Works channels-first internally ([C, N, *spatial])
so size-1 channel axes never sit in the minor dimension, except for a single 1 -> 1 filter,
whose sums run channels-last (``_fma_single``). Differentiation goes through a custom
JVP whose kernel tangent is one matmul against the stacked tap windows, so the kernel gradient
is a single fast dot instead of one slow reduction per tap. Its multiply-adds are elementwise
and exact in float32 whatever ``precision`` says; ``precision`` goes to the dots of the kernel
tangent. Dtypes narrower than float32 are computed in float32 and rounded once at the end, as
XLA's own convolution accumulates them: summing taps in float8 or float4 would round every
partial sum (and float8_e8m0fnu cannot hold the zero padding).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv import _padding as padding_lib
from jaxconv.lowering import im2col, xla
from jaxconv.lowering._base import (
    ConvArgs,
    Lowering,
    float32_itemsize,
    in_float32,
    never,
    out_size,
    pad_spatial,
)

# Largest taps * (in_channels // groups) * out_channels that auto picks this lowering for;
# above it the elementwise work outgrows what XLA's conv or a GEMM does (benchmarks/NOTES.md).
# 150 (issue 14, when FFT stopped taking small kernels): up to 150 it beat xla forward and
# forward + grad on every shape measured (64x16x16 / 64x32x32 / 1x512x512, 3x3 1->16 and 2->8,
# 5x5 1->6, 9x9 and 10x10 1->1: fwd 4.7-27x, fwd+grad 1.5-8x); at 288 and 400 (3x3 1->32,
# 5x5 1->16) its forward + grad was ~2x slower than xla's.
MAX_MACS_PER_PIXEL = 150
# The forward alone with at most FEW_INPUT_CHANNELS input channels per group (first layers),
# up to FEW_CHANNELS_MAX_MACS (2-D: FEW_CHANNELS_MAX_MACS_2D): XLA:CPU's convolution contracts
# only taps * (<= 3) values per output there and runs far below peak. Measured (issue 19 item
# 2, plan_bench.py --draw 24 with seeds 0 and 1 and named first layers, 2026-12-03, NOTES.md),
# forward time as a fraction of xla's, default options / jaxconv.compiler_options(): 3-D
# 0.02-0.16 on all 10 drawn (128-3,456 multiply-adds); 1-D 0.04-0.85 on all 8 (24-1,152);
# 2-D 0.03-0.76 on all 25 up to 784 (7x7 1->16 0.44, 3x3 1->32 0.50 / 0.18), but from 800
# XLA's 2-D kernels (Eigen, YNNPACK: XLA:CPU has fast paths for 2-D convolutions only) catch
# up when there are many outputs: 5x5 1->32 1.28 / 0.48, 3x3 3->32 1.36 / 0.59, 4x4 2->32
# 1.54 / 2.04, 5x5 1->64 1.27 / 0.59. Not for the gradients: this lowering's input gradient is
# 2-100x slower than im2col's or xla's there (7x7 3->16 stride 2: 1,422 ms vs 106 and 168),
# and its kernel gradient no faster than xla's. Kernels of at most FEW_CHANNELS_MAX_TAPS taps,
# the most measured (15x15 1->6: 0.63, compiled in 1.5 s; every tap is unrolled, so compile
# time grows with taps).
FEW_INPUT_CHANNELS = 3
FEW_CHANNELS_MAX_MACS = 1400
FEW_CHANNELS_MAX_MACS_2D = 784
FEW_CHANNELS_MAX_TAPS = 225
# Grouped 2-D convs with at most im2col.GROUPED_FEW_CHANNELS input channels per group, float32,
# stride 1, at most GROUPED_MAX_TAPS taps: the input gradient always, and the forward from
# GROUPED_MIN_GROUPS groups. Measured with im2col's grouped cases (3x3 SAME on 16x32x32, ms,
# default options / compiler_options()): input gradient, 64 ch groups 16: 2.4 / 2.8 vs xla
# 40.7 / 21.0 and im2col 12.9 / 17.7; groups 32: 1.8 / 1.2 vs 54.6 / 23.4 and 17.6; 32 ch
# groups 8: 0.85 / 0.78 vs 11.1 / 8.5 and 4.7; 16 ch groups 4: 0.44 / 0.41 vs 4.4 / 4.2 and
# 2.1; 5x5 64 ch groups 16: 9.7 / 10.6 vs 96.7 / 42.9 and 76.2. Forward, 64 ch groups 16: 5.7
# / 3.3 vs im2col 15.9 / 5.7; groups 32: 3.8 / 3.4 vs 9.1 / 9.2; 5x5 groups 16: 9.0 / 9.0 vs
# 60.5 / 59.8; but with fewer groups its forward lost to im2col (groups 8: 11.9 vs 3.3; groups
# 4: 2.8 vs 1.7). Stride 1 only: its strided input gradient is slow (above).
GROUPED_MIN_GROUPS = 16
GROUPED_MAX_TAPS = 25
# Largest stacked-window matrix the kernel gradient is computed from (see ``_w_tangent``).
DOT_MAX_PATCH_BYTES = 2**20


def _grouped_few_channels(args: ConvArgs) -> str | None:
    if (args.groups == 1 or args.depthwise or args.c_group > im2col.GROUPED_FEW_CHANNELS
            or args.dtype != jnp.float32 or args.layout.ndim != 2
            or any(s != 1 for s in args.stride) or args.taps > GROUPED_MAX_TAPS):
        return None
    if args.part == "input_grad" or (args.part == "forward"
                                     and args.groups >= GROUPED_MIN_GROUPS):
        return (
            f"a grouped 2-D conv with {args.c_group} input channel(s) per group and "
            f"{args.groups} groups: XLA:CPU's grouped convolution is slow there, and this "
            "lowering's slices and fused multiply-adds beat im2col's per-group GEMMs"
        )
    return None


def prefers(args: ConvArgs) -> str | None:
    macs = args.macs_per_pixel
    grouped = _grouped_few_channels(args)
    if grouped is not None:
        return grouped
    if args.dtype == jnp.float64 and macs > args.taps:
        return None  # float64 with channels: im2col's GEMM or XLA's loop (im2col.prefers)
    if macs <= MAX_MACS_PER_PIXEL:
        return (
            f"few multiply-adds per output pixel ({macs} <= {MAX_MACS_PER_PIXEL}): strided "
            "slices and one fused multiply-add loop beat XLA's CPU convolution"
        )
    limit = FEW_CHANNELS_MAX_MACS_2D if args.layout.ndim == 2 else FEW_CHANNELS_MAX_MACS
    if (args.part == "forward" and args.c_group <= FEW_INPUT_CHANNELS and macs <= limit
            and args.taps <= FEW_CHANNELS_MAX_TAPS):
        return (
            f"{args.c_group} input channel(s) per group and {macs} <= {limit} "
            "multiply-adds per output pixel: XLA's CPU convolution contracts only "
            f"{args.taps * args.c_group} values per output and runs far slower than strided "
            "slices and one fused multiply-add loop (the forward only: this lowering's "
            "gradients are slower than others' here)"
        )
    return None


def _windows(x, kernel, stride, dilation, first=2):
    """Each tap's strided window of the padded input, in tap order.

    The spatial axes of ``x`` start at ``first``: 2 for [C, N, *spatial], 1 for [N, *spatial, C].
    """
    n = len(kernel)
    axes = range(first, first + n)
    out = [
        out_size(x.shape[a], k, s, d) for a, k, d, s in zip(axes, kernel, dilation, stride,
                                                            strict=True)
    ]
    for tap in itertools.product(*(range(k) for k in kernel)):
        start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
        for a, t, d, o, s in zip(axes, tap, dilation, out, stride, strict=True):
            start[a], limit[a], strides[a] = t * d, t * d + (o - 1) * s + 1, s
        yield tap, lax.slice(x, start, limit, strides)


def _fma(x, w, stride, dilation, groups):
    """[C, N, *sp] x [*k, C // groups, O] -> [O, N, *out] as sums of scaled windows."""
    n = w.ndim - 2
    c_group, o_group = w.shape[n], w.shape[n + 1] // groups
    bcast = (1,) * (n + 1)
    acc = [None] * groups
    for tap, window in _windows(x, w.shape[:n], stride, dilation):
        for g in range(groups):
            for c in range(c_group):
                coef = w[(*tap, c, slice(g * o_group, (g + 1) * o_group))]
                term = coef.reshape(o_group, *bcast) * window[g * c_group + c][None]
                acc[g] = term if acc[g] is None else acc[g] + term
    return acc[0] if groups == 1 else jnp.concatenate(acc, axis=0)


def _patch_matmul(x, w, stride, dilation, groups, precision):
    """The same map as ``_fma`` as one batched matmul of stacked windows with the kernel."""
    n = w.ndim - 2
    taps = math.prod(w.shape[:n])
    c_group, out_ch = w.shape[n], w.shape[n + 1]
    windows = jnp.stack([win for _, win in _windows(x, w.shape[:n], stride, dilation)])
    out_sp = windows.shape[3:]
    # windows [taps, C, N, *out] -> [G, taps * Cg, M]; kernel [*k, Cg, O] -> [G, taps * Cg, Og]
    p = windows.reshape(taps, groups, c_group, -1).transpose(1, 0, 2, 3)
    p = p.reshape(groups, taps * c_group, -1)
    k = w.reshape(taps, c_group, groups, out_ch // groups).transpose(2, 0, 1, 3)
    k = k.reshape(groups, taps * c_group, out_ch // groups)
    if groups == 1:  # XLA's CPU dot is much faster without a (trivial) batch dim
        y = lax.dot_general(k[0], p[0], (((0,), (0,)), ((), ())), precision=precision)  # [O, M]
    else:
        y = lax.dot_general(k, p, (((1,), (1,)), ((0,), (0,))), precision=precision)  # [G, Og, M]
    return y.reshape(out_ch, x.shape[1], *out_sp)


def _lax_conv(x, w_dot, stride, dilation, groups, precision):
    """lax's conv of the [C, N, *sp] input and [*k, Cg, O] kernel tangent used here, as
    [O, N, *out], written channels-last so that its transpose, the kernel gradient, is a
    canonical convolution (XLA:CPU runs any other form with its naive loop inside a loop
    body: LeNet-5's first layer made fit's steps 3.2x slower, benchmarks/NOTES.md)."""
    n = w_dot.ndim - 2
    y = xla.kernel_linear_conv(jnp.moveaxis(x, (0, 1), (n + 1, 0)), w_dot, stride=stride,
                               pads=((0, 0),) * n, dilation=dilation, groups=groups,
                               precision=precision)
    return jnp.moveaxis(y, (0, n + 1), (1, 0))


def _w_tangent(x, w_dot, stride, dilation, groups, precision):
    """conv(x, w_dot), in the form whose transpose (the kernel gradient) is fastest.

    Up to ``DOT_MAX_PATCH_BYTES`` of stacked windows, one matmul against them: inside a
    ``lax.scan`` fit on fixed data XLA hoists the windows out of the loop (task A: 26 us per
    Adam step, vs 76 us as per-tap reductions and 125 us as lax's kernel-gradient conv).
    Above it, writing and re-reading the windows costs more than XLA's kernel-gradient conv
    (1x512x512x1: 0.95 ms vs 2.9 ms; 1x512x512x2 -> 4: 5.7 ms vs 38 ms).
    """
    n = w_dot.ndim - 2
    windows = math.prod(w_dot.shape[:n]) * x.size // math.prod(x.shape[2:])
    out = [out_size(x.shape[2 + i], w_dot.shape[i], stride[i], dilation[i]) for i in range(n)]
    if windows * math.prod(out) * x.dtype.itemsize <= DOT_MAX_PATCH_BYTES:
        return _patch_matmul(x, w_dot, stride, dilation, groups, precision)
    return _lax_conv(x, w_dot, stride, dilation, groups, precision)


def _dilate_and_pad(kernel, x_sizes, g_sizes, stride, dilation):
    """``lax.pad`` config of the spatial axes that turns the output cotangent ``g`` into the
    input of a stride-1 correlation with the flipped kernel giving the input gradient."""
    cfg = []
    for k, size, g_size, s, d in zip(kernel, x_sizes, g_sizes, stride, dilation, strict=True):
        k_eff = (k - 1) * d + 1
        cfg.append((k_eff - 1, size - 1 - (g_size - 1) * s, s - 1))
    return cfg


def padded_cotangent_size(args: ConvArgs) -> int:
    """Elements of the cotangent as ``_dilate_and_pad`` leaves it for the input gradient:
    ``padded size + effective kernel - 1`` per spatial axis."""
    k_eff = padding_lib.effective_kernel(args.kernel, args.dilation)
    sizes = [s + k - 1 for s, k in zip(args.padded_spatial, k_eff, strict=True)]
    return args.out_channels * args.x_shape[0] * math.prod(sizes)


def _input_grad(g, w, x_shape, stride, dilation, groups):
    """The input gradient [O, N, *out] -> [C, N, *sp] as one pad and one shift-and-add.

    ``g`` is dilated by the stride and padded once, then correlated with the flipped kernel
    (in/out channels swapped), so XLA runs a single fused multiply-add loop instead of one
    padded copy of ``g`` per tap.
    """
    n = w.ndim - 2
    kernel = w.shape[:n]
    c_group, out_ch = w.shape[n], w.shape[n + 1]
    o_group = out_ch // groups
    cfg = _dilate_and_pad(kernel, x_shape[2:], g.shape[2:], stride, dilation)
    g = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0)] * 2 + cfg)
    w2 = jnp.flip(w, axis=tuple(range(n))).reshape(*kernel, c_group, groups, o_group)
    w2 = w2.transpose(*range(n), n + 2, n + 1, n).reshape(*kernel, o_group, groups * c_group)
    return _fma(g, w2, (1,) * n, dilation, groups)


def _x_tangent(x_dot, w, stride, dilation, groups):
    """conv(x_dot, w), written as the transpose of ``_input_grad`` so that reverse mode,
    which transposes it back, runs ``_input_grad``."""
    n = w.ndim - 2
    out = [out_size(x_dot.shape[2 + i], w.shape[i], stride[i], dilation[i]) for i in range(n)]
    g = jax.ShapeDtypeStruct((w.shape[n + 1], x_dot.shape[1], *out), x_dot.dtype)
    grad = functools.partial(
        _input_grad, w=w, x_shape=x_dot.shape, stride=stride, dilation=dilation, groups=groups
    )
    (y_dot,) = jax.linear_transpose(grad, g)(x_dot)
    return y_dot


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_cf(x, w, stride, dilation, groups, precision):
    return _fma(x, w, stride, dilation, groups)


@functools.partial(_conv_cf.defjvp, symbolic_zeros=True)
def _conv_cf_jvp(stride, dilation, groups, precision, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    y = _fma(x, w, stride, dilation, groups)
    y_dot = jnp.zeros_like(y)
    if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        y_dot = y_dot + _x_tangent(x_dot, w, stride, dilation, groups)
    if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
        y_dot = y_dot + _w_tangent(x, w_dot, stride, dilation, groups, precision)
    return y, y_dot


def _fma_single(x, w, stride, dilation):
    """[N, *sp, 1] x [*k, 1, 1] -> [N, *out, 1]: ``_fma``'s sums for a single 1 -> 1 filter.

    The same sums in channels-last order: XLA:CPU runs a small loop fusion of this shape on one
    thread, where it splits the channels-first one over the cores and the hand-off costs more
    than the arithmetic (task A forward: 25 us vs 55 us per call; benchmarks/NOTES.md).
    """
    n = w.ndim - 2
    acc = None
    for tap, window in _windows(x, w.shape[:n], stride, dilation, first=1):
        term = window * w[(*tap, 0, 0)]  # [N, *out, 1] * a scalar
        acc = term if acc is None else acc + term
    return acc


def _input_grad_single(g, w, x_shape, stride, dilation):
    """``_input_grad`` of ``_fma_single``: [N, *out, 1] -> [N, *sp, 1]."""
    n = w.ndim - 2
    cfg = _dilate_and_pad(w.shape[:n], x_shape[1:-1], g.shape[1:-1], stride, dilation)
    g = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), *cfg, (0, 0, 0)])
    return _fma_single(g, jnp.flip(w, axis=tuple(range(n))), (1,) * n, dilation)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_single(x, w, stride, dilation, precision):
    return _fma_single(x, w, stride, dilation)


@functools.partial(_conv_single.defjvp, symbolic_zeros=True)
def _conv_single_jvp(stride, dilation, precision, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    y = _fma_single(x, w, stride, dilation)
    y_dot = jnp.zeros_like(y)
    if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        # written as the transpose of the input gradient, as ``_x_tangent``
        grad = functools.partial(_input_grad_single, w=w, x_shape=x_dot.shape, stride=stride,
                                 dilation=dilation)
        (x_term,) = jax.linear_transpose(grad, jax.ShapeDtypeStruct(y.shape, y.dtype))(x_dot)
        y_dot = y_dot + x_term
    if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
        # one input and one output channel: [N, *sp, 1] and [1, N, *sp] are the same array
        x_cf = x.reshape(1, *x.shape[:-1])
        y_dot = y_dot + _w_tangent(x_cf, w_dot, stride, dilation, 1, precision).reshape(y.shape)
    return y, y_dot


@in_float32
def conv(x, w, args):
    lay = args.layout
    n = lay.ndim
    if not lay.channels_last:
        w = jnp.moveaxis(w, (0, 1), (n + 1, n))  # [*k, C // groups, O]
    if x.shape[lay.channel_axis] == 1 and w.shape[-1] == 1:  # a single 1 -> 1 filter
        x = x.reshape(x.shape[0], *(x.shape[a] for a in lay.spatial_axes), 1)  # [N, *sp, 1]
        x = pad_spatial(x, args.pads)
        y = _conv_single(x, w, args.stride, args.dilation, args.precision)  # [N, *out, 1]
        return y if lay.channels_last else y.reshape(y.shape[0], 1, *y.shape[1:-1])
    x = pad_spatial(jnp.moveaxis(x, lay.channel_axis, 0), args.pads, first=2)  # [C, N, *sp]
    y = _conv_cf(x, w, args.stride, args.dilation, args.groups, args.precision)
    return jnp.moveaxis(y, 0, lay.channel_axis)


def temporaries(args: ConvArgs) -> int:
    """Bytes materialised for ``args.part``: the padded channels-first copy of x (forward and
    kernel gradient); the input gradient's dilated and padded cotangent (``_input_grad``); for
    the kernel gradient, its stacked tap windows up to ``DOT_MAX_PATCH_BYTES``, else the
    transposed copies of x and the cotangent that xla's kernel-gradient conv reads
    (``_w_tangent``). Each tap's window in the multiply-add loops is fused, not stored."""
    item = float32_itemsize(args)
    if args.part == "input_grad":
        return padded_cotangent_size(args) * item
    x_copy = args.padded_size * item
    if args.part == "forward":
        return x_copy
    windows = args.taps * args.in_channels * args.x_shape[0] * math.prod(args.out_spatial) * item
    if windows <= DOT_MAX_PATCH_BYTES:
        return x_copy + windows
    return 2 * x_copy + args.out_size * item


LOWERING = Lowering("shift_add", conv, declines=never, prefers=prefers, temporaries=temporaries)
