"""Fits the planner's roofline model to the timings on disk, and checks it against them.

The model (``jaxconv/lowering/_cost.py``) expects a lowering to take ``max(flops /
(efficiency x FMA peak), bytes / bandwidth)`` for one part of a conv, with one efficiency per
(lowering, part, XLA's engine, class of call). This script fits each efficiency as the median
of ``flops / (time x peak)`` over the measured calls of its key, prints the table in
``_cost.EFFICIENCY``'s form (and whether ``_cost.py`` holds it), then says how often the
model's cheapest lowering is the measured fastest, and how often the planner's choice (the
thresholds) is, in-sample and with each case's efficiencies fitted without that case. It runs
no convolution: the timings are ``plan_parts_results.json`` and ``plan_rows_results.json``
(``plan_bench.py``) and ``bench_results_2026-12-04_amd.json`` (``bench.py``'s run of that day
on the same host, kept under its own name: ``make bench`` rewrites ``results.json`` on
whatever host it runs, and efficiencies are fractions of one host's peak).

Run: ``python benchmarks/plan_model.py``
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp

import jaxconv
from jaxconv import lowering
from jaxconv.lowering import _cost
from jaxconv.lowering._base import ConvArgs, compiling_with

HERE = Path(__file__).parent
# plan_bench.py's passes and option sets, in the planner's words
PARTS = {"fwd": "forward", "grad_x": "input_grad", "grad_w": "kernel_grad"}
ON_EIGEN = {"default": False, "tuned": True}
# bench.py's workload H (its rows in the results name no shapes): _op_h
H = ((32, 64, 64, 64), (3, 3, 1, 64), {"padding": "SAME", "groups": 64})


class Sample(NamedTuple):
    """One measured time of one part of one call run by one lowering."""

    case: tuple  # (x_shape, w_shape, kwargs) as a hashable key
    source: str  # the run it came from, e.g. "plan_parts/draw_seed0"
    algorithm: str
    args: ConvArgs  # with the part
    on_eigen: bool
    seconds: float


def _args(x_shape, w_shape, kwargs, part) -> ConvArgs:
    args, _ = lowering._conv_args(
        "plan_model", tuple(x_shape), tuple(w_shape), jnp.float32, kwargs.get("stride", 1),
        kwargs.get("padding", "VALID"), kwargs.get("dilation", 1), kwargs.get("groups", 1),
        None, "zeros", None)
    return args._replace(part=part)


def _case(x_shape, w_shape, kwargs) -> tuple:
    return (tuple(x_shape), tuple(w_shape), tuple(sorted(kwargs.items())))


# bench.py's results the model was fitted on (same host as the plan_bench timings)
BENCH_RESULTS = "bench_results_2026-12-04_amd.json"


def load() -> list[Sample]:
    """Every per-part timing on disk as samples (float32 only)."""
    samples = []

    def add(source, spec, algorithm, part, options, seconds):
        x_shape, w_shape, kwargs = spec
        samples.append(Sample(_case(*spec), source, algorithm,
                              _args(x_shape, w_shape, kwargs, part), ON_EIGEN[options], seconds))

    parts = json.loads((HERE / "plan_parts_results.json").read_text())
    for run, results in parts["runs"].items():
        for case in results["cases"]:
            spec = (case["x_shape"], case["w_shape"], case["kwargs"])
            for r in case["rows"]:
                if r["pass"] in PARTS:
                    add(f"plan_parts/{run}", spec, r["algorithm"], PARTS[r["pass"]],
                        r["options"], r["median_ms"] / 1e3)
    rows = json.loads((HERE / "plan_rows_results.json").read_text())
    for case in rows["cases"]:
        spec = (case["x_shape"], case["w_shape"], case["kwargs"])
        for r in case["rows"]:
            if r["pass"] == "fwd":
                add("plan_rows", spec, r["algorithm"], "forward", r["options"],
                    r["median_ms"] / 1e3)
    bench = json.loads((HERE / BENCH_RESULTS).read_text())
    for w in bench["workloads"]:
        t = {name: r["median_us"] / 1e6 for name, r in w["results"].items()}
        impls = {"lax": ("xla", "default"), "lax_tuned": ("xla", "tuned"),
                 "jaxconv": (w["auto_algorithm"], "default")}
        if "x_shape" in w and w["pass"] == "fwd":  # A-G: 2-D, VALID
            for impl, (algorithm, options) in impls.items():
                add("results", (w["x_shape"], w["w_shape"], {}), algorithm, "forward",
                    options, t[impl])
        elif w["workload"] == "H":
            # its gradient row is jax.grad of a linear loss: both gradients, no forward
            # (XLA drops it); each gradient does the forward's multiply-adds, so each is
            # taken as half the time
            for impl, (algorithm, options) in impls.items():
                if w["pass"] == "fwd":
                    add("results", H, algorithm, "forward", options, t[impl])
                else:
                    for part in ("input_grad", "kernel_grad"):
                        add("results", H, algorithm, part, options, t[impl] / 2)
    return samples


def _key(s: Sample) -> tuple[str, str, bool, str]:
    return (s.algorithm, s.args.part, s.on_eigen, _cost.regime(s.args))


def efficiency(s: Sample) -> float:
    """The fraction of the FMA peak that ``s`` ran at (2 flops per multiply-add)."""
    return 2.0 * s.args.macs / s.seconds / (_cost.FMA_PEAK_GFLOPS * 1e9)


def fit(samples: list[Sample]) -> dict[tuple[str, str, bool, str], float]:
    """Each key's median efficiency, to 3 significant digits, in a stable order."""
    by_key = defaultdict(list)
    for s in samples:
        if s.algorithm in {low.name for low in lowering.AUTO_ORDER}:
            by_key[_key(s)].append(efficiency(s))
    return {k: float(f"{statistics.median(v):.3g}") for k, v in sorted(by_key.items())}


def groups(samples: list[Sample]) -> dict[tuple, dict[str, float]]:
    """(source, case, part, on_eigen) -> {lowering: seconds}, for the exact lowerings timed
    on the same call in the same run, where at least two were."""
    out = defaultdict(dict)
    for s in samples:
        if s.source != "results" and s.algorithm in {low.name for low in lowering.AUTO_ORDER}:
            out[(s.source, s.case, s.args.part, s.on_eigen)][s.algorithm] = s.seconds
    return {k: v for k, v in out.items() if len(v) >= 2}


def _lowerings(names):
    return [low for low in lowering.AUTO_ORDER if low.name in names]


def agreement(samples: list[Sample], leave_one_out: bool) -> dict:
    """For each group of ``groups``: the model's cheapest of the timed lowerings, the
    planner's choice, and the measured fastest; with ``leave_one_out`` the model's
    efficiencies are fitted without the group's case."""
    tables = {None: fit(samples)}
    rows = []
    for (_, case, part, on_eigen), times in groups(samples).items():
        held_out = case if leave_one_out else None
        if held_out not in tables:
            tables[held_out] = fit([s for s in samples if s.case != held_out])
        table = tables[held_out]
        x_shape, w_shape, kwargs = case[0], case[1], dict(case[2])
        args = _args(x_shape, w_shape, kwargs, part)
        options = jaxconv.compiler_options() if on_eigen else None
        with compiling_with(options):
            expected = _cost.expect(args, _lowerings(times), table)
        p = jaxconv.plan(x_shape, w_shape, backend="cpu", compiler_options=options, **kwargs)
        planned = {"forward": p, "input_grad": p.input_grad, "kernel_grad": p.kernel_grad}
        best = min(times, key=times.get)
        rows.append({"best": best, "times": times, "planner": planned[part].algorithm,
                     "model": expected[0].algorithm if expected else None})
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    def picks(who):
        timed = [r for r in rows if r[who] in r["times"]]
        ratios = [r["times"][r[who]] / r["times"][r["best"]] for r in timed]
        return {"n": len(timed), "fastest": sum(r[who] == r["best"] for r in timed),
                "geomean_over_best": math.exp(statistics.fmean(map(math.log, ratios))),
                "max_over_best": max(ratios)}

    both = [r for r in rows if r["model"] in r["times"] and r["planner"] in r["times"]]
    return {"groups": len(rows), "model": picks("model"), "planner": picks("planner"),
            "model_is_planner": (sum(r["model"] == r["planner"] for r in both), len(both))}


def main():
    samples = load()
    table = fit(samples)
    counts = defaultdict(int)
    for s in samples:
        counts[_key(s)] += 1
    print(f"{len(samples)} samples; fitted EFFICIENCY (key: samples):")
    print("EFFICIENCY: dict[tuple[str, str, bool, str], float] = {")
    for (name, part, on_eigen, regime), v in table.items():
        n = counts[name, part, on_eigen, regime]
        print(f'    ("{name}", "{part}", {on_eigen}, "{regime}"): {v},  # {n}')
    print("}")
    print("jaxconv/lowering/_cost.py holds this table:", _cost.EFFICIENCY == table)
    for loo in (False, True):
        a = agreement(samples, loo)
        label = "leave-one-case-out" if loo else "in-sample"
        print(f"\n{label}: {a['groups']} groups (call x part x option set, >= 2 lowerings timed)")
        for who in ("model", "planner"):
            r = a[who]
            print(f"  {who:8} picks the measured fastest {r['fastest']}/{r['n']}; its pick's "
                  f"time / the fastest: geometric mean {r['geomean_over_best']:.2f}, max "
                  f"{r['max_over_best']:.2f}")
        same, n = a["model_is_planner"]
        print(f"  model's pick == planner's: {same}/{n}")


if __name__ == "__main__":
    main()
