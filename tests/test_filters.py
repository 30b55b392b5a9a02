"""Tests for jaxconv.filters: textbook values, sums and symmetries, the tutorial's facts."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import jaxconv
from jaxconv import data, filters

ZERO_SUM = [
    "vertical_line", "horizontal_line", "diagonal_line", "antidiagonal_line", "cross",
    "sobel_x", "sobel_y", "prewitt_x", "prewitt_y", "scharr_x", "scharr_y", "laplacian",
]
SUM_ONE = ["sharpen", "emboss"]

TEXTBOOK = {
    "vertical_line": [[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]],
    "horizontal_line": [[-1, -1, -1], [2, 2, 2], [-1, -1, -1]],
    "diagonal_line": [[2, -1, -1], [-1, 2, -1], [-1, -1, 2]],
    "antidiagonal_line": [[-1, -1, 2], [-1, 2, -1], [2, -1, -1]],
    "cross": [[-1, 1, -1], [1, 0, 1], [-1, 1, -1]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "prewitt_x": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
    "prewitt_y": [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
    "scharr_x": [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]],
    "scharr_y": [[-3, -10, -3], [0, 0, 0], [3, 10, 3]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


def test_bank_covers_the_zero_argument_filters():
    bank = filters.bank()
    assert tuple(bank) == filters.FILTER_NAMES
    assert set(bank) == set(TEXTBOOK)
    for name, k in bank.items():
        assert isinstance(k, jnp.ndarray) and k.shape == (3, 3) and k.dtype == jnp.float32, name
        np.testing.assert_array_equal(k, getattr(filters, name)())


@pytest.mark.parametrize("name", list(TEXTBOOK), ids=list(TEXTBOOK))
def test_textbook_values(name):
    np.testing.assert_array_equal(getattr(filters, name)(), np.array(TEXTBOOK[name]))


@pytest.mark.parametrize("name", ZERO_SUM, ids=ZERO_SUM)
def test_detectors_are_zero_sum(name):
    assert np.asarray(getattr(filters, name)()).sum() == 0.0


@pytest.mark.parametrize("name", SUM_ONE, ids=SUM_ONE)
def test_enhancers_sum_to_one(name):
    assert np.asarray(getattr(filters, name)()).sum() == 1.0


def test_transposes_and_mirrors():
    # numpy copies: transposing jax arrays would compile an op each.
    b = {name: np.asarray(k) for name, k in filters.bank().items()}
    np.testing.assert_array_equal(b["horizontal_line"], b["vertical_line"].T)
    np.testing.assert_array_equal(b["antidiagonal_line"], np.fliplr(b["diagonal_line"]))
    for op in ("sobel", "prewitt", "scharr"):
        np.testing.assert_array_equal(b[f"{op}_y"], b[f"{op}_x"].T)
    np.testing.assert_array_equal(b["cross"], b["cross"].T)
    np.testing.assert_array_equal(b["cross"], np.fliplr(b["cross"]))


@pytest.mark.parametrize(
    "name, axis, oracle",
    [
        ("sobel_x", 1, scipy.ndimage.sobel),
        ("sobel_y", 0, scipy.ndimage.sobel),
        ("prewitt_x", 1, scipy.ndimage.prewitt),
        ("prewitt_y", 0, scipy.ndimage.prewitt),
    ],
    ids=["sobel_x", "sobel_y", "prewitt_x", "prewitt_y"],
)
def test_edge_filters_match_scipy(name, axis, oracle, rng):
    img = rng.normal(size=(7, 9))
    k = np.asarray(getattr(filters, name)(), np.float64)
    np.testing.assert_allclose(scipy.ndimage.correlate(img, k), oracle(img, axis=axis),
                               atol=1e-12)


def test_sobel_x_is_positive_on_a_rising_ramp():
    ramp = np.tile(np.arange(5.0), (5, 1))  # intensity increases with the column
    assert scipy.ndimage.correlate(ramp, np.asarray(filters.sobel_x()))[2, 2] == 8.0
    assert scipy.ndimage.correlate(ramp.T, np.asarray(filters.sobel_y()))[2, 2] == 8.0


def test_laplacian_eight():
    np.testing.assert_array_equal(
        filters.laplacian(neighbours=8), [[1, 1, 1], [1, -8, 1], [1, 1, 1]]
    )
    assert np.asarray(filters.laplacian(neighbours=8)).sum() == 0.0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7, 3], ids=lambda s: f"sigma{s}")
def test_gaussian_default_size_sum_symmetry(sigma):
    k = np.asarray(filters.gaussian(sigma))
    size = 2 * int(np.ceil(3 * sigma)) + 1
    assert k.shape == (size, size) and k.dtype == jnp.float32
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, k.T, rtol=1e-6)
    np.testing.assert_allclose(k, np.flipud(k), rtol=1e-6)
    np.testing.assert_allclose(k, np.fliplr(k), rtol=1e-6)
    assert np.unravel_index(np.argmax(k), k.shape) == (size // 2, size // 2)
    w = scipy.signal.windows.gaussian(size, sigma)
    np.testing.assert_allclose(k, np.outer(w, w) / np.outer(w, w).sum(), rtol=1e-5)


def test_gaussian_explicit_size():
    k = np.asarray(filters.gaussian(2.0, size=5))
    assert k.shape == (5, 5)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    assert filters.gaussian(1.0, size=1).tolist() == [[1.0]]


@pytest.mark.parametrize("size", [1, 2, 4], ids=lambda s: f"size{s}")
def test_box_is_the_mean(size):
    k = filters.box(size)
    assert k.shape == (size, size) and k.dtype == jnp.float32
    np.testing.assert_allclose(k, np.full((size, size), 1 / size**2))
    np.testing.assert_allclose(np.asarray(k).sum(), 1.0, rtol=1e-6)


def test_options_keyword_only():
    assert inspect.signature(filters.laplacian).parameters["neighbours"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )
    assert inspect.signature(filters.gaussian).parameters["size"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )


# ---------------------------------------------------------------------------------------
# stack


def test_stack_layout_for_conv():
    ks = [filters.vertical_line(), filters.horizontal_line(), filters.cross()]
    w = filters.stack(ks)
    assert w.shape == (3, 3, 1, 3) and w.dtype == jnp.float32
    for i, k in enumerate(ks):
        np.testing.assert_array_equal(w[:, :, 0, i], k)
    assert filters.stack((filters.box(2),)).shape == (2, 2, 1, 1)


def test_stack_casts_integer_lists_to_float32_and_keeps_float_dtypes():
    w = filters.stack([[[-1, 2, -1]] * 3])
    assert w.dtype == jnp.float32
    np.testing.assert_array_equal(w[:, :, 0, 0], filters.vertical_line())
    assert filters.stack([jnp.ones((3, 3), jnp.bfloat16)]).dtype == jnp.bfloat16


def test_stack_errors():
    with pytest.raises(ValueError, match="stack: kernels must hold at least one 2-D filter"):
        filters.stack([])
    with pytest.raises(ValueError, match=r"stack: all kernels must have the same shape.*"
                                         r"\(3, 3\), \(5, 5\).*jnp.pad"):
        filters.stack([filters.cross(), filters.gaussian(1.0, size=5)])
    with pytest.raises(ValueError, match=r"stack: kernels\[1\] must be 2-D \[kh, kw\], got "
                                         r"rank 3"):
        filters.stack([filters.cross(), jnp.ones((3, 3, 1))])
    with pytest.raises(TypeError, match=r"stack: kernels must be a list or tuple.*\[k\]"):
        filters.stack(filters.cross())
    with pytest.raises(TypeError, match=r"stack: kernels\[0\] must be real"):
        filters.stack([jnp.ones((3, 3), jnp.complex64)])


# ---------------------------------------------------------------------------------------
# Argument errors


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf")], ids=str)
def test_gaussian_sigma_must_be_positive(sigma):
    with pytest.raises(ValueError, match="gaussian: sigma must be positive and finite"):
        filters.gaussian(sigma)


@pytest.mark.parametrize("sigma", ["1.0", True, None, [1.0]], ids=repr)
def test_gaussian_sigma_must_be_a_number(sigma):
    with pytest.raises(TypeError, match="gaussian: sigma must be a concrete real number"):
        filters.gaussian(sigma)


def test_gaussian_size_errors():
    with pytest.raises(ValueError, match=r"gaussian: size must be odd.*size=4.*use size=5"):
        filters.gaussian(1.0, size=4)
    with pytest.raises(ValueError, match=r"gaussian: size must be >= 1, got size=0"):
        filters.gaussian(1.0, size=0)
    with pytest.raises(TypeError, match="gaussian: size must be an int"):
        filters.gaussian(1.0, size=3.0)


@pytest.mark.parametrize("neighbours", [0, 6, True, "4"], ids=repr)
def test_laplacian_neighbours_must_be_4_or_8(neighbours):
    with pytest.raises(ValueError, match=r"laplacian: neighbours must be 4 or 8, got "):
        filters.laplacian(neighbours=neighbours)


def test_box_size_errors():
    with pytest.raises(ValueError, match=r"box: size must be >= 1, got size=0"):
        filters.box(0)
    with pytest.raises(ValueError, match=r"box: size must be >= 1, got size=-2"):
        filters.box(-2)
    with pytest.raises(TypeError, match="box: size must be an int, got float 2.5"):
        filters.box(2.5)


# ---------------------------------------------------------------------------------------
# The tutorial: line and cross detectors on the 5x5 cross image, through jaxconv.conv.

BANK3 = ["vertical_line", "horizontal_line", "cross"]


@pytest.fixture(scope="module")
def responses():
    """[5, 5, 3] / [3, 3, 3] maps of vertical_line, horizontal_line, cross on cross_image."""
    img = data.cross_image()[None, :, :, None]
    w = filters.stack([getattr(filters, n)() for n in BANK3])

    @jax.jit  # one compile per padding instead of many op-by-op ones
    def maps(img, w):
        return (
            jaxconv.conv(img, w, padding="SAME")[0],
            jaxconv.conv(img, w, padding="SAME", pad_mode="reflect")[0],
            jaxconv.conv(img, w, padding="VALID")[0],
        )

    return dict(zip(("same", "reflect", "valid"), map(np.asarray, maps(img, w)), strict=True))


def test_conv_matches_scipy_on_the_cross_image(responses):
    img = np.asarray(data.cross_image(), np.float64)
    for i, name in enumerate(BANK3):
        k = np.asarray(getattr(filters, name)(), np.float64)
        np.testing.assert_allclose(
            responses["same"][..., i], scipy.ndimage.correlate(img, k, mode="constant")
        )
        np.testing.assert_allclose(
            responses["reflect"][..., i], scipy.ndimage.correlate(img, k, mode="mirror")
        )


def test_tutorial_valid_response_values(responses):
    v, h, c = (responses["valid"][..., i] for i in range(3))
    np.testing.assert_array_equal(v, [[-2, 4, -2]] * 3)
    np.testing.assert_array_equal(h, np.array([[-2, 4, -2]] * 3).T)
    np.testing.assert_array_equal(c, [[-1, 0, -1], [0, 4, 0], [-1, 0, -1]])


@pytest.mark.parametrize("mode", ["valid", "reflect"])
def test_relu_keeps_only_the_matching_bar(responses, mode):
    v, h = (np.asarray(jaxconv.relu(responses[mode][..., i])) for i in range(2))
    mid = v.shape[1] // 2
    assert np.all(v[:, mid] > 0) and not np.any(np.delete(v, mid, axis=1))
    assert np.all(h[mid, :] > 0) and not np.any(np.delete(h, mid, axis=0))


def test_same_zero_padding_line_responses(responses):
    v, h = responses["same"][..., 0], responses["same"][..., 1]
    # The vertical bar holds every row's maximum, 4, and the map's largest values.
    assert np.all(v[:, 2] == 4) and np.all(np.argmax(v, axis=1) == 2)
    assert np.max(np.delete(v, 2, axis=1)) < v[:, 2].min()
    np.testing.assert_array_equal(h, v.T)
    # Zero padding makes the horizontal bar's ends look like short vertical lines (+1 at
    # the border); ReLU removes everything else off the vertical bar.
    off = np.asarray(jaxconv.relu(v)).copy()
    off[:, 2] = 0
    np.testing.assert_array_equal(np.nonzero(off)[1], [0, 4, 0, 4, 0, 4])
    np.testing.assert_array_equal(off[1:4, [0, 4]], np.ones((3, 2)))


@pytest.mark.parametrize("mode", ["same", "reflect", "valid"])
def test_cross_peaks_uniquely_at_the_centre(responses, mode):
    c = responses[mode][..., 2]
    centre = (c.shape[0] // 2, c.shape[1] // 2)
    assert c[centre] == 4
    assert np.sum(c == c.max()) == 1 and np.unravel_index(np.argmax(c), c.shape) == centre


def test_cross_after_relu_is_only_the_centre(responses):
    np.testing.assert_array_equal(
        jaxconv.relu(responses["valid"][..., 2]), [[0, 0, 0], [0, 4, 0], [0, 0, 0]]
    )
