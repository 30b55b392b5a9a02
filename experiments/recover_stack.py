# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Recovering a 2-layer filter stack: line detectors, then a crossing detector
#
# The teacher is a hand-designed two-layer stack. Layer 1 convolves the image with the
# vertical and the horizontal line detector and applies ReLU. Layer 2 is a 3x3x2 -> 1 filter
# that puts positive, centre-weighted weight on the vertical detector's centre column and
# on the horizontal detector's centre row, then a bias (-2) and ReLU: it fires where a
# vertical and a horizontal line cross. Students start from random weights; 64 restarts
# train at once (`jaxconv.fit(..., restarts=64)`, one compiled call per student).
#
# Two students learn from the same 16 Gaussian-noise images (12x12; noise excites every
# direction of the filters' weight space, and the teacher keeps about three quarters of its
# outputs active):
#
# - the **same-architecture** student: 2 layer-1 channels, like the teacher;
# - the **wide** student (the default): 16 layer-1 channels, same layer 2 kernel size.
#
# Both train with Adam at 0.05, held for 70% of the steps and then decayed linearly to 1%
# of it.
#
# **What counts as recovered** (`jaxconv.recovery.match_channels`). A ReLU network computes
# the same function after permuting layer 1's channels, or scaling a channel by `s > 0` and
# its layer-2 weights by `1/s`. So every teacher layer-1 filter must be matched by its own
# student channel (an optimal assignment, not greedy) with cosine >= 0.99, no sign flip and
# no kernel flip; and the student's output on 256 fresh noise images must match the
# teacher's to a relative error <= 1e-3. The student's other channels are named: *dead*
# (all-zero after ReLU on the held-out images), *redundant* (a positively scaled copy of
# another channel) or *other*. A failed restart is *converging* (both filters found, the
# error not yet below 1e-3), *negated* (a teacher filter is matched only by its negative:
# see below), *shifted* (a channel is a teacher filter moved by a pixel, which a 3x3 layer 2
# cannot move back) or *other*.
#
# **Why the wide student works.** With two channels each channel must land on its own
# teacher filter, centred; a channel that settles early on a moved detector (or on a mix of
# both) is a local minimum the other channel cannot help with. With sixteen channels, some of
# them land on each centred detector and the misplaced ones are not needed: their layer-2
# weights shrink to zero or cancel between copies, which is a descent direction, not a
# barrier (the over-realised student specialises, as in Tian 2019; mild
# over-parameterisation removes most spurious minima, as Safran & Shamir 2018 observe). What
# is left is slow: the unneeded channels' contributions decay gradually, which is why the
# wide student needs more steps than the narrow one's successes do.
#
# **What width brings in.** Extra channels also open exact solutions that are not the
# teacher's: since `relu(z) = z + relu(-z)`, a channel `-f` plus two channels `+u` and `-u`
# (their ReLUs sum to the linear `u * x`) compute what the channel `f` computes. A wide
# student that settles there matches the teacher's function (its held-out error can be
# below 1e-3) while no channel is the teacher's filter up to a positive scale; these are the
# *negated* restarts, failures by the criterion above. `recover_stack_map` prints how many
# restarts of each width end up there; presumably (not tested here) with many random
# channels some start close enough to each `+f` to win before a `-f`, `+u`, `-u`
# combination forms. The run prints both students' rates, the failure kinds and what the
# extra channels became; `recover_stack_map` maps the rate against width, layer-2 kernel
# size and the number of images.
#
# The same file runs as a script with the same steps and outputs:
# `python experiments/recover_stack.py [--quick] [--out DIR] [--seed N] [--steps N]
# [--restarts N] [--width N] [--devices N] [--no-figures]`. It writes `metrics.json` and
# its figures to `results/recover_stack/` in the checkout, or to `--out`. In a notebook the
# flags come from the environment variable `JAXCONV_EXPERIMENT_ARGS` (e.g. `--quick`).

# %%
from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import runpy
import shlex
import sys
import time

T_START = time.perf_counter()


def _devices_flag(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--devices", type=int, default=1)
    return p.parse_known_args(argv)[0].devices


# XLA reads the host device count once, when jax is imported: set it before `import jax`.
if __name__ == "__main__" and "jax" not in sys.modules and _devices_flag(sys.argv[1:]) > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={_devices_flag(sys.argv[1:])}"
    ).strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv
from jaxconv import data, filters, nn, recovery

NAME = "recover_stack"
NAMES = ("vertical_line", "horizontal_line")
TEACHER_BIAS = -2.0
SUCCESS_COSINE = 0.99
SUCCESS_REL_ERROR = 1e-3
N_TEST = 256  # held-out images
OUTCOMES = ("recovered", "converging", "negated", "shifted", "other")
WIDTH, BASELINE_WIDTH = 16, 2
LR = 5e-2
# Full float32 products in every convolution and dot traced under it: on recent NVIDIA
# GPUs float32 convs default to TF32 (~1e-3 relative error), which would hide a 1e-6
# recovery. On CPU the products are float32 either way.
PRECISION = "highest"
# True in a notebook and for `python recover_stack.py`; False when a test or
# recover_stack_map imports this file (main() then runs the file top to bottom as a script).
RUN = __name__ == "__main__"
IN_NOTEBOOK = "ipykernel" in sys.modules

# %% [markdown]
# Plumbing (skip on a first read): the flags, where the results go, and `show`, which saves
# a figure and displays it inline.

# %%
def repo_root() -> pathlib.Path:
    """The checkout this file is in (a notebook has no ``__file__``: the working dir)."""
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
    command line (unknown flags, such as a kernel's, are ignored)."""
    if argv is None:
        argv = (shlex.split(os.environ.get("JAXCONV_EXPERIMENT_ARGS", "")) if IN_NOTEBOOK
                else sys.argv[1:])
    p = argparse.ArgumentParser(description="Recover a 2-layer conv stack from data.")
    p.add_argument("--quick", action="store_true", help="fewer restarts and steps, for tests")
    p.add_argument("--out", default=str(repo_root() / "results" / NAME),
                   help="output directory (default: results/recover_stack in the checkout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--restarts", type=int, default=None, help="override the restart count")
    p.add_argument("--width", type=int, default=WIDTH, help="the wide student's width")
    p.add_argument("--devices", type=int, default=1,
                   help="run the fits on N devices (on CPU: N forced host devices)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return p.parse_known_args(argv)[0]


def main(argv=None):
    """Runs this file top to bottom, as ``python recover_stack.py ARGV`` does, and returns
    its metrics (what it writes to metrics.json)."""
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


def make_mesh(devices):
    if devices <= 1:
        return None
    if jax.device_count() < devices:
        raise RuntimeError(
            f"recover_stack: --devices {devices} needs {devices} devices, jax "
            f"sees {jax.device_count()}. On CPU run the script from the command line (it "
            "sets XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)"
            " or set that variable yourself before the first `import jax`."
        )
    if "mesh" not in inspect.signature(jaxconv.fit).parameters:
        raise NotImplementedError("recover_stack: --devices needs jaxconv.fit(..., mesh=...)")
    return jax.make_mesh((devices,), ("data",))


if RUN:
    ARGS = parse_args(globals().get("ARGV"))
    RESTARTS = ARGS.restarts or (16 if ARGS.quick else 64)
    STEPS = ARGS.steps or (300 if ARGS.quick else 3000)
    MESH = make_mesh(ARGS.devices)
    os.makedirs(ARGS.out, exist_ok=True)
    DRAW = IN_NOTEBOOK or not ARGS.no_figures
    if DRAW:
        from jaxconv import viz
    print(f"{RESTARTS} restarts x {STEPS} steps, seed {ARGS.seed}, writing to "
          f"{shown(ARGS.out)}")

# %% [markdown]
# ## 1. The teacher and the students
#
# Layer 2's weights: `[0.5, 1, 0.5]` down the centre column of the vertical-line channel and
# along the centre row of the horizontal-line channel, zero elsewhere. On a crossing both
# channels light up along those arms; on a single line only one does. A student with a
# `kernel2 x kernel2` layer 2 pads layer 1's map so that its output lines up with the
# teacher's (5x5: one pixel of zeros round the map).

# %%
LAYER_NAMES = ["lines", "lines_relu", "crossing", "crossing_relu"]
TEACHER = nn.Stack(
    [nn.Conv(2, 3, use_bias=False), nn.Activation("relu"), nn.Conv(1, 3), nn.Activation("relu")],
    names=LAYER_NAMES,
)


def teacher_params():
    w2 = np.zeros((3, 3, 2, 1), np.float32)
    w2[:, 1, 0, 0] = (0.5, 1.0, 0.5)  # vertical-line channel: centre column
    w2[1, :, 1, 0] = (0.5, 1.0, 0.5)  # horizontal-line channel: centre row
    return {
        "lines": {"kernel": filters.stack([getattr(filters, n)() for n in NAMES])},
        "crossing": {"kernel": jnp.asarray(w2), "bias": jnp.full((1,), TEACHER_BIAS)},
    }


def student(width, kernel2=3, *, algorithm="auto"):
    """``width`` layer-1 channels (3x3, ReLU), then ``kernel2`` x ``kernel2`` -> 1 + bias +
    ReLU, padded so that the output has the teacher's shape; ``algorithm`` as in ``conv``."""
    if kernel2 < 3 or kernel2 % 2 == 0:
        raise ValueError(f"recover_stack: kernel2 must be odd and >= 3, got {kernel2}.")
    return nn.Stack(
        [nn.Conv(width, 3, use_bias=False, algorithm=algorithm), nn.Activation("relu"),
         nn.Conv(1, kernel2, padding=(kernel2 - 3) // 2, algorithm=algorithm),
         nn.Activation("relu")],
        names=LAYER_NAMES,
    )


if RUN:
    TEACHER_P = teacher_params()
    print(TEACHER)
    if DRAW:
        show(viz.image_grid(
            {"layer 1": [np.asarray(TEACHER_P["lines"]["kernel"][:, :, 0, c]) for c in (0, 1)],
             "layer 2": [np.asarray(TEACHER_P["crossing"]["kernel"][:, :, c, 0])
                         for c in (0, 1)]},
            annotate=True, col_titles=["vertical channel", "horizontal channel"],
            title="the teacher's filters"))

# %% [markdown]
# ## 2. Data: Gaussian noise images and the teacher's response

# %%
def make_problem(key, *, n_images, size, n_test=N_TEST):
    """Training images and targets, held-out images and targets, and the share of the
    teacher's training outputs that are active (layer 2 before ReLU > 0)."""
    images = data.noise_images(key, n_images + n_test, size)[..., None]
    targets, features = jax.jit(TEACHER.apply, static_argnames="return_features")(
        teacher_params(), images, return_features=True)
    active = float(jnp.mean(features["crossing"][:n_images] > 0))
    return (images[:n_images], targets[:n_images], images[n_images:], targets[n_images:],
            active)


if RUN:
    K_DATA, K_FIT = jax.random.split(jax.random.key(ARGS.seed))
    X, Y, X_TEST, Y_TEST, ACTIVE = make_problem(K_DATA, n_images=16, size=12)
    print(f"{X.shape[0]} training images {X.shape[1]}x{X.shape[2]}, {X_TEST.shape[0]} "
          f"held-out; {100 * ACTIVE:.0f}% of the teacher's training outputs active")

# %% [markdown]
# ## 3. Fit every restart in one compiled call
#
# The whole fit traces under `jax.default_matmul_precision("highest")`: every convolution
# and dot in the compiled step asks for full float32 products (tests/test_experiments.py
# checks the lowered StableHLO for it).

# %%
def schedule(lr, steps):
    """``lr`` for 70% of the steps, then a linear decay to ``lr / 100``."""
    hold = int(0.7 * steps)
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, lr / 100, steps - hold)],
        [hold])


def loss_for(model):
    def loss(p, batch):
        x, y = batch
        return jnp.mean((model.apply(p, x) - y) ** 2)

    return loss


def train(model, images, targets, *, key, restarts, steps, lr=LR, mesh=None):
    k_init, k_fit = jax.random.split(key)
    init = jax.jit(jax.vmap(lambda k: model.init(k, images.shape)))
    # XLA CPU takes seconds to compile partitionable threefry for small multi-dim shapes
    # such as a (3, 3, 2, 1) kernel; the classic threefry draws equally random numbers
    with jax.threefry_partitionable(False):
        params = init(jax.random.split(k_init, restarts))
    kwargs = {} if mesh is None else {"mesh": mesh}
    with jax.default_matmul_precision(PRECISION):
        return jaxconv.fit(loss_for(model), params, optax.adam(schedule(lr, steps)),
                           (images, targets), steps=steps, key=k_fit, restarts=restarts,
                           progress=False, **kwargs)


def lowered_step_text(model, images, targets):
    """The StableHLO of one training gradient, traced as ``train`` traces it (for tests)."""
    params = model.init(jax.random.key(0), images.shape)
    with jax.default_matmul_precision(PRECISION):
        return jax.jit(jax.grad(loss_for(model))).lower(params, (images, targets)).as_text()


if RUN:
    MODELS = {"wide": student(ARGS.width), "same": student(BASELINE_WIDTH)}
    RESULTS = {}
    for label, model in MODELS.items():
        RESULTS[label] = r = train(model, X, Y, key=K_FIT, restarts=RESTARTS, steps=STEPS,
                                   mesh=MESH)
        width = model.layers[0].features
        print(f"{label} student (width {width}): fit {r.wall_s:.2f} s "
              f"({1e6 * r.wall_s / (STEPS * RESTARTS):.0f} us per restart-step), compile "
              f"{r.compile_s:.2f} s")

# %% [markdown]
# ## 4. Score every restart: function, filters, extra channels

# %%
def held_out(model, params, x, y):
    """Every restart's outputs on x and its relative error ||student - teacher|| / ||teacher||,
    and layer 1's outputs after ReLU."""
    def one(p):
        out, feats = model.apply(p, x, return_features=True)
        return out, feats["lines_relu"]

    with jax.default_matmul_precision(PRECISION):
        out, feats = jax.jit(jax.vmap(one))(params)
    err = jnp.sqrt(jnp.sum((out - y[None]) ** 2, axis=(1, 2, 3, 4))) / jnp.linalg.norm(y)
    return np.asarray(out), np.asarray(err), np.asarray(feats)


def layer2_on_teacher_channels(k1, k2, max_shift):
    """The student's layer-2 weight on each teacher channel, summed over the channels that
    are scaled (and undoably shifted) copies of that teacher filter, as the teacher's
    ``[3, 3, 2]`` (the middle of a larger kernel)."""
    ref = np.asarray(teacher_params()["lines"]["kernel"])
    k2w = k2.shape[0]
    out = np.zeros((k2w, k2w, len(NAMES)))
    for c in range(k1.shape[-1]):
        for i in range(len(NAMES)):
            (m,) = recovery.match_channels(k1[..., c:c + 1], ref[..., i:i + 1],
                                           max_shift=max_shift).matches
            if m.cosine >= SUCCESS_COSINE:
                # relu(f_c * x) = relu(f_i * x) / scale: its weight counts 1/scale times
                back = tuple(-d for d in m.shift)
                out[..., i] += recovery.shift_filter(k2[:, :, c, 0], back) / m.scale
    lo = (k2w - 3) // 2
    return out[lo:lo + 3, lo:lo + 3]


def score(model, result, x_test, y_test, *, layer2=True):
    """Per restart: held-out error, the matches, the channel kinds, the outcome (and with
    ``layer2`` the cosine of layer 2's weights on the teacher's channels)."""
    width = model.layers[0].features
    kernel2 = model.layers[2].kernel_size
    kernel2 = kernel2[0] if isinstance(kernel2, tuple) else kernel2
    max_shift = (kernel2 - 3) // 2
    ref = np.asarray(teacher_params()["lines"]["kernel"])
    ref2 = np.asarray(teacher_params()["crossing"]["kernel"])[..., 0]
    out, rel, feats = held_out(model, result.params, x_test, y_test)
    k1s = np.asarray(result.params["lines"]["kernel"])
    k2s = np.asarray(result.params["crossing"]["kernel"])
    rows = []
    for r in range(k1s.shape[0]):
        rep = recovery.match_channels(k1s[r], ref, max_shift=max_shift, features=feats[r])
        ok = bool(rep.recovered and rel[r] <= SUCCESS_REL_ERROR)
        if ok:
            outcome = "recovered"
        elif rep.recovered:
            outcome = "converging"
        else:
            # relu(z) = z + relu(-z): a channel -f plus a pair of channels +-u (whose ReLUs
            # sum to the linear u * x) computes what a channel f does
            negated = recovery.match_channels(k1s[r], -ref, max_shift=max_shift)
            wider = recovery.match_channels(k1s[r], ref, max_shift=max_shift + 1)
            if any(m.cosine < SUCCESS_COSINE <= n.cosine
                   for m, n in zip(rep.matches, negated.matches, strict=True)):
                outcome = "negated"
            elif any(max(map(abs, m.shift)) > max_shift and m.cosine >= 0.9
                     for m in wider.matches):
                outcome = "shifted"
            else:
                outcome = "other"
        l2 = layer2_on_teacher_channels(k1s[r], k2s[r], max_shift) if layer2 else ref2
        rows.append({
            "held_out_rel_error": float(rel[r]),
            "layer1_cosines": [m.cosine for m in rep.matches],
            "layer1_channels": [m.matched for m in rep.matches],
            "layer1_shifts": [list(m.shift) for m in rep.matches],
            "layer2_cosine": (float(np.sum(l2 * ref2) / max(
                np.linalg.norm(l2) * np.linalg.norm(ref2), 1e-30)) if layer2 else None),
            "bias": float(np.asarray(result.params["crossing"]["bias"])[r, 0]),
            "channel_kinds": rep.kinds,
            "succeeded": ok,
            "outcome": outcome,
        })
    success = np.array([row["succeeded"] for row in rows])
    kinds = [row["outcome"] for row in rows]
    extra = [k for row in rows if row["succeeded"] for k in row["channel_kinds"]
             if k != "matched"]
    return {
        "width": width,
        "kernel2": kernel2,
        "success_rate": float(success.mean()),
        "n_successes": int(success.sum()),
        "n_restarts": len(rows),
        "outcomes": {k: kinds.count(k) for k in OUTCOMES},
        "extra_channels_of_successes": {k: extra.count(k) for k in recovery.CHANNEL_KINDS
                                        if k != "matched"},
        "median_rel_error_of_failures": (float(np.median(rel[~success]))
                                         if (~success).any() else None),
        "best_restart": int(np.argmin(rel)),
        "restarts": rows,
        "outputs": out,
    }


def print_score(label, s):
    b = s["restarts"][s["best_restart"]]
    print(f"{label} student (width {s['width']}, layer 2 {s['kernel2']}x{s['kernel2']}): "
          f"{s['n_successes']}/{s['n_restarts']} = {s['success_rate']:.0%} recover the "
          f"teacher; outcomes {s['outcomes']}")
    print(f"  best restart #{s['best_restart']}: held-out rel. error "
          f"{b['held_out_rel_error']:.2e}, layer-1 cosines "
          + ", ".join(f"{c:.6f}" for c in b["layer1_cosines"])
          + f", layer-2 cosine {b['layer2_cosine']:.6f}, bias {b['bias']:+.4f}")
    if s["n_successes"]:
        worst = max(r["held_out_rel_error"] for r in s["restarts"] if r["succeeded"])
        low = min(min(r["layer1_cosines"]) for r in s["restarts"] if r["succeeded"])
        print(f"  every success: held-out rel. error <= {worst:.1e}, layer-1 cosines >= "
              f"{low:.6f}; their extra channels: {s['extra_channels_of_successes']}")
    if s["median_rel_error_of_failures"] is not None:
        print(f"  failed restarts: median held-out rel. error "
              f"{s['median_rel_error_of_failures']:.2e}")


if RUN:
    SCORES = {label: score(MODELS[label], RESULTS[label], X_TEST, Y_TEST) for label in MODELS}
    for label, s in SCORES.items():
        print_score(label, s)

# %% [markdown]
# ## 5. Pictures: the wide student's best restart, a typical failure of the narrow one

# %%
def aligned_filters(s, result, r):
    """Restart ``r``'s matched layer-1 filters rescaled to the teacher's and its layer-2
    weights summed onto the teacher's channels."""
    row = s["restarts"][r]
    ref = np.asarray(teacher_params()["lines"]["kernel"])
    k1 = np.asarray(result.params["lines"]["kernel"])[r]
    k2 = np.asarray(result.params["crossing"]["kernel"])[r]
    max_shift = (s["kernel2"] - 3) // 2
    rep = recovery.match_channels(k1, ref, max_shift=max(max_shift, 1))
    f1 = np.stack([k1[:, :, 0, m.matched] * m.scale for m in rep.matches], -1)
    l2 = layer2_on_teacher_channels(k1, k2, max_shift)
    return row, f1, l2, rep


def bank(k1, k2):
    return {
        "L1 vertical": k1[..., 0], "L1 horizontal": k1[..., 1],
        "L2 on vertical": k2[..., 0], "L2 on horizontal": k2[..., 1],
    }


if RUN and DRAW:
    REF1 = np.asarray(TEACHER_P["lines"]["kernel"])[:, :, 0, :]
    REF2 = np.asarray(TEACHER_P["crossing"]["kernel"])[..., 0]
    s, r = SCORES["wide"], SCORES["wide"]["best_restart"]
    row, f1, l2, _ = aligned_filters(s, RESULTS["wide"], r)
    show(viz.filters_side_by_side(
        bank(REF1, REF2), bank(f1, l2),
        title=f"teacher (top) vs wide student #{r} (bottom, rescaled; layer 2 summed over "
              f"copies), rel. error {row['held_out_rel_error']:.1e}"), "filters.png")
    same = SCORES["same"]
    failed = [i for i, rw in enumerate(same["restarts"]) if not rw["succeeded"]]
    if failed:
        mode = max(OUTCOMES[1:],
                   key=lambda k: sum(same["restarts"][i]["outcome"] == k for i in failed))
        pool = [i for i in failed if same["restarts"][i]["outcome"] == mode]
        errs = np.array([same["restarts"][i]["held_out_rel_error"] for i in pool])
        r = pool[int(np.argmin(np.abs(errs - np.median(errs))))]
        row, f1, _, rep = aligned_filters(same, RESULTS["same"], r)
        moved = {f"L1 ch {m.matched} ~ {NAMES[i].split('_')[0]} {m.shift}":
                 (recovery.shift_filter(REF1[..., i], m.shift), f1[..., i])
                 for i, m in enumerate(rep.matches)}
        show(viz.filters_side_by_side(
            {k: a for k, (a, _) in moved.items()}, {k: b for k, (_, b) in moved.items()},
            title=f"same-architecture failure #{r} ({mode}, rel. error "
                  f"{row['held_out_rel_error']:.2f}): teacher filter moved (top), learned "
                  "(bottom)"), "failure.png")
    show(viz.restart_outcomes(
        np.array([rw["held_out_rel_error"] for rw in SCORES["wide"]["restarts"]]),
        threshold=SUCCESS_REL_ERROR,
        success=np.array([rw["succeeded"] for rw in SCORES["wide"]["restarts"]]),
        ylabel="held-out relative error",
        title=f"wide student: {SCORES['wide']['n_successes']}/{RESTARTS} succeed"),
        "outcomes.png")
    show(viz.restart_outcomes(
        np.array([rw["held_out_rel_error"] for rw in same["restarts"]]),
        threshold=SUCCESS_REL_ERROR,
        success=np.array([rw["succeeded"] for rw in same["restarts"]]),
        ylabel="held-out relative error",
        title=f"same-architecture student: {same['n_successes']}/{RESTARTS} succeed"),
        "outcomes_same.png")
    show(viz.loss_curves(RESULTS["wide"].losses, highlight=SCORES["wide"]["best_restart"],
                         title=f"wide student, {RESTARTS} restarts (best in red)"),
         "loss.png")

# %% [markdown]
# ## 6. Metrics
#
# Everything above goes to `metrics.json` next to the figures; `restarts` holds every
# restart's numbers.

# %%
if RUN:
    def _public(s):
        return {k: v for k, v in s.items() if k != "outputs"}

    wide, same = SCORES["wide"], SCORES["same"]
    metrics = {
        # the default (wide) student's numbers at the top level
        **{k: v for k, v in _public(wide).items() if k != "restarts"},
        "held_out_rel_error": [rw["held_out_rel_error"] for rw in wide["restarts"]],
        "min_cosine": [min(rw["layer1_cosines"]) for rw in wide["restarts"]],
        "succeeded": [rw["succeeded"] for rw in wide["restarts"]],
        "outcome": [rw["outcome"] for rw in wide["restarts"]],
        "students": {"wide": _public(wide), "same_architecture": _public(same)},
        "same_architecture_success_rate": same["success_rate"],
        "success_criterion": {"min_cosine": SUCCESS_COSINE, "max_rel_error": SUCCESS_REL_ERROR},
        "steps": STEPS,
        "teacher_bias": TEACHER_BIAS,
        "teacher_active_fraction": ACTIVE,
        "n_images": int(X.shape[0]),
        "image_size": int(X.shape[1]),
        "learning_rate": LR,
        "schedule": "constant for 70% of the steps, then linear to lr/100",
        "precision": PRECISION,
        "wall_s": RESULTS["wide"].wall_s,
        "compile_s": RESULTS["wide"].compile_s,
        "steps_per_s": RESULTS["wide"].steps_per_s,
        "same_architecture_wall_s": RESULTS["same"].wall_s,
        "nonfinite_steps": [int(v) for v in np.asarray(RESULTS["wide"].nonfinite_steps)],
        "devices": ARGS.devices,
        "device_count": jax.device_count(),
        "seed": ARGS.seed,
        "quick": ARGS.quick,
        "figures": FIGURES,
        "total_s": time.perf_counter() - T_START,
        "backend": jax.default_backend(),
    }
    with open(os.path.join(ARGS.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {shown(ARGS.out)}/metrics.json and {len(FIGURES)} figures "
          f"in {metrics['total_s']:.2f} s (process time from start)")
