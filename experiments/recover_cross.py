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
# a horizontal one, a cross detector. This notebook first shows those filters at work (a
# convolution, then a ReLU), then starts a 3x3 convolution from random weights and fits it
# with Adam so that its response to synthetic images (noise plus random lines and crosses)
# matches the response of the hand-designed filter. If the data excites every direction of
# the 9-dimensional weight space, the only way to match the responses is to become the
# hand-designed filter, and that is what happens, to float precision.
#
# The same file runs as a script with the same steps and outputs:
# `python experiments/recover_cross.py [--quick] [--out DIR] [--seed N] [--steps N]
# [--no-figures]`. It writes `metrics.json` and four figures to `results/recover_cross/` in
# the checkout (whatever the working directory), or to `--out`. In a notebook the flags come
# from the environment variable `JAXCONV_EXPERIMENT_ARGS` (e.g. `--quick`).

# %% [markdown]
# ## 1. The hand-designed filters, a convolution and a ReLU
#
# Each filter is zero-sum, so a flat region gives 0. On the 5x5 cross image the vertical and
# horizontal line detectors fire along their line (4) and go negative beside it; the cross
# detector gives 4 only at the crossing. A ReLU then keeps the positive responses: that is
# all the cross detector needs to report one intersection.

# %%
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv
from jaxconv import data, filters, nn, recovery, viz
from jaxconv._experiment import in_notebook, shown, start

TEACHERS = {
    "cross": filters.cross,
    "vertical_line": filters.vertical_line,
    "horizontal_line": filters.horizontal_line,
}
SNRS_DB = (40.0, 20.0, 10.0)
EXP = start("recover_cross", "Recover the hand-designed cross detector.",
            quick="fewer steps, for tests", options=("steps",))
STEPS = EXP.args.steps or (600 if EXP.args.quick else 1000)
KEY_DATA, KEY_INIT = jax.random.split(jax.random.key(EXP.args.seed))
print(f"{STEPS} steps, seed {EXP.args.seed}, writing to {shown(EXP.out)}")


def response_rows(bank: dict[str, np.ndarray], label: str) -> dict[str, list[np.ndarray]]:
    """Rows "label: conv" and "label: ReLU": the bank's responses to the 5x5 cross image."""
    image = data.cross_image()[None, :, :, None]
    maps = np.asarray(jaxconv.conv(image, filters.stack(list(bank.values())),
                                   padding="SAME")[0])
    return {
        f"{label}: conv": [maps[..., i] for i in range(maps.shape[-1])],
        f"{label}: ReLU": [np.maximum(maps[..., i], 0) for i in range(maps.shape[-1])],
    }


HAND = {n: np.asarray(make()) for n, make in TEACHERS.items()}
if in_notebook():
    EXP.show(viz.image_grid({"filter": list(HAND.values())}, annotate=True,
                            col_titles=list(HAND), title="the hand-designed filters"))
    EXP.show(viz.image_grid({"input": [np.asarray(data.cross_image())]}, annotate=True,
                            cmap="gray", symmetric=False, title="the 5x5 cross image"))
    EXP.show(viz.image_grid(response_rows(HAND, "hand"), annotate=True, col_titles=list(HAND),
                            title="their responses (SAME padding), before and after ReLU"))

# %% [markdown]
# ## 2. The training data: synthetic images and the teachers' responses
#
# 64 images of 16x16 pixels: random vertical lines, horizontal lines and crosses (value 1),
# plus Gaussian noise of standard deviation 1. The noise is as strong as the shapes on
# purpose: it makes every 3x3 patch direction vary, so the least-squares problem is well
# conditioned and the filter is identifiable. The first row shows the same draws without
# the noise (same key, `noise=0`), so the lines are visible; the second what the model
# sees. The targets are the three teachers' responses, and the cross detector's response
# again with Gaussian noise added at 40, 20 and 10 dB signal-to-noise ratio.

# %%
@functools.partial(jax.jit, static_argnames=("n_images", "size"))
def make_problem(key, *, n_images=64, size=16):
    """Images [n, size, size, 1], the same images without noise, and the targets
    [n, channels, size-2, size-2] (3 clean teachers, then the cross at each SNR).

    One compiled call: run eagerly, every random draw and conv would compile on its own.
    """
    k_img, k_noise = jax.random.split(key)
    images = data.line_images(k_img, n_images, size, noise=1.0)[..., None]
    shapes = data.line_images(k_img, n_images, size, noise=0.0)  # same draws, no noise
    bank = filters.stack([make() for make in TEACHERS.values()])
    clean = jaxconv.conv(images, bank)  # [n, h, w, 3]
    cross = clean[..., :1]
    noisy = []
    for i, snr in enumerate(SNRS_DB):
        std = jnp.std(cross) / 10 ** (snr / 20)
        noisy.append(cross + std * jax.random.normal(jax.random.fold_in(k_noise, i), cross.shape))
    targets = jnp.concatenate([clean, *noisy], axis=-1)
    return images, shapes, jnp.moveaxis(targets, -1, 1)  # channel-major targets: see `loss`


images, shapes, targets = make_problem(KEY_DATA)
print(f"images {images.shape}, targets {targets.shape} (channel-major)")
if EXP.draw:
    EXP.show(viz.image_grid(
        {"shapes (no noise)": list(np.asarray(shapes)[:6]),
             "as trained (noise std 1)": list(np.asarray(images)[:6, :, :, 0])},
        cmap="gray", symmetric=False, scale="row",
        title="training images: the lines and crosses, and the same images with noise"),
        "inputs.png")

# %% [markdown]
# ## 3. Learning the weights
#
# The student is one conv layer with one output channel per target (6), from random
# weights. Its loss is the sum of the per-channel mean squared errors and Adam is
# elementwise, so each channel trains exactly as it would alone; fitting them together costs
# one compile instead of six. `jaxconv.fit` runs every step in one compiled call.

# %%
SINGLE = nn.Stack([nn.Conv(1, 3, use_bias=False)], names=["student"])


def loss(p, batch):
    """Sum over channels of the mean squared error; ``y``: [n, channels, h, w]."""
    x, y = batch
    # Each output channel is its own 1 -> 1 filter, so the layer is applied per channel
    # with vmap: the same function as the 6-channel layer's apply, but channel-major, which
    # keeps XLA's CPU loops over the large axes (about 2x faster here than [n, h, w, 6]).
    kernels = jnp.moveaxis(p["student"]["kernel"], -1, 0)[..., None]  # [c, 3, 3, 1, 1]
    pred = jax.vmap(lambda k: SINGLE.apply({"student": {"kernel": k}}, x)[..., 0])(kernels)
    per_channel = jnp.mean((pred - jnp.moveaxis(y, 1, 0)) ** 2, axis=(1, 2, 3))
    return jnp.sum(per_channel)


def recover(images, targets, *, key, steps):
    student = nn.Stack([nn.Conv(targets.shape[1], 3, use_bias=False)], names=["student"])
    params = student.init(key, images.shape)
    schedule = optax.exponential_decay(0.1, transition_steps=steps, decay_rate=1e-3)
    return jaxconv.fit(loss, params, optax.adam(schedule), (images, targets), steps=steps)


result = recover(images, targets, key=KEY_INIT, steps=STEPS)
learned = np.asarray(result.params["student"]["kernel"])  # [3, 3, 1, channels]
print(f"{result.steps} Adam steps at {result.steps_per_s:,.0f} steps/s "
      f"({1e6 / result.steps_per_s:.1f} us/step; compile {result.compile_s:.2f} s), "
      f"conv lowering: {jaxconv.plan(images.shape, learned.shape).algorithm}")

# %% [markdown]
# ## 4. Learned vs hand-designed
#
# Each learned filter against its teacher: the largest elementwise difference and the
# cosine similarity (`jaxconv.recovery.align`, no flips allowed).

# %%
names = list(TEACHERS)
per_filter = {}
for c, name in enumerate(names):
    got = learned[:, :, 0, c]
    per_filter[name] = {
        "max_abs_error": float(np.max(np.abs(got - HAND[name]))),
        "cosine": recovery.align(got, HAND[name], allow_flip=False)[0].cosine,
        "steps": result.steps,
        "wall_s": result.wall_s,
        "compile_s": result.compile_s,
        "steps_per_s": result.steps_per_s,
    }
print(f"{'filter':<16} {'max |learned - hand|':>21} {'cosine':>10} {'steps':>6} "
      f"{'fit s':>7} {'compile s':>9}")
for name, m in per_filter.items():
    print(f"{name:<16} {m['max_abs_error']:>21.2e} {m['cosine']:>10.7f} {m['steps']:>6} "
          f"{m['wall_s']:>7.3f} {m['compile_s']:>9.3f}")
got = {n: learned[:, :, 0, i] for i, n in enumerate(names)}
if EXP.draw:
    EXP.show(viz.filters_side_by_side(HAND, got), "filters.png")
    EXP.show(viz.image_grid({**response_rows(HAND, "hand"), **response_rows(got, "learned")},
                            annotate=True, col_titles=names,
                            title="responses to the 5x5 cross image (SAME padding)"),
             "feature_maps.png")

# %% [markdown]
# ## 5. Noisy targets, and the loss floor they set
#
# With noise in the targets no filter can reach zero loss: the best a filter can do is the
# hand-designed one, whose loss on the noisy channels is the noise's own mean square. The
# loss curve below flattens at that floor (the dashed line: the same loss evaluated with the
# teachers' own kernels), a little below it in fact, since 9 weights fitted to 12,544 noisy
# values absorb a little of the noise. The learned cross filters stay close to the teacher,
# further from it as the noise grows.

# %%
cross = HAND["cross"]
noise = [
    {
        "snr_db": snr,
        "max_abs_error": float(np.max(np.abs(learned[:, :, 0, len(names) + i] - cross))),
        "cosine": recovery.align(learned[:, :, 0, len(names) + i], cross)[0].cosine,
    }
    for i, snr in enumerate(SNRS_DB)
]
for m in noise:
    label = f"cross @ {m['snr_db']:g} dB"
    print(f"{label:<16} {m['max_abs_error']:>21.2e} {m['cosine']:>10.7f}")
teacher_kernel = filters.stack([*HAND.values(), *[cross] * len(SNRS_DB)])
floor = float(loss({"student": {"kernel": teacher_kernel}}, (images, targets)))
print(f"final loss {float(result.losses[-1]):.4f}; the teachers' own loss on these "
      f"targets (the noise floor) {floor:.4f}")
if EXP.draw:
    EXP.show(viz.loss_curves(
        {"sum of channel MSEs": result.losses},
        hlines={f"noise floor {floor:.3f} (the teachers' loss)": floor},
        title="training loss: it flattens at the noisy targets' floor"), "loss.png")

# %% [markdown]
# ## 6. Metrics
#
# Everything above goes to `metrics.json` next to the figures.

# %%
metrics = EXP.finish({
    "filters": per_filter,
    "noise": noise,
    "steps": result.steps,
    "steps_per_s": result.steps_per_s,
    "us_per_step": 1e6 / result.steps_per_s,
    "compile_s": result.compile_s,
    "fit_wall_s": result.wall_s,
    "final_loss": float(result.losses[-1]),
    "noise_floor_loss": floor,
})
