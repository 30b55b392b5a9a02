"""A benchmark of convolutional teachers to recover, and the pipeline that recovers them.

``benchmark()`` lists the teachers (the line -> crossing stack, 2-layer conv-ReLU stacks
built from ``jaxconv.filters``' bank, 3-layer stacks, random teachers, stride and pooling
variants), each with the images it is probed on (``make_data``). ``recover`` is an
expand-and-cluster pipeline on ``jaxconv.fit``'s restarts; its result is scored by
``jaxconv.recovery.score_stack`` against the teacher, which the pipeline never reads. A
tutorial helper: nothing in the library imports it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import _checks, data, filters, nn
from jaxconv._typing import Array

FAMILIES = ("line_crossing", "bank", "photo", "lines", "deep", "random", "stride", "pool")
IMAGES = ("noise", "photo", "lines")
# the 3x3 filters of the bank a teacher's layer 1 draws from
BANK_NAMES = tuple(name for name, f in filters.bank().items() if f.shape == (3, 3))


class Teacher(NamedTuple):
    """One teacher of the benchmark.

    Attributes:
      name: unique name, e.g. ``"bank_w4_k5_s1"``.
      family: one of ``FAMILIES``.
      model: the ``nn.Stack``; hidden conv layers are named ``conv1, conv2, ...`` (each
        followed by ``relu1, relu2, ...`` and perhaps ``pool1``), the output conv ``out``.
      params: the teacher's weights, keyed by layer name.
      images: what it is probed on, one of ``IMAGES``.
      size: the input images' side length.
      filter_names: the bank filters of layer 1, in channel order (empty if not from it).
    """

    name: str
    family: str
    model: nn.Stack
    params: dict
    images: str
    size: int
    filter_names: tuple[str, ...] = ()


def conv_names(model: nn.Stack) -> list[str]:
    """The names of ``model``'s conv layers, in order (hidden layers, then the output).

    Args:
      model: an ``nn.Stack``.

    Returns:
      The layer names whose layer is an ``nn.Conv``.
    """
    return [n for n, layer in zip(model.names, model.layers, strict=True)
            if isinstance(layer, nn.Conv)]


def hidden_widths(teacher: Teacher) -> list[int]:
    """The number of channels of each hidden conv layer (all but the output layer).

    Args:
      teacher: a ``Teacher``.

    Returns:
      One width per hidden conv layer, e.g. ``[4]`` for a 2-layer teacher of width 4.
    """
    return [int(teacher.params[n]["kernel"].shape[-1]) for n in conv_names(teacher.model)[:-1]]


def architecture(
    widths: Sequence[int],
    kernels: Sequence[int],
    *,
    stride: int = 1,
    pool: str | None = None,
    out_relu: bool = False,
) -> nn.Stack:
    """A conv-ReLU stack: hidden convs of ``widths`` (layer 1 without bias), a 1-channel out.

    Args:
      widths: channels of each hidden conv layer.
      kernels: kernel side of every conv layer, ``len(widths) + 1`` of them.
      stride: layer 1's stride.
      pool: ``"max"`` or ``"avg"`` for a 2x2 pool after layer 1's ReLU, or None.
      out_relu: end with a ReLU (the line -> crossing teacher does).

    Returns:
      The ``nn.Stack`` (names as in ``Teacher.model``).
    """
    op = "architecture"
    if len(kernels) != len(widths) + 1:
        raise ValueError(f"{op}: needs len(widths) + 1 kernels (={len(widths) + 1}), got "
                         f"{len(kernels)}.")
    if pool is not None:
        pool = _checks.check_choice(op, "pool", pool, ("max", "avg"))
    layers: list[Any] = []
    names: list[str] = []
    for i, (w, k) in enumerate(zip(widths, kernels, strict=False), start=1):
        layers += [nn.Conv(w, k, stride=stride if i == 1 else 1, use_bias=i > 1),
                   nn.Activation("relu")]
        names += [f"conv{i}", f"relu{i}"]
        if i == 1 and pool is not None:
            layers.append(nn.MaxPool(2) if pool == "max" else nn.AvgPool(2))
            names.append("pool1")
    layers.append(nn.Conv(1, kernels[-1]))
    names.append("out")
    if out_relu:
        layers.append(nn.Activation("relu"))
        names.append("out_relu")
    return nn.Stack(layers, names=names)


def _unit_bank(names: Sequence[str]) -> np.ndarray:
    b = filters.bank()
    ks = [np.asarray(b[n], np.float64) for n in names]
    return np.stack([k / np.linalg.norm(k) for k in ks], axis=-1)[:, :, None, :]


def _random_layer(rng: np.random.Generator, k: int, cin: int, cout: int) -> np.ndarray:
    w = rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)
    return w


def _teacher(name, family, model, kernels, biases, *, images, size, filter_names=()):
    params: dict = {}
    for n, w, b in zip(conv_names(model), kernels, biases, strict=True):
        params[n] = {"kernel": jnp.asarray(w, jnp.float32)}
        if b is not None:
            params[n]["bias"] = jnp.asarray(b, jnp.float32)
    return Teacher(name, family, model, params, images, size, tuple(filter_names))


def line_crossing() -> Teacher:
    """The line -> crossing stack of ``experiments/recover_stack.py``.

    Returns:
      Vertical and horizontal line detectors (+ ReLU), then a 3x3 crossing detector with
      bias -2 and a ReLU, probed on 12x12 Gaussian noise.
    """
    w2 = np.zeros((3, 3, 2, 1))
    w2[:, 1, 0, 0] = (0.5, 1.0, 0.5)
    w2[1, :, 1, 0] = (0.5, 1.0, 0.5)
    names = ("vertical_line", "horizontal_line")
    w1 = np.asarray(filters.stack([filters.bank()[n] for n in names]))
    model = architecture([2], [3, 3], out_relu=True)
    return _teacher("line_crossing", "line_crossing", model, [w1, w2], [None, [-2.0]],
                    images="noise", size=12, filter_names=names)


def _bank_teacher(name, family, width, k2, seed, *, images="noise", size=12, stride=1,
                  pool=None):
    rng = np.random.default_rng(seed)
    picked = tuple(BANK_NAMES[i] for i in rng.choice(len(BANK_NAMES), width, replace=False))
    model = architecture([width], [3, k2], stride=stride, pool=pool)
    w2 = _random_layer(rng, k2, width, 1)
    return _teacher(name, family, model, [_unit_bank(picked), w2], [None, [0.1]],
                    images=images, size=size, filter_names=picked)


def benchmark() -> list[Teacher]:
    """Every teacher of the benchmark, in a fixed order (deterministic weights).

    Families: ``line_crossing`` (1); ``bank``: 2-layer stacks whose layer 1 is 2-8 unit-norm
    filters drawn from the bank, layer 2 a random 3x3 or 5x5 kernel (28, on noise);
    ``photo``: the same kind probed on patches of scikit-image's photographs (6); ``lines``:
    probed on ``data.line_images`` (2); ``deep``: 3-layer stacks, bank filters then a random
    hidden layer (6); ``random``: random layer-1 filters (6); ``stride``: layer 1 with
    stride 2 (4); ``pool``: a 2x2 max or average pool after layer 1 (4).

    Returns:
      57 ``Teacher`` records.

    Example:
      >>> from jaxconv import teachers
      >>> ts = teachers.benchmark()
      >>> len(ts), ts[0].name, teachers.hidden_widths(ts[0])
      (57, 'line_crossing', [2])
    """
    out = [line_crossing()]
    for width in range(2, 9):
        for k2 in (3, 5):
            for s in (0, 1):
                out.append(_bank_teacher(f"bank_w{width}_k{k2}_s{s}", "bank", width, k2,
                                         1000 * width + 10 * k2 + s))
    for width, k2 in ((2, 3), (3, 5), (4, 3), (4, 5), (6, 3), (8, 5)):
        out.append(_bank_teacher(f"photo_w{width}_k{k2}", "photo", width, k2,
                                 2000 + 10 * width + k2, images="photo"))
    for width, k2 in ((2, 3), (4, 5)):
        out.append(_bank_teacher(f"lines_w{width}_k{k2}", "lines", width, k2,
                                 3000 + 10 * width + k2, images="lines"))
    for w1, w2 in ((2, 2), (3, 2), (2, 3), (4, 3), (3, 4), (4, 4)):
        rng = np.random.default_rng(4000 + 10 * w1 + w2)
        picked = tuple(BANK_NAMES[i] for i in rng.choice(len(BANK_NAMES), w1, replace=False))
        model = architecture([w1, w2], [3, 3, 3])
        ks = [_unit_bank(picked), _random_layer(rng, 3, w1, w2), _random_layer(rng, 3, w2, 1)]
        out.append(_teacher(f"deep_w{w1}x{w2}", "deep", model, ks,
                            [None, rng.normal(size=w2) * 0.1, [0.1]], images="noise",
                            size=14, filter_names=picked))
    for width, k2 in ((2, 3), (3, 5), (4, 3), (5, 5), (6, 3), (8, 3)):
        rng = np.random.default_rng(5000 + 10 * width + k2)
        k1 = _random_layer(rng, 3, 1, width)
        k1 /= np.linalg.norm(k1.reshape(-1, width), axis=0)
        model = architecture([width], [3, k2])
        out.append(_teacher(f"random_w{width}_k{k2}", "random", model,
                            [k1, _random_layer(rng, k2, width, 1)], [None, [0.1]],
                            images="noise", size=12))
    for width, k2 in ((2, 3), (3, 3), (4, 3), (6, 3)):
        out.append(_bank_teacher(f"stride_w{width}_k{k2}", "stride", width, k2,
                                 6000 + width, size=15, stride=2))
    for pool, width in (("max", 2), ("max", 4), ("avg", 3), ("avg", 6)):
        out.append(_bank_teacher(f"pool_{pool}_w{width}", "pool", width, 3, 7000 + width,
                                 size=16, pool=pool))
    return out


def _photo_patches(key: Array, n: int, size: int) -> Array:
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("make_data: photo images need scikit-image "
                          "(pip install 'jaxconv[photo]').") from e
    photos = [skimage.data.camera(), skimage.data.moon(), skimage.data.coins(),
              skimage.data.brick(), skimage.data.grass(), skimage.data.text()]
    arrs = [(p.astype(np.float64) - p.mean()) / p.std() for p in photos]
    u = np.asarray(jax.random.uniform(key, (n, 3)))
    out = np.empty((n, size, size), np.float32)
    for i, (a, b, c) in enumerate(u):
        img = arrs[int(a * len(arrs))]
        r = int(b * (img.shape[0] - size + 1))
        s = int(c * (img.shape[1] - size + 1))
        out[i] = img[r:r + size, s:s + size]
    return jnp.asarray(out)


def images(teacher: Teacher, key: Array, n: int) -> Array:
    """``n`` input images of the kind ``teacher`` is probed on.

    Args:
      teacher: a ``Teacher``.
      key: a PRNG key.
      n: number of images.

    Returns:
      [n, size, size, 1] float32: standard normal noise, standardised patches of
      scikit-image's photographs (camera, moon, coins, brick, grass, text), or
      ``data.line_images`` (lines and crosses plus noise 0.1).
    """
    if teacher.images == "noise":
        x = data.noise_images(key, n, teacher.size)
    elif teacher.images == "photo":
        x = _photo_patches(key, n, teacher.size)
    else:
        x = data.line_images(key, n, teacher.size)
    return x[..., None]


def make_data(teacher: Teacher, key: Array, n: int) -> tuple[Array, Array]:
    """Images for ``teacher`` and its outputs on them.

    Args:
      teacher: a ``Teacher``.
      key: a PRNG key.
      n: number of images.

    Returns:
      ``(x, y)``: x [n, size, size, 1] (see ``images``), y = ``teacher.model.apply(params, x)``
      [n, h, w, 1], computed with full float32 products.
    """
    x = images(teacher, key, n)
    with jax.default_matmul_precision("highest"):
        y = _forward(teacher.model, teacher.params, x)
    return x, y


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: nn.Stack, params: dict, x: Array) -> Array:
    return model.apply(params, x)


# ---------------------------------------------------------------------------------------
# The recovery pipeline: expand, cluster, prune, refit, polish, check.


def widen(model: nn.Stack, widths: Sequence[int]) -> nn.Stack:
    """``model`` with its hidden conv layers given ``widths`` channels (all else kept).

    Args:
      model: a stack built like ``architecture``'s.
      widths: one width per hidden conv layer.

    Returns:
      A new ``nn.Stack`` with the same names.
    """
    import dataclasses

    hidden = conv_names(model)[:-1]
    if len(widths) != len(hidden):
        raise ValueError(f"widen: needs one width per hidden conv layer ({len(hidden)}), got "
                         f"{len(widths)}.")
    new = dict(zip(hidden, widths, strict=True))
    layers = [dataclasses.replace(layer, features=int(new[n])) if n in new else layer
              for n, layer in zip(model.names, model.layers, strict=True)]
    return nn.Stack(layers, names=model.names)


class Recovered(NamedTuple):
    """What ``recover`` returns.

    Attributes:
      params: the recovered params, in the teacher's architecture (keyed by layer name).
      train_rel_error: ``||student(x) - y|| / ||y||`` on the training images.
      clusters: per hidden layer, how many filter clusters were found across restarts (of
        the last attempt).
      support: per hidden layer, how many restarts held each kept cluster (a list; of the
        last attempt).
      attempts: the expand-cluster-prune-refit passes run (a pass runs again, from a new
        key, only while no polished student has reached ``good_enough``).
      restarts: the restarts trained, all stages and attempts together.
      restart_steps: the Adam steps run, summed over restarts and stages.
      polish_steps: the Levenberg-Marquardt steps taken, summed over the polished students.
      wall_s: seconds of the whole pipeline (compiles included).
      jacobian_rank: the rank of the Jacobian of the outputs on the training images with
        respect to every parameter at ``params``.
      expected_rank: parameters minus the dimension of the continuous symmetries (one
        positive scale per hidden channel): the rank of a locally identifiable point.
      identifiable: ``jacobian_rank == expected_rank``.
      singular_gap: the Jacobian's singular values ``s[expected_rank - 1] / s[0]`` and
        ``s[expected_rank] / s[0]`` (0.0 when there is no such value): how clearly the rank
        is decided.
      by_fit: ``params`` came from the selection by joint fit (``prune_by_fit`` of a
        polished expanded student), not from a refit of the clustered filters.
    """

    params: dict
    train_rel_error: float
    clusters: list[int]
    support: list[list[int]]
    attempts: int
    restarts: int
    restart_steps: int
    polish_steps: int
    wall_s: float
    jacobian_rank: int
    expected_rank: int
    identifiable: bool
    singular_gap: tuple[float, float]
    by_fit: bool = False


def _loss_for(model):
    def loss(p, batch):
        x, y = batch
        return jnp.mean((model.apply(p, x) - y) ** 2)

    return loss


def _schedule(lr, steps):
    import optax

    hold = int(0.7 * steps)
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, lr / 100, steps - hold)], [hold])


def whitener(layer: nn.Conv, x: Array) -> np.ndarray:
    """The preconditioner of ``layer``'s kernel on the inputs ``x``: ``M = (C / c)^(-1/2)``,
    ``C`` the second moment of the patches ``layer`` sees (``[d, d]``, ``d`` the kernel's
    inputs per output channel, in the order of ``kernel.reshape(d, features)``), ``c`` its mean
    eigenvalue (eigenvalues below ``1e-6 c`` are raised to it).

    A kernel trained as ``v`` with ``kernel = M v`` sees whitened patches: gradient descent
    on ``v`` is as well conditioned as on white-noise images whatever the images' own
    correlations (natural images: the 3x3 patches of the benchmark's photographs have
    condition number ~340, white noise ~1.3). The patches come from ``layer`` itself, applied
    with an identity kernel, so padding, stride, dilation and ``flip`` are its own.

    Args:
      layer: an ``nn.Conv`` with ``groups == 1``.
      x: the images it is applied to, ``[N, *spatial, C]``.

    Returns:
      ``M``, ``[d, d]``, symmetric positive definite, float64.
    """
    import dataclasses

    if not isinstance(layer, nn.Conv) or layer.groups != 1:
        raise ValueError(f"whitener: needs an nn.Conv with groups=1, got {layer!r}.")
    shape = jnp.shape(x)
    kshape = jax.eval_shape(lambda k: layer.init(k, shape), jax.random.key(0))["kernel"].shape
    d = int(np.prod(kshape[:-1]))
    probe = dataclasses.replace(layer, features=d, use_bias=False)
    eye = jnp.eye(d, dtype=jnp.result_type(x)).reshape(*kshape[:-1], d)
    patches = np.asarray(probe.apply({"kernel": eye}, x), np.float64).reshape(-1, d)
    e, u = np.linalg.eigh(patches.T @ patches / len(patches))
    e = np.maximum(e / e.mean(), 1e-6)
    return (u / np.sqrt(e)) @ u.T


def _times_kernel(m: np.ndarray, kernel: Array) -> Array:
    """``m @ k`` for each restart's kernel ``k`` (a leading axis) flattened to
    ``[d, features]``, reshaped back."""
    flat = kernel.reshape(kernel.shape[0], m.shape[0], kernel.shape[-1])
    return jnp.einsum("de,reo->rdo", jnp.asarray(m, kernel.dtype), flat,
                      precision="highest").reshape(kernel.shape)


def _fit(model, params, x, y, *, key, steps, restarts, lr=2e-2, whiten=None):
    """``fit`` with Adam on ``_schedule``; ``whiten=(name, M)`` trains layer ``name``'s kernel
    (with a leading restart axis) as ``v``, ``kernel = M v`` (``whitener``), and returns the
    kernels."""
    import optax

    from jaxconv._fitting import fit

    loss = _loss_for(model)
    if whiten is not None:
        name, m = whiten
        inv = np.linalg.inv(m)
        params = {**params, name: {**params[name],
                                   "kernel": _times_kernel(inv, params[name]["kernel"])}}
        m32 = jnp.asarray(m, jnp.float32)

        def loss(p, batch, _plain=loss):
            k = p[name]["kernel"]
            flat = k.reshape(m32.shape[0], k.shape[-1])
            k = jnp.matmul(m32, flat, precision="highest").reshape(k.shape)
            return _plain({**p, name: {**p[name], "kernel": k}}, batch)

    opt = optax.adam(_schedule(lr, steps))
    with jax.default_matmul_precision("highest"):
        res = fit(loss, params, opt, (x, y), steps=steps, key=key, restarts=restarts,
                  progress=False)
    if whiten is None:
        return res
    p = res.params
    return res._replace(params={**p, name: {**p[name],
                                            "kernel": _times_kernel(m, p[name]["kernel"])}})


def _init(model, key, shape, restarts):
    """``restarts`` initialisations of ``model`` for inputs of ``shape``, from
    ``split(key, restarts)`` (the restarts of this module and of ``_tasks``)."""
    # ``nn.Stack.init`` is one executable per model and shape, and so is its vmap: a
    # ``jax.jit`` of a lambda around it compiled anew on every call. The keys are split with
    # the classic threefry: XLA CPU takes seconds to compile partitionable threefry for small
    # multi-dim shapes such as a (3, 3, 2, 1) kernel, and it draws equally random numbers
    with jax.threefry_partitionable(False):
        return jax.vmap(lambda k: model.init(k, shape))(jax.random.split(key, restarts))


def _take(tree, r: int):
    """Restart ``r`` of every leaf (on the host: no eager device op per shape)."""
    return jax.tree.map(lambda a: np.asarray(a)[r], tree)


def _repeat(tree, n: int):
    """Every leaf repeated along a new leading axis of ``n`` (on the host)."""
    return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n, *np.shape(a))), tree)


def _canonical(params: dict, hidden: Sequence[str], after: dict, upto: int) -> dict:
    """Params of one network with hidden layers ``hidden[:upto]`` scaled to unit-norm filters
    (kernel and bias together), each scale moved into the next conv layer's input channels."""
    p = jax.tree.map(np.asarray, params)
    p = {k: dict(v) for k, v in p.items()}
    for name in hidden[:upto]:
        w = p[name]["kernel"]
        vec = w.reshape(-1, w.shape[-1])
        if "bias" in p[name]:
            vec = np.concatenate([vec, p[name]["bias"][None]], axis=0)
        norm = np.linalg.norm(vec, axis=0)
        norm = np.where(norm > 0, norm, 1.0)
        p[name]["kernel"] = w / norm
        if "bias" in p[name]:
            p[name]["bias"] = p[name]["bias"] / norm
        nxt = after[name]
        p[nxt]["kernel"] = p[nxt]["kernel"] * norm[:, None]
    return p


def _cluster(vectors: np.ndarray, weights: np.ndarray, owners: np.ndarray, *, cosine: float):
    """Greedy clustering of unit vectors by cosine, heaviest first: (centroids, support,
    members) with support the number of distinct owners (restarts) per cluster."""
    order = np.argsort(-weights)
    cents: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in order:
        v = vectors[i]
        if cents:
            c = np.array([float(v @ cc) for cc in cents])
            j = int(np.argmax(c))
            if c[j] >= cosine:
                members[j].append(int(i))
                m = vectors[members[j]]
                cents[j] = m.mean(0) / np.linalg.norm(m.mean(0))
                continue
        cents.append(v.copy())
        members.append([int(i)])
    support = [len(set(owners[m].tolist())) for m in members]
    return cents, support, members


# Jitted once at module level with the (hashable) model static, so a second call with the
# same architecture and shapes reuses the executable; a ``jax.jit(jax.vmap(lambda ...))``
# made inside the call traced and compiled anew every time (some 0.4 s each, several per
# teacher).
@functools.partial(jax.jit, static_argnums=0)
def _rel_errors_each(model: nn.Stack, params: dict, x: Array, y: Array) -> Array:
    out = jax.vmap(lambda p: model.apply(p, x))(params)
    err = jnp.sqrt(jnp.sum((out - y[None]) ** 2, axis=tuple(range(1, out.ndim))))
    return err / jnp.linalg.norm(y)


def _rel_errors(model, params, x, y) -> np.ndarray:
    """[R]: each restart's ``||model(x) - y|| / ||y||``."""
    with jax.default_matmul_precision("highest"):
        return np.asarray(_rel_errors_each(model, params, x, y))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _activity_each(model: nn.Stack, params: dict, x: Array, name: str) -> Array:
    def one(p):
        _, feats = model.apply(p, x, return_features=True)
        return jnp.mean(feats[name] > 0, axis=tuple(range(feats[name].ndim - 1)))

    return jax.vmap(one)(params)


def _activity(model, params, x, name) -> np.ndarray:
    """[R, n]: the share of positions where each channel of conv ``name`` is > 0."""
    with jax.default_matmul_precision("highest"):
        return np.asarray(_activity_each(model, params, x, name))


# The most parameters per training output of the students ``recover``'s selection by fit
# polishes: a student with more parameters than outputs fits the data without the teacher's
# filters (the 4x students of the 5x5-readout teachers: 1,089 parameters, 576 outputs,
# polished to 1.6e-7 holding none of them), one with fewer than half as many fitted exactly
# only with them. Measured on bank_w5_k5_s1 (2026-12-05): a student of 8 channels (272
# parameters) polished to 1.3e-7 and pruned to the teacher exactly; the 4x one did not.
SELECT_PARAMS_PER_OUTPUT = 0.5


def _n_params(model: nn.Stack, shape) -> int:
    """How many parameters ``model`` has on inputs of ``shape`` (no computation)."""
    tree = jax.eval_shape(lambda k: model.init(k, shape), jax.random.key(0))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def n_images(teacher: Teacher, *, factor: int = 4, minimum: int = 16,
             params_per_output: float = SELECT_PARAMS_PER_OUTPUT) -> int:
    """How many images to probe ``teacher`` on: the fewest, and at least ``minimum``, on
    which a student ``factor`` times as wide has at most ``params_per_output`` parameters per
    training output.

    A student with more parameters than outputs fits the data without the teacher's filters;
    one with fewer than half as many fitted exactly only with them (``recover``'s selection
    by fit measured this). 16 images of 12x12 leave a 5x5 readout 576 outputs, which the 4x
    student of an 8-channel teacher (1,089 parameters) outnumbers.

    Args:
      teacher: a ``Teacher``.
      factor: the students' width, times the teacher's.
      minimum: the fewest images.
      params_per_output: the bound (> 0).

    Returns:
      The number of images.

    Example:
      >>> from jaxconv import teachers
      >>> ts = {t.name: t for t in teachers.benchmark()}
      >>> teachers.n_images(ts["bank_w2_k3_s0"]), teachers.n_images(ts["bank_w8_k5_s0"])
      (16, 61)
    """
    op = "n_images"
    if factor < 1 or minimum < 1 or not params_per_output > 0:
        raise ValueError(f"{op}: needs factor >= 1 (={factor}), minimum >= 1 (={minimum}) "
                         f"and params_per_output > 0 (={params_per_output}).")
    shape = (1, teacher.size, teacher.size, 1)
    per_image = int(np.prod(jax.eval_shape(teacher.model.apply, teacher.params,
                                           jax.ShapeDtypeStruct(shape, jnp.float32)).shape))
    wide = widen(teacher.model, [factor * w for w in hidden_widths(teacher)])
    return max(minimum, math.ceil(_n_params(wide, shape) / (params_per_output * per_image)))


@functools.partial(jax.jit, static_argnums=0)
def _outputs_and_jacobian(model: nn.Stack, params: dict, x: Array):
    """``model``'s outputs on ``x`` (flat) and their Jacobian w.r.t. every leaf of ``params``
    (per leaf ``[M, *leaf.shape]``, rows in the outputs' order). One executable per
    architecture and shapes, shared by the polish and the rank test (the model is a hashable
    description, so jit's cache keys on it).

    Every layer of an ``nn.Stack`` acts on each image alone, so image ``i``'s outputs depend
    on the params only through ``x[i]``: the Jacobian is computed image by image in reverse
    mode (``vmap`` of ``jacrev``), each image's few outputs pulled back through that image
    only. ``jacfwd`` pushes every parameter's tangent through all ``N`` images, and
    ``jacrev`` of the whole batch every output's cotangent: ``N`` times the work, and for
    ``jacfwd`` tangents of ``P x N`` hidden maps. Measured (Intel Xeon, 2 cores, 2026-12-05;
    min of 3): bank_w8_k5_s0's 4x student on 61 images, a 2196 x 1089 Jacobian, jacfwd
    3.5 s, this 0.056 s (same values to 3e-8 of the largest entry); deep_w4x4's 4x student
    on 82 images (5248 x 2609): 0.35 s, where jacfwd ran out of 24 GiB.
    """
    return model.apply(params, x).ravel(), _per_image_jacobian(model.apply, params, x)


def _per_image_jacobian(f, params, x: Array):
    """The Jacobian of ``f(params, x).ravel()`` w.r.t. ``params`` (per leaf ``[M,
    *leaf.shape]``), for an ``f`` that acts on each image alone: ``vmap`` over images of
    ``jacrev`` of one image's outputs (see ``_outputs_and_jacobian``)."""
    def one(p, xi):
        return f(p, xi[None]).ravel()

    jac = jax.vmap(jax.jacrev(one), in_axes=(None, 0))(params, x)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), jac)


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model: nn.Stack, params: dict, x: Array):
    return model.apply(params, x).ravel()


def _flat_jacobian(model: nn.Stack, params: dict, x: Array) -> tuple[np.ndarray, np.ndarray]:
    """([M] outputs, [M, P] Jacobian) in float64, columns in ``ravel_pytree``'s order."""
    with jax.default_matmul_precision("highest"):
        out, jac = _outputs_and_jacobian(model, params, x)
    cols = [np.asarray(j, np.float64).reshape(out.shape[0], -1) for j in jax.tree.leaves(jac)]
    return np.asarray(out, np.float64), np.concatenate(cols, axis=1)


def jacobian_rank(model: nn.Stack, params: dict, x: Array, *, rtol: float = 1e-4):
    """The rank of the Jacobian of ``model``'s outputs on ``x`` w.r.t. all of ``params``.

    Args:
      model: an ``nn.Stack``.
      params: its params (one network, no restart axis).
      x: the images [N, H, W, C] the outputs are taken on.
      rtol: singular values above ``rtol`` times the largest count.

    Returns:
      ``(rank, n_params, singular_values)``; the singular values descending, float64.
    """
    _, jac = _flat_jacobian(model, params, x)
    s = np.linalg.svd(jac, compute_uv=False)
    return int(np.sum(s > rtol * s[0])), int(jac.shape[1]), s


class Polished(NamedTuple):
    """What ``polish`` returns.

    Attributes:
      params: the polished params (float32, the input's tree).
      rel_error: ``||model(x) - y|| / ||y||`` at ``params``.
      steps: the Levenberg-Marquardt steps taken (accepted steps).
    """

    params: dict
    rel_error: float
    steps: int


def polish(model: nn.Stack, params: dict, x: Array, y: Array, *, steps: int = 30) -> Polished:
    """Levenberg-Marquardt on the squared error, the step solved in float64.

    Near a solution the squared error of a ReLU stack is a smooth least-squares problem
    (the activation pattern is fixed), so Gauss-Newton converges in a few steps to the
    float32 floor where first-order methods crawl; the damping (Marquardt's, scaled by the
    diagonal of ``J^T J``) keeps the steps safe further away. The outputs and Jacobian are
    computed in float32 at full precision; a step is kept only if it lowers the error.

    Args:
      model: an ``nn.Stack``.
      params: its params (one network, no restart axis).
      x: images [N, H, W, C].
      y: targets [N, h, w, c] (``model.apply(params, x)``'s shape).
      steps: the most steps (the loop stops earlier when no damping lowers the error or a
        step gains less than 0.1%).

    Returns:
      A ``Polished``.
    """
    from jax.flatten_util import ravel_pytree

    op = "polish"
    if steps < 0:
        raise ValueError(f"{op}: `steps` (={steps}) must be >= 0.")
    target = np.asarray(y, np.float64).ravel()
    flat32, unravel = ravel_pytree(params)
    flat = np.asarray(flat32, np.float64)
    out, jac = _flat_jacobian(model, params, x)
    if out.shape != target.shape:
        raise ValueError(f"{op}: `y` has {target.size} values, the model gives {out.size}; "
                         "pass the targets of these images.")
    norm = max(float(np.linalg.norm(target)), 1e-300)
    res = out - target
    cost = float(res @ res)
    damping = 1e-3
    taken = 0
    for _ in range(steps):
        jtj, g = jac.T @ jac, jac.T @ res
        diag = np.diag(jtj) + 1e-12 * max(float(np.max(np.diag(jtj))), 1e-300)
        while damping < 1e12:
            step = np.linalg.solve(jtj + damping * np.diag(diag), -g)
            trial_flat = jnp.asarray(flat + step, jnp.float32)
            trial = unravel(trial_flat)
            with jax.default_matmul_precision("highest"):
                new_res = np.asarray(_outputs(model, trial, x), np.float64) - target
            new_cost = float(new_res @ new_res)
            if new_cost < cost:
                break
            damping *= 4.0
        else:
            break
        flat = np.asarray(trial_flat, np.float64)
        # near a solution each step cuts the error by orders of magnitude; a step that gains
        # under 0.1% is a point Gauss-Newton cannot improve (a float32 floor or a spurious
        # minimum), and further steps would only cost Jacobians
        done = new_cost > cost * (1 - 1e-3)
        res, cost = new_res, new_cost
        if done:
            taken += 1
            break
        jac = _flat_jacobian(model, trial, x)[1]
        taken += 1
        damping = max(damping / 10.0, 1e-9)  # trust the Gauss-Newton step again
    return Polished(unravel(jnp.asarray(flat, jnp.float32)), float(np.sqrt(cost)) / norm,
                    taken)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _readout_jacobian(model: nn.Stack, params: dict, x: Array, out: str) -> dict:
    return _per_image_jacobian(lambda r, xs: model.apply({**params, out: r}, xs),
                               params[out], x)


def _readout_columns(model: nn.Stack, params: dict, x: Array, out: str) -> dict:
    """The Jacobian of ``model``'s flat outputs on ``x`` with respect to the readout conv
    ``out``'s params (the model's last layer, so the outputs are affine in them and this is
    exact at any point): per leaf, ``[M, *leaf.shape]`` in float64. Image by image in
    reverse mode, as ``_outputs_and_jacobian``."""
    with jax.default_matmul_precision("highest"):
        jac = _readout_jacobian(model, params, x, out)
    return {k: np.asarray(v, np.float64) for k, v in jac.items()}


def prune_by_fit(model: nn.Stack, params: dict, x: Array, y: Array, width: int) -> dict:
    """Prunes the last hidden conv layer of a wide student to the ``width`` filters that fit
    ``y`` best together, with the readout that fits them best.

    Given the layers below the readout conv (the model's last layer), the outputs are linear
    in the readout's weights, so a set of hidden channels is judged exactly by the least-
    squares residual of the readout fitted on them. The candidates are the layer's filters
    (kernel and bias) in both signs, scaled to unit norm: a ReLU unit ``relu(-z)`` with a
    linear part makes up ``relu(z)`` (``relu(z) = z + relu(-z)``), so a wide student may hold
    a teacher's filter only as its negative. Forward selection adds, ``width`` times, the
    candidate whose readout columns cut the residual most (all-zero filters are skipped); then
    any chosen one is swapped for another while that cuts the residual (a filter close to a
    teacher's, chosen first, can hide the exact one). The readout of the chosen ones is the
    least-squares solution, in float64.

    Args:
      model: an ``nn.Stack`` (hidden conv layers, activations and pools, then a readout
        conv as its last layer), at the wide student's widths.
      params: its params (one network, no restart axis).
      x: images [N, *spatial, C].
      y: targets, ``model.apply(params, x)``'s shape.
      width: the channels to keep in the last hidden conv layer.

    Returns:
      Params of ``model`` with that layer ``width`` channels wide (``widen``), float32.
    """
    op = "prune_by_fit"
    convs = conv_names(model)
    if len(convs) < 2 or model.names[-1] != convs[-1]:
        raise ValueError(f"{op}: needs a hidden conv layer and a readout conv as the model's "
                         "last layer (the outputs affine in the readout's weights); got "
                         f"layers {list(model.names)}.")
    name, out = convs[-2], convs[-1]
    p = {k: dict(jax.tree.map(lambda a: np.asarray(a, np.float64), v))
         for k, v in params.items()}
    kernel, bias = p[name]["kernel"], p[name].get("bias")
    vec = kernel.reshape(-1, kernel.shape[-1])
    if bias is not None:
        vec = np.concatenate([vec, bias[None]], axis=0)
    norm = np.linalg.norm(vec, axis=0)
    keep = np.flatnonzero(norm > 0)
    if not 1 <= width <= 2 * len(keep):
        raise ValueError(f"{op}: `width` (={width}) must be between 1 and twice the nonzero "
                         f"filters of layer {name!r} ({2 * len(keep)}).")
    cand = vec[:, keep] / norm[keep]
    cand = np.concatenate([cand, -cand], axis=1)
    widths = [int(p[n]["kernel"].shape[-1]) for n in convs[:-1]]
    wide = widen(model, widths[:-1] + [cand.shape[1]])

    def layer_params(vectors, shape):
        new = {"kernel": vectors[:int(np.prod(shape))].reshape(*shape, vectors.shape[1])}
        if bias is not None:
            new["bias"] = vectors[-1]
        return new

    rout = p[out]
    zeros = {"kernel": np.zeros((*rout["kernel"].shape[:-2], cand.shape[1],
                                 rout["kernel"].shape[-1]))}
    if "bias" in rout:
        zeros["bias"] = np.zeros_like(rout["bias"])
    f32 = functools.partial(jax.tree.map, lambda a: jnp.asarray(a, jnp.float32))
    jac = _readout_columns(wide, f32({**p, name: layer_params(cand, kernel.shape[:-1]),
                                      out: zeros}), x, out)
    m = jac["kernel"].shape[0]
    blocks = np.moveaxis(jac["kernel"], -2, 1).reshape(m, cand.shape[1], -1)
    fixed = jac["bias"].reshape(m, -1) if "bias" in jac else np.zeros((m, 0))
    target = np.asarray(y, np.float64).ravel()

    # every subset is scored from the Gram matrix of all candidates' columns (the normal
    # equations of the subset, columns scaled to unit norm, a 1e-12 ridge for dead ones) and
    # its residual taken on the columns themselves; the chosen set's readout is then solved
    # by least squares on the columns. One lstsq per subset (hundreds of them, each on
    # thousands of rows) took 31 s of bank_w8_k5_s0's 141 s on 61 images.
    n_fixed, per = fixed.shape[1], blocks.shape[2]
    a_all = np.concatenate([fixed, blocks.reshape(m, -1)], axis=1)
    gram, rhs = a_all.T @ a_all, a_all.T @ target

    def columns(chosen):
        return np.concatenate([np.arange(n_fixed, dtype=int),
                               *[n_fixed + c * per + np.arange(per) for c in chosen]])

    def solve(chosen):
        idx = columns(chosen)
        g = gram[np.ix_(idx, idx)]
        d = np.sqrt(np.maximum(np.diag(g), 1e-300))
        sol = np.linalg.solve(g / np.outer(d, d) + 1e-12 * np.eye(len(idx)), rhs[idx] / d) / d
        return sol, float(np.linalg.norm(a_all[:, idx] @ sol - target))

    chosen: list[int] = []
    for _ in range(width):
        rest = [c for c in range(cand.shape[1]) if c not in chosen]
        chosen.append(min(rest, key=lambda c: solve([*chosen, c])[1]))
    # then swaps: a candidate chosen early (one close to a teacher's filter) can make the
    # exact one look useless; replace any chosen one while that cuts the residual
    sol, best = solve(chosen)
    improved = True
    while improved:
        improved = False
        for i in range(width):
            for c in range(cand.shape[1]):
                if c in chosen:
                    continue
                trial = [*chosen[:i], c, *chosen[i + 1:]]
                trial_sol, err = solve(trial)
                if err < best * (1 - 1e-9):
                    chosen, sol, best, improved = trial, trial_sol, err, True
    sol = np.linalg.lstsq(a_all[:, columns(chosen)], target, rcond=None)[0]
    readout = {"kernel": np.moveaxis(sol[n_fixed:].reshape(width, *rout["kernel"].shape[:-2],
                                                          rout["kernel"].shape[-1]), 0, -2)}
    if "bias" in rout:
        readout["bias"] = sol[:n_fixed]
    return f32({**p, name: layer_params(cand[:, chosen], kernel.shape[:-1]), out: readout})


def recover(
    model: nn.Stack,
    x: Array,
    y: Array,
    widths: Sequence[int],
    *,
    key: Array,
    factor: int = 4,
    restarts: int = 8,
    steps: int = 2000,
    refit_restarts: int = 4,
    refit_steps: int = 1000,
    polish_steps: int = 30,
    good_enough: float = 1e-6,
    cosine: float = 0.99,
    attempts: int = 1,
    whiten: bool = True,
    select: int = 3,
    select_steps: int = 30,
    prune_within: float | None = None,
) -> Recovered:
    """Expand-and-cluster on ``fit``'s restarts, pruned to ``widths``, polished.

    Stage ``k`` (one per hidden layer): train ``restarts`` students whose hidden layers
    ``>= k`` are ``factor`` times wider (layers ``< k`` start from the previous stage's
    result), scale every hidden filter of layers ``<= k`` to unit norm (moving the scale into
    the next layer), cluster layer ``k``'s live filters (active somewhere on ``x``, weighted
    by filter norm times outgoing weight norm) across restarts by cosine, keep the
    ``widths[k]`` clusters found in the most restarts, and refit ``refit_restarts`` students
    with layer ``k`` pruned to those centroids. Finally every refit student is polished by
    ``polish`` (Levenberg-Marquardt, full batch, the steps in float64), best first, until one
    reaches ``good_enough``. Where none has, the selection by fit runs: the last stage's
    ``select`` best expanded students, one at a time, are polished (``select_steps``
    Levenberg-Marquardt steps: the 4x students Adam leaves at 1e-2 fit to ~1e-7, and then
    hold the teacher's filters exactly, some only as negatives), and each whose polish
    reached ``prune_within`` (a student that does not fit the data with the extra channels
    does not hold the teacher's filters) is pruned by
    ``prune_by_fit`` (the last hidden layer's filters in both signs, chosen by joint
    least-squares fit of the readout, which is linear given them) and polished again. A
    student with more parameters than outputs fits without the teacher's filters, so where
    the expanded students have more than ``SELECT_PARAMS_PER_OUTPUT`` per output, the
    selection first trains ``restarts`` students as wide as that allows (at least the
    teacher's width) and selects from those. While
    none has reached ``good_enough``, and fewer than ``attempts`` passes have run, the whole
    pass runs again from a new key (the training error is all it looks at). The student with
    the lowest training error is returned, with the Jacobian rank test at it.
    With ``whiten``, every Adam stage trains the first layer's kernel in whitened coordinates
    (``whitener``: the same functions, a better-conditioned descent on correlated images).
    Reads only ``model``'s architecture, ``x`` and ``y``.

    Args:
      model: the architecture to recover (its hidden widths are replaced).
      x: training images [N, H, W, C].
      y: the targets [N, h, w, c].
      widths: the widths to prune to, one per hidden conv layer.
      key: a PRNG key.
      factor: over-parameterisation of the expanded students (at most 4 is the benchmark's
        rule).
      restarts: expanded students per stage.
      steps: Adam steps of the expanded students.
      refit_restarts: pruned students per stage.
      refit_steps: Adam steps of the pruned students.
      polish_steps: the most Levenberg-Marquardt steps per refit student at the end.
      good_enough: the training relative error at which no further refit student is
        polished.
      cosine: the cosine at which two unit filters join one cluster (0.99 keeps the bank's
        sobel and prewitt filters, cosine 0.94, apart).
      attempts: the most passes (>= 1).
      whiten: precondition the first layer's kernel by ``whitener(layer, x)`` during the
        Adam stages (where the model starts with a conv of ``groups=1``; else no effect).
      select: the expanded students tried by the selection by fit per pass (0: none; no
        effect where the readout conv is not the model's last layer).
      select_steps: the most Levenberg-Marquardt steps of each student the selection
        polishes (the expanded one, then the pruned one).
      prune_within: the training relative error an expanded student's polish must reach
        for the selection to prune and polish it again (default ``sqrt(good_enough)``;
        ``inf``: every student tried).

    Returns:
      A ``Recovered``.
    """
    import time

    t0 = time.perf_counter()
    hidden = conv_names(model)[:-1]
    convs = conv_names(model)
    after = {a: b for a, b in zip(convs[:-1], convs[1:], strict=True)}
    widths = [int(w) for w in widths]
    if len(widths) != len(hidden):
        raise ValueError(f"recover: needs one width per hidden conv layer ({len(hidden)}), "
                         f"got {len(widths)}.")
    if attempts < 1:
        raise ValueError(f"recover: `attempts` (={attempts}) must be >= 1.")
    if select < 0:
        raise ValueError(f"recover: `select` (={select}) must be >= 0.")
    if prune_within is None:
        prune_within = float(np.sqrt(max(good_enough, 0.0)))
    if not prune_within >= 0:
        raise ValueError(f"recover: `prune_within` (={prune_within}) must be >= 0.")
    if model.names[-1] != convs[-1]:  # the readout is not linear in its weights
        select = 0
    final = widen(model, widths)
    first = model.layers[0]
    pre = None
    if whiten and model.names[0] == convs[0] and first.groups == 1:
        pre = (convs[0], whitener(first, x))

    def attempt(key):
        """One expand-cluster-prune-refit pass and the polish of its refit students:
        (polished students, clusters, supports, restarts, Adam steps, the last stage's wide
        model, its expanded students, and a key for the selection by fit)."""
        fixed: dict = {}  # the params of the layers already pruned (one network)
        n_restarts = n_steps = 0
        clusters, supports = [], []
        keys = jax.random.split(key, 2 * len(hidden) + 1)
        for k, name in enumerate(hidden):
            wide = widen(model, widths[:k] + [factor * w for w in widths[k:]])
            p0 = _init(wide, keys[2 * k], x.shape, restarts)
            p0 = {n: (_repeat(fixed[n], restarts) if n in fixed else v) for n, v in p0.items()}
            res = _fit(wide, p0, x, y, key=keys[2 * k + 1], steps=steps, restarts=restarts,
                       whiten=pre)
            expanded = res.params
            n_restarts += restarts
            n_steps += restarts * steps
            act = _activity(wide, res.params, x, name)
            vecs, wts, owners = [], [], []
            for r in range(restarts):
                p = _canonical(_take(res.params, r), hidden, after, k + 1)
                w = p[name]["kernel"]
                v = w.reshape(-1, w.shape[-1])
                if "bias" in p[name]:
                    v = np.concatenate([v, p[name]["bias"][None]], axis=0)
                out_norm = np.linalg.norm(np.moveaxis(p[after[name]]["kernel"], -2, 0)
                                          .reshape(w.shape[-1], -1), axis=1)
                live = (act[r] > 0) & (out_norm > 1e-3 * out_norm.max())
                for j in np.flatnonzero(live):
                    vecs.append(v[:, j])
                    wts.append(out_norm[j])
                    owners.append(r)
            cents, support, _ = _cluster(np.array(vecs), np.array(wts), np.array(owners),
                                         cosine=cosine)
            order = sorted(range(len(cents)), key=lambda i: -support[i])[:widths[k]]
            clusters.append(len(cents))
            supports.append([support[i] for i in order])
            ref_shape = np.asarray(res.params[name]["kernel"]).shape[1:-1]
            cent = np.stack([cents[i] for i in order], axis=-1)
            while cent.shape[-1] < widths[k]:  # fewer clusters than channels: random fill
                extra = np.random.default_rng(k).normal(size=(cent.shape[0], 1))
                cent = np.concatenate([cent, extra / np.linalg.norm(extra)], axis=-1)
            new_k = {"kernel": cent[:int(np.prod(ref_shape))].reshape(*ref_shape, widths[k])}
            if "bias" in res.params[name]:
                new_k["bias"] = cent[-1]
            narrow = widen(model, widths[:k + 1] + [factor * w for w in widths[k + 1:]])
            p1 = _init(narrow, keys[2 * k + 1], x.shape, refit_restarts)
            for n, v in {**fixed, name: new_k}.items():
                p1[n] = jax.tree.map(
                    lambda a, b: np.broadcast_to(np.asarray(b, a.dtype), a.shape), p1[n], v)
            res = _fit(narrow, p1, x, y, key=keys[2 * k + 1], steps=refit_steps,
                       restarts=refit_restarts, whiten=pre)
            n_restarts += refit_restarts
            n_steps += refit_restarts * refit_steps
            if k + 1 < len(hidden):
                best = int(np.argmin(_rel_errors(narrow, res.params, x, y)))
                canon = _canonical(_take(res.params, best), hidden,
                                   after, k + 1)
                fixed = {n: canon[n] for n in hidden[:k + 1]}
        # the refit students in order of training error; the rest are polished only while
        # none has reached ``good_enough`` (each polish costs Jacobians of every parameter)
        done: list[Polished] = []
        for r in np.argsort(_rel_errors(final, res.params, x, y)):
            done.append(polish(final, _take(res.params, r), x, y,
                               steps=polish_steps))
            if done[-1].rel_error <= good_enough:
                break
        # keys[-1], unused by the stages, is the pass's key for the selection by fit
        return done, clusters, supports, n_restarts, n_steps, wide, expanded, keys[-1]

    def by_fit(wide, expanded, key):
        """The selection by fit on the best ``select`` expanded students, best first, until
        one reaches ``good_enough``: (polished pruned students, the expanded students'
        polish steps, restarts and Adam steps trained for it). Where the last stage's
        students have more parameters than ``SELECT_PARAMS_PER_OUTPUT`` per output, it
        trains ``restarts`` students of the widest last layer within that bound (no
        narrower than the teacher's) from the last stage's fixed layers, and selects from
        those."""
        fixed = {n: _take(expanded[n], 0) for n in hidden[:-1]}
        n_out = int(np.size(y))
        cap = widths[-1]
        while (cap < factor * widths[-1]
               and _n_params(widen(model, [*widths[:-1], cap + 1]), x.shape)
               <= SELECT_PARAMS_PER_OUTPUT * n_out):
            cap += 1
        n_restarts = n_steps = 0
        if _n_params(wide, x.shape) > SELECT_PARAMS_PER_OUTPUT * n_out:
            wide = widen(model, [*widths[:-1], cap])
            k_init, k_fit = jax.random.split(key)
            p0 = _init(wide, k_init, x.shape, restarts)
            p0 = {n: (_repeat(fixed[n], restarts) if n in fixed else v) for n, v in p0.items()}
            expanded = _fit(wide, p0, x, y, key=k_fit, steps=steps, restarts=restarts,
                            whiten=pre).params
            n_restarts, n_steps = restarts, restarts * steps
        out, taken = [], 0
        for r in np.argsort(_rel_errors(wide, expanded, x, y))[:select]:
            grown = polish(wide, _take(expanded, r), x, y,
                           steps=select_steps)
            taken += grown.steps
            if not grown.rel_error <= prune_within:
                continue
            pruned = prune_by_fit(wide, grown.params, x, y, widths[-1])
            out.append(polish(final, pruned, x, y, steps=select_steps))
            if out[-1].rel_error <= good_enough:
                break
        return out, taken, n_restarts, n_steps

    def reached(done):
        return bool(done) and min(d.rel_error for d in done) <= good_enough

    done: list[Polished] = []
    selected: list[Polished] = []
    n_restarts = n_steps = used = extra_steps = 0
    while used < attempts and not reached(done):
        # the first attempt draws from ``key`` itself, a later one from a key folded from it
        tried, clusters, supports, r, n, wide, expanded, k_select = attempt(
            key if used == 0 else jax.random.fold_in(key, used))
        done += tried
        n_restarts, n_steps, used = n_restarts + r, n_steps + n, used + 1
        if select and not reached(done):
            more, taken, r, n = by_fit(wide, expanded, k_select)
            done += more
            selected += more
            extra_steps += taken
            n_restarts, n_steps = n_restarts + r, n_steps + n
    best_done = min(done, key=lambda d: d.rel_error)
    params = best_done.params
    rank, n_params, s = jacobian_rank(final, params, x)
    expected = n_params - sum(widths)
    gap = (float(s[expected - 1] / s[0]) if 0 < expected <= len(s) else 0.0,
           float(s[expected] / s[0]) if expected < len(s) else 0.0)
    return Recovered(params, best_done.rel_error, clusters, supports, used, n_restarts,
                     n_steps, sum(d.steps for d in done) + extra_steps,
                     time.perf_counter() - t0, rank, expected, rank == expected, gap,
                     any(d is best_done for d in selected))


class Plain(NamedTuple):
    """What ``plain_restarts`` returns.

    Attributes:
      params: the polished students, each leaf with a leading [restarts] axis.
      train_rel_errors: [restarts] ``||student(x) - y|| / ||y||`` on the training images.
      restart_steps: the Adam steps run, summed over restarts.
      polish_steps: the Levenberg-Marquardt steps taken, summed over restarts.
      wall_s: seconds, compiles included.
    """

    params: dict
    train_rel_errors: np.ndarray
    restart_steps: int
    polish_steps: int
    wall_s: float


def plain_restarts(
    model: nn.Stack,
    x: Array,
    y: Array,
    *,
    key: Array,
    restarts: int = 8,
    steps: int = 2000,
    polish_steps: int = 30,
) -> Plain:
    """The baseline ``recover`` is measured against: ordinary restarts of ``fit`` at
    ``model``'s own width (no expansion, no clustering), with ``recover``'s Adam schedule and
    the same ``polish`` of every restart.

    Args:
      model: the architecture, at the width to recover.
      x: training images [N, H, W, C].
      y: the targets [N, h, w, c].
      key: a PRNG key.
      restarts: random initialisations, trained at once (``fit(..., restarts=...)``).
      steps: Adam steps per restart.
      polish_steps: the most Levenberg-Marquardt steps per restart.

    Returns:
      A ``Plain``.
    """
    import time

    if restarts < 1:
        raise ValueError(f"plain_restarts: `restarts` (={restarts}) must be >= 1.")
    t0 = time.perf_counter()
    k_init, k_fit = jax.random.split(key)
    res = _fit(model, _init(model, k_init, x.shape, restarts), x, y, key=k_fit, steps=steps,
               restarts=restarts)
    done = [polish(model, _take(res.params, r), x, y,
                   steps=polish_steps) for r in range(restarts)]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[d.params for d in done])
    return Plain(params, np.array([d.rel_error for d in done]), restarts * steps,
                 sum(d.steps for d in done), time.perf_counter() - t0)
