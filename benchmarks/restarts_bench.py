"""How ``fit(..., restarts=R)`` runs its restarts: batched (``restarts_by="vmap"``) or one
after another (``"map"``), and whether ``"auto"`` picks the faster, on architectures named
nowhere else (``arch_bench``'s seeded generator: 1-D/2-D/3-D convs, kernels 1-7, stride,
dilation, groups, pooling, residual blocks, dense heads).

For each architecture, R restarts (random initialisations, ``jax.vmap(model.init)``) are
trained with Adam on the architecture's random data and minibatches, once per
``restarts_by``; each first runs untimed (compiling), then ``--rounds`` rounds of
``--steps`` steps, interleaved in a rotated order, each timed by ``FitResult.wall_s`` (which
waits for the results); a figure is the median over rounds. Also recorded: one restart's
step FLOPs as ``auto`` measures them (``jaxconv._trainer.restarts_by``), ``auto``'s choice,
``map/vmap`` and ``auto/best`` (1.0 when ``auto`` picked the faster).

Run: ``python benchmarks/restarts_bench.py [--n 20] [--seed 0] [--restarts 8] [--steps 60]
[--rounds 3] [--out benchmarks/restarts_results.json]``. Timings live here, never in tests
(tests/test_fit_state.py checks that both ways compute each restart's own run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import jaxconv
from jaxconv import _trainer

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import arch_bench  # noqa: E402 - the architecture generator and its problems
import bench  # noqa: E402 - machine description

WAYS = ("vmap", "map")


def runner(arch, restarts: int):
    """``run(way, steps) -> seconds per step`` for ``arch`` with ``restarts`` restarts, and
    one restart's step FLOPs and ``auto``'s choice."""
    p = arch_bench.make_problem(arch)

    def loss_fn(params, batch):
        return arch_bench.loss_value(arch.loss, p.model.apply(params, batch[0]), batch[1])

    keys = jax.random.split(jax.random.key(arch.index), restarts)
    params = jax.vmap(lambda k: p.model.init(k, arch.input_shape))(keys)
    data = (jnp.asarray(p.x), jnp.asarray(p.y))
    opt = optax.adam(arch_bench.LR)
    batch = arch.input_shape[0]
    abstract = (jax.ShapeDtypeStruct((batch, *p.x.shape[1:]), p.x.dtype),
                jax.ShapeDtypeStruct((batch, *p.y.shape[1:]), p.y.dtype))
    choice, flops = _trainer.restarts_by(loss_fn, p.params, abstract,
                                         jaxconv.compiler_options(), jax.default_backend())

    def run(way: str, steps: int) -> float:
        r = jaxconv.fit(loss_fn, params, opt, data, steps=steps, batch_size=batch,
                        key=p.key, restarts=restarts, restarts_by=way, progress=False)
        assert r.restarts_by == way
        return r.wall_s / steps

    return run, flops, choice


def bench_arch(arch, restarts: int, steps: int, rounds: int) -> dict:
    t0 = time.perf_counter()
    run, flops, choice = runner(arch, restarts)
    for way in WAYS:
        run(way, steps)  # compiles
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    for i in range(rounds):
        for way in WAYS[i % 2:] + WAYS[:i % 2]:
            times[way].append(run(way, steps))
    med = {w: statistics.median(v) for w, v in times.items()}
    best = min(med, key=med.get)
    return {"index": arch.index, "description": arch.description, "step_flops": flops,
            "auto": choice, "ms_per_step": {w: 1e3 * v for w, v in med.items()},
            "map_vmap": med["map"] / med["vmap"], "auto_best": med[choice] / med[best],
            "elapsed_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    machine = bench.machine_info({})
    print(f"# {machine['cpu']}, {machine['usable_cores']} cores; load "
          f"{os.getloadavg()[0]:.2f}; R={args.restarts}, {args.steps} steps x {args.rounds} "
          f"rounds; threshold {_trainer.MAP_RESTARTS_FLOPS:.3g} FLOPs", flush=True)
    entries = []
    for arch in arch_bench.draw(args.seed, args.n):
        e = bench_arch(arch, args.restarts, args.steps, args.rounds)
        entries.append(e)
        ms = e["ms_per_step"]
        print(f"#{e['index']:2d} {e['step_flops'] / 1e6:8.2f} MFLOP  vmap {ms['vmap']:8.3f} ms"
              f"  map {ms['map']:8.3f} ms  map/vmap {e['map_vmap']:5.2f}  auto {e['auto']:4s}"
              f"  auto/best {e['auto_best']:4.2f}  {arch.description}", flush=True)
    ab = [e["auto_best"] for e in entries]
    summary = {"n": len(entries), "auto_best_median": statistics.median(ab),
               "auto_best_max": max(ab), "auto_picked_best": sum(a == 1.0 for a in ab)}
    print(f"\nauto picked the faster on {summary['auto_picked_best']} of {len(ab)}; auto/best "
          f"median {summary['auto_best_median']:.2f}, max {summary['auto_best_max']:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine, "settings": vars(args),
                       "threshold_flops": _trainer.MAP_RESTARTS_FLOPS, "summary": summary,
                       "architectures": entries}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
