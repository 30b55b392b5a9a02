"""Fitting with optax: many steps per compiled call (``lax.scan`` chunks), many restarts at once.

One function, ``fit``, serves experiments and notebooks alike. It never writes an optimizer or a
progress bar by hand (optax, tqdm) and never returns non-finite params silently.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv._typing import Array, PyTree


class NonFiniteError(FloatingPointError):
    """Raised when a whole chunk of steps produced non-finite losses or gradients."""


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: final params (leading axis ``restarts`` when restarts were asked for).
      opt_state: final optimizer state (likewise).
      losses: [steps] or [restarts, steps] numpy array, the loss before each step's update.
      steps: number of steps done.
      nonfinite_steps: steps skipped because their loss or gradients were not finite (an
        int, or a [restarts] array).
      wall_s: seconds spent running steps (compile excluded).
      compile_s: seconds spent compiling the chunk function.
      steps_per_s: ``steps / wall_s`` (restart-steps count once).
    """

    params: PyTree
    opt_state: PyTree
    losses: np.ndarray
    steps: int
    nonfinite_steps: Any
    wall_s: float
    compile_s: float
    steps_per_s: float


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _num_examples(data) -> int | None:
    leaves = jax.tree.leaves(data)
    if not leaves:
        return None
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "fit: every array in data must have the same leading (example) axis, got shapes "
            f"{[np.shape(x) for x in leaves]}."
        )
    return sizes.pop()


def check_finite_data(data) -> None:
    """ValueError naming the first non-finite entry of any float array in ``data``."""
    paths = jax.tree_util.tree_flatten_with_path(data)[0]
    for path, leaf in paths:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.inexact):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"fit: data{jax.tree_util.keystr(path)} has a non-finite value "
                f"({arr[index]}) at index {index} ({int(bad.sum())} in all); clean the data "
                "or pass check_data=False to skip this check."
            )


def make_step(loss_fn, optimizer, data, *, batch_size, total_steps, n):
    """One guarded optimizer step ``(params, opt_state), t -> carry, (loss, finite)``."""

    def sample(key, t):
        if batch_size is None or data is None:
            return data
        idx = jax.random.choice(jax.random.fold_in(key, t), n, (batch_size,), replace=False)
        return jax.tree.map(lambda x: x[idx], data)

    def step(carry, t, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, sample(key, t))
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = finite & (t < total_steps)
        params = _tree_where(keep, new_params, params)
        opt_state = _tree_where(keep, new_state, opt_state)
        return (params, opt_state), (loss, finite)

    return step


def fit(
    loss_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    optimizer: optax.GradientTransformation,
    data: PyTree = None,
    *,
    steps: int,
    key: Array | None = None,
    batch_size: int | None = None,
    restarts: int | None = None,
    chunk_size: int = 500,
    progress: bool | None = None,
    check_data: bool = True,
) -> FitResult:
    """Minimises ``loss_fn(params, batch)`` with ``optimizer`` for ``steps`` steps.

    Steps run inside ``lax.scan`` in chunks of ``chunk_size`` (one compiled call per chunk, no
    host round-trip per step); ``restarts`` independent runs share the compiled call via
    ``jax.vmap``. A step whose loss or gradients are not finite leaves params and optimizer
    state unchanged and is counted; a chunk in which every step was non-finite raises
    ``NonFiniteError`` naming the step. Same key and data give bit-identical results.

    Args:
      loss_fn: ``(params, batch) -> scalar``; ``batch`` has the structure of ``data``.
      params: initial params; with ``restarts=R`` every leaf has a leading axis of size R
        (e.g. ``jax.vmap(lambda k: model.init(k, shape))(jax.random.split(key, R))``).
      optimizer: an optax gradient transformation.
      data: a pytree of arrays sharing a leading example axis [n, ...], or None.
      steps: number of optimizer steps.
      key: PRNG key for minibatch sampling (restart r uses ``jax.random.split(key, R)[r]``).
      batch_size: examples per step, sampled without replacement; None for full batch.
      restarts: number of independent runs trained at once, or None for a single run.
      chunk_size: steps per compiled call; progress is reported between chunks.
      progress: show a tqdm bar; None shows it only when stderr is a terminal.
      check_data: reject NaN/Inf in ``data`` up front, naming the first bad index.

    Returns:
      A ``FitResult`` with params, optimizer state, the [steps] (or [R, steps]) loss history,
      timings and the count of skipped non-finite steps.

    Example:
      >>> import jax.numpy as jnp, optax, jaxconv
      >>> loss = lambda p, b: jnp.mean((p["w"] * b[0] - b[1]) ** 2)
      >>> data = (jnp.arange(4.0), 3 * jnp.arange(4.0))
      >>> out = jaxconv.fit(loss, {"w": jnp.zeros(())}, optax.adam(0.1), data, steps=300,
      ...                   progress=False)
      >>> round(float(out.params["w"]), 3)
      3.0
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"fit: steps must be a positive int, got {steps!r}.")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"fit: chunk_size must be a positive int, got {chunk_size!r}.")
    if restarts is not None and (not isinstance(restarts, int) or restarts < 1):
        raise ValueError(f"fit: restarts must be a positive int or None, got {restarts!r}.")
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(
            f"fit: optimizer must be an optax.GradientTransformation, got {type(optimizer)}."
        )
    key = jax.random.key(0) if key is None else key
    n = _num_examples(data)
    if batch_size is not None:
        if n is None:
            raise ValueError("fit: batch_size needs data with a leading example axis.")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(
                f"fit: batch_size must be an int in [1, {n}] (the number of examples), got "
                f"{batch_size!r}."
            )
    if check_data:
        check_finite_data(data)
    data = jax.tree.map(jnp.asarray, data)
    params = jax.tree.map(jnp.asarray, params)
    single = params
    if restarts is not None:
        lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(params)}
        if lead != {restarts}:
            raise ValueError(
                f"fit: with restarts={restarts} every params leaf needs a leading axis of size "
                f"{restarts}, got leading sizes {sorted(lead, key=str)}; build them with "
                "jax.vmap(init)(jax.random.split(key, restarts))."
            )
        single = jax.tree.map(lambda x: x[0], params)
    for leaf in jax.tree.leaves(params):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(f"fit: params leaves must be floating arrays, got {leaf.dtype}.")
    batch_struct = data
    if batch_size is not None:
        batch_struct = jax.tree.map(lambda x: x[:batch_size], data)
    out = jax.eval_shape(loss_fn, single, batch_struct)
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(
            f"fit: loss_fn must return a scalar, got {getattr(out, 'shape', type(out))}; "
            "reduce it, e.g. with jnp.mean."
        )

    n_chunks = math.ceil(steps / chunk_size)
    chunk = math.ceil(steps / n_chunks)
    step = make_step(loss_fn, optimizer, data, batch_size=batch_size, total_steps=steps, n=n)

    def run_one(params, opt_state, start, key):
        ts = start + jnp.arange(chunk)
        (params, opt_state), (loss, finite) = jax.lax.scan(
            lambda c, t: step(c, t, key), (params, opt_state), ts
        )
        return params, opt_state, loss, finite

    if restarts is None:
        opt_state = optimizer.init(params)
        keys = key
        run = run_one
    else:
        opt_state = jax.vmap(optimizer.init)(params)
        keys = jax.random.split(key, restarts)
        run = jax.vmap(run_one, in_axes=(0, 0, None, 0))

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(params, opt_state, jnp.int32(0), keys).compile()
    compile_s = time.perf_counter() - t0

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="fit", unit="step", leave=True)
    losses, finites = [], []
    wall_s = 0.0
    try:
        for c in range(n_chunks):
            start = c * chunk
            t0 = time.perf_counter()
            params, opt_state, loss, finite = compiled(params, opt_state, jnp.int32(start), keys)
            loss, finite = np.asarray(loss), np.asarray(finite)  # waits for the chunk
            wall_s += time.perf_counter() - t0
            done = min(chunk, steps - start)
            loss, finite = loss[..., :done], finite[..., :done]
            losses.append(loss)
            finites.append(finite)
            stuck = ~finite.any(axis=-1)
            if np.any(stuck):
                which = "" if restarts is None else f" in restart(s) {np.flatnonzero(stuck)[:8]}"
                raise NonFiniteError(
                    f"fit: every step from {start} to {start + done - 1}{which} had a non-finite "
                    f"loss or gradient (first at step {start}); params were kept at their last "
                    "finite values. Lower the learning rate, clip gradients "
                    "(optax.clip_by_global_norm) or check the loss and data."
                )
            if bar is not None:
                last = loss[..., -1]
                bar.update(done)
                bar.set_postfix(
                    loss=f"{np.nanmin(last):.3e}", steps_per_s=f"{(start + done) / wall_s:.0f}"
                )
    finally:
        if bar is not None:
            bar.close()
    losses = np.concatenate(losses, axis=-1)
    nonfinite = (~np.concatenate(finites, axis=-1)).sum(axis=-1)
    return FitResult(
        params=params,
        opt_state=opt_state,
        losses=losses,
        steps=steps,
        nonfinite_steps=int(nonfinite) if restarts is None else nonfinite,
        wall_s=wall_s,
        compile_s=compile_s,
        steps_per_s=steps / wall_s if wall_s > 0 else float("inf"),
    )
