"""im2col lowering: the conv as GEMMs of stacked input patches with the reshaped kernel.

Exact for every option of ``conv`` (N-D, stride, dilation, groups, both layouts) in the sense
``auto`` requires: each output value is a dot of its own patch row with the kernel, a direct sum
of its products; ``precision`` goes to its dots. float16/bfloat16 are gathered and multiplied in
float32 and rounded once, so the input gradient (the transpose of the patch gathering) also
sums in float32. The patch matrix ``[pixels, taps * Cg]`` times the kernel ``[taps * Cg, Og]``
runs on XLA's CPU dot, which is several times faster than XLA's CPU convolution once there
are a few channels. Plain autodiff differentiates it: the kernel gradient is the GEMM
``patches^T @ g`` and the input gradient the transpose of the patch gathering (slices and a
concatenation, no convolution, so nothing here depends on XLA's convolution canonicalisation
inside loops). Must not build big temporaries: XLA:CPU mallocs each call's scratch afresh,
and above glibc's 32 MiB mmap threshold every page of it faults in again on every call (a
72 MB patch matrix cost 5x its GEMM), so the batch runs in chunks of at most ``CHUNK_BYTES``
of patches. Under ``fit``'s restarts (a ``jax.vmap`` over the named axis ``RESTARTS_AXIS``)
the R copies share that budget: chunks are R times smaller. Limitation: any other
``jax.vmap`` axis is invisible here, so R copies then hold R chunks at once (8 copies of a
16x32x32x16 3x3 16->32 conv: 57.5 vs 7.2 MiB of temporaries); jax's
``custom_vmap``/``sequential_vmap``, which could run them one after another, have no
reverse-mode autodiff (tests/test_lowering.py).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.lowering._base import (
    ConvArgs,
    Lowering,
    channels_last,
    convs_on_eigen,
    in_float32,
    out_size,
    pad_spatial,
    vmapped_copies,
)

# Patch bytes per chunk of the batch: small enough to stay cached and below the mmap threshold
# (C and E ran fastest between 2 and 4 MiB; 16 MiB was 1.5-1.7x slower; benchmarks/NOTES.md).
CHUNK_BYTES = 4 * 2**20
# One batch element's patch matrix above this is not built at all (memory, not speed).
MAX_ITEM_PATCH_BYTES = 2**28
# auto prefers im2col from this many input channels per group and output channels: its GEMM is
# too thin below (5x5 3 -> 16: no faster than lax; 3x3 16 -> 32: 2.5-3.5x faster than lax)...
AUTO_MIN_IN_CHANNELS = 8
AUTO_MIN_OUT_CHANNELS = 8
# ... and while one batch element's patches are this small (im2col chunks over the batch
# only; a single 8 MiB+ patch matrix per image starts to page-fault on every call).
AUTO_MAX_ITEM_BYTES = 2**23


def item_patch_bytes(args: ConvArgs) -> int:
    """Bytes of one batch element's patch matrix (the unit this lowering chunks by)."""
    out = args.out_spatial
    if all(s == 1 for s in args.stride):  # the flat form makes patches at every input pixel
        axes = args.layout.spatial_axes
        out = tuple(args.x_shape[a] + lo + hi for a, (lo, hi) in zip(axes, args.pads,
                                                                     strict=True))
    # narrow dtypes are gathered in float32 (see ``conv``)
    return math.prod(out) * args.taps * args.in_channels * max(args.dtype.itemsize, 4)


def declines(args: ConvArgs) -> str | None:
    size = item_patch_bytes(args)
    if size > MAX_ITEM_PATCH_BYTES:
        return (
            f"one batch element's patch matrix would take {size / 2**20:.0f} MiB > "
            f"{MAX_ITEM_PATCH_BYTES / 2**20:.0f} MiB"
        )
    return None


# Convs with at most this many input channels per group (first layers), float32, where XLA's
# convolutions are slow (issue 19 item 2, plan_bench.py --draw 24 with seeds 0 and 1 and named
# first layers, 2026-12-03, NOTES.md): the input gradient (a convolution with <= 3 output
# features for XLA) was faster as this lowering's patch-GEMM transpose on 16 of 18 drawn calls
# of seed 0 under both option sets (1-D to 3-D: 3x3x3 1->32 26 vs xla 486 ms, 5x5 2->4 18 vs
# 69, 7x7 3->64 27 vs 95, 5x5 1->64 15 vs 40; lost 1.2x once, 6x6 3->32). 2-D kernel gradients
# stay with xla (within 1.3x of the best on most draws under jaxconv.compiler_options()).
FEW_INPUT_CHANNELS = 3
# Every part of every float32 3-D conv (``_three_d``), under both option sets: XLA:CPU has no
# fast 3-D convolution (neither Eigen nor YNNPACK takes one). First layers (1-3 channels,
# 2026-12-03): forward 0.06-0.48 of xla's time on all 10 drawn, kernel gradients 0.4-1.0.
# Hidden layers (plan_bench.py's 3d_* cases, benchmarks/plan_3d_results.json,
# 2026-12-05, quiet; ms fwd / input grad / kernel grad, default options; compiler_options()
# within 10%): 8x16^3 3x3x3 4->16 im2col 2.7 / 4.7 / 2.8 vs xla 17.7 / 23.4 / 9.4; 6->12 3.9 /
# 6.8 / 4.2 vs 26.0 / 29.7 / 13.1; 8->16 3.8 / 8.9 / 4.5 vs 12.2 / 23.7 / 14.4; 4x12^3 16->32
# 2.5 / 4.4 / 3.7 vs 5.3 / 9.9 / 11.6; 4x16^3 32->32 stride 2 1.6 / 6.2 / 1.5 vs 2.8 / 112.9 /
# 15.4; groups 8 (4 per group) 7.0 / 10.3 / 10.2 vs 55.5 / 59.6 / 35.8. Until then auto ran xla
# for 3-D convs with 4-7 input channels, and for every 3-D conv with 4+ under
# compiler_options(), i.e. inside fit. A 3-D forward within shift_add's range goes to
# shift_add (asked first).
# Grouped 2-D convs (1 < groups, not depthwise) with at most this many input channels per
# group, float32: XLA:CPU's grouped convolution is slow there under both option sets (with its
# default options YNNPACK runs 2-D grouped convs, 3-10x behind Eigen on every grouped case;
# Eigen itself is slow in the forward with few channels per group). Measured (plan_bench.py's
# g* cases, benchmarks/plan_grouped_results.json, 2026-12-05, NOTES.md), 3x3 SAME on
# 16x32x32, ms fwd / kernel grad, default options: 64 ch groups 16 (4 -> 4 per group) xla 39.9
# / 30.6, im2col 15.9 / 10.8; groups 32 (2 -> 2) 52.8 / 34.9 vs 9.1 / 9.9; 32 ch groups 8
# 11.0 / 5.1 vs 3.3 / 6.3; 16 ch groups 4 4.0 / 2.5 vs 1.7 / 2.3; 5x5 64 ch groups 16 96.8 /
# 75.7 vs 60.5 / 69.5. Under compiler_options() the forwards 8.9 vs 2.9 and 4.0 vs 1.6 (groups
# 8 and 4; with 16+ groups shift_add is asked first and takes them), the kernel gradients
# 1.2-1.5x faster on xla: not preferred there. Input gradients (default options): 12.9 vs
# 40.7, 17.6 vs 54.6, 4.7 vs 11.1, 2.1 vs 4.4, 76.2 vs 96.7 (at stride 1 shift_add, asked
# first, takes them). 3-D grouped convs: every 3-D conv is im2col's (``_three_d``). 1-D
# grouped convs reach Eigen under both option sets (16x512x64, k5, groups 4: xla 2.3 ms,
# im2col 4.4): not preferred.
GROUPED_FEW_CHANNELS = 4


def _three_d(args: ConvArgs) -> str | None:
    if (args.layout.ndim != 3 or args.depthwise or args.dtype != jnp.float32
            or item_patch_bytes(args) > AUTO_MAX_ITEM_BYTES):
        return None
    return (
        f"a 3-D conv ({args.c_group} input channel(s) per group): XLA:CPU has no fast 3-D "
        "convolution under either option set, while this lowering's GEMMs run on its fast dot"
    )


def _few_input_channels(args: ConvArgs) -> str | None:
    if (args.c_group > FEW_INPUT_CHANNELS or args.depthwise or args.dtype != jnp.float32
            or item_patch_bytes(args) > AUTO_MAX_ITEM_BYTES):
        return None
    if args.part == "input_grad":
        return (
            f"the input gradient of a conv with {args.c_group} input channel(s) per group: "
            "XLA's gradient convolution has that few output features and is slow; the "
            "transpose of this lowering's patch GEMM is not"
        )
    return None


def _grouped_few_channels(args: ConvArgs) -> str | None:
    if (args.groups == 1 or args.depthwise or args.c_group > GROUPED_FEW_CHANNELS
            or args.dtype != jnp.float32 or args.layout.ndim != 2
            or item_patch_bytes(args) > AUTO_MAX_ITEM_BYTES):
        return None
    if args.part == "forward" or not convs_on_eigen():
        return (
            f"a grouped 2-D conv with {args.c_group} input channel(s) per group: XLA:CPU's "
            "grouped convolution is slow there, while this lowering's per-group GEMMs run on "
            "its fast dot"
        )
    return None


# XLA:CPU's float64 convolution loop runs at a fixed rate per multiply-add, while the GEMM
# pays for building the [pixels, K] patch matrix and gains with K and the output channels.
# Measured forward, quiet Intel Xeon (AVX-512), 2026-12-06, 32 timings of 30 shapes, 1-3-D,
# stride, dilation, SAME (benchmarks/NOTES.md): with K = taps * C/G <= 50, at most 900
# multiply-adds per output pixel and more than one tap, XLA's loop was faster on all 21
# (1.05-7.1x: B 3x3 1->8 on 64x16x16 74 vs 513 us, 5x5 1->32 on 64x28x28 1.37 vs 4.37 ms,
# 1-D 6x1->4 521 vs 3,665 us); outside them the GEMM won 8 of 11 (D 5x5 3->16 3.6 vs 12.9
# ms; a 1x1 16->32, no patches, 284 vs 773 us; 1-D 6x3->64 stride 2, 1,152 per pixel, 5.1 vs
# 9.5 ms), XLA the other 3 by 1.13-1.23x (K 72). Grouped convs were not measured: they keep
# the GEMM. The gradients keep it too (XLA's float64 gradient convolutions were 9x slower
# than im2col's on B).
F64_LOOP_MAX_MACS_PER_VALUE = 50
F64_LOOP_MAX_MACS_PER_PIXEL = 900


def f64_loop_forward(args: ConvArgs) -> bool:
    """Whether XLA's float64 convolution loop beats im2col's GEMM on this forward (within
    the measured bounds above)."""
    return (args.dtype == jnp.float64 and args.part == "forward" and args.taps > 1
            and args.groups == 1 and args.macs_per_value <= F64_LOOP_MAX_MACS_PER_VALUE
            and args.macs_per_pixel <= F64_LOOP_MAX_MACS_PER_PIXEL)


def prefers(args: ConvArgs) -> str | None:
    k = args.macs_per_value
    if args.dtype == jnp.float64:
        # XLA:CPU hands only F16/F32 convolutions to Eigen; a float64 one runs its naive loop,
        # while a float64 dot is still Eigen's GEMM. Measured (x64, fwd / fwd + grad): D 5x5
        # 3 -> 16 41 / 220 ms vs xla 227 / 1,778; B 3x3 1 -> 8 0.58 / 0.88 vs shift_add 0.45 /
        # 1.78 and xla 0.31 / 8.1; C 175 / 631 vs xla 368 / 3,008 (benchmarks/NOTES.md).
        # shift_add keeps the single 1 -> 1 filters (A, F), where no GEMM has any width.
        if args.c_group * args.o_group == 1:
            return None
        if f64_loop_forward(args):
            return None
        return (
            f"float64: XLA:CPU runs float64 convolutions as a naive loop (only float16/32 reach "
            f"Eigen), while the GEMM of the [pixels, {k}] patch matrix runs on Eigen's dot"
        )
    few = _three_d(args) or _few_input_channels(args) or _grouped_few_channels(args)
    if few is not None:
        return few
    if convs_on_eigen() and args.dtype != jnp.float64:
        # Compiled with YNNPACK's convolutions off (jaxconv.compiler_options(), as fit does),
        # XLA's Eigen convolution beats this GEMM forward and with gradients, 1.4-2.1x (C 43 /
        # 227 ms vs 94 / 311; E 52 / 264 vs 87 / 343; 32x32x32 3x3 32->32 18 / 82 vs 36 / 164;
        # 32x16x16 3x3 8->16 1.2 / 4.1 vs 2.0 / 8.0; fwd / fwd + grad, loaded, NOTES.md).
        return None
    if (
        args.dtype == jnp.bfloat16  # no gain measured
        or args.c_group < AUTO_MIN_IN_CHANNELS
        or args.o_group < AUTO_MIN_OUT_CHANNELS
        or item_patch_bytes(args) > AUTO_MAX_ITEM_BYTES
    ):
        return None
    return (
        f"{k} multiply-adds per output value: a GEMM of the [pixels, {k}] patch matrix with the "
        f"[{k}, {args.o_group}] kernel runs on XLA's fast CPU dot"
    )


def _gemm(p, k, precision):
    """[M, K] @ [K, O] with no batch dimension (XLA's CPU dot is much slower with one)."""
    return lax.dot_general(p, k, (((1,), (0,)), ((), ())), precision=precision)


def _windows(x, kernel, stride, dilation):
    """Each tap's strided window [N, *out, C] of the padded [N, *sp, C] input, in tap order."""
    n = len(kernel)
    out = [out_size(x.shape[1 + i], kernel[i], stride[i], dilation[i]) for i in range(n)]
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = [t * d for t, d in zip(tap, dilation, strict=True)]
        limit = [s + (o - 1) * st + 1 for s, o, st in zip(start, out, stride, strict=True)]
        yield lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *stride, 1))


def _gather_strided(x, w, stride, dilation, groups, precision):
    """Patches stacked from each tap's strided window: [N, *out, taps, C] @ [taps * Cg, Og]."""
    n = w.ndim - 2
    kernel, taps = w.shape[:n], math.prod(w.shape[:n])
    c_group, out_ch = w.shape[n], w.shape[n + 1]
    o_group = out_ch // groups
    wins = list(_windows(x, kernel, stride, dilation))
    out_shape = wins[0].shape[: n + 1]
    m = math.prod(out_shape)
    p = jnp.stack(wins, axis=-2)
    ys = []
    for g in range(groups):
        pg = p[..., g * c_group : (g + 1) * c_group].reshape(m, taps * c_group)
        wg = w[..., g * o_group : (g + 1) * o_group].reshape(taps * c_group, o_group)
        ys.append(_gemm(pg, wg, precision))
    y = ys[0] if groups == 1 else jnp.concatenate(ys, axis=-1)
    return y.reshape(*out_shape, out_ch)


def _gather_flat(x, w, dilation, groups, precision):
    """Stride 1: patches from row ranges of the flattened [N * prod(sp), C] input.

    Each tap's window is one contiguous range of rows, shifted by the tap's flat offset, so the
    patch matrix is a concatenation XLA copies fast (1.3-1.5x faster forward on C and D than
    stacked strided windows). Outputs are computed at every input position and the valid
    ones cropped: ``prod(sp) / prod(out)`` extra work (6% on C, 14% on E).
    """
    n = w.ndim - 2
    kernel, taps = w.shape[:n], math.prod(w.shape[:n])
    c_group, out_ch = w.shape[n], w.shape[n + 1]
    o_group = out_ch // groups
    sp = x.shape[1:-1]
    rows = x.shape[0] * math.prod(sp)
    xf = x.reshape(rows, x.shape[-1])
    row_strides = [math.prod(sp[i + 1 :]) for i in range(n)]
    offsets = [
        sum(t * d * r for t, d, r in zip(tap, dilation, row_strides, strict=True))
        for tap in itertools.product(*(range(k) for k in kernel))
    ]
    length = rows - max(offsets)
    ys = []
    for g in range(groups):
        xg = xf if groups == 1 else xf[:, g * c_group : (g + 1) * c_group]
        p = jnp.concatenate([lax.slice_in_dim(xg, o, o + length) for o in offsets], axis=1)
        wg = w[..., g * o_group : (g + 1) * o_group].reshape(taps * c_group, o_group)
        ys.append(_gemm(p, wg, precision))
    y = ys[0] if groups == 1 else jnp.concatenate(ys, axis=-1)
    y = jnp.pad(y, ((0, rows - length), (0, 0))).reshape(x.shape[0], *sp, out_ch)
    out = [out_size(sp[i], kernel[i], 1, dilation[i]) for i in range(n)]
    return lax.slice(y, (0,) * (n + 2), (x.shape[0], *out, out_ch))


def _gather(x, w, stride, dilation, groups, precision):
    """y = patches(x) @ W: x [N, *sp, C] padded, w [*k, Cg, O] -> [N, *out, O]."""
    if all(s == 1 for s in stride):
        return _gather_flat(x, w, dilation, groups, precision)
    return _gather_strided(x, w, stride, dilation, groups, precision)


def _in_chunks(fn, x, per_item_bytes):
    """``fn`` over batch chunks of x run one after another, each with <= CHUNK_BYTES of patches.

    The body is rematerialised so that reverse mode keeps no per-chunk patches alive either.
    """
    batch = x.shape[0]
    size = max([d for d in range(1, batch + 1) if batch % d == 0 and d * per_item_bytes
                <= CHUNK_BYTES] or [1])
    if size == batch:
        return fn(x)
    y = lax.map(jax.checkpoint(fn), x.reshape(batch // size, size, *x.shape[1:]))
    return y.reshape(batch, *y.shape[2:])


def _patch_item_bytes(x, w, stride, dilation):
    """Patch bytes per batch element (the flat form makes patches at every input position)."""
    n = w.ndim - 2
    if all(s == 1 for s in stride):
        out = x.shape[1:-1]
    else:
        out = [out_size(x.shape[1 + i], w.shape[i], stride[i], dilation[i]) for i in range(n)]
    return math.prod(out) * math.prod(w.shape[:n]) * x.shape[-1] * x.dtype.itemsize


def _conv_cl(x, w, stride, dilation, groups, precision):
    per_item = _patch_item_bytes(x, w, stride, dilation) * vmapped_copies()
    return _in_chunks(lambda xc: _gather(xc, w, stride, dilation, groups, precision), x,
                      per_item)


# float16/bfloat16 in float32 too: XLA's dot accumulates in float32 anyway, but the transpose
# of the patch gathering (the input gradient: each input pixel sums the cotangents of every
# patch that holds it) would add in the narrow dtype (bfloat16 4-10x less accurate than lax).
@in_float32
def conv(x, w, args):
    x, w = channels_last(x, w, args.layout)
    y = _conv_cl(pad_spatial(x, args.pads), w, args.stride, args.dilation, args.groups,
                 args.precision)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


def temporaries(args: ConvArgs) -> int:
    """Bytes materialised for any part: the batch's patch matrices (the forward and the kernel
    gradient build them, chunk by chunk; the input gradient builds their cotangent)."""
    return args.x_shape[0] * item_patch_bytes(args)


LOWERING = Lowering("im2col", conv, declines=declines, prefers=prefers,
                    temporaries=temporaries)
