"""Per-lowering timings behind the planner's thresholds: forward and forward + gradients.

For each case, every lowering that accepts it runs the forward call and the forward plus the
gradients with respect to ``x`` and ``w`` (what a training step runs), each jitted with XLA's
default flags and with ``jaxconv.compiler_options()`` (as ``fit`` compiles), interleaved round
by round; medians after one warm-up call, every call synchronised. Also prints what
``jaxconv.plan`` picks, and how far ``algorithm="fft"`` (opt-in, not elementwise exact) is
from ``auto``. Timings live here, never in tests.

Run: ``python benchmarks/plan_bench.py [--cases G,lenet1] [--rounds 5] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv

# name: (x_shape NHWC, w_shape HWIO, conv kwargs, lowerings to time)
CASES = {
    "lenet1": ((64, 32, 32, 1), (5, 5, 1, 6), {}, ("xla", "shift_add", "im2col", "fft")),
    "lenet2": ((64, 14, 14, 6), (5, 5, 6, 16), {}, ("xla", "shift_add", "im2col")),
    "sparse11": ((8, 32, 32, 1), (11, 11, 1, 1), {}, ("xla", "shift_add", "im2col", "fft")),
    "k15_1to6": ((64, 32, 32, 1), (15, 15, 1, 6), {}, ("xla", "shift_add", "im2col", "fft")),
    "dw15x16": ((8, 32, 32, 16), (15, 15, 1, 16), {"groups": 16},
                ("xla", "depthwise", "fft")),
    "1d121": ((8, 1024, 1), (121, 1, 1), {}, ("xla", "shift_add", "im2col", "fft")),
    "G": ((1, 1024, 1024, 1), (31, 31, 1, 1), {}, ("xla", "fft")),
    # arch_bench seed 0 #14's 7x7 layer (fit 1.43x its default-options loop there)
    "k7_20to1": ((8, 26, 26, 20), (7, 7, 20, 1), {"padding": "SAME"}, ("xla", "im2col")),
    # issue 23's C and E (convs XLA:CPU sends to YNNPACK under its default options): rows,
    # by name only until measured against im2col (auto's choice) on a quiet machine
    "C": ((32, 64, 64, 16), (3, 3, 16, 32), {}, ("xla", "im2col", "rows")),
    "C_same": ((32, 64, 64, 16), (3, 3, 16, 32), {"padding": "SAME"}, ("xla", "im2col", "rows")),
    "E": ((32, 32, 32, 64), (3, 3, 64, 64), {}, ("xla", "im2col", "rows")),
    "s2_32to64": ((16, 56, 56, 32), (3, 3, 32, 64), {"stride": 2}, ("xla", "im2col", "rows")),
}


def _calls(x, w, kwargs, algorithm, options):
    def fwd(x, w):
        return jaxconv.conv(x, w, algorithm=algorithm, **kwargs)

    def grad(x, w):
        y, vjp = jax.vjp(fwd, x, w)
        return vjp(jnp.ones_like(y))

    f = jax.jit(fwd, compiler_options=options or None)
    g = jax.jit(grad, compiler_options=options or None)
    return {"fwd": lambda: jax.block_until_ready(f(x, w)),
            "grad": lambda: jax.block_until_ready(g(x, w))}


def run_case(name, rounds):
    x_shape, w_shape, kwargs, algorithms = CASES[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
    calls = {}
    for options_name, options in (("default", {}), ("tuned", jaxconv.compiler_options())):
        for algorithm in algorithms:
            for pass_, call in _calls(x, w, kwargs, algorithm, options).items():
                t0 = time.perf_counter()
                call()  # compile + first run
                first = time.perf_counter() - t0
                calls[(algorithm, options_name, pass_)] = (call, first)
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, (call, _) in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    plan = jaxconv.plan(x_shape, w_shape, backend="cpu", **kwargs)
    tuned = jaxconv.plan(x_shape, w_shape, backend="cpu",
                         compiler_options=jaxconv.compiler_options(), **kwargs)
    rows = [
        {"algorithm": a, "options": o, "pass": p, "median_ms": 1e3 * statistics.median(t),
         "first_call_s": calls[(a, o, p)][1]}
        for (a, o, p), t in times.items()
    ]
    return {"case": name, "x_shape": x_shape, "w_shape": w_shape, "kwargs": kwargs,
            "auto": plan.algorithm, "auto_tuned": tuned.algorithm, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    flags = parser.parse_args()
    names = [c for c in flags.cases.split(",") if c]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    results = {"machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__,
               "load_before": os.getloadavg(), "cases": []}
    for name in names:
        res = run_case(name, flags.rounds)
        results["cases"].append(res)
        print(f"\n{name}: x {res['x_shape']} w {res['w_shape']} {res['kwargs']}; auto -> "
              f"{res['auto']} (under compiler_options(): {res['auto_tuned']})")
        print(f"{'lowering':<10} {'options':<8} {'fwd ms':>10} {'fwd+grad ms':>12} "
              f"{'compile s (fwd/grad)':>22}")
        by = {(r["algorithm"], r["options"], r["pass"]): r for r in res["rows"]}
        for a, o in dict.fromkeys((r["algorithm"], r["options"]) for r in res["rows"]):
            f, g = by[(a, o, "fwd")], by[(a, o, "grad")]
            print(f"{a:<10} {o:<8} {f['median_ms']:>10.3f} {g['median_ms']:>12.3f} "
                  f"{f['first_call_s']:>10.2f} / {g['first_call_s']:.2f}", flush=True)
    results["load_after"] = os.getloadavg()
    if flags.out:
        with open(flags.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
