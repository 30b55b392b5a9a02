# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Convolution, step by step
#
# The tutorial jaxconv grew from, section by section, each step computed with jaxconv and
# checked against numpy: convolution of two sequences (flip, shift, multiply, add), the same
# without the flip as image processing uses it, a 3x3 kernel sliding over a 4x4 matrix, the
# 5x5 cross image and its line features, the line and cross detectors, activation functions,
# stacking two layers, and finally learning the weights by gradient descent.
#
# ## 1. Convolution of two sequences
#
# Discrete convolution flips one sequence, shifts it along the other, multiplies term by term
# and adds: `(f * g)[n] = sum_m f[m] g[n - m]`. Image processing and deep learning skip the
# flip (that is cross-correlation). `jaxconv.conv(..., flip=True)` is the mathematical
# convolution, the default `flip=False` the cross-correlation; with `padding="FULL"` both give
# every overlap, as `numpy.convolve` and `numpy.correlate` with `mode="full"` do.

# %%
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.animation import FuncAnimation
from matplotlib.patches import Rectangle

import jaxconv
from jaxconv import _tasks, _widgets, data, filters, viz
from jaxconv._experiment import in_notebook, start

EXP = start("convolution_tutorial", "The convolution tutorial, step by step.",
            quick="fewer learning steps and frames, for tests")
QUICK = EXP.args.quick

f = np.array([1.0, 2.0, 3.0, 0.0, -1.0], np.float32)
g = np.array([0.0, 1.0, 0.5], np.float32)
# jaxconv takes a batch and channels: x [N, W, C], w [k, C_in, C_out]
x1, w1 = f[None, :, None], g[:, None, None]
conv_1d = np.asarray(jaxconv.conv(x1, w1, padding="FULL", flip=True))[0, :, 0]
corr_1d = np.asarray(jaxconv.conv(x1, w1, padding="FULL"))[0, :, 0]
print("with the flip (convolution):     ", conv_1d, "numpy.convolve:", np.convolve(f, g))
print("without it (cross-correlation):  ", corr_1d, "numpy.correlate:",
      np.correlate(f, g, mode="full"))
ERR_1D = max(float(np.max(np.abs(conv_1d - np.convolve(f, g)))),
             float(np.max(np.abs(corr_1d - np.correlate(f, g, mode="full")))))
print(f"largest difference from numpy: {ERR_1D:.1e}")


# %% [markdown]
# ## 2. A 3x3 kernel sliding over a 4x4 matrix
#
# The kernel is placed over the top-left corner; the nine overlapping numbers are multiplied
# and added: that sum is the first output. Then the kernel moves one step right, and so on:
# a 4x4 input and a 3x3 kernel give a 2x2 output (VALID padding). The animation shows the
# window (red), each product as it is added, and the running sum.

# %%
def animate(fig, draw, frames):
    """An animation that plays on a static page (matplotlib's to_jshtml)."""
    anim = FuncAnimation(fig, draw, frames=frames, interval=400, blit=False)
    html = anim.to_jshtml(default_mode="loop")
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(html))
    return html


def sliding_window(x, w):
    out = np.asarray(jaxconv.conv(jnp.asarray(x)[None, :, :, None],
                                  jnp.asarray(w)[:, :, None, None]))[0, :, :, 0]
    oh, ow = out.shape
    fig = viz._figure((8, 3))
    axes = fig.subplots(1, 3)
    steps = [(i, j, t) for i in range(oh) for j in range(ow) for t in range(9)]
    if QUICK:
        steps = steps[:9] + steps[-1:]

    def draw(n):
        i, j, t = steps[n]
        for ax in axes:
            ax.clear()
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].imshow(x, cmap="Blues")
        for (r, c), v in np.ndenumerate(x):
            axes[0].text(c, r, f"{v:g}", ha="center", va="center")
        axes[0].add_patch(Rectangle((j - 0.5, i - 0.5), 3, 3, fill=False, ec="red", lw=3))
        axes[0].set_title("input 4x4, window")
        prods = np.full((3, 3), np.nan)
        for k in range(t + 1):
            a, b = divmod(k, 3)
            prods[a, b] = x[i + a, j + b] * w[a, b]
        axes[1].imshow(np.nan_to_num(prods), cmap="Greys", vmin=-9, vmax=9)
        for (a, b), v in np.ndenumerate(prods):
            if not np.isnan(v):
                axes[1].text(b, a, f"{x[i + a, j + b]:g}x{w[a, b]:g}", ha="center",
                             va="center", fontsize=8)
        axes[1].set_title(f"products, running sum {np.nansum(prods):g}")
        shown = np.full(out.shape, np.nan)
        for (r, c), v in np.ndenumerate(out):
            if (r, c) < (i, j) or ((r, c) == (i, j) and t == 8):
                shown[r, c] = v
        axes[2].imshow(np.nan_to_num(shown), cmap="Greens")
        for (r, c), v in np.ndenumerate(shown):
            if not np.isnan(v):
                axes[2].text(c, r, f"{v:g}", ha="center", va="center")
        axes[2].set_title("output 2x2")

    return out, animate(fig, draw, len(steps))


X4 = np.arange(16, dtype=np.float32).reshape(4, 4) % 5
W3 = np.asarray(filters.cross())
OUT2, SLIDING_HTML = sliding_window(X4, W3)
ref = np.array([[np.sum(X4[i:i + 3, j:j + 3] * W3) for j in range(2)] for i in range(2)])
print("output", OUT2.tolist(), "== numpy loop:", bool(np.allclose(OUT2, ref)))


# %% [markdown]
# ## 3. An image is a matrix; the cross and its two features
#
# The 5x5 cross image: ones on the middle row and column. Its features are the vertical
# line and the horizontal line that make it up.

# %%
CROSS = np.asarray(data.cross_image())
VERTICAL = np.zeros_like(CROSS)
VERTICAL[:, 2] = CROSS[:, 2]
HORIZONTAL = np.zeros_like(CROSS)
HORIZONTAL[2, :] = CROSS[2, :]
EXP.show(viz.image_grid({"image": [CROSS, VERTICAL, HORIZONTAL]}, annotate=True, cmap="gray",
                        symmetric=False,
                        col_titles=["the cross", "feature: vertical", "feature: horizontal"]),
         "cross_features.png")

# %% [markdown]
# ## 4. The detectors and their outputs
#
# The vertical line detector, its transpose (the horizontal one) and the cross detector,
# each convolved with the cross image (SAME padding: the output has the image's size).

# %%
BANK = {"vertical_line": np.asarray(filters.vertical_line()),
        "horizontal_line": np.asarray(filters.horizontal_line()),
        "cross": np.asarray(filters.cross())}
MAPS = np.asarray(jaxconv.conv(jnp.asarray(CROSS)[None, :, :, None],
                               filters.stack(list(BANK.values())), padding="SAME"))[0]
OUTPUTS = {n: MAPS[..., i] for i, n in enumerate(BANK)}
EXP.show(viz.image_grid({"filter": list(BANK.values()), "output": list(OUTPUTS.values())},
                        annotate=True, col_titles=list(BANK)), "detectors.png")
print({n: float(o.max()) for n, o in OUTPUTS.items()})

# %% [markdown]
# ## 5. Activation functions, and what each does to the outputs
#
# Side by side, then applied to each detector's output: ReLU keeps the positive responses and
# removes the negative stray pixels around the lines.

# %%
ACTS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu"]
z = np.linspace(-4, 4, 201, dtype=np.float32)
fig = viz._figure((9, 2))
for ax, name in zip(fig.subplots(1, len(ACTS)), ACTS, strict=True):
    ax.plot(z, np.asarray(jaxconv.activation(name)(z)))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(name)
EXP.show(fig, "activations.png")
EXP.show(viz.image_grid(
    {name: [np.asarray(jaxconv.activation(name)(o)) for o in OUTPUTS.values()]
     for name in ("relu", "tanh", "sigmoid")},
    annotate=True, col_titles=list(OUTPUTS), scale="row"), "activated.png")

# %% [markdown]
# ### Try it: edit the kernel
#
# Below, the nine boxes hold a 3x3 kernel (the vertical line detector to start with); in
# Jupyter, change any value and the cross image's feature map and its ReLU redraw at once,
# every cell labelled with its number. Try the horizontal detector, a cross, or the centre
# weight alone. This page shows the picture of the starting kernel; to use the controls
# live, run the notebook in JupyterLab: `make lab` installs JupyterLab into the checkout's
# `.venv`, writes this tutorial as a notebook on the kernel "jaxconv (.venv)" and opens it;
# then run all cells (Run > Run All Cells).

# %%
if in_notebook():  # a live control needs a Jupyter kernel (ipywidgets: the notebooks extra)
    EXP.show(_widgets.kernel_editor(CROSS, BANK["vertical_line"]))

# %% [markdown]
# ## 6. Stacking two layers
#
# The line detectors (+ ReLU) feed a second 3x3 layer that adds the vertical channel's centre
# column and the horizontal channel's centre row, minus a threshold (+ ReLU): on this image
# it responds more strongly where a vertical and a horizontal line cross than on a line
# alone (the printed maxima). This is the teacher of `recover_stack`, whose threshold is set
# for noise images, not for these clean 0/1 pictures.

# %%
TEACHER_P = _tasks.teacher_params()
STACK_IN = {"cross": CROSS, "vertical only": VERTICAL, "horizontal only": HORIZONTAL}
rows = {}
for label, img in STACK_IN.items():
    out, feats = _tasks.TEACHER.apply(TEACHER_P, jnp.asarray(img)[None, :, :, None],
                                      return_features=True)
    rows[label] = [img, *np.moveaxis(np.asarray(feats["lines_relu"])[0], -1, 0),
                   np.asarray(out)[0, :, :, 0]]
    print(f"{label:>16}: stacked output max {float(np.max(out)):g}")
EXP.show(viz.image_grid(rows, annotate=True, scale="panel",
                        col_titles=["input", "layer 1: vertical", "layer 1: horizontal",
                                    "layer 2: crossing"]), "stacking.png")

# %% [markdown]
# ## 7. Learning the cross detector
#
# A random 3x3 kernel, trained by gradient descent (Adam) so that its outputs on noisy line
# images match the cross detector's. The animation shows the kernel at every recorded step
# next to the loss curve.

# %%
STEPS = 60 if QUICK else 300
K_DATA, K_INIT = jax.random.split(jax.random.key(EXP.args.seed))
IMAGES = data.line_images(K_DATA, 32, 12, noise=1.0)[..., None]
TARGET = jaxconv.conv(IMAGES, filters.stack([filters.cross()]))


def loss(w):
    return jnp.mean((jaxconv.conv(IMAGES, w[:, :, None, None]) - TARGET) ** 2)


@jax.jit
def learn(w0):
    opt = optax.adam(0.1)

    def step(carry, _):
        w, s = carry
        value, grad = jax.value_and_grad(loss)(w)
        updates, s = opt.update(grad, s)
        return (optax.apply_updates(w, updates), s), (w, value)

    _, (ws, losses) = jax.lax.scan(step, (w0, opt.init(w0)), length=STEPS)
    return ws, losses


KERNELS, LOSSES = map(np.asarray, learn(jax.random.normal(K_INIT, (3, 3))))
print(f"loss {LOSSES[0]:.3f} -> {LOSSES[-1]:.2e}; max |learned - cross| "
      f"{np.max(np.abs(KERNELS[-1] - W3)):.2e}")
fig = viz._figure((7, 3))
ax_k, ax_l = fig.subplots(1, 2)
frames = np.unique(np.geomspace(1, STEPS, 12 if QUICK else 40).astype(int)) - 1


def draw_learning(n):
    s = frames[n]
    ax_k.clear()
    ax_k.imshow(KERNELS[s], cmap="RdBu_r", vmin=-4, vmax=4)
    for (r, c), v in np.ndenumerate(KERNELS[s]):
        ax_k.text(c, r, f"{v:.2f}", ha="center", va="center")
    ax_k.set_title(f"kernel, step {s}")
    ax_k.set_xticks([])
    ax_k.set_yticks([])
    ax_l.clear()
    ax_l.semilogy(LOSSES)
    ax_l.plot(s, LOSSES[s], "ro")
    ax_l.set_title("loss")


LEARNING_HTML = animate(fig, draw_learning, len(frames))

# %% [markdown]
# In Jupyter, the slider below scrubs through every step of that run (the play button runs
# them in order): the kernel at that step, and the step marked on the loss curve. This page
# shows step 0.

# %%
if in_notebook():
    EXP.show(_widgets.learning_scrubber(KERNELS, LOSSES))

# %% [markdown]
# ## 8. Learning the 2-layer stack: 64 random starts
#
# Two layers are harder: the same-architecture student (2 layer-1 channels) from 64 random
# starts, trained at once (`jaxconv.fit(..., restarts=64)`), each restart scored as
# `recover_stack` scores it. Each square is one start: recovered, converging (both filters
# found, error still falling), negated, shifted or other.

# %%
STACK_STEPS = 60 if QUICK else 2000
XS, YS, XS_TEST, YS_TEST, _ = _tasks.make_problem(K_DATA, n_images=16, size=12)
SAME = _tasks.student(2)
FIT = _tasks.train(SAME, XS, YS, key=K_INIT, restarts=64, steps=STACK_STEPS)
SCORE = _tasks.score(SAME, FIT, XS_TEST, YS_TEST, layer2=False)
KINDS = np.array([_tasks.OUTCOMES.index(r["outcome"]) for r in SCORE["restarts"]])
print(f"{STACK_STEPS} steps: outcomes {SCORE['outcomes']}")
fig = viz._figure((4.5, 4))
ax = fig.subplots()
ax.imshow(KINDS.reshape(8, 8), cmap="tab10", vmin=0, vmax=9)
for (r, c), k in np.ndenumerate(KINDS.reshape(8, 8)):
    ax.text(c, r, _tasks.OUTCOMES[k][0], ha="center", va="center", color="white")
ax.set_xticks([])
ax.set_yticks([])
ax.set_title("64 starts: " + ", ".join(f"{k[0]} {k} {n}" for k, n in SCORE["outcomes"].items()
                                         if n), fontsize=7)
EXP.show(fig, "restarts.png")

# %% [markdown]
# ## Metrics

# %%
metrics = EXP.finish({
    "max_abs_difference_1d": ERR_1D,
    "sliding_output": OUT2.tolist(),
    "final_loss": float(LOSSES[-1]),
    "max_abs_kernel_error": float(np.max(np.abs(KERNELS[-1] - W3))),
    "steps": STEPS,
    "stack_outcomes": SCORE["outcomes"],
    "stack_steps": STACK_STEPS,
    "animation_frames": [SLIDING_HTML.count("frames["), LEARNING_HTML.count("frames[")],
})
