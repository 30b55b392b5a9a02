"""The planner's roofline model: what each exact lowering is expected to cost for one part of a
conv, as fractions of the machine's two roofs (FMA peak and memory bandwidth).

It explains, it does not choose: ``plan`` reports it beside the thresholds' choice, and
``auto`` runs what the thresholds choose. Pure arithmetic on shapes: nothing runs or is traced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from jaxconv.lowering._base import ConvArgs, Expected, Lowering, convs_on_eigen
from jaxconv.lowering.im2col import FEW_INPUT_CHANNELS

# The roofs of the machine the efficiencies were fitted on, as benchmarks/bench.py's
# measure_ceilings measured them (benchmarks/bench_results_2026-12-04_amd.json "ceilings",
# quiet, 2026-12-04 20:31: 2-core AMD EPYC, AVX-512): a float32 2048^3 XLA matmul, and a
# 128 MiB numpy stream copy.
FMA_PEAK_GFLOPS = 204.0
MEMORY_GBPS = 26.4

# EFFICIENCY[(lowering, part, on_eigen, regime)]: the fraction of FMA_PEAK_GFLOPS the lowering
# reaches on that part, with XLA's convolutions on Eigen (jaxconv.compiler_options()) or under
# XLA's default options (YNNPACK for 2-D float32 convs with > 16 features), by ``regime``.
# Fitted by benchmarks/plan_model.py: the median over the measured calls of flops / (time x
# peak), float32, from benchmarks/plan_parts_results.json (plan_bench.py's per-part timings of
# the 64 convs timed in its four runs: 48 drawn first layers, 16 named, 2026-12-03, load 1-5),
# plan_rows_results.json (the forwards of 4 YNNPACK-sized convs, quiet) and
# bench_results_2026-12-04_amd.json (bench.py, quiet, 2026-12-04: the forwards of workloads
# A-G, and H's forward and gradients),
# all on the 2-core AMD EPYC above (jax 0.10.2). A lowering without an entry for a call's key
# is not modelled for it (depthwise under compiler_options(): never timed so). The comment
# after each entry: how many timings its median is of.
EFFICIENCY: dict[tuple[str, str, bool, str], float] = {
    ("depthwise", "forward", False, "depthwise"): 0.0368,  # 1
    ("depthwise", "input_grad", False, "depthwise"): 0.0257,  # 1
    ("depthwise", "kernel_grad", False, "depthwise"): 0.0257,  # 1
    ("im2col", "forward", False, "3-D"): 0.0384,  # 10
    ("im2col", "forward", False, "few"): 0.0469,  # 48
    ("im2col", "forward", False, "many"): 0.191,  # 10
    ("im2col", "forward", True, "3-D"): 0.039,  # 10
    ("im2col", "forward", True, "few"): 0.041,  # 48
    ("im2col", "forward", True, "many"): 0.203,  # 10
    ("im2col", "input_grad", False, "3-D"): 0.0338,  # 10
    ("im2col", "input_grad", False, "few"): 0.0367,  # 40
    ("im2col", "input_grad", False, "many"): 0.136,  # 6
    ("im2col", "input_grad", True, "3-D"): 0.0256,  # 10
    ("im2col", "input_grad", True, "few"): 0.0362,  # 40
    ("im2col", "input_grad", True, "many"): 0.139,  # 6
    ("im2col", "kernel_grad", False, "3-D"): 0.0348,  # 10
    ("im2col", "kernel_grad", False, "few"): 0.0403,  # 48
    ("im2col", "kernel_grad", False, "many"): 0.0901,  # 6
    ("im2col", "kernel_grad", True, "3-D"): 0.0332,  # 10
    ("im2col", "kernel_grad", True, "few"): 0.0347,  # 48
    ("im2col", "kernel_grad", True, "many"): 0.0834,  # 6
    ("rows", "forward", False, "few"): 0.143,  # 1
    ("rows", "forward", False, "many"): 0.301,  # 9
    ("rows", "forward", True, "few"): 0.146,  # 1
    ("rows", "forward", True, "many"): 0.302,  # 7
    ("rows", "input_grad", False, "many"): 0.188,  # 3
    ("rows", "input_grad", True, "many"): 0.186,  # 3
    ("rows", "kernel_grad", False, "few"): 0.0705,  # 1
    ("rows", "kernel_grad", False, "many"): 0.128,  # 3
    ("rows", "kernel_grad", True, "few"): 0.0827,  # 1
    ("rows", "kernel_grad", True, "many"): 0.133,  # 3
    ("shift_add", "forward", False, "3-D"): 0.0896,  # 10
    ("shift_add", "forward", False, "few"): 0.0957,  # 51
    ("shift_add", "forward", False, "many"): 0.0677,  # 2
    ("shift_add", "forward", True, "3-D"): 0.106,  # 10
    ("shift_add", "forward", True, "few"): 0.0926,  # 48
    ("shift_add", "forward", True, "many"): 0.0671,  # 2
    ("shift_add", "input_grad", False, "3-D"): 0.00782,  # 10
    ("shift_add", "input_grad", False, "few"): 0.0068,  # 40
    ("shift_add", "input_grad", False, "many"): 0.0467,  # 2
    ("shift_add", "input_grad", True, "3-D"): 0.00807,  # 10
    ("shift_add", "input_grad", True, "few"): 0.00682,  # 40
    ("shift_add", "input_grad", True, "many"): 0.0465,  # 2
    ("shift_add", "kernel_grad", False, "3-D"): 0.0186,  # 10
    ("shift_add", "kernel_grad", False, "few"): 0.0361,  # 48
    ("shift_add", "kernel_grad", False, "many"): 0.079,  # 2
    ("shift_add", "kernel_grad", True, "3-D"): 0.0184,  # 10
    ("shift_add", "kernel_grad", True, "few"): 0.065,  # 48
    ("shift_add", "kernel_grad", True, "many"): 0.125,  # 2
    ("xla", "forward", False, "3-D"): 0.0081,  # 10
    ("xla", "forward", False, "depthwise"): 0.00281,  # 1
    ("xla", "forward", False, "few"): 0.0541,  # 55
    ("xla", "forward", False, "many"): 0.115,  # 12
    ("xla", "forward", True, "3-D"): 0.00821,  # 10
    ("xla", "forward", True, "depthwise"): 0.00214,  # 1
    ("xla", "forward", True, "few"): 0.0428,  # 53
    ("xla", "forward", True, "many"): 0.324,  # 12
    ("xla", "input_grad", False, "3-D"): 0.00261,  # 10
    ("xla", "input_grad", False, "depthwise"): 0.00314,  # 1
    ("xla", "input_grad", False, "few"): 0.0244,  # 40
    ("xla", "input_grad", False, "many"): 0.148,  # 6
    ("xla", "input_grad", True, "3-D"): 0.00264,  # 10
    ("xla", "input_grad", True, "depthwise"): 0.00326,  # 1
    ("xla", "input_grad", True, "few"): 0.0237,  # 40
    ("xla", "input_grad", True, "many"): 0.169,  # 6
    ("xla", "kernel_grad", False, "3-D"): 0.019,  # 10
    ("xla", "kernel_grad", False, "depthwise"): 0.00314,  # 1
    ("xla", "kernel_grad", False, "few"): 0.0422,  # 48
    ("xla", "kernel_grad", False, "many"): 0.0651,  # 6
    ("xla", "kernel_grad", True, "3-D"): 0.0169,  # 10
    ("xla", "kernel_grad", True, "depthwise"): 0.00326,  # 1
    ("xla", "kernel_grad", True, "few"): 0.0738,  # 48
    ("xla", "kernel_grad", True, "many"): 0.152,  # 6
}


def regime(args: ConvArgs) -> str:
    """The class of call an efficiency is fitted for: ``"depthwise"``; ``"3-D"`` (XLA:CPU has
    no fast 3-D convolution); ``"few"`` input channels per group (at most
    ``im2col.FEW_INPUT_CHANNELS``: first layers, where contractions are thin); or ``"many"``.
    (One class per dimensionality fitted no better out of sample: benchmarks/NOTES.md.)"""
    if args.depthwise:
        return "depthwise"
    if args.layout.ndim == 3:
        return "3-D"
    return "few" if args.c_group <= FEW_INPUT_CHANNELS else "many"


def work(args: ConvArgs, low: Lowering) -> tuple[float, float]:
    """``(flops, bytes)`` of ``args.part`` run by ``low``: 2 flops per multiply-add (the same
    for every part), and every part reads two of x, w and the output's cotangent and writes the
    third once, plus the lowering's temporaries, each written once and read once."""
    operands = math.prod(args.x_shape) + math.prod(args.w_shape) + args.out_size
    return 2.0 * args.macs, float(operands * args.dtype.itemsize + 2 * low.temporaries(args))


def expect(
    args: ConvArgs,
    lowerings: Sequence[Lowering],
    efficiencies: Mapping[tuple[str, str, bool, str], float] = EFFICIENCY,
) -> tuple[Expected, ...]:
    """What the model expects of each of ``lowerings`` with a fitted efficiency for
    ``args.part`` of this float32 call, fastest first; empty if none has one.
    ``efficiencies``: a table in ``EFFICIENCY``'s form (the fit script checks the model out of
    sample with tables fitted without the call)."""
    if args.dtype != jnp.float32:
        return ()
    key = (convs_on_eigen(), regime(args))
    peak, bandwidth = FMA_PEAK_GFLOPS * 1e9, MEMORY_GBPS * 1e9
    timed = []
    for low in lowerings:
        efficiency = efficiencies.get((low.name, args.part, *key))
        if efficiency is None:
            continue
        flops, moved = work(args, low)
        compute, memory = flops / (efficiency * peak), moved / bandwidth
        timed.append((max(compute, memory), low.name, flops, moved,
                      "compute" if compute >= memory else "memory"))
    timed.sort()
    return tuple(
        Expected(name, flops, moved, seconds, flops / seconds / peak,
                 moved / seconds / bandwidth, seconds / timed[0][0], bound)
        for seconds, name, flops, moved, bound in timed
    )


def _quantity(value: float, unit: str) -> str:
    """``value`` with an SI prefix, to 2 significant digits below 10: ``2.1 GFLOP``, ``35 MB``,
    ``350 us``."""
    scale, prefix = next(((s, p) for s, p in _PREFIXES if value >= s), _PREFIXES[-1])
    v = value / scale
    return f"{v:.2g} {prefix}{unit}" if v < 10 else f"{v:.0f} {prefix}{unit}"


_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"))


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}" if fraction >= 0.01 else f"{fraction:.1%}"


def explain(chosen: str, expected: Sequence[Expected]) -> str:
    """One sentence: the fastest expected lowering's roof fractions and work, the others'
    compute fractions and times relative to it, and where the model ranks ``chosen``."""
    if not expected:
        return ("no roofline expectation (the model's efficiencies were fitted on float32 "
                "timings of the exact lowerings)")
    options = "convolutions on Eigen" if convs_on_eigen() else "XLA's default options"
    first = expected[0]
    words = [
        f"expected by the roofline model ({options}; {FMA_PEAK_GFLOPS:.0f} GFLOP/s FMA peak, "
        f"{MEMORY_GBPS} GB/s): {first.algorithm} ~{_percent(first.compute_fraction)} of the "
        f"FMA peak and ~{_percent(first.memory_fraction)} of the memory roof ({first.bound}-bound; "
        f"{_quantity(first.flops, 'FLOP')}, {_quantity(first.bytes, 'B')} moved, "
        f"~{_quantity(first.seconds, 's')})"
    ]
    words += [f"{e.algorithm} ~{_percent(e.compute_fraction)} ({e.relative_time:.2g}x the "
              "time)" for e in expected[1:]]
    text = ", ".join(words)
    rank = [e.algorithm for e in expected]
    if chosen not in rank:
        return f"{text}; {chosen} is not modelled for this part"
    place = rank.index(chosen)
    if place == 0:
        return text
    return (f"{text}; the thresholds chose {chosen}, which the model ranks {place + 1} of "
            f"{len(rank)} ({expected[place].relative_time:.2g}x the expected time of "
            f"{first.algorithm})")
