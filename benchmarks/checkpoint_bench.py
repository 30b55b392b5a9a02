"""Save and restore time of ``jaxconv.checkpoint`` on a small and a ~50 MB state.

    python benchmarks/checkpoint_bench.py [--repeats 7] [--compare OTHER_checkpoint.py]

Each repeat saves one new step and restores the newest (with a target, as ``fit`` does) in
a fresh directory per implementation; with ``--compare`` another version of the module (e.g.
the previous commit's ``jaxconv/checkpoint.py``, loaded from that file) runs interleaved with
this one, repeat by repeat, so both see the same machine load. Prints the median of the
repeats after one warm-up save/restore each.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax


def states():
    """A small state (an MLP's params and Adam state) and a ~50 MB one (Adam on 4.2M float32
    params: 12.6M float32 in all)."""
    rng = np.random.default_rng(0)
    small = {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
             "b": jnp.zeros(32, jnp.float32)}
    big = {f"layer{i}": jnp.asarray(rng.normal(size=(1024, 512)), jnp.float32)
           for i in range(8)}
    out = {}
    for name, params in (("small", small), ("50MB", big)):
        opt = optax.adam(1e-3)
        out[name] = {"params": params, "opt_state": opt.init(params),
                     "key": jax.random.key(0), "losses": np.zeros(100, np.float32)}
    return out


def load(path):
    spec = importlib.util.spec_from_file_location("checkpoint_other", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["checkpoint_other"] = module
    spec.loader.exec_module(module)
    return module


def one(module, directory, step, state):
    with module.Checkpointer(directory, keep=2) as ckpt:
        t0 = time.perf_counter()
        ckpt.save(step, state, metadata={"step": step})
        t1 = time.perf_counter()
        got = ckpt.restore_latest(state)
        jax.block_until_ready(jax.tree.leaves(got.state))
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare", default=None)
    args = parser.parse_args(argv)
    from jaxconv import checkpoint

    impls = {"this": checkpoint}
    if args.compare:
        impls["other"] = load(args.compare)
    nbytes = {n: sum(np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x).nbytes for x in jax.tree.leaves(s))
        for n, s in states().items()}
    for name, state in states().items():
        dirs = {k: tempfile.mkdtemp(prefix=f"ckbench-{k}-") for k in impls}
        times = {k: [] for k in impls}
        for step in range(args.repeats + 1):
            for k, module in impls.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = one(module, dirs[k], step, state)
                if step:  # step 0 is the warm-up
                    times[k].append(t)
        for k, ts in times.items():
            save = statistics.median(t[0] for t in ts)
            restore = statistics.median(t[1] for t in ts)
            print(f"{name:6s} ({nbytes[name] / 1e6:6.2f} MB) {k:5s}: save {save * 1e3:8.1f} ms, "
                  f"restore {restore * 1e3:8.1f} ms (median of {len(ts)})", flush=True)


if __name__ == "__main__":
    main()
