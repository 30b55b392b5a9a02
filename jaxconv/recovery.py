"""Compare learned filters with reference filters up to the symmetries that hide them.

Output-channel permutation, a positive scale (ReLU is positively homogeneous), a sign where
the architecture allows it, and a kernel flip (convolution vs correlation). Metrics only:
nothing here trains or plots.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxconv._typing import ArrayLike


class FilterMatch(NamedTuple):
    """How well one reference filter is recovered.

    Attributes:
      reference: index of the reference filter.
      matched: index of the learned filter matched to it.
      cosine: cosine similarity after the flip/sign alignment (1.0 is a perfect match).
      scale: the least-squares factor ``s`` with ``s * learned ~= reference`` (after
        alignment; 1.0 when scaling is not allowed).
      flipped: whether the learned filter was reversed on every spatial axis.
      max_abs_error: ``max |s * aligned_learned - reference|``.
    """

    reference: int
    matched: int
    cosine: float
    scale: float
    flipped: bool
    max_abs_error: float


def _as_bank(op: str, name: str, f: ArrayLike) -> np.ndarray:
    """``(*spatial, in, n)`` (or a single 2-D filter) -> float64 ``[n, *spatial, in]``."""
    a = np.asarray(f, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{op}: {name} must have rank >= 2, got shape {a.shape}.")
    if a.ndim == 2:  # a single 2-D filter: one filter with one input channel
        return a[None, :, :, None]
    return np.moveaxis(a, -1, 0)


def _best_pair(
    learned: np.ndarray, ref: np.ndarray, *, allow_flip, allow_sign, allow_scale
) -> tuple[float, float, bool, float]:
    """``(cosine, scale, flipped, max_abs_error)`` of the best flip of ``learned``."""
    # per-filter arrays are (*spatial, in_channels): only the spatial axes flip.
    spatial_axes = tuple(range(learned.ndim - 1))
    best: tuple[float, float, bool, float] | None = None
    flips = (False, True) if allow_flip else (False,)
    for flipped in flips:
        cand = np.flip(learned, axis=spatial_axes) if flipped else learned
        num = float(np.sum(cand * ref))
        den = float(np.linalg.norm(cand) * np.linalg.norm(ref))
        cos = num / den if den > 0 else 0.0
        if allow_sign:
            cos = abs(cos)
        if allow_scale:
            sq = float(np.sum(cand * cand))
            scale = num / sq if sq > 0 else 0.0
            if not allow_sign and scale < 0:
                scale = 0.0
        else:
            scale = 1.0 if not allow_sign else float(np.sign(num) or 1.0)
        err = float(np.max(np.abs(scale * cand - ref)))
        if best is None or (cos, -err) > (best[0], -best[3]):
            best = (cos, scale, flipped, err)
    assert best is not None  # flips is never empty
    return best


def align(
    learned: ArrayLike,
    reference: ArrayLike,
    *,
    allow_flip: bool = True,
    allow_sign: bool = False,
    allow_scale: bool = True,
) -> list[FilterMatch]:
    """Matches every reference filter to a distinct learned filter, up to the symmetries.

    The matching maximises the total cosine similarity (exhaustively for up to 8 filters,
    greedily beyond).

    Args:
      learned: a bank ``(*spatial, in_channels, n)`` (the channels-last kernel of a conv
        layer) or a single 2-D filter ``(kh, kw)`` (read as ``(kh, kw, 1, 1)``).
      reference: a bank of the same per-filter shape with ``m <= n`` filters, or one filter.
      allow_flip: also try each learned filter reversed on its spatial axes.
      allow_sign: treat ``-f`` as ``f`` (only where no ReLU follows the filter).
      allow_scale: fit a positive (or, with ``allow_sign``, any) scale.

    Returns:
      One ``FilterMatch`` per reference filter, in reference order.

    Example:
      >>> import numpy as np
      >>> from jaxconv import filters, recovery
      >>> bank = filters.stack([filters.vertical_line(), filters.horizontal_line()])
      >>> m = recovery.align(2.0 * bank[..., ::-1], bank)
      >>> [(r.matched, round(r.cosine, 6), round(r.scale, 6)) for r in m]
      [(1, 1.0, 0.5), (0, 1.0, 0.5)]
    """
    op = "align"
    lrn = _as_bank(op, "learned", learned)
    ref = _as_bank(op, "reference", reference)
    if lrn.shape[1:] != ref.shape[1:]:
        raise ValueError(
            f"{op}: learned and reference filters must have the same per-filter shape, got "
            f"{lrn.shape[1:]} and {ref.shape[1:]}."
        )
    if len(ref) > len(lrn):
        raise ValueError(
            f"{op}: there are more reference filters ({len(ref)}) than learned ones "
            f"({len(lrn)})."
        )
    table = [
        [
            _best_pair(lrn[j], ref[i], allow_flip=allow_flip, allow_sign=allow_sign,
                       allow_scale=allow_scale)
            for j in range(len(lrn))
        ]
        for i in range(len(ref))
    ]
    cos = np.array([[t[0] for t in row] for row in table])
    assignment: Sequence[int]
    if len(lrn) <= 8:
        assignment = max(
            itertools.permutations(range(len(lrn)), len(ref)),
            key=lambda p: sum(cos[i, j] for i, j in enumerate(p)),
        )
    else:
        greedy: list[int] = []
        used: set[int] = set()
        for i in range(len(ref)):
            j = max((j for j in range(len(lrn)) if j not in used), key=lambda j: cos[i, j])
            used.add(j)
            greedy.append(j)
        assignment = greedy
    return [
        FilterMatch(i, int(j), *table[i][j][:3], table[i][j][3])
        for i, j in enumerate(assignment)
    ]


def summary(matches: list[FilterMatch]) -> dict[str, float]:
    """Worst-case numbers over a list of matches.

    Args:
      matches: the output of ``align``.

    Returns:
      ``{"min_cosine": ..., "max_abs_error": ...}`` over all matches.
    """
    if not matches:
        raise ValueError("summary: matches is empty; pass the list that align returns.")
    return {
        "min_cosine": float(min(m.cosine for m in matches)),
        "max_abs_error": float(max(m.max_abs_error for m in matches)),
    }
