"""Fitting with optax: many steps per compiled call (``lax.scan`` chunks), many restarts at once,
data-parallel over a device mesh, checkpointed and resumable.

One function, ``fit``, serves experiments and notebooks alike. It never writes an optimizer, a
progress bar, a sharding scheme or a checkpoint format by hand (optax, tqdm, jax.sharding,
orbax) and never returns non-finite params silently.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconv import _checks
from jaxconv._typing import Array, PyTree


class NonFiniteError(FloatingPointError):
    """Raised when a chunk's worth of consecutive steps produced non-finite losses or gradients."""


class DivergenceError(FloatingPointError):
    """Raised when a finite loss exceeds ``fit``'s ``max_loss``: the run is diverging.

    Attributes:
      step: the first step whose loss exceeded the limit.
      loss: that loss.
      restart: the restart it happened in (None without restarts).
      checkpoint_step: the newest checkpoint's step (written before the divergence), or None.
    """

    def __init__(self, message: str, *, step: int, loss: float, restart: int | None = None,
                 checkpoint_step: int | None = None):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.restart = restart
        self.checkpoint_step = checkpoint_step


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
      steps_per_s: ``steps / wall_s`` (restart-steps count once; after a resume, only the
        steps this call ran).
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
    for leaf in leaves:
        if not hasattr(leaf, "shape") and not isinstance(leaf, float | int | complex):
            raise TypeError(
                f"fit: data must be a pytree of arrays, got a leaf of type {type(leaf).__name__}."
            )
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "fit: every array in data must have the same leading (example) axis, got shapes "
            f"{[np.shape(x) for x in leaves]}."
        )
    return int(sizes.pop())


def _first_bad(arr: np.ndarray, offset=None):
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    local = tuple(int(i) for i in np.argwhere(bad)[0])
    index = local if offset is None else tuple(o + i for o, i in zip(offset, local, strict=True))
    return index, arr[local], int(bad.sum())


def _check_finite_data(data) -> None:
    """ValueError naming the first non-finite entry of any float array in ``data``.

    Global arrays that span several processes are checked shard by shard on each process
    (indices are global).
    """
    paths = jax.tree_util.tree_flatten_with_path(data)[0]
    for path, leaf in paths:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                continue
            found = None
            for shard in leaf.addressable_shards:
                offset = [s.start or 0 for s in shard.index]
                found = _first_bad(np.asarray(shard.data), offset)
                if found is not None:
                    break
        else:
            arr = np.asarray(leaf)
            if not np.issubdtype(arr.dtype, np.inexact):
                continue
            found = _first_bad(arr)
        if found is not None:
            index, value, count = found
            raise ValueError(
                f"fit: data{jax.tree_util.keystr(path)} has a non-finite value "
                f"({value}) at index {index} ({count} in all); clean the data "
                "or pass check_data=False to skip this check."
            )


def _make_step(loss_fn, optimizer, *, batch_size, n, batch_sharding=None):
    """One guarded optimizer step and the example order it starts a chunk from.

    Minibatches go through the examples in epochs of ``n // batch_size`` steps (the last
    ``n % batch_size`` of each shuffle sit the epoch out, as with torch's ``drop_last``); epoch
    ``e`` uses the order ``permutation(fold_in(key, e), n)``. So a step's batch depends only
    on the key and the step number, and one permutation per epoch (carried through the scan,
    redrawn when an epoch starts) replaces a sort of all ``n`` examples per step.

    Returns ``(order_at, step)``: ``order_at(key, t)`` is the order of the epoch of step ``t``;
    ``step((params, opt_state, order), t, key, stop, data)`` leaves params and optimizer state
    unchanged when the step is non-finite or ``t >= stop``.
    """
    full_batch = batch_size is None
    per_epoch = 1 if full_batch else n // batch_size

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
        if batch_sharding is not None:
            batch = jax.tree.map(
                lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), batch
            )
        return batch

    def step(carry, t, key, stop, data):
        params, opt_state, order = carry
        if not full_batch:  # t is not batched over restarts: this stays a cond under vmap
            order = jax.lax.cond(t % per_epoch == 0, lambda: order_at(key, t), lambda: order)
        loss, grads = jax.value_and_grad(loss_fn)(params, sample(order, t, data))
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = finite & (t < stop)
        params = _tree_where(keep, new_params, params)
        opt_state = _tree_where(keep, new_state, opt_state)
        return (params, opt_state, order), (loss, finite)

    return order_at, step


def _typed_key(key):
    """A typed PRNG key from a typed or a legacy uint32 key."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"fit: key must be a single PRNG key, got a key array of shape {key.shape}."
            )
        return key
    arr = np.asarray(key) if isinstance(key, np.ndarray | jax.Array) else None
    if arr is None or arr.dtype != np.uint32 or arr.shape != (2,):
        raise TypeError(
            f"fit: key must be a PRNG key from jax.random.key(seed), got {type(key).__name__}"
            f"{'' if arr is None else f' {arr.dtype}{list(arr.shape)}'}."
        )
    return jax.random.wrap_key_data(arr)


def _auto_mesh(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis Auto, so XLA's sharding propagation partitions any loss_fn
    (jax.make_mesh gives Explicit axes, which would make the user's ops sharding-typed)."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _put(x, sharding: NamedSharding, *, replicated: bool):
    """``x`` as a global array with ``sharding``; a process-local value on several hosts."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x if x.sharding.is_equivalent_to(sharding, x.ndim) else jax.device_put(x, sharding)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    local = np.asarray(x)
    # replicated: every process holds the whole value; sharded: each its slice of axis 0
    return jax.make_array_from_process_local_data(
        sharding, local, local.shape if replicated else None
    )


def _check_config(saved: dict, wanted: dict, path) -> None:
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, this call has {wanted[k]!r}"
        for k in wanted
        if saved.get(k) != wanted[k]
    ]
    if diffs:
        raise ValueError(
            f"fit: cannot resume from {path}: it was written by a different configuration ("
            + "; ".join(diffs)
            + "). Call fit with the same settings, or use a fresh checkpoint_dir."
        )


def _check_int(name, value, *, minimum=1, allow_none=False):
    if value is None and allow_none:
        return
    if not _checks.is_int(value) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        # a str or float is the wrong type (TypeError), 0 the wrong value (ValueError)
        raise (ValueError if _checks.is_int(value) else TypeError)(
            f"fit: {name} must be {what}{' or None' if allow_none else ''}, got {value!r}."
        )


def _ckpt_state(params, opt_state, history, nonfinite, key_data) -> dict:
    """What a checkpoint of ``fit`` holds; also the target it is restored into."""
    return {
        "params": params,
        "opt_state": opt_state,
        "losses": history,
        "nonfinite": nonfinite,
        "key_data": key_data,
    }


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
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    resume: bool = False,
    max_loss: float | None = None,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
) -> FitResult:
    """Minimises ``loss_fn(params, batch)`` with ``optimizer`` for ``steps`` steps.

    Steps run inside ``lax.scan`` in chunks of ``chunk_size`` (one compiled call per chunk, no
    host round-trip per step); ``restarts`` independent runs share the compiled call via
    ``jax.vmap``. A step whose loss or gradients are not finite leaves params and optimizer
    state unchanged and is counted; as many consecutive non-finite steps as one chunk holds
    (counted across chunk boundaries, so how the run is cut does not matter) raise
    ``NonFiniteError`` naming the step. Minibatches go through the data in shuffled epochs of
    ``n // batch_size`` steps, epoch ``e`` in the order ``permutation(fold_in(key, e), n)``, so
    the same key and data give bit-identical results, however the run is chunked,
    checkpointed or resumed.

    ``loss_fn`` is traced once on abstract values before anything is compiled: shape and dtype
    mistakes between data, model and targets raise ``ValueError``/``TypeError`` there. To also
    catch silent broadcasting (targets ``[N]`` against predictions ``[N, 1]``), call ``fit``
    inside ``with jax.numpy_rank_promotion("raise"):``.

    Data parallelism: with ``mesh`` (a ``jax.sharding.Mesh``) every data array's leading axis
    is sharded over the mesh axis ``data_axis`` (``NamedSharding(mesh, P(data_axis))``), each
    minibatch is constrained to stay sharded that way, and params and optimizer state are
    replicated (``NamedSharding(mesh, P())``); XLA inserts the gradient all-reduce. The
    compiled chunk is the same scan-fused step (mesh axes are used as ``AxisType.Auto``). The
    number of examples and ``batch_size`` must be divisible by the size of ``data_axis``. A
    1-device mesh gives the single-device result. On several hosts (after
    ``jax.distributed.initialize()``, ``jax.process_count() > 1``) every process calls ``fit``
    with the same arguments except ``data``, which holds that process's own slice of the
    examples: numpy or single-host arrays of equal size on every process, which become the
    shards on that process's devices (``jax.make_array_from_process_local_data``; the global
    example count is the local one times ``jax.process_count()``), or global ``jax.Array``s
    already sharded over the mesh. Params, key and all other arguments must be equal on every
    process; ``checkpoint_dir`` must be on a filesystem all hosts share. (Not exercised by
    the test suite, which runs in one process.)

    Checkpoints (orbax-checkpoint, optional extra ``checkpoint``): with ``checkpoint_dir``,
    params, optimizer state, step, the key, the loss history so far, non-finite counts and the
    configuration are saved every ``checkpoint_every`` steps and at the end, keeping the newest
    ``keep`` (see ``jaxconv.checkpoint``). Chunks are cut so that checkpoints fall on chunk
    boundaries. ``resume=True`` continues from the newest checkpoint that verifies (a
    corrupt newest one is skipped with a warning) and ends bit-identical to an uninterrupted
    run; with an empty directory it starts from step 0. Without ``resume`` the directory must
    hold no checkpoints.

    Args:
      loss_fn: ``(params, batch) -> scalar``; ``batch`` has the structure of ``data``.
      params: initial params; with ``restarts=R`` every leaf has a leading axis of size R
        (e.g. ``jax.vmap(lambda k: model.init(k, shape))(jax.random.split(key, R))``).
      optimizer: an optax gradient transformation.
      data: a pytree of arrays sharing a leading example axis [n, ...], or None.
      steps: number of optimizer steps.
      key: PRNG key for minibatch sampling (restart r uses ``jax.random.split(key, R)[r]``).
      batch_size: examples per step (global, across devices), drawn without replacement
        from a fresh shuffle each epoch (the ``n % batch_size`` left over sit that epoch
        out); None for full batch.
      restarts: number of independent runs trained at once, or None for a single run.
      chunk_size: steps per compiled call; progress is reported between chunks.
      progress: show a tqdm bar; None shows it only when stderr is a terminal.
      check_data: reject NaN/Inf in ``data`` up front, naming the first bad index.
      mesh: a ``jax.sharding.Mesh`` to shard the data over (data-parallel), or None.
      data_axis: the mesh axis name the examples are split over; default the first axis.
      checkpoint_dir: directory for orbax checkpoints, or None for none.
      checkpoint_every: save every this many steps (and at the end); None saves only at the
        end. Needs ``checkpoint_dir``.
      keep: how many of the newest checkpoints to keep.
      resume: continue from the newest valid checkpoint in ``checkpoint_dir``; a checkpoint
        written with different steps, chunking, batch_size, restarts, key or data shapes
        raises ``ValueError`` saying what differs.
      max_loss: stop with ``DivergenceError`` (naming the step and loss) as soon as a finite
        loss exceeds this; the last checkpoint, written before, stays intact.
      on_chunk: called as ``on_chunk(step, losses)`` after each chunk (and after its
        checkpoint, if one falls there) with the steps done so far and the chunk's losses
        ([k] or [R, k]).

    Returns:
      A ``FitResult`` with params, optimizer state, the [steps] (or [R, steps]) loss history,
      timings and the count of skipped non-finite steps.

    Raises:
      NonFiniteError: a chunk's worth of consecutive steps were non-finite.
      DivergenceError: a loss exceeded ``max_loss``.

    Example:
      >>> import jax.numpy as jnp, optax, jaxconv
      >>> loss = lambda p, b: jnp.mean((p["w"] * b[0] - b[1]) ** 2)
      >>> data = (jnp.arange(4.0), 3 * jnp.arange(4.0))
      >>> out = jaxconv.fit(loss, {"w": jnp.zeros(())}, optax.adam(0.1), data, steps=300,
      ...                   progress=False)
      >>> round(float(out.params["w"]), 3)
      3.0
    """
    # ---- arguments (all checked before any device work) ----
    if not callable(loss_fn):
        raise TypeError(f"fit: loss_fn must be callable, got {type(loss_fn).__name__}.")
    _check_int("steps", steps)
    _check_int("chunk_size", chunk_size)
    _check_int("restarts", restarts, allow_none=True)
    _check_int("checkpoint_every", checkpoint_every, allow_none=True)
    _check_int("keep", keep)
    steps, chunk_size, keep = int(steps), int(chunk_size), int(keep)
    restarts = None if restarts is None else int(restarts)
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(
            f"fit: optimizer must be an optax.GradientTransformation, got {type(optimizer)}."
        )
    for name, flag in (("check_data", check_data), ("resume", resume)):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"fit: {name} must be a bool, got {flag!r}.")
    if progress is not None and not isinstance(progress, bool | np.bool_):
        raise TypeError(f"fit: progress must be a bool or None, got {progress!r}.")
    if max_loss is not None:
        if isinstance(max_loss, bool) or not isinstance(
            max_loss, int | float | np.integer | np.floating
        ):
            raise TypeError(f"fit: max_loss must be a finite number or None, got {max_loss!r}.")
        if not math.isfinite(max_loss):
            raise ValueError(f"fit: max_loss must be a finite number or None, got {max_loss!r}.")
    if on_chunk is not None and not callable(on_chunk):
        raise TypeError(f"fit: on_chunk must be callable or None, got {type(on_chunk).__name__}.")
    if checkpoint_dir is None:
        if checkpoint_every is not None or resume:
            raise ValueError(
                "fit: checkpoint_every and resume need checkpoint_dir; pass the directory to "
                "save checkpoints in."
            )
    elif not isinstance(checkpoint_dir, str) and not hasattr(checkpoint_dir, "__fspath__"):
        raise TypeError(
            f"fit: checkpoint_dir must be a path (str or os.PathLike), got {checkpoint_dir!r}."
        )
    key = _typed_key(jax.random.key(0) if key is None else key)
    n = _num_examples(data)
    local_slices = (
        mesh is not None
        and jax.process_count() > 1
        and not all(isinstance(x, jax.Array) and not x.is_fully_addressable
                    for x in jax.tree.leaves(data))
    )
    if n is not None and local_slices:
        n = n * jax.process_count()  # every process passed its own slice of the examples
    if batch_size is not None:
        if n is None:
            raise ValueError("fit: batch_size needs data with a leading example axis.")
        if not _checks.is_int(batch_size) or not 1 <= batch_size <= n:
            raise (ValueError if _checks.is_int(batch_size) else TypeError)(
                f"fit: batch_size must be an int in [1, {n}] (the number of examples), got "
                f"{batch_size!r}."
            )
        batch_size = int(batch_size)

    user_mesh = mesh
    if mesh is None:
        if data_axis is not None:
            raise ValueError("fit: data_axis needs a mesh; pass mesh=jax.make_mesh(...).")
    else:
        if not isinstance(mesh, Mesh):
            raise TypeError(
                f"fit: mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((n,), ('data',))), "
                f"got {type(mesh).__name__}."
            )
        data_axis = mesh.axis_names[0] if data_axis is None else data_axis
        if data_axis not in mesh.axis_names:
            raise ValueError(
                f"fit: data_axis (={data_axis!r}) is not an axis of the mesh, whose axes are "
                f"{tuple(mesh.axis_names)}."
            )
        if n is None:
            raise ValueError("fit: a mesh shards the data, but data is None.")
        n_dev = mesh.shape[data_axis]
        if n % n_dev:
            raise ValueError(
                f"fit: the number of examples (={n}) must be divisible by the number of devices "
                f"on mesh axis {data_axis!r} (={n_dev}); drop or pad examples."
            )
        if batch_size is not None and batch_size % n_dev:
            raise ValueError(
                f"fit: batch_size (={batch_size}) must be divisible by the number of devices on "
                f"mesh axis {data_axis!r} (={n_dev})."
            )

    if check_data:
        _check_finite_data(data)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None and isinstance(leaf, float | int | np.number):
            dtype = np.asarray(leaf).dtype
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            what = dtype if dtype is not None else type(leaf).__name__
            raise TypeError(
                f"fit: params leaves must be floating arrays, got {what} at "
                f"params{jax.tree_util.keystr(path)}."
            )
    params = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), params)
    if not jax.tree.leaves(params):
        raise ValueError("fit: params has no arrays to optimise.")
    single = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    if restarts is not None:
        lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(params)}
        if lead != {restarts}:
            raise ValueError(
                f"fit: with restarts={restarts} every params leaf needs a leading axis of size "
                f"{restarts}, got leading sizes {sorted(lead, key=str)}; build them with "
                "jax.vmap(init)(jax.random.split(key, restarts))."
            )
        single = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)

    def struct(x, lead=None):
        x_dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        x_shape = np.shape(x) if lead is None else (lead, *np.shape(x)[1:])
        return jax.ShapeDtypeStruct(x_shape, jax.dtypes.canonicalize_dtype(x_dtype))

    batch_struct = jax.tree.map(lambda x: struct(x, batch_size or n), data)
    try:
        out = jax.eval_shape(loss_fn, single, batch_struct)
    except (ValueError, TypeError) as e:
        if hasattr(e, "add_note"):  # Python >= 3.11
            e.add_note(
                f"fit: raised while tracing loss_fn(params, batch) with params "
                f"{jax.tree.map(lambda s: s.shape, single)} and a batch "
                f"{jax.tree.map(lambda s: s.shape, batch_struct)}, before compiling."
            )
        raise
    except Exception as e:  # turn anything else into an error that names the cause
        raise ValueError(
            f"fit: loss_fn(params, batch) failed while being traced with params "
            f"{jax.tree.map(lambda s: s.shape, single)} and a batch "
            f"{jax.tree.map(lambda s: s.shape, batch_struct)}: {type(e).__name__}: {e}"
        ) from e
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(
            f"fit: loss_fn must return a scalar, got {getattr(out, 'shape', type(out))}; "
            "reduce it, e.g. with jnp.mean."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"fit: loss_fn must return a real floating scalar, got {out.dtype}.")

    # ---- chunking: checkpoints fall on chunk boundaries ----
    period = steps if checkpoint_every is None else min(checkpoint_every, steps)
    chunk = math.ceil(period / math.ceil(period / chunk_size))

    # ---- placement ----
    keys = key if restarts is None else jax.random.split(key, restarts)
    impl = jax.random.key_impl(key)
    key_data = np.asarray(jax.random.key_data(keys))
    data = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), data)
    jit_kwargs = {}
    batch_sharding = None
    if mesh is not None:
        mesh = _auto_mesh(mesh)
        replicated = NamedSharding(mesh, P())
        data_sharding = NamedSharding(mesh, P(data_axis))
        try:
            data = jax.tree.map(lambda x: _put(x, data_sharding, replicated=False), data)
        except ValueError as e:
            raise ValueError(
                f"fit: could not shard the data over mesh axis {data_axis!r}: {e}"
            ) from e
        params = jax.tree.map(lambda x: _put(x, replicated, replicated=True), params)
        key_data = _put(key_data, replicated, replicated=True)
        batch_sharding = data_sharding
        jit_kwargs = {
            "in_shardings": (replicated, replicated, replicated, replicated, replicated,
                             data_sharding),
            "out_shardings": replicated,
        }
        init = jax.jit(
            optimizer.init if restarts is None else jax.vmap(optimizer.init),
            out_shardings=replicated,
        )
    else:
        key_data = jnp.asarray(key_data)
        init = optimizer.init if restarts is None else jax.vmap(optimizer.init)
    opt_state = init(params)

    order_at, step_fn = _make_step(loss_fn, optimizer, batch_size=batch_size, n=n,
                                   batch_sharding=batch_sharding)

    def run_one(params, opt_state, start, stop, key_data, data):
        key = jax.random.wrap_key_data(key_data, impl=impl)
        ts = start + jnp.arange(chunk)
        (params, opt_state, _), (loss, finite) = jax.lax.scan(
            lambda c, t: step_fn(c, t, key, stop, data),
            (params, opt_state, order_at(key, start)), ts,
        )
        return params, opt_state, loss, finite

    run = run_one if restarts is None else jax.vmap(run_one, in_axes=(0, 0, None, None, 0, None))

    # ---- history, checkpoints, resume ----
    lead_shape = () if restarts is None else (restarts,)
    history = np.full((*lead_shape, steps), np.nan, dtype=np.dtype(out.dtype))
    nonfinite = np.zeros(lead_shape, np.int64)
    start_step = 0
    ckpt = None
    config = {
        "steps": steps,
        "chunk": chunk,
        "checkpoint_every": checkpoint_every,
        "batch_size": batch_size,
        "restarts": restarts,
        "key": [str(impl), np.asarray(jax.random.key_data(key)).tolist()],
        "data": [[list(s.shape), str(s.dtype)] for s in jax.tree.leaves(batch_struct)],
        "num_examples": n,
    }

    if checkpoint_dir is not None:
        from jaxconv.checkpoint import Checkpointer

        ckpt = Checkpointer(checkpoint_dir, keep=keep)
    try:
        if ckpt is not None:
            existing = ckpt.steps()
            if existing and not resume:
                raise ValueError(
                    f"fit: checkpoint_dir {ckpt.directory} already holds checkpoints (steps "
                    f"{existing}); pass resume=True to continue from the newest, or use an "
                    "empty directory."
                )
            if existing:
                restored = ckpt.restore_latest(
                    _ckpt_state(params, opt_state, history, nonfinite,
                                np.asarray(jax.random.key_data(key))),
                    check_metadata=lambda meta, path: _check_config(meta.get("config", {}),
                                                                    config, path),
                )
                state = restored.state
                params, opt_state = state["params"], state["opt_state"]
                history, nonfinite = np.array(state["losses"]), np.array(state["nonfinite"])
                start_step = restored.step
                for s in existing:
                    if s > start_step:  # newer but unreadable (warned about): kept aside, not
                        # deleted (the error may have been transient), and saved again below
                        moved = ckpt.set_aside(s)
                        warnings.warn(f"fit: moved checkpoint {s} aside to {moved}.",
                                      RuntimeWarning, stacklevel=3)
        return _run_chunks(
            run, jit_kwargs, params, opt_state, key_data, data,
            steps=steps, chunk=chunk, start_step=start_step, every=checkpoint_every,
            history=history, nonfinite=nonfinite, restarts=restarts, progress=progress,
            max_loss=max_loss, on_chunk=on_chunk, ckpt=ckpt, config=config,
            user_mesh=user_mesh,
        )
    finally:
        if ckpt is not None:
            ckpt.close()


def _nonfinite_runs(finite, run):
    """Per restart: the longest run of consecutive non-finite steps in a chunk's ``finite``
    flags ([k] or [R, k]), counting the ``run`` steps that ended the previous chunk, and the
    run still open at the chunk's end."""
    longest = run
    for j in range(finite.shape[-1]):
        run = np.where(finite[..., j], 0, run + 1)
        longest = np.maximum(longest, run)
    return longest, run


def _run_chunks(run, jit_kwargs, params, opt_state, key_data, data, *, steps, chunk, start_step,
                every, history, nonfinite, restarts, progress, max_loss, on_chunk, ckpt, config,
                user_mesh):
    compile_s = 0.0
    compiled = None
    if start_step < steps:
        t0 = time.perf_counter()
        compiled = (
            jax.jit(run, **jit_kwargs)
            .lower(params, opt_state, jnp.int32(0), jnp.int32(0), key_data, data)
            .compile()
        )
        compile_s = time.perf_counter() - t0

    key_data_host = np.asarray(config["key"][1], np.uint32)

    def save(step):
        state = _ckpt_state(params, opt_state, history, nonfinite, key_data_host)
        ckpt.save(step, state, metadata={"config": config, "step": step})

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="fit", unit="step", leave=True)
    wall_s = 0.0
    t = start_step
    bad_run = np.zeros(np.shape(nonfinite), np.int64)  # non-finite steps ending the last chunk
    try:
        while t < steps:
            stop = steps if every is None else min(steps, (t // every + 1) * every)
            t0 = time.perf_counter()
            params, opt_state, loss, finite = compiled(
                params, opt_state, jnp.int32(t), jnp.int32(stop), key_data, data
            )
            loss, finite = np.asarray(loss), np.asarray(finite)  # waits for the chunk
            wall_s += time.perf_counter() - t0
            done = min(chunk, stop - t)
            loss, finite = loss[..., :done], finite[..., :done]
            history[..., t:t + done] = loss
            nonfinite = nonfinite + (~finite).sum(axis=-1)
            longest, bad_run = _nonfinite_runs(finite, bad_run)
            stuck = longest >= chunk
            if np.any(stuck):
                which = "" if restarts is None else f" in restart(s) {np.flatnonzero(stuck)[:8]}"
                raise NonFiniteError(
                    f"fit: {int(longest.max())} consecutive steps up to step {t + done - 1}"
                    f"{which} had a non-finite loss or gradient (the limit is {chunk}, one "
                    "chunk); params were kept at their last finite values. Lower the learning "
                    "rate, clip gradients (optax.clip_by_global_norm) or check the loss and data."
                )
            if max_loss is not None:
                over = np.isfinite(loss) & (loss > max_loss)
                if over.any():
                    over2 = over.reshape(-1, done)
                    first = [int(np.argmax(r)) if r.any() else done for r in over2]
                    restart = int(np.argmin(first))
                    j = first[restart]
                    value = float(loss.reshape(-1, done)[restart, j])
                    last, saved = None, ""
                    if ckpt is not None:
                        # a checkpoint at the diverging step holds the params that gave the
                        # bad loss: drop it, so the newest one left is known good
                        for s in ckpt.steps():
                            if s >= t + j:
                                ckpt.delete(s)
                        last = (ckpt.steps() or [None])[-1]
                        saved = (
                            f" The newest checkpoint ({ckpt.path(last)}) predates it and is "
                            "intact." if last is not None else " No checkpoint predates it."
                        )
                    where = "" if restarts is None else f" in restart {restart}"
                    raise DivergenceError(
                        f"fit: diverging: loss {value:.6g} at step {t + j}{where} exceeds "
                        f"max_loss={max_loss:g}; stopped.{saved} Lower the learning rate or "
                        "clip gradients (optax.clip_by_global_norm).",
                        step=t + j, loss=value, restart=None if restarts is None else restart,
                        checkpoint_step=last,
                    )
            t += done
            if ckpt is not None and t == stop:
                save(t)
            if bar is not None:
                # the best finite last loss: np.nanmin warns on an all-NaN chunk end
                last_loss = loss[..., -1][np.isfinite(loss[..., -1])]
                shown = f"{last_loss.min():.3e}" if last_loss.size else "nan"
                bar.update(done)
                rate = (t - start_step) / wall_s if wall_s > 0 else float("inf")
                bar.set_postfix(loss=shown, steps_per_s=f"{rate:.0f}")
            if on_chunk is not None:
                on_chunk(t, loss)
    finally:
        if bar is not None:
            bar.close()
    if user_mesh is not None:
        back = NamedSharding(user_mesh, P())
        params, opt_state = jax.device_put((params, opt_state), back)
    ran = steps - start_step
    return FitResult(
        params=params,
        opt_state=opt_state,
        losses=history,
        steps=steps,
        nonfinite_steps=int(nonfinite) if restarts is None else nonfinite,
        wall_s=wall_s,
        compile_s=compile_s,
        steps_per_s=ran / wall_s if wall_s > 0 else float("inf"),
    )
