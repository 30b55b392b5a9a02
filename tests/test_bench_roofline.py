"""benchmarks/bench.py's roofline arithmetic: each row's work counted by hand, the fractions,
the ISA name and the figure. Correctness only; the timings are the benchmark's."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import bench  # noqa: E402


def test_row_work_counts_flops_and_the_bytes_every_call_must_move():
    x, w = np.zeros((2, 5, 5, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32)
    out = np.zeros((2, 3, 3, 4), np.float32)
    macs = 2 * 3 * 3 * 4 * 27
    flops, nbytes = bench.row_work("fwd", macs, (x, w), out)
    assert flops == 2 * macs
    assert nbytes == 4 * (x.size + w.size + out.size)
    flops, nbytes = bench.row_work("grad", macs, (x, w), out)
    assert flops == 6 * macs  # forward, input gradient, kernel gradient
    assert nbytes == 4 * (2 * (x.size + w.size) + out.size)


@pytest.mark.parametrize("name, expected", [
    ("H", 32 * 64 * 64 * 64 * 9),  # depthwise: one channel per output value
    ("I", 16 * 32 * 32 * 64 * 16 * 32),  # transposed: input elements x taps x out channels
    ("J", 8 * 1024 * 64 * 16 * 64),
    ("K", 512 * 512 * 9),
])
def test_op_macs_by_hand(name, expected):
    import jax
    import jax.numpy as jnp

    op = bench.OPS[name][1]()
    out = jax.eval_shape(op.jaxconv, *(jnp.asarray(a) for a in op.args))
    assert bench._op_macs(name, op, out) == expected


def test_roofline_fractions_and_float64_halves_the_peak():
    ceilings = {"fma_peak_gflops": 100.0, "memory_gbps": 10.0}
    entry = {"flops": 2e9, "bytes": 1e8, "results": {"jaxconv": {"median_us": 40_000.0}}}
    bench.roofline(entry, ceilings)
    r = entry["results"]["jaxconv"]
    assert r["fma_fraction"] == pytest.approx(0.5)  # 50 GFLOP/s of 100
    assert r["memory_fraction"] == pytest.approx(0.25)  # 2.5 GB/s of 10
    assert entry["roof_us"] == pytest.approx(20_000.0)  # compute-bound: 2e9 / 1e11 s
    entry["dtype"] = "float64"
    bench.roofline(entry, ceilings)
    assert entry["results"]["jaxconv"]["fma_fraction"] == pytest.approx(1.0)


def test_roofline_leaves_a_row_without_ceilings_alone():
    entry = {"flops": 1.0, "bytes": 1.0, "results": {"lax": {"median_us": 1.0}}}
    bench.roofline(entry, None)
    assert "fma_fraction" not in entry["results"]["lax"]


@pytest.mark.parametrize("flags, expected", [
    (["avx", "avx2", "avx512f", "fma"], "AVX-512F + FMA"),
    (["avx", "avx2", "fma"], "AVX2 + FMA"),
    (["avx"], "AVX"),
])
def test_isa_names_the_widest_vector_extension(flags, expected):
    assert bench.isa(flags) == expected


def test_figure_draws_every_timed_row(tmp_path):
    pytest.importorskip("matplotlib")
    row = lambda name, t, best: {  # noqa: E731
        "workload": name, "pass": "fwd", "best_peer": "lax", "best_peer_us": best,
        "auto_algorithm": "im2col", "ratio": t / best,
        "results": {"jaxconv": {"median_us": t, "fma_fraction": 0.2},
                    "lax": {"median_us": best, "fma_fraction": 0.4}},
    }
    report = {
        "workloads": [row("A", 1.0, 2.0), row("C", 3.0, 1.5)],
        "machine": {"cpu": "cpu", "isa": "AVX2", "usable_cores": 2, "date": "2026-12-03",
                    "versions": {"jax": "0.10.2"}},
        "ceilings": {"fma_peak_gflops": 100.0, "memory_gbps": 10.0,
                     "fma_candidates_gflops": {"xla_matmul": 100.0},
                     "memory_candidates_gbps": {"numpy_copy": 10.0}},
        "load_before": {"loadavg": (0.0, 0.0, 0.0)},
    }
    path = tmp_path / "f.png"
    assert bench.figure(report, str(path))
    assert path.stat().st_size > 0
    table = bench.markdown(report)
    assert "jaxconv % FMA peak" in table.splitlines()[0]
    assert "| A | fwd | **0.50** | lax | 20% |" in table  # the ratio first, then the roof
    assert "FMA peak 100 GFLOP/s" in table
