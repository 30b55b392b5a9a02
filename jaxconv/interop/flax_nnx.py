"""A drop-in ``flax.nnx.Conv`` that runs ``jaxconv.conv`` (its planner and pad modes).

Importing this module imports flax (extra ``interop``); ``jaxconv`` itself never does.
"""

from __future__ import annotations

import functools
from typing import Any

from flax import nnx
from jax import lax

from jaxconv._conv import conv


def _jaxconv_conv_general_dilated(
    inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
    dimension_numbers=None, feature_group_count=1, precision=None, *, pad_mode="zeros",
    flip=False, algorithm="auto", out_sharding=None, preferred_element_type=None,
):
    """``lax.conv_general_dilated``'s signature, as ``nnx.Conv`` calls it, run by
    ``jaxconv.conv``; what jaxconv cannot do is refused, never ignored."""
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        raise ValueError(
            f"jaxconv.interop.flax_nnx.Conv: input_dilation={tuple(lhs_dilation)} is not "
            f"supported by jaxconv.conv; use flax.nnx.Conv, or nnx.ConvTranspose for "
            f"upsampling."
        )
    for name, value in (("out_sharding", out_sharding),
                        ("preferred_element_type", preferred_element_type)):
        if value is not None:
            raise ValueError(f"jaxconv.interop.flax_nnx.Conv: {name}={value!r} is not "
                             f"supported by jaxconv.conv; use flax.nnx.Conv.")
    nd = inputs.ndim
    channels_last = lax.ConvDimensionNumbers(  # N, C, *spatial positions as flax gives them
        lhs_spec=(0, nd - 1, *range(1, nd - 1)), rhs_spec=(nd - 1, nd - 2, *range(nd - 2)),
        out_spec=(0, nd - 1, *range(1, nd - 1)))
    if tuple(dimension_numbers) != tuple(channels_last):
        raise ValueError(f"jaxconv.interop.flax_nnx.Conv: unexpected dimension numbers "
                         f"{dimension_numbers!r}.")
    return conv(inputs, kernel, stride=tuple(window_strides), padding=padding,
                dilation=tuple(rhs_dilation or (1,) * (kernel.ndim - 2)),
                groups=feature_group_count, precision=precision, pad_mode=pad_mode, flip=flip,
                algorithm=algorithm)


class Conv(nnx.Conv):
    """``flax.nnx.Conv`` (same constructor arguments, params ``kernel`` ``(*kernel_size,
    in_features // feature_group_count, out_features)`` and ``bias``, same outputs) computed
    by ``jaxconv.conv``: ``algorithm="auto"`` lets ``jaxconv.plan`` choose an exact lowering.

    Args:
      *args: as ``flax.nnx.Conv`` (``in_features``, ``out_features``, ``kernel_size``, ...).
      pad_mode: ``jaxconv.conv``'s pad mode for the padding given (``"zeros"``,
        ``"reflect"``, ``"replicate"``, ``"circular"``, ``"symmetric"``).
      flip: True for the mathematical convolution (kernel reversed).
      algorithm: ``"auto"`` or a lowering's name, as in ``jaxconv.conv``.
      **kwargs: as ``flax.nnx.Conv`` (``padding``, ``rngs``, ...); ``input_dilation`` other
        than 1 and ``conv_general_dilated`` are refused.

    Returns:
      The layer (``layer(x)``: ``[*batch, *spatial, in_features] -> [*batch, *out_spatial,
      out_features]``, as ``flax.nnx.Conv``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxconv.interop import flax_nnx
      >>> layer = flax_nnx.Conv(3, 8, (3, 3), padding="SAME", pad_mode="reflect",
      ...                       rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 16, 16, 3))).shape
      (2, 16, 16, 8)
    """

    def __init__(self, *args: Any, pad_mode: str = "zeros", flip: bool = False,
                 algorithm: str = "auto", **kwargs: Any):
        if "conv_general_dilated" in kwargs:
            raise TypeError("jaxconv.interop.flax_nnx.Conv: conv_general_dilated is jaxconv's "
                            "here; use flax.nnx.Conv to pass your own.")
        fn = functools.partial(_jaxconv_conv_general_dilated, pad_mode=pad_mode, flip=flip,
                               algorithm=algorithm)
        super().__init__(*args, conv_general_dilated=fn, **kwargs)
