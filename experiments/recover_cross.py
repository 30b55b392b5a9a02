# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Recovering the hand-designed cross detector from data
#
# Before deep learning, a programmer chose filter weights by hand: a vertical line detector,
# a horizontal one, a cross detector. Here a 3x3 convolution starts from random weights and
# is fitted with Adam so that its response to synthetic images (noise plus random lines and
# crosses) matches the response of the hand-designed filter. If the data excites every
# direction of the 9-dimensional weight space, the only way to match the responses is to
# become the hand-designed filter, and that is what happens, to float precision.
#
# The student is one conv layer with one output channel per teacher filter. Its loss is the
# sum of the per-channel mean squared errors and Adam is elementwise, so each channel trains
# exactly as it would alone; fitting them together costs one compile instead of several.
# The same recovery is repeated with noisy targets at a few signal-to-noise ratios: the
# error grows as the noise does.
#
# Run: `python experiments/recover_cross.py [--quick] [--out DIR] [--seed N]`.

# %%
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

T_START = time.perf_counter()

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv
from jaxconv import data, filters, nn, recovery

TEACHERS = {
    "cross": filters.cross,
    "vertical_line": filters.vertical_line,
    "horizontal_line": filters.horizontal_line,
}
SNRS_DB = (40.0, 20.0, 10.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer steps, for tests")
    p.add_argument("--out", default="results/recover_cross", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    # parse_known_args: a notebook kernel passes its own flags
    return p.parse_known_args(argv)[0]


# %% [markdown]
# ## Data: synthetic images and the teachers' responses

# %%
@functools.partial(jax.jit, static_argnames=("n_images", "size"))
def make_problem(key, *, n_images=64, size=16):
    """Images [n, size, size, 1] and targets [n, channels, size-2, size-2] (clean + noisy).

    One compiled call: run eagerly, every random draw and conv would compile on its own.
    """
    k_img, k_noise = jax.random.split(key)
    # Noise as strong as the shapes (std 1) makes every 3x3 patch direction vary, so the
    # least-squares problem is well conditioned and the filter is identifiable.
    images = data.line_images(k_img, n_images, size, noise=1.0)[..., None]
    bank = filters.stack([make() for make in TEACHERS.values()])
    clean = jaxconv.conv(images, bank)  # [n, h, w, 3]
    cross = clean[..., :1]
    noisy = []
    for i, snr in enumerate(SNRS_DB):
        std = jnp.std(cross) / 10 ** (snr / 20)
        noisy.append(cross + std * jax.random.normal(jax.random.fold_in(k_noise, i), cross.shape))
    targets = jnp.concatenate([clean, *noisy], axis=-1)
    return images, jnp.moveaxis(targets, -1, 1)  # channel-major targets: see `recover`


# %% [markdown]
# ## Fit: one compiled call runs every step

# %%
def recover(images, targets, *, key, steps):
    channels = targets.shape[1]
    student = nn.Stack([nn.Conv(channels, 3, use_bias=False)], names=["student"])
    params = student.init(key, images.shape)
    single = nn.Stack([nn.Conv(1, 3, use_bias=False)], names=["student"])

    def loss(p, batch):
        x, y = batch  # y: [n, channels, h, w]
        # Each output channel is its own 1 -> 1 filter, so the layer is applied per channel
        # with vmap: the same function as student.apply, but channel-major, which keeps
        # XLA's CPU loops over the large axes (about 2x faster here than [n, h, w, 6]).
        kernels = jnp.moveaxis(p["student"]["kernel"], -1, 0)[..., None]  # [c, 3, 3, 1, 1]
        pred = jax.vmap(lambda k: single.apply({"student": {"kernel": k}}, x)[..., 0])(kernels)
        per_channel = jnp.mean((pred - jnp.moveaxis(y, 1, 0)) ** 2, axis=(1, 2, 3))
        return jnp.sum(per_channel)

    schedule = optax.exponential_decay(0.1, transition_steps=steps, decay_rate=1e-3)
    result = jaxconv.fit(loss, params, optax.adam(schedule), (images, targets), steps=steps)
    return student, result


# %%
def main(argv=None):
    args = parse_args(argv)
    steps = args.steps or (600 if args.quick else 1000)
    key = jax.random.key(args.seed)
    k_data, k_init = jax.random.split(key)
    images, targets = make_problem(k_data)
    student, result = recover(images, targets, key=k_init, steps=steps)
    learned = np.asarray(result.params["student"]["kernel"])  # [3, 3, 1, channels]

    names = list(TEACHERS)
    per_filter = {}
    for c, name in enumerate(names):
        ref = np.asarray(TEACHERS[name]())
        got = learned[:, :, 0, c]
        match = recovery.align(got, ref, allow_flip=False)[0]
        per_filter[name] = {
            "max_abs_error": float(np.max(np.abs(got - ref))),
            "cosine": match.cosine,
            "steps": result.steps,
            "wall_s": result.wall_s,
            "compile_s": result.compile_s,
            "steps_per_s": result.steps_per_s,
        }
    cross = np.asarray(filters.cross())
    noise = [
        {
            "snr_db": snr,
            "max_abs_error": float(np.max(np.abs(learned[:, :, 0, len(names) + i] - cross))),
            "cosine": recovery.align(learned[:, :, 0, len(names) + i], cross)[0].cosine,
        }
        for i, snr in enumerate(SNRS_DB)
    ]

    print()
    print(f"{'filter':<16} {'max |learned - hand|':>21} {'cosine':>10} {'steps':>6} "
          f"{'fit s':>7} {'compile s':>9}")
    for name, m in per_filter.items():
        print(f"{name:<16} {m['max_abs_error']:>21.2e} {m['cosine']:>10.7f} {m['steps']:>6} "
              f"{m['wall_s']:>7.3f} {m['compile_s']:>9.3f}")
    for m in noise:
        label = f"cross @ {m['snr_db']:g} dB"
        print(f"{label:<16} {m['max_abs_error']:>21.2e} {m['cosine']:>10.7f}")
    print(f"\n{result.steps} Adam steps at {result.steps_per_s:,.0f} steps/s "
          f"({1e6 / result.steps_per_s:.1f} us/step), conv lowering: "
          f"{jaxconv.plan(images.shape, learned.shape).algorithm}")

    os.makedirs(args.out, exist_ok=True)
    figures = [] if args.no_figures else write_figures(args.out, images, learned, result)
    metrics = {
        "filters": per_filter,
        "noise": noise,
        "steps": result.steps,
        "steps_per_s": result.steps_per_s,
        "us_per_step": 1e6 / result.steps_per_s,
        "compile_s": result.compile_s,
        "fit_wall_s": result.wall_s,
        "final_loss": float(result.losses[-1]),
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
# ## Pictures: inputs, filters, feature maps before and after ReLU, the loss curve

# %%
def write_figures(out, images, learned, result):
    from jaxconv import viz

    names = list(TEACHERS)
    hand = {n: np.asarray(TEACHERS[n]()) for n in names}
    got = {n: learned[:, :, 0, i] for i, n in enumerate(names)}
    paths = [
        viz.image_grid({"inputs": list(np.asarray(images)[:6, :, :, 0])},
                       os.path.join(out, "inputs.png"), title="training images", cmap="gray",
                       symmetric=False),
        viz.filters_side_by_side(hand, got, os.path.join(out, "filters.png")),
    ]
    img = data.cross_image()[None, :, :, None]
    # one conv and one ReLU over both banks (hand-designed, then learned)
    both = filters.stack([*hand.values(), *got.values()])
    maps = np.asarray(jaxconv.conv(img, both, padding="SAME")[0])
    relu = np.asarray(jaxconv.relu(maps))
    k = len(names)
    rows = {}
    for j, label in enumerate(("hand", "learned")):
        rows[f"{label}: conv"] = [maps[..., j * k + i] for i in range(k)]
        rows[f"{label}: ReLU"] = [relu[..., j * k + i] for i in range(k)]
    paths.append(viz.image_grid(rows, os.path.join(out, "feature_maps.png"), annotate=True,
                                title="responses to the 5x5 cross image", col_titles=names))
    paths.append(viz.loss_curves({"sum of channel MSEs": result.losses},
                                 os.path.join(out, "loss.png")))
    return [os.path.basename(p) for p in paths]


# %%
if __name__ == "__main__":
    main(sys.argv[1:])
