"""Fitting with optax: many steps per compiled call (``lax.scan`` chunks), many restarts at once,
data-parallel over a device mesh, checkpointed and resumable.

``fit`` is a driver: it validates its arguments into one ``_Settings`` record, places the
arrays, gets the compiled chunk of the pure trainer (``jaxconv._trainer``, cached across calls)
and runs it chunk by chunk, handing each chunk to small host-side hooks (``jaxconv._hooks``:
non-finite and divergence guards, checkpoints, progress, the user's callback). It never writes
an optimizer, a progress bar, a sharding scheme or a checkpoint format by hand (optax, tqdm,
jax.sharding, orbax) and never returns non-finite params silently.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconv import _checks, _hooks, _trainer
from jaxconv._hooks import DivergenceError, NonFiniteError  # noqa: F401 (public here)
from jaxconv._typing import Array, PyTree


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: final params (leading axis ``restarts`` when restarts were asked for).
      opt_state: final optimizer state (likewise).
      losses: [steps] or [restarts, steps] numpy array, the loss before each step's update.
      steps: number of steps done.
      nonfinite_steps: steps skipped because their loss, gradients, new params or new
        optimizer state were not finite (an int, or a [restarts] array).
      wall_s: seconds spent running steps (compile excluded).
      compile_s: seconds spent tracing the step and compiling it (a cached executable of the
        same computation is not compiled again: then only the tracing).
      steps_per_s: ``steps / wall_s`` (restart-steps count once; after a resume, only the
        steps this call ran).
      stopped: with restarts, a [restarts] array: the step at which each restart was stopped
        for ``max_nonfinite`` consecutive non-finite steps, or -1 for restarts that ran to
        the end; None without restarts (such a run raises instead).
      mode: how the steps ran: ``"scan"`` (many steps per compiled call) or ``"step"`` (one
        compiled call per step); see ``fit``'s ``mode``.
      restarts_by: with restarts, how they shared the compiled call: ``"vmap"`` (batched) or
        ``"map"`` (one after another); see ``fit``'s ``restarts_by``. None without restarts.
    """

    params: PyTree
    opt_state: PyTree
    losses: np.ndarray
    steps: int
    nonfinite_steps: Any
    wall_s: float
    compile_s: float
    steps_per_s: float
    stopped: np.ndarray | None = None
    mode: str = "scan"
    restarts_by: str | None = None


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
    return int(cast(int, sizes.pop()))  # None is not in sizes: checked above


def _is_float(dtype) -> bool:
    """Any floating or complex dtype jax knows, bfloat16 and float8 included (numpy's own
    ``np.issubdtype(bfloat16, np.inexact)`` is False for ml_dtypes' types)."""
    return bool(jnp.issubdtype(dtype, jnp.inexact))


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
    (indices are global), and the processes agree on the verdict: all of them raise, not only
    the one holding the bad value (the others would wait for it at the next collective).
    """
    paths = jax.tree_util.tree_flatten_with_path(data)[0]
    found = None
    for path, leaf in paths:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not _is_float(leaf.dtype):
                continue
            for shard in leaf.addressable_shards:
                offset = [s.start or 0 for s in shard.index]
                found = _first_bad(np.asarray(shard.data), offset)
                if found is not None:
                    break
        else:
            arr = np.asarray(leaf)
            if not _is_float(arr.dtype):
                continue
            found = _first_bad(arr)
        if found is not None:
            found = (path, *found)
            break
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for _, x in paths):
        from jax.experimental import multihost_utils

        anywhere = np.asarray(multihost_utils.process_allgather(
            np.array(found is not None, np.uint8)))
        if found is None and anywhere.any():
            raise ValueError(
                f"fit: data has a non-finite value on process {int(np.argmax(anywhere))} (its "
                "error names the index); clean the data or pass check_data=False to skip this "
                "check."
            )
    if found is not None:
        path, index, value, count = found
        raise ValueError(
            f"fit: data{jax.tree_util.keystr(path)} has a non-finite value "
            f"({value}) at index {index} ({count} in all); clean the data "
            "or pass check_data=False to skip this check."
        )


def _typed_key(key):
    """A typed PRNG key from a typed or a legacy uint32 key."""
    _checks.check_key("fit", key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(np.asarray(key))


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


@dataclasses.dataclass(frozen=True)
class _Settings:
    """``fit``'s arguments other than arrays, validated and normalised once."""

    steps: int
    chunk: int  # steps per compiled call (checkpoints fall on chunk boundaries)
    batch_size: int | None
    num_examples: int | None
    restarts: int | None
    checkpoint_every: int | None
    keep: int
    resume: bool
    check_data: bool
    progress: bool
    max_loss: float | None
    mesh: Mesh | None
    data_axis: str | None
    local_slices: bool  # several processes, each passing its own slice of the examples
    compiler_options: dict
    max_nonfinite: int
    mode: str  # "scan" or "step"
    restarts_by: str  # "auto", "vmap" or "map"
    run_config: dict | None

    def boundary(self, t: int) -> int:
        """The first checkpoint boundary (or the end) after step ``t``."""
        every = self.checkpoint_every
        return self.steps if every is None else min(self.steps, (t // every + 1) * every)


def _settings(loss_fn, optimizer, data, *, steps, batch_size, restarts, chunk_size, progress,
              check_data, mesh, data_axis, checkpoint_dir, checkpoint_every, keep, resume,
              max_loss, on_chunk, compiler_options, max_nonfinite, mode, restarts_by,
              run_config) -> _Settings:
    """Every argument check of ``fit``, before any device work."""
    _checks.check_callable("fit", "loss_fn", loss_fn)
    steps = _checks.check_count("fit", "steps", steps)
    chunk_size = _checks.check_count("fit", "chunk_size", chunk_size)
    restarts = _checks.check_count("fit", "restarts", restarts, allow_none=True)
    checkpoint_every = _checks.check_count(
        "fit", "checkpoint_every", checkpoint_every, allow_none=True
    )
    keep = _checks.check_count("fit", "keep", keep)
    max_nonfinite = _checks.check_count("fit", "max_nonfinite", max_nonfinite)
    mode = _checks.check_choice("fit", "mode", mode, _trainer.MODES)
    restarts_by = _checks.check_choice("fit", "restarts_by", restarts_by,
                                       ("auto", *_trainer.RESTARTS_BY))
    if restarts is None and restarts_by != "auto":
        raise ValueError(
            f"fit: restarts_by (={restarts_by!r}) needs restarts; pass restarts=R to train R "
            "runs at once, or leave restarts_by='auto'."
        )
    if run_config is not None:
        run_config = _hooks.check_run_config(run_config)
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(
            f"fit: optimizer must be an optax.GradientTransformation, got {type(optimizer)}."
        )
    check_data = _checks.check_bool("fit", "check_data", check_data)
    resume = _checks.check_bool("fit", "resume", resume)
    progress = _checks.check_bool("fit", "progress", progress, allow_none=True)
    if max_loss is not None:
        if not _checks.is_real(max_loss):
            raise TypeError(f"fit: max_loss must be a finite number or None, got {max_loss!r}.")
        if not math.isfinite(max_loss):
            raise ValueError(f"fit: max_loss must be a finite number or None, got {max_loss!r}.")
    _checks.check_callable("fit", "on_chunk", on_chunk, allow_none=True)
    if compiler_options is not None and not isinstance(compiler_options, dict):
        raise TypeError(
            f"fit: compiler_options must be a dict or None, got {type(compiler_options).__name__}"
            "; see jaxconv.compiler_options()."
        )
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
    steps, chunk_size = int(steps), int(chunk_size)
    period = steps if checkpoint_every is None else min(int(checkpoint_every), steps)
    return _Settings(
        steps=steps,
        chunk=math.ceil(period / math.ceil(period / chunk_size)),
        batch_size=batch_size,
        num_examples=n,
        restarts=None if restarts is None else int(restarts),
        checkpoint_every=None if checkpoint_every is None else int(checkpoint_every),
        keep=int(keep),
        resume=bool(resume),
        check_data=bool(check_data),
        progress=_hooks.show_progress(progress),
        max_loss=None if max_loss is None else float(max_loss),
        mesh=mesh,
        data_axis=data_axis,
        local_slices=local_slices,
        compiler_options=_compile_options(compiler_options),
        max_nonfinite=int(max_nonfinite),
        mode=mode,
        restarts_by=restarts_by,
        run_config=run_config,
    )


def _compile_options(options: dict | None) -> dict:
    """``fit``'s ``compiler_options``: None means ``jaxconv.compiler_options()``."""
    from jaxconv._compile import compiler_options

    return compiler_options() if options is None else dict(options)


def _check_params(params, restarts):
    """Params as jax arrays, and one restart's abstract params; TypeError/ValueError if bad."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None and isinstance(leaf, float | int | np.number):
            dtype = np.asarray(leaf).dtype
        if dtype is None or not _is_float(dtype):
            what = dtype if dtype is not None else type(leaf).__name__
            raise TypeError(
                f"fit: params leaves must be floating arrays, got {what} at "
                f"params{jax.tree_util.keystr(path)}."
            )
    params = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), params)
    if not jax.tree.leaves(params):
        raise ValueError("fit: params has no arrays to optimise.")
    if restarts is None:
        return params, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(params)}
    if lead != {restarts}:
        raise ValueError(
            f"fit: with restarts={restarts} every params leaf needs a leading axis of size "
            f"{restarts}, got leading sizes {sorted(lead, key=str)}; build them with "
            "jax.vmap(init)(jax.random.split(key, restarts))."
        )
    return params, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)


def _trace_loss(loss_fn, single, data, cfg: _Settings):
    """Traces ``loss_fn`` on abstract values (shape mistakes surface here, named); returns
    the abstract batch and the loss's dtype."""

    def struct(x, lead):
        x_dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        return jax.ShapeDtypeStruct((lead, *np.shape(x)[1:]),
                                    jax.dtypes.canonicalize_dtype(x_dtype))

    batch = jax.tree.map(lambda x: struct(x, cfg.batch_size or cfg.num_examples), data)
    shapes = (f"params {jax.tree.map(lambda s: s.shape, single)} and a batch "
              f"{jax.tree.map(lambda s: s.shape, batch)}")
    try:
        out = jax.eval_shape(loss_fn, single, batch)
    except Exception as e:  # the user's exception, its type kept: a note says where it arose
        e.add_note(f"fit: raised while tracing loss_fn(params, batch) with {shapes}, before "
                   "compiling.")
        raise
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(
            f"fit: loss_fn must return a scalar, got {getattr(out, 'shape', type(out))}; "
            "reduce it, e.g. with jnp.mean."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"fit: loss_fn must return a real floating scalar, got {out.dtype}.")
    return batch, out.dtype


def _place(params, key_data, data, cfg: _Settings):
    """Arrays where the run needs them, the jit shardings, and the batch sharding."""
    data = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), data)
    if cfg.mesh is None:
        return params, jnp.asarray(key_data), data, None
    mesh = _auto_mesh(cfg.mesh)
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P(cfg.data_axis))
    try:
        data = jax.tree.map(lambda x: _put(x, data_sharding, replicated=False), data)
    except ValueError as e:
        raise ValueError(
            f"fit: could not shard the data over mesh axis {cfg.data_axis!r}: {e}"
        ) from e
    params = jax.tree.map(lambda x: _put(x, replicated, replicated=True), params)
    key_data = _put(key_data, replicated, replicated=True)
    return params, key_data, data, (replicated, data_sharding)


def _jit_kwargs(shardings, n_args: int) -> dict:
    """``jax.jit`` shardings for a function whose last of ``n_args`` arguments is the data."""
    if shardings is None:
        return {}
    replicated, data_sharding = shardings
    return {"in_shardings": (replicated,) * (n_args - 1) + (data_sharding,),
            "out_shardings": replicated}


def _run_config(cfg: _Settings, key, batch, data, params, loss_probe) -> dict:
    """What a checkpoint must have been written with to be resumed: the settings, the key, the
    data (shapes and a digest of the values), the initial params (a digest), what ``loss_fn``
    computes at them (``_trainer.loss_probe``) and the user's ``run_config``. The optimizer is
    checked separately, on the restored state (``_check_optimizer``)."""
    return {
        "steps": cfg.steps,
        "checkpoint_every": cfg.checkpoint_every,
        "batch_size": cfg.batch_size,
        "restarts": cfg.restarts,
        "max_nonfinite": cfg.max_nonfinite,
        "key": [str(jax.random.key_impl(key)), np.asarray(jax.random.key_data(key)).tolist()],
        "data": [[list(s.shape), str(s.dtype)] for s in jax.tree.leaves(batch)],
        "num_examples": cfg.num_examples,
        "data_digest": _hooks.data_digest(data),
        "params_digest": _hooks.data_digest(params),
        "loss_fn": loss_probe,
        "run_config": cfg.run_config,
    }


_PROBES = {
    "loss_fn": "loss_fn computes other values at the initial params (its loss and gradient on "
               "the first batch differ)",
    "optimizer_probe": "the optimizer computes other updates from the checkpoint's state (a "
                       "changed learning rate, schedule or other hyperparameter)",
}


def _config_diffs(saved: dict, wanted: dict) -> list[str]:
    diffs = []
    for k, v in wanted.items():
        old = saved.get(k)
        if k in _PROBES:
            if not _hooks.probes_match(old, v):
                diffs.append(_PROBES[k])
        elif old != v:
            if k.endswith("_digest"):
                diffs.append(f"{k.removesuffix('_digest')}: the values differ")
            else:
                diffs.append(f"{k}: checkpoint has {old!r}, this call has {v!r}")
    return diffs


def _check_config(saved: dict, wanted: dict, path) -> None:
    diffs = _config_diffs(saved, wanted)
    if diffs:
        raise ValueError(
            f"fit: cannot resume from {path}: it was written by a different run ("
            + "; ".join(diffs)
            + "). Call fit with the same loss_fn, params, optimizer, data and settings, or use "
            "a fresh checkpoint_dir."
        )


def _resume(ckpt, state: _hooks.RunState, key_data, config, probe) -> int:
    """Restores the newest valid checkpoint into ``state``; returns its step (0 if none).
    ``probe(opt_state)`` is the optimizer's fingerprint from a state (``optimizer_probe``)."""
    existing = ckpt.steps()
    if not existing:
        return 0
    restored = ckpt.restore_latest(
        state.checkpoint(key_data),
        check_metadata=lambda meta, path: _check_config(meta.get("config", {}), config, path),
    )
    saved = restored.state
    state.run = _trainer.State(saved["params"], saved["opt_state"],
                               _trainer.Guard(**saved["guard"]))
    state.losses = np.array(saved["losses"])
    _check_config(restored.metadata, {"optimizer_probe": probe(state.run.opt_state)},
                  restored.path)
    for s in restored.skipped:
        # newer but corrupt (warned about): kept aside, not deleted, and saved again by this run
        moved = ckpt.set_aside(s)
        warnings.warn(f"fit: moved checkpoint {s} aside to {moved}.", RuntimeWarning,
                      stacklevel=4)
    return restored.step


def _platform(key_data) -> str:
    """The platform the run's arrays (and so its executable) are on."""
    return next(iter(key_data.sharding.device_set)).platform


def _executable(trainer, spec, cfg: _Settings, state, key_data, data, shardings):
    """The compiled computation of the run's ``mode`` (``"scan"``: a loop of up to ``chunk``
    steps in one executable; ``"step"``: one optimizer step, called once per step), lowered
    with every convolution in XLA:CPU's canonical form (``jaxconv._canonical``)."""
    options = cfg.compiler_options
    t0 = time.perf_counter()
    platform = _platform(key_data)
    if cfg.mode == "step":
        fn, args = trainer.step, (state, _trainer.initial_order(spec, cfg.restarts),
                                  jnp.int32(0), key_data, data)
    else:
        fn, args = trainer.run, (state, np.int32(0), np.int32(0), key_data, data)
    kwargs = _jit_kwargs(shardings, len(args))
    traced = _trainer.trace(fn, args, options, kwargs)
    exe = _trainer.compile_traced(traced, _trainer.cache_key(traced, args, options, kwargs),
                                  platform)
    return exe, time.perf_counter() - t0


def _run_chunk(exe, mode: str, state, order, t: int, end: int, stop: int, key_data, data):
    """Steps ``t .. end - 1``: ``(state, order, losses)``, the losses on the host."""
    if mode == "scan":
        out = exe(state, np.int32(t), np.int32(stop), key_data, data)
        return out.state, order, np.asarray(out.losses)[..., :end - t]  # waits for it
    step_losses = []
    counter = jnp.int32(t)  # stays on the device: no host transfer per step
    for _ in range(t, end):
        state, order, counter, loss = exe(state, order, counter, key_data, data)
        step_losses.append(loss)
    return state, order, np.asarray(_stack(step_losses))


@jax.jit
def _stack(losses):
    return jnp.stack(losses, axis=-1)


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
    compiler_options: dict[str, Any] | None = None,
    max_nonfinite: int = 500,
    mode: str = "scan",
    restarts_by: str = "auto",
    run_config: dict[str, Any] | None = None,
) -> FitResult:
    """Minimises ``loss_fn(params, batch)`` with ``optimizer`` for ``steps`` steps.

    Steps run in one of two ways (``mode``): ``"scan"`` (the default) runs up to
    ``chunk_size`` steps inside one compiled call (a loop in the executable, no host
    round-trip per step); ``"step"`` compiles one step and calls it once per step, as a user's
    loop of a jitted step does. Both are lowered with every convolution in the form XLA:CPU's
    fast kernels take, loop bodies included (XLA itself canonicalises convolutions only
    outside loops; see benchmarks/NOTES.md), so the loop runs about as fast as separate calls
    (measured: faster on 20 of 30 generated architectures, median 0.95x) and saves their
    dispatch. ``restarts`` independent runs share the compiled call, batched (``jax.vmap``)
    or one after another inside it (``jax.lax.map``): ``restarts_by``.

    Compiled executables are cached on what they compute, as ``jax.jit`` caches on the
    traced function and jax's trace context: every call traces ``loss_fn`` and the
    optimizer's update, and reuses an executable only when the traced computation (its
    primitives, literal values and the arrays it closes over), the argument shapes, dtypes
    and shardings, the compiler options and jax's trace context (``jax.enable_x64``, default
    matmul precision...) are all the same. So a changed global or closure variable that the
    loss reads, or a redefined model, is never answered from an older executable, while a
    notebook cell that redefines an identical loss and optimizer compiles nothing.
    ``jaxconv.clear_caches()`` drops the cache (it holds at most 16 executables, and no
    reference to ``loss_fn`` or the optimizer).

    Non-finite steps: a step is applied only if its loss, gradients, new params and new
    optimizer state are all finite; otherwise params and optimizer state stay as they were
    and the step is counted (``nonfinite_steps``). After ``max_nonfinite`` consecutive
    skipped steps a run stops: without restarts ``fit`` raises ``NonFiniteError`` naming the
    steps; with restarts only that restart stops (``FitResult.stopped`` gives the step, and
    a ``RuntimeWarning`` names it) while the others finish, and ``fit`` raises only when every
    restart stopped. The counters live with the state on the device (per restart, saved in
    checkpoints), so neither ``chunk_size`` nor ``checkpoint_every`` changes the outcome. A
    run that ends inside a shorter streak warns (``RuntimeWarning``) naming its steps.

    Minibatches go through the data in shuffled epochs of ``n // batch_size`` steps, epoch
    ``e`` in the order ``permutation(fold_in(key, e), n)``, so the same key and data give
    bit-identical results, however the run is chunked, checkpointed or resumed. Optimizers
    that take optax's extra update arguments (``optax.lbfgs()``,
    ``optax.contrib.reduce_on_plateau()``) get them: ``value`` (the step's loss), ``grad``
    and ``value_fn`` (the loss on the step's batch).

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
    process; ``checkpoint_dir`` must be on a filesystem all hosts share (tested with two
    processes on one machine: tests/test_multiprocess.py).

    Checkpoints (orbax-checkpoint, optional extra ``checkpoint``): with ``checkpoint_dir``,
    params, optimizer state (typed PRNG keys in it included), step, the key, the loss history
    so far, non-finite counts and the run's identity are saved every ``checkpoint_every`` steps
    and at the end, keeping the newest ``keep`` (see ``jaxconv.checkpoint``). Chunks are cut
    so that checkpoints fall on chunk boundaries. ``resume=True`` continues from the newest
    checkpoint that verifies (a corrupt newest one is skipped with a warning) and ends
    bit-identical to an uninterrupted run; with an empty directory it starts from step 0.
    Without ``resume`` the directory must hold no checkpoints.

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
      check_data: reject NaN/Inf in ``data`` up front (every floating dtype, bfloat16 and
        float8 included), naming the first bad index.
      mesh: a ``jax.sharding.Mesh`` to shard the data over (data-parallel), or None.
      data_axis: the mesh axis name the examples are split over; default the first axis.
      checkpoint_dir: directory for orbax checkpoints, or None for none.
      checkpoint_every: save every this many steps (and at the end); None saves only at the
        end. Needs ``checkpoint_dir``.
      keep: how many of the newest checkpoints to keep.
      resume: continue from the newest valid checkpoint in ``checkpoint_dir``; a checkpoint
        written by a different run (see above) raises ``ValueError`` saying what differs.
      max_loss: stop with ``DivergenceError`` (naming the step and loss) as soon as a finite
        loss exceeds this; the last checkpoint, written before, stays intact.
      on_chunk: called as ``on_chunk(step, losses)`` after each chunk (and after its
        checkpoint, if one falls there) with the steps done so far and the chunk's losses
        ([k] or [R, k]).
      compiler_options: XLA compiler options for the compiled chunk; None for
        ``jaxconv.compiler_options()``.
      max_nonfinite: consecutive non-finite steps after which a run (each restart on its
        own) stops.
      mode: ``"scan"`` or ``"step"``: how steps are run (see above).
      restarts_by: how restarts share the compiled call: ``"vmap"`` batches them (every op
        runs once for all of them), ``"map"`` runs them one after another (each restart
        the computation of a run without restarts), ``"auto"`` picks ``"map"`` on CPU when
        one restart's step (loss and gradient, XLA's cost analysis of it as ``fit`` lowers
        it) costs more than 2.5 MFLOP and ``"vmap"`` otherwise: XLA:CPU runs a batched
        step that big slower than the restarts in turn (measured 2-3.5x on conv students
        with 2.5-95 MFLOP steps), while smaller steps gain from sharing each op's fixed cost
        (1.8x at 1 MFLOP); on GPU and TPU, ``"vmap"``. The choice depends only on the
        computation and is reported in ``FitResult.restarts_by``; the two agree to float
        rounding, not bit for bit. Needs ``restarts``.
      run_config: a JSON-serialisable dict describing the run (e.g. the hyperparameters you
        built the optimizer from), saved with every checkpoint (orbax custom metadata) and
        required to be equal on resume.

    Returns:
      A ``FitResult`` with params, optimizer state, the [steps] (or [R, steps]) loss history,
      timings and the count of skipped non-finite steps.

    Raises:
      NonFiniteError: ``max_nonfinite`` consecutive steps were non-finite (in every
        restart, with restarts).
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
    cfg = _settings(loss_fn, optimizer, data, steps=steps, batch_size=batch_size,
                    restarts=restarts, chunk_size=chunk_size, progress=progress,
                    check_data=check_data, mesh=mesh, data_axis=data_axis,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, keep=keep,
                    resume=resume, max_loss=max_loss, on_chunk=on_chunk,
                    compiler_options=compiler_options, max_nonfinite=max_nonfinite, mode=mode,
                    restarts_by=restarts_by,
                    run_config=run_config)
    key = _typed_key(jax.random.key(0) if key is None else key)
    if cfg.check_data and not cfg.local_slices:
        _check_finite_data(data)
    params, single = _check_params(params, cfg.restarts)
    batch, loss_dtype = _trace_loss(loss_fn, single, data, cfg)

    host_key_data = np.asarray(jax.random.key_data(key))
    keys = key if cfg.restarts is None else jax.random.split(key, cfg.restarts)
    params, key_data, data, shardings = _place(
        params, np.asarray(jax.random.key_data(keys)), data, cfg)
    if cfg.check_data and cfg.local_slices:  # on the global arrays: global indices
        _check_finite_data(data)
    by = cfg.restarts_by
    if cfg.restarts is not None and by == "auto":
        by, _ = _trainer.restarts_by(loss_fn, single, batch, cfg.compiler_options,
                                     _platform(key_data))
    spec = _trainer.Spec(cfg.chunk, cfg.batch_size, cfg.num_examples, cfg.restarts,
                         jax.random.key_impl(key), cfg.max_nonfinite, loss_dtype,
                         None if shardings is None else shardings[1], by)
    trainer = _trainer.make_trainer(loss_fn, optimizer, spec)
    init = trainer.init
    if shardings is not None:
        init = jax.jit(init, out_shardings=shardings[0])
    lead = () if cfg.restarts is None else (cfg.restarts,)
    state = _hooks.RunState(init(params),
                            np.full((*lead, cfg.steps), np.nan, np.dtype(loss_dtype)))

    ckpt = None
    hooks: list[_hooks.Hook] | None = None
    if checkpoint_dir is not None:
        from jaxconv.checkpoint import Checkpointer

        ckpt = Checkpointer(checkpoint_dir, keep=cfg.keep)
    try:
        start = 0
        if ckpt is not None:
            if ckpt.steps() and not cfg.resume:
                raise ValueError(
                    f"fit: checkpoint_dir {ckpt.directory} already holds checkpoints (steps "
                    f"{ckpt.steps()}); pass resume=True to continue from the newest, or use an "
                    "empty directory."
                )
            loss_probe = _trainer.loss_probe(loss_fn, params, data, cfg.batch_size,
                                             cfg.restarts)
            config = _run_config(cfg, key, batch, data, params, loss_probe)
            probe = _trainer.optimizer_probe(optimizer, params, cfg.restarts)
            start = _resume(ckpt, state, host_key_data, config, probe)
        guard = _hooks.NonFiniteGuard(state, limit=cfg.max_nonfinite, restarts=cfg.restarts)
        hooks = [guard]
        saver = None
        if ckpt is not None:
            saver = _hooks.Checkpoints(ckpt, state, key_data=host_key_data, config=config,
                                       probe=probe)
        if cfg.max_loss is not None:
            hooks.append(_hooks.DivergenceGuard(cfg.max_loss, restarts=cfg.restarts,
                                                checkpoints=saver))
        if saver is not None:
            hooks.append(saver)
        if cfg.progress:
            hooks.append(_hooks.Progress(cfg.steps, start))
        if on_chunk is not None:
            hooks.append(_hooks.Callback(on_chunk))

        compile_s, wall_s, t = 0.0, 0.0, start
        if start < cfg.steps:
            exe, compile_s = _executable(trainer, spec, cfg, state.run, key_data, data,
                                         shardings)
            order = _trainer.initial_order(spec, cfg.restarts)
        while t < cfg.steps:
            stop = cfg.boundary(t)
            end = min(t + cfg.chunk, stop)
            t0 = time.perf_counter()
            state.run, order, losses = _run_chunk(
                exe, cfg.mode, state.run, order, t, end, stop, key_data, data)
            wall_s += time.perf_counter() - t0
            state.losses[..., t:end] = losses
            chunk = _hooks.Chunk(t, end, losses, boundary=end == stop)
            for hook in hooks:
                hook.after_chunk(chunk)
            t = end
        if start < cfg.steps:
            guard.finish(cfg.steps)
    finally:
        for hook in hooks or ():
            if hasattr(hook, "close"):
                hook.close()
        if ckpt is not None:
            ckpt.close()
    params, opt_state = state.run.params, state.run.opt_state
    if cfg.mesh is not None:  # back on the caller's mesh (fit ran on an all-Auto copy)
        params, opt_state = jax.device_put((params, opt_state), NamedSharding(cfg.mesh, P()))
    ran = cfg.steps - start
    counts = np.asarray(state.run.guard.skipped).astype(np.int64)
    stopped = np.asarray(state.run.guard.stopped).astype(np.int64)
    return FitResult(
        params=params,
        opt_state=opt_state,
        losses=state.losses,
        steps=cfg.steps,
        nonfinite_steps=int(counts) if cfg.restarts is None else counts,
        wall_s=wall_s,
        compile_s=compile_s,
        steps_per_s=ran / wall_s if wall_s > 0 else float("inf"),
        stopped=None if cfg.restarts is None else stopped,
        mode=cfg.mode,
        restarts_by=None if cfg.restarts is None else by,
    )
