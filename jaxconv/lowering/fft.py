"""FFT lowering: the conv as a pointwise product of real FFTs over the spatial dims.

Exact up to float rounding for every option of ``conv``: dilation dilates the kernel with
zeros, stride keeps every ``stride``-th output of the stride-1 result, groups contract channels
within each group. Its cost barely depends on the kernel size, so it wins for large kernels with
few channels, where a direct conv does ``taps`` multiply-adds per output. The circular transform
needs no extra padding: the transform length is at least the (padded) input size, so the valid
outputs never wrap around. Gradients are plain autodiff (the adjoint of an FFT is an FFT).

Its rounding error is global, not per element: about ``eps * log(size)`` times the output's
largest magnitude, spread over every output. An output that is exactly 0 (a blank background)
comes back as noise of either sign (up to +-4.8e-7 on LeNet's first 5x5 layer over digits), so a
ReLU after it passes gradient it should block. No ``precision`` is honoured, so a call with one
is declined. Dtypes narrower than float32 are padded and transformed in float32, rounded once.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxconv.lowering._base import ConvArgs, Lowering, in_float32, pad_spatial

# auto prefers FFT from this many kernel taps (stride 1, few channels) and only there: its
# rounding error is global (about eps * log(size) of the output's largest magnitude, on every
# element), so exact zeros come back as noise of either sign, and a ReLU after it passes gradient
# it should block (LeNet-5 over digits, 5x5 1 -> 6: the first layer's bias gradient ~100%
# wrong). Single-channel kernels on 64x32x32x1 and 1x512x512x1 (issue 14, medians): forward +
# grad FFT was 1.2-6x faster than the best exact lowering from 5x5 on, but forward alone
# 0.15-0.65x of shift_add's speed up to 9x9; at 11x11 forward 0.6-1.7x and forward + grad
# 4.6-11x; at 15x15 forward 1.4-3.4x and forward + grad 5.5-23x; G (1024^2, 31x31) 16x forward.
AUTO_MIN_TAPS = 121
# ... while (in/groups) * (out/groups) stays this small: the per-frequency channel
# contraction grows with it (5x5, 3 -> 16, 48 pairs: FFT 3x slower than im2col).
AUTO_MAX_CHANNEL_PAIRS = 16


def declines(args: ConvArgs) -> str | None:
    if args.precision is not None:
        return (
            f"precision={args.precision!r} asks for products rounded element by element, while "
            "the FFT's rounding error is spread over the whole output (about eps * log(size) "
            "of its largest value, nonzero where the exact output is 0); drop precision, or use "
            "'shift_add', which honours it"
        )
    return None


def prefers(args: ConvArgs) -> str | None:
    if (
        any(s != 1 for s in args.stride)
        or args.taps < AUTO_MIN_TAPS
        or args.c_group * args.o_group > AUTO_MAX_CHANNEL_PAIRS
    ):
        return None
    return (
        f"a large kernel ({args.taps} taps) with few channels: real FFTs over the spatial dims "
        "cost O(log size) per pixel instead of one multiply-add per tap. Error model: rounding "
        "errors of about eps * log(size) relative to the output's largest magnitude, not to "
        "each element, so exact zeros come back as tiny noise of either sign; pass "
        "algorithm='xla' where that matters (e.g. sparse images before a ReLU)"
    )


def fast_length(n: int) -> int:
    """The smallest 7-smooth integer >= n (2^a 3^b 5^c 7^d: lengths the FFT does fastest)."""
    best = 1 << max(n - 1, 0).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                p2 = p3
                while p2 < n:
                    p2 *= 2
                best = min(best, p2)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def _dilate(w, dilation):
    """Inserts ``d - 1`` zeros between kernel taps along each spatial dim of [O, Cg, *k]."""
    if all(d == 1 for d in dilation):
        return w
    cfg = [(0, 0, 0)] * 2 + [(0, 0, d - 1) for d in dilation]
    return lax.pad(w, jnp.zeros((), w.dtype), cfg)


def _conv_cf(x, w, stride, dilation, groups):
    """Channels-first core: x [N, C, *sp] padded, w [O, Cg, *k] -> [N, O, *out]."""
    n = x.ndim - 2
    axes = tuple(range(2, n + 2))
    w = _dilate(w, dilation)
    sizes = x.shape[2:]
    lengths = tuple(fast_length(s) for s in sizes)
    xf = jnp.fft.rfftn(x, s=lengths, axes=axes)  # [N, C, *f]
    wf = jnp.conj(jnp.fft.rfftn(w, s=lengths, axes=axes))  # [O, Cg, *f]
    batch, out_ch, c_group = x.shape[0], w.shape[0], w.shape[1]
    o_group = out_ch // groups
    f = xf.shape[2:]
    xf = xf.reshape(batch, groups, c_group, *f)
    wf = wf.reshape(groups, o_group, c_group, *f)
    if c_group == 1 or o_group == 1:
        # A broadcast multiply-add fuses into one loop; a dot would put the frequencies in
        # its batch dims, which XLA's CPU dot handles slowly.
        yf = jnp.sum(xf[:, :, None] * wf[None], axis=3)
    else:
        yf = jnp.einsum("ngc...,goc...->ngo...", xf, wf)
    yf = yf.reshape(batch, out_ch, *f)
    y = jnp.fft.irfftn(yf, s=lengths, axes=axes)
    k_eff = w.shape[2:]
    out = tuple(s - k + 1 for s, k in zip(sizes, k_eff, strict=True))
    return lax.slice(y, (0, 0) + (0,) * n, (batch, out_ch, *out), (1, 1, *stride))


@in_float32
def conv(x, w, args):
    lay = args.layout
    n = lay.ndim
    if lay.channels_last:
        x = jnp.moveaxis(x, -1, 1)  # [N, C, *spatial]
        w = jnp.moveaxis(w, (n + 1, n), (0, 1))  # [O, C // groups, *k]
    y = _conv_cf(pad_spatial(x, args.pads, first=2), w, args.stride, args.dilation,
                 args.groups)
    if lay.channels_last:
        y = jnp.moveaxis(y, 1, -1)
    return y


LOWERING = Lowering("fft", conv, declines=declines, prefers=prefers)
