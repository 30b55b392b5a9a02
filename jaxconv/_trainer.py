"""The pure part of ``fit``: a guarded optimizer step, chunks of steps in one ``lax.scan``,
restarts by ``vmap``, compiled once per configuration and cached.

Everything here is a jittable function of arrays or a cache of compiled executables; the
host-side loop (progress, guards, checkpoints, callbacks) is ``jaxconv._fitting``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from jaxconv._compile import compiler_options as default_compiler_options
from jaxconv._typing import Array, PyTree
from jaxconv.lowering._base import compiling_with


class ChunkOut(NamedTuple):
    """What one compiled chunk returns: the new state and each step's loss and finiteness."""

    params: PyTree
    opt_state: PyTree
    losses: Array  # [chunk] or [restarts, chunk]
    finite: Array  # bool, same shape


class Trainer(NamedTuple):
    """A pure trainer in the spirit of optax's ``GradientTransformation``.

    Attributes:
      init: ``params -> opt_state`` (vmapped over restarts when there are restarts).
      run: ``(params, opt_state, start, stop, key_data, data) -> ChunkOut``: ``chunk`` steps
        from step ``start``; steps at or past ``stop`` leave the state unchanged.
    """

    init: Callable[[PyTree], PyTree]
    run: Callable[..., ChunkOut]


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything a compiled chunk depends on besides the shapes of its arguments."""

    loss_fn: Callable
    optimizer: optax.GradientTransformation
    chunk: int
    batch_size: int | None
    num_examples: int | None
    restarts: int | None
    key_impl: Any
    batch_sharding: NamedSharding | None = None
    compiler_options: tuple[tuple[str, Any], ...] = ()


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_step(loss_fn, optimizer, *, batch_size, num_examples, batch_sharding=None):
    """One guarded optimizer step and the example order it starts a chunk from.

    Minibatches go through the examples in epochs of ``n // batch_size`` steps (the last
    ``n % batch_size`` of each shuffle sit the epoch out, as with torch's ``drop_last``); epoch
    ``e`` uses the order ``permutation(fold_in(key, e), n)``. So a step's batch depends only
    on the key and the step number, and one permutation per epoch (carried through the scan,
    redrawn when an epoch starts) replaces a sort of all ``n`` examples per step.

    The optimizer gets optax's extra arguments (``value``, ``grad``, ``value_fn``), so
    ``optax.lbfgs()`` and ``optax.contrib.reduce_on_plateau()`` work as optax documents them.

    Returns ``(order_at, step)``: ``order_at(key, t)`` is the order of the epoch of step ``t``;
    ``step((params, opt_state, order), t, key, stop, data)`` leaves params and optimizer state
    unchanged when the step is non-finite or ``t >= stop``.
    """
    full_batch = batch_size is None
    per_epoch = 1 if full_batch else num_examples // batch_size
    optimizer = optax.with_extra_args_support(optimizer)

    def order_at(key, t):
        if full_batch:
            return jnp.zeros((0,), jnp.int32)
        return jax.random.permutation(jax.random.fold_in(key, t // per_epoch), num_examples)

    def sample(order, t, data):
        if full_batch or data is None:
            batch = data
        else:
            idx = jax.lax.dynamic_slice_in_dim(order, (t % per_epoch) * batch_size, batch_size)
            batch = jax.tree.map(lambda x: x[idx], data)
        if batch_sharding is not None:
            batch = jax.tree.map(
                lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), batch
            )
        return batch

    def step(carry, t, key, stop, data):
        params, opt_state, order = carry
        if not full_batch:  # t is not batched over restarts: this stays a cond under vmap
            order = jax.lax.cond(t % per_epoch == 0, lambda: order_at(key, t), lambda: order)
        batch = sample(order, t, data)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, new_state = optimizer.update(
            grads, opt_state, params, value=loss, grad=grads,
            value_fn=lambda p: loss_fn(p, batch),
        )
        new_params = optax.apply_updates(params, updates)
        keep = finite & (t < stop)
        params = _tree_where(keep, new_params, params)
        opt_state = _tree_where(keep, new_state, opt_state)
        return (params, opt_state, order), (loss, finite)

    return order_at, step


def make_trainer(spec: Spec) -> Trainer:
    """The pure ``Trainer`` for ``spec`` (not compiled: see ``compiled_run``)."""
    order_at, step = make_step(spec.loss_fn, spec.optimizer, batch_size=spec.batch_size,
                               num_examples=spec.num_examples,
                               batch_sharding=spec.batch_sharding)

    def run_one(params, opt_state, start, stop, key_data, data):
        key = jax.random.wrap_key_data(key_data, impl=spec.key_impl)
        ts = start + jnp.arange(spec.chunk)
        (params, opt_state, _), (loss, finite) = jax.lax.scan(
            lambda c, t: step(c, t, key, stop, data), (params, opt_state, order_at(key, start)),
            ts,
        )
        return ChunkOut(params, opt_state, loss, finite)

    if spec.restarts is None:
        return Trainer(spec.optimizer.init, run_one)
    return Trainer(jax.vmap(spec.optimizer.init),
                   jax.vmap(run_one, in_axes=(0, 0, None, None, 0, None)))


def _signature(tree) -> tuple:
    """A hashable description of a pytree of arrays: structure, shapes, dtypes, shardings."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(
        (tuple(x.shape), x.dtype, getattr(x, "sharding", None)) for x in leaves
    )


def _abstract(signature):
    treedef, leaves = signature
    return jax.tree.unflatten(
        treedef, [jax.ShapeDtypeStruct(s, d, sharding=sh) for s, d, sh in leaves]
    )


@functools.lru_cache(maxsize=16)
def _compile(spec: Spec, signature, jit_kwargs: tuple) -> jax.stages.Compiled:
    options = dict(spec.compiler_options)
    with compiling_with(options):  # the planner picks for these options (see lowering)
        lowered = jax.jit(make_trainer(spec).run, compiler_options=options or None,
                          **dict(jit_kwargs)).lower(*_abstract(signature))
    return lowered.compile()


def compiled_run(spec: Spec, args: tuple, jit_kwargs: dict) -> tuple[Callable, float]:
    """The compiled chunk for ``spec`` and these arguments, and the seconds spent compiling it.

    Executables are cached on the spec (the loss function and optimizer objects themselves,
    the settings, compiler options) and the arguments' shapes, dtypes and shardings, as
    ``jax.jit`` caches its own: calling ``fit`` again with the same loss function, optimizer
    and shapes compiles nothing (0 seconds). A spec that cannot be hashed (an unhashable
    callable) is compiled afresh each time.
    """
    t0 = time.perf_counter()
    signature = _signature(args)
    key = tuple(sorted(jit_kwargs.items()))
    try:
        hash((spec, signature, key))
    except TypeError:
        compiled = _compile.__wrapped__(spec, signature, key)
    else:
        compiled = _compile(spec, signature, key)
    return compiled, time.perf_counter() - t0


def spec_options(options: dict | None) -> tuple[tuple[str, Any], ...]:
    """``fit``'s ``compiler_options`` as the hashable tuple a ``Spec`` holds."""
    options = default_compiler_options() if options is None else options
    return tuple(sorted(options.items()))
