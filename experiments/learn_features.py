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
# learns to classify images, and then we look at what its first layer learned and ask which
# classical hand-designed 3x3 filter (`jaxconv.filters.bank()`: line detectors, Sobel,
# Prewitt, Scharr, Laplacian, ..., plus 3x3 box and Gaussian (sigma 1) blurs) each learned
# filter most resembles, as people do with the first-layer filters of trained CNNs.
#
# Two data sets, neither downloaded:
#
# 1. **synthetic shapes**: 16x16 images of *nothing*, a *vertical line*, a *horizontal
#    line* or a *cross*, each shifted by up to 3 pixels and covered in Gaussian noise;
# 2. **handwritten digits**: scikit-learn's bundled 8x8 digits (`load_digits`, 1797
#    images, 10 classes), scaled to [0, 1], split at random into training and held-out
#    images.
#
# **How the comparison is done, and its limits.** Each learned 3x3 kernel is compared with
# every classical filter by cosine similarity. A ReLU follows the filter, so a filter and
# its negative detect different things (bright-on-dark vs dark-on-bright): the cosine is
# signed and the best match is the one with the largest signed cosine; the best match up to
# sign is reported next to it. No mean is removed: a learned filter's DC part responds to
# local brightness, which is real behaviour. Nothing forces the network towards classical
# filters; many learned filters are mixtures and their best cosine is modest. The printed
# numbers say how close they are.
#
# The same file runs as a script: `python experiments/learn_features.py [--quick]
# [--out DIR] [--seed N] [--steps N] [--no-figures]`; it writes `metrics.json` and figures
# to `results/learn_features/` in the checkout, or to `--out`. In a notebook the flags come
# from the environment variable `JAXCONV_EXPERIMENT_ARGS`.

# %% [markdown]
# ## 1. Training and evaluation, shared by both data sets

# %%
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv
from jaxconv import data, filters, nn, recovery, viz
from jaxconv._experiment import shown, start
from jaxconv._tasks import SHAPES_MODEL, make_shapes

CLASS_NAMES = data.CLASS_NAMES
# full float32 products in every conv and dot (TF32 on recent NVIDIA GPUs otherwise)
PRECISION = "highest"
EXP = start("learn_features", "A small CNN learns features (shapes, digits).",
            quick="fewer steps, for tests", options=("steps",))
STEPS = EXP.args.steps or (300 if EXP.args.quick else 1500)
print(f"{STEPS} Adam steps per data set, seed {EXP.args.seed}, writing to {shown(EXP.out)}")


def loss_for(model):
    def loss(params, batch):
        x, labels = batch
        logits = model.apply(params, x)
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))

    return loss


def train(model, x, y, *, key, steps, batch_size=64, lr=1e-2):
    k_init, k_fit = jax.random.split(key)
    # XLA CPU takes ~10 s to compile partitionable threefry for a (3, 3, 8, 16) kernel (a
    # flat draw compiles in ~0.5 s); the classic threefry draws equally random numbers
    with jax.threefry_partitionable(False):
        params = jax.jit(model.init, static_argnums=1)(k_init, x[:batch_size].shape)
    with jax.default_matmul_precision(PRECISION):
        return jaxconv.fit(loss_for(model), params, optax.adam(lr), (x, y), steps=steps,
                           key=k_fit, batch_size=batch_size, progress=False)


def evaluate(model, params, x, y, n_classes):
    """Predictions, the confusion matrix, accuracy, and layer 1's maps after ReLU."""
    with jax.default_matmul_precision(PRECISION):
        logits, feats = jax.jit(model.apply, static_argnames="return_features")(
            params, x, return_features=True)
    pred, truth = np.asarray(jnp.argmax(logits, axis=-1)), np.asarray(y)
    confusion = np.zeros((n_classes, n_classes), int)
    np.add.at(confusion, (truth, pred), 1)
    return pred, confusion, float(np.mean(pred == truth)), np.asarray(feats["relu1"])


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


def print_matches(matches):
    print(f"{'learned filter':<15} {'closest classical':<20} {'cosine':>7}   "
          f"{'up to sign':<20} {'cosine':>7}")
    for m in matches:
        print(f"#{m['filter']:<14} {m['best']:<20} {m['cosine']:>7.3f}   "
              f"{m['best_up_to_sign']:<20} {m['cosine_up_to_sign']:>7.3f}")


def filter_figure(kernel, matches, title, *, most=8):
    """The ``most`` best-matching learned filters under their classical matches, each
    learned filter rescaled to its match's norm (the cosine ignores scale)."""
    bank = classical_bank()
    shown_ = sorted(matches, key=lambda m: -m["cosine"])[:most]
    keys = [f"#{m['filter']}: {m['best']}\n(cosine {m['cosine']:+.2f})" for m in shown_]
    refs = {k: np.asarray(bank[m["best"]]) for k, m in zip(keys, shown_, strict=True)}
    learned = {}
    for k, m in zip(keys, shown_, strict=True):
        f = kernel[:, :, 0, m["filter"]]
        learned[k] = f * np.linalg.norm(refs[k]) / max(np.linalg.norm(f), 1e-30)
    return viz.filters_side_by_side(refs, learned, title=title, scale="column")


# %% [markdown]
# ## 2. Synthetic shapes
#
# The model: conv 3x3 x8 + ReLU, 2x2 max-pool, conv 3x3 x16 + ReLU, global max-pool, dense.
# 2048 training images, 1024 held out.

# %%
K_SHAPES, K_DIGITS = jax.random.split(jax.random.key(EXP.args.seed))
k_data, k_train = jax.random.split(K_SHAPES)
n_train, n_test = 2048, 1024
x_all, y_all = make_shapes(k_data, n_train + n_test)  # one draw, split in two
SH = {"x_train": x_all[:n_train], "y_train": y_all[:n_train],
      "x_test": x_all[n_train:], "y_test": y_all[n_train:]}
SH["result"] = train(SHAPES_MODEL, SH["x_train"], SH["y_train"], key=k_train, steps=STEPS)
_, SH["confusion"], SH["accuracy"], SH["maps"] = evaluate(
    SHAPES_MODEL, SH["result"].params, SH["x_test"], SH["y_test"], len(CLASS_NAMES))
SH["kernel"] = np.asarray(SH["result"].params["conv1"]["kernel"])
SH["matches"] = match_filters(SH["kernel"])
print(f"shapes: held-out accuracy {SH['accuracy']:.1%} on {n_test} images after "
      f"{STEPS} steps ({SH['result'].wall_s:.2f} s of fitting)")
print_matches(SH["matches"])

# %%
if EXP.draw:
    labels = np.asarray(SH["y_test"])
    EXP.show(viz.image_grid(
        {name: [np.asarray(SH["x_test"][i, :, :, 0]) for i in np.flatnonzero(labels == c)[:5]]
             for c, name in enumerate(CLASS_NAMES)},
        cmap="gray", symmetric=False, title="held-out examples, one row per class"),
        "examples.png")
    EXP.show(filter_figure(SH["kernel"], SH["matches"],
                           "shapes: closest classical filter (top) vs learned first-layer filter "
                           "(bottom, rescaled)"), "filters.png")
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(len(CLASS_NAMES))]
    EXP.show(viz.image_grid(
        {name: [SH["maps"][i, :, :, k] for k in range(SH["maps"].shape[-1])]
             for i, name in zip(first, CLASS_NAMES, strict=True)},
        cmap="viridis", symmetric=False, scale="figure", colorbar=True,
        col_titles=[f"map {k}" for k in range(SH["maps"].shape[-1])],
        title="the 8 first-layer feature maps after ReLU, one colour scale"),
        "feature_maps.png")
    EXP.show(viz.confusion_matrix(SH["confusion"], CLASS_NAMES), "confusion.png")
    EXP.show(viz.loss_curves({"cross-entropy (minibatch)": SH["result"].losses}), "loss.png")

# %% [markdown]
# ## 3. Handwritten digits (scikit-learn's bundled 8x8 set)
#
# The model: conv 3x3 x16 (SAME) + ReLU, 2x2 max-pool (4x4), conv 3x3 x32 (SAME) + ReLU,
# flatten, dense to 10 classes. 500 random images are held out; the rest train.

# %%
DIGITS_MODEL = nn.Stack(
    [nn.Conv(16, 3, padding="SAME"), nn.Activation("relu"), nn.MaxPool(2),
     nn.Conv(32, 3, padding="SAME"), nn.Activation("relu"), nn.Flatten(), nn.Dense(10)],
    names=["conv1", "relu1", "pool1", "conv2", "relu2", "flatten", "logits"],
)
N_DIGITS_TEST = 500


def load_digits_split(seed, n_test=N_DIGITS_TEST):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1] in [0, 1]
    y = d.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    test, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[test], y[test]


DG = dict(zip(("x_train", "y_train", "x_test", "y_test"),
              load_digits_split(EXP.args.seed), strict=True))
DG["result"] = train(DIGITS_MODEL, DG["x_train"], DG["y_train"], key=K_DIGITS,
                     steps=STEPS)
_, DG["confusion"], DG["accuracy"], DG["maps"] = evaluate(
    DIGITS_MODEL, DG["result"].params, DG["x_test"], DG["y_test"], 10)
DG["kernel"] = np.asarray(DG["result"].params["conv1"]["kernel"])
DG["matches"] = match_filters(DG["kernel"])
print(f"digits: held-out accuracy {DG['accuracy']:.1%} on {len(DG['y_test'])} images "
      f"({len(DG['y_train'])} trained on) after {STEPS} steps "
      f"({DG['result'].wall_s:.2f} s of fitting)")
print_matches(DG["matches"])

# %%
if EXP.draw:
    EXP.show(filter_figure(DG["kernel"], DG["matches"],
                           "digits: the 8 closest pairs, classical (top) vs learned first-layer "
                           "filter (bottom, rescaled)"), "digits_filters.png")
    EXP.show(viz.confusion_matrix(DG["confusion"], [str(i) for i in range(10)]),
             "digits_confusion.png")

# %% [markdown]
# ## 4. Metrics

# %%
def block(d, names):
    per_class = {n: float(d["confusion"][c, c] / max(d["confusion"][c].sum(), 1))
                 for c, n in enumerate(names)}
    return {
        "accuracy": d["accuracy"], "per_class_accuracy": per_class,
        "confusion": d["confusion"].tolist(), "class_names": list(names),
        "filter_matches": d["matches"], "n_train": int(len(d["y_train"])),
        "n_test": int(len(d["y_test"])), "final_loss": float(d["result"].losses[-1]),
        "wall_s": d["result"].wall_s, "compile_s": d["result"].compile_s,
    }


shapes = block(SH, CLASS_NAMES)
metrics = EXP.finish({
    **shapes,  # the synthetic shapes' numbers at the top level
    "digits": block(DG, [str(i) for i in range(10)]),
    "steps": SH["result"].steps,
    "steps_per_s": SH["result"].steps_per_s,
    "batch_size": 64,
    "learning_rate": 1e-2,
    "precision": PRECISION,
})
