"""The pure part of ``fit``: a guarded optimizer step, run many steps per compiled call (a loop
inside the executable) or one step per compiled call, restarts batched (``vmap``) or one after
another (``lax.map``); and the cache of compiled executables, keyed on what they compute.

Everything here is a jittable function of arrays or a cache of compiled executables; the
host-side loop (progress, guards, checkpoints, callbacks) is ``jaxconv._fitting``'s.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from jaxconv import _canonical
from jaxconv._typing import Array, PyTree
from jaxconv.lowering._base import RESTARTS_AXIS, compiling_with

MODES = ("scan", "step")
RESTARTS_BY = ("vmap", "map")

# "auto" runs restarts one after another (lax.map) on CPU when one restart's training step
# (the loss and its gradient) costs more than this many FLOPs (XLA's cost analysis): below it,
# batching them (vmap) shares each op's fixed cost and wins; above it, XLA:CPU runs the
# batched step slower than the restarts in turn (measured on 16 conv students and 3 MLPs,
# R=8 and R=32: map/vmap 1.77 at 1.0 MFLOP, 1.04 at 2.0, 0.51 at 2.5, 0.41 at 18 and at
# 95; benchmarks/NOTES.md, issue 19).
MAP_RESTARTS_FLOPS = 2.5e6


class Guard(NamedTuple):
    """The non-finite policy's counters, per restart, carried on the device with the state.

    Attributes:
      streak: consecutive non-finite steps ending at the last step run.
      skipped: steps skipped because they were not finite.
      stopped: the step at which ``streak`` reached the limit (the restart is stopped from
        then on: its params and optimizer state stay those before the streak), or -1.
    """

    streak: Array
    skipped: Array
    stopped: Array


class State(NamedTuple):
    """What a run carries from step to step (and what a checkpoint holds of it)."""

    params: PyTree
    opt_state: PyTree
    guard: Guard


class ChunkOut(NamedTuple):
    """What one compiled call returns: the new state and each step's loss."""

    state: State
    losses: Array  # [chunk] or [restarts, chunk]; NaN for steps not run


@dataclasses.dataclass(frozen=True)
class Spec:
    """``fit``'s settings that shape the compiled computation (the loss function and the
    optimizer are traced into it, see ``compiled``)."""

    chunk: int
    batch_size: int | None
    num_examples: int | None
    restarts: int | None
    key_impl: Any
    max_nonfinite: int
    loss_dtype: Any = jnp.float32
    batch_sharding: NamedSharding | None = None
    restarts_by: str = "vmap"  # how restarts share the compiled call: RESTARTS_BY


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _all_finite(*trees) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def new_guard() -> Guard:
    """The counters of a run that has not started (one restart)."""
    zero = jnp.zeros((), jnp.int32)
    return Guard(zero, zero, zero - 1)


def make_step(loss_fn, optimizer, spec: Spec):
    """One guarded optimizer step and the example order it starts from.

    Minibatches go through the examples in epochs of ``n // batch_size`` steps (the last
    ``n % batch_size`` of each shuffle sit the epoch out, as with torch's ``drop_last``); epoch
    ``e`` uses the order ``permutation(fold_in(key, e), n)``. So a step's batch depends only
    on the key and the step number, and one permutation per epoch (carried from step to step,
    redrawn when an epoch starts) replaces a sort of all ``n`` examples per step.

    The optimizer gets optax's extra arguments (``value``, ``grad``, ``value_fn``), so
    ``optax.lbfgs()`` and ``optax.contrib.reduce_on_plateau()`` work as optax documents them.

    A step is applied only if the loss, the gradients, the new params and the new optimizer
    state are all finite (what is applied is checked, not only what goes in); a skipped step
    leaves params and optimizer state unchanged and counts in the ``Guard``. After
    ``spec.max_nonfinite`` consecutive skipped steps the run (each restart on its own) stops:
    later steps change nothing.

    Returns ``(order_at, step, per_epoch)``: ``order_at(key, t)`` is the order of the epoch
    of step ``t``; ``step(state, order, t, stop, data) -> (state, loss)`` takes step ``t``'s
    batch from ``order`` and changes nothing when ``t >= stop``.
    """
    full_batch = spec.batch_size is None
    batch_size, n = spec.batch_size or 0, spec.num_examples or 0
    per_epoch = 1 if full_batch else n // batch_size
    optimizer = optax.with_extra_args_support(optimizer)

    def order_at(key, t):
        if full_batch:
            return jnp.zeros((0,), jnp.int32)
        return jax.random.permutation(jax.random.fold_in(key, t // per_epoch), n)

    def sample(order, t, data):
        if full_batch or data is None:
            batch = data
        else:
            idx = jax.lax.dynamic_slice_in_dim(order, (t % per_epoch) * batch_size, batch_size)
            batch = jax.tree.map(lambda x: x[idx], data)
        if spec.batch_sharding is not None:
            batch = jax.tree.map(
                lambda x: jax.lax.with_sharding_constraint(x, spec.batch_sharding), batch
            )
        return batch

    def step(state, order, t, stop, data):
        params, opt_state, guard = state
        batch = sample(order, t, data)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, new_state = optimizer.update(
            grads, opt_state, params, value=loss, grad=grads,
            value_fn=lambda p: loss_fn(p, batch),
        )
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads, new_params, new_state)
        active = (t < stop) & (guard.stopped < 0)
        keep = finite & active
        params = _tree_where(keep, new_params, params)
        opt_state = _tree_where(keep, new_state, opt_state)
        bad = active & ~finite
        streak = jnp.where(active, jnp.where(finite, 0, guard.streak + 1), guard.streak)
        stopped = jnp.where(bad & (streak >= spec.max_nonfinite), t, guard.stopped)
        guard = Guard(streak, guard.skipped + bad.astype(jnp.int32), stopped)
        loss = jnp.where(active, loss, jnp.nan)
        return State(params, opt_state, guard), loss

    return order_at, step, per_epoch


class Trainer(NamedTuple):
    """A pure trainer in the spirit of optax's ``GradientTransformation``.

    Attributes:
      init: ``params -> State`` (vmapped over restarts when there are restarts).
      run: ``(state, start, stop, key_data, data) -> ChunkOut``: steps ``start ..
        min(start + chunk, stop) - 1`` inside one executable (a while loop: steps past
        ``stop`` are not run).
      step: ``(state, order, t, key_data, data) -> (state, order, t + 1, loss)``:
        one step; ``order`` is ``(epoch, permutation)``, carried between calls (on the device,
        as ``t`` is) and redrawn when step ``t`` belongs to another epoch.
    """

    init: Callable[[PyTree], State]
    run: Callable[..., ChunkOut]
    step: Callable[..., tuple]


def make_trainer(loss_fn, optimizer, spec: Spec) -> Trainer:
    """The pure ``Trainer`` for ``loss_fn``, ``optimizer`` and ``spec`` (not compiled).

    With restarts, ``spec.restarts_by`` says how they share the computation: ``"vmap"``
    batches each step over them (the loop and the step index shared), ``"map"`` runs them one
    after another (``lax.map``), each the computation of a run without restarts. Either way
    restart ``r``'s example orders are drawn from its own key exactly as a run without
    restarts draws them (``lax.map`` over the keys, not ``vmap``: a key implementation such as
    ``"rbg"`` draws other bits for a batch of keys than for each key alone)."""
    order_at, step, per_epoch = make_step(loss_fn, optimizer, spec)
    batched = spec.restarts is not None and spec.restarts_by == "vmap"

    def keys_of(key_data):
        return jax.random.wrap_key_data(key_data, impl=spec.key_impl)

    def draw(keys, t):  # the order of step t's epoch, per restart when batched
        if not batched:
            return order_at(keys, t)
        return jax.lax.map(lambda k: order_at(k, t), keys)

    def apply(state, order, t, stop, data):
        if not batched:
            return step(state, order, t, stop, data)
        return jax.vmap(step, in_axes=(0, 0, None, None, None),
                        axis_name=RESTARTS_AXIS)(state, order, t, stop, data)

    def init(params):
        return State(params, optimizer.init(params), new_guard())

    def run(state, start, stop, key_data, data):
        keys = keys_of(key_data)
        n = jnp.clip(stop - start, 0, spec.chunk)
        lead = (spec.restarts,) if batched else ()
        losses = jnp.full((*lead, spec.chunk), jnp.nan, spec.loss_dtype)

        def body(i, carry):
            state, order, losses = carry
            t = start + i
            if spec.batch_size is not None:
                order = jax.lax.cond(t % per_epoch == 0, lambda: draw(keys, t), lambda: order)
            state, loss = apply(state, order, t, stop, data)
            return state, order, losses.at[..., i].set(loss)

        state, _, losses = jax.lax.fori_loop(0, n, body, (state, draw(keys, start), losses))
        return ChunkOut(state, losses)

    def one_step(state, order, t, key_data, data):
        # order = (the epoch its permutation belongs to, the permutation): redrawn when step
        # t starts another epoch or the carried one is not t's (the first call of a run)
        epoch, perm = order
        if spec.batch_size is not None:
            now = t // per_epoch
            perm = jax.lax.cond(now != epoch, lambda: draw(keys_of(key_data), t),
                                lambda: perm)
            epoch = now
        state, loss = apply(state, perm, t, t + 1, data)
        return state, (epoch, perm), t + 1, loss

    if spec.restarts is None or batched:
        return Trainer(jax.vmap(init) if batched else init, run, one_step)

    # "map": one restart after another, each the computation of a run without restarts
    # (params, optimizer state, key and permutation per restart; the step index, the data and
    # the carried permutation's epoch shared)
    def run_map(state, start, stop, key_data, data):
        return jax.lax.map(lambda a: run(a[0], start, stop, a[1], data), (state, key_data))

    def step_map(state, order, t, key_data, data):
        epoch, perm = order
        state, (epochs, perm), ts, loss = jax.lax.map(
            lambda a: one_step(a[0], (epoch, a[1]), t, a[2], data), (state, perm, key_data))
        return state, (epochs[0], perm), ts[0], loss

    return Trainer(jax.vmap(init), run_map, step_map)


def initial_order(spec: Spec, restarts: int | None):
    """The example order a run's first ``step`` call starts from: a placeholder of epoch -1,
    which that call redraws."""
    n = 0 if spec.batch_size is None else spec.num_examples
    return (jnp.int32(-1), jnp.zeros((n,) if restarts is None else (restarts, n), jnp.int32))


def restarts_by(loss_fn, params, batch, options: dict, platform: str) -> tuple[str, float]:
    """How ``fit``'s ``restarts_by="auto"`` runs restarts, and the FLOPs of one restart's
    step it decided on: ``"map"`` on CPU when that step (``loss_fn``'s value and gradient at
    one restart's ``params`` on an abstract ``batch``, lowered as ``fit`` lowers it) costs
    more than ``MAP_RESTARTS_FLOPS``, else ``"vmap"``. A function of the computation only:
    the same model, batch shape and options always decide the same way."""
    traced = trace(jax.value_and_grad(loss_fn), (params, batch), options, {})
    cost = traced.lower().cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) and cost else cost) or {}
    flops = float(cost.get("flops", 0.0))
    return ("map" if platform == "cpu" and flops > MAP_RESTARTS_FLOPS else "vmap"), flops


# ---- compiled executables, cached on what they compute ----

def _fingerprint(closed_jaxpr) -> str:
    """A digest of a traced computation: its printed jaxpr (every primitive, its parameters,
    shapes, dtypes and literal values, sub-computations included) and the values of its
    constants (the arrays it closes over)."""
    h = hashlib.blake2b(str(closed_jaxpr.jaxpr).encode(), digest_size=20)
    for c in closed_jaxpr.consts:
        a = np.asarray(jax.random.key_data(c) if jax.dtypes.issubdtype(
            getattr(c, "dtype", np.float32), jax.dtypes.prng_key) else c)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _trace_context():
    """jax's own trace context (x64, default precision, rank and dtype promotion...): what
    ``jax.jit`` keys its caches on besides the function."""
    from jax._src import config

    return config.trace_context()


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def clear_caches() -> None:
    """Drops every executable ``jaxconv.fit`` compiled.

    ``fit`` keys its cache on the computation it traced (see ``fit``), so clearing it never
    changes a result, only frees memory and makes the next call compile again. jax's own
    caches are ``jax.clear_caches()``'s.

    Returns:
      None.
    """
    with _LOCK:
        _CACHE.clear()


def cache_key(traced, args: tuple, options: dict, jit_kwargs: dict) -> tuple:
    """What determines the executable of ``traced`` (a ``jax.stages.Traced`` of ``args``):
    the traced computation itself, its arguments' shapes, dtypes, shardings and donation, the
    jit shardings, the compiler options and jax's trace context."""
    shardings = tuple(str(getattr(x, "sharding", None)) for x in jax.tree.leaves(args))
    return (_fingerprint(traced.jaxpr), str(traced.in_avals), str(traced.args_info),
            shardings, repr(sorted(jit_kwargs.items())), tuple(sorted(options.items())),
            _trace_context())


def compile_traced(traced, key: tuple, platform: str) -> jax.stages.Compiled:
    """The executable of ``traced`` for ``platform``, from the cache when an identical
    computation (the same ``cache_key``) was compiled before; lowered with every convolution
    in XLA:CPU's canonical form, loop bodies included (``jaxconv._canonical``)."""
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is not None:
        return hit
    compiled = _canonical.lower(traced, platform).compile()
    with _LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def trace(fn, args: tuple, options: dict, jit_kwargs: dict, donate: tuple = ()):
    """``jax.jit(fn, ...).trace(*args)`` for an executable compiled with ``options``: the
    planner of jaxconv's convolutions chooses for those options while ``fn`` is traced."""
    with compiling_with(options):
        return jax.jit(fn, compiler_options=options or None, donate_argnums=donate,
                       **jit_kwargs).trace(*args)


# ---- what a run computes, as a few numbers (the identity a checkpoint is resumed by) ----

_PROBE_STEPS = 4  # optimizer updates probed: MultiSteps-style accumulation up to 4 included
_PROBE_DIRECTIONS = 3


def _directions(tree, salt: int) -> list:
    """Fixed pseudo-random trees like ``tree`` (float32), the same in every process and run."""
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for j in range(_PROBE_DIRECTIONS):
        key = jax.random.fold_in(jax.random.key(salt), j)
        out.append(jax.tree.unflatten(treedef, [
            jax.random.normal(jax.random.fold_in(key, i), jnp.shape(x), jnp.float32)
            for i, x in enumerate(leaves)]))
    return out


def _project(tree, directions) -> Array:
    """``tree``'s inner products with ``directions`` and its norm, in float32."""
    def dot(a, b):
        return sum((jnp.vdot(x.astype(jnp.float32), y).real
                    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)),
                   jnp.zeros((), jnp.float32))
    return jnp.stack([*(dot(tree, d) for d in directions), jnp.sqrt(dot(tree, tree))])


def _first(tree, restarts):
    return tree if restarts is None else jax.tree.map(lambda x: x[0], tree)


def loss_probe(loss_fn, params, data, batch_size, restarts) -> list[float]:
    """What ``loss_fn`` computes at ``params`` (restart 0's) on the first ``batch_size``
    examples of ``data`` (all of them for full batch): the loss, and its gradient's inner
    products with fixed directions and its norm."""
    params = _first(params, restarts)

    @jax.jit
    def probe(params, data):
        batch = data if batch_size is None or data is None else jax.tree.map(
            lambda x: x[:batch_size], data)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        return jnp.concatenate([loss.astype(jnp.float32)[None],
                                _project(grads, _directions(params, 1))])

    return [float(v) for v in np.asarray(probe(params, data))]


def optimizer_probe(optimizer, params, restarts) -> Callable[[PyTree], list[float]]:
    """``probe(opt_state)``: what ``optimizer`` does from ``opt_state`` (restart 0's): the
    updates of ``_PROBE_STEPS`` steps on a fixed probe problem (a quadratic around fixed
    pseudo-random params, its gradient, value and ``value_fn`` given as optax's extra
    arguments), each as its inner products with fixed directions and its norm. Two optimizers
    with equal hyperparameters, however built, give equal probes; a changed learning rate,
    schedule value or other hyperparameter changes them."""
    opt = optax.with_extra_args_support(optimizer)

    @jax.jit
    def probe(opt_state, params):
        centre = _directions(params, 2)[0]
        dirs = _directions(params, 3)

        def objective(p):
            return 0.5 * sum(jnp.sum((x - c.astype(x.dtype)) ** 2).real.astype(jnp.float32)
                             for x, c in zip(jax.tree.leaves(p), jax.tree.leaves(centre),
                                             strict=True))

        rows = []
        for _ in range(_PROBE_STEPS):
            value, grads = jax.value_and_grad(objective)(params)
            updates, opt_state = opt.update(grads, opt_state, params, value=value, grad=grads,
                                            value_fn=objective)
            params = optax.apply_updates(params, updates)
            rows.append(_project(updates, dirs))
        return jnp.stack(rows)

    start = jax.tree.map(lambda x: jnp.zeros(x.shape[restarts is not None:], x.dtype), params)

    def run(opt_state):
        opt_state = _first(opt_state, restarts)
        return [float(v) for v in np.asarray(probe(opt_state, start)).ravel()]

    return run
