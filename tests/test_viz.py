"""jaxconv.viz writes valid PNGs and leaves matplotlib's global state (backend, pyplot's
figures) alone, so it is safe to call from a notebook."""

import matplotlib
import numpy as np
import pytest

from jaxconv import filters, viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figures(tmp_path):
    rng = np.random.default_rng(0)
    hand = {"cross": np.asarray(filters.cross()), "vertical": np.asarray(filters.vertical_line())}
    return [
        viz.image_grid({"a": [rng.normal(size=(5, 5))] * 3, "b": [rng.normal(size=(5, 5))]},
                       tmp_path / "grid.png", title="t", annotate=True, col_titles=["x", "y", "z"]),
        viz.filters_side_by_side(hand, {k: v + 0.01 for k, v in hand.items()},
                                 tmp_path / "sub" / "filters.png"),
        viz.loss_curves({"run": np.geomspace(1, 1e-6, 50)}, tmp_path / "loss.png"),
        viz.loss_curves(np.geomspace(1, 1e-3, 40)[None] * rng.uniform(1, 2, (4, 1)),
                        tmp_path / "losses.png", highlight=2),
        viz.restart_outcomes(rng.uniform(0, 1, 8), tmp_path / "restarts.png", threshold=0.5,
                             success=rng.uniform(0, 1, 8) < 0.5),
        viz.confusion_matrix(np.array([[5, 1], [0, 6]]), ["a", "b"], tmp_path / "cm.png"),
    ]


def test_every_figure_is_a_png(tmp_path):
    paths = _figures(tmp_path)
    assert len(set(paths)) == 6
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, path


def test_global_matplotlib_state_is_untouched(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    original = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend other than Agg
    try:
        open_figures = plt.get_fignums()
        _figures(tmp_path)
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures  # nothing registered with pyplot
    finally:
        matplotlib.use(original)
