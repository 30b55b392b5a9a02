"""The reference lowering: a single ``lax.conv_general_dilated`` (zero overhead)."""

from __future__ import annotations

from jax import lax

NAME = "xla"


def declines(x_shape, w_shape, dtype, args) -> str | None:
    return None


def why(x_shape, w_shape, dtype, args) -> str:
    return "lax.conv_general_dilated"


def conv(x, w, args):
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=args.stride,
        padding=args.pads,
        rhs_dilation=args.dilation,
        dimension_numbers=args.layout.dimension_numbers(),
        feature_group_count=args.groups,
        precision=args.precision,
    )
def auto_declines(x_shape, w_shape, dtype, args):
    return "the reference"
