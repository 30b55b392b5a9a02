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
pads the cotangent once and runs one multiply-add loop with the flipped kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.lowering import xla
from jaxconv.lowering._base import ConvArgs, Lowering, channels_last, in_float32, pad_spatial
from jaxconv.lowering.shift_add import _dilate_and_pad, _windows


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
        # written so that its transpose, the kernel gradient, is one canonical depthwise
        # convolution (xla's): as per-tap reductions XLA:CPU materialised one input-sized
        # product per tap (100 MiB for 7x7 on 16x32x32x32)
        n = w.ndim - 2
        m = w.shape[-1] // x.shape[-1]
        xr = jnp.repeat(x, m, axis=-1) if m > 1 else x
        static = (stride, ((0, 0),) * n, dilation, xr.shape[-1], None)
        y_dot = y_dot + xla._w_tangent(xr, w_dot, static)
    return y, y_dot


@in_float32
def conv(x, w, args):
    x, w = channels_last(x, w, args.layout)
    y = _conv(pad_spatial(x, args.pads), w, args.stride, args.dilation)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


LOWERING = Lowering("depthwise", conv, declines=declines, prefers=prefers)
