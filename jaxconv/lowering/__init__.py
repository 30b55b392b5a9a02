"""Alternative lowerings of ``conv`` and the planner that picks one per call.

Every lowering computes the same function as ``lax.conv_general_dilated``: ``shift_add`` and
``im2col`` up to float rounding of each output, ``fft`` with an error small against the
output's largest magnitude but not elementwise (no exact zeros), so ``auto`` picks it only for
kernels of 11x11 taps and more; each says which calls it supports (``declines``), and
``"auto"`` falls back to ``"xla"`` for anything else. The choice is static (shapes, dtype,
backend), so it costs nothing under jit. The planner's thresholds come from timings on a 2-core
x86-64 CPU, recorded with the measurement behind each in ``benchmarks/NOTES.md``; this module
runs no convolution itself.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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
    """The planner's decision: which lowering runs a conv call, and why.

    Attributes:
      algorithm: the lowering's name, one of ``algorithms()`` other than ``"auto"``.
      reason: one sentence saying why it was picked.
    """

    algorithm: str
    reason: str


# --- the planner's thresholds (2-core x86-64 CPU); benchmarks/NOTES.md has the timings ------

# FFT from this many kernel taps (stride 1, few channels) and only there: its rounding error is
# global (about eps * log(size) of the output's largest magnitude, on every element), so exact
# zeros come back as noise of either sign, and a ReLU after it passes gradient it should block
# (LeNet-5 over digits, 5x5 1 -> 6: the first layer's bias gradient ~100% wrong). Single-channel
# kernels on 64x32x32x1 and 1x512x512x1 (issue 14, medians): forward + grad FFT was 1.2-6x
# faster than the best exact lowering from 5x5 on, but forward alone 0.15-0.65x of shift_add's
# speed up to 9x9; at 11x11 forward 0.6-1.7x and forward + grad 4.6-11x; at 15x15 forward
# 1.4-3.4x and forward + grad 5.5-23x; G (1024^2, 31x31) 16x forward (benchmarks/NOTES.md).
FFT_MIN_TAPS = 121
# ... while (in/groups) * (out/groups) stays this small: the per-frequency channel
# contraction grows with it (5x5, 3 -> 16, 48 pairs: FFT 3x slower than im2col).
FFT_MAX_CHANNEL_PAIRS = 16
# im2col from this many input channels per group and output channels: its GEMM is too thin
# below (5x5 3 -> 16: no faster than lax; 3x3 16 -> 32: 2.5-3.5x faster than lax).
IM2COL_MIN_IN_CHANNELS = 8
IM2COL_MIN_OUT_CHANNELS = 8
# ... and while one batch element's patches are this small (im2col chunks over the batch
# only; a single 8 MiB+ patch matrix per image starts to page-fault on every call).
IM2COL_MAX_ITEM_BYTES = 2**23


def _registry():
    from jaxconv.lowering import fft, im2col, shift_add, xla

    return {m.NAME: m for m in (xla, shift_add, im2col, fft)}


def algorithms() -> tuple[str, ...]:
    """Names accepted by ``conv(..., algorithm=...)``."""
    return ("auto", *_registry())


class _Stats(NamedTuple):
    taps: int
    c_group: int
    o_group: int
    out_pixels: int  # batch * output spatial positions
    macs: int  # multiply-adds per output position, all channels


def _stats(x_shape, w_shape, args: ConvArgs) -> _Stats:
    lay = args.layout
    kernel = [w_shape[a] for a in lay.kernel_spatial_axes]
    sizes = [x_shape[a] for a in lay.spatial_axes]
    out = [
        (s + lo + hi - (k - 1) * d - 1) // st + 1
        for s, (lo, hi), k, d, st in zip(
            sizes, args.pads, kernel, args.dilation, args.stride, strict=True
        )
    ]
    taps = math.prod(kernel)
    c_group, out_ch = w_shape[lay.kernel_in_axis], w_shape[lay.kernel_out_axis]
    return _Stats(
        taps, c_group, out_ch // args.groups, x_shape[0] * math.prod(out), taps * c_group * out_ch
    )


def choose(x_shape, w_shape, dtype, args: ConvArgs, backend: str | None = None) -> Plan:
    """The lowering ``algorithm="auto"`` runs for these (validated) shapes and options.

    Rules, first match wins: off CPU, or with an explicit precision, ``"xla"``; on CPU
    ``"fft"`` only for big kernels (at least ``FFT_MIN_TAPS`` = 11x11 taps) with few channels
    and stride 1, where direct methods are hopeless: its error is small against the output's
    largest magnitude but not elementwise (no exact zeros), which a ReLU after the conv can
    turn into wrong gradients; ``"shift_add"`` for few multiply-adds per output pixel (up to
    ``shift_add.MAX_MACS_PER_PIXEL``); ``"im2col"`` for many channels (not bfloat16: no gain
    measured); else ``"xla"``. A lowering that declines the call is skipped.
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return Plan("xla", f"backend {backend!r}: lax.conv_general_dilated (cuDNN/TPU convs)")
    if args.precision is not None:
        return Plan("xla", "an explicit precision was asked for: lax honours it directly")
    reg = _registry()
    st = _stats(x_shape, w_shape, args)
    candidates = []
    if (
        all(s == 1 for s in args.stride)
        and st.taps >= FFT_MIN_TAPS
        and st.c_group * st.o_group <= FFT_MAX_CHANNEL_PAIRS
    ):
        candidates.append("fft")  # first: from 11x11 it beats shift_add 5-10x with gradients
    if reg["shift_add"].auto_declines(x_shape, w_shape, dtype, args) is None:
        candidates.append("shift_add")
    if (
        jnp.dtype(dtype) != jnp.bfloat16
        and st.c_group >= IM2COL_MIN_IN_CHANNELS
        and st.o_group >= IM2COL_MIN_OUT_CHANNELS
        and reg["im2col"].item_patch_bytes(x_shape, w_shape, dtype, args)
        <= IM2COL_MAX_ITEM_BYTES
    ):
        candidates.append("im2col")
    for name in candidates:
        if reg[name].declines(x_shape, w_shape, dtype, args) is None:
            return Plan(name, reg[name].why(x_shape, w_shape, dtype, args))
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
    if algorithm == "xla":
        return reg[algorithm].conv(x, w, args)  # one lax op: nothing to gain from a jit
    return _compiled(algorithm)(x, w, args)


@functools.cache
def _compiled(algorithm: str):
    # The non-xla lowerings are tens of small ops: run eagerly, each would be dispatched (and
    # compiled) on its own, ~1 s for a new shape; one jit makes an eager call one executable.
    # Under an outer jit this inner one is inlined.
    return jax.jit(_registry()[algorithm].conv, static_argnums=2)


def plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding="VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    layout: str | None = None,
    pad_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    dtype=jnp.float32,
    backend: str | None = None,
) -> Plan:
    """Which lowering ``conv(x, w, ..., algorithm="auto")`` runs for these shapes, and why.

    Validates exactly as ``conv`` does (same errors), without touching any array data.

    Args:
      x_shape: shape of ``x``: [N, *spatial, C] (channels-last) or [N, C, *spatial].
      w_shape: shape of the kernel ``w``, laid out as in ``conv``.
      stride, padding, dilation, groups, layout, pad_mode, precision: as in ``conv``.
      dtype: the dtype of ``x`` and ``w``.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; None for ``jax.default_backend()``.

    Returns:
      A ``Plan(algorithm, reason)``.

    Example:
      >>> from jaxconv.lowering import plan
      >>> plan((64, 16, 16, 1), (3, 3, 1, 1), backend="gpu").algorithm
      'xla'
    """
    # the module, not the function that jaxconv/__init__.py re-exports under the same name
    conv_lib = importlib.import_module("jaxconv.conv")
    seen: dict[str, Any] = {}

    def validate(x, w):
        x, w, lay, st, pads, dil, mode = conv_lib._prepare(
            "plan", x, w, stride, padding, dilation, groups, layout, pad_mode
        )
        seen.update(x_shape=x.shape, w_shape=w.shape, dtype=x.dtype, layout=lay, stride=st,
                    pads=pads, dilation=dil, pad_mode=mode)
        return x

    jax.eval_shape(
        validate,
        jax.ShapeDtypeStruct(tuple(x_shape), dtype),
        jax.ShapeDtypeStruct(tuple(w_shape), dtype),
    )
    lay, pads, shape = seen["layout"], seen["pads"], list(seen["x_shape"])
    if seen["pad_mode"] != "zeros":  # conv pads x itself first, then convolves with no pads
        for axis, (lo, hi) in zip(lay.spatial_axes, pads, strict=True):
            shape[axis] += lo + hi
        pads = ((0, 0),) * lay.ndim
    args = ConvArgs(lay, seen["stride"], pads, seen["dilation"], groups, precision)
    return choose(tuple(shape), seen["w_shape"], seen["dtype"], args, backend)
