"""Child process for the subprocess tests of ``jaxconv.fit`` (not a test module).

    python tests/_fit_worker.py train --dir D [--resume] [--pause S] [--out F.npz]
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/_fit_worker.py sharding --dir D

``train`` runs the checkpointed fit of ``train_problem`` and prints ``CKPT <step>`` (flushed)
after each checkpoint, so a parent can SIGKILL it mid-run; ``--out`` writes the final params.
``sharding`` runs the data-parallel scenarios on the forced CPU devices and prints one JSON
report as its last line. The parent sets XLA_FLAGS in the environment, before jax is imported.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv
from jaxconv import checkpoint, nn

MODEL = nn.Stack([nn.Dense(8), nn.Activation("tanh"), nn.Dense(1)])
TRAIN = {"steps": 60, "checkpoint_every": 10, "chunk_size": 5, "batch_size": 8, "restarts": 2}


def mlp_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, np.sin(x @ np.array([[1.0], [-2.0], [0.5], [1.5]], np.float32))


def mlp_loss(p, batch):
    x, y = batch
    return jnp.mean((MODEL.apply(p, x) - y) ** 2)


def train_problem(checkpoint_dir=None, *, resume=False, on_chunk=None):
    """The fit the kill-and-resume test runs in a child and, uninterrupted, in the parent."""
    x, y = mlp_data()
    restarts = TRAIN["restarts"]
    # numpy init: MODEL.init's eager ops would each compile (seconds on a busy CPU)
    rng = np.random.default_rng(1)
    params = {
        "dense_0": {"kernel": rng.normal(0, 0.5, (restarts, 4, 8)).astype(np.float32),
                    "bias": np.zeros((restarts, 8), np.float32)},
        "dense_2": {"kernel": rng.normal(0, 0.35, (restarts, 8, 1)).astype(np.float32),
                    "bias": np.zeros((restarts, 1), np.float32)},
    }
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(lambda: MODEL.init(jax.random.key(0), x.shape)))
    return jaxconv.fit(
        mlp_loss, params, optax.adam(1e-2), (x, y), steps=TRAIN["steps"], key=jax.random.key(2),
        batch_size=TRAIN["batch_size"], restarts=restarts, chunk_size=TRAIN["chunk_size"],
        checkpoint_dir=checkpoint_dir, checkpoint_every=TRAIN["checkpoint_every"],
        resume=resume, on_chunk=on_chunk, progress=False,
    )


def leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def cmd_train(args):
    def on_chunk(step, losses):
        if step % TRAIN["checkpoint_every"] == 0 or step == TRAIN["steps"]:
            print(f"CKPT {step}", flush=True)
        time.sleep(args.pause)

    out = train_problem(args.dir, resume=args.resume, on_chunk=on_chunk)
    if args.out:
        np.savez(args.out, losses=out.losses, nonfinite=out.nonfinite_steps, **leaves(out.params))
    print("DONE", flush=True)


# ---------------------------------------------------------------------------------------------
# sharding scenarios


def linear_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x @ np.array([1.5, -2.0, 0.5], np.float32)).astype(np.float32)


P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def describe(sharding, shape):
    try:  # under vmap the callback sees the batched sharding but the unbatched shape
        shard_shape = list(sharding.shard_shape(shape))
    except ValueError:
        shard_shape = None
    return {
        "type": type(sharding).__name__,
        "spec": str(getattr(sharding, "spec", None)),
        "devices": len(sharding.device_set),
        "shard_shape": shard_shape,
    }


def cmd_sharding(args):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    report = {"device_count": jax.device_count()}
    data = linear_data()
    seen = []

    def loss(p, batch):
        x, y = batch
        jax.debug.inspect_array_sharding(x, callback=lambda s: seen.append(describe(s, x.shape)))
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    common = dict(steps=30, key=jax.random.key(3), batch_size=8, chunk_size=10, progress=False)
    mesh = jax.make_mesh((4,), ("data",))
    ref = jaxconv.fit(loss, P0, optax.adam(0.05), data, **common)
    seen.clear()
    out = jaxconv.fit(loss, P0, optax.adam(0.05), data, mesh=mesh, **common)
    report["batch_sharding_in_step"] = seen[-1] if seen else None
    stepped = jaxconv.fit(loss, P0, optax.adam(0.05), data, mesh=mesh, mode="step", **common)
    report["sharded_vs_single"] = {
        "params": max_diff(out.params, ref.params),
        "losses": float(np.max(np.abs(out.losses - ref.losses))),
        "ref_final_loss": float(ref.losses[-1]),
        "step_mode_params": max_diff(stepped.params, ref.params),
        "step_mode": stepped.mode,
    }
    w = out.params["w"]
    report["params_sharding"] = {
        **describe(w.sharding, w.shape),
        "addressable_shards": len(w.addressable_shards),
        "fully_replicated": bool(w.is_fully_replicated),
        "same_mesh": w.sharding.mesh.devices.tolist() == mesh.devices.tolist(),
    }
    # the placement fit uses for data, inspected directly
    from jaxconv._fitting import _auto_mesh, _put

    x_global = _put(data[0], NamedSharding(_auto_mesh(mesh), P("data")), replicated=False)
    report["data_sharding"] = {
        **describe(x_global.sharding, x_global.shape),
        "addressable_shards": len(x_global.addressable_shards),
        "shard_rows": sorted(s.data.shape[0] for s in x_global.addressable_shards),
    }

    # full batch, an Auto-typed mesh built by hand
    auto = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    full_ref = jaxconv.fit(loss, P0, optax.sgd(0.05), data, steps=20, progress=False)
    full = jaxconv.fit(loss, P0, optax.sgd(0.05), data, steps=20, mesh=auto, progress=False)
    report["full_batch_diff"] = max_diff(full.params, full_ref.params)

    # restarts + mesh
    init = lambda k: {"w": jax.random.normal(k, (3,)), "b": jnp.zeros(())}
    params = jax.vmap(init)(jax.random.split(jax.random.key(7), 3))
    r_ref = jaxconv.fit(loss, params, optax.adam(0.05), data, restarts=3, **common)
    seen.clear()
    r_out = jaxconv.fit(loss, params, optax.adam(0.05), data, restarts=3, mesh=mesh, **common)
    report["restarts"] = {
        # under vmap the callback sees the restarts-batched sharding
        "batch_spec_in_step": seen[-1]["spec"] if seen else None,
        "params": max_diff(r_out.params, r_ref.params),
        "losses_shape": list(r_out.losses.shape),
        "addressable_shards": len(r_out.params["w"].addressable_shards),
    }

    # a 2-D mesh: data over "data" (2), replicated over "model" (2)
    mesh2 = jax.make_mesh((2, 2), ("data", "model"))
    seen.clear()
    out2 = jaxconv.fit(loss, P0, optax.adam(0.05), data, mesh=mesh2, data_axis="data", **common)
    report["mesh_2d"] = {"params": max_diff(out2.params, ref.params),
                         "batch_sharding_in_step": seen[-1] if seen else None}

    # a 1-device mesh
    mesh1 = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    out1 = jaxconv.fit(loss, P0, optax.adam(0.05), data, mesh=mesh1, **common)
    report["one_device"] = max_diff(out1.params, ref.params)

    # divisibility is checked with clear errors
    errors = {}
    for name, kwargs in {
        "examples": dict(data=(data[0][:30], data[1][:30]), batch_size=8),
        "batch": dict(data=data, batch_size=6),
    }.items():
        try:
            jaxconv.fit(loss, P0, optax.adam(0.05), kwargs["data"], steps=2,
                        batch_size=kwargs["batch_size"], mesh=mesh, progress=False)
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    report["errors"] = errors

    # checkpoints on a mesh (full batch): interrupted + resumed == uninterrupted
    d = pathlib.Path(args.dir)
    ck = dict(steps=20, chunk_size=10, checkpoint_every=10, mesh=mesh, progress=False)
    whole = jaxconv.fit(loss, P0, optax.adam(0.05), data, checkpoint_dir=d / "whole", **ck)

    class Stop(Exception):
        pass

    def stop_at_10(step, losses):
        if step == 10:
            raise Stop

    try:
        jaxconv.fit(loss, P0, optax.adam(0.05), data, checkpoint_dir=d / "cut", on_chunk=stop_at_10,
                    **ck)
    except Stop:
        pass
    with checkpoint.Checkpointer(d / "cut") as ckpt:
        steps_after_cut = ckpt.steps()
    resumed = jaxconv.fit(loss, P0, optax.adam(0.05), data, checkpoint_dir=d / "cut", resume=True,
                          **ck)
    report["resume_on_mesh"] = {
        "steps_after_cut": steps_after_cut,
        "bit_identical": all(
            np.array_equal(a, b) for a, b in
            zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params), strict=True)
        ) and np.array_equal(resumed.losses, whole.losses),
        "params_sharding": describe(resumed.params["w"].sharding, (3,)),
    }
    # restore against a target with shardings: replicated and row-sharded arrays
    auto4 = _auto_mesh(mesh)
    rows = jax.device_put(jnp.arange(16.0).reshape(8, 2), NamedSharding(auto4, P("data")))
    with checkpoint.Checkpointer(d / "manual") as ckpt:
        ckpt.save(1, {"rows": rows, "w": whole.params["w"]})
        target = {"rows": jax.ShapeDtypeStruct(rows.shape, rows.dtype, sharding=rows.sharding),
                  "w": jax.ShapeDtypeStruct((3,), jnp.float32,
                                            sharding=NamedSharding(auto4, P()))}
        got = ckpt.restore_latest(target).state
    report["restored_sharding"] = {
        "rows": describe(got["rows"].sharding, got["rows"].shape),
        "rows_equal": bool(np.array_equal(got["rows"], rows)),
        "w": describe(got["w"].sharding, got["w"].shape),
    }
    print(json.dumps(report), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train", "sharding"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    {"train": cmd_train, "sharding": cmd_sharding}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
