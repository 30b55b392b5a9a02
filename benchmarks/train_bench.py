"""Training-step timings: jaxconv.fit and a jitted jaxconv.nn loop vs flax nnx, equinox, torch
CPU and raw jax/lax, on six small training workloads (T1-T6).

The jitted loop and flax nnx run twice: compiled with XLA's default options (``loop``,
``flax``) and with ``jaxconv.compiler_options()`` (``loop_opts``, ``flax_opts``), as a user
would pass them to ``jax.jit``; ``fit/loop`` is to the faster of the two loops. ``flax_dropin``
is the ``flax`` model with ``jaxconv.interop.flax_nnx.Conv`` for ``nnx.Conv`` (XLA's default
options): what the drop-in changes in a user's own nnx training step. It is jaxconv, not a
peer.

A step is forward, backward and an Adam(1e-3) update, in float32, from the same initial weights
and on the same minibatches in every library. Each implementation first does one untimed
warm-up run (it compiles, and its first losses are checked against ``loop``'s to a relative
1e-3); then rounds of timed runs of S steps each, interleaved (one run of every implementation
per round, in a rotated order), each run synchronised at its end. The figure is the median over
rounds of run time / S; ratios are to the fastest peer of the same run. Timings live here, never
in tests (DESIGN.md: "Measure, don't guess").

Run: ``python benchmarks/train_bench.py [--quick] [--workloads T1,T2] [--impls fit,loop,torch]
[--out benchmarks/train_results.json]`` (``make bench`` installs flax, equinox and
scikit-learn; torch is used only if installed).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxconv
from jaxconv import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.join(os.path.dirname(_HERE), "experiments")]
import bench  # noqa: E402 - the conv benchmark: machine description, peers, contention

IMPLS = ("fit", "loop", "loop_opts", "flax", "flax_opts", "flax_dropin", "equinox", "torch",
         "jax")
PEERS = ("flax", "flax_opts", "equinox", "torch", "jax")
LOOPS = ("loop", "loop_opts")  # the same jaxconv.nn model: fit/loop is to the faster
LR = 1e-3
# Losses of the first check_steps steps must agree with loop's to this relative error: every
# implementation computes the same float32 function from the same weights and batches.
REL_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# A small model description, read by one builder per library (channels-last shapes).


class Conv(NamedTuple):
    features: int
    kernel: int = 3
    padding: str = "SAME"
    groups: int = 1
    bias: bool = True


class Dense(NamedTuple):
    features: int


class MaxPool(NamedTuple):
    window: int = 2  # stride = window


class AvgPool(NamedTuple):
    window: int = 2  # stride = window, no padding


class GlobalPool(NamedTuple):
    reduce: str = "avg"


class Residual(NamedTuple):
    block: tuple


RELU, FLATTEN = "relu", "flatten"


class Workload(NamedTuple):
    name: str
    what: str
    model: tuple
    loss: str  # "mse" (targets like the output) or "ce" (integer labels)
    batch: int | None  # None: full batch
    data: Callable[[], tuple[np.ndarray, np.ndarray]]  # x [n, H, W, C] float32, targets


def _cross_data():
    # 64 noise images, targets from the 3x3 cross; one compile instead of one per eager op
    x, y, _, _ = jax.jit(bench.train_problem, static_argnums=0)(0)
    return np.asarray(x), np.asarray(y)


def _digits_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype(np.float32), d.target.astype(np.int32)


def _lenet_data():
    # digits upsampled 8x8 -> 32x32 by 4x4 blocks, scaled to [0, 1]: LeNet-5's input size
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images, np.ones((1, 4, 4))) / 16.0
    return x[..., None].astype(np.float32), d.target.astype(np.int32)


def _shapes_data():
    # the experiment's model and data: 2048 training images
    try:  # where the experiments' shared tasks live now (importing the notebook runs it)
        from jaxconv._tasks import SHAPES_MODEL, make_shapes
    except ImportError:
        from learn_features import SHAPES_MODEL, make_shapes

    if SHAPES_MODEL.layers != tuple(nn_layers(WORKLOADS["T3"].model)):
        print("note: T3's model differs from experiments/learn_features.py's SHAPES_MODEL")
    k_data, _ = jax.random.split(jax.random.split(jax.random.key(0))[0])
    x, y = make_shapes(k_data, 2048 + 1024)
    return np.asarray(x[:2048]), np.asarray(y[:2048]).astype(np.int32)


def _random_data(shape, classes=10):
    def make():  # numpy's generator: an eager jax draw this size takes seconds to compile
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, np.float32)
        return x, rng.integers(0, classes, shape[:1]).astype(np.int32)

    return make


WORKLOADS = {
    w.name: w
    for w in (
        Workload("T1", "cross recovery: 64 x 16x16x1, 3x3 1->1 conv, MSE, full batch",
                 (Conv(1, 3, "VALID", bias=False),), "mse", None, _cross_data),
        Workload("T2", "sklearn digits: 1797 x 8x8x1, 2 convs + 2 dense, batch 64",
                 (Conv(16), RELU, MaxPool(2), Conv(32), RELU, FLATTEN, Dense(64), RELU,
                  Dense(10)), "ce", 64, _digits_data),
        Workload("T3", "learn_features CNN: 2048 x 16x16x1 shapes, batch 64",
                 (Conv(8), RELU, MaxPool(2), Conv(16, 3, "VALID"), RELU, GlobalPool("max"),
                  Dense(4)), "ce", 64, _shapes_data),
        Workload("T4", "residual block: 256 x 32x32x3, 3->32 conv + Residual[2 convs 32->32], "
                 "batch 32",
                 (Conv(32), RELU, Residual((Conv(32), RELU, Conv(32))), RELU, GlobalPool(),
                  Dense(10)), "ce", 32, _random_data((256, 32, 32, 3))),
        Workload("T5", "depthwise-separable: 256 x 32x32x32, depthwise 3x3 + pointwise 1x1 "
                 "32->64, batch 32",
                 (Conv(32, 3, groups=32), RELU, Conv(64, 1), RELU, GlobalPool(), Dense(10)),
                 "ce", 32, _random_data((256, 32, 32, 32))),
        Workload("T6", "LeNet-5: 1797 digits upsampled to 32x32x1, conv 5x5 1->6, avg pool, "
                 "conv 5x5 6->16, avg pool, dense 120-84-10, batch 64",
                 (Conv(6, 5, "VALID"), RELU, AvgPool(2), Conv(16, 5, "VALID"), RELU,
                  AvgPool(2), FLATTEN, Dense(120), RELU, Dense(84), RELU, Dense(10)),
                 "ce", 64, _lenet_data),
    )
}


class Settings(NamedTuple):
    run_s: float  # target seconds per timed run (S steps)
    min_steps: int
    max_steps: int
    rounds: int
    check_steps: int  # steps of the warm-up run, whose losses are checked against loop's
    # fit excludes compiling from wall_s and caches its compiled chunk (the timed runs, all of
    # S steps, reuse the first one's); --quick skips its warm-up and checks its first timed
    # run's losses
    fit_warmup: bool


FULL = Settings(0.5, 5, 5000, 7, 20, True)
QUICK = Settings(0.05, 3, 200, 1, 3, False)  # min_steps >= check_steps: fit checks a timed run


# --------------------------------------------------------------------------------------------
# The shared problem: data in both layouts, nn params, the same weights for the peers.


class Weights(NamedTuple):
    kernel: np.ndarray  # conv [kh, kw, C // groups, O]; dense [in, out]
    bias: np.ndarray | None
    flat_hwc: tuple | None  # a Dense's input was flattened from [H, W, C]: NCHW peers reorder


def nn_layers(spec) -> list:
    out = []
    for s in spec:
        if isinstance(s, Conv):
            out.append(nn.Conv(s.features, s.kernel, padding=s.padding, groups=s.groups,
                               use_bias=s.bias))
        elif isinstance(s, Dense):
            out.append(nn.Dense(s.features))
        elif isinstance(s, MaxPool):
            out.append(nn.MaxPool(s.window))
        elif isinstance(s, AvgPool):
            out.append(nn.AvgPool(s.window))
        elif isinstance(s, GlobalPool):
            out.append(nn.GlobalPool(s.reduce))
        elif isinstance(s, Residual):
            out.append(nn.Residual(nn_layers(s.block)))
        else:
            out.append(nn.Activation("relu") if s == RELU else nn.Flatten())
    return out


def _weights(spec, model: nn.Stack, params, shape) -> list[Weights]:
    """Every conv's and dense's weights in description order (depth first)."""
    out, flat_from = [], None
    for s, name, layer in zip(spec, model.names, model.layers, strict=True):
        p = params.get(name, {})
        if isinstance(s, Residual):
            out += _weights(s.block, layer.block, p, shape)
        elif isinstance(s, Conv | Dense):
            bias = np.asarray(p["bias"]) if "bias" in p else None
            out.append(Weights(np.asarray(p["kernel"]), bias,
                               flat_from if isinstance(s, Dense) else None))
        flat_from = shape[1:] if s == FLATTEN else None
        shape = layer.output_shape(shape)
    return out


class Batches:
    """fit's minibatches: epoch ``e`` is ``permutation(fold_in(key, e), n)`` cut into
    ``n // batch`` batches (the rest sit the epoch out)."""

    def __init__(self, key, n: int, batch: int | None):
        self.key, self.n, self.batch, self.rows = key, n, batch, []

    def upto(self, steps: int) -> list[np.ndarray] | None:
        if self.batch is None:
            return None
        per_epoch = self.n // self.batch
        while len(self.rows) < steps:
            e = len(self.rows) // per_epoch
            order = np.asarray(jax.random.permutation(jax.random.fold_in(self.key, e), self.n))
            self.rows += [order[i * self.batch:(i + 1) * self.batch] for i in range(per_epoch)]
        return self.rows[:steps]


class Problem(NamedTuple):
    wl: Workload
    x: np.ndarray  # NHWC
    y: np.ndarray
    model: nn.Stack
    params: dict
    weights: list[Weights]
    key: jax.Array  # fit's key, which orders the minibatches
    batches: Batches

    @property
    def x_nchw(self) -> np.ndarray:
        return np.ascontiguousarray(self.x.transpose(0, 3, 1, 2))

    @property
    def y_nchw(self) -> np.ndarray:
        return np.ascontiguousarray(self.y.transpose(0, 3, 1, 2)) if self.y.ndim == 4 else self.y


def make_problem(wl: Workload) -> Problem:
    x, y = wl.data()
    model = nn.Stack(nn_layers(wl.model))
    shape = (wl.batch or len(x), *x.shape[1:])
    params = model.init(jax.random.key(1), shape)
    key = jax.random.key(2)
    return Problem(wl, x, y, model, params, _weights(wl.model, model, params, shape), key,
                   Batches(key, len(x), wl.batch))


def _loss(kind: str, out, y):
    if kind == "mse":
        return jnp.mean((out - y) ** 2)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))


def _take(x, y, idx):
    return (x, y) if idx is None else (x[idx], y[idx])


# --------------------------------------------------------------------------------------------
# Runners: run(steps, first) -> Run. Each run starts again from the initial weights.


class Run(NamedTuple):
    per_step_s: float
    losses: np.ndarray
    compile_s: float | None  # fit: its compile; loops: the first step of a `first` run


def _jax_runner(step, state0, x, y, batches: Batches):
    """A Python loop of a compiled ``step(state, x, y, idx) -> (state, loss)``."""
    x, y, cache = jnp.asarray(x), jnp.asarray(y), {}

    def run(steps: int, first: bool = False) -> Run:
        if steps not in cache:  # device index arrays made before the clock starts
            rows = batches.upto(steps)
            cache[steps] = [None] * steps if rows is None else [jnp.asarray(r) for r in rows]
        idx = cache[steps]
        state, losses, t_first = state0, [], None
        t0 = time.perf_counter()
        for t in range(steps):
            state, loss = step(state, x, y, idx[t])
            losses.append(loss)
            if first and t == 0:
                jax.block_until_ready(loss)
                t_first = time.perf_counter()
        jax.block_until_ready((state, losses))
        t2 = time.perf_counter()
        per_step = (t2 - t_first) / max(steps - 1, 1) if first else (t2 - t0) / steps
        return Run(per_step, np.asarray(jax.device_get(losses)),
                   None if t_first is None else t_first - t0)

    return run


def _options(opts: bool) -> dict | None:
    """What ``jax.jit(..., compiler_options=)`` gets: jaxconv's options, or XLA's defaults."""
    return jaxconv.compiler_options() if opts else None


def _optax_runner(loss, params0, x, y, batches, opts: bool = False):
    """jax.jit of value_and_grad + optax.adam, for ``loss(params, x, y)``."""
    opt = optax.adam(LR)

    @functools.partial(jax.jit, compiler_options=_options(opts))
    def step(state, x, y, idx):
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, *_take(x, y, idx))
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    return _jax_runner(step, (params0, opt.init(params0)), x, y, batches)


def build_fit(p: Problem, mods):
    def loss_fn(params, batch):
        return _loss(p.wl.loss, p.model.apply(params, batch[0]), batch[1])

    data = (jnp.asarray(p.x), jnp.asarray(p.y))
    opt = optax.adam(LR)  # one object: later runs reuse fit's compiled chunk, as a notebook does

    def run(steps: int, first: bool = False) -> Run:
        r = jaxconv.fit(loss_fn, p.params, opt, data, steps=steps,
                        batch_size=p.wl.batch, key=p.key, progress=False)
        return Run(r.wall_s / steps, np.asarray(r.losses), r.compile_s)

    return run


def build_loop(p: Problem, mods, opts: bool = False):
    loss = lambda params, x, y: _loss(p.wl.loss, p.model.apply(params, x), y)
    return _optax_runner(loss, p.params, p.x, p.y, p.batches, opts)


def _lax_apply(spec, params, x, it=None):
    """Raw jax/lax, NHWC/HWIO; ``params`` is the list of {"w", "b"} in description order."""
    it = iter(params) if it is None else it
    for s in spec:
        if isinstance(s, Conv):
            q = next(it)
            x = lax.conv_general_dilated(x, q["w"], (1, 1), s.padding,
                                         dimension_numbers=bench.DN, feature_group_count=s.groups)
            x = x + q["b"] if "b" in q else x
        elif isinstance(s, Dense):
            q = next(it)
            x = x @ q["w"] + q["b"]
        elif isinstance(s, MaxPool):
            w = (1, s.window, s.window, 1)
            x = lax.reduce_window(x, -jnp.inf, lax.max, w, w, "VALID")
        elif isinstance(s, AvgPool):
            w = (1, s.window, s.window, 1)
            x = lax.reduce_window(x, 0.0, lax.add, w, w, "VALID") / (s.window * s.window)
        elif isinstance(s, GlobalPool):
            x = jnp.mean(x, (1, 2)) if s.reduce == "avg" else jnp.max(x, (1, 2))
        elif isinstance(s, Residual):
            x = x + _lax_apply(s.block, params, x, it)
        else:
            x = jax.nn.relu(x) if s == RELU else x.reshape(x.shape[0], -1)
    return x


def build_jax(p: Problem, mods):
    params = [{"w": jnp.asarray(w.kernel), **({} if w.bias is None else {"b": jnp.asarray(w.bias)})}
              for w in p.weights]
    loss = lambda params, x, y: _loss(p.wl.loss, _lax_apply(p.wl.model, params, x), y)
    return _optax_runner(loss, params, p.x, p.y, p.batches)


def _nchw_dense(w: Weights) -> np.ndarray:
    """A Dense kernel whose rows follow an NCHW flatten ([C, H, W]) instead of [H, W, C]."""
    if w.flat_hwc is None:
        return w.kernel
    h, wd, c = w.flat_hwc
    return w.kernel.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)


def build_flax(p: Problem, mods, opts: bool = False, dropin: bool = False):
    nnx = mods["flax"]
    if dropin:
        from jaxconv.interop import flax_nnx
    conv_cls = flax_nnx.Conv if dropin else nnx.Conv

    class Res(nnx.Module):
        def __init__(self, block):
            self.block = block

        def __call__(self, x):
            return x + self.block(x)

    def layers(spec, it):
        out = []
        for s in spec:
            if isinstance(s, Conv | Dense):
                w = next(it)
                # initialisers that return the shared weights: no random draw to compile
                init = {"kernel_init": lambda *_, a=w.kernel: jnp.asarray(a),
                        "bias_init": lambda *_, a=w.bias: jnp.asarray(a), "rngs": nnx.Rngs(0)}
                if isinstance(s, Conv):
                    m = conv_cls(w.kernel.shape[2] * s.groups, s.features, (s.kernel,) * 2,
                                 padding=s.padding, feature_group_count=s.groups,
                                 use_bias=s.bias, **init)
                else:
                    m = nnx.Linear(w.kernel.shape[0], s.features, **init)
            elif isinstance(s, MaxPool):
                win = (s.window,) * 2
                m = lambda x, win=win: nnx.max_pool(x, win, strides=win)
            elif isinstance(s, AvgPool):
                win = (s.window,) * 2
                m = lambda x, win=win: nnx.avg_pool(x, win, strides=win)
            elif isinstance(s, GlobalPool):
                m = (lambda x: x.mean((1, 2))) if s.reduce == "avg" else (lambda x: x.max((1, 2)))
            elif isinstance(s, Residual):
                m = Res(nnx.Sequential(*layers(s.block, it)))
            else:
                m = nnx.relu if s == RELU else (lambda x: x.reshape(x.shape[0], -1))
            out.append(m)
        return out

    model = nnx.Sequential(*layers(p.wl.model, iter(p.weights)))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    # split/merge around a plain jax.jit: flax's performance guide's fast path (nnx.jit
    # would add a Python graph traversal per step)
    graphdef, state0 = nnx.split((model, optimizer))

    @functools.partial(jax.jit, compiler_options=_options(opts))
    def step(state, x, y, idx):
        model, optimizer = nnx.merge(graphdef, state)
        xb, yb = _take(x, y, idx)
        value, grads = nnx.value_and_grad(lambda m: _loss(p.wl.loss, m(xb), yb))(model)
        optimizer.update(model, grads)
        return nnx.split((model, optimizer))[1], value

    return _jax_runner(step, state0, p.x, p.y, p.batches)


def build_equinox(p: Problem, mods):
    eqx = mods["equinox"]

    class Res(eqx.Module):
        block: eqx.nn.Sequential

        def __call__(self, x, *, key=None):
            return x + self.block(x)

    def with_weights(make, *args, weight, bias, **kwargs):
        # built abstractly (no random init to compile), then given the shared weights
        m = eqx.filter_eval_shape(make, *args, key=jax.random.key(0), **kwargs)
        m = eqx.tree_at(lambda m: m.weight, m, jnp.asarray(weight))
        return m if bias is None else eqx.tree_at(lambda m: m.bias, m, jnp.asarray(bias))

    def layers(spec, it):
        out = []
        for s in spec:
            if isinstance(s, Conv):
                w = next(it)
                m = with_weights(eqx.nn.Conv2d, w.kernel.shape[2] * s.groups, s.features,
                                 s.kernel, padding=s.padding, groups=s.groups,
                                 use_bias=s.bias, weight=w.kernel.transpose(3, 2, 0, 1),
                                 bias=None if w.bias is None else w.bias[:, None, None])
            elif isinstance(s, Dense):
                w = next(it)
                m = with_weights(eqx.nn.Linear, w.kernel.shape[0], s.features,
                                 weight=_nchw_dense(w).T, bias=w.bias)
            elif isinstance(s, MaxPool):
                m = eqx.nn.MaxPool2d(s.window, stride=s.window)
            elif isinstance(s, AvgPool):
                m = eqx.nn.AvgPool2d(s.window, stride=s.window)
            elif isinstance(s, GlobalPool):
                m = eqx.nn.Lambda(lambda x, r=s.reduce: x.mean((1, 2)) if r == "avg"
                                  else x.max((1, 2)))
            elif isinstance(s, Residual):
                m = Res(eqx.nn.Sequential(layers(s.block, it)))
            else:
                m = eqx.nn.Lambda(jax.nn.relu if s == RELU else jnp.ravel)
            out.append(m)
        return out

    model = eqx.nn.Sequential(layers(p.wl.model, iter(p.weights)))
    opt = optax.adam(LR)
    loss = lambda m, x, y: _loss(p.wl.loss, jax.vmap(m)(x), y)

    @eqx.filter_jit
    def step(state, x, y, idx):
        m, opt_state = state
        value, grads = eqx.filter_value_and_grad(loss)(m, *_take(x, y, idx))
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(m, eqx.is_array))
        return (eqx.apply_updates(m, updates), opt_state), value

    state0 = (model, opt.init(eqx.filter(model, eqx.is_array)))
    return _jax_runner(step, state0, p.x_nchw, p.y_nchw, p.batches)


def build_torch(p: Problem, mods):
    torch = mods["torch"]
    tnn = torch.nn

    class Res(tnn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    def t(a):
        return torch.from_numpy(np.array(a))  # a writable C-contiguous copy

    def layers(spec, it):
        out = []
        for s in spec:
            if isinstance(s, Conv | Dense):
                w = next(it)
                if isinstance(s, Conv):
                    m = tnn.Conv2d(w.kernel.shape[2] * s.groups, s.features, s.kernel,
                                   padding=s.padding.lower() if s.padding == "SAME" else 0,
                                   groups=s.groups, bias=s.bias)
                    kernel = w.kernel.transpose(3, 2, 0, 1)
                else:
                    m, kernel = tnn.Linear(w.kernel.shape[0], s.features), _nchw_dense(w).T
                with torch.no_grad():
                    m.weight.copy_(t(kernel))
                    if w.bias is not None:
                        m.bias.copy_(t(w.bias))
            elif isinstance(s, MaxPool):
                m = tnn.MaxPool2d(s.window)
            elif isinstance(s, AvgPool):
                m = tnn.AvgPool2d(s.window)
            elif isinstance(s, GlobalPool):
                pool = tnn.AdaptiveAvgPool2d(1) if s.reduce == "avg" else tnn.AdaptiveMaxPool2d(1)
                m = tnn.Sequential(pool, tnn.Flatten())
            elif isinstance(s, Residual):
                m = Res(tnn.Sequential(*layers(s.block, it)))
            else:
                m = tnn.ReLU() if s == RELU else tnn.Flatten()
            out.append(m)
        return out

    F = torch.nn.functional
    x, y = t(p.x_nchw), t(p.y_nchw).long() if p.wl.loss == "ce" else t(p.y_nchw)
    loss_fn = F.mse_loss if p.wl.loss == "mse" else F.cross_entropy  # both mean-reduced
    cache = {}

    def run(steps: int, first: bool = False) -> Run:
        net = tnn.Sequential(*layers(p.wl.model, iter(p.weights)))
        opt = torch.optim.Adam(net.parameters(), lr=LR)  # optax.adam's defaults and formula
        if steps not in cache:
            rows = p.batches.upto(steps)
            cache[steps] = [None] * steps if rows is None else [t(r).long() for r in rows]
        losses, t_first = [], None
        t0 = time.perf_counter()
        for i, idx in enumerate(cache[steps]):
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if first and i == 0:
                losses[0].item()
                t_first = time.perf_counter()
        losses[-1].item()  # CPU torch is synchronous; this is the last step's result
        t2 = time.perf_counter()
        per_step = (t2 - t_first) / max(steps - 1, 1) if first else (t2 - t0) / steps
        return Run(per_step, np.array([v.item() for v in losses]),
                   None if t_first is None else t_first - t0)

    return run


BUILDERS = {"fit": build_fit, "loop": build_loop,
            "loop_opts": functools.partial(build_loop, opts=True), "flax": build_flax,
            "flax_opts": functools.partial(build_flax, opts=True),
            "flax_dropin": functools.partial(build_flax, dropin=True), "equinox": build_equinox,
            "torch": build_torch, "jax": build_jax}


# --------------------------------------------------------------------------------------------
# Timing.


def _rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    k = min(len(got), len(ref))
    return float(np.max(np.abs(got[:k] - ref[:k]) / np.maximum(np.abs(ref[:k]), 1e-12)))


def bench_workload(wl: Workload, impls, mods, s: Settings) -> dict:
    p = make_problem(wl)
    entry: dict[str, Any] = {"workload": wl.name, "what": wl.what, "x_shape": list(p.x.shape),
                             "batch": wl.batch, "loss": wl.loss, "results": {}, "errors": {}}
    runners, warm = {}, {}
    for name in impls:
        try:
            runners[name] = BUILDERS[name](p, mods)
            if name != "fit" or s.fit_warmup:
                warm[name] = runners[name](s.check_steps, True)
        except Exception as e:  # noqa: BLE001 - report the implementation, keep the others
            entry["errors"][name] = f"{type(e).__name__}: {e}"
            runners.pop(name, None)
    if not runners:
        return entry
    est = statistics.median(r.per_step_s for r in warm.values()) if warm else 1e-3
    steps = max(s.min_steps, min(s.max_steps, round(s.run_s / max(est, 1e-7))))
    ref_name = next((n for n in ("loop", "jax", *runners) if n in runners), None)
    samples: dict[str, list[Run]] = {n: [] for n in runners}
    names = list(runners)
    contention = bench.Contention()
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name in entry["errors"]:
                continue
            time.sleep(0.005)  # a gap, so one library's spinning threads don't tax the next
            gc.collect()
            gc.disable()
            try:
                samples[name].append(runners[name](steps))
            except Exception as e:  # noqa: BLE001
                entry["errors"][name] = f"{type(e).__name__}: {e}"
            finally:
                gc.enable()
    entry.update(steps_per_run=steps, rounds=s.rounds, check_steps=s.check_steps,
                 reference=ref_name, others_cpu=contention.others())
    for name, runs in samples.items():
        if name in entry["errors"]:
            continue
        warm.setdefault(name, runs[0])  # fit without warm-up: its first s.min_steps losses
        per = [r.per_step_s * 1e6 for r in runs]
        compiles = [r.compile_s for r in runs if r.compile_s is not None]
        rel = _rel_diff(warm[name].losses, warm[ref_name].losses)
        entry["results"][name] = {
            "median_us": statistics.median(per), "min_us": min(per), "max_us": max(per),
            "compile_s": statistics.median(compiles) if compiles else warm[name].compile_s,
            "loss_rel_diff": rel, "loss_ok": bool(rel <= REL_TOL),
            "first_losses": warm[name].losses.tolist(),
        }
    res = entry["results"]
    peers = [n for n in PEERS if n in res]
    if peers:
        best = min(peers, key=lambda n: res[n]["median_us"])
        entry["best_peer"] = best
        for mine in ("fit", "loop"):
            if mine in res:
                entry[f"{mine}_ratio"] = res[mine]["median_us"] / res[best]["median_us"]
    loops = [n for n in LOOPS if n in res]
    if "fit" in res and loops:
        fastest = min(loops, key=lambda n: res[n]["median_us"])
        entry["fastest_loop"] = fastest
        entry["fit_loop_ratio"] = res["fit"]["median_us"] / res[fastest]["median_us"]
    if "flax_dropin" in res and "flax" in res:
        entry["dropin_ratio"] = res["flax_dropin"]["median_us"] / res["flax"]["median_us"]
    return entry


# --------------------------------------------------------------------------------------------
# Report.


def _fmt_time(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1e3:.1f} ms" if us >= 1e4 else f"{us / 1e3:.2f} ms" if us >= 1e3 else \
        f"{us:.0f} us"


def markdown(report: dict) -> str:
    impls = report["settings"]["impls"]
    lines = [
        "| workload | steps/run | " + " | ".join(impls) + " | fit compile | best peer "
        "| fit/best | loop/best | fit/loop | dropin/flax | losses vs loop | others' CPU |",
        "|---|---:|" + "---:|" * len(impls) + "---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for e in report["workloads"]:
        res = e["results"]
        cells = [_fmt_time(res[n]["median_us"]) if n in res else "-" for n in impls]
        bad = {n: r["loss_rel_diff"] for n, r in res.items() if not r["loss_ok"]}
        check = "OK" if res and not bad else ", ".join(
            f"MISMATCH {n} {v:.1e}" for n, v in bad.items()) or "-"
        if res and e["reference"] != "loop":
            check += f" (vs {e['reference']})"
        fit_c = f"{res['fit']['compile_s']:.2f} s" if "fit" in res else "-"
        ratio = lambda k, e=e: f"{e[k]:.2f}" if k in e else "-"
        lines.append(
            f"| {e['workload']} | {e.get('steps_per_run', '-')} | " + " | ".join(cells)
            + f" | {fit_c} | {e.get('best_peer', '-')} | {ratio('fit_ratio')} "
            f"| {ratio('loop_ratio')} | {ratio('fit_loop_ratio')} | {ratio('dropin_ratio')} "
            f"| {check} "
            f"| {bench._fmt_pct(e.get('others_cpu'))} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short runs, 1 round, 3 checked steps (a smoke run, < 2 min idle)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help=f"comma-separated subset of {','.join(IMPLS)} (default: all)")
    p.add_argument("--out", default=os.path.join("benchmarks", "train_results.json"),
                   help="where to write the JSON report")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    s = QUICK if args.quick else FULL
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    wanted = [n.strip().lower() for n in args.impls.split(",") if n.strip()]
    if not set(names) <= set(WORKLOADS) or not set(wanted) <= set(IMPLS):
        print(f"train_bench: --workloads must name some of {list(WORKLOADS)} and --impls some "
              f"of {list(IMPLS)}, got {args.workloads!r} and {args.impls!r}.")
        return 2
    t_start, load_before = time.perf_counter(), os.getloadavg()
    mods, skipped = bench.load_peers()
    if "torch" in mods:
        mods["torch"].set_num_threads(2)
    try:
        import sklearn  # noqa: F401 - T2's and T6's data
    except ImportError as e:
        for n in ("T2", "T6"):
            skipped[n] = f"sklearn not importable ({e}); pip install -e '.[bench]'"
        names = [n for n in names if n not in ("T2", "T6")]
    for name, why in skipped.items():
        print(f"note: skipping {name}: {why}")
    impls = [n for n in wanted
             if n in ("fit", "loop", "loop_opts", "jax")
             or n.removesuffix("_opts").removesuffix("_dropin") in mods]
    report: dict[str, Any] = {
        "machine": bench.machine_info(mods),
        "settings": {**s._asdict(), "quick": args.quick, "impls": impls, "lr": LR,
                     "rel_tol": REL_TOL},
        "skipped": skipped,
        "load_before": {"loadavg": load_before, "uptime": bench._uptime()},
        "workloads": [],
    }
    report["machine"]["versions"]["scikit-learn"] = bench._version("scikit-learn")
    m = report["machine"]
    print(f"# {m['cpu']}, {m['usable_cores']} cores; load {load_before[0]:.2f}; "
          + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    for wname in names:
        t0 = time.perf_counter()
        e = bench_workload(WORKLOADS[wname], impls, mods, s)
        report["workloads"].append(e)
        summary = ", ".join(f"{n} {_fmt_time(r['median_us'])}" for n, r in e["results"].items())
        print(f"{wname} ({time.perf_counter() - t0:.1f} s, {e.get('steps_per_run')} steps/run): "
              f"{summary}", flush=True)
        for n, err in e["errors"].items():
            print(f"  error in {n}: {err}")
        for n, r in e["results"].items():
            if not r["loss_ok"]:
                print(f"  MISMATCH: {n}'s first {s.check_steps} losses differ from "
                      f"{e['reference']}'s by rel {r['loss_rel_diff']:.2e}")
    report["load_after"] = {"loadavg": os.getloadavg(), "uptime": bench._uptime()}
    report["elapsed_s"] = time.perf_counter() - t_start
    report["markdown"] = table = markdown(report)
    rounds = f"median over {s.rounds} interleaved rounds" if s.rounds > 1 else "one round"
    print(f"\nPer training step ({rounds}; Adam {LR}, "
          "float32):\n")
    print(table)
    print(f"\nload average before {load_before[0]:.2f}, after "
          f"{report['load_after']['loadavg'][0]:.2f}; {report['elapsed_s']:.0f} s in all")
    if args.out:
        bench.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
