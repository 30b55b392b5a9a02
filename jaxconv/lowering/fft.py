"""FFT lowering (opt-in only): the conv as a pointwise product of real FFTs over the spatial dims.

Computes the function of ``conv`` for every option: dilation dilates the kernel with zeros,
stride keeps every ``stride``-th output of the stride-1 result, groups contract channels within
each group. Its cost barely depends on the kernel size, so it is fast for large kernels with
few channels, where a direct conv does ``taps`` multiply-adds per output. The circular transform
needs no extra padding: the transform length is at least the (padded) input size, so the valid
outputs never wrap around. Gradients are plain autodiff (the adjoint of an FFT is an FFT).

It is NOT exact elementwise, so ``algorithm="auto"`` never runs it (as
``jax.scipy.signal.convolve(method="auto")`` always sums directly); it runs only when asked for
by name, and ``plan`` says when it would be faster. Its rounding error is global: about
``eps * log2(size)`` times the output's largest magnitude, spread over every output. An output
that is exactly 0 (a blank background) comes back as noise of either sign (a ReLU after it
passes gradient it should block: issue 18 measured a bias gradient of 0.54 against the exact
0.33 for an 11x11 kernel on sparse images); one NaN or inf pixel makes every output of its
image non-finite, a single 1e37 pixel overflows every output, and small-integer inputs that
direct summation computes exactly come back rounded. No ``precision`` is honoured, so a call
with one is declined. Dtypes narrower than float32 are padded and transformed in float32,
rounded once.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxconv.lowering._base import ConvArgs, Lowering, in_float32, never, pad_spatial

# ``plan`` mentions FFT from this many kernel taps (stride 1, few channels): below it a direct
# lowering was as fast or faster with gradients (issue 14, single-channel kernels on 64x32x32x1
# and 1x512x512x1: forward alone 0.15-0.65x of shift_add's speed up to 9x9).
NOTE_MIN_TAPS = 121
# ... while (in/groups) * (out/groups) stays this small: the per-frequency channel
# contraction grows with it (5x5, 3 -> 16, 48 pairs: FFT 3x slower than im2col).
NOTE_MAX_CHANNEL_PAIRS = 16
# How much faster FFT ran than auto's exact choice (default XLA flags), measured with
# benchmarks/plan_bench.py on a 2-core x86-64 CPU, loaded (benchmarks/NOTES.md, issue 18):
# taps -> (where, forward x, forward + gradients x).
MEASURED_SPEEDUPS = {
    121: ("8x32x32x1, 11x11 1->1 (auto: shift_add)", 1.2, 1.4),
    225: ("64x32x32x1, 15x15 1->6 (auto: xla)", 2.7, 69.0),
    961: ("workload G, 1x1024x1024x1, 31x31 1->1 (auto: xla)", 30.0, 56.0),
}

ERROR_MODEL = (
    "not exact elementwise: its rounding error is about eps * log2(size) of the output's "
    "largest magnitude on every output, so exact zeros come back as noise of either sign, and "
    "one NaN/inf pixel makes every output of its image non-finite"
)


def declines(args: ConvArgs) -> str | None:
    if args.precision is not None:
        return (
            f"precision={args.precision!r} asks for products rounded element by element, while "
            "the FFT's rounding error is spread over the whole output (about eps * log(size) "
            "of its largest value, nonzero where the exact output is 0); drop precision, or use "
            "'shift_add', which honours it"
        )
    return None


def faster_by_name(args: ConvArgs) -> str | None:
    """When ``algorithm="fft"`` would beat the exact lowerings on this call, by how much
    (the nearest measured kernel size), and its error model; None where it would not."""
    if (
        any(s != 1 for s in args.stride)
        or args.taps < NOTE_MIN_TAPS
        or args.c_group * args.o_group > NOTE_MAX_CHANNEL_PAIRS
        or declines(args) is not None
    ):
        return None
    taps = min(MEASURED_SPEEDUPS, key=lambda t: abs(t - args.taps))
    where, fwd, grad = MEASURED_SPEEDUPS[taps]
    measured = (f"measured {fwd:.1f}x faster forward and {grad:.1f}x with gradients than auto "
                f"on {where}")
    return (
        f"algorithm='fft' (asked by name only) would cost O(log size) per pixel instead of "
        f"{args.macs_per_value} multiply-adds per output value: {measured}; {ERROR_MODEL}"
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


LOWERING = Lowering("fft", conv, declines=declines, prefers=never,
                    faster_by_name=faster_by_name)
