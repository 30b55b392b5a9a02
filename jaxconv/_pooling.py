"""Max and average pooling over the spatial dims, on ``lax.reduce_window``, sharing padding.py.

Validation and shape arithmetic happen here once (``shapes.output_shape`` reuses them); no
convolution and no learned parameters live here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import _checks
from jaxconv import _padding as padding_lib
from jaxconv import _shapes as shapes
from jaxconv._typing import Array, ArrayLike


def _accumulator(dtype) -> np.dtype:
    """The dtype avg_pool sums in: float32 for every float narrower than 32 bits.

    Half-precision sums of many terms lose digits fast, and the 4- and 8-bit floats are worse:
    float8_e4m3fn cannot even hold the sum of a few values of its own, and float8_e8m0fnu has no
    zero to start a sum from.
    """
    return np.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else np.dtype(dtype)


def _max_identity(dtype) -> np.ndarray:
    """The pad and start value of max_pool: -inf, or the lowest finite value without an inf.

    The float8 formats without inf (float8_e4m3fn, e4m3fnuz, e4m3b11fnuz, e5m2fnuz, e8m0fnu)
    turn -inf into NaN, which would make every window NaN. A numpy (concrete) scalar lets lax
    pick reduce_window_max, with its dedicated grad rule, whenever it equals lax's own identity.
    """
    neg_inf = np.array(-np.inf, dtype)
    if np.isneginf(neg_inf.astype(np.float64)):
        return neg_inf
    return np.array(jnp.finfo(dtype).min, dtype)


def _prepare(op: str, x: ArrayLike, window, stride, padding,
             layout) -> tuple[Array, shapes.PoolArgs]:
    _checks.check_float(op, "x", x)
    x = jnp.asarray(x)
    return x, shapes.pool_args(op, x.shape, window, stride, padding, layout)


def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: padding_lib.Padding = "VALID",
    layout: str | None = None,
) -> Array:
    """Max pooling over every spatial dim of a batch ``x``; padded positions never win.

    Padded positions count as -inf, or as the dtype's lowest finite value for the float8
    formats that have no inf (e.g. ``float8_e4m3fn``); the result is exact in every dtype.

    With a channels-first layout and int padding this equals torch's ``max_poolNd(x, window,
    stride, padding)`` (floor mode, ``ceil_mode=False``).

    Args:
      x: [N, *spatial, C] (channels-last, the default) or [N, C, *spatial] (channels-first);
        the number of spatial dims is ``x.ndim - 2``. Real floating dtype (float8 and
        float4 formats included).
      window: window size, int or one int per spatial dim.
      stride: int or per dim; None (default) uses the window (non-overlapping windows).
      padding: as in ``jaxconv.conv``: ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"FULL"``,
        ``"CAUSAL"``, an int, per-dim ints or ``(low, high)`` pairs. Int padding must be at
        most ``window // 2`` (as torch); no window may lie entirely in the padding.
      layout: None (channels-last by rank) or one of NWC, NCW, NHWC, NCHW, NDHWC, NCDHW.

    Returns:
      x's dtype, [N, *out_spatial, C] (or channels-first) with
      ``out = (in + low + high - window) // stride + 1`` per spatial dim.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> jaxconv.max_pool(x, 2)[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    x, args = _prepare("max_pool", x, window, stride, padding, layout)
    return lax.reduce_window(
        x, _max_identity(x.dtype), lax.max, args.full(args.window, 1), args.full(args.stride, 1),
        args.full(args.pads, (0, 0)),
    )


def avg_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: padding_lib.Padding = "VALID",
    layout: str | None = None,
    count_include_pad: bool = True,
) -> Array:
    """Average pooling over every spatial dim of a batch ``x``; padded positions are zeros.

    With a channels-first layout and int padding this equals torch's ``avg_poolNd(x, window,
    stride, padding, count_include_pad=...)`` (floor mode, ``ceil_mode=False``).
    ``count_include_pad=False`` with ``padding="SAME"`` is TF's ``avg_pool``.

    Args:
      x: [N, *spatial, C] (channels-last, the default) or [N, C, *spatial] (channels-first);
        the number of spatial dims is ``x.ndim - 2``. Real floating dtype; every dtype
        narrower than float32 (bfloat16, float16, float8, float4) is summed and divided in
        float32 and rounded once to its dtype.
      window: window size, int or one int per spatial dim.
      stride: int or per dim; None (default) uses the window (non-overlapping windows).
      padding: as in ``max_pool``.
      layout: None (channels-last by rank) or one of NWC, NCW, NHWC, NCHW, NDHWC, NCDHW.
      count_include_pad: True divides every window sum by the full window size
        ``prod(window)``; False divides by the number of real (unpadded) elements it covers.

    Returns:
      x's dtype, [N, *out_spatial, C] (or channels-first) with
      ``out = (in + low + high - window) // stride + 1`` per spatial dim.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones((1, 3, 1))
      >>> jaxconv.avg_pool(x, 2, stride=1, padding=1)[0, :, 0]
      Array([0.5, 1. , 1. , 0.5], dtype=float32)
      >>> jaxconv.avg_pool(x, 2, stride=1, padding=1, count_include_pad=False)[0, :, 0]
      Array([1., 1., 1., 1.], dtype=float32)
    """
    op = "avg_pool"
    count_include_pad = _checks.check_bool(op, "count_include_pad", count_include_pad)
    x, args = _prepare(op, x, window, stride, padding, layout)
    dtype = x.dtype
    acc = _accumulator(dtype)
    total = lax.reduce_window(
        x.astype(acc), np.array(0, acc), lax.add, args.full(args.window, 1),
        args.full(args.stride, 1), args.full(args.pads, (0, 0)),
    )
    padded = any(p != (0, 0) for p in args.pads)
    if count_include_pad or not padded:
        return (total / math.prod(args.window)).astype(dtype)
    # The count of real elements per window is separable and static: one numpy vector per dim,
    # multiplied out at trace time and baked in as a constant.
    per_dim = []
    for size, k, s, (lo, _), out in zip(
        args.sizes, args.window, args.stride, args.pads, args.out_sizes, strict=True
    ):
        starts = np.arange(out) * s - lo
        per_dim.append(np.minimum(starts + k, size) - np.maximum(starts, 0))
    counts = functools.reduce(np.multiply.outer, per_dim)
    counts = counts.reshape(args.full(counts.shape, 1))
    return (total / jnp.asarray(counts, acc)).astype(dtype)

