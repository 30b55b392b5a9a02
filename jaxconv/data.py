"""Synthetic images for the filter experiments: the 5x5 cross, random lines and crosses, noise.

Must not touch global randomness or files: every image comes from ``jax.random`` and a
caller's ``key``, with static shapes, so the same key always gives the same data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import _activations as activations
from jaxconv import _checks
from jaxconv import _padding as padding_lib
from jaxconv._conv import conv
from jaxconv._typing import Array, ArrayLike

__all__ = [
    "CLASS_NAMES",
    "KINDS",
    "cross_image",
    "line_images",
    "noise_images",
    "shape_dataset",
    "teacher_targets",
]

#: Labels of ``shape_dataset``: ``CLASS_NAMES[label]``.
CLASS_NAMES: tuple[str, ...] = ("nothing", "vertical", "horizontal", "cross")

#: The shapes ``line_images`` can draw.
KINDS: tuple[str, ...] = ("vertical", "horizontal", "cross")


# ---------------------------------------------------------------------------------------
# Argument checks (trace-time, Python values only).


def _check_noise(op: str, noise) -> float:
    value = _checks.check_real(op, "noise", noise, "the noise standard deviation")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{op}: noise must be a finite standard deviation >= 0, got noise={noise}; "
            f"use noise=0.0 for clean images."
        )
    return value


# ---------------------------------------------------------------------------------------
# The tutorial image.


def cross_image() -> Array:
    """The tutorial's 5x5 input image: zeros with a centred cross of ones.

    Row 2 and column 2 are 1, everything else 0 (9 ones in all).

    Returns:
      [5, 5] float32.

    Example:
      >>> from jaxconv import data
      >>> data.cross_image()[2].tolist()
      [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    img = np.zeros((5, 5), np.float32)
    img[2, :] = 1.0
    img[:, 2] = 1.0
    return jnp.asarray(img)


# ---------------------------------------------------------------------------------------
# Random lines and crosses.


def _uniforms(key, count):
    """``count`` uniforms in ``(0, 1)`` from one flat draw.

    Every generator draws all its randomness here in one call: XLA:CPU spends most of the
    compile time of these small programs on each threefry instance (~0.4 s of CPU apiece
    on the 2-core dev box, several times that for an N-D shape), so one flat call keeps a
    new configuration cheap to compile.
    """
    tiny = jnp.finfo(jnp.float32).tiny
    return jax.random.uniform(key, (count,), jnp.float32, minval=tiny, maxval=1.0)


def _ints(u, low, high):
    """Integers uniform in ``[low, high)`` from uniforms ``u`` (arrays broadcast as equals)."""
    span = jnp.asarray(high, jnp.int32) - jnp.asarray(low, jnp.int32)
    step = jnp.floor(u * span.astype(jnp.float32)).astype(jnp.int32)
    return low + jnp.minimum(step, span - 1)


def _gaussian_noise(u, n, size):
    """Standard normal [n, size, size] by inverse-CDF sampling of uniforms in (0, 1)."""
    return jax.scipy.special.ndtri(u).reshape(n, size, size)


# kinds, length and noise are traced (not static) so that changing them reuses the program.
@functools.partial(jax.jit, static_argnames=("n", "size", "max_shapes"))
def _line_images(key, kind_counts, length, noise, *, n, size, max_shapes):
    m = max_shapes
    u = _uniforms(key, 7 * n * m + n * size * size)
    draws, u_noise = u[: 7 * n * m].reshape(7, n, m), u[7 * n * m :]
    count = _ints(draws[0, :, :1], 1, m + 1)
    active = jnp.arange(m).reshape(1, m) < count
    # Index into the caller's list of kinds, then map to 0/1/2 (exact integer arithmetic).
    pick = _ints(draws[1], 0, jnp.sum(kind_counts))
    kind = (pick >= kind_counts[0]).astype(jnp.int32) + (pick >= kind_counts[0] + kind_counts[1])
    random_lengths = _ints(draws[2], min(3, size), size + 1)
    lengths = jnp.where(length > 0, length, random_lengths)
    half = jnp.minimum(lengths // 2, (size - 1) // 2)
    across = _ints(draws[3], 0, size)
    along = _ints(draws[4], 0, size - lengths + 1)
    centre_r = _ints(draws[5], half, size - half)
    centre_c = _ints(draws[6], half, size - half)

    def grid(a):
        return a.reshape(n, m, 1, 1)

    rows = jnp.arange(size).reshape(1, 1, size, 1)
    cols = jnp.arange(size).reshape(1, 1, 1, size)
    across, along, lengths = grid(across), grid(along), grid(lengths)
    half, centre_r, centre_c = grid(half), grid(centre_r), grid(centre_c)
    vertical = (cols == across) & (rows >= along) & (rows < along + lengths)
    horizontal = (rows == across) & (cols >= along) & (cols < along + lengths)
    plus = ((cols == centre_c) & (jnp.abs(rows - centre_r) <= half)) | (
        (rows == centre_r) & (jnp.abs(cols - centre_c) <= half)
    )
    kind = grid(kind)
    drawn = jnp.where(kind == 0, vertical, jnp.where(kind == 1, horizontal, plus))
    drawn = drawn & grid(active)
    clean = jnp.any(drawn, axis=1).astype(jnp.float32)
    return clean + noise * _gaussian_noise(u_noise, n, size)


def line_images(
    key: ArrayLike,
    n: int,
    size: int = 16,
    *,
    kinds: Sequence[str] = KINDS,
    max_shapes: int = 3,
    noise: float = 0.1,
    length: int | None = None,
) -> Array:
    """Random vertical lines, horizontal lines and crosses (value 1) plus Gaussian noise.

    Each image holds between 1 and ``max_shapes`` shapes (uniformly), each of a kind drawn
    uniformly from ``kinds``, placed uniformly so that it lies fully inside the image;
    overlaps stay 1. A line is ``L`` pixels long; a cross has arms ``L // 2`` pixels long
    each side of its centre (clipped to fit), where ``L = length`` or, by default, uniform
    in ``[3, size]`` per shape. The training images of the filter-recovery experiments.
    The shapes depend only on ``key`` (not on ``noise``), so ``noise=0`` gives the clean
    version of the same images. Only ``n``, ``size`` and ``max_shapes`` are compiled in:
    other ``kinds``, ``length`` or ``noise`` reuse the compiled program.

    Args:
      key: a PRNG key, e.g. ``jax.random.key(0)``.
      n: number of images, >= 1.
      size: side length, >= 3.
      kinds: non-empty subset of ``("vertical", "horizontal", "cross")``; a repeated kind is
        drawn more often.
      max_shapes: most shapes per image, >= 1.
      noise: standard deviation of the additive Gaussian noise, >= 0.
      length: fixed shape length in ``[1, size]``, or None for random lengths.

    Returns:
      [n, size, size] float32.

    Example:
      >>> import jax
      >>> from jaxconv import data
      >>> data.line_images(jax.random.key(0), 4, 8).shape
      (4, 8, 8)
    """
    op = "line_images"
    _checks.check_key(op, key)
    n = _checks.check_int(op, "n", n, minimum=1, fix="ask for at least one image")
    size = _checks.check_int(op, "size", size, minimum=3, fix="a cross needs at least 3x3 pixels")
    max_shapes = _checks.check_int(
        op, "max_shapes", max_shapes, minimum=1, fix="draw at least one shape per image"
    )
    noise = _check_noise(op, noise)
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise TypeError(
            f"{op}: kinds must be a sequence of names from {KINDS}, got "
            f"{type(kinds).__name__} {kinds!r}; write e.g. kinds=('cross',)."
        )
    if len(kinds) == 0:
        raise ValueError(
            f"{op}: kinds must name at least one of {KINDS}, got an empty sequence; leave "
            f"kinds out to draw all three."
        )
    picked = [_checks.check_choice(op, "kind", k, KINDS) for k in kinds]
    kind_counts = np.array([picked.count(k) for k in KINDS], np.int32)
    if length is not None:
        length = _checks.check_int(op, "length", length, minimum=1, fix="use a positive length")
        if length > size:
            raise ValueError(
                f"{op}: length must be <= size (={size}) so shapes fit in the image, got "
                f"length={length}; use a smaller length or a larger size."
            )
    return _line_images(
        key,
        kind_counts,
        np.int32(0 if length is None else length),
        np.float32(noise),
        n=n,
        size=size,
        max_shapes=max_shapes,
    )


def noise_images(key: ArrayLike, n: int, size: int = 16) -> Array:
    """Standard normal images: rich inputs under which a filter bank is identifiable.

    Args:
      key: a PRNG key, e.g. ``jax.random.key(0)``.
      n: number of images, >= 1.
      size: side length, >= 1.

    Returns:
      [n, size, size] float32, i.i.d. N(0, 1).

    Example:
      >>> import jax
      >>> from jaxconv import data
      >>> data.noise_images(jax.random.key(0), 2, 5).shape
      (2, 5, 5)
    """
    op = "noise_images"
    _checks.check_key(op, key)
    n = _checks.check_int(op, "n", n, minimum=1, fix="ask for at least one image")
    size = _checks.check_int(op, "size", size, minimum=1, fix="use a positive side length")
    return jax.random.normal(key, (n * size * size,), jnp.float32).reshape(n, size, size)


# ---------------------------------------------------------------------------------------
# A labelled classification set.


def _max_jitter(size: int) -> int:
    """Largest shift that keeps a centred shape (arms ``size // 4``) inside the image."""
    return (size - 1) // 2 - size // 4


@functools.partial(jax.jit, static_argnames=("n", "size"))
def _shape_dataset(key, jitter, noise, *, n, size):
    u = _uniforms(key, 3 * n + n * size * size)
    # Shuffling arange(n) % 4 keeps the classes balanced (counts differ by at most one).
    labels = (jnp.arange(n, dtype=jnp.int32) % 4)[jnp.argsort(u[:n])]
    shift = _ints(u[n : 3 * n].reshape(2, n), -jitter, jitter + 1)
    half, centre = size // 4, (size - 1) // 2
    r = (centre + shift[0]).reshape(n, 1, 1)
    c = (centre + shift[1]).reshape(n, 1, 1)
    rows = jnp.arange(size).reshape(1, size, 1)
    cols = jnp.arange(size).reshape(1, 1, size)
    vertical = (cols == c) & (jnp.abs(rows - r) <= half)
    horizontal = (rows == r) & (jnp.abs(cols - c) <= half)
    lab = labels.reshape(n, 1, 1)
    drawn = (vertical & ((lab == 1) | (lab == 3))) | (horizontal & ((lab == 2) | (lab == 3)))
    return drawn.astype(jnp.float32) + noise * _gaussian_noise(u[3 * n :], n, size), labels


def shape_dataset(
    key: ArrayLike, n: int, size: int = 16, *, jitter: int = 3, noise: float = 0.2
) -> tuple[Array, Array]:
    """A balanced 4-class set: nothing, a vertical line, a horizontal line, a cross.

    Every shape is centred at ``((size - 1) // 2, (size - 1) // 2)`` shifted by a random
    integer in ``[-jitter, jitter]`` per axis; lines are one pixel thick and
    ``2 * (size // 4) + 1`` long (9 for size 16), a cross is both lines through the same
    centre. Gaussian noise is added to all images, class 0 being noise only. Labels are
    ``arange(n) % 4`` shuffled, so class counts differ by at most one.

    Args:
      key: a PRNG key, e.g. ``jax.random.key(0)``.
      n: number of images, >= 1.
      size: side length, >= 4.
      jitter: largest shift per axis, ``0 <= jitter <= (size - 1) // 2 - size // 4``
        (3 for size 16) so that shapes stay inside the image.
      noise: standard deviation of the additive Gaussian noise, >= 0.

    Returns:
      ``(images, labels)``: images [n, size, size] float32 and labels [n] int32 in
      ``0..3``, named by ``CLASS_NAMES``.

    Example:
      >>> import jax
      >>> from jaxconv import data
      >>> images, labels = data.shape_dataset(jax.random.key(0), 8)
      >>> images.shape, sorted(labels.tolist())
      ((8, 16, 16), [0, 0, 1, 1, 2, 2, 3, 3])
    """
    op = "shape_dataset"
    _checks.check_key(op, key)
    n = _checks.check_int(op, "n", n, minimum=1, fix="ask for at least one image")
    size = _checks.check_int(op, "size", size, minimum=4, fix="shapes need at least 4x4 pixels")
    jitter = _checks.check_int(op, "jitter", jitter, minimum=0, fix="use jitter=0 for no shift")
    if jitter > _max_jitter(size):
        need = size
        while _max_jitter(need) < jitter:
            need += 1
        raise ValueError(
            f"{op}: jitter (={jitter}) is too large for size={size}: shapes reach "
            f"{size // 4} pixels from the centre, so jitter must be <= {_max_jitter(size)}; "
            f"use a smaller jitter or size >= {need}."
        )
    noise = _check_noise(op, noise)
    return _shape_dataset(key, np.int32(jitter), np.float32(noise), n=n, size=size)


# ---------------------------------------------------------------------------------------
# Teacher responses.


def teacher_targets(
    images: ArrayLike,
    kernel: ArrayLike,
    *,
    padding: str = "VALID",
    activation: str | Callable[[Array], Array] | None = None,
) -> Array:
    """The response of one 2-D filter to a batch of images, via ``jaxconv.conv``.

    Args:
      images: [n, H, W] real floating.
      kernel: [kh, kw] real floating (e.g. ``filters.cross()``), cross-correlated.
      padding: any padding ``jaxconv.conv`` accepts, e.g. ``"VALID"`` or ``"SAME"``.
      activation: None, a name accepted by ``jaxconv.activation`` or a function applied
        to the response.

    Returns:
      [n, H', W'] with ``H' = H - kh + 1`` (likewise W') for ``"VALID"``, ``H`` for
      ``"SAME"``.

    Example:
      >>> from jaxconv import data, filters
      >>> y = data.teacher_targets(data.cross_image()[None], filters.cross(),
      ...                          activation="relu")
      >>> y[0].tolist()
      [[0.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.0]]
    """
    op = "teacher_targets"
    _checks.check_float(op, "images", images)
    _checks.check_float(op, "kernel", kernel)
    _checks.check_ndim(op, "images", images, 3, "[n, H, W]; add a batch axis with x[None]")
    _checks.check_ndim(op, "kernel", kernel, 2, "[kh, kw], one 2-D filter")
    act: Callable[[Array], Array] | None
    if activation is None:
        act = None
    elif isinstance(activation, str):
        act = activations.lookup(f"{op}: activation", "name", activation)
    elif callable(activation):
        act = activation
    else:
        raise TypeError(
            f"{op}: activation must be None, a name such as 'relu' or a function, got "
            f"{type(activation).__name__} {activation!r}."
        )
    padding_lib.check_padding(op, padding)
    return _teacher_targets(images, kernel, padding=_hashable(padding), act=act)


def _hashable(value):
    """Lists inside a padding spec become tuples, so it can be a static jit argument."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


# One compiled program: run op by op, a first conv call costs seconds of small compiles.
@functools.partial(jax.jit, static_argnames=("padding", "act"))
def _teacher_targets(images, kernel, *, padding, act):
    out = conv(images[..., None], kernel[:, :, None, None], padding=padding)[..., 0]
    return out if act is None else act(out)
