"""jaxconv.viz returns matplotlib figures that display inline and save as valid PNGs, with one
colour scale (and colour bar) per comparison, readable cell annotations, and matplotlib's
global state (backend, pyplot's figures) left alone, so it is safe to call from a notebook."""

import itertools
import os

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from jaxconv import filters, viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _hand():
    return {n: np.asarray(getattr(filters, n)()) for n in ("cross", "vertical_line",
                                                           "horizontal_line")}


def _figures():
    rng = np.random.default_rng(0)
    hand = _hand()
    return {
        "grid": viz.image_grid({"a": [rng.normal(size=(5, 5))] * 3, "b": [rng.normal(size=(5, 5))]},
                               title="t", annotate=True, col_titles=["x", "y", "z"]),
        "filters": viz.filters_side_by_side(hand, {k: v + 0.01 for k, v in hand.items()}),
        "loss": viz.loss_curves({"run": np.geomspace(1, 1e-6, 50)}, hlines={"floor": 1e-6}),
        "losses": viz.loss_curves(np.geomspace(1, 1e-3, 40)[None] * rng.uniform(1, 2, (4, 1)),
                                  highlight=2),
        "restarts": viz.restart_outcomes(rng.uniform(0, 1, 8), threshold=0.5,
                                         success=rng.uniform(0, 1, 8) < 0.5),
        "confusion": viz.confusion_matrix(np.array([[5, 1], [0, 6]]), ["a", "b"]),
    }


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images() if isinstance(im, AxesImage)]


def _panels(fig):
    """The axes that show data (colour bars are axes too, without a title or labels)."""
    return [ax for ax in fig.axes if ax.get_images() and not hasattr(ax, "_colorbar")]


def _drawn(fig):
    """Draws ``fig`` as savefig would (constrained layout included); returns the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _cell_texts(fig):
    return [t for ax in _panels(fig) for t in ax.texts]


@pytest.mark.slow
def test_every_function_returns_a_figure():
    for name, fig in _figures().items():
        assert isinstance(fig, Figure), name


@pytest.mark.slow
def test_path_keyword_and_positional_path_save_a_png(tmp_path):
    hand = _hand()
    saved = [
        viz.image_grid({"a": [np.eye(3)]}, path=tmp_path / "grid.png"),
        viz.filters_side_by_side(hand, hand, tmp_path / "sub" / "filters.png"),  # old form
        viz.loss_curves({"run": np.geomspace(1, 1e-6, 50)}, tmp_path / "loss.png"),
        viz.restart_outcomes(np.array([0.1, 1.0]), path=tmp_path / "restarts.png"),
        viz.confusion_matrix(np.array([[5, 1], [0, 6]]), ["a", "b"], tmp_path / "cm.png"),
    ]
    for fig in saved:
        path = os.fspath(fig)  # the old callers took the returned value as the path
        assert os.path.dirname(path).startswith(str(tmp_path))
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, path
    assert os.path.basename(saved[1]) == "filters.png"


def test_save_writes_a_png_and_returns_the_path(tmp_path):
    fig = viz.image_grid({"a": [np.eye(3)]})
    out = viz.save(fig, tmp_path / "deep" / "x.png")
    assert out == str(tmp_path / "deep" / "x.png")
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.fspath(fig) == out


def test_an_unsaved_figure_has_no_path():
    with pytest.raises(TypeError, match=r"has not been saved.*viz\.save\(fig, path\)"):
        os.fspath(viz.image_grid({"a": [np.eye(3)]}))


def test_path_given_twice_is_refused(tmp_path):
    with pytest.raises(TypeError, match="image_grid: give the PNG path once"):
        viz.image_grid({"a": [np.eye(3)]}, tmp_path / "a.png", path=tmp_path / "b.png")


@pytest.mark.slow
def test_figures_display_inline_as_png():
    for name, fig in _figures().items():
        assert fig._repr_png_()[:8] == PNG_MAGIC, name


@pytest.mark.parametrize(
    "value, text",
    [(4.0, "4"), (-2.0, "-2"), (0.0, "0"), (-0.0, "0"), (-0.001, "0"), (0.004, "0"),
     (0.25, "0.25"), (1.5, "1.5"), (-0.333, "-0.33"), (2.0100001, "2.01")],
    ids=lambda v: repr(v),
)
def test_format_value(value, text):
    assert viz.format_value(value) == text


def test_annotations_never_show_negative_zero():
    rows = {"maps": [np.array([[-1e-7, 0.0], [-0.004, 4.0]])]}
    texts = [t.get_text() for t in _cell_texts(viz.image_grid(rows, annotate=True))]
    assert sorted(texts) == ["0", "0", "0", "4"]


@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (7, 7)], ids=str)
@pytest.mark.slow
def test_annotations_do_not_overlap_and_stay_in_their_cells(shape):
    a = -2.0 - np.random.default_rng(0).uniform(0, 0.99, shape)  # the widest text, "-2.xx"
    fig = viz.image_grid({"one": [a, -a], "two": [a, a]}, annotate=True)
    renderer = _drawn(fig)
    for ax in _panels(fig):
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == a.size
        panel = ax.get_window_extent(renderer)
        cell_w, cell_h = panel.width / shape[1], panel.height / shape[0]
        for box in boxes:
            assert box.width < cell_w and box.height < cell_h
        for b1, b2 in itertools.combinations(boxes, 2):
            assert not b1.overlaps(b2)


def test_one_colour_scale_and_one_colour_bar_per_figure_by_default():
    rows = {"small": [np.full((3, 3), 0.1), np.eye(3) * 0.5], "large": [np.eye(3) * 4.0]}
    fig = viz.image_grid(rows)
    panels = _images(fig)
    assert len(panels) == 3
    assert {im.get_clim() for im in panels} == {(-4.0, 4.0)}
    assert len(fig.axes) == 3 + 1 + 1  # panels, the empty slot, one colour bar

    fig = viz.filters_side_by_side({"a": np.eye(3)}, {"a": 2 * np.eye(3)})
    assert {im.get_clim() for im in _images(fig)} == {(-2.0, 2.0)}
    assert len(fig.axes) == 2 + 1


def test_row_scale_gives_each_row_its_scale_and_bar():
    fig = viz.image_grid({"a": [np.eye(3), np.eye(3)], "b": [3 * np.eye(3), 2 * np.eye(3)]},
                         scale="row")
    clims = [im.get_clim() for im in _images(fig)]
    assert clims == [(-1.0, 1.0), (-1.0, 1.0), (-3.0, 3.0), (-3.0, 3.0)]
    assert len(fig.axes) == 4 + 2


def test_column_scale_in_filters_side_by_side():
    fig = viz.filters_side_by_side({"a": np.eye(3), "b": np.eye(3)},
                                   {"a": 2 * np.eye(3), "b": 5 * np.eye(3)}, scale="column")
    clims = [im.get_clim() for im in _images(fig)]
    assert sorted(set(clims)) == [(-5.0, 5.0), (-2.0, 2.0)]
    assert len(fig.axes) == 4 + 2


def test_non_symmetric_scale_spans_the_data():
    fig = viz.image_grid({"a": [np.array([[1.0, 2.0], [3.0, 5.0]])]}, symmetric=False)
    assert _images(fig)[0].get_clim() == (1.0, 5.0)


def test_robust_scale_ignores_the_strongest_percent():
    a = np.linspace(-1, 1, 1000).reshape(20, 50)
    a[0, 0] = 100.0  # one outlier among 1000 pixels
    assert _images(viz.image_grid({"a": [a]}))[0].get_clim() == (-100.0, 100.0)
    lo, hi = _images(viz.image_grid({"a": [a]}, robust=True))[0].get_clim()
    assert lo == -hi and 0.9 < hi < 1.1
    lo, hi = _images(viz.image_grid({"a": [a]}, robust=True, symmetric=False))[0].get_clim()
    assert -1.0 < lo < -0.9 and 0.9 < hi < 1.1


@pytest.mark.slow
def test_suptitle_does_not_overlap_the_panel_titles():
    hand = _hand()
    fig = viz.filters_side_by_side(hand, hand, title="a two-line title\nthat is long")
    renderer = _drawn(fig)
    sup = fig._suptitle.get_window_extent(renderer)
    for ax in _panels(fig):
        assert not sup.overlaps(ax.title.get_window_extent(renderer))
        assert not sup.overlaps(ax.get_window_extent(renderer))


def test_loss_curves_draws_and_names_reference_lines():
    fig = viz.loss_curves({"run": np.geomspace(1, 1e-3, 20)}, hlines={"noise floor": 1e-3})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["run", "noise floor"]
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(1e-3)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match=r"image_grid: scale must be one of .*got scale='rows'"):
        viz.image_grid({"a": [np.eye(3)]}, scale="rows")
    with pytest.raises(ValueError, match=r"filters_side_by_side: scale must be one of"):
        viz.filters_side_by_side({"a": np.eye(3)}, {"a": np.eye(3)}, scale="row")
    with pytest.raises(ValueError, match=r"image_grid: every array must be 2-D, got shape"):
        viz.image_grid({"a": [np.zeros((2, 2, 1))]})
    with pytest.raises(ValueError, match=r"image_grid: rows must hold at least one array"):
        viz.image_grid({})
    with pytest.raises(ValueError, match=r"learned has no filter named 'b'"):
        viz.filters_side_by_side({"a": np.eye(3), "b": np.eye(3)}, {"a": np.eye(3)})
    with pytest.raises(ValueError, match=r"confusion_matrix: counts must be \[C, C\]"):
        viz.confusion_matrix(np.ones((2, 3)), ["a", "b"])


@pytest.mark.slow
def test_global_matplotlib_state_is_untouched(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    original = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend other than Agg
    try:
        open_figures = plt.get_fignums()
        for name, fig in _figures().items():
            viz.save(fig, tmp_path / f"{name}.png")
            fig._repr_png_()
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures  # nothing registered with pyplot
    finally:
        matplotlib.use(original)


def test_rate_map_names_the_shape_it_wanted():
    with pytest.raises(ValueError, match=r"rate_map: rates must be \[len\(row_labels\), "
                                         r"len\(col_labels\)\] = \[1, 2\], got shape \(2, 2\)"):
        viz.rate_map(np.zeros((2, 2)), ["a"], ["x", "y"])


def test_rate_map_writes_each_rate_in_its_cell():
    fig = viz.rate_map(np.array([[0.5, np.nan], [1.0, 0.0]]), ["a", "b"], ["x", "y"],
                       notes=[["n1", ""], ["", "n2"]])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0%\nn2", "100%", "50%\nn1"]  # the NaN cell stays empty
