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
# The teacher, the students, the training and the scoring are defined once in
# `jaxconv/_tasks.py`, which `recover_stack_map` imports too.
#
# The same file runs as a script with the same steps and outputs:
# `python experiments/recover_stack.py [--quick] [--out DIR] [--seed N] [--steps N]
# [--restarts N] [--width N] [--devices N] [--no-figures]`. It writes `metrics.json` and
# its figures to `results/recover_stack/` in the checkout, or to `--out`. In a notebook the
# flags come from the environment variable `JAXCONV_EXPERIMENT_ARGS` (e.g. `--quick`).

# %% [markdown]
# ## 1. The teacher and the students
#
# Layer 2's weights: `[0.5, 1, 0.5]` down the centre column of the vertical-line channel and
# along the centre row of the horizontal-line channel, zero elsewhere. On a crossing both
# channels light up along those arms; on a single line only one does. A student with a
# `kernel2 x kernel2` layer 2 pads layer 1's map so that its output lines up with the
# teacher's (5x5: one pixel of zeros round the map).

# %%
import inspect
import os
import sys


def devices_flag(argv: list[str]) -> int:
    """``--devices N`` as given in ``argv`` (1 when absent; the parser checks it later)."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--devices=") else (
            argv[i + 1] if arg == "--devices" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit():
            return int(value)
    return 1


# XLA reads the host device count once, when jax is imported: set it before `import jax`.
if __name__ == "__main__" and "jax" not in sys.modules and devices_flag(sys.argv[1:]) > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices_flag(sys.argv[1:])}"
    ).strip()

import jax
import numpy as np

import jaxconv
from jaxconv import recovery, viz
from jaxconv._experiment import shown, start
from jaxconv._tasks import (
    BASELINE_WIDTH,
    LR,
    NAMES,
    OUTCOMES,
    PRECISION,
    SUCCESS_COSINE,
    SUCCESS_REL_ERROR,
    TEACHER,
    TEACHER_BIAS,
    WIDTH,
    aligned_filters,
    bank,
    make_problem,
    print_score,
    score,
    student,
    teacher_params,
    train,
)


def flags(p):
    p.add_argument("--width", type=int, default=WIDTH, help="the wide student's width")
    p.add_argument("--devices", type=int, default=1,
                   help="run the fits on N devices (on CPU: N forced host devices)")


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


EXP = start("recover_stack", "Recover a 2-layer conv stack from data.",
            quick="fewer restarts and steps, for tests", options=("steps", "restarts"),
            add_flags=flags)
RESTARTS = EXP.args.restarts or (8 if EXP.args.quick else 64)
STEPS = EXP.args.steps or (200 if EXP.args.quick else 3000)
MESH = make_mesh(EXP.args.devices)
print(f"{RESTARTS} restarts x {STEPS} steps, seed {EXP.args.seed}, writing to "
      f"{shown(EXP.out)}")
TEACHER_P = teacher_params()
print(TEACHER)
if EXP.draw:
    EXP.show(viz.image_grid(
        {"layer 1": [np.asarray(TEACHER_P["lines"]["kernel"][:, :, 0, c]) for c in (0, 1)],
             "layer 2": [np.asarray(TEACHER_P["crossing"]["kernel"][:, :, c, 0])
                         for c in (0, 1)]},
        annotate=True, col_titles=["vertical channel", "horizontal channel"],
        title="the teacher's filters"))

# %% [markdown]
# ## 2. Data: Gaussian noise images and the teacher's response

# %%
K_DATA, K_FIT = jax.random.split(jax.random.key(EXP.args.seed))
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
MODELS = {"wide": student(EXP.args.width), "same": student(BASELINE_WIDTH)}
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
SCORES = {label: score(MODELS[label], RESULTS[label], X_TEST, Y_TEST) for label in MODELS}
for label, s in SCORES.items():
    print_score(label, s)

# %% [markdown]
# ## 5. Pictures: the wide student's best restart, a typical failure of the narrow one

# %%
if EXP.draw:
    REF1 = np.asarray(TEACHER_P["lines"]["kernel"])[:, :, 0, :]
    REF2 = np.asarray(TEACHER_P["crossing"]["kernel"])[..., 0]
    s, r = SCORES["wide"], SCORES["wide"]["best_restart"]
    row, f1, l2, _ = aligned_filters(s, RESULTS["wide"], r)
    EXP.show(viz.filters_side_by_side(
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
        EXP.show(viz.filters_side_by_side(
            {k: a for k, (a, _) in moved.items()}, {k: b for k, (_, b) in moved.items()},
            title=f"same-architecture failure #{r} ({mode}, rel. error "
                      f"{row['held_out_rel_error']:.2f}): teacher filter moved (top), learned "
                      "(bottom)"), "failure.png")
    EXP.show(viz.restart_outcomes(
        np.array([rw["held_out_rel_error"] for rw in SCORES["wide"]["restarts"]]),
        threshold=SUCCESS_REL_ERROR,
        success=np.array([rw["succeeded"] for rw in SCORES["wide"]["restarts"]]),
        ylabel="held-out relative error",
        title=f"wide student: {SCORES['wide']['n_successes']}/{RESTARTS} succeed"),
        "outcomes.png")
    EXP.show(viz.restart_outcomes(
        np.array([rw["held_out_rel_error"] for rw in same["restarts"]]),
        threshold=SUCCESS_REL_ERROR,
        success=np.array([rw["succeeded"] for rw in same["restarts"]]),
        ylabel="held-out relative error",
        title=f"same-architecture student: {same['n_successes']}/{RESTARTS} succeed"),
        "outcomes_same.png")
    EXP.show(viz.loss_curves(RESULTS["wide"].losses, highlight=SCORES["wide"]["best_restart"],
                             title=f"wide student, {RESTARTS} restarts (best in red)"),
             "loss.png")

# %% [markdown]
# ## 6. Metrics
#
# Everything above goes to `metrics.json` next to the figures; `restarts` holds every
# restart's numbers.

# %%
def _public(s):
    return {k: v for k, v in s.items() if k != "outputs"}


wide, same = SCORES["wide"], SCORES["same"]
metrics = EXP.finish({
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
    "devices": EXP.args.devices,
    "device_count": jax.device_count(),
})
