# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # When does gradient descent recover the 2-layer stack? A map over restarts
#
# The teacher, the data, the optimiser and the scoring are those of `recover_stack.py`
# (both import them from `jaxconv/_tasks.py`): vertical and horizontal line
# detectors + ReLU, then the 3x3x2 -> 1 crossing detector + bias + ReLU; Gaussian-noise
# images 12x12; Adam 0.05 held for 70% of the steps, then decayed; success = held-out
# relative error <= 1e-3 and both teacher filters matched by their own student channel
# with cosine >= 0.99 (up to positive scale, and up to the one-pixel shift a 5x5 layer 2
# can undo). Each cell of the map is one `jaxconv.fit(..., restarts=64)` call.
#
# Two slices through the space of students and data:
#
# 1. **width x layer-2 kernel size**, 16 training images: does a wider layer 1, or a layer 2
#    large enough to move a shifted detector back, remove the failures?
# 2. **the number of training images**, at width 4 with a 3x3 layer 2: how much data pins
#    the function down?
#
# Every cell runs 250 steps, a twelfth of `recover_stack.py`'s 3000 (the map must run in
# about two minutes on a 2-core CPU). That is enough to see which basin each restart falls
# into, not to drive the error below 1e-3: restarts that have found both teacher filters
# (cosine >= 0.99) are *converging*, and the colour of the map is the share of restarts
# that found both filters (recovered + converging); the strict success rate is in
# metrics.json too. The failure counts in each cell are the basins a lever has to remove:
# negated, shifted, other.
#
# Run: `python experiments/recover_stack_map.py [--quick] [--out DIR] [--seed N]
# [--steps N] [--restarts N] [--no-figures]`; in a notebook the flags come from
# `JAXCONV_EXPERIMENT_ARGS`.

# %% [markdown]
# ## 1. Running the cells
#
# Same seed for every cell: the same data key and the same fit key (so the restarts of two
# cells differ only by the student and data, not by luck of the draw).

# %%
import time

import jax
import numpy as np

from jaxconv import _tasks as stack
from jaxconv import viz
from jaxconv._experiment import start

EXP = start("recover_stack_map", "Success rate map for recover_stack.",
            quick="3 cells of 8 restarts x 40 steps, for tests", options=("steps", "restarts"))
QUICK = EXP.args.quick
WIDTHS = (2, 4) if QUICK else (2, 3, 4, 6, 8, 16)
KERNELS2 = (3,) if QUICK else (3, 5)
N_IMAGES = (8, 16) if QUICK else (4, 8, 16, 32)
RESTARTS = EXP.args.restarts or (8 if QUICK else 64)
STEPS = EXP.args.steps or (40 if QUICK else 250)
DATA_WIDTH = 4
# the costliest cells (a 5x5 layer 2 on 6 or more channels: ~0.3 s a step for 64 restarts
# on 8) are left out to keep the map within its time
SKIP = {(6, 5), (8, 5), (16, 5)}
K_DATA, K_FIT = jax.random.split(jax.random.key(EXP.args.seed))
# one pool of images: a cell with n images trains on the first n; one held-out set
X_ALL, Y_ALL, X_TEST, Y_TEST, _ = stack.make_problem(K_DATA, n_images=max(N_IMAGES), size=12)
print(f"{RESTARTS} restarts x {STEPS} steps per cell, seed {EXP.args.seed}")

# %%
def run_cell(width, kernel2, n_images):
    model = stack.student(width, kernel2)
    t = time.perf_counter()
    result = stack.train(model, X_ALL[:n_images], Y_ALL[:n_images], key=K_FIT,
                         restarts=RESTARTS, steps=STEPS)
    s = stack.score(model, result, X_TEST, Y_TEST, layer2=False)
    cell = {
        "width": width, "kernel2": kernel2, "n_images": n_images,
        "success_rate": s["success_rate"], "n_successes": s["n_successes"],
        # both teacher filters found (cosine >= 0.99), the error low or still falling
        "filters_found_rate": (s["outcomes"]["recovered"] + s["outcomes"]["converging"])
        / s["n_restarts"],
        "n_restarts": s["n_restarts"], "outcomes": s["outcomes"],
        "extra_channels_of_successes": s["extra_channels_of_successes"],
        "median_rel_error": float(np.median([r["held_out_rel_error"] for r in s["restarts"]])),
        "fit_s": result.wall_s, "compile_s": result.compile_s,
        "cell_s": time.perf_counter() - t,
    }
    o = s["outcomes"]
    print(f"width {width}, layer 2 {kernel2}x{kernel2}, {n_images:>2} images: "
          f"{s['n_successes']:>2}/{s['n_restarts']} recovered, converging "
          f"{o['converging']}, negated {o['negated']}, shifted {o['shifted']}, other "
          f"{o['other']}  "
          f"({cell['cell_s']:.1f} s: fit {result.wall_s:.1f}, compile {result.compile_s:.1f})")
    return cell


T_MAP = time.perf_counter()
CELLS = {}
for w in WIDTHS:
    for k in KERNELS2:
        if (w, k) not in SKIP:
            CELLS[(w, k, 16)] = run_cell(w, k, 16)
for n in N_IMAGES:
    if (DATA_WIDTH, 3, n) not in CELLS:
        CELLS[(DATA_WIDTH, 3, n)] = run_cell(DATA_WIDTH, 3, n)
MAP_S = time.perf_counter() - T_MAP
print(f"{len(CELLS)} cells in {MAP_S:.1f} s")

# %% [markdown]
# ## 2. The map
#
# Green: most restarts found both teacher filters. Under each share: the restarts already
# recovered (r), and the failures by kind (n: negated, s: shifted, o: other).

# %%
def note(cell):
    o = cell["outcomes"]
    return f"r{o['recovered']} n{o['negated']} s{o['shifted']} o{o['other']}"


if EXP.draw:
    rates = np.full((len(WIDTHS), len(KERNELS2)), np.nan)
    notes = [[""] * len(KERNELS2) for _ in WIDTHS]
    for i, w in enumerate(WIDTHS):
        for j, k in enumerate(KERNELS2):
            if (w, k, 16) in CELLS:
                rates[i, j] = CELLS[(w, k, 16)]["filters_found_rate"]
                notes[i][j] = note(CELLS[(w, k, 16)])
    EXP.show(viz.rate_map(rates, [f"width {w}" for w in WIDTHS], [f"{k}x{k}" for k in KERNELS2],
                          notes=notes, xlabel="layer-2 kernel", ylabel="layer-1 width",
                          label="share of restarts with both filters found",
                          title=f"both teacher filters found after {STEPS} steps, 16 images, "
                          f"{RESTARTS} restarts per cell"),
             "map_width_kernel.png")
    cells = [CELLS[(DATA_WIDTH, 3, n)] for n in N_IMAGES]
    EXP.show(viz.rate_map(np.array([[c["filters_found_rate"] for c in cells]]),
                          [f"width {DATA_WIDTH}"],
                          [str(n) for n in N_IMAGES], notes=[[note(c) for c in cells]],
                          label="share of restarts with both filters found",
                          xlabel="training images", title=f"both filters found after {STEPS} "
                          f"steps, 3x3 layer 2, {RESTARTS} restarts per cell"), "map_images.png")

# %% [markdown]
# ## 3. Metrics

# %%
metrics = EXP.finish({
    "cells": list(CELLS.values()),
    "n_cells": len(CELLS),
    "steps": STEPS,
    "restarts": RESTARTS,
    "widths": list(WIDTHS),
    "kernels2": list(KERNELS2),
    "n_images": list(N_IMAGES),
    "data_width": DATA_WIDTH,
    "skipped": [list(s) for s in sorted(SKIP)],
    "success_criterion": {"min_cosine": stack.SUCCESS_COSINE,
                          "max_rel_error": stack.SUCCESS_REL_ERROR},
    "map_s": MAP_S,
})
