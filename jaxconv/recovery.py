"""Compare learned filters with reference filters up to the symmetries that hide them.

Output-channel permutation, a positive scale (ReLU is positively homogeneous), a sign where
the architecture allows it, a kernel flip (convolution vs correlation) and, for a layer
followed by a larger kernel, the pixel shift that kernel can undo. Metrics only: nothing here
trains or plots. Assignments are optimal (exhaustive for up to 8 filters, else scipy's
``linear_sum_assignment``; scipy is imported only then).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

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


# ---------------------------------------------------------------------------------------
# Whole stacks: the symmetry group of a conv-ReLU stack, and a student scored against it.

FAILURES = ("converging", "negated", "shifted", "merged", "other")


class LayerSymmetry(NamedTuple):
    """The symmetries of one hidden conv layer of a conv-ReLU stack.

    Attributes:
      name: the layer's name in the stack.
      channels: the teacher's number of channels (the permutation acts on them).
      max_shift: pixels per spatial axis a filter may move with the next conv's weights
        moved back (the student's next kernel minus the teacher's, halved; 0 after a stride
        or a pool, which a shift does not commute with).
      reasons: what each symmetry comes from, in words.
    """

    name: str
    channels: int
    max_shift: int
    reasons: tuple[str, ...]


def _conv_layers(model) -> list[tuple[str, Any]]:
    from jaxconv import nn

    return [(n, layer) for n, layer in zip(model.names, model.layers, strict=True)
            if isinstance(layer, nn.Conv)]


def _side(v) -> int:
    return int(v[0] if isinstance(v, tuple) else v)


def symmetry_group(teacher_model, student_model, teacher_params) -> list[LayerSymmetry]:
    """The symmetries under which a student of ``student_model`` computes the teacher's
    function with the teacher's filters, one record per hidden conv layer.

    A hidden layer followed by ReLU (and perhaps a max or average pool, both commuting with
    a positive per-channel scale) has: a permutation of its channels; a positive scale per
    channel (its inverse moved into the next conv's input channels); and, where the
    student's next conv kernel is larger than the teacher's by ``2 * s`` (stride 1, no pool
    between), a shift of up to ``s`` pixels per axis: exact away from the border, where
    the next conv's zero padding stands in for the row or column of the moved map that a
    VALID conv no longer computes (the function error shows it). Wider students add dead channels,
    positively scaled copies (redundant) and negated channels cancelled by pairs whose ReLUs
    sum to a linear map (``relu(z) = z + relu(-z)``); ``score_stack`` names those.

    Args:
      teacher_model: the teacher's ``nn.Stack`` (conv layers, each hidden one followed by a
        ReLU; one output conv last).
      student_model: the student's ``nn.Stack``, the same layers in the same order, hidden
        widths possibly larger and next kernels possibly larger.
      teacher_params: the teacher's params (for the widths).

    Returns:
      One ``LayerSymmetry`` per hidden conv layer of the teacher.
    """
    from jaxconv import nn

    op = "symmetry_group"
    t_convs, s_convs = _conv_layers(teacher_model), _conv_layers(student_model)
    if [n for n, _ in t_convs] != [n for n, _ in s_convs] or len(t_convs) < 2:
        raise ValueError(
            f"{op}: teacher and student need the same conv layers (at least two), got "
            f"{[n for n, _ in t_convs]} and {[n for n, _ in s_convs]}.")
    names = list(teacher_model.names)
    out = []
    for k, (name, layer) in enumerate(t_convs[:-1]):
        nxt_name, nxt = t_convs[k + 1]
        between = teacher_model.layers[names.index(name) + 1:names.index(nxt_name)]
        if not between or not isinstance(between[0], nn.Activation) or \
                between[0].name != "relu":
            raise ValueError(f"{op}: hidden conv {name!r} must be followed by a ReLU, got "
                             f"{between[:1]}.")
        pooled = any(isinstance(b, nn.MaxPool | nn.AvgPool) for b in between)
        strided = _side(layer.stride) != 1 or _side(nxt.stride) != 1
        extra = _side(s_convs[k + 1][1].kernel_size) - _side(nxt.kernel_size)
        shift = 0 if pooled or strided else max(extra // 2, 0)
        reasons = ["permutation of channels", "positive scale per channel (ReLU"
                   + (" and pool" if pooled else "") + " commute with it)"]
        if shift:
            reasons.append(f"shift by up to {shift} pixel(s) per axis (next kernel "
                           f"{extra} wider)")
        width = int(np.shape(teacher_params[name]["kernel"])[-1])
        out.append(LayerSymmetry(name, width, shift, tuple(reasons)))
    return out


class LayerScore(NamedTuple):
    """One hidden layer of a student scored against the teacher.

    Attributes:
      name: the layer's name.
      matches: one ``ShiftMatch`` per teacher channel (the filter vector is the kernel with
        its input channels aligned to the teacher's, and the bias when there is one).
      kinds: per student channel: ``"matched"``, ``"dead"`` (never positive on the data),
        ``"redundant"`` (a positive multiple of a matched channel), ``"negated"`` (a negative
        multiple of a teacher filter) or ``"other"``.
      min_cosine: the smallest cosine of ``matches``.
    """

    name: str
    matches: list[ShiftMatch]
    kinds: list[str]
    min_cosine: float


class StackScore(NamedTuple):
    """A student stack scored against a teacher modulo ``symmetry_group``.

    Attributes:
      recovered: every teacher filter matched with cosine >= ``min_cosine`` and (with data)
        the function error <= ``max_error``.
      failure: ``""`` when recovered, else one of ``FAILURES``: ``converging`` (filters
        matched, function not yet within ``max_error``), ``negated`` (a teacher filter found
        only negated), ``shifted`` (found only at a shift the next kernel cannot undo),
        ``merged`` (one student channel is the best match of two teacher filters) or
        ``other``.
      failed_layer: the first hidden layer with an unmatched filter (``""`` if none).
      layers: one ``LayerScore`` per hidden layer.
      min_cosine: the smallest cosine over all layers.
      max_param_error: after alignment (permutation, scale, shift; redundant copies' outgoing
        weights folded in), ``max |student - teacher|`` over every parameter, relative to
        the largest ``|teacher|`` of its layer and leaf.
      function_error: ``||student(x) - teacher(x)|| / ||teacher(x)||`` (NaN without data).
    """

    recovered: bool
    failure: str
    failed_layer: str
    layers: list[LayerScore]
    min_cosine: float
    max_param_error: float
    function_error: float


def _vectors(kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """[n, ...] per-channel filter vectors (kernel then bias) of a channels-last kernel."""
    v = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
    return v if bias is None else np.concatenate([v, bias[:, None]], axis=1)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / d if d > 0 else 0.0


def _crop_centre(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    idx = tuple(slice((s - t) // 2, (s - t) // 2 + t) for s, t in zip(a.shape, shape,
                                                                         strict=False))
    return a[idx]


def _moved(kernel, bias, shift, n_spatial):
    """Per-channel vectors of ``kernel`` moved by ``shift`` (spatial axes only)."""
    moved = shift_filter(kernel, tuple(shift) + (0,) * (kernel.ndim - n_spatial))
    return _vectors(moved, bias)


@functools.cache
def _jitted_apply():
    """``model.apply(params, x, return_features=True)`` jitted once with the (hashable)
    model static, so scoring many restarts of one architecture compiles once (also the
    teacher's outputs in ``_tasks``; jax is imported here: this module's other helpers are
    numpy only)."""
    import jax

    return jax.jit(lambda model, params, x: model.apply(params, x, return_features=True),
                   static_argnums=0)


def score_stack(
    student_params: dict,
    teacher_params: dict,
    *,
    teacher_model,
    student_model=None,
    x: ArrayLike | None = None,
    min_cosine: float = 0.99999,
    max_error: float = 1e-6,
) -> StackScore:
    """Scores a student conv-ReLU stack against the teacher modulo ``symmetry_group``.

    Layer by layer from the input: the student's kernel has its input channels aligned to
    the teacher's (the previous layer's permutation, inverse scale and shift applied, the
    outgoing weights of redundant copies folded into their original), then every teacher
    filter (kernel and bias) is matched to a distinct student channel, at every allowed
    shift, maximising the total cosine. The output conv is compared after the same
    alignment. Extra student channels are named (``LayerScore.kinds``).

    Args:
      student_params: the student's params (one network), keyed by layer name.
      teacher_params: the teacher's params, same names.
      teacher_model: the teacher's ``nn.Stack``.
      student_model: the student's ``nn.Stack`` (default: the teacher's).
      x: images ``[N, H, W, C]`` for the function error and for naming dead channels.
      min_cosine: the cosine every matched filter needs.
      max_error: the relative function error a recovered student must not exceed.

    Returns:
      A ``StackScore``.

    Example:
      >>> import jax, numpy as np
      >>> from jaxconv import recovery, teachers
      >>> t = teachers.line_crossing()
      >>> p = jax.tree.map(np.asarray, t.params)
      >>> p["conv1"]["kernel"] = 2.0 * p["conv1"]["kernel"][..., ::-1]
      >>> p["out"]["kernel"] = 0.5 * p["out"]["kernel"][:, :, ::-1]
      >>> s = recovery.score_stack(p, t.params, teacher_model=t.model)
      >>> s.recovered, round(s.min_cosine, 6), s.max_param_error < 1e-12
      (True, 1.0, True)
    """
    op = "score_stack"
    student_model = teacher_model if student_model is None else student_model
    group = symmetry_group(teacher_model, student_model, teacher_params)
    convs = [n for n, _ in _conv_layers(teacher_model)]
    sp = {k: {a: np.asarray(b, np.float64) for a, b in v.items()}
          for k, v in student_params.items()}
    tp = {k: {a: np.asarray(b, np.float64) for a, b in v.items()}
          for k, v in teacher_params.items()}
    for n in convs:
        if n not in sp or n not in tp or set(sp[n]) != set(tp[n]):
            raise ValueError(f"{op}: student and teacher need the same leaves for layer "
                             f"{n!r}, got {sorted(sp.get(n, {}))} and {sorted(tp.get(n, {}))}.")
    feats = None
    if x is not None:
        import jax

        xs = np.asarray(x, np.float32)
        apply = _jitted_apply()
        with jax.default_matmul_precision("highest"):
            s_out, feats = apply(student_model, student_params, xs)
            t_out, _ = apply(teacher_model, teacher_params, xs)
        t_out = np.asarray(t_out, np.float64)
        function_error = float(np.linalg.norm(np.asarray(s_out, np.float64) - t_out)
                               / max(float(np.linalg.norm(t_out)), 1e-300))
    else:
        function_error = float("nan")
    # state carried from layer to layer: student input channel per teacher channel, its
    # scale (teacher = scale * student) and its shift
    perm: list[int] | None = None
    scales = shifts = None
    aligned: dict = {}
    layers: list[LayerScore] = []
    failure, failed_layer = "", ""
    for k, name in enumerate(convs):
        w = sp[name]["kernel"]
        b = sp[name].get("bias")
        n_spatial = w.ndim - 2
        if perm is not None:  # align input channels to the previous layer's teacher order
            cols = [w[..., j, :] for j in range(w.shape[-2])]
            assert scales is not None and shifts is not None
            # a filter moved by d pairs with next weights moved by -d: move them back
            w = np.stack([scales[i] * shift_filter(cols[j], tuple(shifts[i]))
                          for i, j in enumerate(perm)], axis=-2)
        tw, tb = tp[name]["kernel"], tp[name].get("bias")
        if w.shape[:n_spatial] != tw.shape[:n_spatial]:
            w = _crop_centre(w, tw.shape[:n_spatial])
        if k == len(convs) - 1:
            aligned[name] = {"kernel": w, **({"bias": b} if b is not None else {})}
            break
        sym = group[k]
        n, m = w.shape[-1], tw.shape[-1]
        if m > n:
            raise ValueError(f"{op}: layer {name!r} has fewer student channels ({n}) than "
                             f"teacher channels ({m}).")
        all_shifts = list(itertools.product(range(-sym.max_shift, sym.max_shift + 1),
                                            repeat=n_spatial))
        s_vec = _vectors(w, b)
        t_moved = {s: _moved(tw, tb, s, n_spatial) for s in all_shifts}
        table = [[max(((_cos(s_vec[j], t_moved[s][i]), s) for s in all_shifts),
                      key=lambda t: t[0]) for j in range(n)] for i in range(m)]
        assignment = _assign(op, np.array([[c for c, _ in row] for row in table]))
        matches = []
        for i, j in enumerate(assignment):
            c, s = table[i][j]
            ref = t_moved[s][i]
            scale = float(ref @ s_vec[j]) / float(s_vec[j] @ s_vec[j]) if c > 0 else 0.0
            matches.append(ShiftMatch(i, j, c, max(scale, 0.0), tuple(int(d) for d in s)))
        kinds = ["other"] * n
        for mt in matches:
            kinds[mt.matched] = "matched"
        if feats is not None:
            relu = list(teacher_model.names)[list(teacher_model.names).index(name) + 1]
            f = np.asarray(feats[relu]).reshape(-1, n)
            for j in range(n):
                if kinds[j] == "other" and not np.any(f[:, j] > 0):
                    kinds[j] = "dead"
        fold: dict[int, list[tuple[int, float]]] = {}
        for j in range(n):
            if kinds[j] != "other":
                continue
            for mt in matches:
                c = _cos(s_vec[j], s_vec[mt.matched])
                if c >= min_cosine:
                    kinds[j] = "redundant"
                    ratio = float(s_vec[j] @ s_vec[mt.matched]) / float(
                        s_vec[mt.matched] @ s_vec[mt.matched])
                    fold.setdefault(mt.matched, []).append((j, ratio))
                    break
            else:
                if any(_cos(-s_vec[j], t_moved[s][i]) >= min_cosine
                       for i in range(m) for s in all_shifts):
                    kinds[j] = "negated"
        low = min(mt.cosine for mt in matches)
        layers.append(LayerScore(name, matches, kinds, low))
        if low < min_cosine and not failure:
            failed_layer = name
            failure = _failure(s_vec, tw, tb, matches, table, sym.max_shift, n_spatial,
                               min_cosine)
        aligned[name] = {"kernel": np.stack(
            [mt.scale * shift_filter(w[..., mt.matched], tuple(-d for d in mt.shift)
                                     + (0,) * (w.ndim - 1 - n_spatial)) for mt in matches],
            axis=-1)}
        if b is not None:
            aligned[name]["bias"] = np.array([mt.scale * b[mt.matched] for mt in matches])
        # the next conv: redundant copies' outgoing weights join their original's
        nxt = convs[k + 1]
        nk = sp[nxt]["kernel"].copy()
        for j, extra in fold.items():
            for c, ratio in extra:
                nk[..., j, :] += ratio * nk[..., c, :]
        sp[nxt] = {**sp[nxt], "kernel": nk}
        perm = [mt.matched for mt in matches]
        scales = [1.0 / mt.scale if mt.scale > 0 else 0.0 for mt in matches]
        shifts = [mt.shift for mt in matches]
    errs = []
    for name in convs:
        for leaf, t in tp[name].items():
            a = aligned[name][leaf]
            if a.shape != t.shape:
                errs.append(float("inf"))
                continue
            errs.append(float(np.max(np.abs(a - t)) / max(float(np.max(np.abs(t))), 1e-300)))
    low = min((ls.min_cosine for ls in layers), default=1.0)
    matched = low >= min_cosine
    ok_function = x is None or function_error <= max_error
    if matched and not ok_function:
        failure = "converging"
    return StackScore(matched and ok_function, failure, failed_layer, layers, low,
                      max(errs), function_error)


def _failure(s_vec, tw, tb, matches, table, max_shift, n_spatial, min_cosine) -> str:
    """What an unmatched teacher filter became (see ``StackScore.failure``)."""
    m = tw.shape[-1]
    bad = [mt.reference for mt in matches if mt.cosine < min_cosine]
    neg = _vectors(tw, tb)
    for i in bad:
        if any(_cos(-s, neg[i]) >= min_cosine for s in s_vec):
            return "negated"
    wider = list(itertools.product(range(-max_shift - 1, max_shift + 2), repeat=n_spatial))
    for i in bad:
        moved = [_moved(tw, tb, s, n_spatial)[i] for s in wider]
        if any(_cos(s, r) >= min_cosine for s in s_vec for r in moved):
            return "shifted"
    best = [int(np.argmax([table[i][j][0] for j in range(len(s_vec))])) for i in range(m)]
    if len(set(best)) < len(best):
        return "merged"
    return "other"
