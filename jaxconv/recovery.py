"""Compare learned filters with reference filters up to the symmetries that hide them.

Output-channel permutation, a positive scale (ReLU is positively homogeneous), a sign where
the architecture allows it, a kernel flip (convolution vs correlation) and, for a layer
followed by a larger kernel, the pixel shift that kernel can undo. Metrics only: nothing here
trains or plots. Assignments are optimal (exhaustive for up to 8 filters, else scipy's
``linear_sum_assignment``; scipy is imported only then).
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

    The matching maximises the total cosine similarity: exhaustively for up to 8 learned
    filters, by ``scipy.optimize.linear_sum_assignment`` beyond (scipy needed then).

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
    assignment = _assign(op, cos)
    return [
        FilterMatch(i, int(j), *table[i][j][:3], table[i][j][3])
        for i, j in enumerate(assignment)
    ]


def _assign(op: str, score: np.ndarray) -> list[int]:
    """For each row of ``score`` [m, n] (m <= n) a distinct column, maximising the total."""
    m, n = score.shape
    if n <= 8:
        best: Sequence[int] = max(
            itertools.permutations(range(n), m),
            key=lambda p: sum(score[i, j] for i, j in enumerate(p)),
        )
        return [int(j) for j in best]
    try:
        from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{op}: matching more than 8 filters needs scipy "
            "(pip install 'jaxconv[experiments]')."
        ) from e
    rows, cols = linear_sum_assignment(score, maximize=True)
    out = [0] * m
    for i, j in zip(rows, cols, strict=True):
        out[int(i)] = int(j)
    return out


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


CHANNEL_KINDS = ("matched", "dead", "redundant", "other")


class ShiftMatch(NamedTuple):
    """How one reference filter is recovered by a learned channel, up to scale and shift.

    Attributes:
      reference: index of the reference filter.
      matched: index of the learned channel assigned to it.
      cosine: cosine similarity of the learned filter with the reference moved by ``shift``.
      scale: the least-squares factor ``s >= 0`` with ``s * learned ~= moved reference``.
      shift: per spatial axis, the pixels the reference is moved by (``(0, 0)`` unshifted).
    """

    reference: int
    matched: int
    cosine: float
    scale: float
    shift: tuple[int, ...]


class ChannelReport(NamedTuple):
    """Every reference filter's match and what each learned channel is.

    Attributes:
      matches: one ``ShiftMatch`` per reference filter, in reference order.
      kinds: one entry of ``CHANNEL_KINDS`` per learned channel: ``"matched"`` (assigned to
        a reference filter), ``"dead"`` (all-zero after ReLU on the data), ``"redundant"`` (a
        positively scaled, possibly shifted copy of another channel) or ``"other"``.
      recovered: every match has cosine >= ``min_cosine``.
    """

    matches: list[ShiftMatch]
    kinds: list[str]
    recovered: bool


def shift_filter(f: ArrayLike, shift: Sequence[int]) -> np.ndarray:
    """``f`` moved by ``shift`` pixels inside its own window, zero-filled (what leaves the
    window is lost).

    Args:
      f: a filter ``(*spatial, ...)``; the first ``len(shift)`` axes are spatial.
      shift: pixels per spatial axis; positive moves towards higher indices.

    Returns:
      An array of ``f``'s shape: ``out[i + shift] = f[i]`` where both lie in the window.

    Example:
      >>> import numpy as np
      >>> from jaxconv import recovery
      >>> recovery.shift_filter(np.arange(3.0), (1,)).tolist()
      [0.0, 0.0, 1.0]
    """
    a = np.asarray(f, dtype=np.float64)
    out = np.zeros_like(a)
    dst, src = [], []
    for size, d in zip(a.shape, shift, strict=False):
        d = int(d)
        dst.append(slice(max(d, 0), size + min(d, 0)))
        src.append(slice(max(-d, 0), size + min(-d, 0)))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _embed(ref: np.ndarray, shape: tuple[int, ...], n_spatial: int) -> np.ndarray:
    """A reference filter zero-padded (centred) to a learned filter's larger window."""
    pads = []
    for a, (r, lsz) in enumerate(zip(ref.shape, shape, strict=True)):
        extra = lsz - r
        if a >= n_spatial or extra == 0:
            pads.append((0, 0))
            continue
        pads.append((extra // 2, extra - extra // 2))
    return np.pad(ref, pads)


def _shift_pair(learned: np.ndarray, moved: dict) -> tuple[float, float, tuple[int, ...]]:
    """Best (cosine, positive scale, shift) of one learned filter against moved references."""
    best = (-np.inf, 0.0, ())
    nl = float(np.linalg.norm(learned))
    for shift, ref in moved.items():
        num = float(np.sum(learned * ref))
        den = nl * float(np.linalg.norm(ref))
        cos = num / den if den > 0 else 0.0
        if cos > best[0] + 1e-12:
            scale = max(num / (nl * nl), 0.0) if nl > 0 else 0.0
            best = (cos, scale, shift)
    return best


def match_channels(
    learned: ArrayLike,
    reference: ArrayLike,
    *,
    max_shift: int = 0,
    features: ArrayLike | None = None,
    min_cosine: float = 0.99,
    dead_tol: float = 1e-3,
) -> ChannelReport:
    """Matches reference filters to learned channels up to positive scale and shift, and
    names what every other learned channel is.

    For a layer followed by ReLU: no sign flip and no kernel flip, but a permutation of the
    channels and a positive scale per channel leave the network's function unchanged. When
    the next layer's kernel is larger than the teacher's by ``2 * max_shift`` pixels, a
    filter moved by up to ``max_shift`` pixels per axis with the next layer's weights moved
    back is the same function too, so references are tried at every such shift. The
    assignment maximises the total cosine (optimal, as in ``align``).

    Args:
      learned: the learned kernel ``(*spatial, in_channels, n)`` (channels last).
      reference: the reference kernel ``(*ref_spatial, in_channels, m)`` with ``m <= n`` and
        each spatial size <= the learned one (a smaller one is centred in the learned window).
      max_shift: the largest shift per spatial axis tried (0: no shift).
      features: the learned layer's outputs after ReLU on the data, ``[..., n]``; needed to
        call a channel dead (without it no channel is).
      min_cosine: the cosine a match needs to count as recovered, and a copy to count as
        redundant.
      dead_tol: a channel is dead when its largest output on the data is at most ``dead_tol``
        times the largest output of any channel.

    Returns:
      A ``ChannelReport``.

    Example:
      >>> import numpy as np
      >>> from jaxconv import filters, recovery
      >>> bank = filters.stack([filters.vertical_line(), filters.horizontal_line()])
      >>> learned = np.concatenate([3.0 * bank[..., ::-1], bank[..., :1]], axis=-1)
      >>> r = recovery.match_channels(learned, bank)
      >>> [(m.matched, round(m.cosine, 6)) for m in r.matches], r.kinds, r.recovered
      ([(1, 1.0), (0, 1.0)], ['matched', 'matched', 'redundant'], True)
    """
    op = "match_channels"
    lrn = _as_bank(op, "learned", learned)
    ref = _as_bank(op, "reference", reference)
    n_spatial = lrn.ndim - 2
    if ref.ndim != lrn.ndim or ref.shape[-1] != lrn.shape[-1] or any(
        r > lsz for r, lsz in zip(ref.shape[1:-1], lrn.shape[1:-1], strict=True)
    ):
        raise ValueError(
            f"{op}: reference filters {ref.shape[1:]} must have learned's rank and input "
            f"channels and fit in its window, learned filters are {lrn.shape[1:]}."
        )
    if len(ref) > len(lrn):
        raise ValueError(
            f"{op}: there are more reference filters ({len(ref)}) than learned ones "
            f"({len(lrn)})."
        )
    if not (isinstance(max_shift, int) and max_shift >= 0):
        raise ValueError(f"{op}: max_shift must be an int >= 0, got {max_shift!r}.")
    shifts = list(itertools.product(range(-max_shift, max_shift + 1), repeat=n_spatial))
    moved = [
        {s: shift_filter(_embed(r, lrn.shape[1:], n_spatial), s) for s in shifts} for r in ref
    ]
    table = [[_shift_pair(lrn[j], moved[i]) for j in range(len(lrn))] for i in range(len(ref))]
    cos = np.array([[t[0] for t in row] for row in table])
    assignment = _assign(op, cos)
    matches = [
        ShiftMatch(i, j, float(table[i][j][0]), float(table[i][j][1]),
                   tuple(int(d) for d in table[i][j][2]))
        for i, j in enumerate(assignment)
    ]
    kinds = ["other"] * len(lrn)
    for j in assignment:
        kinds[j] = "matched"
    if features is not None:
        feats = np.asarray(features, dtype=np.float64)
        if feats.shape[-1] != len(lrn):
            raise ValueError(
                f"{op}: features must have one channel per learned filter ({len(lrn)}) on "
                f"the last axis, got shape {feats.shape}."
            )
        peak = np.max(feats.reshape(-1, len(lrn)), axis=0)
        top = float(np.max(peak))
        for j in range(len(lrn)):
            if kinds[j] == "other" and peak[j] <= dead_tol * top:
                kinds[j] = "dead"
    # a copy of any channel that is matched or already explained (up to shift and scale)
    self_moved = {j: {s: shift_filter(lrn[j], s) for s in shifts} for j in range(len(lrn))}
    for j in range(len(lrn)):
        if kinds[j] != "other":
            continue
        for k in range(len(lrn)):
            copy = _shift_pair(lrn[j], self_moved[k])[0] >= min_cosine
            if k != j and kinds[k] != "dead" and copy:
                kinds[j] = "redundant"
                break
    return ChannelReport(matches, kinds, all(m.cosine >= min_cosine for m in matches))
