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

# %%
from __future__ import annotations

import argparse
import json
import os
import pathlib
import runpy
import shlex
import sys
import time

T_START = time.perf_counter()

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.signal

import jaxconv
from jaxconv import filters, nn

NAME = "filters_on_photo"
# True in a notebook and for `python filters_on_photo.py`; False when a test imports this
# file (its main() then runs the file top to bottom as a script).
RUN = __name__ == "__main__"
IN_NOTEBOOK = "ipykernel" in sys.modules

# %% [markdown]
# Plumbing (skip on a first read): the flags, where the results go, and `show`, which saves
# a figure and displays it inline.

# %%
def repo_root() -> pathlib.Path:
    """The checkout this file is in: results go to its results/ whatever the working
    directory (a notebook has no ``__file__``, so it starts from the working directory)."""
    start = pathlib.Path(globals().get("__file__") or os.getcwd()).resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file() and (d / "experiments").is_dir():
            return d
    return pathlib.Path.cwd()


def shown(path) -> str:
    """``path`` relative to the checkout when it is inside it (what the printout shows)."""
    rel = os.path.relpath(path, repo_root())
    return os.fspath(path) if rel.startswith("..") else rel


def parse_args(argv=None):
    """Flags from ``argv``; else from ``JAXCONV_EXPERIMENT_ARGS`` in a notebook, or the
    command line."""
    if argv is None:
        argv = (shlex.split(os.environ.get("JAXCONV_EXPERIMENT_ARGS", "")) if IN_NOTEBOOK
                else sys.argv[1:])
    p = argparse.ArgumentParser(description="Classical filters on a photograph.")
    p.add_argument("--quick", action="store_true", help="the photo at a quarter of its size")
    p.add_argument("--out", default=str(repo_root() / "results" / NAME),
                   help="output directory (default: results/filters_on_photo in the checkout)")
    p.add_argument("--seed", type=int, default=0, help="unused: nothing here is random")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return p.parse_args(argv)


def main(argv=None):
    """Runs this file top to bottom, as ``python filters_on_photo.py ARGV`` does, and
    returns its metrics (what it writes to metrics.json)."""
    return runpy.run_path(__file__, init_globals={"ARGV": argv}, run_name="__main__")["metrics"]


FIGURES: list[str] = []


def show(fig, name=None):
    """Saves ``fig`` as ``OUT/name`` (unless --no-figures) and displays it in a notebook."""
    from jaxconv import viz

    if name is not None and not ARGS.no_figures:
        viz.save(fig, os.path.join(ARGS.out, name))
        FIGURES.append(name)
    if IN_NOTEBOOK:
        from IPython.display import display

        display(fig)


if RUN:
    ARGS = parse_args(globals().get("ARGV"))
    DRAW = IN_NOTEBOOK or not ARGS.no_figures
    if DRAW:
        from jaxconv import viz
    os.makedirs(ARGS.out, exist_ok=True)

# %% [markdown]
# ## The photograph
#
# `skimage.data.camera()` as float32 in [0, 1], one image with one channel: `[1, H, W, 1]`,
# the channels-last layout `jaxconv.conv` takes by default.

# %%
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


if RUN:
    photo = load_photo(ARGS.quick)
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


if RUN:
    t0 = time.perf_counter()
    responses = respond(x, BANK, GAUSSIAN)
    print(f"{len(responses)} responses of {photo.shape[0]}x{photo.shape[1]} in "
          f"{time.perf_counter() - t0:.2f} s (compile included), lowering for the bank: "
          f"{jaxconv.plan(x.shape, filters.stack(list(BANK.values())).shape).algorithm}")

if RUN and DRAW:
    show(viz.image_grid({"": [photo, responses["gaussian"]]}, cmap="gray", symmetric=False,
                        col_titles=["camera()", f"Gaussian blur, sigma {SIGMA:g} (13x13)"],
                        title="the photograph and its blur (one scale)"), "photo.png")
    show(viz.image_grid(
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


if RUN:
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
if RUN and DRAW:
    pairs = ("vertical_line", "horizontal_line", "laplacian")
    show(viz.image_grid(
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


if RUN:
    log = stacked(x)
    img = photo.astype(np.float64)
    ref = np.maximum(scipy.ndimage.correlate(
        scipy.ndimage.correlate(img, np.asarray(GAUSSIAN, np.float64), mode="reflect"),
        np.asarray(filters.laplacian(), np.float64), mode="reflect"), 0)
    stack_difference = float(np.max(np.abs(log - ref)))
    print(f"stacked (blur -> laplacian -> ReLU): max |jaxconv - scipy| = {stack_difference:.2e}")

if RUN and DRAW:
    show(viz.image_grid(
        {"": [responses["laplacian"].clip(0), log]},
        col_titles=["ReLU(laplacian)", "ReLU(laplacian(gaussian))"], scale="panel",
        cmap="magma", symmetric=False, robust=True, title="the Laplacian alone and after a blur"),
        "stacked.png")

# %% [markdown]
# ## Metrics

# %%
if RUN:
    metrics = {
        "image_shape": list(photo.shape),
        "max_abs_difference": differences,
        "largest_difference": worst,
        "stacked_max_abs_difference": stack_difference,
        "quick": ARGS.quick,
        "figures": FIGURES,
        "total_s": time.perf_counter() - T_START,
        "backend": jax.default_backend(),
    }
    with open(os.path.join(ARGS.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {shown(ARGS.out)}/metrics.json and {len(FIGURES)} figures "
          f"in {metrics['total_s']:.2f} s (process time from start)")
