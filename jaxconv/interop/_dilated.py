"""The transposed conv as flax's and equinox's ``ConvTranspose`` write it - a conv of the
input dilated by the stride, with explicit padding of the dilated input - run by
``jaxconv.conv_transpose`` (its phase lowering: no multiply touches an inserted zero)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import Array, lax

from jaxconv._conv import conv_transpose


def dilated_input_conv(
    x: Array,
    forward_kernel: Array,
    *,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
    layout: str,
    precision: lax.PrecisionLike,
    algorithm: str,
) -> Array:
    """``lax.conv_general_dilated(x, flip(w), (1,) * n, pads, lhs_dilation=stride, ...)``
    where ``forward_kernel`` is the kernel of the forward conv this transposes.

    ``pads`` pad the dilated input. A pad ``p`` of it is the forward conv's padding
    ``k_eff - 1 - p`` (``jaxconv.conv_transpose``'s convention); a pad beyond ``k_eff - 1``
    adds outputs whose window sees only padding, which are zeros, so they are added as zeros.
    """
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation, strict=True)]
    forward = [(max(k - 1 - lo, 0), max(k - 1 - hi, 0))
               for k, (lo, hi) in zip(k_eff, pads, strict=True)]
    zeros = [(max(lo - (k - 1), 0), max(hi - (k - 1), 0))
             for k, (lo, hi) in zip(k_eff, pads, strict=True)]
    y = conv_transpose(x, forward_kernel, stride=tuple(stride), padding=forward,
                       dilation=tuple(dilation), groups=groups, layout=layout,
                       precision=precision, algorithm=algorithm)
    if any(z != (0, 0) for z in zeros):
        spatial = iter(zeros)
        y = jnp.pad(y, [next(spatial) if c not in "NC" else (0, 0) for c in layout])
    return y
