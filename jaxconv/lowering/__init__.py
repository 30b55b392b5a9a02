"""Exact alternative lowerings of ``conv`` and the planner that picks one per call.

Every lowering computes the same function as ``lax.conv_general_dilated`` (up to float
rounding); each says which calls it supports, and ``"auto"`` falls back to ``"xla"`` for
anything else. The choice is static (shapes, dtype, backend), so it costs nothing under jit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
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


class Plan(NamedTuple):
    """The planner's decision: which lowering runs a conv call, and why."""

    algorithm: str
    reason: str


def _registry():
    from jaxconv.lowering import fft, im2col, shift_add, xla

    return {m.NAME: m for m in (xla, shift_add, im2col, fft)}


def algorithms() -> tuple[str, ...]:
    """Names accepted by ``conv(..., algorithm=...)``."""
    return ("auto", *_registry())


def choose(x_shape, w_shape, dtype, args: ConvArgs, backend: str | None = None) -> Plan:
    """The lowering ``algorithm="auto"`` runs for these (validated) shapes and options."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return Plan("xla", f"backend {backend!r}: lax.conv_general_dilated (cuDNN/TPU convs)")
    if args.precision is not None:
        return Plan("xla", "an explicit precision was asked for: lax honours it directly")
    reg = _registry()
    for name in ("shift_add", "fft", "im2col"):
        lowering = reg[name]
        declined = lowering.auto_declines(x_shape, w_shape, dtype, args)
        if declined is None:
            return Plan(name, lowering.why(x_shape, w_shape, dtype, args))
    return Plan("xla", "no faster exact lowering applies on CPU for these shapes")


def dispatch(algorithm: str, x, w, args: ConvArgs):
    """Runs ``conv`` through the named lowering (``"auto"``: the planner's choice)."""
    reg = _registry()
    if algorithm == "auto":
        algorithm = choose(x.shape, w.shape, x.dtype, args).algorithm
    elif algorithm not in reg:
        names = ", ".join(repr(a) for a in algorithms())
        raise ValueError(f"conv: unknown algorithm {algorithm!r}; expected one of {names}.")
    else:
        declined = reg[algorithm].declines(x.shape, w.shape, x.dtype, args)
        if declined is not None:
            raise ValueError(
                f"conv: algorithm {algorithm!r} does not support this call ({declined}); use "
                "algorithm='auto' or 'xla'."
            )
    return reg[algorithm].conv(x, w, args)
