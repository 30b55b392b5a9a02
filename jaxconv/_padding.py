"""The padding vocabulary (VALID/SAME/SAME_LOWER/FULL/CAUSAL, ints, pairs) and its arithmetic.

Also the pad modes (zeros/reflect/replicate/circular/symmetric). Shape arithmetic only plus
one ``pad`` helper; no convolution happens here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxconv import _checks

PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
PAD_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")
_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap",
               "symmetric": "symmetric"}

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]
Pads = tuple[tuple[int, int], ...]


def effective_kernel(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Extent of a dilated kernel: ``(k - 1) * d + 1`` per dim."""
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))


def output_size(size: int, k_eff: int, stride: int, low: int, high: int) -> int:
    """Output length of a strided window over a padded axis (floor mode)."""
    return (size + low + high - k_eff) // stride + 1


def check_padding(op: str, padding: Padding) -> str | int | tuple:
    """``padding``'s form checked without the input: what ``resolve_padding`` takes.

    Returns the upper-case name of one of ``PADDING_STRINGS``, an int >= 0, or a tuple whose
    entries are ints >= 0 or ``(low, high)`` pairs of them (its length is checked once the
    number of spatial dims is known). Python and numpy ints are accepted alike; bools are not.
    """
    if isinstance(padding, str):
        name = padding.upper()
        if name not in PADDING_STRINGS:
            raise ValueError(
                f"{op}: unknown padding {padding!r}; expected one of "
                f"{', '.join(repr(p) for p in PADDING_STRINGS)} (case-insensitive), an int, "
                f"a sequence of ints (one per spatial dim) or a sequence of (low, high) pairs."
                f"{_checks.closest(padding, PADDING_STRINGS)}"
            )
        return name
    if _checks.is_int(padding):
        values = [int(padding)]
        form: int | tuple = values[0]
    elif isinstance(padding, Sequence):
        entries: list[int | tuple[int, int]] = []
        for p in padding:
            if _checks.is_int(p):
                entries.append(int(p))
            elif (isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                  and all(_checks.is_int(v) for v in p)):
                entries.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(
                    f"{op}: each padding entry must be an int or a (low, high) pair of ints, "
                    f"got {p!r} in {padding!r}."
                )
        form = tuple(entries)
        values = [v for e in entries for v in (e if isinstance(e, tuple) else (e,))]
    else:
        raise TypeError(
            f"{op}: padding must be a string, an int or a sequence, got {padding!r}."
        )
    if any(v < 0 for v in values):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}.")
    return form


def resolve_padding(
    op: str,
    padding: Padding,
    sizes: Sequence[int],
    k_eff: Sequence[int],
    stride: Sequence[int],
) -> Pads:
    """Explicit ``(low, high)`` pads per spatial dim for any accepted ``padding``.

    Args:
      op: the calling op's name, for messages.
      padding: a string of ``PADDING_STRINGS`` (case-insensitive), an int (all sides),
        a sequence of ints (per dim, both sides) or a sequence of ``(low, high)`` pairs.
      sizes: input spatial sizes.
      k_eff: effective (dilated) kernel or window sizes.
      stride: strides.

    Returns:
      A tuple of ``(low, high)`` pairs, one per spatial dim.
    """
    n = len(sizes)
    if isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) != n:
        raise ValueError(
            f"{op}: padding must have one entry per spatial dim ({n}), got {len(padding)}: "
            f"{padding!r}."
        )
    form = check_padding(op, padding)
    if form == "VALID":
        return ((0, 0),) * n
    if form in ("SAME", "SAME_LOWER"):
        same: list[tuple[int, int]] = []
        for size, k, s in zip(sizes, k_eff, stride, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            small, big = total // 2, total - total // 2
            same.append((small, big) if form == "SAME" else (big, small))
        return tuple(same)
    if form == "FULL":
        return tuple((k - 1, k - 1) for k in k_eff)
    if form == "CAUSAL":
        return tuple((k - 1, 0) for k in k_eff)
    if isinstance(form, int):
        return ((form, form),) * n
    return tuple(e if isinstance(e, tuple) else (e, e) for e in form)


def check_kernel_fits(op: str, sizes, k_eff, pads, what: str = "kernel", hint: str = "") -> None:
    """ValueError if a (dilated) window is larger than the padded input on some axis.

    ``hint`` (empty, or a sentence starting with a space) ends the message.
    """
    for axis, (size, k, (lo, hi)) in enumerate(zip(sizes, k_eff, pads, strict=True)):
        if k > size + lo + hi:
            raise ValueError(
                f"{op}: the {what} (effective size {k} on spatial dim {axis}) is larger than "
                f"the padded input ({size} + {lo} + {hi} = {size + lo + hi}); use a smaller "
                f"{what} or dilation, or more padding (e.g. padding='SAME').{hint}"
            )


def pad(op: str, x: jax.Array, pads: Pads, mode: str, spatial_axes: Sequence[int]) -> jax.Array:
    """Pads ``x`` on ``spatial_axes`` with a pad mode other than zeros (torch semantics)."""
    for dim, (axis, (lo, hi)) in enumerate(zip(spatial_axes, pads, strict=True)):
        size = x.shape[axis]
        widest = max(lo, hi)
        if not widest:
            continue  # an unpadded axis (empty or not) is left as it is
        if size == 0:
            # every mode copies input values into the padding; an empty axis has none
            raise ValueError(
                f"{op}: pad_mode={mode!r} cannot pad spatial dim {dim}, which is empty (size "
                f"0; padding ({lo}, {hi})): it copies input values into the padding and there "
                "are none; give that dim at least one element, or use pad_mode='zeros'."
            )
        if mode == "reflect" and widest >= size:
            raise ValueError(
                f"{op}: reflect padding ({lo}, {hi}) must be smaller than the input size "
                f"{size} on spatial dim {dim}; use pad_mode='symmetric' or 'replicate', or "
                "pad less."
            )
        if mode in ("circular", "symmetric") and widest > size:
            raise ValueError(
                f"{op}: {mode} padding ({lo}, {hi}) must be at most the input size {size} on "
                f"spatial dim {dim}; pad less or use pad_mode='replicate'."
            )
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(spatial_axes, pads, strict=True):
        widths[axis] = pair
    return jnp.pad(x, widths, mode=_NUMPY_MODE[mode])
