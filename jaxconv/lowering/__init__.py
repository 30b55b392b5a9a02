"""Exact alternative lowerings of ``conv`` and the planner that picks one per call.

Every lowering computes the same function as ``lax.conv_general_dilated``; each declares which
options it supports, and ``"auto"`` falls back to ``"xla"`` for anything else.
"""

from __future__ import annotations

from typing import NamedTuple

from jax import lax

from jaxconv._checks import Layout


class ConvArgs(NamedTuple):
    """Validated, normalised options of one conv call (explicit zero padding only)."""

    layout: Layout
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    precision: lax.PrecisionLike


def dispatch(algorithm, x, w, args):
    from jaxconv.conv import xla_conv

    return xla_conv(x, w, args)
