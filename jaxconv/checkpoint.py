"""Checkpoints with orbax-checkpoint: a pytree of arrays per step plus the caller's metadata,
atomic, integrity-checked, the last few kept.

It saves and restores; what to save and when is the caller's business (``fit`` uses it).
orbax does the work: the arrays (typed PRNG keys included) through ``StandardSave`` and
``StandardRestore``, the caller's metadata as the step's ``custom_metadata``, the newest
``keep`` kept by a ``preservation_policy``, readers through ``read_only`` managers. This module
adds what orbax lacks: a sha256 per array (per shard for an array split across processes),
checked on restore, and a fallback to the previous checkpoint when the newest one is corrupt
(and only then: a filesystem error, a full memory or a target that does not fit propagates).
orbax is imported lazily (optional extra ``checkpoint``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import jax
import numpy as np

from jaxconv import _checks
from jaxconv._typing import PyTree

FORMAT = "jaxconv.checkpoint/2"
# How tensorstore (a ValueError that orbax raises or chains) reports bytes it cannot decode
# (a truncated, garbled or missing data file of a committed checkpoint): these status codes,
# or "Error decoding" under INVALID_ARGUMENT, whose code its messages leave out. Its codes for
# failed I/O (PERMISSION_DENIED, UNAVAILABLE, UNKNOWN, RESOURCE_EXHAUSTED, ...) are not here.
_UNDECODABLE = {"DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION"}
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's per-step file, custom_metadata included


class CorruptCheckpointError(ValueError):
    """A checkpoint whose files cannot be decoded or whose contents fail their sha256 check."""


class Restored(NamedTuple):
    """What ``restore`` and ``restore_latest`` return.

    Attributes:
      step: the step the checkpoint was saved at.
      state: the restored pytree (the target's structure and shardings when one was given).
      metadata: the JSON metadata given to ``save`` (a dict).
      path: the checkpoint's directory.
      skipped: the newer steps ``restore_latest`` found corrupt and skipped, newest first
        (the ones a writer may ``set_aside``).
    """

    step: int
    state: PyTree
    metadata: dict
    path: pathlib.Path
    skipped: tuple[int, ...] = ()


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ImportError(
            "jaxconv.checkpoint needs orbax-checkpoint: pip install orbax-checkpoint, or from "
            "a checkout of jaxconv: pip install -e '.[checkpoint]'."
        ) from e
    return ocp


def _undecodable(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) says the bytes on disk are not the
    format they should be: garbled JSON or text, or tensorstore's ``_UNDECODABLE``."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, json.JSONDecodeError | UnicodeDecodeError):
            return True
        if isinstance(seen, ValueError):
            code = str(seen).split(":", 1)[0]
            if code.isupper() and code.replace("_", "").isalpha():
                if code in _UNDECODABLE:
                    return True
            elif "Error decoding" in str(seen):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _reading(path: pathlib.Path, what: str) -> Iterator[None]:
    """Turns an undecodable file into ``CorruptCheckpointError``; any other exception (an
    OSError, MemoryError, a sharding on unavailable devices...) keeps its type, with a note."""
    try:
        yield
    except Exception as e:
        if _undecodable(e):
            raise CorruptCheckpointError(
                f"checkpoint {path}: {what} undecodable ({type(e).__name__}: {str(e)[:200]})"
            ) from e
        e.add_note(f"jaxconv.checkpoint: while reading the {what} of checkpoint {path} (an "
                   "error that does not show corruption: the checkpoint was left in place)")
        raise


def _json_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _host_value(x) -> np.ndarray:
    """The full value of ``x`` on this host (replicated arrays are read from one shard; an
    array sharded over several processes is gathered whole, which only the rare restore into a
    layout the saved shards do not fit needs)."""
    if isinstance(x, jax.Array):
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _digest(x) -> str:
    """sha256 of an array's dtype, shape and bytes (of one shard, for a shard's digest)."""
    a = np.ascontiguousarray(_host_value(x))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


# A region of an array: ((start, stop), ...) per axis; in the metadata ``"start:stop,..."``.
Region = tuple[tuple[int, int], ...]


def _region(index, shape) -> Region:
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=True))


def _region_key(region: Region) -> str:
    return ",".join(f"{a}:{b}" for a, b in region)


def _parse_region(key: str, ndim: int) -> Region:
    region = tuple(tuple(int(v) for v in part.split(":")) for part in key.split(","))
    if len(region) != ndim or any(len(r) != 2 for r in region):
        raise ValueError(key)
    return cast(Region, region)  # every part is a pair: checked above


def _split_across_processes(x) -> bool:
    """An array whose shards differ between processes: no host holds all of it."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated


def _digests(leaves: dict[str, Any]) -> dict[str, str | dict[str, str]]:
    """The integrity record of every leaf: one sha256 of its whole value, or, for an array
    split across processes, one per shard keyed by the shard's global region.

    Each process hashes only the shards it holds (those with replica id 0: what orbax writes);
    the 32-byte digests are gathered with one ``process_allgather`` of a fixed-size table
    (a row per device of each split array, filled by the process that holds it), so every
    process, the primary one that writes the metadata included, has all of them.
    """
    out: dict[str, Any] = {}
    split = {p: x for p, x in leaves.items() if _split_across_processes(x)}
    for path, x in leaves.items():
        if path not in split:
            out[path] = _digest(x)
    if not split:
        return out
    rows = [(path, device) for path, x in split.items()
            for device in sorted(x.sharding.device_set, key=lambda d: d.id)]
    row_of = {(path, device.id): i for i, (path, device) in enumerate(rows)}
    table = np.zeros((len(rows), 9), np.uint32)  # [filled, 8 words of sha256]
    for path, x in split.items():
        for shard in x.addressable_shards:
            if shard.replica_id == 0:
                digest = bytes.fromhex(_digest(shard.data))
                table[row_of[path, shard.device.id]] = [1, *np.frombuffer(digest, np.uint32)]
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(table)).sum(axis=0, dtype=np.uint32)
    for path, x in split.items():
        record = {}
        for device, index in sorted(x.sharding.devices_indices_map(x.shape).items(),
                                    key=lambda kv: kv[0].id):
            row = every[row_of[path, device.id]]
            if row[0]:  # exactly one device of each region holds its replica 0
                record[_region_key(_region(index, x.shape))] = row[1:].tobytes().hex()
        out[path] = record
    return {path: out[path] for path in leaves}  # in the tree's order


def _mismatches(x, record) -> bool:
    """Whether the restored leaf ``x`` differs from its ``record`` (see ``_digests``) in what
    this process holds.

    A record region that lies inside one of the regions ``x`` is split into is checked by the
    process holding that region, from its shard; otherwise (a restore into a finer layout than
    the saved one) the whole value is read and every region is checked.
    """
    shape = np.shape(x)
    whole = tuple((0, n) for n in shape)
    try:
        regions = ({whole: record} if isinstance(record, str) else
                   {_parse_region(k, len(shape)): v for k, v in record.items()})
    except (AttributeError, TypeError, ValueError):
        return True  # not a record this module writes
    if sum(math.prod(d - c for c, d in r) for r in regions) != math.prod(shape):
        return True  # the saved shards tile the array: a region is missing or extra
    if isinstance(x, jax.Array):
        held = {_region(s.index, shape): s.data for s in x.addressable_shards}
        layout = {_region(i, shape) for i in x.sharding.devices_indices_map(shape).values()}
    else:
        held, layout = {whole: x}, {whole}

    def inside(r, outer):
        return all(a <= c and d <= b for (a, b), (c, d) in zip(outer, r, strict=True))

    if not all(any(inside(r, o) for o in layout) for r in regions):
        held = {whole: _host_value(x)}  # the same choice on every process (it needs all)
    for r, expected in regions.items():
        outer = next((o for o in held if inside(r, o)), None)
        if outer is None:
            continue  # another process holds it and checks it
        local = tuple(slice(c - a, d - a) for (a, _), (c, d) in zip(outer, r, strict=True))
        if _digest(np.asarray(held[outer])[local]) != expected:
            return True
    return False


def _sync_processes(name: str) -> None:
    """A barrier across all processes (nothing with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _leaves(tree) -> dict[str, Any]:
    """``{"a/b/0": leaf}``: the same path whether a node is a namedtuple, a dict or a list (orbax
    restores namedtuples without a target as lists)."""
    out = {}
    for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(p, simple=True, separator="/")
        if key in out:  # e.g. a dict key "a/b" next to a nested a -> b: one hash would cover both
            raise ValueError(
                f"checkpoint: two leaves share the path {key!r}; rename the dict key."
            )
        out[key] = x
    return out


def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _as_stored(tree):
    """``tree`` as orbax writes it: typed PRNG keys as their key data (what is hashed)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _describe(tree) -> dict[str, list]:
    """``{path: [shape, dtype]}`` of every leaf as stored (a typed key as its key data)."""
    out = {}
    for path, leaf in _leaves(tree).items():
        if _is_key(leaf):
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        shape = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)  # orbax's metadata too
        out[path] = [list(shape), dtype.str]
    return out


def _abstract(tree):
    """Restore target: jax arrays become ShapeDtypeStructs that keep their sharding."""

    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return np.zeros(np.shape(x), np.asarray(x).dtype)

    return jax.tree.map(one, tree)


def _tree_difference(saved: dict, wanted: dict) -> str:
    missing = [k for k in wanted if k not in saved]
    extra = [k for k in saved if k not in wanted]
    changed = [
        f"{k}: saved {tuple(saved[k][0])} {np.dtype(saved[k][1])}, "
        f"target {tuple(wanted[k][0])} {np.dtype(wanted[k][1])}"
        for k in wanted
        if k in saved and saved[k] != wanted[k]
    ]
    parts = []
    if missing:
        parts.append(f"not in the checkpoint: {missing[:5]}")
    if extra:
        parts.append(f"not in the target: {extra[:5]}")
    if changed:
        parts.append("; ".join(changed[:5]))
    return "; ".join(parts)


class Checkpointer:
    """Numbered checkpoints of a pytree of arrays in one directory, via an orbax
    ``CheckpointManager``.

    Each ``save`` writes ``directory/<step>/`` atomically (orbax writes to a temporary
    directory and renames it when complete, so a half-written checkpoint is never listed): the
    arrays (item ``state``), the caller's metadata (orbax's per-step ``custom_metadata``) and
    a JSON record (item ``meta``) of every array's sha256 and of the metadata's. Only the
    newest ``keep`` checkpoints are kept. ``restore_latest`` verifies the hashes and falls back
    to the previous checkpoint, with a warning naming the bad one, when the newest is corrupt
    (a file that cannot be decoded, contents that are not what was saved); any other failure
    to read it (an ``OSError``, a ``MemoryError``, a target sharding on devices that are not
    there) propagates with its own type and a note naming the checkpoint.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> from jaxconv.checkpoint import Checkpointer
      >>> with Checkpointer(tempfile.mkdtemp(), keep=2) as ckpt:
      ...     _ = ckpt.save(10, {"w": jnp.ones(3)}, metadata={"lr": 0.1})
      ...     restored = ckpt.restore_latest()
      >>> restored.step, restored.metadata, restored.state["w"].tolist()
      (10, {'lr': 0.1}, [1.0, 1.0, 1.0])
    """

    def __init__(
        self, directory: str | os.PathLike, *, keep: int | None = 3, read_only: bool = False
    ):
        """Opens (creating if needed) a checkpoint directory.

        Args:
          directory: where the numbered checkpoint directories live.
          keep: how many of the newest checkpoints to keep (None keeps all).
          read_only: only read: never create the directory, save, delete, or remove the
            temporary directory of a save another process has in progress.

        Returns:
          None.
        """
        keep = _checks.check_count("Checkpointer", "keep", keep, allow_none=True)
        if not isinstance(directory, str | os.PathLike) or not os.fspath(directory):
            raise TypeError(
                f"Checkpointer: directory must be a non-empty path (str or os.PathLike), got "
                f"{directory!r}."
            )
        ocp = _orbax()
        self._ocp = ocp
        self.directory = pathlib.Path(os.fspath(directory)).absolute()
        self.read_only = bool(read_only)
        options = ocp.CheckpointManagerOptions(
            read_only=self.read_only,
            preservation_policy=(None if keep is None or self.read_only
                                 else ocp.checkpoint_managers.LatestN(n=keep)),
            enable_async_checkpointing=False,  # when save returns, the checkpoint is on disk
            # a writer removes the temporary directories a killed save left behind; a reader
            # must not (it would delete the save in progress of a run it is watching)
            cleanup_tmp_directories=not self.read_only,
            create=not self.read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending writes and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def steps(self) -> list[int]:
        """The steps of the complete (renamed into place) checkpoints, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def path(self, step: int) -> pathlib.Path:
        """The directory of the checkpoint at ``step``."""
        return self.directory / str(step)

    def _check_writable(self, op: str) -> None:
        if self.read_only:  # orbax's read_only manager would skip the write silently
            raise ValueError(
                f"Checkpointer.{op}: {self.directory} was opened with read_only=True."
            )

    def delete(self, step: int) -> None:
        """Deletes the checkpoint at ``step``."""
        self._check_writable("delete")
        self._manager.delete(step)

    def set_aside(self, step: int) -> pathlib.Path:
        """Renames the checkpoint at ``step`` to ``<step>.corrupt`` (``.corrupt-2``, ... if taken)
        so that it is no longer a checkpoint but stays on disk for inspection.

        Returns:
          The new path.
        """
        self._check_writable("set_aside")
        _sync_processes(f"jaxconv.checkpoint.set_aside.{step}.start")
        src = self.path(step)
        dst = src.with_name(f"{step}.corrupt")
        n = 1
        while dst.exists():
            n += 1
            dst = src.with_name(f"{step}.corrupt-{n}")
        if jax.process_index() == 0:  # one rename, seen by all once every process is here
            src.rename(dst)
        _sync_processes(f"jaxconv.checkpoint.set_aside.{step}.done")
        self._manager.reload()
        return dst

    def save(self, step: int, state: PyTree, *, metadata: dict | None = None) -> pathlib.Path:
        """Saves ``state`` (a pytree of arrays) as the checkpoint of ``step``.

        Args:
          step: a non-negative int, greater than every step already saved here.
          state: a pytree of jax or numpy arrays (sharded jax arrays are saved shard by
            shard; typed PRNG keys are restored as keys of the same implementation).
          metadata: a JSON-serialisable dict, saved as orbax's ``custom_metadata`` of the step.

        Returns:
          The checkpoint's directory.
        """
        self._check_writable("save")
        step = _checks.check_int("Checkpointer.save", "step", step, minimum=0)
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise TypeError(f"Checkpointer.save: metadata must be a dict, got {type(metadata)}.")
        try:
            metadata = json.loads(json.dumps(metadata))  # what reading it back gives
        except (TypeError, ValueError) as e:
            raise TypeError(f"Checkpointer.save: metadata must be JSON-serialisable: {e}") from e
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(
                f"Checkpointer.save: step (={step}) must be greater than the newest saved step "
                f"(={latest}) in {self.directory}; delete the newer checkpoints first."
            )
        for path, leaf in _leaves(state).items():
            if not isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float):
                raise TypeError(
                    f"Checkpointer.save: state leaf {path!r} must be an array, got "
                    f"{type(leaf).__name__}."
                )
        record = {
            "format": FORMAT,
            "step": step,
            "sha256": _digests(_leaves(_as_stored(state))),
            "metadata_sha256": _json_sha256(metadata),
            "tree": _describe(state),  # what a target is checked against, without opening arrays
        }
        ocp = self._ocp
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)
            ),
            custom_metadata=metadata,
            force=True,
        )
        self._manager.wait_until_finished()
        return self.path(step)

    def read_metadata(self, step: int) -> dict:
        """The metadata saved with ``step``, checked against its sha256.

        Args:
          step: which checkpoint.

        Returns:
          The ``metadata`` dict given to ``save``.

        Raises:
          CorruptCheckpointError: the record or the metadata cannot be decoded, or they
            disagree.
          ValueError: the checkpoint was written by an older format of this module.
        """
        return self._read_record(step)[1]

    def _read_record(self, step: int) -> tuple[dict, dict]:
        """The checkpoint's sha256 record and its (verified) metadata."""
        path = self.path(step)
        for item in ("state", "meta"):
            if not (path / item).is_dir():  # is_dir raises the errors that are not "missing"
                raise CorruptCheckpointError(f"checkpoint {path}: its {item}/ directory is gone")
        ocp = self._ocp
        with _reading(path, "sha256 record"):
            record = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )["meta"]
        if isinstance(record, dict) and record.get("format") == "jaxconv.checkpoint/1":
            raise ValueError(
                f"checkpoint {path} was written by jaxconv.checkpoint/1 (before this module "
                f"kept the metadata in orbax's custom_metadata); this version reads {FORMAT}: "
                "restore it with the jaxconv that wrote it, or start a new directory."
            )
        if (not isinstance(record, dict) or record.get("format") != FORMAT
                or record.get("step") != step or not isinstance(record.get("sha256"), dict)
                or not isinstance(record.get("tree"), dict)):
            raise CorruptCheckpointError(
                f"checkpoint {path}: meta/ is not a {FORMAT} record for step {step}"
            )
        metadata = None
        with contextlib.suppress(ValueError):  # orbax's answer for a file it cannot read
            metadata = ocp.metadata.get_step_metadata(path).custom_metadata or {}
        if metadata is None or _json_sha256(metadata) != record.get("metadata_sha256"):
            with _reading(path, "metadata"):  # a filesystem error propagates as what it is
                (path / _STEP_METADATA).read_bytes()
            raise CorruptCheckpointError(
                f"checkpoint {path}: its metadata ({_STEP_METADATA}) does not match its sha256"
            )
        return record, metadata

    def restore(self, step: int, target: PyTree = None) -> Restored:
        """Restores and verifies the checkpoint of ``step``.

        Args:
          step: which checkpoint.
          target: a pytree like the saved one (arrays or ``jax.ShapeDtypeStruct``s); restored
            jax arrays take the target leaves' shardings. None restores numpy arrays (typed
            PRNG keys as keys) in the saved structure (namedtuples become lists).

        Returns:
          A ``Restored`` (step, state, metadata, path).

        Raises:
          CorruptCheckpointError: a file of the checkpoint cannot be decoded, or its contents
            fail their sha256 check.
          ValueError: the target's tree, shapes or dtypes differ from the saved ones.
        """
        return self._restore(step, target)

    def _restore(self, step: int, target, check_metadata=None) -> Restored:
        path = self.path(step)
        record, metadata = self._read_record(step)
        if check_metadata is not None:
            check_metadata(metadata, path)
        ocp = self._ocp
        if target is not None:
            diff = _tree_difference(record["tree"], _describe(target))
            if diff:
                raise ValueError(
                    f"restore: checkpoint {path} holds a different tree than the target: {diff}."
                )
            abstract = _abstract(target)
        else:  # jax arrays on one local device, so that orbax restores typed keys as keys
            with _reading(path, "array metadata"):
                tree = self._manager.item_metadata(step)["state"]
                tree = getattr(tree, "tree", tree)
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract = jax.tree.map(
                lambda m: np.zeros(m.shape, m.dtype) if m.sharding is None
                else jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree)
        with _reading(path, "arrays"):
            state = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
        if target is None:
            state = jax.tree.map(lambda x: x if _is_key(x) else np.asarray(x), state)
        digests = record["sha256"]
        leaves = _leaves(_as_stored(state))
        if set(leaves) != set(digests):
            raise CorruptCheckpointError(
                f"checkpoint {path}: restored tree differs from its record"
            )
        bad = np.array([_mismatches(x, digests[k]) for k, x in leaves.items()], np.uint8)
        if any(_split_across_processes(x) for x in leaves.values()):
            # each process checked only the shards it holds: all must agree on the verdict,
            # or they would fall back to different checkpoints
            from jax.experimental import multihost_utils

            # (processes, leaves) -> (leaves,): an array, not a scalar
            bad = cast(np.ndarray, np.asarray(multihost_utils.process_allgather(bad)).any(axis=0))
        if bad.any():
            names = [k for k, b in zip(leaves, bad, strict=True) if b]
            raise CorruptCheckpointError(
                f"checkpoint {path}: sha256 mismatch in {names[:5]} (the files were changed after "
                "saving)"
            )
        return Restored(step=step, state=state, metadata=metadata, path=path)

    def restore_latest(
        self,
        target: PyTree = None,
        *,
        check_metadata: Callable[[dict, pathlib.Path], None] | None = None,
    ) -> Restored | None:
        """Restores the newest checkpoint that verifies, warning about any newer corrupt ones.

        Only corruption (see ``restore``) makes it fall back to an older checkpoint; any other
        exception propagates with its type, a note naming the checkpoint, and nothing skipped.

        Args:
          target: as in ``restore``.
          check_metadata: called as ``check_metadata(metadata, path)`` on each checkpoint
            tried, before its arrays are read; an exception it raises propagates (use it to
            reject a checkpoint written by a different configuration).

        Returns:
          A ``Restored`` whose ``skipped`` names the newer corrupt steps, or None when the
          directory holds no checkpoint.

        Raises:
          CorruptCheckpointError: checkpoints exist but none of them verifies.
        """
        failures: dict[int, str] = {}
        for step in reversed(self.steps()):
            try:
                restored = self._restore(step, target, check_metadata)
            except CorruptCheckpointError as e:
                failures[step] = str(e)
                warnings.warn(
                    f"{e}; falling back to the previous checkpoint.", RuntimeWarning, stacklevel=2
                )
                continue
            return restored._replace(skipped=tuple(failures))
        if failures:
            raise CorruptCheckpointError(
                f"no checkpoint in {self.directory} verifies ({len(failures)} tried): "
                f"{next(iter(failures.values()))}"
            )
        return None


def save(
    directory: str | os.PathLike,
    step: int,
    state: PyTree,
    *,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> pathlib.Path:
    """Saves ``state`` as checkpoint ``step`` in ``directory`` (see ``Checkpointer``).

    Args:
      directory: the checkpoint directory (created if needed).
      step: a non-negative int greater than every step already saved there.
      state: a pytree of arrays.
      metadata: a JSON-serialisable dict stored with it.
      keep: how many of the newest checkpoints to keep (None keeps all).

    Returns:
      The checkpoint's directory.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> from jaxconv import checkpoint
      >>> d = tempfile.mkdtemp()
      >>> checkpoint.save(d, 5, {"w": jnp.arange(3.0)}).name
      '5'
      >>> checkpoint.restore_latest(d).state["w"].tolist()
      [0.0, 1.0, 2.0]
    """
    with Checkpointer(directory, keep=keep) as ckpt:
        return ckpt.save(step, state, metadata=metadata)


def restore_latest(directory: str | os.PathLike, *, target: PyTree = None) -> Restored | None:
    """The newest valid checkpoint in ``directory`` (see ``Checkpointer.restore_latest``).

    Args:
      directory: the checkpoint directory.
      target: a pytree like the saved one whose leaves' shardings the restored arrays take;
        None restores numpy arrays.

    Returns:
      A ``Restored`` (step, state, metadata, path), or None if there is no checkpoint.
    """
    if not pathlib.Path(os.fspath(directory)).is_dir():
        return None
    with Checkpointer(directory, keep=None, read_only=True) as ckpt:
        return ckpt.restore_latest(target)


__all__ = [
    "Checkpointer",
    "CorruptCheckpointError",
    "Restored",
    "restore_latest",
    "save",
]
