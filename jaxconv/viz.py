"""Figures for the experiments: images, filter banks side by side, feature maps, loss curves.

Needs the optional extra ``viz`` (matplotlib), imported lazily. Every function returns a
``matplotlib.figure.Figure``, which a notebook shows inline; ``save`` (or the
``path`` argument) writes it as a PNG. Figures are built without pyplot, so the global backend
and a notebook's own figures are left alone. Nothing here computes results.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "confusion_matrix",
    "filters_side_by_side",
    "format_value",
    "image_grid",
    "loss_curves",
    "restart_outcomes",
    "save",
]

_DPI = 110
_SCALES = ("figure", "row", "column", "panel")


@functools.cache
def _figure_class() -> type:
    """matplotlib's Figure plus ``_repr_png_`` (inline display without pyplot) and
    ``__fspath__`` (the path it was last saved to)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jaxconv.viz needs matplotlib: pip install matplotlib, or from a checkout of "
            "jaxconv: pip install -e '.[viz]'"
        ) from e

    class JaxconvFigure(Figure):
        """A matplotlib Figure that a notebook displays as a PNG without pyplot.

        After ``save(fig, path)`` (or a ``path=`` argument), ``os.fspath(fig)`` is that path,
        so code written when these functions returned the path keeps working.
        """

        saved_path: str | None = None

        def _repr_png_(self) -> bytes:
            import io

            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
            return buf.getvalue()

        def __fspath__(self) -> str:
            if self.saved_path is None:
                raise TypeError(
                    "this jaxconv.viz figure has not been saved, so it has no path: "
                    "call jaxconv.viz.save(fig, path) first"
                )
            return self.saved_path

    return JaxconvFigure


def _figure(figsize) -> Any:
    return _figure_class()(figsize=figsize, layout="constrained")


def save(fig, path: str | os.PathLike) -> str:
    """Writes ``fig`` as a PNG (creating the directory) and returns the path.

    Args:
      fig: a figure from this module (or any matplotlib Figure).
      path: where the PNG goes.

    Returns:
      ``path`` as a string.

    Example:
      >>> import numpy as np, tempfile, os
      >>> from jaxconv import viz
      >>> fig = viz.image_grid({"noise": [np.eye(3)]})
      >>> out = viz.save(fig, os.path.join(tempfile.mkdtemp(), "eye.png"))
      >>> out.endswith("eye.png")
      True
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    if hasattr(type(fig), "saved_path"):
        fig.saved_path = path
    return path


def _path(op: str, args: tuple, path):
    """The path from the old positional form or from ``path=`` (not both)."""
    if len(args) > 1 or (args and path is not None):
        raise TypeError(
            f"{op}: give the PNG path once, as path=..., got {len(args)} positional "
            f"path(s){' and path=' if path is not None else ''}"
        )
    return args[0] if args else path


def _finish(fig, path: str | os.PathLike | None):
    if path is not None:
        save(fig, path)
    return fig


def format_value(v: float) -> str:
    """A cell annotation: at most 2 decimals, trailing zeros dropped, never ``-0``.

    Args:
      v: the value.

    Returns:
      ``"4"`` for 4.0, ``"-0.25"`` for -0.25, ``"0"`` for -0.001, ``"1.5"`` for 1.5.
    """
    text = f"{float(v):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0", "") else text


def _annotate(ax, a: np.ndarray, norm, panel_inches: float) -> None:
    """Each value in its cell, in a font small enough to fit the cell; white on strong
    colours so it stays readable."""
    texts = {idx: format_value(v) for idx, v in np.ndenumerate(a)}
    widest = max(len(t) for t in texts.values())
    # the drawn panel is smaller than its share of the figure (titles, colour bar)
    cell_points = 0.8 * 72.0 * panel_inches / max(a.shape)
    # a digit or minus sign is at most about 0.65 em wide; keep 20% of the cell as a margin
    fontsize = min(9.0, 0.8 * cell_points / (0.65 * widest))
    for (i, j), text in texts.items():
        strong = abs(norm(a[i, j]) - 0.5) > 0.3
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                color="white" if strong else "black")


def _limits(arrays: Sequence[np.ndarray], symmetric: bool,
            robust: bool = False) -> tuple[float, float]:
    finite = [a[np.isfinite(a)] for a in arrays]
    values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(1)
    if values.size == 0:
        values = np.zeros(1)
    if symmetric:
        magnitude = np.abs(values)
        lim = float(np.percentile(magnitude, 99) if robust else np.max(magnitude))
        return -(lim or 1.0), lim or 1.0
    lo, hi = (float(v) for v in np.percentile(values, [1, 99])) if robust else (
        float(values.min()), float(values.max()))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _check_scale(op: str, scale: str, allowed: Sequence[str]) -> None:
    if scale not in allowed:
        raise ValueError(f"{op}: scale must be one of {tuple(allowed)}, got scale={scale!r}")


def image_grid(
    rows: Mapping[str, Sequence[np.ndarray]],
    *args: str | os.PathLike,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    annotate: bool = False,
    symmetric: bool = True,
    col_titles: Sequence[str] | None = None,
    scale: str = "figure",
    colorbar: bool = True,
    robust: bool = False,
):
    """A grid of 2-D arrays: one row per key, its arrays left to right.

    Args:
      rows: row label -> sequence of 2-D arrays (filters, images or feature maps).
      *args: the PNG path given positionally, the form of the callers written when these
        functions returned the path; the same as ``path=``, which new code should use.
      path: if given, the figure is also saved there as a PNG.
      title: figure title.
      cmap: matplotlib colour map; diverging by default so the sign of a weight shows.
      annotate: print each value in its cell (for arrays of at most 7x7).
      symmetric: centre the colour scale on zero.
      col_titles: optional titles over the columns.
      scale: which panels share one colour scale (and one colour bar): ``"figure"`` (all,
        the default), ``"row"``, ``"column"`` or ``"panel"`` (each its own).
      colorbar: draw the colour bar(s).
      robust: set each scale from the 1st and 99th percentiles (99th of the magnitude when
        ``symmetric``) instead of the extremes, so a few strong pixels (edges in a
        photograph) do not wash out the rest; values beyond are drawn at the scale's ends.

    Returns:
      The matplotlib Figure.

    Example:
      >>> import numpy as np
      >>> from jaxconv import viz
      >>> fig = viz.image_grid({"a": [np.eye(3), -np.eye(3)]}, annotate=True)
      >>> len(fig.axes)  # two panels and their shared colour bar
      3
    """
    path = _path("image_grid", args, path)
    _check_scale("image_grid", scale, _SCALES)
    labels = list(rows)
    if not labels or not any(len(v) for v in rows.values()):
        raise ValueError("image_grid: rows must hold at least one array, got none")
    arrays = {label: [np.asarray(a, dtype=np.float32) for a in rows[label]] for label in labels}
    for label, row in arrays.items():
        for a in row:
            if a.ndim != 2:
                raise ValueError(
                    f"image_grid: every array must be 2-D, got shape {a.shape} in row {label!r}"
                )
    ncols = max(len(v) for v in arrays.values())
    panel = 1.7
    extra = 0.8 if colorbar else 0.0
    if colorbar and scale in ("panel", "row"):
        extra = 0.8 if scale == "row" else 0.5 * ncols
    fig = _figure((panel * ncols + 0.8 + extra, panel * len(labels) + (0.6 if title else 0.2)))
    axes = fig.subplots(len(labels), ncols, squeeze=False)

    def group(r: int, c: int):
        return {"figure": 0, "row": r, "column": c, "panel": (r, c)}[scale]

    members: dict[Any, list[tuple[int, int]]] = {}
    for r, label in enumerate(labels):
        for c in range(len(arrays[label])):
            members.setdefault(group(r, c), []).append((r, c))
    limits = {
        g: _limits([arrays[labels[r]][c] for r, c in cells], symmetric, robust)
        for g, cells in members.items()
    }
    images: dict[Any, Any] = {}
    for r, label in enumerate(labels):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(arrays[label]):
                ax.axis("off")
                continue
            a = arrays[label][c]
            vmin, vmax = limits[group(r, c)]
            im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax)
            images.setdefault(group(r, c), im)
            if annotate and max(a.shape) <= 7:
                _annotate(ax, a, im.norm, panel)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=9)
    if colorbar:
        for g, im in images.items():
            cells = members[g]
            fig.colorbar(im, ax=[axes[r][c] for r, c in cells], shrink=0.9,
                         location="bottom" if scale == "column" else "right")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def filters_side_by_side(
    reference: Mapping[str, np.ndarray],
    learned: Mapping[str, np.ndarray],
    *args: str | os.PathLike,
    path: str | os.PathLike | None = None,
    title: str = "hand-designed (top) vs learned (bottom)",
    scale: str = "figure",
):
    """Reference filters on the top row, the learned ones below, values printed in cells.

    Args:
      reference: filter name -> 2-D hand-designed filter.
      learned: filter name -> 2-D learned filter (same names).
      *args: the PNG path given positionally, the form of the callers written when these
        functions returned the path; the same as ``path=``, which new code should use.
      path: if given, the figure is also saved there as a PNG.
      title: figure title.
      scale: ``"figure"`` (one colour scale and colour bar for every panel, the default) or
        ``"column"`` (each reference and its learned filter share one).

    Returns:
      The matplotlib Figure.

    Example:
      >>> from jaxconv import filters, viz
      >>> fig = viz.filters_side_by_side({"cross": filters.cross()}, {"cross": filters.cross()})
      >>> fig.get_suptitle()
      'hand-designed (top) vs learned (bottom)'
    """
    path = _path("filters_side_by_side", args, path)
    _check_scale("filters_side_by_side", scale, ("figure", "column"))
    names = list(reference)
    missing = [n for n in names if n not in learned]
    if missing:
        raise ValueError(
            f"filters_side_by_side: learned has no filter named {missing[0]!r}; "
            f"reference and learned need the same names, got {names} and {list(learned)}"
        )
    pairs = [
        (np.asarray(reference[n], dtype=np.float32), np.asarray(learned[n], dtype=np.float32))
        for n in names
    ]
    panel = 1.9
    fig = _figure((panel * len(names) + 1.2, 2 * panel + (1.5 if scale == "column" else 1.0)))
    axes = fig.subplots(2, len(names), squeeze=False)
    everything = _limits([a for pair in pairs for a in pair], True)
    for c, (name, pair) in enumerate(zip(names, pairs, strict=True)):
        vmin, vmax = everything if scale == "figure" else _limits(list(pair), True)
        for r, (label, a) in enumerate(zip(("hand-designed", "learned"), pair, strict=True)):
            ax = axes[r][c]
            im = ax.imshow(a, cmap="RdBu_r", vmin=vmin, vmax=vmax)
            if max(a.shape) <= 7:
                _annotate(ax, a, im.norm, panel)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}\n{label}" if r == 0 else label, fontsize=9)
        if scale == "column":
            fig.colorbar(im, ax=[axes[0][c], axes[1][c]], location="bottom", shrink=0.9)
    if scale == "figure":
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9)
    fig.suptitle(title)
    return _finish(fig, path)


def loss_curves(
    curves: Mapping[str, np.ndarray] | np.ndarray,
    *args: str | os.PathLike,
    path: str | os.PathLike | None = None,
    title: str = "training loss",
    highlight: str | int | None = None,
    hlines: Mapping[str, float] | None = None,
):
    """Loss against step on a log scale.

    Args:
      curves: label -> 1-D loss history, or a [runs, steps] array (one faint line per run).
      *args: the PNG path given positionally, the form of the callers written when these
        functions returned the path; the same as ``path=``, which new code should use.
      path: if given, the figure is also saved there as a PNG.
      title: figure title.
      highlight: the label (mapping) or row index (array) to draw strongly.
      hlines: label -> value: dashed horizontal reference lines (e.g. a noise floor), named
        in the legend.

    Returns:
      The matplotlib Figure.

    Example:
      >>> import numpy as np
      >>> from jaxconv import viz
      >>> fig = viz.loss_curves({"run": np.geomspace(1, 1e-3, 50)}, hlines={"floor": 1e-3})
      >>> fig.axes[0].get_yscale()
      'log'
    """
    path = _path("loss_curves", args, path)
    fig = _figure((6.4, 3.8))
    ax = fig.subplots()
    if isinstance(curves, Mapping):
        for label, y in curves.items():
            y = np.asarray(y)
            lw = 2.2 if label == highlight else 1.2
            ax.plot(np.arange(1, y.size + 1), y, label=str(label), lw=lw)
    else:
        arr = np.atleast_2d(np.asarray(curves))
        for i, y in enumerate(arr):
            strong = i == highlight
            ax.plot(
                np.arange(1, y.size + 1), y, lw=2 if strong else 0.7,
                alpha=1.0 if strong else 0.35, color="C3" if strong else "C0",
            )
    for i, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{(i + 3) % 10}", label=f"{label}")
    if isinstance(curves, Mapping) or hlines:
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def restart_outcomes(
    values: np.ndarray,
    *args: str | os.PathLike,
    path: str | os.PathLike | None = None,
    threshold: float | None = None,
    success: np.ndarray | None = None,
    ylabel: str = "value",
    title: str = "restarts, sorted",
):
    """One bar per restart, sorted, on a log scale: which restarts worked and by how much.

    Args:
      values: [R] a per-restart number where lower is better (e.g. held-out error).
      *args: the PNG path given positionally, the form of the callers written when these
        functions returned the path; the same as ``path=``, which new code should use.
      path: if given, the figure is also saved there as a PNG.
      threshold: draws a dashed line at this value (the success cut-off).
      success: [R] bool; successful restarts are drawn in green, the others in grey.
      ylabel: the y-axis label.
      title: figure title.

    Returns:
      The matplotlib Figure.

    Example:
      >>> import numpy as np
      >>> from jaxconv import viz
      >>> fig = viz.restart_outcomes(np.array([1e-7, 0.2, 0.3]), threshold=1e-3)
      >>> fig.axes[0].get_xlabel()
      'restart (sorted)'
    """
    path = _path("restart_outcomes", args, path)
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v)
    ok = np.zeros(v.shape, bool) if success is None else np.asarray(success, bool).ravel()
    fig = _figure((6.4, 3.8))
    ax = fig.subplots()
    colors = np.where(ok[order], "C2", "0.55")
    floor = np.finfo(np.float64).tiny
    ax.bar(np.arange(v.size), np.maximum(v[order], floor), color=colors, width=0.85)
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="C3", lw=1, label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("restart (sorted)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, path)


def confusion_matrix(
    counts: np.ndarray,
    class_names: Sequence[str],
    *args: str | os.PathLike,
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """A confusion matrix: true class down, predicted class across, counts in the cells,
    coloured by the share of the true class (with a colour bar).

    Args:
      counts: [C, C] integer counts, ``counts[t, p]`` = examples of class t predicted as p.
      class_names: C names, in class-index order.
      *args: the PNG path given positionally, the form of the callers written when these
        functions returned the path; the same as ``path=``, which new code should use.
      path: if given, the figure is also saved there as a PNG.
      title: figure title (default: the overall accuracy).

    Returns:
      The matplotlib Figure.

    Example:
      >>> import numpy as np
      >>> from jaxconv import viz
      >>> fig = viz.confusion_matrix(np.array([[5, 1], [0, 6]]), ["a", "b"])
      >>> fig.axes[0].get_title()
      'accuracy 91.7% (11/12)'
    """
    path = _path("confusion_matrix", args, path)
    m = np.asarray(counts)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(
            f"confusion_matrix: counts must be [C, C] with C = len(class_names) = "
            f"{len(class_names)}, got shape {m.shape}"
        )
    total = m.sum()
    accuracy = np.trace(m) / total if total else float("nan")
    n = len(class_names)
    fig = _figure((1.1 * n + 2.4, 1.1 * n + 1.2))
    ax = fig.subplots()
    rows = np.maximum(m.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(m / rows, cmap="Blues", vmin=0, vmax=1)
    for (t, p), v in np.ndenumerate(m):
        ax.text(p, t, str(v), ha="center", va="center", fontsize=9,
                color="white" if v / rows[t, 0] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {accuracy:.1%} ({int(np.trace(m))}/{int(total)})")
    fig.colorbar(im, ax=ax, shrink=0.9, label="share of the true class")
    return _finish(fig, path)


def rate_map(
    rates: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    notes: Sequence[Sequence[str]] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    label: str = "success rate",
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """A table of rates in [0, 1] as coloured cells, each with its value and an optional
    note (e.g. failure counts); NaN cells (not run) are left blank.

    Args:
      rates: [R, C] values in [0, 1] (NaN: no value).
      row_labels: R labels, top to bottom.
      col_labels: C labels, left to right.
      notes: optional strings, ``notes[i][j]`` printed under the value of cell (i, j).
      xlabel: the column axis label.
      ylabel: the row axis label.
      label: the colour bar's label.
      title: axes title.
      path: if given, the figure is also saved there as a PNG.

    Returns:
      The matplotlib Figure.

    Example:
      >>> import numpy as np
      >>> from jaxconv import viz
      >>> fig = viz.rate_map(np.array([[0.25, 1.0]]), ["a"], ["x", "y"])
      >>> [t.get_text() for t in fig.axes[0].texts]
      ['25%', '100%']
    """
    r = np.asarray(rates, dtype=np.float64)
    if r.ndim != 2 or r.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"rate_map: rates must be [len(row_labels), len(col_labels)] = "
            f"[{len(row_labels)}, {len(col_labels)}], got shape {r.shape}"
        )
    fig = _figure((1.7 * r.shape[1] + 2.4, 0.95 * r.shape[0] + 1.6))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(r), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(r):
        if np.isnan(v):
            continue
        text = f"{v:.0%}"
        if notes is not None and notes[i][j]:
            text += f"\n{notes[i][j]}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(r.shape[1]), list(col_labels))
    ax.set_yticks(range(r.shape[0]), list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.9, label=label)
    return _finish(fig, path)
