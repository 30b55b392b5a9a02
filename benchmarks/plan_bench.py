"""Per-lowering timings behind the planner's thresholds: forward and forward + gradients.

For each case, every lowering that accepts it runs the forward call, and the gradients with
respect to ``x`` and ``w`` together (a hidden layer's backward pass), ``x`` alone and ``w``
alone (a first layer's: its input is data) -- a conv is linear in each operand, so a gradient
call does not run the forward, and a training step costs the forward plus the gradients it
needs. Each is jitted with XLA's
default flags and with ``jaxconv.compiler_options()`` (as ``fit`` compiles), interleaved round
by round; medians after one warm-up call, every call synchronised. Also prints what
``jaxconv.plan`` picks, and how far ``algorithm="fft"`` (opt-in, not elementwise exact) is
from ``auto``. Timings live here, never in tests.

Run: ``python benchmarks/plan_bench.py [--cases G,lenet1 | --draw 20 --seed 0]
[--passes fwd,grad_x,grad_w] [--rounds 5] [--out FILE]``, and ``--summary FILE...`` to
compare the per-part plans recorded in results files with the forward's plan for every part.
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
    # first layers (1 or 3 input channels), where xla's kernel gradient is the slow part of a
    # training step (issue 19 item 2: the plan for forward + gradients)
    "k3_1to32": ((64, 28, 28, 1), (3, 3, 1, 32), {}, ("xla", "shift_add", "im2col")),
    "k5_1to32": ((64, 28, 28, 1), (5, 5, 1, 32), {}, ("xla", "shift_add", "im2col")),
    "k7_1to16": ((32, 64, 64, 1), (7, 7, 1, 16), {"padding": "SAME"},
                 ("xla", "shift_add", "im2col")),
    "k3_3to32": ((32, 32, 32, 3), (3, 3, 3, 32), {"padding": "SAME"},
                 ("xla", "shift_add", "im2col")),
    "k7_3to64_s2": ((8, 64, 64, 3), (7, 7, 3, 64), {"stride": 2, "padding": "SAME"},
                    ("xla", "shift_add", "im2col")),
    "D": ((8, 128, 128, 3), (5, 5, 3, 16), {}, ("xla", "shift_add", "im2col", "rows")),
    # hidden layers below and at YNNPACK's 16-feature line
    "k3_8to16": ((32, 32, 32, 8), (3, 3, 8, 16), {"padding": "SAME"},
                 ("xla", "shift_add", "im2col")),
    "k3_16to16": ((32, 32, 32, 16), (3, 3, 16, 16), {"padding": "SAME"},
                  ("xla", "im2col", "rows")),
    # grouped (not depthwise) convs: ResNeXt-like 3x3 layers, 2-32 input channels per group
    **{f"g{g}_64": ((16, 32, 32, 64), (3, 3, 64 // g, 64), {"padding": "SAME", "groups": g},
                    ("xla", "shift_add", "im2col", "rows")) for g in (2, 4, 8, 16, 32)},
    "g8_32": ((16, 32, 32, 32), (3, 3, 4, 32), {"padding": "SAME", "groups": 8},
              ("xla", "shift_add", "im2col", "rows")),
    "g4_16": ((16, 32, 32, 16), (3, 3, 4, 16), {"padding": "SAME", "groups": 4},
              ("xla", "shift_add", "im2col")),
    "g16_64_k5": ((16, 32, 32, 64), (5, 5, 4, 64), {"padding": "SAME", "groups": 16},
                  ("xla", "shift_add", "im2col", "rows")),
    "g8_128": ((8, 16, 16, 128), (3, 3, 16, 128), {"padding": "SAME", "groups": 8},
               ("xla", "shift_add", "im2col", "rows")),
    "g4_1d": ((16, 512, 64), (5, 16, 64), {"padding": "SAME", "groups": 4},
              ("xla", "shift_add", "im2col")),
    "g8_3d": ((4, 12, 12, 12, 32), (3, 3, 3, 4, 32), {"padding": "SAME", "groups": 8},
              ("xla", "shift_add", "im2col")),
    # 3-D hidden layers with 4-32 input channels (XLA:CPU has no fast 3-D convolution)
    "3d_4to16": ((8, 16, 16, 16, 4), (3, 3, 3, 4, 16), {"padding": "SAME"},
                 ("xla", "shift_add", "im2col")),
    "3d_6to12": ((8, 16, 16, 16, 6), (3, 3, 3, 6, 12), {"padding": "SAME"},
                 ("xla", "shift_add", "im2col")),
    "3d_8to16": ((8, 16, 16, 16, 8), (3, 3, 3, 8, 16), {"padding": "SAME"},
                 ("xla", "im2col")),
    "3d_16to32": ((4, 12, 12, 12, 16), (3, 3, 3, 16, 32), {"padding": "SAME"},
                  ("xla", "im2col")),
    "3d_32to32_s2": ((4, 16, 16, 16, 32), (3, 3, 3, 32, 32), {"stride": 2},
                     ("xla", "im2col")),
}


def draw_cases(n: int, seed: int = 0) -> dict:
    """``n`` seeded convolutions with few input channels (1-3: first layers) in 1-3-D, 2-7
    taps per axis, 4-64 outputs, stride 1-2, SAME/VALID, inputs of 0.5-4 MiB, outputs of at
    most 16 MiB: the family whose plan differs most between the forward and the gradients
    (NOTES.md, issue 19 item 2). Case ``i`` depends only on ``(seed, i)``."""
    out = {}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        nd = int(rng.choice([1, 2, 2, 2, 3]))
        k = int(rng.integers(2, {1: 10, 2: 8, 3: 5}[nd]))
        cin, cout = int(rng.integers(1, 4)), int(rng.choice([4, 8, 16, 32, 64]))
        batch = int(rng.choice([8, 16, 32, 64]))
        pixels = min(rng.uniform(0.5, 4) * 2**20 / 4 / batch / cin,  # input bytes
                     16 * 2**20 / 4 / batch / cout)  # output of at most 16 MiB
        side = max(2 * k, int(round(pixels ** (1 / nd))))
        kwargs = {"stride": int(rng.choice([1, 1, 2])),
                  "padding": str(rng.choice(["SAME", "VALID"]))}
        out[f"draw{seed}_{i}"] = ((batch, *([side] * nd), cin), (*([k] * nd), cin, cout), kwargs,
                                  ("xla", "shift_add", "im2col"))
    return out


def _calls(x, w, kwargs, algorithm, options):
    def fwd(x, w):
        return jaxconv.conv(x, w, algorithm=algorithm, **kwargs)

    def grad(x, w):
        y, vjp = jax.vjp(fwd, x, w)
        return vjp(jnp.ones_like(y))

    def grad_w(x, w):  # a first layer's step: x is data, only the kernel's gradient runs
        y, vjp = jax.vjp(lambda w: fwd(x, w), w)
        return vjp(jnp.ones_like(y))

    def grad_x(x, w):  # the input gradient alone
        y, vjp = jax.vjp(lambda x: fwd(x, w), x)
        return vjp(jnp.ones_like(y))

    f = jax.jit(fwd, compiler_options=options or None)
    g = jax.jit(grad, compiler_options=options or None)
    gw = jax.jit(grad_w, compiler_options=options or None)
    gx = jax.jit(grad_x, compiler_options=options or None)
    return {"fwd": lambda: jax.block_until_ready(f(x, w)),
            "grad": lambda: jax.block_until_ready(g(x, w)),
            "grad_w": lambda: jax.block_until_ready(gw(x, w)),
            "grad_x": lambda: jax.block_until_ready(gx(x, w))}


def run_case(name, rounds, spec=None, passes=("fwd", "grad", "grad_x", "grad_w")):
    x_shape, w_shape, kwargs, algorithms = spec or CASES[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
    calls = {}
    for options_name, options in (("default", {}), ("tuned", jaxconv.compiler_options())):
        for algorithm in algorithms:
            for pass_, call in _calls(x, w, kwargs, algorithm, options).items():
                if pass_ not in passes:
                    continue
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
    def parts(p):
        return {"forward": p.algorithm, "input_grad": p.input_grad.algorithm,
                "kernel_grad": p.kernel_grad.algorithm}

    plan = parts(jaxconv.plan(x_shape, w_shape, backend="cpu", **kwargs))
    tuned = parts(jaxconv.plan(x_shape, w_shape, backend="cpu",
                               compiler_options=jaxconv.compiler_options(), **kwargs))
    rows = [
        {"algorithm": a, "options": o, "pass": p, "median_ms": 1e3 * statistics.median(t),
         "first_call_s": calls[(a, o, p)][1]}
        for (a, o, p), t in times.items()
    ]
    return {"case": name, "x_shape": x_shape, "w_shape": w_shape, "kwargs": kwargs,
            "auto": plan, "auto_tuned": tuned, "rows": rows}


def summarize(results: dict) -> list[dict]:
    """Per case and option setting, the time a training step's convs take under ``auto``'s
    plan of each part (this checkout's ``jaxconv.plan``) against its forward's lowering run for
    every part (a plan of the forward alone) and against the best lowering of each part:
    ``first`` is a first layer's forward + kernel gradient, ``hidden`` adds the input
    gradient. Only cases timed with the fwd, grad_x and grad_w passes count."""
    out = []
    for case in results["cases"]:
        t = {(r["algorithm"], r["options"], r["pass"]): r["median_ms"] for r in case["rows"]}
        for options, flags in (("default", None), ("tuned", jaxconv.compiler_options())):
            p = jaxconv.plan(case["x_shape"], case["w_shape"], backend="cpu",
                             compiler_options=flags, **case["kwargs"])
            planned = (p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm)
            for use, passes in (("first", ("fwd", "grad_w")),
                                ("hidden", ("fwd", "grad_x", "grad_w"))):
                def cost(algs, passes=passes, options=options, t=t):
                    parts = dict(zip(("fwd", "grad_x", "grad_w"), algs, strict=True))
                    return sum(t[(parts[q], options, q)] for q in passes)

                algs = {a for (a, o, _) in t if o == options}
                if not all((a, options, q) in t for a in algs for q in passes):
                    continue
                best = sum(min(t[(a, options, q)] for a in algs) for q in passes)
                out.append({"case": case["case"], "options": options, "use": use,
                            "per_part": cost(planned) / best,
                            "forward_only": cost((planned[0],) * 3) / best})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--draw", type=int, default=0,
                        help="time this many drawn cases (draw_cases) instead of --cases")
    parser.add_argument("--seed", type=int, default=0, help="the seed of --draw")
    parser.add_argument("--passes", default="fwd,grad,grad_x,grad_w")
    parser.add_argument("--summary", nargs="+", metavar="FILE",
                        help="print summarize() of results files and exit")
    flags = parser.parse_args()
    if flags.summary:
        rows = [r for f in flags.summary for r in summarize(json.load(open(f)))]
        for use in ("first", "hidden"):
            for options in ("default", "tuned"):
                sel = [r for r in rows if r["use"] == use and r["options"] == options]
                if not sel:
                    continue
                per = np.array([r["per_part"] for r in sel])
                one = np.array([r["forward_only"] for r in sel])
                print(f"{use:6} {options:7} n={len(sel):2}: time / best, per-part plan median "
                      f"{np.median(per):.2f} max {per.max():.2f}; forward's plan for every part "
                      f"median {np.median(one):.2f} max {one.max():.2f}; forward-only / "
                      f"per-part geometric mean {np.exp(np.mean(np.log(one / per))):.2f}, "
                      f"min {(one / per).min():.2f}")
        return
    cases = draw_cases(flags.draw, flags.seed) if flags.draw else CASES
    names = list(cases) if flags.draw else [c for c in flags.cases.split(",") if c]
    unknown = sorted(set(names) - set(CASES)) if not flags.draw else []
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    passes = tuple(flags.passes.split(","))
    results = {"machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__,
               "load_before": os.getloadavg(), "cases": []}
    for name in names:
        res = run_case(name, flags.rounds, cases[name], passes)
        results["cases"].append(res)
        print(f"\n{name}: x {res['x_shape']} w {res['w_shape']} {res['kwargs']}; auto -> "
              f"{res['auto']}\n  under compiler_options(): {res['auto_tuned']}")
        print(f"{'lowering':<10} {'options':<8} {'fwd ms':>9} {'grads ms':>9} "
              f"{'grad_x ms':>10} {'grad_w ms':>10} {'compile s (fwd/grads/x/w)':>28}")
        by = {(r["algorithm"], r["options"], r["pass"]): r for r in res["rows"]}
        for a, o in dict.fromkeys((r["algorithm"], r["options"]) for r in res["rows"]):
            parts = [by.get((a, o, p)) for p in ("fwd", "grad", "grad_x", "grad_w")]
            print(f"{a:<10} {o:<8} " + " ".join(
                f"{r['median_ms']:>{n}.3f}" if r else f"{'-':>{n}}"
                for r, n in zip(parts, (9, 9, 10, 10), strict=True))
                + "   " + " / ".join(f"{r['first_call_s']:.2f}" if r else "-" for r in parts),
                flush=True)
    results["load_after"] = os.getloadavg()
    if flags.out:
        with open(flags.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
