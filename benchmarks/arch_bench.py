"""A property benchmark of ``jaxconv.fit`` on generated CNN architectures: per training step,
``fit`` vs the same ``jaxconv.nn`` model in a Python loop of a jitted step vs flax nnx.

A seeded generator draws small CNNs named nowhere else: 1-D, 2-D and 3-D inputs; kernels 1-7;
1-64 channels; stride, dilation, grouped, depthwise and causal convolutions; max, average and
global pooling; residual blocks; transposed convolutions (when ``jaxconv.nn`` has a
``ConvTranspose`` layer at run time); dense heads; classification (softmax cross-entropy) and
regression (MSE) losses. Architecture ``i`` of seed ``s`` depends only on ``(s, i)``.

Each architecture is trained with Adam(1e-3) on random data by:

- ``fit``: ``jaxconv.fit(loss_fn, params, optimizer, data, steps=S, batch_size=B, key=key)``,
  per step ``FitResult.wall_s / S`` (compiling excluded; the timed runs reuse its compiled
  executable);
- ``loop`` / ``loop_opts``: the same model and minibatches in a Python loop of a jitted
  value_and_grad + optax step, compiled with XLA's default options / with
  ``jaxconv.compiler_options()``; ``fit/loop`` is to the faster of the two;
- ``nnx`` / ``nnx_opts``: the same network in flax nnx (split/merge around ``jax.jit``) from
  the same initial weights, with either option set; skipped for features nnx lacks (said per
  architecture); ``fit/nnx`` is to the faster.

Every implementation first runs once untimed (compiling; its first 10 losses are checked
against ``loop``'s to a relative 1e-3), then R rounds of timed runs of S steps, interleaved in a
rotated order, each synchronised at its end (``block_until_ready``); a figure is the median
over rounds. ``loop`` is timed twice per round (``loop`` and ``loop_again``, the same
executable): their ratio is the run-to-run noise the ratios above should be read against.

Run: ``python benchmarks/arch_bench.py [--n 30] [--seed 0] [--quick] [--fit-modes]
[--out benchmarks/arch_results.json]``; it also writes a markdown summary next to the JSON.
Timings live here, never in tests (tests/test_arch_bench.py checks the generator and that
fit and the loop compute the same params).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import io
import json
import math
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

import jaxconv
from jaxconv import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import bench  # noqa: E402 - machine description, peers, contention, the report writer

LR = 1e-3
REL_TOL = 1e-3  # first losses vs loop's: the same float32 function from the same weights
# How many first losses are compared: later ones drift apart by chaos, not by a bug (max
# pools and argmax switch on float32 rounding differences over hundreds of Adam steps).
CHECK_STEPS = 10
IMPLS = ("fit", "loop", "loop_opts", "nnx", "nnx_opts")
DEFAULT_IMPLS = ("fit", "loop", "loop_opts", "nnx")  # nnx_opts: one more compile per draw
LOOPS = ("loop", "loop_opts")
NNX = ("nnx", "nnx_opts")
# Forward multiply-adds per conv layer are kept under this (a step is ~3x the forward), and
# under an eighth of it in 3-D (XLA:CPU's 3-D convs ran at ~20-60 MFLOP/s here): compiling,
# not stepping, then dominates an architecture's time.
MAX_MACS = 4e6
MAX_MACS_3D = MAX_MACS / 8
# The summary splits the architectures at this many flops per step (XLA's cost analysis):
# light steps, where a loop's per-call dispatch is a visible share of a step, and heavy ones.
STEP_FLOPS = 2e6


# --------------------------------------------------------------------------------------------
# The architecture description: small records, read by one builder per library.


class Conv(NamedTuple):
    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: str = "SAME"  # "SAME", "VALID" or "CAUSAL" (k_eff - 1 at the start of each dim)


class ConvT(NamedTuple):
    features: int
    kernel: int
    stride: int


class Act(NamedTuple):
    name: str  # a jax.nn function: relu, tanh, silu


class Pool(NamedTuple):
    reduce: str  # "max" or "avg"; window = stride, VALID
    window: int


class GlobalPool(NamedTuple):
    reduce: str


class Residual(NamedTuple):
    block: tuple


class Flatten(NamedTuple):
    pass


class Dense(NamedTuple):
    features: int


class Arch(NamedTuple):
    seed: int
    index: int
    input_shape: tuple[int, ...]  # one minibatch: [B, *spatial, C]
    examples: int  # rows of the data set (a few minibatches: fit shuffles epochs)
    spec: tuple
    loss: str  # "ce" (integer labels) or "mse"
    out: int  # classes or regression outputs
    features: tuple[str, ...]  # what the architecture exercises
    nnx_skip: str | None  # why flax nnx cannot express it, or None

    @property
    def ndim(self) -> int:
        return len(self.input_shape) - 2

    @property
    def description(self) -> str:
        return f"{self.ndim}-D {list(self.input_shape)} {self.loss}: " + describe(self.spec)


def describe(spec) -> str:
    parts = []
    for s in spec:
        if isinstance(s, Conv):
            extra = "".join([f" s{s.stride}" if s.stride > 1 else "",
                             f" d{s.dilation}" if s.dilation > 1 else "",
                             f" g{s.groups}" if s.groups > 1 else "",
                             f" {s.padding.lower()}" if s.padding != "SAME" else ""])
            parts.append(f"conv{s.kernel}x{s.features}{extra}")
        elif isinstance(s, ConvT):
            parts.append(f"convT{s.kernel}x{s.features} s{s.stride}")
        elif isinstance(s, Act):
            parts.append(s.name)
        elif isinstance(s, Pool):
            parts.append(f"{s.reduce}pool{s.window}")
        elif isinstance(s, GlobalPool):
            parts.append(f"global{s.reduce}")
        elif isinstance(s, Residual):
            parts.append(f"res[{describe(s.block)}]")
        elif isinstance(s, Flatten):
            parts.append("flatten")
        else:
            parts.append(f"dense{s.features}")
    return " ".join(parts)


def has_conv_transpose() -> bool:
    """Whether this checkout's ``jaxconv.nn`` has a transposed-conv layer (being added)."""
    return hasattr(nn, "ConvTranspose")


# --------------------------------------------------------------------------------------------
# The generator.

_CHANNELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_SPATIAL = {1: (32, 128), 2: (8, 32), 3: (4, 8)}
_BATCH = {1: (8, 16, 32, 64), 2: (8, 16, 32, 64), 3: (4, 8, 16)}


def _conv_out(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    k_eff = (k - 1) * dilation + 1
    if padding == "VALID":
        return (size - k_eff) // stride + 1
    if padding == "CAUSAL":
        return (size - 1) // stride + 1
    return -(-size // stride)  # SAME


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class _Draw:
    """The running state of one draw: the current shape and what has been used."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...], conv_t: bool):
        self.rng, self.shape, self.conv_t = rng, shape, conv_t
        self.used: set[str] = set()

    @property
    def size(self) -> int:
        return min(self.shape[1:-1])

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def _macs(self, k: int, c_in: int, c_out: int, groups: int, out_size: int) -> float:
        nd = len(self.shape) - 2
        return self.shape[0] * out_size ** nd * k ** nd * c_in // groups * c_out

    @property
    def budget(self) -> float:
        return MAX_MACS_3D if len(self.shape) == 5 else MAX_MACS

    def _fit_features(self, k: int, c_in: int, groups: int, out_size: int, want: int) -> int:
        """The largest multiple of ``groups`` <= ``want`` whose conv stays under the budget."""
        per = self._macs(k, c_in, 1, groups, out_size)
        most = int(self.budget // max(per, 1))
        f = min(want, max(most, 1))
        return max(groups, f // groups * groups)

    def conv(self, *, depthwise: bool = False, same_shape: bool = False) -> Conv:
        rng, c_in = self.rng, self.channels
        # a residual block keeps its shape: odd kernels, SAME, stride 1
        k = int(rng.choice([1, 3, 5])) if same_shape else int(rng.integers(1, 8))
        stride = dilation = 1
        padding = "SAME"
        if not same_shape:
            if self.size >= 6 and rng.random() < 0.25:
                stride = 2
            if stride == 1 and k > 1 and rng.random() < 0.2:
                dilation = 2
            padding = str(rng.choice(["SAME", "VALID", "CAUSAL"], p=[0.55, 0.25, 0.2]))
        while k > 1 and _conv_out(self.size, k, stride, dilation, padding) < 2:
            k -= 1  # keep at least 2 outputs per spatial dim
        if depthwise:
            groups = c_in
            want = c_in * int(rng.choice([1, 1, 2]))
        else:
            want = c_in if same_shape else int(rng.choice(_CHANNELS))
            common = [g for g in _divisors(c_in) if g > 1 and want % g == 0]
            groups = 1
            if common and not same_shape and rng.random() < 0.25:
                groups = int(rng.choice(common))
        out_size = _conv_out(self.size, k, stride, dilation, padding)
        features = want if same_shape else self._fit_features(k, c_in, groups, out_size, want)
        layer = Conv(features, k, stride, dilation, groups, padding)
        flags = {"stride": stride > 1, "dilation": dilation > 1, "depthwise": depthwise,
                 "groups": groups > 1 and not depthwise, "causal": padding == "CAUSAL",
                 f"kernel{k}": True}
        self.used.update(name for name, on in flags.items() if on)
        self.shape = (self.shape[0], *(_conv_out(s, k, stride, dilation, padding)
                                       for s in self.shape[1:-1]), features)
        return layer

    def act(self) -> Act:
        return Act(str(self.rng.choice(["relu", "relu", "tanh", "silu"])))

    def block(self) -> list:
        """One block: a conv (plain, depthwise, residual or transposed), its activation and
        maybe a pool."""
        rng = self.rng
        kinds = ["conv", "conv", "conv", "depthwise", "residual"]
        kinds += ["transpose"] if self.conv_t else []
        kind = str(rng.choice(kinds))
        out: list = []
        if kind == "depthwise" and self.channels > 1:
            out += [self.conv(depthwise=True), self.act()]
        elif kind == "residual":
            c = self.channels
            if c == 1 or self._macs(3, c, c, 1, self.size) * 2 > self.budget:
                out += [self.conv(), self.act()]  # a residual block this wide would be slow
            else:
                inner = [self.conv(same_shape=True), self.act(), self.conv(same_shape=True)]
                out += [Residual(tuple(inner)), self.act()]
                self.used.add("residual")
        elif kind == "transpose" and self.size <= 12:
            k, stride = int(rng.integers(1, 5)), int(rng.choice([1, 2]))
            features = self._fit_features(k, self.channels, 1, self.size * stride,
                                          int(rng.choice(_CHANNELS[:8])))
            out += [ConvT(features, k, stride), self.act()]
            self.shape = (self.shape[0], *(s * stride for s in self.shape[1:-1]), features)
            self.used.add("transpose")
        else:
            out += [self.conv(), self.act()]
        if self.size >= 4 and rng.random() < 0.4:
            reduce, window = str(rng.choice(["max", "avg"])), int(rng.choice([2, 2, 3]))
            window = min(window, self.size)
            out.append(Pool(reduce, window))
            self.shape = (self.shape[0], *(s // window for s in self.shape[1:-1]),
                          self.channels)
            self.used.add(f"{reduce}pool")
        return out


def generate(seed: int, index: int, *, conv_transpose: bool | None = None) -> Arch:
    """Architecture ``index`` of ``seed``: a function of ``(seed, index)`` and of whether
    transposed convs are drawn (default: whether ``jaxconv.nn`` has them)."""
    conv_t = has_conv_transpose() if conv_transpose is None else conv_transpose
    rng = np.random.default_rng([seed, index])
    nd = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    lo, hi = _SPATIAL[nd]
    size = int(rng.integers(lo, hi + 1))
    batch = int(rng.choice(_BATCH[nd]))
    c_in = int(rng.choice([1, 1, 2, 3, 4, 8]))
    d = _Draw(rng, (batch, *(size,) * nd, c_in), conv_t)
    spec: list = []
    for _ in range(int(rng.integers(1, 4))):
        spec += d.block()
    if rng.random() < 0.5:
        reduce = str(rng.choice(["avg", "max"]))
        spec.append(GlobalPool(reduce))
        d.used.add(f"global{reduce}pool")
    else:
        spec.append(Flatten())
    if rng.random() < 0.5:
        spec += [Dense(int(rng.choice([8, 16, 32, 64]))), d.act()]
    loss = str(rng.choice(["ce", "mse"]))
    out = int(rng.integers(2, 11)) if loss == "ce" else int(rng.integers(1, 5))
    spec.append(Dense(out))
    d.used.add("dense")
    nnx_skip = "transposed conv (nn.ConvTranspose's convention not mapped to nnx)" \
        if "transpose" in d.used else None
    return Arch(seed, index, (batch, *(size,) * nd, c_in), 4 * batch,
                tuple(spec), loss, out, tuple(sorted(d.used)), nnx_skip)


def draw(seed: int, n: int, conv_transpose: bool | None = None) -> list[Arch]:
    return [generate(seed, i, conv_transpose=conv_transpose) for i in range(n)]


# --------------------------------------------------------------------------------------------
# jaxconv.nn and flax nnx from a description.


def nn_layers(spec) -> list:
    out = []
    for s in spec:
        if isinstance(s, Conv):
            out.append(nn.Conv(s.features, s.kernel, stride=s.stride, dilation=s.dilation,
                               groups=s.groups, padding=s.padding))
        elif isinstance(s, ConvT):
            out.append(nn.ConvTranspose(s.features, s.kernel, stride=s.stride,  # type: ignore[attr-defined]
                                        padding="SAME"))
        elif isinstance(s, Act):
            out.append(nn.Activation(s.name))
        elif isinstance(s, Pool):
            out.append(nn.MaxPool(s.window) if s.reduce == "max" else nn.AvgPool(s.window))
        elif isinstance(s, GlobalPool):
            out.append(nn.GlobalPool(s.reduce))
        elif isinstance(s, Residual):
            out.append(nn.Residual(nn_layers(s.block)))
        elif isinstance(s, Flatten):
            out.append(nn.Flatten())
        else:
            out.append(nn.Dense(s.features))
    return out


def model_of(arch: Arch) -> nn.Stack:
    return nn.Stack(nn_layers(arch.spec))


def _weights(spec, model, params) -> list[dict]:
    """Every conv's and dense's params in description order (depth first)."""
    out = []
    for s, name, layer in zip(spec, model.names, model.layers, strict=True):
        if isinstance(s, Residual):
            out += _weights(s.block, layer.block, params.get(name, {}))
        elif isinstance(s, Conv | ConvT | Dense):
            out.append(params[name])
    return out


def nnx_model(arch: Arch, params, nnx):
    """The architecture in flax nnx, holding ``params``' weights (the same function)."""
    it = iter(_weights(arch.spec, model_of(arch), params))
    nd = arch.ndim

    class Res(nnx.Module):
        def __init__(self, block):
            self.block = block

        def __call__(self, x):
            return x + self.block(x)

    def layers(spec):
        out = []
        for s in spec:
            if isinstance(s, Conv | Dense):
                w = next(it)
                init = {"kernel_init": lambda *_, a=w["kernel"]: jnp.asarray(a),
                        "bias_init": lambda *_, a=w["bias"]: jnp.asarray(a),
                        "rngs": nnx.Rngs(0)}
                if isinstance(s, Conv):
                    k_eff = (s.kernel - 1) * s.dilation + 1
                    # flax's "CAUSAL" is 1-D only; jaxconv's is k_eff - 1 before every dim
                    pad = [(k_eff - 1, 0)] * nd if s.padding == "CAUSAL" else s.padding
                    m = nnx.Conv(w["kernel"].shape[-2] * s.groups, s.features, (s.kernel,) * nd,
                                 strides=s.stride, padding=pad, kernel_dilation=s.dilation,
                                 feature_group_count=s.groups, **init)
                else:
                    m = nnx.Linear(w["kernel"].shape[0], s.features, **init)
            elif isinstance(s, Act):
                m = getattr(jax.nn, s.name)
            elif isinstance(s, Pool):
                win = (s.window,) * nd
                pool = nnx.max_pool if s.reduce == "max" else nnx.avg_pool
                m = lambda x, pool=pool, win=win: pool(x, win, strides=win)
            elif isinstance(s, GlobalPool):
                axes = tuple(range(1, nd + 1))
                m = (lambda x, a=axes: x.mean(a)) if s.reduce == "avg" else \
                    (lambda x, a=axes: x.max(a))
            elif isinstance(s, Residual):
                m = Res(nnx.Sequential(*layers(s.block)))
            elif isinstance(s, Flatten):
                m = lambda x: x.reshape(x.shape[0], -1)
            else:
                raise ValueError(f"nnx cannot express {s}")
            out.append(m)
        return out

    return nnx.Sequential(*layers(arch.spec))


def conv_plans(arch: Arch) -> list[str]:
    """Each conv's input and kernel shapes and the lowering ``auto`` picks for it, with XLA's
    default options / with ``jaxconv.compiler_options()`` (``jaxconv.plan``; no compiling)."""
    out = []

    def walk(spec, model, shape):
        for s, layer in zip(spec, model.layers, strict=True):
            if isinstance(s, Residual):
                walk(s.block, layer.block, shape)
            elif isinstance(s, Conv):
                kernel = (*(s.kernel,) * (len(shape) - 2), shape[-1] // s.groups, s.features)
                kw = {"stride": s.stride, "padding": s.padding, "dilation": s.dilation,
                      "groups": s.groups}
                default = jaxconv.plan(shape, kernel, **kw).algorithm
                opts = jaxconv.plan(shape, kernel, compiler_options=jaxconv.compiler_options(),
                                    **kw).algorithm
                out.append(f"{list(shape)} * {list(kernel)}: {default}/{opts}")
            shape = layer.output_shape(shape)

    walk(arch.spec, model_of(arch), arch.input_shape)
    return out


# --------------------------------------------------------------------------------------------
# The training problem and its runners.


class Problem(NamedTuple):
    arch: Arch
    model: nn.Stack
    params: dict
    x: np.ndarray
    y: np.ndarray
    key: jax.Array  # fit's key: it orders the minibatches


def make_problem(arch: Arch) -> Problem:
    rng = np.random.default_rng([arch.seed, arch.index, 1])
    n, shape = arch.examples, arch.input_shape
    x = rng.standard_normal((n, *shape[1:]), np.float32)
    if arch.loss == "ce":
        y = rng.integers(0, arch.out, n).astype(np.int32)
    else:
        y = rng.standard_normal((n, arch.out), np.float32)
    model = model_of(arch)
    params = model.init(jax.random.key(arch.index), shape)
    return Problem(arch, model, params, x, y, jax.random.key(arch.seed))


def loss_value(kind: str, out, y):
    if kind == "mse":
        return jnp.mean((out - y) ** 2)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))


def minibatches(p: Problem, steps: int) -> list[np.ndarray]:
    """fit's minibatch rows: epoch ``e`` is ``permutation(fold_in(key, e), n)`` cut into
    ``n // batch`` batches (fit's documented order)."""
    n, batch = len(p.x), p.arch.input_shape[0]
    rows: list[np.ndarray] = []
    e = 0
    while len(rows) < steps:
        order = np.asarray(jax.random.permutation(jax.random.fold_in(p.key, e), n))
        rows += [order[i * batch:(i + 1) * batch] for i in range(n // batch)]
        e += 1
    return rows[:steps]


class Run(NamedTuple):
    per_step_s: float
    losses: np.ndarray
    state: Any  # the final params (fit, loop) or nnx state


def fit_runner(p: Problem, mode: str | None = None) -> Callable[[int], Run]:
    """``jaxconv.fit`` from ``p.params``; ``mode`` is passed only when given (the per-step
    mode of the fit rewrite)."""
    def loss_fn(params, batch):
        return loss_value(p.arch.loss, p.model.apply(params, batch[0]), batch[1])

    data = (jnp.asarray(p.x), jnp.asarray(p.y))
    opt = optax.adam(LR)  # one object: the timed runs reuse fit's compiled executable
    extra = {} if mode is None else {"mode": mode}

    def run(steps: int) -> Run:
        r = jaxconv.fit(loss_fn, p.params, opt, data, steps=steps,
                        batch_size=p.arch.input_shape[0], key=p.key, progress=False, **extra)
        return Run(r.wall_s / steps, np.asarray(r.losses), r.params)

    return run


def _jitted_runner(step, state0, p: Problem) -> Callable[[int], Run]:
    """A Python loop of a compiled ``step(state, x, y, idx) -> (state, loss)``."""
    x, y, cache = jnp.asarray(p.x), jnp.asarray(p.y), {}

    def run(steps: int) -> Run:
        if steps not in cache:  # device index arrays made before the clock starts
            cache[steps] = [jnp.asarray(r) for r in minibatches(p, steps)]
        state, losses = state0, []
        t0 = time.perf_counter()
        for idx in cache[steps]:
            state, loss = step(state, x, y, idx)
            losses.append(loss)
        jax.block_until_ready((state, losses))
        per_step = (time.perf_counter() - t0) / steps
        return Run(per_step, np.asarray(jax.device_get(losses)), state)

    return run


def _jit(opts: bool):
    options = jaxconv.compiler_options() if opts else None
    return lambda f: jax.jit(f, compiler_options=options)


def _loop_step(p: Problem, opts: bool):
    opt = optax.adam(LR)
    loss = lambda params, x, y: loss_value(p.arch.loss, p.model.apply(params, x), y)

    @_jit(opts)
    def step(state, x, y, idx):
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, x[idx], y[idx])
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    return step, (p.params, opt.init(p.params))


def loop_runner(p: Problem, opts: bool = False) -> Callable[[int], Run]:
    """The user's own loop: jit of value_and_grad + optax.adam over ``p.model``; the state
    returned is the params."""
    run = _jitted_runner(*_loop_step(p, opts), p)
    return lambda steps: (r := run(steps))._replace(state=r.state[0])


def step_flops(p: Problem) -> float | None:
    """XLA's cost analysis of one training step (forward, gradients, Adam), lowered only."""
    step, state = _loop_step(p, False)
    idx = jnp.arange(p.arch.input_shape[0])
    cost = step.lower(state, jnp.asarray(p.x), jnp.asarray(p.y), idx).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def nnx_runner(p: Problem, nnx, opts: bool = False) -> Callable[[int], Run]:
    model = nnx_model(p.arch, p.params, nnx)
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    graphdef, state0 = nnx.split((model, optimizer))  # flax's fast path: split/merge + jax.jit

    @_jit(opts)
    def step(state, x, y, idx):
        model, optimizer = nnx.merge(graphdef, state)
        xb, yb = x[idx], y[idx]
        value, grads = nnx.value_and_grad(lambda m: loss_value(p.arch.loss, m(xb), yb))(model)
        optimizer.update(model, grads)
        return nnx.split((model, optimizer))[1], value

    return _jitted_runner(step, state0, p)


# --------------------------------------------------------------------------------------------
# Timing.


class Settings(NamedTuple):
    run_s: float  # target seconds per timed run
    min_steps: int
    max_steps: int
    rounds: int


FULL = Settings(0.12, 5, 300, 5)
QUICK = Settings(0.05, 3, 100, 3)


def _rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    k = min(len(got), len(ref), CHECK_STEPS)
    return float(np.max(np.abs(got[:k] - ref[:k]) / np.maximum(np.abs(ref[:k]), 1e-12)))


def _best(res: dict, names) -> str | None:
    have = [n for n in names if n in res]
    return min(have, key=lambda n: res[n]) if have else None


def bench_arch(arch: Arch, impls, mods, s: Settings, fit_modes: tuple[str, ...] = ()) -> dict:
    entry: dict[str, Any] = {"index": arch.index, "description": arch.description,
                             "features": list(arch.features), "input_shape":
                             list(arch.input_shape), "loss": arch.loss, "errors": {},
                             "skipped": {}}
    try:
        entry["conv_plans"] = conv_plans(arch)
    except Exception as e:  # noqa: BLE001 - the plan is a description, not the benchmark
        entry["conv_plans"] = [f"{type(e).__name__}: {e}"]
    t_start = time.perf_counter()
    try:
        p = make_problem(arch)
    except Exception as e:  # noqa: BLE001 - a generator bug: report it, go on
        entry["errors"]["init"] = f"{type(e).__name__}: {e}"
        return entry
    entry["step_flops"] = step_flops(p)
    builders: dict[str, Callable[[], Callable[[int], Run]]] = {
        "fit": lambda: fit_runner(p), "loop": lambda: loop_runner(p),
        "loop_opts": lambda: loop_runner(p, True)}
    for mode in fit_modes:
        builders[f"fit_{mode}"] = lambda mode=mode: fit_runner(p, mode)
    if "flax" in mods:
        builders["nnx"] = lambda: nnx_runner(p, mods["flax"])
        builders["nnx_opts"] = lambda: nnx_runner(p, mods["flax"], True)
    wanted = [n for n in (*impls, *(f"fit_{m}" for m in fit_modes)) if n in builders]
    for name in impls:
        if name in NNX and "flax" not in mods:
            entry["skipped"][name] = "flax not importable"
        elif name in NNX and arch.nnx_skip:
            entry["skipped"][name] = arch.nnx_skip
            wanted.remove(name)

    # the step count from loop's speed, then one untimed run of every runner at that count
    # (fit compiles an executable per step count: the timed runs reuse it)
    runners: dict[str, Callable[[int], Run]] = {}
    try:
        runners["loop"] = builders["loop"]()
        runners["loop"](2)
        est = runners["loop"](2).per_step_s
    except Exception as e:  # noqa: BLE001
        entry["errors"]["loop"] = f"{type(e).__name__}: {e}"
        return entry
    steps = max(s.min_steps, min(s.max_steps, round(s.run_s / max(est, 1e-6))))
    warm: dict[str, Run] = {}
    for name in wanted:
        try:
            runners[name] = runners.get(name) or builders[name]()
            warm[name] = runners[name](steps)
        except Exception as e:  # noqa: BLE001 - report the implementation, keep the others
            entry["errors"][name] = f"{type(e).__name__}: {e}"
            runners.pop(name, None)
    entry["compile_and_warm_s"] = time.perf_counter() - t_start

    order = [n for n in wanted if n in runners] + ["loop_again"]
    runners["loop_again"] = runners["loop"]  # the same executable, timed as a second series
    samples: dict[str, list[float]] = {n: [] for n in order}
    contention = bench.Contention()
    for r in range(s.rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name in entry["errors"]:
                continue
            time.sleep(0.002)
            gc.collect()
            gc.disable()
            try:
                samples[name].append(runners[name](steps).per_step_s)
            except Exception as e:  # noqa: BLE001
                entry["errors"][name] = f"{type(e).__name__}: {e}"
            finally:
                gc.enable()
    entry["others_cpu"] = contention.others()
    entry["steps_per_run"], entry["rounds"] = steps, s.rounds
    res = {n: statistics.median(v) * 1e6 for n, v in samples.items()
           if v and n not in entry["errors"]}
    entry["median_us"] = res
    entry["spread"] = {n: (max(v) - min(v)) / statistics.median(v) for n, v in samples.items()
                       if v and n not in entry["errors"]}
    ref = warm.get("loop")
    entry["loss_rel_diff"] = {n: _rel_diff(w.losses, ref.losses) for n, w in warm.items()
                              if ref is not None}
    entry["loss_ok"] = all(v <= REL_TOL for v in entry["loss_rel_diff"].values())
    loop, nnx_best = _best(res, LOOPS), _best(res, NNX)
    if "fit" in res and loop:
        entry["fastest_loop"] = loop
        entry["fit_loop"] = res["fit"] / res[loop]
    if "fit" in res and nnx_best:
        entry["fastest_nnx"] = nnx_best
        entry["fit_nnx"] = res["fit"] / res[nnx_best]
    for mode in fit_modes:
        if f"fit_{mode}" in res and loop:
            entry[f"fit_{mode}_loop"] = res[f"fit_{mode}"] / res[loop]
    if "loop" in res and "loop_again" in res:
        entry["noise"] = res["loop_again"] / res["loop"]
    entry["elapsed_s"] = time.perf_counter() - t_start
    return entry


# --------------------------------------------------------------------------------------------
# The distribution.


def _dist(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values), "above_1": sum(v > 1 for v in values)}


def summarize(entries: list[dict], worst: int = 5) -> dict:
    out: dict[str, Any] = {}
    keys = ["fit_loop", "fit_nnx", "noise"] + sorted(
        {k for e in entries for k in e if k.startswith("fit_") and k.endswith("_loop")
         and k != "fit_loop"})
    for key in keys:
        out[key] = _dist([e[key] for e in entries if key in e])
    # fit slower than the faster loop by more than that architecture's loop-vs-itself factor
    out["fit_loop_beyond_noise"] = sorted(
        e["index"] for e in entries
        if "fit_loop" in e and e["fit_loop"] > max(e.get("noise", 1.0), 1 / e.get("noise", 1.0)))
    noise = [abs(math.log(e["noise"])) for e in entries if "noise" in e]
    if noise:
        # the ratio of a series to itself: beyond exp(this) a difference is more than noise
        out["noise_abs_log_median"] = statistics.median(noise)
        out["noise_abs_log_max"] = max(noise)
    # by XLA's flop count of a step: light steps pay the loop's per-step dispatch
    for name, light in (("fit_loop_light", True), ("fit_loop_heavy", False)):
        out[name] = _dist([e["fit_loop"] for e in entries if "fit_loop" in e
                           and e.get("step_flops") is not None
                           and (e["step_flops"] < STEP_FLOPS) == light])
    ranked = sorted((e for e in entries if "fit_loop" in e), key=lambda e: -e["fit_loop"])
    out["worst_fit_loop"] = [
        {"index": e["index"], "fit_loop": e["fit_loop"], "fit_us": e["median_us"]["fit"],
         "loop_us": e["median_us"][e["fastest_loop"]], "fastest_loop": e["fastest_loop"],
         "noise": e.get("noise"), "description": e["description"],
         "conv_plans": e.get("conv_plans", [])} for e in ranked[:worst]]
    out["errors"] = {e["index"]: e["errors"] for e in entries if e["errors"]}
    out["loss_mismatch"] = [e["index"] for e in entries if not e.get("loss_ok", True)]
    return out


def markdown(report: dict) -> str:
    m, summ = report["machine"], report["summary"]
    lines = [
        f"# Generated architectures: fit vs the same model's jitted loop and flax nnx "
        f"({report['settings']['n']} drawn, seed {report['settings']['seed']})",
        "",
        f"{m['cpu']}, {m['usable_cores']} cores, jax {m['versions']['jax']}, checkout "
        f"{m['jaxconv_commit']}{' (dirty)' if m['jaxconv_dirty'] else ''}, jaxconv from "
        f"`{m.get('jaxconv_file', '?')}`, {m['date']}; load "
        f"average {report['load_before']['loadavg'][0]:.1f} before, "
        f"{report['load_after']['loadavg'][0]:.1f} after; median share of the CPU other "
        f"processes used during an architecture's timing "
        f"{bench._fmt_pct(report['others_cpu_median'])}. Per training step, median of "
        f"{report['settings']['rounds']} interleaved rounds; ratios < 1: fit faster.",
        "",
        "| ratio | n | min | median | max | > 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"fit_loop": "fit / faster jitted loop", "fit_nnx": "fit / faster flax nnx",
             "fit_loop_light": f"fit / loop, steps < {STEP_FLOPS:.0e} flops",
             "fit_loop_heavy": f"fit / loop, steps >= {STEP_FLOPS:.0e} flops",
             "noise": "loop / loop (the same executable: noise)"}
    for key, d in summ.items():
        if isinstance(d, dict) and "median" in d:
            lines.append(f"| {names.get(key, key)} | {d['n']} | {d['min']:.2f} | "
                         f"{d['median']:.2f} | {d['max']:.2f} | {d['above_1']} |")
    if "noise_abs_log_median" in summ:
        beyond = summ.get("fit_loop_beyond_noise", [])
        lines += ["", f"Noise: loop against itself differs by a median factor "
                  f"{math.exp(summ['noise_abs_log_median']):.2f} (at most "
                  f"{math.exp(summ['noise_abs_log_max']):.2f}). fit is slower than the faster "
                  f"loop by more than that architecture's own noise factor on {len(beyond)}: "
                  f"{', '.join(f'#{i}' for i in beyond) or 'none'}."]
    lines += ["", "Worst fit / loop (convs: input * kernel: auto's lowering with XLA's "
              "default options / with jaxconv.compiler_options()):", "",
              "| # | fit/loop | fit | loop | noise | architecture | convs |",
              "|---:|---:|---:|---:|---:|---|---|"]
    for w in summ["worst_fit_loop"]:
        noise = f"{w['noise']:.2f}" if w["noise"] else "-"
        plans = "; ".join(w.get("conv_plans", []))
        lines.append(f"| {w['index']} | {w['fit_loop']:.2f} | {w['fit_us'] / 1e3:.2f} ms | "
                     f"{w['loop_us'] / 1e3:.2f} ms ({w['fastest_loop']}) | {noise} | "
                     f"{w['description']} | {plans} |")
    skipped = report.get("skipped_features")
    if skipped:
        lines += ["", "Not drawn: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    nnx_skips = {e["index"]: e["skipped"]["nnx"] for e in report["architectures"]
                 if "nnx" in e.get("skipped", {})}
    if nnx_skips:
        lines += ["", "nnx skipped: " + "; ".join(f"#{i}: {w}" for i, w in nnx_skips.items())]
    if summ["errors"]:
        lines += ["", "Errors: " + "; ".join(f"#{i}: {e}" for i, e in summ["errors"].items())]
    if summ["loss_mismatch"]:
        lines += ["", f"First losses differ from loop's (> {REL_TOL}): "
                  f"{summ['loss_mismatch']}"]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=30, help="architectures to draw (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 4 architectures (unless --n), 3 rounds, short runs")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                   help=f"comma-separated subset of {','.join(IMPLS)} (default "
                   f"{','.join(DEFAULT_IMPLS)})")
    p.add_argument("--fit-modes", action="store_true",
                   help="also time fit(mode='scan') and fit(mode='step') where fit has them")
    p.add_argument("--only", default="", help="comma-separated architecture indices")
    p.add_argument("--no-conv-transpose", action="store_true",
                   help="draw no transposed convs (the draws of a checkout without them)")
    p.add_argument("--out", default=os.path.join("benchmarks", "arch_results.json"),
                   help="the JSON report; the markdown summary goes next to it (.md)")
    p.add_argument("--summarize", metavar="JSON",
                   help="only recompute the summary and markdown of an earlier report")
    return p.parse_args(argv)


def _write(report: dict, out: str) -> None:
    bench.write_report(report, out)
    md = os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(report["markdown"] + "\n")
    print(f"wrote {md}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            report = json.load(f)
        conv_t = "transposed convs" not in report.get("skipped_features", {})
        for e in report["architectures"]:  # reports written before conv_plans existed
            if "conv_plans" not in e or "step_flops" not in e:
                arch = generate(report["settings"]["seed"], e["index"], conv_transpose=conv_t)
                if arch.description != e["description"]:
                    raise SystemExit(f"arch_bench: #{e['index']} of {args.summarize} is not "
                                     "this generator's draw; cannot add its conv plans.")
                e.setdefault("conv_plans", conv_plans(arch))
                e.setdefault("step_flops", step_flops(make_problem(arch)))
        report["summary"] = summarize(report["architectures"])
        report["markdown"] = markdown(report)
        print(report["markdown"])
        _write(report, args.summarize)
        return 0
    s = QUICK if args.quick else FULL
    n = 4 if args.quick and "--n" not in (argv or sys.argv) else args.n
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if n < 1 or not set(impls) <= set(IMPLS) or "loop" not in impls:
        print(f"arch_bench: --n must be >= 1 and --impls a subset of {IMPLS} with loop, got "
              f"{n} and {args.impls!r}.")
        return 2
    fit_modes: tuple[str, ...] = ()
    if args.fit_modes:
        if "mode" in inspect.signature(jaxconv.fit).parameters:
            fit_modes = ("scan", "step")
        else:
            print("note: this jaxconv.fit has no mode argument; --fit-modes ignored")
    mods, skipped = bench.load_peers()
    mods = {k: v for k, v in mods.items() if k == "flax"}
    t_start, load_before = time.perf_counter(), os.getloadavg()
    report: dict[str, Any] = {
        "machine": bench.machine_info(mods),
        "settings": {**s._asdict(), "n": n, "seed": args.seed, "quick": args.quick,
                     "impls": impls, "fit_modes": list(fit_modes), "lr": LR,
                     "max_macs": MAX_MACS},
        "skipped_peers": {k: v for k, v in skipped.items() if k == "flax"},
        "skipped_features": {"transposed convs": "--no-conv-transpose"}
        if args.no_conv_transpose else {} if has_conv_transpose() else
        {"transposed convs": "jaxconv.nn has no ConvTranspose in this checkout"},
        "load_before": {"loadavg": load_before, "uptime": bench._uptime()},
        "architectures": [],
    }
    m = report["machine"]
    # which jaxconv ran: PYTHONPATH may point at another revision than the checkout's
    m["jaxconv_file"] = jaxconv.__file__
    print(f"# jaxconv from {jaxconv.__file__}")
    print(f"# {m['cpu']}, {m['usable_cores']} cores; load {load_before[0]:.2f}; jaxconv "
          f"{m['jaxconv_commit']}; {n} architectures, seed {args.seed}", flush=True)
    only = {int(i) for i in args.only.split(",") if i.strip()}
    for arch in draw(args.seed, n, False if args.no_conv_transpose else None):
        if only and arch.index not in only:
            continue
        e = bench_arch(arch, impls, mods, s, fit_modes)
        report["architectures"].append(e)
        ratios = ", ".join(f"{k} {e[k]:.2f}" for k in ("fit_loop", "fit_nnx", "noise")
                           if k in e)
        times = ", ".join(f"{k} {v / 1e3:.2f}" for k, v in e.get("median_us", {}).items())
        print(f"#{arch.index} ({e.get('elapsed_s', 0):.0f} s) {arch.description}\n"
              f"    ms/step: {times}; {ratios}", flush=True)
        for name, err in e["errors"].items():
            print(f"    error in {name}: {err[:300]}")
        if not e.get("loss_ok", True):
            print(f"    MISMATCH of first losses: {e['loss_rel_diff']}")
        if args.out:  # after every draw: a run stopped early keeps what it measured
            with contextlib.redirect_stdout(io.StringIO()):
                _write(_finish(report, t_start), args.out)
    _finish(report, t_start)
    print("\n" + report["markdown"] + f"\n\n{report['elapsed_s']:.0f} s in all")
    if args.out:
        _write(report, args.out)
    return 0


def _finish(report: dict, t_start: float) -> dict:
    """The report's summary, markdown and closing figures for the draws done so far."""
    others = [e["others_cpu"] for e in report["architectures"] if e.get("others_cpu") is not None]
    report["others_cpu_median"] = statistics.median(others) if others else None
    report["load_after"] = {"loadavg": os.getloadavg(), "uptime": bench._uptime()}
    report["elapsed_s"] = time.perf_counter() - t_start
    report["summary"] = summarize(report["architectures"])
    report["markdown"] = markdown(report)
    return report


if __name__ == "__main__":
    sys.exit(main())
