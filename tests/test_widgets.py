"""The tutorial's Jupyter controls, driven without a front end: changing an input calls the
callback, which redraws the figure with the right numbers (a numpy loop is the oracle) and
refreshes the PNG the widget shows; a page without a kernel gets that PNG."""

import base64
import sys

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from jaxconv import _widgets, data, filters  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _same_loop(image, kernel):
    """Cross-correlation with zero padding to the image's size, one output at a time."""
    h, w = image.shape
    padded = np.pad(image, 1)
    return np.array([[np.sum(padded[i:i + 3, j:j + 3] * kernel) for j in range(w)]
                     for i in range(h)])


def _shown(control):
    """The arrays the figure's image panels show, left to right."""
    return [np.asarray(ax.images[0].get_array()) for ax in control.figure.axes if ax.images]


def test_feature_maps_match_a_numpy_loop(rng):
    image, kernel = rng.normal(size=(6, 7)), rng.normal(size=(3, 3))
    fmap, relu = _widgets.feature_maps(image, kernel)
    np.testing.assert_allclose(fmap, _same_loop(image, kernel), atol=1e-5)
    np.testing.assert_array_equal(relu, np.maximum(fmap, 0))


def test_kernel_editor_redraws_the_feature_map_and_relu_on_every_edit():
    cross = np.asarray(data.cross_image())
    start = np.asarray(filters.vertical_line())
    editor = _widgets.kernel_editor(cross, start)
    assert len(editor.inputs) == 9
    kernel, fmap, relu = _shown(editor)
    np.testing.assert_array_equal(kernel, start)
    np.testing.assert_allclose(fmap, _same_loop(cross, start), atol=1e-5)
    first_png = editor.picture.value
    assert first_png[:8] == PNG_SIGNATURE

    editor.inputs[4].value = 5.0  # the centre weight
    editor.inputs[0].value = -3.0  # the top-left one
    edited = start.copy()
    edited[1, 1], edited[0, 0] = 5.0, -3.0
    kernel, fmap, relu = _shown(editor)
    np.testing.assert_array_equal(kernel, edited)
    np.testing.assert_allclose(fmap, _same_loop(cross, edited), atol=1e-5)
    np.testing.assert_allclose(relu, np.maximum(_same_loop(cross, edited), 0), atol=1e-5)
    assert not np.allclose(fmap, _same_loop(cross, start))
    assert editor.picture.value != first_png and editor.picture.value[:8] == PNG_SIGNATURE
    # the numbers written on the feature map are the new ones
    texts = [t.get_text() for t in editor.figure.axes[1].texts]
    assert len(texts) == cross.size and texts[12] == f"{fmap[2, 2]:g}"


def test_learning_scrubber_shows_the_step_the_slider_is_on(rng):
    kernels = rng.normal(size=(5, 3, 3))
    losses = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    scrubber = _widgets.learning_scrubber(kernels, losses)
    (slider,) = scrubber.inputs
    assert (slider.min, slider.max, slider.value) == (0, 4, 0)
    np.testing.assert_allclose(_shown(scrubber)[0], kernels[0], rtol=1e-6)
    before = scrubber.picture.value
    slider.value = 3
    np.testing.assert_allclose(_shown(scrubber)[0], kernels[3], rtol=1e-6)
    marker = scrubber.figure.axes[1].lines[-1]
    assert list(marker.get_xdata()) == [3] and list(marker.get_ydata()) == [0.5]
    assert scrubber.figure.axes[0].get_title() == "kernel, step 3"
    assert scrubber.picture.value != before


def test_a_page_without_a_kernel_gets_the_picture():
    editor = _widgets.kernel_editor(np.asarray(data.cross_image()), np.eye(3))
    bundle = editor._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == \
        editor.widget.model_id
    assert base64.b64decode(bundle["image/png"]) == editor.picture.value
    assert "Jupyter" in bundle["text/plain"]


@pytest.mark.parametrize(("image", "kernel", "match"), [
    (np.zeros((2, 5, 5)), np.eye(3), r"kernel_editor: `image` must be \[H, W\], got shape "
                                      r"\(2, 5, 5\)"),
    (np.zeros((5, 5)), np.eye(5), r"kernel_editor: `kernel` must be \[3, 3\], got shape "
                                  r"\(5, 5\)"),
], ids=["image-3d", "kernel-5x5"])
def test_kernel_editor_names_a_wrong_shape(image, kernel, match):
    with pytest.raises(ValueError, match=match):
        _widgets.kernel_editor(image, kernel)


@pytest.mark.parametrize(("kernels", "losses"), [
    (np.zeros((4, 3)), np.zeros(4)),
    (np.zeros((4, 3, 3)), np.zeros(5)),
], ids=["kernels-2d", "losses-length"])
def test_learning_scrubber_names_a_wrong_shape(kernels, losses):
    with pytest.raises(ValueError, match=r"learning_scrubber: `kernels` must be \[T, kh, kw\] "
                       r"and `losses` \[T\], got shapes"):
        _widgets.learning_scrubber(kernels, losses)


def test_a_missing_ipywidgets_says_which_extra_brings_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"controls need ipywidgets: .*\.\[notebooks\]"):
        _widgets.kernel_editor(np.zeros((5, 5)), np.eye(3))
