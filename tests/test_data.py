"""Tests for jaxconv.data: shapes, determinism, what each image contains, argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxconv import data, filters

# Few static configurations: each new (n, size, ...) compiles the generator again.
N, SIZE = 32, 16


def _segments(mask):
    """Describes a 0/1 image as ('vertical'|'horizontal'|'cross'|'other', extent)."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return "empty", 0
    if len(set(cols)) == 1 and np.ptp(rows) + 1 == len(rows):
        return "vertical", len(rows)
    if len(set(rows)) == 1 and np.ptp(cols) + 1 == len(cols):
        return "horizontal", len(cols)
    r = np.bincount(rows).argmax()
    c = np.bincount(cols).argmax()
    arm_v = rows[cols == c]
    arm_h = cols[rows == r]
    plus = len(rows) == len(arm_v) + len(arm_h) - 1
    if plus and np.ptp(arm_v) + 1 == len(arm_v) and np.ptp(arm_h) + 1 == len(arm_h):
        if r - arm_v.min() == arm_v.max() - r == c - arm_h.min() == arm_h.max() - c:
            return "cross", len(arm_v)
    return "other", len(rows)


# ---------------------------------------------------------------------------------------
# cross_image


def test_cross_image_values():
    img = data.cross_image()
    assert img.shape == (5, 5) and img.dtype == jnp.float32
    expected = np.zeros((5, 5))
    expected[2, :] = expected[:, 2] = 1
    np.testing.assert_array_equal(img, expected)


# ---------------------------------------------------------------------------------------
# line_images


@pytest.fixture(scope="module")
def lines():
    k0, k1 = jax.random.key(0), jax.random.key(1)
    return {
        "noisy": np.asarray(data.line_images(k0, N, SIZE)),
        "again": np.asarray(data.line_images(k0, N, SIZE)),
        "clean": np.asarray(data.line_images(k0, N, SIZE, noise=0.0)),
        "loud": np.asarray(data.line_images(k0, N, SIZE, noise=1.0)),
        "other": np.asarray(data.line_images(k1, N, SIZE)),
    }


def test_line_images_shape_dtype_determinism(lines):
    assert lines["noisy"].shape == (N, SIZE, SIZE) and lines["noisy"].dtype == np.float32
    np.testing.assert_array_equal(lines["noisy"], lines["again"])
    assert not np.allclose(lines["noisy"], lines["other"])


def test_line_images_noise_is_added_to_the_same_shapes(lines):
    clean = lines["clean"]
    assert set(np.unique(clean)) == {0.0, 1.0}
    assert np.all(clean.sum(axis=(1, 2)) >= 3)  # at least one shape of length >= 3
    for name, std in [("noisy", 0.1), ("loud", 1.0)]:
        z = lines[name] - clean
        assert abs(z.mean()) < 0.05 * std + 0.01
        np.testing.assert_allclose(z.std(), std, rtol=0.05)


@pytest.fixture(scope="module")
def single_shapes():
    """One shape per clean image: random lengths, and a fixed length 5."""
    key = jax.random.key(3)
    return {
        "random": np.asarray(data.line_images(key, 60, 12, max_shapes=1, noise=0.0)),
        "fixed": np.asarray(data.line_images(key, 60, 12, max_shapes=1, noise=0.0,
                                             length=5)),
    }


@pytest.mark.slow
def test_line_images_draw_lines_and_crosses(single_shapes):
    kinds = [_segments(img) for img in single_shapes["random"]]
    assert {k for k, _ in kinds} == {"vertical", "horizontal", "cross"}
    lengths = [n for k, n in kinds if k != "cross"]
    assert min(lengths) >= 3 and max(lengths) <= 12 and len(set(lengths)) > 3


@pytest.mark.slow
def test_line_images_fixed_length(single_shapes):
    kinds = [_segments(img) for img in single_shapes["fixed"]]
    assert {k for k, _ in kinds} == {"vertical", "horizontal", "cross"}
    assert all(n == 5 for _, n in kinds)  # a cross spans 2 * (5 // 2) + 1 = 5 per axis


@pytest.mark.slow
def test_line_images_kinds_restricts_the_shapes():
    # Same n, size and max_shapes as single_shapes: kinds are traced, nothing recompiles.
    imgs = data.line_images(jax.random.key(4), 60, 12, kinds=("Horizontal", "cross"),
                            max_shapes=1, noise=0.0)
    kinds = {_segments(img)[0] for img in np.asarray(imgs)}
    assert kinds == {"horizontal", "cross"}
    imgs = data.line_images(jax.random.key(4), 60, 12, kinds=("vertical",) * 2, max_shapes=1,
                            noise=0.0)
    assert {_segments(img)[0] for img in np.asarray(imgs)} == {"vertical"}


@pytest.mark.slow
def test_line_images_under_jit(lines):
    jitted = jax.jit(lambda k: data.line_images(k, N, SIZE))(jax.random.key(0))
    np.testing.assert_allclose(jitted, lines["noisy"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# noise_images


@pytest.mark.slow
def test_noise_images():
    key = jax.random.key(0)
    x = np.asarray(data.noise_images(key, 64, SIZE))
    assert x.shape == (64, SIZE, SIZE) and x.dtype == np.float32
    np.testing.assert_array_equal(x, data.noise_images(key, 64, SIZE))
    assert not np.allclose(x, data.noise_images(jax.random.key(1), 64, SIZE))
    assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03


@pytest.mark.slow
def test_legacy_uint32_keys_give_the_same_data():
    np.testing.assert_array_equal(data.noise_images(jax.random.PRNGKey(7), 2, 4),
                                  data.noise_images(jax.random.key(7), 2, 4))


# ---------------------------------------------------------------------------------------
# shape_dataset

N_SHAPES = 42  # not a multiple of 4: class counts 11, 11, 10, 10


@pytest.fixture(scope="module")
def shapes():
    key = jax.random.key(0)
    images, labels = data.shape_dataset(key, N_SHAPES)
    clean, clean_labels = data.shape_dataset(key, N_SHAPES, noise=0.0)
    again = data.shape_dataset(key, N_SHAPES)
    other = data.shape_dataset(jax.random.key(1), N_SHAPES)
    return {
        "images": np.asarray(images), "labels": np.asarray(labels),
        "clean": np.asarray(clean), "clean_labels": np.asarray(clean_labels),
        "again": again, "other": other,
    }


@pytest.mark.slow
def test_shape_dataset_shapes_dtypes_determinism(shapes):
    assert shapes["images"].shape == (N_SHAPES, 16, 16) and shapes["images"].dtype == np.float32
    assert shapes["labels"].shape == (N_SHAPES,) and shapes["labels"].dtype == np.int32
    np.testing.assert_array_equal(shapes["images"], shapes["again"][0])
    np.testing.assert_array_equal(shapes["labels"], shapes["again"][1])
    np.testing.assert_array_equal(shapes["labels"], shapes["clean_labels"])
    assert not np.allclose(shapes["images"], shapes["other"][0])
    assert data.CLASS_NAMES == ("nothing", "vertical", "horizontal", "cross")


@pytest.mark.slow
def test_shape_dataset_is_balanced_and_shuffled(shapes):
    labels = shapes["labels"]
    assert sorted(np.bincount(labels, minlength=4).tolist()) == [10, 10, 11, 11]
    assert not np.array_equal(labels, np.arange(N_SHAPES) % 4)


@pytest.mark.slow
def test_shape_dataset_each_class_holds_its_shape(shapes):
    centre, arm = (16 - 1) // 2, 16 // 4
    offsets = []
    for img, label in zip(shapes["clean"], shapes["labels"], strict=True):
        kind, extent = _segments(img)
        assert kind == ("empty", "vertical", "horizontal", "cross")[label]
        if label == 0:
            continue
        assert extent == 2 * arm + 1
        col_sums, row_sums = img.sum(axis=0), img.sum(axis=1)
        if label in (1, 3):
            assert col_sums.max() == 2 * arm + 1
        if label in (2, 3):
            assert row_sums.max() == 2 * arm + 1
        rows, cols = np.nonzero(img)
        mid = (int(np.median(rows)), int(np.median(cols)))
        offsets.append((mid[0] - centre, mid[1] - centre))
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 3 and len({tuple(o) for o in offsets}) > 5
    noise = shapes["images"] - shapes["clean"]
    np.testing.assert_allclose(noise.std(), 0.2, rtol=0.05)


@pytest.mark.slow
def test_shape_dataset_without_jitter_is_centred():
    images, labels = data.shape_dataset(jax.random.key(2), N_SHAPES, jitter=0, noise=0.0)
    images, labels = np.asarray(images), np.asarray(labels)
    for label in range(4):
        same = images[labels == label]
        assert len(same) >= 10 and np.all(same == same[0])
    cross = images[labels == 3][0]
    assert cross[7, :].sum() == 9 and cross[:, 7].sum() == 9


# ---------------------------------------------------------------------------------------
# teacher_targets


@pytest.mark.slow
def test_teacher_targets_matches_scipy(rng):
    images = rng.normal(size=(3, 7, 6)).astype(np.float32)
    k = filters.cross()
    got = data.teacher_targets(images, k)
    assert got.shape == (3, 5, 4)
    for img, out in zip(images, np.asarray(got), strict=True):
        np.testing.assert_allclose(out, scipy.signal.correlate2d(img, k, mode="valid"),
                                   rtol=1e-5, atol=1e-5)
    same = data.teacher_targets(images, k, padding="SAME", activation="relu")
    assert same.shape == (3, 7, 6)
    assert np.all(np.asarray(same) >= 0)
    twice = data.teacher_targets(images, k, activation=lambda y: 2 * y)
    np.testing.assert_allclose(twice, 2 * np.asarray(got), rtol=1e-6)


def test_teacher_targets_tutorial_cross():
    y = data.teacher_targets(data.cross_image()[None], filters.cross(), activation="relu")
    np.testing.assert_array_equal(y[0], [[0, 0, 0], [0, 4, 0], [0, 0, 0]])


def test_teacher_targets_errors():
    img = np.zeros((2, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"teacher_targets: images must have rank 3 .*x\[None\]"):
        data.teacher_targets(img[0], filters.cross())
    with pytest.raises(ValueError, match=r"teacher_targets: kernel must have rank 2"):
        data.teacher_targets(img, filters.stack([filters.cross()]))
    with pytest.raises(TypeError, match=r"teacher_targets: images must have a real floating"):
        data.teacher_targets(img.astype(np.int32), filters.cross())
    with pytest.raises(TypeError, match=r"teacher_targets: activation must be None, a name"):
        data.teacher_targets(img, filters.cross(), activation=3)
    with pytest.raises(ValueError, match=r"activation: unknown name 'nope'"):
        data.teacher_targets(img, filters.cross(), activation="nope")


# ---------------------------------------------------------------------------------------
# Argument errors (all raised before anything is traced)

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, r"line_images: n must be >= 1, got n=0"),
        ({"n": 2.0}, TypeError, r"line_images: n must be an int, got float"),
        ({"size": 2}, ValueError, r"line_images: size must be >= 3, got size=2; a cross"),
        ({"max_shapes": 0}, ValueError, r"line_images: max_shapes must be >= 1"),
        ({"noise": -0.1}, ValueError, r"line_images: noise must be a finite standard "
                                      r"deviation >= 0, got noise=-0.1"),
        ({"noise": "0.1"}, TypeError, r"line_images: noise must be a concrete real number"),
        ({"kinds": ()}, ValueError, r"line_images: kinds must name at least one of"),
        ({"kinds": "cross"}, TypeError, r"line_images: kinds must be a sequence.*\('cross',\)"),
        ({"kinds": ("diagonal",)}, ValueError,
         r"line_images: unknown kind 'diagonal'; expected one of 'vertical'"),
        ({"length": 0}, ValueError, r"line_images: length must be >= 1"),
        ({"length": 17}, ValueError, r"line_images: length must be <= size \(=16\).*length=17"),
    ],
    ids=["n0", "n_float", "size2", "max_shapes0", "noise_neg", "noise_str", "kinds_empty",
         "kinds_str", "kinds_unknown", "length0", "length_big"],
)
def test_line_images_errors(kwargs, error, match):
    args = {"n": 4, "size": 16, **kwargs}
    with pytest.raises(error, match=match):
        data.line_images(KEY, args.pop("n"), args.pop("size"), **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, r"shape_dataset: n must be >= 1, got n=0"),
        ({"size": 3}, ValueError, r"shape_dataset: size must be >= 4, got size=3"),
        ({"jitter": -1}, ValueError, r"shape_dataset: jitter must be >= 0, got jitter=-1"),
        ({"jitter": 4}, ValueError,
         r"shape_dataset: jitter \(=4\) is too large for size=16.*jitter must be <= 3; use a "
         r"smaller jitter or size >= 17"),
        ({"size": 8, "jitter": 3}, ValueError, r"jitter must be <= 1.*size >= 11"),
        ({"noise": -1.0}, ValueError, r"shape_dataset: noise must be a finite"),
    ],
    ids=["n0", "size3", "jitter_neg", "jitter_big", "jitter_small_image", "noise_neg"],
)
def test_shape_dataset_errors(kwargs, error, match):
    args = {"n": 4, "size": 16, **kwargs}
    with pytest.raises(error, match=match):
        data.shape_dataset(KEY, args.pop("n"), args.pop("size"), **args)


@pytest.mark.parametrize("fn", [data.line_images, data.noise_images, data.shape_dataset],
                         ids=lambda f: f.__name__)
def test_key_errors(fn):
    with pytest.raises(TypeError, match=rf"{fn.__name__}: key must be a PRNG key such as"):
        fn(np.arange(2), 4)
    with pytest.raises(ValueError, match=rf"{fn.__name__}: key must be a single PRNG key.*"
                                         r"jax.vmap"):
        fn(jax.random.split(KEY, 3), 4)
    with pytest.raises(ValueError, match=rf"{fn.__name__}: n must be >= 1"):
        fn(KEY, 0)
