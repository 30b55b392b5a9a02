"""Figures for the experiments: images, filter banks side by side, feature maps, loss curves.

Needs the optional extra ``viz`` (matplotlib), imported lazily. Figures are built without
pyplot, so the global backend and a notebook's own figures are left alone. Every function
writes a PNG and returns its path. Nothing here computes results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize, squeeze: bool = True):
    """A figure and its axes without pyplot: no global backend switch, nothing to close, so a
    notebook's own plotting is left alone."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jaxconv.viz needs matplotlib: pip install 'jaxconv[viz]'"
        ) from e
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _annotate(ax, a: np.ndarray, lim: float) -> None:
    """Prints each value in its cell, white on strong colours so it stays readable."""
    for (i, j), v in np.ndenumerate(a):
        colour = "white" if abs(v) > 0.6 * lim else "black"
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=colour)


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def image_grid(
    rows: Mapping[str, Sequence[np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    cmap: str = "RdBu_r",
    annotate: bool = False,
    symmetric: bool = True,
    col_titles: Sequence[str] | None = None,
) -> str:
    """A grid of 2-D arrays: one row per key, its arrays left to right.

    Args:
      rows: row label -> sequence of 2-D arrays (filters, images or feature maps).
      path: where the PNG goes.
      title: figure title.
      cmap: matplotlib colour map; diverging by default so the sign of a weight shows.
      annotate: print each value in its cell (for small filters).
      symmetric: centre the colour scale of each panel on zero.
      col_titles: optional titles over the columns.

    Returns:
      ``path`` as a string.
    """
    labels = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = _subplots(
        len(labels), ncols, figsize=(1.9 * ncols + 1.2, 1.9 * len(labels) + 0.4), squeeze=False
    )
    for r, label in enumerate(labels):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[label]):
                ax.axis("off")
                continue
            a = np.asarray(rows[label][c], dtype=np.float32)
            lim = float(np.max(np.abs(a))) or 1.0
            kw = {"vmin": -lim, "vmax": lim} if symmetric else {}
            ax.imshow(a, cmap=cmap, **kw)
            if annotate and a.size <= 49:
                _annotate(ax, a, lim)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def filters_side_by_side(
    reference: Mapping[str, np.ndarray],
    learned: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "hand-designed (top) vs learned (bottom)",
) -> str:
    """Reference filters on the top row, the learned ones below, values printed in cells.

    Args:
      reference: filter name -> 2-D hand-designed filter.
      learned: filter name -> 2-D learned filter (same names).
      path: where the PNG goes.
      title: figure title.

    Returns:
      ``path`` as a string.
    """
    names = list(reference)
    fig, axes = _subplots(2, len(names), figsize=(2.4 * len(names), 5), squeeze=False)
    for c, name in enumerate(names):
        for r, (label, bank) in enumerate((("hand-designed", reference), ("learned", learned))):
            a = np.asarray(bank[name], dtype=np.float32)
            lim = float(np.max(np.abs(a))) or 1.0
            ax = axes[r][c]
            ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
            _annotate(ax, a, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}\n{label}" if r == 0 else label, fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def loss_curves(
    curves: Mapping[str, np.ndarray] | np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "training loss",
    highlight: str | int | None = None,
) -> str:
    """Loss against step on a log scale.

    Args:
      curves: label -> 1-D loss history, or a [runs, steps] array (one faint line per run).
      path: where the PNG goes.
      title: figure title.
      highlight: the label (mapping) or row index (array) to draw strongly.

    Returns:
      ``path`` as a string.
    """
    fig, ax = _subplots(figsize=(6, 3.6))
    if isinstance(curves, Mapping):
        for label, y in curves.items():
            y = np.asarray(y)
            lw = 2.2 if label == highlight else 1.2
            ax.plot(np.arange(1, y.size + 1), y, label=str(label), lw=lw)
        ax.legend(fontsize=8)
    else:
        arr = np.atleast_2d(np.asarray(curves))
        for i, y in enumerate(arr):
            strong = i == highlight
            ax.plot(
                np.arange(1, y.size + 1), y, lw=2 if strong else 0.7,
                alpha=1.0 if strong else 0.35, color="C3" if strong else "C0",
            )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def restart_outcomes(
    values: np.ndarray,
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    success: np.ndarray | None = None,
    ylabel: str = "value",
    title: str = "restarts, sorted",
) -> str:
    """One bar per restart, sorted, on a log scale: which restarts worked and by how much.

    Args:
      values: [R] a per-restart number where lower is better (e.g. held-out error).
      path: where the PNG goes.
      threshold: draws a dashed line at this value (the success cut-off).
      success: [R] bool; successful restarts are drawn in green, the others in grey.
      ylabel: the y-axis label.
      title: figure title.

    Returns:
      ``path`` as a string.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v)
    ok = np.zeros(v.shape, bool) if success is None else np.asarray(success, bool).ravel()
    fig, ax = _subplots(figsize=(6, 3.6))
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
    return _save(fig, path)


def confusion_matrix(
    counts: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> str:
    """A confusion matrix: true class down, predicted class across, counts in the cells.

    Args:
      counts: [C, C] integer counts, ``counts[t, p]`` = examples of class t predicted as p.
      class_names: C names, in class-index order.
      path: where the PNG goes.
      title: figure title (default: the overall accuracy).

    Returns:
      ``path`` as a string.
    """
    m = np.asarray(counts)
    total = m.sum()
    accuracy = np.trace(m) / total if total else float("nan")
    fig, ax = _subplots(figsize=(1.1 * len(class_names) + 1.6, 1.1 * len(class_names) + 1))
    rows = np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(m / rows, cmap="Blues", vmin=0, vmax=1)
    for (t, p), v in np.ndenumerate(m):
        ax.text(p, t, str(v), ha="center", va="center", fontsize=9,
                color="white" if v / rows[t, 0] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {accuracy:.1%} ({int(np.trace(m))}/{int(total)})")
    return _save(fig, path)
