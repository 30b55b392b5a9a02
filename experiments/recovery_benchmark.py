# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A benchmark of convolutional teachers: recovering each one's weights from data
#
# `jaxconv.teachers.benchmark()` lists 57 teachers: the line -> crossing stack of
# `recover_stack`; 2-layer conv-ReLU stacks whose layer 1 is 2-8 unit-norm filters of the
# classical bank (lines in four orientations, Sobel, Prewitt, Scharr, Laplacian, sharpen,
# emboss, cross) and whose layer 2 is a random 3x3 or 5x5 kernel; the same kind probed on
# patches of scikit-image's photographs and on line/cross images; 3-layer stacks; random
# layer-1 filters; layer 1 with stride 2; a 2x2 max or average pool after layer 1. Each is
# probed on `teachers.n_images` training images: at least 16, and enough that a 4x student
# has at most half as many parameters as training outputs (a student with more parameters
# than outputs fits the data without the teacher's filters; 61 images for the 8-channel
# teachers with a 5x5 readout, 82 for deep_w4x4). The pipeline sees the architecture, the
# images and the teacher's outputs, never its weights.
#
# **The pipeline** (`teachers.recover`): expand and cluster on `jaxconv.fit`'s
# restarts. For each hidden layer in turn: 8 students 4x as wide as the teacher (the
# layers already recovered kept) train with Adam, the first layer's kernel in whitened
# coordinates (`teachers.whitener`: the kernel is `M v` with `M` the inverse square root of
# the second moment of the patches it sees; 3x3 patches of the photographs have condition
# number ~340, of white noise ~1.3, so on photographs plain Adam crawls); every hidden
# filter is scaled to unit norm (the scale moved into the next layer); the live filters of
# all 8 are clustered by cosine (0.99); the clusters found in the most restarts are kept, one
# per teacher channel; 4 students of the pruned width refit from those centroids. Finally
# each refit student, best first, is polished by Levenberg-Marquardt (Gauss-Newton steps
# solved in float64 on the float32 Jacobian) until one reaches a training error of 1e-6.
# Where none does, the selection by fit runs: an expanded student (each of the 8, best
# first, one at a time, until one reaches 1e-6) is polished to ~1e-7, where it holds the
# teacher's filters exactly, some only as negatives (one whose polish stays above 1e-3, the
# square root of 1e-6, does not fit the data and is not pruned); `teachers.prune_by_fit`
# chooses the teacher's width of its last hidden layer's filters, in both signs, by the
# least-squares fit of the readout (linear given them: forward selection, then swaps), and
# the pruned student is polished. A student with more parameters than half its training
# outputs fits without the teacher's filters, so where
# the data is that scarce the selection first trains 8 students as wide as that bound
# allows (never here: `n_images` gives every teacher enough images). The Jacobian rank
# test says whether the result is locally unique up to the positive scales.
#
# **What counts as recovered** (`recovery.score_stack`, on 64 held-out images): every
# teacher filter of every hidden layer is matched by its own student channel with cosine
# >= 0.99999, modulo channel permutation, positive scale and the pixel shift a larger next
# kernel absorbs, and the student's output matches the teacher's to a relative error
# <= 1e-6. A failure is named: *converging* (filters matched, function not yet within
# 1e-6), *negated* (a teacher filter present only as its negative), *shifted* (only at a
# shift the next kernel cannot undo), *merged* (one student channel is the best match of
# two teacher filters) or *other*.
#
# **The baseline** (`teachers.plain_restarts`): ordinary restarts of `fit` at the teacher's
# own width with the same Adam schedule, steps and polish; its per-restart success rate
# sits beside the pipeline's so the gain is visible. The line -> crossing stack also runs on
# 5 seeds (data, initialisation and held-out images all drawn from the seed).
#
# The same file runs as a script: `python experiments/recovery_benchmark.py [--quick]
# [--out DIR] [--seed N] [--steps N] [--restarts N] [--no-figures]`. It writes
# `metrics.json` (every teacher's row, per-family aggregates, the targets) and two figures
# to `results/recovery_benchmark/` in the checkout, or to `--out`. In a notebook the flags
# come from the environment variable `JAXCONV_EXPERIMENT_ARGS` (e.g. `--quick`).

# %% [markdown]
# ## 1. The teachers and the settings

# %%
import collections
import time
import zlib

import jax
import numpy as np

from jaxconv import recovery, teachers, viz
from jaxconv._experiment import shown, start

EXP = start("recovery_benchmark", "Recover every teacher of jaxconv.teachers.benchmark().",
            quick="the line -> crossing teacher on two seeds, few steps, for tests",
            options=("steps", "restarts"))
QUICK = EXP.args.quick
SETTINGS = {
    "factor": 4,  # the expanded students' width, times the teacher's (the issue's limit)
    "restarts": EXP.args.restarts or (4 if QUICK else 8),
    "steps": EXP.args.steps or (150 if QUICK else 600),
    "refit_restarts": 2 if QUICK else 4,
    "refit_steps": 100 if QUICK else 300,
    "polish_steps": 10 if QUICK else 12,
    "cosine": 0.99,
    # one pass: with two (a second pass from a new key where no student reached 1e-6) the
    # full run of 2026-12-05 recovered none of its 7 failures on the second (benchmarks/NOTES.md)
    "attempts": 1,
    # every expanded student may be tried by the selection (it stops at the first to reach
    # 1e-6): with the 3 best, photo_w8_k5 failed in the run of 2026-12-05 evening and was
    # recovered by a 4th-8th (benchmarks/NOTES.md)
    "select": EXP.args.restarts or (4 if QUICK else 8),
}
PLAIN_RESTARTS = 2 if QUICK else 4
MIN_TRAIN, N_TEST = 16, 64  # training images: teachers.n_images (at least 16)
MIN_COSINE, MAX_ERROR = 0.99999, 1e-6  # the criteria, score_stack's defaults
LC_SEEDS = [EXP.args.seed + i for i in range(2 if QUICK else 5)]
ALL = teachers.benchmark()
TEACHERS = [t for t in ALL if t.name == "line_crossing"] if QUICK else ALL
print(f"{len(TEACHERS)} of {len(ALL)} teachers, line -> crossing on seeds {LC_SEEDS}; "
      f"writing to {shown(EXP.out)}")
print("pipeline:", SETTINGS)
print(f"baseline: {PLAIN_RESTARTS} plain restarts x {SETTINGS['steps']} steps + polish")
print(collections.Counter(t.family for t in TEACHERS))

# %% [markdown]
# ## 2. Recover every teacher, score it, and run the plain restarts beside it
#
# One line per teacher: the pipeline's outcome, its held-out error, its smallest matched
# cosine and worst parameter error after alignment, then how many of the plain restarts
# recovered the same teacher. Teachers of one architecture run one after the other, so
# `fit`'s cache of compiled executables serves the second.

# %%
def keys_for(name, seed):
    """Independent keys for the training data, the held-out data, the pipeline and the
    plain restarts of one teacher and seed."""
    base = jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))
    return jax.random.split(base, 4)


def run(teacher, seed):
    k_train, k_test, k_rec, k_plain = keys_for(teacher.name, seed)
    n_train = teachers.n_images(teacher, factor=SETTINGS["factor"], minimum=MIN_TRAIN)
    x, y = teachers.make_data(teacher, k_train, n_train)
    x_test, _ = teachers.make_data(teacher, k_test, N_TEST)
    widths = teachers.hidden_widths(teacher)
    r = teachers.recover(teacher.model, x, y, widths, key=k_rec, **SETTINGS)
    s = recovery.score_stack(r.params, teacher.params, teacher_model=teacher.model, x=x_test,
                             min_cosine=MIN_COSINE, max_error=MAX_ERROR)
    t0 = time.perf_counter()
    plain = teachers.plain_restarts(teacher.model, x, y, key=k_plain, restarts=PLAIN_RESTARTS,
                                    steps=SETTINGS["steps"],
                                    polish_steps=SETTINGS["polish_steps"])
    scores = [recovery.score_stack(jax.tree.map(lambda a, i=i: a[i], plain.params),
                                   teacher.params, teacher_model=teacher.model, x=x_test,
                                   min_cosine=MIN_COSINE, max_error=MAX_ERROR)
              for i in range(PLAIN_RESTARTS)]
    return {
        "name": teacher.name, "family": teacher.family, "seed": seed,
        "images": teacher.images, "n_train": n_train, "widths": widths,
        "student_widths": [SETTINGS["factor"] * w for w in widths],
        "recovered": s.recovered, "failure": s.failure, "failed_layer": s.failed_layer,
        "max_param_error": s.max_param_error, "held_out_rel_error": s.function_error,
        "min_cosine": s.min_cosine, "train_rel_error": r.train_rel_error,
        "attempts": r.attempts, "by_fit": r.by_fit, "restarts": r.restarts,
        "restart_steps": r.restart_steps,
        "polish_steps": r.polish_steps, "wall_s": r.wall_s,
        "jacobian_rank": r.jacobian_rank, "expected_rank": r.expected_rank,
        "identifiable": r.identifiable, "singular_gap": list(r.singular_gap),
        "clusters": r.clusters, "support": r.support,
        "plain": {
            "restarts": PLAIN_RESTARTS,
            "successes": sum(p.recovered for p in scores),
            "rate": sum(p.recovered for p in scores) / PLAIN_RESTARTS,
            "failures": dict(collections.Counter(p.failure for p in scores
                                                 if not p.recovered)),
            "best_held_out_rel_error": min(p.function_error for p in scores),
            "restart_steps": plain.restart_steps, "polish_steps": plain.polish_steps,
            "wall_s": time.perf_counter() - t0,
        },
    }


def show_row(row):
    p = row["plain"]
    print(f"{row['name']:16s} s{row['seed']} {'ok  ' if row['recovered'] else 'FAIL'} "
          f"{row['failure'] or '-':10s} err {row['held_out_rel_error']:8.1e} "
          f"cos {row['min_cosine']:.7f} param {row['max_param_error']:8.1e} "
          f"rank {row['jacobian_rank']}/{row['expected_rank']} att {row['attempts']} "
          f"{'fit' if row['by_fit'] else 'ref'} "
          f"{row['wall_s']:5.1f} s | "
          f"plain {p['successes']}/{p['restarts']} {p['wall_s']:5.1f} s", flush=True)


T0 = time.perf_counter()
ROWS = []
for teacher in TEACHERS:
    ROWS.append(run(teacher, EXP.args.seed))
    show_row(ROWS[-1])
LINE_CROSSING = [r for r in ROWS if r["name"] == "line_crossing"]
for seed in LC_SEEDS[1:]:
    LINE_CROSSING.append(run(teachers.line_crossing(), seed))
    show_row(LINE_CROSSING[-1])
BENCH_S = time.perf_counter() - T0
print(f"{len(ROWS) + len(LC_SEEDS) - 1} runs in {BENCH_S:.0f} s")

# %% [markdown]
# ## 3. Per family: the pipeline vs plain restarts

# %%
def aggregate(rows):
    n = len(rows)
    plain = sum(r["plain"]["successes"] for r in rows)
    plain_n = sum(r["plain"]["restarts"] for r in rows)
    return {
        "teachers": n,
        "recovered": sum(r["recovered"] for r in rows),
        "recovered_on_a_later_attempt": sum(r["recovered"] and r["attempts"] > 1
                                            for r in rows),
        "recovered_by_fit": sum(r["recovered"] and r["by_fit"] for r in rows),
        "success_rate": sum(r["recovered"] for r in rows) / n,
        "plain_restart_success_rate": plain / plain_n,
        "teachers_recovered_by_some_plain_restart": sum(r["plain"]["successes"] > 0
                                                        for r in rows),
        "failures": dict(collections.Counter(r["failure"] for r in rows if not r["recovered"])),
        "median_held_out_rel_error": float(np.median([r["held_out_rel_error"] for r in rows])),
        "worst_held_out_rel_error": max(r["held_out_rel_error"] for r in rows),
        "identifiable": sum(r["identifiable"] for r in rows),
        "wall_s": sum(r["wall_s"] for r in rows),
        "plain_wall_s": sum(r["plain"]["wall_s"] for r in rows),
    }


FAMILIES = {f: aggregate([r for r in ROWS if r["family"] == f])
            for f in teachers.FAMILIES if any(r["family"] == f for r in ROWS)}
TOTAL = aggregate(ROWS)
print(f"{'family':14s} {'n':>3s} {'pipeline':>9s} {'plain/restart':>14s} {'median err':>11s} "
      f"{'identif.':>8s}  failures")
for f, a in {**FAMILIES, "all": TOTAL}.items():
    print(f"{f:14s} {a['teachers']:3d} {a['recovered']:4d} ({a['success_rate']:4.0%}) "
          f"{a['plain_restart_success_rate']:13.0%} {a['median_held_out_rel_error']:11.1e} "
          f"{a['identifiable']:8d}  {a['failures'] or '-'}")
LC = aggregate(LINE_CROSSING)
LC_ERR = np.array([r["held_out_rel_error"] for r in LINE_CROSSING])
print(f"line -> crossing on seeds {LC_SEEDS}: {LC['recovered']}/{len(LC_SEEDS)} recovered, "
      f"held-out error mean {LC_ERR.mean():.2e} (std {LC_ERR.std():.1e}, max {LC_ERR.max():.1e})"
      f", plain restarts {LC['plain_restart_success_rate']:.0%}")

# %% [markdown]
# ## 4. Pictures: success per family, and every teacher's held-out error

# %%
if EXP.draw:
    names = list(FAMILIES)
    rates = np.array([[FAMILIES[f]["success_rate"], FAMILIES[f]["plain_restart_success_rate"]]
                      for f in names])
    notes = [[f"{FAMILIES[f]['recovered']}/{FAMILIES[f]['teachers']}", ""] for f in names]
    EXP.show(viz.rate_map(rates, names, ["pipeline (teachers)", "plain (per restart)"],
                          notes=notes, ylabel="family",
                          title="recovered to error <= 1e-6 and cosine >= 0.99999"),
             "families.png")

# %%
if EXP.draw:
    fig = viz.restart_outcomes(
        np.array([r["held_out_rel_error"] for r in ROWS]), threshold=MAX_ERROR,
        success=np.array([r["recovered"] for r in ROWS]), ylabel="held-out relative error",
        title=f"pipeline: {TOTAL['recovered']}/{TOTAL['teachers']} teachers recovered")
    fig.axes[0].set_xlabel("teacher (sorted)")
    EXP.show(fig, "errors.png")

# %% [markdown]
# ## 5. Metrics and the targets
#
# The targets: >= 95% of the teachers recovered with students at most 4x the teacher's
# width, the line -> crossing stack on every seed, the whole benchmark in < 15 minutes.

# %%
TARGETS = {
    "share_recovered": TOTAL["success_rate"],
    "share_recovered_met": TOTAL["success_rate"] >= 0.95,
    "line_crossing_all_seeds_met": LC["recovered"] == len(LC_SEEDS),
    "benchmark_s": BENCH_S,
    "under_15_minutes_met": BENCH_S < 15 * 60,
    "max_student_factor": SETTINGS["factor"],
}
print(TARGETS)
metrics = EXP.finish({
    "teachers": ROWS,
    "families": FAMILIES,
    "all": TOTAL,
    "line_crossing_seeds": {"seeds": LC_SEEDS, "rows": LINE_CROSSING, **LC,
                            "held_out_rel_error_mean": float(LC_ERR.mean()),
                            "held_out_rel_error_std": float(LC_ERR.std())},
    "targets": TARGETS,
    "settings": SETTINGS,
    "plain_restarts": PLAIN_RESTARTS,
    "min_train": MIN_TRAIN,
    "n_test": N_TEST,
    "criterion": {"min_cosine": MIN_COSINE, "max_rel_error": MAX_ERROR},
})
