"""Depthwise lowering: ``groups == in_channels``, as one broadcast multiply-add per kernel tap.

Each output value reads one input channel's window (``taps`` multiply-adds), so channels never
contract: with channels last, every tap is a strided window of the whole ``[N, *out, C]`` input
times that tap's ``C``-vector of weights, and XLA fuses the sum of the taps into one loop that
runs vectorised across channels. XLA's CPU grouped convolution has no GEMM to hand the work to
and measured 12x slower forward, 4.5x with gradients (workload H, benchmarks/NOTES.md).
A channel multiplier ``m`` (``out_channels = m * in_channels``) repeats each input channel ``m``
times first, so output channel ``c * m + j`` reads input channel ``c``, as in lax and torch.
Dtypes narrower than float32 are computed in float32 and rounded once, as XLA accumulates them.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxconv.lowering._base import ConvArgs, Lowering, channels_last, in_float32, pad_spatial
from jaxconv.lowering.shift_add import _windows


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


@in_float32
def conv(x, w, args):
    x, w = channels_last(x, w, args.layout)
    y = _fma(pad_spatial(x, args.pads), w, args.stride, args.dilation)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


LOWERING = Lowering("depthwise", conv, declines=declines, prefers=prefers)
