# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A small CNN learns its own features
#
# The other experiments hand the network a target filter. Here nobody does: a small CNN
# (conv 3x3 x8 + ReLU, 2x2 max-pool, conv 3x3 x16 + ReLU, global max-pool, dense) learns to
# classify synthetic 16x16 images into *nothing*, *vertical line*, *horizontal line* and
# *cross*, each shape shifted by up to 3 pixels and covered in Gaussian noise. Then we look
# at what its first layer learned and ask which classical hand-designed 3x3 filter
# (`jaxconv.filters.bank()`: line detectors, Sobel, Prewitt, Scharr, Laplacian, ..., plus
# 3x3 box and Gaussian (sigma 1) blurs) each learned filter most resembles, as people do
# with the first-layer filters of trained CNNs.
#
# **How the comparison is done, and its limits.** Each learned 3x3 kernel is compared with
# every classical filter by cosine similarity. A ReLU follows the filter, so a filter and
# its negative detect different things (bright-on-dark vs dark-on-bright): the cosine is
# signed and the best match is the one with the largest signed cosine; the best match up to
# sign is reported next to it. No mean is removed: a learned filter's DC part responds to
# local brightness, which is real behaviour. Nothing forces the network towards classical
# filters; many learned filters are mixtures and their best cosine is modest. The numbers
# say how close they are.
#
# Run: `python experiments/learn_features.py [--quick] [--out DIR] [--seed N]`.

# %%
from __future__ import annotations

import argparse
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

CLASS_NAMES = data.CLASS_NAMES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="A small CNN learns features on synthetic shapes.")
    p.add_argument("--quick", action="store_true", help="fewer steps, for tests")
    p.add_argument("--out", default="results/learn_features", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    # parse_known_args: a notebook kernel passes its own flags
    return p.parse_known_args(argv)[0]


# %% [markdown]
# ## The model

# %%
MODEL = nn.Stack(
    [
        nn.Conv(8, 3, padding="SAME"),
        nn.Activation("relu"),
        nn.MaxPool(2),
        nn.Conv(16, 3),
        nn.Activation("relu"),
        nn.GlobalPool("max"),
        nn.Dense(len(CLASS_NAMES)),
    ],
    names=["conv1", "relu1", "pool1", "conv2", "relu2", "global_pool", "logits"],
)


def loss_fn(params, batch):
    x, labels = batch
    logits = MODEL.apply(params, x)
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


@jax.jit
def evaluate(params, x):
    """Predicted classes [n] and the first layer's feature maps after ReLU [n, H, W, 8]."""
    logits, features = MODEL.apply(params, x, return_features=True)
    return jnp.argmax(logits, axis=-1), features["relu1"]


# %% [markdown]
# ## Data: jittered, noisy shapes (train and a held-out test set)

# %%
def make_data(key, n, *, size=16, jitter=3, noise=0.2):
    images, labels = data.shape_dataset(key, n, size, jitter=jitter, noise=noise)
    return images[..., None], labels


# %% [markdown]
# ## Which classical filter does each learned filter resemble?

# %%
def classical_bank():
    """Every 3x3 classical filter: the zero-argument bank plus 3x3 box and Gaussian blurs."""
    bank = {name: np.asarray(f) for name, f in filters.bank().items()}
    # blurs take a size: without them a learned bright-spot detector has nothing to match
    bank["box_3x3"] = np.asarray(filters.box(3))
    bank["gaussian_3x3"] = np.asarray(filters.gaussian(1.0, size=3))
    return bank


def match_filters(kernel):
    """For each learned first-layer filter, the classical 3x3 filter it is closest to."""
    bank = classical_bank()
    out = []
    for i in range(kernel.shape[-1]):
        f = np.asarray(kernel[:, :, 0, i])
        signed = {n: recovery.align(f, ref, allow_flip=False)[0].cosine for n, ref in bank.items()}
        best = max(signed, key=signed.get)
        best_abs = max(signed, key=lambda n: abs(signed[n]))
        out.append({
            "filter": i,
            "best": best,
            "cosine": signed[best],
            "best_up_to_sign": best_abs,
            "cosine_up_to_sign": signed[best_abs],
        })
    return out


# %%
def main(argv=None):
    args = parse_args(argv)
    steps = args.steps or (300 if args.quick else 1500)
    n_train, n_test, batch_size, lr = 2048, 1024, 64, 1e-2
    key = jax.random.key(args.seed)
    k_data, k_init, k_fit = jax.random.split(key, 3)
    # one draw (one compile), split into a training and a held-out test set
    x_all, y_all = make_data(k_data, n_train + n_test)
    x_train, y_train, x_test, y_test = (x_all[:n_train], y_all[:n_train], x_all[n_train:],
                                        y_all[n_train:])

    # XLA CPU takes ~10 s to compile partitionable threefry for a (3, 3, 8, 16) kernel (a
    # flat draw compiles in ~0.5 s); the classic threefry draws equally random numbers
    with jax.threefry_partitionable(False):
        params = jax.jit(MODEL.init, static_argnums=1)(k_init, x_train[:batch_size].shape)
    result = jaxconv.fit(loss_fn, params, optax.adam(lr), (x_train, y_train), steps=steps,
                         key=k_fit, batch_size=batch_size)

    pred, maps = evaluate(result.params, x_test)
    pred = np.asarray(pred)
    truth = np.asarray(y_test)
    confusion = np.zeros((len(CLASS_NAMES),) * 2, int)
    np.add.at(confusion, (truth, pred), 1)
    accuracy = float(np.mean(pred == truth))
    per_class = {n: float(confusion[c, c] / max(confusion[c].sum(), 1))
                 for c, n in enumerate(CLASS_NAMES)}
    kernel = np.asarray(result.params["conv1"]["kernel"])
    matches = match_filters(kernel)

    print(f"\n{steps} Adam steps, batch {batch_size} of {n_train} images: held-out accuracy "
          f"{accuracy:.1%} on {n_test} images")
    print("per class: " + ", ".join(f"{n} {a:.1%}" for n, a in per_class.items()))
    print(f"{'learned filter':<15} {'closest classical':<20} {'cosine':>7}   "
          f"{'up to sign':<20} {'cosine':>7}")
    for m in matches:
        print(f"#{m['filter']:<14} {m['best']:<20} {m['cosine']:>7.3f}   "
              f"{m['best_up_to_sign']:<20} {m['cosine_up_to_sign']:>7.3f}")
    print(f"fit: {result.wall_s:.2f} s ({result.steps_per_s:,.0f} steps/s), "
          f"compile {result.compile_s:.2f} s")

    os.makedirs(args.out, exist_ok=True)
    figures = [] if args.no_figures else write_figures(
        args.out, result, x_test, y_test, np.asarray(maps), kernel, matches, confusion)
    metrics = {
        "accuracy": accuracy,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "class_names": list(CLASS_NAMES),
        "filter_matches": matches,
        "steps": result.steps,
        "batch_size": batch_size,
        "n_train": n_train,
        "n_test": n_test,
        "learning_rate": lr,
        "final_loss": float(result.losses[-1]),
        "wall_s": result.wall_s,
        "compile_s": result.compile_s,
        "steps_per_s": result.steps_per_s,
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
# ## Pictures: examples, learned vs classical filters, feature maps, confusion, loss
#
# What a full run (seed 0, 1500 steps) showed: 100% held-out accuracy. One first-layer
# filter is close to the classical vertical line detector (cosine 0.95), two resemble
# `prewitt_y` (a horizontal edge, bright below; ~0.7), three are bright-spot detectors
# closest to a box or Gaussian blur (0.69-0.85), and the rest are mixtures (<= 0.55). The
# task is easy enough that the network need not find clean classical filters; the feature
# maps show several of them responding to both line orientations.

# %%
def write_figures(out, result, x_test, y_test, maps, kernel, matches, confusion):
    from jaxconv import viz

    labels = np.asarray(y_test)
    examples = {
        name: [np.asarray(x_test[i, :, :, 0]) for i in np.flatnonzero(labels == c)[:5]]
        for c, name in enumerate(CLASS_NAMES)
    }
    paths = [viz.image_grid(examples, os.path.join(out, "examples.png"), cmap="gray",
                            symmetric=False, title="held-out examples, one row per class")]
    bank = classical_bank()
    keys = [f"#{m['filter']}: {m['best']} ({m['cosine']:+.2f})" for m in matches]
    paths.append(viz.filters_side_by_side(
        {k: np.asarray(bank[m["best"]]) for k, m in zip(keys, matches, strict=True)},
        {k: kernel[:, :, 0, m["filter"]] for k, m in zip(keys, matches, strict=True)},
        os.path.join(out, "filters.png"),
        title="closest classical filter (top, signed cosine) vs learned first-layer filter "
              "(bottom)",
    ))
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(len(CLASS_NAMES))]
    rows = {
        name: [np.asarray(x_test[i, :, :, 0])] + [maps[i, :, :, k] for k in range(maps.shape[-1])]
        for i, name in zip(first, CLASS_NAMES, strict=True)
    }
    paths.append(viz.image_grid(rows, os.path.join(out, "feature_maps.png"), cmap="viridis",
                                symmetric=False,
                                title="input, then the 8 first-layer feature maps after ReLU"))
    paths.append(viz.confusion_matrix(confusion, CLASS_NAMES,
                                      os.path.join(out, "confusion.png")))
    paths.append(viz.loss_curves({"cross-entropy (minibatch)": result.losses},
                                 os.path.join(out, "loss.png")))
    return [os.path.basename(p) for p in paths]


# %%
if __name__ == "__main__":
    main(sys.argv[1:])
