"""``conv_transpose`` as one ordinary convolution and a pixel shuffle (sub-pixel form).

The adjoint of a stride-``s`` conv writes ``x[q - low] = sum_t y[o] w[t]`` over ``o * s + t = q``.
Split ``q = m * s + r``: the taps that reach phase ``r`` are ``t = r + s * j``, and
``x_r[m] = sum_j y[m - j] w[r + s * j]`` is a stride-1 full correlation of ``y`` with the
flipped sub-kernel ``w[r::s]``. All ``s`` phases (``prod(s)`` in N-D) are one conv of ``y``
whose output channels are the phases times the input channels; interleaving them and cropping
the padding gives ``x``. No multiply touches an inserted zero, where lax's transposed conv
(the input gradient of the strided conv, ``lhs_dilation=s``) multiplies ``prod(s) - 1`` zeros
for every useful product. The conv goes through the planner like any ``conv`` call, and its
gradients are that lowering's. A dilated kernel (taps ``t * d``) mixes phases: it keeps the
transpose of the forward conv (``xla.linear_conv``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.lowering import xla
from jaxconv.lowering._base import ConvArgs, channels_last

__all__ = ["channels_last", "interleave", "linear_transpose", "phase_kernel"]


def phase_kernel(w, stride, groups):
    """[*k, Ig, G * Og] -> (the [*J, Og, G * S * Ig] kernel of the phase conv, J per dim).

    Convolve ``y`` with it (stride 1, padding ``J - 1`` each side, ``groups``), then
    ``interleave``: output channel ``(g, r, i)`` is phase ``r`` of input channel ``i`` of group
    ``g``."""
    n = w.ndim - 2
    kernel, ig, cout = w.shape[:n], w.shape[n], w.shape[n + 1]
    og = cout // groups
    js = [-(-k // s) for k, s in zip(kernel, stride, strict=True)]
    w = jnp.pad(w, [(0, j * s - k) for j, s, k in zip(js, stride, kernel, strict=True)]
                + [(0, 0), (0, 0)])
    w = w.reshape(*[d for j, s in zip(js, stride, strict=True) for d in (j, s)], ig, groups, og)
    # [J1, s1, J2, s2, ..., Ig, G, Og] -> [J1, J2, ..., Og, G, s1, s2, ..., Ig]
    j_axes, s_axes = list(range(0, 2 * n, 2)), list(range(1, 2 * n, 2))
    w = w.transpose(*j_axes, 2 * n + 2, 2 * n + 1, *s_axes, 2 * n)
    w = w.reshape(*js, og, groups * math.prod(stride) * ig)
    return jnp.flip(w, axis=tuple(range(n))), tuple(js)


def interleave(z, stride, groups, pads, out):
    """The phase conv's output [N, *M, G * S * Ig] -> x [N, *out, G * Ig] (channels-last)."""
    n = z.ndim - 2
    ms = z.shape[1:-1]
    ig = z.shape[-1] // (groups * math.prod(stride))
    z = z.reshape(z.shape[0], *ms, groups, *stride, ig)
    # [N, M1, ..., G, s1, ..., Ig] -> [N, M1, s1, M2, s2, ..., G, Ig]
    perm = [0, *(a for i in range(n) for a in (1 + i, n + 2 + i)), n + 1, 2 * n + 2]
    z = z.transpose(perm).reshape(z.shape[0], *(m * s for m, s in zip(ms, stride, strict=True)),
                                  groups * ig)
    # full[q] holds x[q - low]: drop low (or pad when negative) and fit the high end to out
    cfg = [(-lo, o + lo - m * s, 0)
           for (lo, _), o, m, s in zip(pads, out, ms, stride, strict=True)]
    return lax.pad(z, jnp.zeros((), z.dtype), [(0, 0, 0), *cfg, (0, 0, 0)])


def linear_transpose(y, w, args: ConvArgs):
    """The transpose of the forward conv ``xla.linear_conv`` (for dilated kernels, whose taps
    mix phases); ``args.x_shape`` is the shape it returns."""

    def forward(x):
        out = xla.linear_conv(x, w, args)
        # output_padding >= stride (allowed below dilation, as in torch) makes the forward conv
        # of an x this size longer than y; y holds only its leading positions.
        if out.shape != y.shape:
            out = out[tuple(slice(0, s) for s in y.shape)]
        return out

    (x,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(args.x_shape, y.dtype))(y)
    return x
