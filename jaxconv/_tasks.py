"""The tasks several experiments (and benchmarks) share: the 2-layer teacher of
``experiments/recover_stack.py`` and ``recover_stack_map.py`` (its filters, the students, the
data, the training and the scoring of every restart) and learn_features' shapes CNN.

For the experiments only (the library never imports it): one definition every user imports,
so the map scores exactly what recover_stack scores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv import _fitting, data, filters, nn, recovery, teachers

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

LAYER_NAMES = ["lines", "lines_relu", "crossing", "crossing_relu"]
TEACHER = nn.Stack(
    [nn.Conv(2, 3, use_bias=False), nn.Activation("relu"), nn.Conv(1, 3), nn.Activation("relu")],
    names=LAYER_NAMES,
)


def teacher_params():
    """The teacher's params: the line detectors, then the crossing detector and its bias."""
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



# Jitted once with the (hashable) model static: a ``jax.jit`` of a lambda made inside a
# call compiles anew on every call.
@functools.partial(jax.jit, static_argnums=0)
def _held_out_each(model, params, x):
    def one(p):
        out, feats = model.apply(p, x, return_features=True)
        return out, feats["lines_relu"]

    return jax.vmap(one)(params)


def make_problem(key, *, n_images, size, n_test=N_TEST):
    """Training images and targets, held-out images and targets, and the share of the
    teacher's training outputs that are active (layer 2 before ReLU > 0)."""
    images = data.noise_images(key, n_images + n_test, size)[..., None]
    targets, features = recovery._jitted_apply()(TEACHER, teacher_params(), images)
    active = float(jnp.mean(features["crossing"][:n_images] > 0))
    return (images[:n_images], targets[:n_images], images[n_images:], targets[n_images:],
            active)



def schedule(lr, steps):
    """``lr`` for 70% of the steps, then a linear decay to ``lr / 100``."""
    hold = int(0.7 * steps)
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, lr / 100, steps - hold)],
        [hold])


def loss_for(model):
    """The mean squared error of ``model`` against the targets."""
    def loss(p, batch):
        x, y = batch
        return jnp.mean((model.apply(p, x) - y) ** 2)

    return loss


def train(model, images, targets, *, key, restarts, steps, lr=LR, mesh=None):
    """``restarts`` students from random weights, fitted with Adam in one compiled call
    (``jaxconv.fit``) under full float32 precision."""
    k_init, k_fit = jax.random.split(key)
    params = teachers._init(model, k_init, images.shape, restarts)
    kwargs = {} if mesh is None else {"mesh": mesh}
    with jax.default_matmul_precision(PRECISION):
        return _fitting.fit(loss_for(model), params, optax.adam(schedule(lr, steps)),
                           (images, targets), steps=steps, key=k_fit, restarts=restarts,
                           progress=False, **kwargs)


def lowered_step_text(model, images, targets):
    """The StableHLO of one training gradient, traced as ``train`` traces it (for tests)."""
    params = model.init(jax.random.key(0), images.shape)
    with jax.default_matmul_precision(PRECISION):
        return jax.jit(jax.grad(loss_for(model))).lower(params, (images, targets)).as_text()



def held_out(model, params, x, y):
    """Every restart's outputs on x and its relative error ||student - teacher|| / ||teacher||,
    and layer 1's outputs after ReLU."""
    with jax.default_matmul_precision(PRECISION):
        out, feats = _held_out_each(model, params, x)
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
    """Prints a student's rate, its best restart and what its successes' extra channels are."""
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
    """Layer 1's two filters and layer 2's weights on them, as named panels."""
    return {
        "L1 vertical": k1[..., 0], "L1 horizontal": k1[..., 1],
        "L2 on vertical": k2[..., 0], "L2 on horizontal": k2[..., 1],
    }




# --- learn_features: the synthetic shapes and the CNN that classifies them ----------------

SHAPES_MODEL = nn.Stack(
    [nn.Conv(8, 3, padding="SAME"), nn.Activation("relu"), nn.MaxPool(2),
     nn.Conv(16, 3), nn.Activation("relu"), nn.GlobalPool("max"),
     nn.Dense(len(data.CLASS_NAMES))],
    names=["conv1", "relu1", "pool1", "conv2", "relu2", "global_pool", "logits"],
)


def make_shapes(key, n, *, size=16, jitter=3, noise=0.2):
    """``n`` shape images ``[n, size, size, 1]`` and their labels (``data.shape_dataset``)."""
    images, labels = data.shape_dataset(key, n, size, jitter=jitter, noise=noise)
    return images[..., None], labels
