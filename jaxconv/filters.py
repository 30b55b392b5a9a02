"""The classical hand-designed 2-D filters (line, cross, edge, smoothing) as (kh, kw) arrays.

Must not convolve or learn anything: it only builds kernels (``stack`` lays them out for
``jaxconv.conv``). Values are for cross-correlation, i.e. ``jaxconv.conv``'s default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxconv import _checks
from jaxconv._typing import Array, ArrayLike

__all__ = [
    "FILTER_NAMES",
    "antidiagonal_line",
    "bank",
    "box",
    "cross",
    "diagonal_line",
    "emboss",
    "gaussian",
    "horizontal_line",
    "laplacian",
    "prewitt_x",
    "prewitt_y",
    "scharr_x",
    "scharr_y",
    "sharpen",
    "sobel_x",
    "sobel_y",
    "stack",
    "vertical_line",
]


def _kernel(rows) -> Array:
    return jnp.asarray(np.asarray(rows, dtype=np.float32))


# ---------------------------------------------------------------------------------------
# Line and cross detectors (zero-mean: a flat region gives 0).


def vertical_line() -> Array:
    """The tutorial's 3x3 vertical line detector.

    ``[[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]]``: zero-sum, responds positively (6 for a
    full-height line) where a thin bright vertical line runs through the centre column and
    negatively beside it.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.vertical_line()[0].tolist()
      [-1.0, 2.0, -1.0]
    """
    return _kernel([[-1, 2, -1]] * 3)


def horizontal_line() -> Array:
    """The 3x3 horizontal line detector, the transpose of ``vertical_line``.

    ``[[-1, -1, -1], [2, 2, 2], [-1, -1, -1]]``: zero-sum, responds to a thin bright
    horizontal line through the centre row.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.horizontal_line()[1].tolist()
      [2.0, 2.0, 2.0]
    """
    return _kernel([[-1, -1, -1], [2, 2, 2], [-1, -1, -1]])


def diagonal_line() -> Array:
    """The 3x3 diagonal (top-left to bottom-right, ``\\``) line detector.

    ``[[2, -1, -1], [-1, 2, -1], [-1, -1, 2]]``: 2 on the main diagonal, -1 elsewhere,
    zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.diagonal_line()[0].tolist()
      [2.0, -1.0, -1.0]
    """
    return _kernel([[2, -1, -1], [-1, 2, -1], [-1, -1, 2]])


def antidiagonal_line() -> Array:
    """The 3x3 anti-diagonal (top-right to bottom-left, ``/``) line detector.

    ``[[-1, -1, 2], [-1, 2, -1], [2, -1, -1]]``: ``diagonal_line`` mirrored left-right,
    zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.antidiagonal_line()[0].tolist()
      [-1.0, -1.0, 2.0]
    """
    return _kernel([[-1, -1, 2], [-1, 2, -1], [2, -1, -1]])


def cross() -> Array:
    """The 3x3 cross (line-intersection) detector.

    ``[[-1, 1, -1], [1, 0, 1], [-1, 1, -1]]``: +1 on the four arms (centre row and centre
    column), -1 on the corners, 0 at the centre; zero-sum. Centred on the crossing of a
    vertical and a horizontal line it gives 4; one pixel along an arm, 0; a single straight
    line through the window, 2; a flat region, 0. The centre weight is 0 so that only the
    intersection survives a ReLU: on ``data.cross_image()`` with ``padding="VALID"`` the
    response is ``[[-1, 0, -1], [0, 4, 0], [-1, 0, -1]]``.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.cross().tolist()
      [[-1.0, 1.0, -1.0], [1.0, 0.0, 1.0], [-1.0, 1.0, -1.0]]
    """
    return _kernel([[-1, 1, -1], [1, 0, 1], [-1, 1, -1]])


# ---------------------------------------------------------------------------------------
# Edge detectors (gradient estimates). "x" is the column axis, "y" the row axis; under
# cross-correlation each is positive where the intensity increases along its axis. These
# are OpenCV's kernels and scipy.ndimage.sobel/prewitt's (axis=1 for x, axis=0 for y).


def sobel_x() -> Array:
    """Sobel operator for the horizontal gradient (detects vertical edges).

    ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``: a central difference along columns smoothed
    by ``[1, 2, 1]`` along rows; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.sobel_x()[1].tolist()
      [-2.0, 0.0, 2.0]
    """
    return _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def sobel_y() -> Array:
    """Sobel operator for the vertical gradient (detects horizontal edges).

    ``[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]``, the transpose of ``sobel_x``; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.sobel_y()[:, 1].tolist()
      [-2.0, 0.0, 2.0]
    """
    return _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])


def prewitt_x() -> Array:
    """Prewitt operator for the horizontal gradient (detects vertical edges).

    ``[[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]``: a central difference along columns averaged
    (unweighted) along rows; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.prewitt_x()[0].tolist()
      [-1.0, 0.0, 1.0]
    """
    return _kernel([[-1, 0, 1]] * 3)


def prewitt_y() -> Array:
    """Prewitt operator for the vertical gradient (detects horizontal edges).

    ``[[-1, -1, -1], [0, 0, 0], [1, 1, 1]]``, the transpose of ``prewitt_x``; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.prewitt_y()[:, 0].tolist()
      [-1.0, 0.0, 1.0]
    """
    return _kernel([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])


def scharr_x() -> Array:
    """Scharr operator for the horizontal gradient (detects vertical edges).

    ``[[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]``: Sobel with the ``[3, 10, 3]`` smoothing
    that makes the gradient direction more rotation-invariant; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.scharr_x()[:, 2].tolist()
      [3.0, 10.0, 3.0]
    """
    return _kernel([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])


def scharr_y() -> Array:
    """Scharr operator for the vertical gradient (detects horizontal edges).

    ``[[-3, -10, -3], [0, 0, 0], [3, 10, 3]]``, the transpose of ``scharr_x``; zero-sum.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.scharr_y()[2].tolist()
      [3.0, 10.0, 3.0]
    """
    return _kernel([[-3, -10, -3], [0, 0, 0], [3, 10, 3]])


def laplacian(*, neighbours: int = 4) -> Array:
    """Discrete Laplacian (second derivative; responds to blobs, edges and corners).

    ``neighbours=4``: ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``; ``neighbours=8``:
    ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``. Both zero-sum; a bright dot gives a negative
    centre response.

    Args:
      neighbours: 4 (edge neighbours only) or 8 (edge and corner neighbours).

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.laplacian(neighbours=8)[1].tolist()
      [1.0, -8.0, 1.0]
    """
    if not _checks.is_int(neighbours) or neighbours not in (4, 8):  # 4.0 and True too
        raise ValueError(
            f"laplacian: neighbours must be 4 or 8, got neighbours={neighbours!r}; use 4 for "
            f"the edge-neighbour stencil or 8 to include the diagonals."
        )
    if neighbours == 4:
        return _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    return _kernel([[1, 1, 1], [1, -8, 1], [1, 1, 1]])


# ---------------------------------------------------------------------------------------
# Smoothing and enhancement (sum 1: a flat region is left unchanged).


def gaussian(sigma: float, *, size: int | None = None) -> Array:
    """Isotropic Gaussian blur kernel, normalised to sum 1.

    ``k[i, j] ~ exp(-((i - c)**2 + (j - c)**2) / (2 sigma**2))`` with ``c = size // 2``;
    separable, symmetric under transposition and flips.

    Args:
      sigma: standard deviation in pixels, a positive Python number.
      size: odd side length; default ``2 * ceil(3 * sigma) + 1`` (covers +-3 sigma).

    Returns:
      [size, size] float32, summing to 1.

    Example:
      >>> from jaxconv import filters
      >>> k = filters.gaussian(1.0)
      >>> k.shape, round(float(k.sum()), 5)
      ((7, 7), 1.0)
    """
    sigma = _checks.check_real(
        "gaussian", "sigma", sigma, "the kernel size depends on it, so it cannot be traced"
    )
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(
            f"gaussian: sigma must be positive and finite, got sigma={sigma}; pass the blur "
            f"width in pixels, e.g. sigma=1.0."
        )
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    size = _checks.check_int(
        "gaussian", "size", size, minimum=1, fix="pass an odd size such as 3"
    )
    if size % 2 == 0:
        raise ValueError(
            f"gaussian: size must be odd (so the kernel has a centre pixel), got size={size}; "
            f"use size={size + 1} or leave size=None."
        )
    t = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(t**2) / (2.0 * sigma**2))
    k = np.outer(g, g)
    return _kernel(k / k.sum())


def box(size: int) -> Array:
    """Box (mean) filter: every weight ``1 / size**2``.

    Args:
      size: side length, an int >= 1.

    Returns:
      [size, size] float32, summing to 1.

    Example:
      >>> from jaxconv import filters
      >>> filters.box(2).tolist()
      [[0.25, 0.25], [0.25, 0.25]]
    """
    size = _checks.check_int("box", "size", size, minimum=1, fix="pass a side length such as 3")
    return _kernel(np.full((size, size), 1.0 / size**2))


def sharpen() -> Array:
    """3x3 sharpening kernel: identity plus a negated 4-neighbour Laplacian.

    ``[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]``; sums to 1, so flat regions are unchanged
    while edges are amplified.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.sharpen()[1].tolist()
      [-1.0, 5.0, -1.0]
    """
    return _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])


def emboss() -> Array:
    """3x3 emboss kernel: a diagonal relief effect (light from the top left).

    ``[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]``; sums to 1, so flat regions keep their value
    and diagonal intensity steps become bright or dark ridges.

    Returns:
      [3, 3] float32.

    Example:
      >>> from jaxconv import filters
      >>> filters.emboss()[0].tolist()
      [-2.0, -1.0, 0.0]
    """
    return _kernel([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


# ---------------------------------------------------------------------------------------
# Collections.

_ZERO_ARGUMENT = {
    "vertical_line": vertical_line,
    "horizontal_line": horizontal_line,
    "diagonal_line": diagonal_line,
    "antidiagonal_line": antidiagonal_line,
    "cross": cross,
    "sobel_x": sobel_x,
    "sobel_y": sobel_y,
    "prewitt_x": prewitt_x,
    "prewitt_y": prewitt_y,
    "scharr_x": scharr_x,
    "scharr_y": scharr_y,
    "laplacian": laplacian,
    "sharpen": sharpen,
    "emboss": emboss,
}

#: The names ``bank()`` returns, in order (every filter that needs no argument).
FILTER_NAMES: tuple[str, ...] = tuple(_ZERO_ARGUMENT)


def bank() -> dict[str, Array]:
    """Every filter that takes no argument, by name (``laplacian`` is the 4-neighbour one).

    Returns:
      A dict from each of ``FILTER_NAMES`` to its [3, 3] float32 kernel (fresh arrays).

    Example:
      >>> from jaxconv import filters
      >>> b = filters.bank()
      >>> list(b)[:2], b["cross"].shape
      (['vertical_line', 'horizontal_line'], (3, 3))
    """
    return {name: make() for name, make in _ZERO_ARGUMENT.items()}


def stack(kernels: Sequence[ArrayLike]) -> Array:
    """Stacks 2-D filters into one channels-last kernel for ``jaxconv.conv``.

    Args:
      kernels: a non-empty sequence of n [kh, kw] filters, all the same shape. Integer or
        bool values (e.g. nested lists of ints) become float32; floating dtypes promote
        together.

    Returns:
      [kh, kw, 1, n]: one input channel, output channel ``i`` is ``kernels[i]``.

    Example:
      >>> from jaxconv import filters
      >>> filters.stack([filters.vertical_line(), filters.horizontal_line()]).shape
      (3, 3, 1, 2)
    """
    if isinstance(kernels, str) or not isinstance(kernels, Sequence):
        raise TypeError(
            f"stack: kernels must be a list or tuple of 2-D filters, got "
            f"{type(kernels).__name__}; wrap a single filter as [k]."
        )
    if len(kernels) == 0:
        raise ValueError(
            "stack: kernels must hold at least one 2-D filter, got an empty sequence; "
            "pass e.g. [filters.cross()]."
        )
    arrays = [jnp.asarray(k) for k in kernels]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(
                f"stack: kernels[{i}] must be 2-D [kh, kw], got rank {a.ndim} with shape "
                f"{a.shape}; squeeze or index it down to one 2-D filter."
            )
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise TypeError(
                f"stack: kernels[{i}] must be real, got dtype {a.dtype}; take .real first."
            )
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"stack: all kernels must have the same shape, got shapes {shapes}; pad the "
            f"smaller ones with zeros (jnp.pad) to a common size."
        )
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return jnp.stack([a.astype(dtype) for a in arrays], axis=-1)[:, :, None, :]
