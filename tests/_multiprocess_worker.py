"""Child process for the multi-process tests of ``jaxconv.fit`` (not a test module): one of
``--num-processes`` processes on this machine, joined by ``jax.distributed`` over gloo.

    python tests/_multiprocess_worker.py fit --port P --process-id I --dir D [--resume]
        [--pause S] [--out F.npz]
    python tests/_multiprocess_worker.py shards --port P --process-id I --dir D --out F.json

``fit`` runs ``train`` over the global 1-device-per-process mesh, this process passing only
its own slice of the examples, and prints ``CKPT <step>`` (flushed) after each checkpoint so a
parent can SIGKILL it mid-run; ``--out`` writes the final params and losses. ``shards`` saves
and restores an array sharded over the processes (checkpoint integrity per shard) and writes a
JSON report. ``{i}`` in ``--out`` becomes the process id. The parent unsets XLA_FLAGS (one CPU
device per process).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings

import jax
import numpy as np
import optax

import jaxconv

TRAIN = {"steps": 40, "checkpoint_every": 10, "chunk_size": 5, "batch_size": 8}
N_EXAMPLES = 32


def connect(port: int, process_id: int, num_processes: int) -> None:
    """Joins the other processes; must run before anything starts a jax backend."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=60)


def global_data():
    """All the examples (the parent's single-process run uses them whole)."""
    from _fit_worker import mlp_data  # it makes jax arrays at import: only after connect

    return mlp_data(N_EXAMPLES)


def local_data():
    """This process's contiguous slice of the examples (the rows its device holds)."""
    n, i = jax.process_count(), jax.process_index()
    per = N_EXAMPLES // n
    return tuple(a[i * per:(i + 1) * per] for a in global_data())


def train(data, *, mesh=None, checkpoint_dir=None, resume=False, on_chunk=None):
    """The fit every test runs: a 4-8-1 tanh MLP, Adam, minibatches of 8, checkpoints every 10
    steps; ``data`` is global (one process) or this process's slice (with ``mesh``)."""
    from _fit_worker import mlp_loss

    rng = np.random.default_rng(1)  # numpy init, as in _fit_worker.train_problem
    params = {
        "dense_0": {"kernel": rng.normal(0, 0.5, (4, 8)).astype(np.float32),
                    "bias": np.zeros(8, np.float32)},
        "dense_2": {"kernel": rng.normal(0, 0.35, (8, 1)).astype(np.float32),
                    "bias": np.zeros(1, np.float32)},
    }
    return jaxconv.fit(
        mlp_loss, params, optax.adam(1e-2), data, steps=TRAIN["steps"], key=jax.random.key(2),
        batch_size=TRAIN["batch_size"], chunk_size=TRAIN["chunk_size"], mesh=mesh,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=None if checkpoint_dir is None else TRAIN["checkpoint_every"],
        keep=10, resume=resume, on_chunk=on_chunk, progress=False,
    )


def cmd_fit(args):
    from _fit_worker import leaves

    def on_chunk(step, losses):
        if step % TRAIN["checkpoint_every"] == 0 or step == TRAIN["steps"]:
            print(f"CKPT {step}", flush=True)
        time.sleep(args.pause)

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    data = local_data()
    if args.nan_row is not None:  # a NaN in one global row: only the process holding it sees it
        per = N_EXAMPLES // jax.process_count()
        row = args.nan_row - jax.process_index() * per
        if 0 <= row < per:
            data[0][row, 1] = np.nan
    t0 = time.perf_counter()
    try:
        out = train(data, mesh=mesh, checkpoint_dir=args.dir, resume=args.resume,
                    on_chunk=on_chunk)
    except ValueError as e:
        print(f"ValueError: {e}", flush=True)
        return
    if args.out:
        np.savez(args.out, losses=out.losses, fit_s=time.perf_counter() - t0,
                 compile_s=out.compile_s, **leaves(out.params))
    print("DONE", flush=True)


def cmd_shards(args):
    """Checkpoint integrity of an array sharded over the processes: per-shard digests recorded
    once, restored and verified shard by shard, and a corrupt record of a shard held by the
    other process rejected on every process (so all fall back to the same checkpoint)."""
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxconv.checkpoint import Checkpointer

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    rows_sharding = NamedSharding(mesh, P("data"))
    rows_global = np.arange(24, dtype=np.float32).reshape(8, 3)
    per = 8 // jax.process_count()
    mine = rows_global[jax.process_index() * per:(jax.process_index() + 1) * per]
    state = {
        "rows": jax.make_array_from_process_local_data(rows_sharding, mine),
        "w": jax.make_array_from_process_local_data(NamedSharding(mesh, P()),
                                                    np.array([1.0, 2.0], np.float32),
                                                    (2,)),
        "count": np.int64(7),
    }
    target = {k: (jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
                  if isinstance(v, jax.Array) else v) for k, v in state.items()}
    held = sorted(f"{s.index[0].start}:{s.index[0].stop}"
                  for s in state["rows"].addressable_shards)
    d = pathlib.Path(args.dir)
    report = {"process": jax.process_index(), "rows_held": held}
    with Checkpointer(d, keep=None) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, {**state, "count": np.int64(8)})
        got = ckpt.restore(1, target).state
        report["restored_equal"] = bool(
            np.array_equal(np.asarray(got["rows"].addressable_data(0)), mine)
            and np.array_equal(np.asarray(got["w"]), [1.0, 2.0]) and int(got["count"]) == 7)
        report["restored_rows_sharding"] = str(got["rows"].sharding.spec)
        multihost_utils.sync_global_devices("saved")
        if jax.process_index() == 0:  # spoil step 2's digest of a shard the other one holds
            meta_file = d / "2" / "meta" / "metadata"
            meta = json.loads(meta_file.read_text())
            record = meta["sha256"]["rows"]
            other = next(k for k in sorted(record) if k.split(",")[0] not in held)
            record[other] = "0" * 64
            meta_file.write_text(json.dumps(meta))
            report["spoiled"] = other
        multihost_utils.sync_global_devices("spoiled")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fallback = ckpt.restore_latest(target)
        report["fallback_step"] = fallback.step
        report["fallback_warnings"] = [str(w.message) for w in caught]
    pathlib.Path(args.out).write_text(json.dumps(report))
    print("DONE", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["fit", "shards"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--nan-row", type=int, default=None)
    args = parser.parse_args(argv)
    if args.out:
        args.out = args.out.format(i=args.process_id)
    connect(args.port, args.process_id, args.num_processes)
    {"fit": cmd_fit, "shards": cmd_shards}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
