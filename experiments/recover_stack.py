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
# on the horizontal detector's centre row, then a bias and ReLU: it fires where a vertical
# and a horizontal line cross. The student has the same architecture and starts from random
# weights; many restarts train at once (`jaxconv.fit(..., restarts=R)`, one compiled call).
#
# **Data for identifiability.** Sparse line images hardly ever excite most directions of
# the weight space, and a threshold that fires only at crossings leaves ~96% of the targets
# at zero, without gradient: measured earlier (teacher bias -6), 0 of 32 restarts recovered
# that teacher in 5000 steps. Here the inputs are i.i.d. Gaussian noise images, so every
# layer-1 filter direction is excited, and the teacher's bias (-2) keeps about three
# quarters of its outputs active. 16 images of 12x12 give 1024 targets for 37 weights; the
# held-out error is measured on 256 fresh images.
#
# **What counts as recovered.** A ReLU network computes the same function after permuting
# layer 1's channels, or scaling a layer-1 channel by `s > 0` and its layer-2 input weights
# by `1/s`. So layer-1 filters are matched up to permutation and positive scale
# (`recovery.align`, no sign flip, no kernel flip: a ReLU follows them), and layer 2's
# weights are compared after applying that permutation and the inverse scales to its input
# channels. A restart succeeds when every cosine is >= 0.99 *and* its output on fresh
# images matches the teacher's to a relative error <= 1e-3.
#
# **What goes wrong.** Restarts either recover the teacher to float precision or stall at a
# held-out error of ~0.15-0.28, with a flat loss from a few hundred steps on; nothing lies
# in between. Most stalled restarts have a layer-1 channel that is the teacher's line
# detector *moved by one pixel* across the line, with its layer-2 weights moved one pixel
# back. `conv2(conv1(x))` is unchanged by such a pair of moves, except that a 3x3 kernel
# cannot hold a moved 3x3 line detector: one column falls off the edge, and that costs the
# ~0.19 error. Each channel settles on a position early, so only restarts whose two channels
# both land centred succeed; the rest of the stalled ones mix both line detectors in one
# channel. The script labels every failed restart ("shifted" or "other") and draws a
# typical one next to the teacher's filters moved the same way.
#
# Run: `python experiments/recover_stack.py [--quick] [--out DIR] [--seed N] [--devices N]`.

# %%
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

T_START = time.perf_counter()


def _devices_flag(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--devices", type=int, default=1)
    return p.parse_known_args(argv)[0].devices


# XLA reads the host device count once, when jax is imported: set it before `import jax`.
if __name__ == "__main__" and _devices_flag(sys.argv[1:]) > 1:
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

NAMES = ("vertical_line", "horizontal_line")
TEACHER_BIAS = -2.0
SUCCESS_COSINE = 0.99
SUCCESS_REL_ERROR = 1e-3
N_TEST = 256  # held-out images


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Recover a 2-layer conv stack from data.")
    p.add_argument("--quick", action="store_true", help="fewer restarts and steps, for tests")
    p.add_argument("--out", default="results/recover_stack", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--restarts", type=int, default=None, help="override the restart count")
    p.add_argument("--devices", type=int, default=1,
                   help="run the fit on N devices (on CPU: N forced host devices)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    # parse_known_args: a notebook kernel passes its own flags
    return p.parse_known_args(argv)[0]


# %% [markdown]
# ## The teacher
#
# Layer 2's weights: `[0.5, 1, 0.5]` down the centre column of the vertical-line channel and
# along the centre row of the horizontal-line channel, zero elsewhere. On a crossing both
# channels light up along those arms; on a single line only one does.

# %%
MODEL = nn.Stack(
    [nn.Conv(2, 3, use_bias=False), nn.Activation("relu"), nn.Conv(1, 3), nn.Activation("relu")],
    names=["lines", "lines_relu", "crossing", "crossing_relu"],
)


def teacher_params():
    w2 = np.zeros((3, 3, 2, 1), np.float32)
    w2[:, 1, 0, 0] = (0.5, 1.0, 0.5)  # vertical-line channel: centre column
    w2[1, :, 1, 0] = (0.5, 1.0, 0.5)  # horizontal-line channel: centre row
    return {
        "lines": {"kernel": filters.stack([getattr(filters, n)() for n in NAMES])},
        "crossing": {"kernel": jnp.asarray(w2), "bias": jnp.full((1,), TEACHER_BIAS)},
    }


# %% [markdown]
# ## Data: Gaussian noise images and the teacher's response

# %%
# jit: run op by op, every small op would compile on its own (seconds in all)
apply = jax.jit(MODEL.apply, static_argnames="return_features")


def make_problem(key, *, n_images, size):
    """Images [n, size, size, 1], targets [n, size-4, size-4, 1] and layer 2 before ReLU."""
    images = data.noise_images(key, n_images, size)[..., None]
    targets, features = apply(teacher_params(), images, return_features=True)
    return images, targets, features["crossing"]


@jax.jit
def held_out(params, x, y):
    """Every restart's outputs on x and its relative error ||student - teacher|| / ||teacher||."""
    out = jax.vmap(MODEL.apply, in_axes=(0, None))(params, x)
    err = jnp.sqrt(jnp.sum((out - y[None]) ** 2, axis=(1, 2, 3, 4)))
    return out, err / jnp.linalg.norm(y)


# %% [markdown]
# ## Fit: every restart in one compiled call

# %%
def train(images, targets, *, key, restarts, steps, lr, mesh=None):
    k_init, k_fit = jax.random.split(key)
    init = jax.jit(jax.vmap(lambda k: MODEL.init(k, images.shape)))
    # XLA CPU takes seconds to compile partitionable threefry for small multi-dim shapes
    # such as a (3, 3, 2, 1) kernel (a flat draw compiles in ~0.3 s); the classic
    # threefry draws equally random numbers
    with jax.threefry_partitionable(False):
        params = init(jax.random.split(k_init, restarts))

    def loss(p, batch):
        x, y = batch
        return jnp.mean((MODEL.apply(p, x) - y) ** 2)

    kwargs = {}
    if mesh is not None:
        if "mesh" not in inspect.signature(jaxconv.fit).parameters:
            raise NotImplementedError(
                "recover_stack: --devices needs jaxconv.fit(..., mesh=...), which this version "
                "of jaxconv does not have yet; run without --devices."
            )
        kwargs["mesh"] = mesh
    return jaxconv.fit(loss, params, optax.adam(lr), (images, targets), steps=steps,
                       key=k_fit, restarts=restarts, **kwargs)


# %% [markdown]
# ## Alignment: permutation and positive scale in layer 1, their inverse in layer 2

# %%
def align_restart(params, teacher):
    """One restart's filters aligned to the teacher's, their cosines and a failure diagnosis."""
    ref1 = np.asarray(teacher["lines"]["kernel"])  # [3, 3, 1, 2]
    ref2 = np.asarray(teacher["crossing"]["kernel"])  # [3, 3, 2, 1]
    k1 = np.asarray(params["lines"]["kernel"])
    k2 = np.asarray(params["crossing"]["kernel"])
    matches = recovery.align(k1, ref1, allow_flip=False, allow_sign=False)
    order = [m.matched for m in matches]
    # scale * learned ~= reference, so the layer-2 weight on teacher channel i is the
    # student's weight on channel matched[i] divided by that scale. A channel anti-correlated
    # with its reference gets scale 0 from align; the norm ratio stands in (pictures only:
    # its cosine fails the criterion anyway).
    scales = np.array([
        m.scale if m.scale > 0
        else np.linalg.norm(ref1[..., i]) / max(np.linalg.norm(k1[..., m.matched]), 1e-30)
        for i, m in enumerate(matches)
    ])
    k1_aligned = np.stack([scales[i] * k1[:, :, 0, j] for i, j in enumerate(order)], -1)
    k2_aligned = k2[:, :, order, :] / scales.reshape(1, 1, -1, 1)
    m2 = recovery.align(k2_aligned, ref2, allow_flip=False, allow_sign=False, allow_scale=False)
    return {
        "layer1_cosines": [m.cosine for m in matches],
        "layer2_cosine": m2[0].cosine,
        "bias": float(np.asarray(params["crossing"]["bias"])[0]),
        "k1_aligned": k1_aligned,  # [3, 3, 2], teacher channel order
        "k2_aligned": k2_aligned[..., 0],  # [3, 3, 2]
        "resembles": [resembles(k1_aligned[..., i], ref1[:, :, 0, :]) for i in range(len(NAMES))],
    }


def shift(f, dy, dx):
    """``f`` moved by (dy, dx) pixels inside its own window, zero-filled."""
    out = np.zeros_like(f)
    h, w = f.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = (
        f[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    )
    return out


def resembles(learned, references):
    """The teacher filter (index into ``references`` [kh, kw, n]) and one-pixel shift
    (dy, dx) nearest to ``learned``, with its cosine."""
    cands = [(i, dy, dx) for i in range(references.shape[-1])
             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    cos = [recovery.align(learned, shift(references[..., i], dy, dx), allow_flip=False)[0].cosine
           for i, dy, dx in cands]
    best = int(np.argmax(cos))
    return cands[best], cos[best]


def diagnose(aligned, succeeded):
    """'recovered', 'shifted' (a channel is a shifted teacher filter) or 'other'."""
    if succeeded:
        return "recovered"
    if any(d[1:] != (0, 0) and c >= 0.9 for d, c in aligned["resembles"]):
        return "shifted"
    return "other"


# %%
def main(argv=None):
    args = parse_args(argv)
    restarts = args.restarts or (32 if args.quick else 64)
    steps = args.steps or (800 if args.quick else 1500)
    n_images, size, lr = 16, 12, 5e-2
    mesh = None
    if args.devices > 1:
        if jax.device_count() < args.devices:
            raise RuntimeError(
                f"recover_stack: --devices {args.devices} needs {args.devices} devices, jax "
                f"sees {jax.device_count()}. On CPU run the script from the command line (it "
                "sets XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)"
                " or set that variable yourself before the first `import jax`."
            )
        mesh = jax.make_mesh((args.devices,), ("data",))

    key = jax.random.key(args.seed)
    k_data, k_fit = jax.random.split(key)
    # one batch of images: the first n_images train, the rest are the held-out test set
    x_all, y_all, pre = make_problem(k_data, n_images=n_images + N_TEST, size=size)
    images, targets = x_all[:n_images], y_all[:n_images]
    x_test, y_test = x_all[n_images:], y_all[n_images:]
    teacher = teacher_params()
    active = float(jnp.mean(pre[:n_images] > 0))
    result = train(images, targets, key=k_fit, restarts=restarts, steps=steps, lr=lr, mesh=mesh)

    y_student, rel = held_out(result.params, x_test, y_test)
    y_student, rel = np.asarray(y_student), np.asarray(rel)
    learned = jax.tree.map(np.asarray, result.params)
    per_restart = [align_restart(jax.tree.map(lambda a, r=r: a[r], learned), teacher)
                   for r in range(restarts)]
    min_cos = np.array([min(*a["layer1_cosines"], a["layer2_cosine"]) for a in per_restart])
    success = (min_cos >= SUCCESS_COSINE) & (rel <= SUCCESS_REL_ERROR)
    best = int(np.argmin(rel))
    outcome = [diagnose(a, ok) for a, ok in zip(per_restart, success, strict=True)]
    outcomes = {k: outcome.count(k) for k in ("recovered", "shifted", "other")}

    print(f"\n{restarts} restarts x {steps} steps, {n_images} Gaussian-noise images {size}x{size},"
          f" teacher bias {TEACHER_BIAS:g} ({100 * active:.0f}% of its outputs active)")
    print(f"success (every cosine >= {SUCCESS_COSINE}, held-out rel. error <= "
          f"{SUCCESS_REL_ERROR:g}): {int(success.sum())}/{restarts} = {success.mean():.0%}")
    b = per_restart[best]
    print(f"best restart #{best}: held-out rel. error {rel[best]:.2e}, layer-1 cosines "
          + ", ".join(f"{n} {c:.6f}" for n, c in zip(NAMES, b["layer1_cosines"], strict=True))
          + f", layer-2 cosine {b['layer2_cosine']:.6f}, bias {b['bias']:+.4f} "
          f"(teacher {TEACHER_BIAS:+g})")
    failed = ~success
    if failed.any():
        print(f"failed restarts: median held-out rel. error {np.median(rel[failed]):.3f}; "
              f"{outcomes['shifted']} with a layer-1 channel that is the teacher's filter "
              f"shifted by one pixel, {outcomes['other']} other (e.g. mixed line detectors)")
    print(f"fit: {result.wall_s:.2f} s ({result.steps_per_s:,.0f} steps/s, "
          f"{1e6 * result.wall_s / (steps * restarts):.0f} us per restart-step), "
          f"compile {result.compile_s:.2f} s, devices {args.devices}")

    os.makedirs(args.out, exist_ok=True)
    figures = [] if args.no_figures else write_figures(
        args.out, result, per_restart, outcome, rel, success, best, teacher, x_test, y_test,
        y_student,
    )
    metrics = {
        "success_rate": float(success.mean()),
        "n_successes": int(success.sum()),
        "n_restarts": restarts,
        "steps": result.steps,
        "success_criterion": {"min_cosine": SUCCESS_COSINE, "max_rel_error": SUCCESS_REL_ERROR},
        "held_out_rel_error": [float(e) for e in rel],
        "min_cosine": [float(c) for c in min_cos],
        "succeeded": [bool(s) for s in success],
        "outcome": outcome,
        "outcomes": outcomes,
        "best_restart": best,
        "best": {
            "held_out_rel_error": float(rel[best]),
            "layer1_cosines": dict(zip(NAMES, b["layer1_cosines"], strict=True)),
            "layer2_cosine": b["layer2_cosine"],
            "bias": b["bias"],
        },
        "teacher_bias": TEACHER_BIAS,
        "teacher_active_fraction": active,
        "n_images": n_images,
        "image_size": size,
        "learning_rate": lr,
        "final_losses": [float(v) for v in result.losses[:, -1]],
        "nonfinite_steps": [int(v) for v in np.asarray(result.nonfinite_steps)],
        "wall_s": result.wall_s,
        "compile_s": result.compile_s,
        "steps_per_s": result.steps_per_s,
        "restart_steps_per_s": result.steps_per_s * restarts,
        "devices": args.devices,
        "device_count": jax.device_count(),
        "seed": args.seed,
        "quick": args.quick,
        "figures": figures,
        "total_s": time.perf_counter() - T_START,
        "backend": jax.default_backend(),
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {args.out}/metrics.json and {len(figures)} figures "
          f"in {metrics['total_s']:.2f} s (process time from start)")
    return metrics


# %% [markdown]
# ## Pictures: the best restart's filters, a failed one's, every loss curve, the outputs

# %%
def write_figures(out, result, per_restart, outcome, rel, success, best, teacher, x_test,
                  y_test, y_student):
    from jaxconv import viz

    ref1 = np.asarray(teacher["lines"]["kernel"])[:, :, 0, :]
    ref2 = np.asarray(teacher["crossing"]["kernel"])[..., 0]

    def bank(k1, k2):
        return {
            "layer 1: vertical_line": k1[..., 0],
            "layer 1: horizontal_line": k1[..., 1],
            "layer 2 on vertical": k2[..., 0],
            "layer 2 on horizontal": k2[..., 1],
        }

    b = per_restart[best]
    paths = [viz.filters_side_by_side(
        bank(ref1, ref2), bank(b["k1_aligned"], b["k2_aligned"]),
        os.path.join(out, "filters.png"),
        title=f"teacher (top) vs best restart #{best} (bottom), layer 1 rescaled and "
              f"permuted to the teacher's, layer 2 inversely; held-out rel. error {rel[best]:.1e}",
    )]
    failed = np.flatnonzero(~success)
    if failed.size:
        # the commonest failure mode, and in it the restart nearest the median error
        mode = max(("shifted", "other"), key=outcome.count)
        pool = np.array([r for r in failed if outcome[r] == mode])
        r = int(pool[np.argmin(np.abs(rel[pool] - np.median(rel[pool])))])
        f = per_restart[r]
        # top row: for each learned channel the (shifted) teacher filter it resembles most,
        # and the teacher's layer-2 weights for it shifted back the other way
        a, b = {}, {}
        for layer in (1, 2):
            for c, ((i, dy, dx), _) in enumerate(f["resembles"]):
                name = NAMES[i].split("_")[0]
                if layer == 1:
                    moved = f" ({dy:+d},{dx:+d})" if (dy, dx) != (0, 0) else ""
                    label = f"L1 ch {c}: {name}{moved}"
                    a[label], b[label] = shift(ref1[..., i], dy, dx), f["k1_aligned"][..., c]
                else:
                    moved = f" ({-dy:+d},{-dx:+d})" if (dy, dx) != (0, 0) else ""
                    label = f"L2 on ch {c}{moved}"
                    a[label], b[label] = shift(ref2[..., i], -dy, -dx), f["k2_aligned"][..., c]
        paths.append(viz.filters_side_by_side(
            a, b, os.path.join(out, "failure.png"),
            title=f"a typical failed restart #{r} ({mode}, held-out rel. error {rel[r]:.2f})\n"
                  "top: the teacher's filters moved by (dy,dx) as the learned ones are",
        ))
    paths.append(viz.loss_curves(
        result.losses, os.path.join(out, "loss.png"), highlight=best,
        title=f"{len(rel)} restarts (best #{best} in red): "
              f"{int(success.sum())} recover the teacher",
    ))
    paths.append(viz.restart_outcomes(
        rel, os.path.join(out, "outcomes.png"), threshold=SUCCESS_REL_ERROR, success=success,
        ylabel="held-out relative error",
        title=f"held-out error per restart, sorted ({int(success.sum())}/{len(rel)} succeed)",
    ))
    row = {"input": [np.asarray(x_test[i, :, :, 0]) for i in range(4)],
           "teacher": [np.asarray(y_test[i, :, :, 0]) for i in range(4)],
           f"best #{best}": [np.asarray(y_student[best, i, :, :, 0]) for i in range(4)]}
    if failed.size:
        row[f"failed #{r}"] = [np.asarray(y_student[r, i, :, :, 0]) for i in range(4)]
    paths.append(viz.image_grid(row, os.path.join(out, "outputs.png"), cmap="viridis",
                                symmetric=False, title="held-out noise images and outputs"))
    return [os.path.basename(p) for p in paths]


# %%
if __name__ == "__main__":
    main(sys.argv[1:])
