"""Depthwise lowering: ``groups == in_channels``, as one broadcast multiply-add per kernel tap.

Each output value reads one input channel's window (``taps`` multiply-adds), so channels never
contract: with channels last, every tap is a strided window of the whole ``[N, *out, C]`` input
times that tap's ``C``-vector of weights, and XLA fuses the sum of the taps into one loop that
runs vectorised across channels. XLA's CPU grouped convolution has no GEMM to hand the work to
and measured 12x slower forward, 4.5x with gradients (workload H, benchmarks/NOTES.md).
A channel multiplier ``m`` (``out_channels = m * in_channels``) repeats each input channel ``m``
times first, so output channel ``c * m + j`` reads input channel ``c``, as in lax and torch.
Dtypes narrower than float32 are computed in float32 and rounded once, as XLA accumulates them.
A custom JVP keeps the gradients' memory independent of the number of taps: the input gradient
pads the cotangent once and runs one multiply-add loop with the flipped kernel; the kernel
gradient loops over blocks of output rows (``_kernel_grad``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.lowering._base import (
    ConvArgs,
    Lowering,
    channels_last,
    float32_itemsize,
    in_float32,
    pad_spatial,
)
from jaxconv.lowering.shift_add import _dilate_and_pad, _windows, padded_cotangent_size


def declines(args: ConvArgs) -> str | None:
    if not args.depthwise:
        return (
            f"not a depthwise conv: each output value sums {args.c_group} input channels "
            f"(groups={args.groups}); depthwise needs groups == in_channels"
        )
    return None


def prefers(args: ConvArgs) -> str | None:
    if not args.depthwise:
        return None
    return (
        f"depthwise ({args.groups} groups of one channel): {args.taps} multiply-adds per output "
        "value as one channel-vectorised multiply-add loop, several times faster than XLA's "
        "CPU grouped convolution"
    )


def _fma(x, w, stride, dilation):
    """[N, *sp, C] (padded) x [*k, 1, C * m] -> [N, *out, C * m]."""
    n = w.ndim - 2
    m = w.shape[-1] // x.shape[-1]
    if m > 1:
        x = jnp.repeat(x, m, axis=-1)
    acc = None
    bcast = (1,) * (n + 1)
    for tap, window in _windows(x, w.shape[:n], stride, dilation, first=1):
        term = window * w[(*tap, 0)].reshape(*bcast, -1)
        acc = term if acc is None else acc + term
    return acc


def _input_grad(g, w, x_shape, stride, dilation):
    """The input gradient [N, *out, C * m] -> [N, *sp, C] as one pad and one multiply-add loop.

    ``g`` is dilated by the stride and padded once, then correlated with the flipped kernel, so
    XLA runs one fused loop over one padded copy of ``g``; plain autodiff of ``_fma`` pads the
    cotangent once per tap (issue 18: a 7x7 gradient on 16x32x32x32 needed 103 MiB of
    temporaries against lax's 6 MiB)."""
    n = w.ndim - 2
    cfg = _dilate_and_pad(w.shape[:n], x_shape[1:-1], g.shape[1:-1], stride, dilation)
    g = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), *cfg, (0, 0, 0)])
    flipped = jnp.flip(w, axis=tuple(range(n)))
    bcast = (1,) * (n + 1)
    acc = None
    for tap, window in _windows(g, w.shape[:n], (1,) * n, dilation, first=1):
        term = window * flipped[(*tap, 0)].reshape(*bcast, -1)
        acc = term if acc is None else acc + term
    m = w.shape[-1] // x_shape[-1]
    if m > 1:  # output channel c * m + j read input channel c
        acc = acc.reshape(*acc.shape[:-1], x_shape[-1], m).sum(axis=-1)
    return acc


# Bytes of the tap products one step of ``_kernel_grad``'s loop may hold (taps x a block of
# output rows of the cotangent; XLA:CPU materialises each tap's product before reducing it):
# at least one row per step.
KERNEL_GRAD_BLOCK_BYTES = 2**22


def _kernel_grad(x, g, kernel, stride, dilation):
    """The kernel gradient [N, *out, C * m] -> [*k, 1, C * m] as a loop over blocks of output
    rows (the first spatial axis): each step reads one block of ``g`` and the input rows its
    windows cover, and adds every tap's window-times-cotangent sum to a [taps, C * m]
    accumulator. Temporaries stay near ``KERNEL_GRAD_BLOCK_BYTES`` (or one row's products).

    Measured (benchmarks/NOTES.md): XLA:CPU's own depthwise kernel-gradient convolution took
    540-770 ms on workload H (32x64x64x64, 3x3), one fused reduction per tap 270 ms with 288
    MiB of temporaries (XLA materialises each tap's product), this loop 50 ms in reverse mode.
    Its step is rematerialised (``jax.checkpoint``): reverse mode reaches this function by
    transposing its transpose, and would otherwise run the loop once to save every step's tap
    windows as residuals (9 x 32 MiB on H, 307 ms).
    """
    m = g.shape[-1] // x.shape[-1]
    if m > 1:  # output channel c * m + j read input channel c
        x = jnp.repeat(x, m, axis=-1)
    rows = g.shape[1]
    row_bytes = g.size // rows * g.dtype.itemsize
    block = max(1, min(rows, KERNEL_GRAD_BLOCK_BYTES // (math.prod(kernel) * row_bytes)))
    steps = -(-rows // block)
    s0, d0, k0 = stride[0], dilation[0], kernel[0]
    span = (block - 1) * s0 + (k0 - 1) * d0 + 1  # input rows one block's windows read
    # zero rows of g past the end (they add nothing), and input rows so no slice is clamped
    rest = [(0, 0)] * (len(kernel) - 1)
    g = pad_spatial(g, [(0, steps * block - rows), *rest])
    x = pad_spatial(x, [(0, max(0, (steps - 1) * block * s0 + span - x.shape[1])), *rest])
    axes = tuple(range(g.ndim - 1))  # all but channels

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
    def step(i, acc):
        xs = lax.dynamic_slice_in_dim(x, i * block * s0, span, axis=1)
        gs = lax.dynamic_slice_in_dim(g, i * block, block, axis=1)
        sums = [jnp.sum(window * gs, axis=axes)
                for _, window in _windows(xs, kernel, stride, dilation, first=1)]
        return acc + jnp.stack(sums)

    acc = lax.fori_loop(0, steps, step, jnp.zeros((math.prod(kernel), g.shape[-1]), g.dtype))
    return acc.reshape(*kernel, 1, g.shape[-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv(x, w, stride, dilation):
    return _fma(x, w, stride, dilation)


@functools.partial(_conv.defjvp, symbolic_zeros=True)
def _conv_jvp(stride, dilation, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    y = _fma(x, w, stride, dilation)
    y_dot = jnp.zeros_like(y)
    if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        # written as the transpose of ``_input_grad``, so that reverse mode runs it
        grad = functools.partial(_input_grad, w=w, x_shape=x.shape, stride=stride,
                                 dilation=dilation)
        (x_term,) = jax.linear_transpose(grad, jax.ShapeDtypeStruct(y.shape, y.dtype))(x_dot)
        y_dot = y_dot + x_term
    if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
        # written as the transpose of ``_kernel_grad``, so that reverse mode runs it
        grad = functools.partial(_kernel_grad, x, kernel=w.shape[:-2], stride=stride,
                                 dilation=dilation)
        (w_term,) = jax.linear_transpose(grad, jax.ShapeDtypeStruct(y.shape, y.dtype))(w_dot)
        y_dot = y_dot + w_term
    return y, y_dot


@in_float32
def conv(x, w, args):
    x, w = channels_last(x, w, args.layout)
    y = _conv(pad_spatial(x, args.pads), w, args.stride, args.dilation)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


def temporaries(args: ConvArgs) -> int:
    """Bytes materialised for ``args.part``: the padded copy of x, repeated by the channel
    multiplier (forward and kernel gradient); the input gradient's dilated and padded
    cotangent; and the kernel gradient's tap products, which XLA stores before reducing each
    (``taps`` outputs' worth over the whole loop of ``_kernel_grad``)."""
    item = float32_itemsize(args)
    if args.part == "input_grad":
        return padded_cotangent_size(args) * item
    x_copy = args.padded_size * (args.out_channels // args.in_channels) * item
    if args.part == "forward":
        return x_copy
    return x_copy + args.taps * args.out_size * item


LOWERING = Lowering("depthwise", conv, declines=declines, prefers=prefers,
                    temporaries=temporaries)
