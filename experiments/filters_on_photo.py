# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Classical filters on a photograph
#
# The hand-designed filters of `jaxconv.filters` on a real photograph: scikit-image's
# bundled `camera()` (512x512 greyscale, shipped inside the package, no download). In the
# tutorial's order: the line and cross detectors, the edge detectors (Sobel, Prewitt,
# Scharr), the Laplacian and a Gaussian blur; then a ReLU on their responses; then two
# filters stacked. Every response is checked against `scipy.ndimage.correlate` and
# `scipy.signal.correlate2d` on the same image, and the largest difference is printed.
#
# Needs scikit-image: `pip install -e '.[photo]'` in a checkout of jaxconv. Also a script:
# `python experiments/filters_on_photo.py [--quick] [--out DIR] [--no-figures]` writes
# `metrics.json` and four figures to `results/filters_on_photo/` in the checkout (or
# `--out`); `--quick` uses the photo at a quarter of its size. In a notebook the flags come
# from the environment variable `JAXCONV_EXPERIMENT_ARGS`.

# %% [markdown]
# ## The photograph
#
# `skimage.data.camera()` as float32 in [0, 1], one image with one channel: `[1, H, W, 1]`,
# the channels-last layout `jaxconv.conv` takes by default.

# %%
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.signal

import jaxconv
from jaxconv import filters, nn, viz
from jaxconv._experiment import start

EXP = start("filters_on_photo", "Classical filters on a photograph.",
            quick="the photo at a quarter of its size")


def load_photo(quick: bool) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError(
            "filters_on_photo needs scikit-image for its photograph: pip install "
            "scikit-image, or from a checkout of jaxconv: pip install -e '.[photo]'"
        ) from e
    photo = skimage.data.camera().astype(np.float32) / 255.0
    return photo[::4, ::4] if quick else photo


photo = load_photo(EXP.args.quick)
x = jnp.asarray(photo)[None, :, :, None]
print(f"camera(): {photo.shape[0]}x{photo.shape[1]}, values in "
      f"[{photo.min():.2f}, {photo.max():.2f}]")

# %% [markdown]
# ## 1. The filter bank, one convolution
#
# All eleven filters run as one `jaxconv.conv` call: their 3x3 kernels are stacked into a
# `[3, 3, 1, 10]` bank (the 13x13 Gaussian, sigma 2, gets its own call). Padding is "SAME"
# with `pad_mode="symmetric"` (the image mirrored at its border, edge pixel repeated), which
# is `scipy.ndimage`'s `mode="reflect"` and `scipy.signal`'s `boundary="symm"`, so the
# photo's border gives no spurious edges.

# %%
BANK = {
    "vertical_line": filters.vertical_line(),
    "horizontal_line": filters.horizontal_line(),
    "cross": filters.cross(),
    "sobel_x": filters.sobel_x(),
    "sobel_y": filters.sobel_y(),
    "prewitt_x": filters.prewitt_x(),
    "prewitt_y": filters.prewitt_y(),
    "scharr_x": filters.scharr_x(),
    "scharr_y": filters.scharr_y(),
    "laplacian": filters.laplacian(),
}
SIGMA = 2.0
GAUSSIAN = filters.gaussian(SIGMA)


def respond(x, bank: dict, gaussian) -> dict[str, np.ndarray]:
    """name -> the 2-D response of ``x`` [1, H, W, 1] to each filter (SAME, symmetric)."""
    maps = jaxconv.conv(x, filters.stack(list(bank.values())), padding="SAME",
                        pad_mode="symmetric")[0]
    out = {name: np.asarray(maps[..., i]) for i, name in enumerate(bank)}
    out["gaussian"] = np.asarray(
        jaxconv.conv(x, filters.stack([gaussian]), padding="SAME", pad_mode="symmetric")[0, ..., 0]
    )
    return out


t0 = time.perf_counter()
responses = respond(x, BANK, GAUSSIAN)
print(f"{len(responses)} responses of {photo.shape[0]}x{photo.shape[1]} in "
      f"{time.perf_counter() - t0:.2f} s (compile included), lowering for the bank: "
      f"{jaxconv.plan(x.shape, filters.stack(list(BANK.values())).shape).algorithm}")

if EXP.draw:
    EXP.show(viz.image_grid({"": [photo, responses["gaussian"]]}, cmap="gray", symmetric=False,
                            col_titles=["camera()", f"Gaussian blur, sigma {SIGMA:g} (13x13)"],
                            title="the photograph and its blur (one scale)"), "photo.png")
    EXP.show(viz.image_grid(
        {"lines, cross": [responses[n] for n in ("vertical_line", "horizontal_line", "cross")],
             "x gradient": [responses[n] for n in ("sobel_x", "prewitt_x", "scharr_x")],
             "y gradient": [responses[n] for n in ("sobel_y", "prewitt_y", "scharr_y")],
             "laplacian": [responses["laplacian"]]},
        col_titles=["vertical_line / sobel", "horizontal_line / prewitt", "cross / scharr"],
        scale="row", robust=True,
        title="responses, one colour scale per row (99th percentile; strongest 1% saturate)"),
        "responses.png")


# %% [markdown]
# ## 2. Checked against scipy
#
# The same image through `scipy.ndimage.correlate(..., mode="reflect")` and
# `scipy.signal.correlate2d(..., mode="same", boundary="symm")` in float64; the Gaussian
# also through `scipy.ndimage.gaussian_filter(sigma=2, truncate=3)`, which builds its own
# kernel, and the Sobel and Prewitt responses through `scipy.ndimage.sobel` and `prewitt`.
# jaxconv computes in float32, so differences of about 1e-6 of the response are rounding.

# %%
def scipy_differences(photo: np.ndarray, responses: dict) -> dict[str, dict[str, float]]:
    """name -> {oracle: max |jaxconv - oracle|} for every response."""
    img = photo.astype(np.float64)
    kernels = {**{n: np.asarray(k, np.float64) for n, k in BANK.items()},
               "gaussian": np.asarray(GAUSSIAN, np.float64)}
    out = {}
    for name, k in kernels.items():
        got = responses[name].astype(np.float64)
        oracles = {
            "ndimage.correlate": scipy.ndimage.correlate(img, k, mode="reflect"),
            "signal.correlate2d": scipy.signal.correlate2d(img, k, mode="same",
                                                           boundary="symm"),
        }
        if name == "gaussian":
            oracles["ndimage.gaussian_filter"] = scipy.ndimage.gaussian_filter(
                img, SIGMA, mode="reflect", truncate=3.0)
        for kind, axis in (("sobel", 1), ("prewitt", 1), ("sobel", 0), ("prewitt", 0)):
            if name == f"{kind}_{'x' if axis == 1 else 'y'}":
                oracles[f"ndimage.{kind}"] = getattr(scipy.ndimage, kind)(img, axis=axis,
                                                                         mode="reflect")
        out[name] = {o: float(np.max(np.abs(got - ref))) for o, ref in oracles.items()}
    return out


differences = scipy_differences(photo, responses)
print(f"{'filter':<16} {'max |jaxconv - scipy|':>22}  oracle")
for name, by_oracle in differences.items():
    for oracle, d in by_oracle.items():
        print(f"{name:<16} {d:>22.2e}  scipy.{oracle}")
worst = max(d for by in differences.values() for d in by.values())
print(f"largest difference over every filter and oracle: {worst:.2e}")

# %% [markdown]
# ## 3. A ReLU
#
# A ReLU keeps the positive part of each response: the line detectors then mark only the
# thin bright lines of their orientation (the tripod's legs, the camera's edges), the
# Laplacian only the dark side of each edge. Same colour scale for each pair.

# %%
if EXP.draw:
    pairs = ("vertical_line", "horizontal_line", "laplacian")
    EXP.show(viz.image_grid(
        {"conv": [responses[n] for n in pairs],
             "ReLU(conv)": [np.asarray(jaxconv.relu(responses[n])) for n in pairs]},
        col_titles=list(pairs), scale="column", robust=True,
        title="before and after ReLU, one scale per column (strongest 1% saturate)"),
        "relu.png")

# %% [markdown]
# ## 4. Stacked: a Gaussian blur, then a Laplacian, then a ReLU
#
# Two hand-set convolution layers in a `jaxconv.nn.Stack`: blurring before the Laplacian
# (the "Laplacian of Gaussian") keeps the edges of large structures and drops the pixel
# noise that the Laplacian alone amplifies. The stack's output is checked against the two
# scipy correlations applied in turn, then the same ReLU. The two panels have their own
# scales: blurring lowers the Laplacian's response several-fold.

# %%
STACK = nn.Stack([nn.Conv(1, GAUSSIAN.shape[0], padding="SAME", pad_mode="symmetric",
                          use_bias=False),
                  nn.Conv(1, 3, padding="SAME", pad_mode="symmetric", use_bias=False),
                  nn.Activation("relu")], names=["blur", "laplacian", "relu"])


def stacked(x):
    params = STACK.init(jax.random.key(0), x.shape)  # only for the structure: replaced below
    params["blur"]["kernel"] = filters.stack([GAUSSIAN])
    params["laplacian"]["kernel"] = filters.stack([filters.laplacian()])
    return np.asarray(STACK.apply(params, x)[0, ..., 0])


log = stacked(x)
img = photo.astype(np.float64)
ref = np.maximum(scipy.ndimage.correlate(
    scipy.ndimage.correlate(img, np.asarray(GAUSSIAN, np.float64), mode="reflect"),
    np.asarray(filters.laplacian(), np.float64), mode="reflect"), 0)
stack_difference = float(np.max(np.abs(log - ref)))
print(f"stacked (blur -> laplacian -> ReLU): max |jaxconv - scipy| = {stack_difference:.2e}")

if EXP.draw:
    EXP.show(viz.image_grid(
        {"": [responses["laplacian"].clip(0), log]},
        col_titles=["ReLU(laplacian)", "ReLU(laplacian(gaussian))"], scale="panel",
        cmap="magma", symmetric=False, robust=True, title="the Laplacian alone and after a blur"),
        "stacked.png")

# %% [markdown]
# ## Metrics

# %%
metrics = EXP.finish({
    "image_shape": list(photo.shape),
    "max_abs_difference": differences,
    "largest_difference": worst,
    "stacked_max_abs_difference": stack_difference,
})
