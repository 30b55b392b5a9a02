"""Side-by-side CPU timings: jaxconv (auto) vs raw lax, torch, flax nnx and equinox.

Times every implementation in one process, interleaved round by round, on the conv workloads
A-G, the op workloads H-L (depthwise, transposed 2-D and 1-D, correlate2d alone and under vmap,
A-F in float64), forward and gradient w.r.t. every input, and on the full task-A recovery
training (500 Adam steps). Raw lax runs twice: with XLA's default flags ("lax") and compiled
with ``jaxconv.compiler_options()`` ("lax_tuned", YNNPACK's convolutions off). Medians after
warm-up, every call synchronised; ratios are to the best peer of the same run. Every row is
also placed against the machine's own roofs, measured in the same run (``measure_ceilings``:
FMA peak and memory bandwidth), and ``figure`` draws the run. Timings live here, never in
tests (DESIGN.md: "Measure, don't guess").

Run: ``python benchmarks/bench.py [--quick] [--workloads A,B,...] [--out benchmarks/results.json]``
(``make bench`` installs the light peers, flax and equinox; torch is used only if installed).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxconv

IMPLS = ("jaxconv", "lax", "lax_tuned", "torch", "flax", "equinox")
PEERS = IMPLS[1:]
DN = ("NHWC", "HWIO", "NHWC")
# The task-A teacher: a 3x3 cross detector (+1 on the cross, -1 in the corners).
CROSS = np.array([[-1.0, 1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]], np.float32)
# Relative max error (vs lax) above which a result is flagged: every peer computes the same
# float32 function, so anything bigger is a bug, not rounding.
REL_TOL = 1e-3
# Seconds of timed training runs per implementation after which it stops at 2 runs.
TRAIN_BUDGET_S = 15.0


class Workload(NamedTuple):
    name: str
    x_shape: tuple[int, int, int, int]  # NHWC
    kernel: tuple[int, int]
    out_channels: int
    what: str


WORKLOADS = {
    w.name: w
    for w in (
        Workload("A", (64, 16, 16, 1), (3, 3), 1, "the recovery task"),
        Workload("B", (64, 16, 16, 1), (3, 3), 8, "a 1->8 filter bank"),
        Workload("C", (32, 64, 64, 16), (3, 3), 32, "a CNN layer"),
        Workload("D", (8, 128, 128, 3), (5, 5), 16, "an RGB stem"),
        Workload("E", (32, 32, 32, 64), (3, 3), 64, "a wide CNN layer"),
        Workload("F", (1, 512, 512, 1), (3, 3), 1, "filtering one image"),
        Workload("G", (1, 1024, 1024, 1), (31, 31), 1, "a 31x31 Gaussian blur"),
    )
}


class Settings(NamedTuple):
    budget_s: float  # timed seconds per (workload, pass), all implementations together
    sample_s: float  # target seconds per sample (inner repeats of fast calls)
    min_rounds: int
    max_rounds: int
    train_repeats: int
    train_steps: int
    train_warmup: bool  # one untimed training run per library first (the workloads warm up too)
    pause_s: float  # idle gap between samples, so one library's spinning threads don't tax the next


FULL = Settings(2.5, 0.01, 3, 25, 5, 500, True, 0.005)
QUICK = Settings(0.2, 0.002, 3, 5, 1, 500, False, 0.002)


# --------------------------------------------------------------------------------------------
# Peers: imported only if present.


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure means "skip this peer"
        return e


def load_peers() -> tuple[dict[str, Any], dict[str, str]]:
    mods, skipped = {}, {}
    for impl, module, hint in (
        ("torch", "torch", "pip install torch (CPU build)"),
        ("flax", "flax.nnx", "pip install -e '.[bench]'"),
        ("equinox", "equinox", "pip install -e '.[bench]'"),
    ):
        mod = _optional(module)
        if isinstance(mod, Exception):
            skipped[impl] = f"{module} not importable ({type(mod).__name__}: {mod}); {hint}"
        else:
            mods[impl] = mod
    return mods, skipped


# --------------------------------------------------------------------------------------------
# Machine description.


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def _git(*args: str) -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_report(report: dict, path: str) -> None:
    """The JSON report at ``path`` (its directory created if needed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=float)
    print(f"wrote {path}")


def machine_info(mods) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "isa": isa(_cpu_flags()),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {
            d: _version(d) for d in ("jax", "jaxlib", "optax", "numpy", "torch", "flax", "equinox")
        },
        "jaxconv_commit": _git("rev-parse", "--short", "HEAD"),
        "jaxconv_dirty": bool(_git("status", "--porcelain", "--", "jaxconv")),
        "env": {
            k: os.environ[k]
            for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
            if k in os.environ
        },
    }
    if "torch" in mods:
        info["torch_threads"] = mods["torch"].get_num_threads()
    return info


# --------------------------------------------------------------------------------------------
# The machine's ceilings (issue 23): measured here, never a spec sheet's numbers.

# Matmul size for the GEMM peak: 2 * 2048^3 = 17 GFLOP, ~0.1 s at 190 GFLOP/s.
PEAK_MATMUL_N = 2048
# Elements of the register-resident FMA loop: 16 KiB of float32, L1-resident.
FMA_LOOP_ELEMENTS = 4096
# Independent multiply-add chains per element and steps per chain: 8 chains hide the FMA
# latency behind two FMA ports; 64 steps make the loads and stores negligible.
FMA_CHAINS, FMA_STEPS = 8, 64
# Bytes per array of the stream copy: far larger than any cache.
STREAM_BYTES = 2**27


def _best_of(call, repeats: int) -> float:
    """Fastest of ``repeats`` synchronised calls after one warm-up (a ceiling is the best the
    machine did, so the minimum, not the median)."""
    call()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _fma_loop(x):
    """FMA_CHAINS independent chains of FMA_STEPS multiply-adds per element, one XLA fusion."""
    chains = [x + i for i in range(FMA_CHAINS)]
    for _ in range(FMA_STEPS):
        chains = [c * 0.999 + 0.001 for c in chains]
    return sum(chains[1:], chains[0])


def measure_ceilings(quick: bool = False) -> dict:
    """The machine's FMA peak and memory bandwidth, as the roofline's two roofs.

    FMA peak (GFLOP/s, a multiply-add counted as 2 flops): the fastest of a float32
    ``PEAK_MATMUL_N``-square matmul through XLA and through numpy (its BLAS), and an
    elementwise FMA loop on an L1-resident array through XLA. Memory bandwidth (GB/s): a
    stream copy of ``STREAM_BYTES`` (read + write counted, as STREAM does) through numpy and
    through XLA (a scale, which XLA cannot elide). The figures are the best of a few calls.
    """
    repeats = 3 if quick else 7
    n = PEAK_MATMUL_N
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    xla_dot = jax.jit(jnp.dot)
    flops = 2.0 * n**3
    gemm_xla = flops / _best_of(lambda: xla_dot(ja, jb).block_until_ready(), repeats) / 1e9
    gemm_numpy = flops / _best_of(lambda: np.dot(a, b), repeats) / 1e9
    x = jnp.asarray(rng.standard_normal(FMA_LOOP_ELEMENTS, dtype=np.float32))
    fma = jax.jit(_fma_loop)
    inner = 200  # calls per timing: one call is a few microseconds

    def fma_calls():
        y = x
        for _ in range(inner):
            y = fma(y)
        y.block_until_ready()

    fma_flops = 2.0 * FMA_CHAINS * FMA_STEPS * FMA_LOOP_ELEMENTS * inner
    fma_loop = fma_flops / _best_of(fma_calls, repeats) / 1e9
    src = np.ones(STREAM_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    copy_numpy = 2 * STREAM_BYTES / _best_of(lambda: np.copyto(dst, src), repeats) / 1e9
    jsrc = jnp.asarray(src)
    scale = jax.jit(lambda v: v * 1.5)
    copy_xla = 2 * STREAM_BYTES / _best_of(lambda: scale(jsrc).block_until_ready(),
                                           repeats) / 1e9
    peaks = {"xla_matmul": gemm_xla, "numpy_matmul": gemm_numpy, "xla_fma_loop": fma_loop}
    streams = {"numpy_copy": copy_numpy, "xla_scale": copy_xla}
    return {
        "fma_peak_gflops": max(peaks.values()),
        "fma_peak_from": max(peaks, key=peaks.get),
        "fma_candidates_gflops": peaks,
        "memory_gbps": max(streams.values()),
        "memory_from": max(streams, key=streams.get),
        "memory_candidates_gbps": streams,
        "matmul_n": n,
        "stream_bytes": STREAM_BYTES,
    }


def isa(flags: list[str]) -> str:
    """The widest x86 vector ISA named in /proc/cpuinfo's flags (e.g. ``"AVX-512F"``)."""
    for flag, name in (("avx512f", "AVX-512F"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name + (" + FMA" if "fma" in flags else "")
    return platform.machine()


def _nbytes(tree) -> int:
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def row_work(pass_: str, macs: int, args, out) -> tuple[float, float]:
    """(flops, bytes) one call of a row must do at least: 2 flops per multiply-add (the
    gradient pass: forward, input and kernel gradients, 3x the forward's), and every input
    read and every result written once (fwd: args + output; grad: args + cotangent +
    gradients, the same shapes as the args)."""
    if pass_ == "fwd":
        return 2.0 * macs, float(_nbytes(args) + _nbytes(out))
    return 6.0 * macs, float(2 * _nbytes(args) + _nbytes(out))


def roofline(entry: dict, ceilings: dict | None) -> None:
    """Adds each implementation's fraction of the FMA peak and of the memory roof to
    ``entry`` (from its ``flops`` and ``bytes``), and the roofline's bound for the row."""
    if not ceilings or "flops" not in entry:
        return
    peak, bw = ceilings["fma_peak_gflops"] * 1e9, ceilings["memory_gbps"] * 1e9
    if entry.get("dtype") == "float64":
        peak /= 2  # a vector FMA holds half as many float64 lanes as float32 ones
    entry["roof_us"] = max(entry["flops"] / peak, entry["bytes"] / bw) * 1e6
    for r in entry["results"].values():
        seconds = r["median_us"] * 1e-6
        r["fma_fraction"] = entry["flops"] / seconds / peak
        r["memory_fraction"] = entry["bytes"] / seconds / bw


# --------------------------------------------------------------------------------------------
# What auto picks.


def auto_plan(x, w) -> tuple[str, str]:
    """(algorithm, reason) that ``conv(x, w, padding="VALID")`` runs."""
    p = jaxconv.plan(x.shape, w.shape, padding="VALID", dtype=x.dtype)
    return p.algorithm, p.reason


# --------------------------------------------------------------------------------------------
# One call of each implementation, synchronised. Each builder returns (call, result) where
# call() runs once and blocks, and result() gives numpy outputs in NHWC/HWIO for the check.


def _lax_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DN)


def _jaxconv_conv(x, w):
    return jaxconv.conv(x, w, padding="VALID", algorithm="auto")


def _jit(fn, args, tuned: bool):
    """``jax.jit(fn)`` compiled for ``args``: with XLA's default flags, or (``tuned``) with
    the fastest ones found for convolutions, ``jaxconv.compiler_options()`` (YNNPACK's
    convolutions off, its reductions and dots kept)."""
    lowered = jax.jit(fn).lower(*args)
    return lowered.compile(jaxconv.compiler_options() if tuned else None)


def _jax_builder(conv_fn, tuned=False):
    def build(pass_, x, w, ct, mods):
        return _jax_calls(conv_fn, (x, w), ct, pass_, tuned)

    return build


def _jax_calls(fn, args, ct, pass_, tuned=False):
    """(call, result) for ``fn(*args)`` (fwd) or the gradient of ``<fn(*args), ct>`` with
    respect to every argument (grad), jitted."""
    if pass_ == "fwd":
        f = _jit(fn, args, tuned)
        return (lambda: jax.block_until_ready(f(*args))), (lambda: np.asarray(f(*args)))

    def loss(*a):
        return jnp.sum(fn(*a) * ct)

    g = _jit(jax.grad(loss, argnums=tuple(range(len(args)))), args, tuned)
    return (lambda: jax.block_until_ready(g(*args))), (
        lambda: tuple(np.asarray(a) for a in g(*args))
    )


def _c_copy(a, axes) -> np.ndarray:
    """A writable, C-contiguous numpy copy of ``a`` transposed (torch's default memory format)."""
    return np.array(np.transpose(np.asarray(a), axes), order="C")


def _torch_build(pass_, x, w, ct, mods):
    torch = mods["torch"]
    F = torch.nn.functional
    xt = torch.from_numpy(_c_copy(x, (0, 3, 1, 2)))  # NCHW
    wt = torch.from_numpy(_c_copy(w, (3, 2, 0, 1)))  # OIHW
    if pass_ == "fwd":

        def call():
            with torch.no_grad():
                return F.conv2d(xt, wt)

        return call, lambda: call().numpy().transpose(0, 2, 3, 1)
    ctt = torch.from_numpy(_c_copy(ct, (0, 3, 1, 2)))
    xr, wr = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)

    def call():
        xr.grad = wr.grad = None
        F.conv2d(xr, wr).backward(ctt)
        return xr.grad, wr.grad

    def result():
        dx, dw = call()
        return dx.numpy().transpose(0, 2, 3, 1), dw.numpy().transpose(2, 3, 1, 0)

    return call, result


def _flax_build(pass_, x, w, ct, mods):
    nnx = mods["flax"]
    kh, kw, cin, cout = w.shape
    model = nnx.Conv(cin, cout, (kh, kw), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
    model.kernel[...] = w
    if pass_ == "fwd":
        f = nnx.jit(lambda m, x: m(x))
        return (lambda: jax.block_until_ready(f(model, x))), (lambda: np.asarray(f(model, x)))

    @nnx.jit
    def g(m, x):
        return nnx.grad(lambda m, x: jnp.sum(m(x) * ct), argnums=(0, 1))(m, x)

    def result():
        gm, dx = g(model, x)
        (dw,) = jax.tree.leaves(gm)
        return np.asarray(dx), np.asarray(dw)

    return (lambda: jax.block_until_ready(g(model, x))), result


def _equinox_build(pass_, x, w, ct, mods):
    eqx = mods["equinox"]
    kh, kw, cin, cout = w.shape
    model = eqx.nn.Conv2d(cin, cout, (kh, kw), use_bias=False, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: m.weight, model, jnp.transpose(w, (3, 2, 0, 1)))
    xc = jnp.transpose(x, (0, 3, 1, 2))  # equinox layers are channels-first, per example
    if pass_ == "fwd":
        f = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
        return (lambda: jax.block_until_ready(f(model, xc))), (
            lambda: np.asarray(f(model, xc)).transpose(0, 2, 3, 1)
        )
    ctc = jnp.transpose(ct, (0, 3, 1, 2))

    @eqx.filter_jit
    def g(m, x):
        return eqx.filter_grad(lambda mx: jnp.sum(jax.vmap(mx[0])(mx[1]) * ctc))((m, x))

    def result():
        gm, dx = g(model, xc)
        return np.asarray(dx).transpose(0, 2, 3, 1), np.asarray(gm.weight).transpose(2, 3, 1, 0)

    return (lambda: jax.block_until_ready(g(model, xc))), result


BUILDERS: dict[str, Callable] = {
    "jaxconv": _jax_builder(_jaxconv_conv),
    "lax": _jax_builder(_lax_conv),
    "lax_tuned": _jax_builder(_lax_conv, tuned=True),
    "torch": _torch_build,
    "flax": _flax_build,
    "equinox": _equinox_build,
}


def _rel_err(got, ref) -> float:
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    errs = []
    for a, b in zip(got, ref, strict=True):
        if a.shape != b.shape:
            return math.inf
        scale = max(float(np.max(np.abs(b))), 1e-30)
        errs.append(float(np.max(np.abs(a.astype(np.float64) - b))) / scale)
    return max(errs)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def make_inputs(wl: Workload, seed: int = 0):
    kx, kw, kc = jax.random.split(jax.random.key(seed), 3)
    n, h, w_, c = wl.x_shape
    kh, kwid = wl.kernel
    x = jax.random.normal(kx, wl.x_shape, jnp.float32)
    if wl.name == "G":
        w = jnp.asarray(_gaussian(kh, kh / 6)[:, :, None, None])
    else:
        w = jax.random.normal(kw, (kh, kwid, c, wl.out_channels), jnp.float32)
        w = w / math.sqrt(kh * kwid * c)
    ct = jax.random.normal(kc, (n, h - kh + 1, w_ - kwid + 1, wl.out_channels), jnp.float32)
    return x, w, ct


# --------------------------------------------------------------------------------------------
# Timing.


class Contention:
    """How much of the machine other processes used since construction (Linux /proc/stat).

    ``others()`` is the CPU time every other process took, as a fraction of all cores over the
    elapsed wall time: 0 on an idle machine, 0.5 when another process kept one of two cores
    busy. Timings taken while it is high are inflated and noisy. None where /proc is absent.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as f:
                jiffies = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system

    def others(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, other) / (wall * (os.cpu_count() or 1)) if wall > 0 else None


def _sample(call, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        call()
    return (time.perf_counter() - t0) / k


def time_impls(calls: dict[str, Callable], first: dict[str, float], s: Settings) -> dict[str, dict]:
    """Interleaved timed rounds of already compiled calls; per-call statistics in us.

    ``first`` holds each call's first (compiling) time: above a second it stands in for the
    per-call estimate, since compilation is then small next to the call itself.
    """
    out: dict[str, dict] = {}
    est = {}
    for name, call in calls.items():
        if first[name] > 1.0:
            est[name] = first[name]
        else:
            est[name] = _sample(call, 1)
            if est[name] < 0.1:  # a second look is cheap for fast calls, and steadier
                est[name] = min(est[name], _sample(call, 1))
        out[name] = {}
    inner = {n: max(1, min(2000, int(s.sample_s / max(t, 1e-7)))) for n, t in est.items()}
    per_round = sum(inner[n] * est[n] + s.pause_s for n in calls)
    rounds = max(s.min_rounds, min(s.max_rounds, int(s.budget_s / max(per_round, 1e-9))))
    samples: dict[str, list[float]] = {n: [] for n in calls}
    names = list(calls)
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            # Rotate the order so no implementation always runs right after the same other one.
            for name in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(s.pause_s)
                samples[name].append(_sample(calls[name], inner[name]))
    finally:
        gc.enable()
    for name in calls:
        v = samples[name]
        out[name].update(
            median_us=statistics.median(v) * 1e6,
            min_us=min(v) * 1e6,
            max_us=max(v) * 1e6,
            rounds=len(v),
            inner=inner[name],
        )
    return out


def _time_and_compare(entry: dict, calls: dict, results: dict, s: Settings) -> dict:
    """Fills ``entry``: each call's first (compiling) run gives its output, then the timed
    interleaved rounds, each output's error against lax's and the ratio to the best peer."""
    outputs, first = {}, {}
    for name in list(calls):
        try:
            t0 = time.perf_counter()
            outputs[name] = results[name]()
            first[name] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            entry["errors"][name] = f"{type(e).__name__}: {e}"
            calls.pop(name)
    contention = Contention()
    entry["results"] = time_impls(calls, first, s)
    entry["others_cpu"] = contention.others()
    ref = outputs.get("lax")
    for name, r in entry["results"].items():
        r["first_call_s"] = first[name]
        if ref is not None:
            r["rel_err"] = _rel_err(outputs[name], ref)
    del outputs, ref  # free the outputs before the next workload's arrays
    peers = {n: r["median_us"] for n, r in entry["results"].items() if n in PEERS}
    if peers:
        best = min(peers, key=peers.get)
        entry["best_peer"], entry["best_peer_us"] = best, peers[best]
        if "jaxconv" in entry["results"]:
            entry["ratio"] = entry["results"]["jaxconv"]["median_us"] / peers[best]
    return entry


def bench_workload(wl: Workload, pass_: str, impls, mods, s: Settings) -> dict:
    x, w, ct = make_inputs(wl)
    algo, reason = auto_plan(x, w)
    entry = {
        "workload": wl.name,
        "pass": pass_,
        "what": wl.what,
        "x_shape": list(wl.x_shape),
        "w_shape": [*wl.kernel, wl.x_shape[3], wl.out_channels],
        "auto_algorithm": algo,
        "auto_reason": reason,
        "results": {},
        "errors": {},
    }
    entry["dtype"] = "float32"
    entry["flops"], entry["bytes"] = row_work(pass_, int(np.prod(ct.shape)) * wl.kernel[0]
                                              * wl.kernel[1] * wl.x_shape[3], (x, w), ct)
    calls, results = {}, {}
    for name in impls:
        try:
            calls[name], results[name] = BUILDERS[name](pass_, x, w, ct, mods)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            entry["errors"][name] = f"{type(e).__name__}: {e}"
    # The first call of each compiles (its time is kept) and gives the output to check.
    return _time_and_compare(entry, calls, results, s)


# --------------------------------------------------------------------------------------------
# Workloads H-L (issue 10): depthwise, transposed convs, scipy-style filtering, float64. Each
# builds its inputs and the same function for jaxconv, raw lax and torch.


class Op(NamedTuple):
    """One op workload: ``args`` (numpy), the same function for jaxconv, raw lax and torch,
    and the layout changes between jaxconv's arrays and torch's."""

    args: tuple
    jaxconv: Callable
    lax: Callable
    torch: Callable  # torch(F, *torch_args)
    to_torch: tuple[Callable, ...]  # per argument: numpy array -> torch's layout
    from_torch: tuple[Callable, ...]  # per argument: its gradient in torch's layout -> ours
    out_to_torch: Callable
    out_from_torch: Callable
    plan: tuple[str, str]


def _perm(p):
    return lambda a: _c_copy(a, p)


def _inverse(p):
    return _perm(tuple(int(i) for i in np.argsort(p)))


_NCHW, _OIHW = (0, 3, 1, 2), (3, 2, 0, 1)
_NCW, _OIW = (0, 2, 1), (2, 1, 0)


def _channels_first_op(args, jaxconv_fn, lax_fn, torch_fn, plan, x_perm=_NCHW, w_perm=_OIHW):
    return Op(args, jaxconv_fn, lax_fn, torch_fn, (_perm(x_perm), _perm(w_perm)),
              (_inverse(x_perm), _inverse(w_perm)), _perm(x_perm), _inverse(x_perm),
              tuple(plan))


def _op_h():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 64, 64)).astype(np.float32)
    w = (rng.standard_normal((3, 3, 1, 64)) / 3).astype(np.float32)
    return _channels_first_op(
        (x, w),
        lambda x, w: jaxconv.conv(x, w, padding="SAME", groups=64),
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                              feature_group_count=64),
        lambda F, x, w: F.conv2d(x, w, padding=1, groups=64),
        jaxconv.plan(x.shape, w.shape, padding="SAME", groups=64),
    )


def _transpose_op(y_shape, k, c_in, stride, pad, nd):
    """conv_transpose of ``y`` for a forward kernel ``k^nd, c_in -> C_out`` with torch-style
    int padding; raw lax: ``lax.conv_transpose`` with the equivalent explicit padding."""
    rng = np.random.default_rng(0)
    y = rng.standard_normal(y_shape).astype(np.float32)
    w = (rng.standard_normal((k,) * nd + (c_in, y_shape[-1])) / k).astype(np.float32)
    spec = ("NWC", "WIO", "NWC") if nd == 1 else DN
    torch_name = "conv_transpose1d" if nd == 1 else "conv_transpose2d"
    # what auto plans: the phase conv of y (jaxconv.lowering.transpose)
    j = -(-k // stride)
    plan = jaxconv.plan(y_shape, (j,) * nd + (y_shape[-1], stride**nd * c_in),
                        padding=[(j - 1, j - 1)] * nd)
    return _channels_first_op(
        (y, w),
        lambda y, w: jaxconv.conv_transpose(y, w, stride=stride, padding=pad),
        lambda y, w: lax.conv_transpose(y, w, (stride,) * nd, [(k - 1 - pad,) * 2] * nd,
                                        dimension_numbers=spec, transpose_kernel=True),
        lambda F, y, w: getattr(F, torch_name)(y, w, stride=stride, padding=pad),
        (f"{plan.algorithm} (the phase conv)", plan.reason),
        *((_NCW, _OIW) if nd == 1 else (_NCHW, _OIHW)),
    )


def _filter_op(batch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512) if batch is None else (batch, 512, 512)).astype(
        np.float32)
    k = rng.standard_normal((3, 3)).astype(np.float32)

    def corr(a, k):
        return jaxconv.correlate2d(a, k, mode="same")

    def lax_corr(a, k):  # the same correlation as one lax conv over the stack of images
        a4 = a.reshape(-1, 512, 512, 1)
        out = lax.conv_general_dilated(a4, k[:, :, None, None], (1, 1), "SAME",
                                       dimension_numbers=DN)
        return out.reshape(a.shape)

    to_nchw = lambda v: np.array(np.reshape(v, (-1, 1, 512, 512)))  # noqa: E731
    back = lambda v: np.asarray(v).reshape(a.shape)  # noqa: E731
    plan = jaxconv.plan((1, 512, 512, 1), (3, 3, 1, 1), padding="SAME")
    return Op(
        (a, k),
        corr if batch is None else jax.vmap(corr, in_axes=(0, None)),
        lax_corr,
        lambda F, a, k: F.conv2d(a, k, padding=1),
        (to_nchw, lambda v: np.array(v[None, None])),
        (back, lambda v: np.asarray(v)[0, 0]),
        to_nchw,
        back,
        tuple(plan),
    )


def _op_l(name):
    """Workload ``name`` (A-F) in float64 (needs jax_enable_x64)."""
    wl = WORKLOADS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(wl.x_shape)
    w = rng.standard_normal((*wl.kernel, wl.x_shape[3], wl.out_channels)) / math.sqrt(
        wl.kernel[0] * wl.kernel[1] * wl.x_shape[3])
    return _channels_first_op(
        (x, w), lambda x, w: jaxconv.conv(x, w), _lax_conv, lambda F, x, w: F.conv2d(x, w),
        jaxconv.plan(x.shape, w.shape, dtype=np.float64),
    )


OPS: dict[str, tuple[str, Callable]] = {
    "H": ("depthwise 3x3, 32x64x64x64, groups=64, SAME", _op_h),
    "I": ("conv_transpose 2-D, 16x32x32x64 -> 16x64x64x32, 4x4, stride 2, padding 1",
          lambda: _transpose_op((16, 32, 32, 64), 4, 32, 2, 1, 2)),
    "J": ("conv_transpose 1-D, 8x1024x64 -> 8x8192x64, kernel 16, stride 8, padding 4",
          lambda: _transpose_op((8, 1024, 64), 16, 64, 8, 4, 1)),
    "K": ("correlate2d 512x512, 3x3, mode 'same'", lambda: _filter_op(None)),
    "K8": ("vmap(correlate2d) over 8 images 512x512, 3x3 'same'", lambda: _filter_op(8)),
    **{f"L{n}": (f"float64 (x64): workload {n}", lambda n=n: _op_l(n)) for n in "ABCDEF"},
}


def _torch_calls(op: Op, ct, pass_, mods):
    torch = mods["torch"]
    F = torch.nn.functional
    ts = [torch.from_numpy(f(a)) for f, a in zip(op.to_torch, op.args, strict=True)]
    if pass_ == "fwd":

        def call():
            with torch.no_grad():
                return op.torch(F, *ts)

        return call, lambda: op.out_from_torch(call().numpy())
    ctt = torch.from_numpy(op.out_to_torch(ct))
    req = [t.clone().requires_grad_(True) for t in ts]

    def call():
        for t in req:
            t.grad = None
        op.torch(F, *req).backward(ctt)
        return tuple(t.grad for t in req)

    def result():
        return tuple(f(g.numpy()) for f, g in zip(op.from_torch, call(), strict=True))

    return call, result


def _op_macs(name: str, op: Op, out) -> int:
    """Multiply-adds of one op call: a transposed conv's are its input's elements times the
    kernel's taps and output channels (what no multiply by an inserted zero adds to); a
    conv's its output's elements times taps times input channels per group."""
    w = op.args[1]
    if w.ndim == 2:  # correlate2d's single-channel kernel
        return int(np.prod(out.shape)) * w.size
    per = int(np.prod(w.shape[:-2])) * w.shape[-2]
    return int(np.prod(op.args[0].shape if name in ("I", "J") else out.shape)) * per


def bench_op(name: str, pass_: str, impls, mods, s: Settings) -> dict:
    what, make = OPS[name]
    op = make()
    args = tuple(jnp.asarray(a) for a in op.args)
    out = jax.eval_shape(op.jaxconv, *args)
    ct = np.asarray(jax.random.normal(jax.random.key(1), out.shape, out.dtype))
    entry: dict[str, Any] = {
        "workload": name, "pass": pass_, "what": what, "auto_algorithm": op.plan[0],
        "auto_reason": op.plan[1], "results": {}, "errors": {},
    }
    entry["flops"], entry["bytes"] = row_work(pass_, _op_macs(name, op, out), args, out)
    entry["dtype"] = str(args[0].dtype)
    calls, results = {}, {}
    fns = {"jaxconv": (op.jaxconv, False), "lax": (op.lax, False), "lax_tuned": (op.lax, True)}
    for impl in impls:
        try:
            if impl in fns:
                fn, tuned = fns[impl]
                calls[impl], results[impl] = _jax_calls(fn, args, jnp.asarray(ct), pass_, tuned)
            elif impl == "torch":
                calls[impl], results[impl] = _torch_calls(op, ct, pass_, mods)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            entry["errors"][impl] = f"{type(e).__name__}: {e}"
    return _time_and_compare(entry, calls, results, s)


# --------------------------------------------------------------------------------------------
# Task A recovery training: 64 images 16x16, cross teacher, Adam 1e-2, MSE.


def train_problem(seed: int = 0):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (64, 16, 16, 1), jnp.float32)
    teacher = jnp.asarray(CROSS[:, :, None, None])
    y = _lax_conv(x, teacher)
    w0 = 0.1 * jax.random.normal(kw, (3, 3, 1, 1), jnp.float32)
    return x, y, w0, teacher


def _train_jaxconv(x, y, w0, steps, mods):
    def loss_fn(params, batch):
        xb, yb = batch
        return jnp.mean((jaxconv.conv(xb, params["w"]) - yb) ** 2)

    t0 = time.perf_counter()
    res = jaxconv.fit(
        loss_fn,
        {"w": w0},
        optax.adam(1e-2),
        (x, y),
        steps=steps,
        key=jax.random.key(0),
        progress=False,
    )
    w = jax.block_until_ready(res.params["w"])
    total = time.perf_counter() - t0
    return np.asarray(w), {
        "total_s": total,
        "compile_s": res.compile_s,
        "per_step_us": res.wall_s / steps * 1e6,
    }


def _loop_timings(t0, t1, t2, steps):
    """t0 start, t1 after the first (compiling) step, t2 after the last."""
    return {"total_s": t2 - t0, "compile_s": t1 - t0, "per_step_us": (t2 - t1) / (steps - 1) * 1e6}


def _train_lax(x, y, w0, steps, mods):
    opt = optax.adam(1e-2)

    def loss_fn(w, x, y):
        return jnp.mean((_lax_conv(x, w) - y) ** 2)

    @jax.jit
    def step(w, state, x, y):
        loss, g = jax.value_and_grad(loss_fn)(w, x, y)
        updates, state = opt.update(g, state, w)
        return optax.apply_updates(w, updates), state, loss

    t0 = time.perf_counter()
    w, state = w0, opt.init(w0)
    w, state, loss = jax.block_until_ready(step(w, state, x, y))
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        w, state, loss = step(w, state, x, y)
    jax.block_until_ready((w, loss))
    return np.asarray(w), _loop_timings(t0, t1, time.perf_counter(), steps)


def _train_flax(x, y, w0, steps, mods):
    nnx = mods["flax"]
    t0 = time.perf_counter()
    model = nnx.Conv(1, 1, (3, 3), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
    model.kernel[...] = w0
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    jax.block_until_ready(train_step(model, optimizer, x, y))
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        loss = train_step(model, optimizer, x, y)
    jax.block_until_ready((model.kernel[...], loss))
    return np.asarray(model.kernel[...]), _loop_timings(t0, t1, time.perf_counter(), steps)


def _train_equinox(x, y, w0, steps, mods):
    eqx = mods["equinox"]
    xc, yc = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(y, (0, 3, 1, 2))
    t0 = time.perf_counter()
    model = eqx.nn.Conv2d(1, 1, 3, use_bias=False, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: m.weight, model, jnp.transpose(w0, (3, 2, 0, 1)))
    opt = optax.adam(1e-2)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, x, y):
        def loss_fn(m):
            return jnp.mean((jax.vmap(m)(x) - y) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    model, state, loss = step(model, state, xc, yc)
    jax.block_until_ready(loss)
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        model, state, loss = step(model, state, xc, yc)
    jax.block_until_ready((model.weight, loss))
    w = np.asarray(model.weight).transpose(2, 3, 1, 0)
    return w, _loop_timings(t0, t1, time.perf_counter(), steps)


def _train_torch(x, y, w0, steps, mods):
    torch = mods["torch"]
    F = torch.nn.functional
    xt = torch.from_numpy(_c_copy(x, (0, 3, 1, 2)))
    yt = torch.from_numpy(_c_copy(y, (0, 3, 1, 2)))
    t0 = time.perf_counter()
    w = torch.tensor(np.asarray(w0).transpose(3, 2, 0, 1), requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((F.conv2d(xt, w) - yt) ** 2)
        loss.backward()
        opt.step()
        return loss

    step()
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        step()
    t2 = time.perf_counter()
    return w.detach().numpy().transpose(2, 3, 1, 0), _loop_timings(t0, t1, t2, steps)


TRAINERS = {
    "jaxconv": _train_jaxconv,
    "lax": _train_lax,
    "torch": _train_torch,
    "flax": _train_flax,
    "equinox": _train_equinox,
}


def bench_training(impls, mods, s: Settings) -> dict:
    x, y, w0, teacher = train_problem()
    contention = Contention()
    impls = [n for n in impls if n in TRAINERS]
    runs: dict[str, list[dict]] = {n: [] for n in impls}
    final: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    names = list(impls)
    first = 0 if s.train_warmup else 1
    for r in range(first, 1 + s.train_repeats):  # round 0 is the untimed warm-up
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in errors:
                continue
            spent = sum(t["total_s"] for t in runs[name])
            if len(runs[name]) >= 2 and spent > TRAIN_BUDGET_S:
                continue  # a loaded machine can make a loop take seconds a run; 2 runs will do
            time.sleep(10 * s.pause_s)
            gc.collect()
            try:
                w, t = TRAINERS[name](x, y, w0, s.train_steps, mods)
            except Exception as e:  # noqa: BLE001
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            if r:
                runs[name].append(t)
            final[name] = w
    out: dict[str, Any] = {
        "task": "A: 64 x 16x16x1 Gaussian-noise images, 3x3 cross teacher, Adam 1e-2, MSE",
        "steps": s.train_steps,
        "repeats": s.train_repeats,
        "warmup": s.train_warmup,
        "results": {},
        "errors": errors,
        "others_cpu": contention.others(),
    }
    for name, ts in runs.items():
        if not ts:
            continue
        w = final[name]
        loss = float(jnp.mean((_lax_conv(x, jnp.asarray(w)) - y) ** 2))
        out["results"][name] = {
            "runs": len(ts),
            "per_step_us": statistics.median(t["per_step_us"] for t in ts),
            "total_s": statistics.median(t["total_s"] for t in ts),
            "compile_s": statistics.median(t["compile_s"] for t in ts),
            "final_loss": loss,
            "max_abs_kernel_err": float(np.max(np.abs(w - np.asarray(teacher)))),
        }
    peers = {n: r for n, r in out["results"].items() if n in PEERS}
    if peers and "jaxconv" in out["results"]:
        mine = out["results"]["jaxconv"]
        for key in ("per_step_us", "total_s"):
            best = min(peers, key=lambda n: peers[n][key])
            out[f"best_peer_{key}"] = best
            out[f"ratio_{key}"] = mine[key] / peers[best][key]
    return out


# --------------------------------------------------------------------------------------------
# Report.


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def markdown(report: dict) -> str:
    jaxconv_row = lambda e: e["results"].get("jaxconv", {})  # noqa: E731
    best_row = lambda e: e["results"].get(e.get("best_peer"), {})  # noqa: E731
    lines = [
        "| workload | pass | jaxconv/best | best peer | jaxconv % FMA peak | jaxconv % memory "
        "roof | best peer % FMA peak | auto picked | jaxconv us | lax us | lax tuned us "
        "| torch us | flax us | equinox us | others' CPU |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["workloads"]:
        res = e["results"]
        cells = []
        for n in IMPLS:
            c = _fmt_us(res[n]["median_us"]) if n in res else "-"
            if n in res and res[n].get("rel_err", 0) > REL_TOL:
                c += f" (WRONG: rel err {res[n]['rel_err']:.1e})"
            cells.append(c)
        best = e.get("best_peer", "-")
        ratio = f"**{e['ratio']:.2f}**" if "ratio" in e else "-"
        roof = [_fmt_pct(jaxconv_row(e).get("fma_fraction")),
                _fmt_pct(jaxconv_row(e).get("memory_fraction")),
                _fmt_pct(best_row(e).get("fma_fraction"))]
        lines.append(
            f"| {e['workload']} | {e['pass']} | {ratio} | {best} | " + " | ".join(roof)
            + f" | {e['auto_algorithm']} | " + " | ".join(cells)
            + f" | {_fmt_pct(e.get('others_cpu'))} |"
        )
    c = report.get("ceilings")
    if c:
        lines += [
            "",
            f"Roofs measured in this run: FMA peak {c['fma_peak_gflops']:.0f} GFLOP/s float32 "
            f"(the fastest of " + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in
                                            c["fma_candidates_gflops"].items())
            + f"; half of it for float64 rows), memory {c['memory_gbps']:.1f} GB/s ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in
                        c["memory_candidates_gbps"].items())
            + "). % FMA peak: the row's multiply-adds x 2 per second over the peak; % memory "
            "roof: the bytes it must move at least (inputs read, results written once) per "
            "second over the bandwidth.",
        ]
    t = report.get("training")
    if t and t["results"]:
        lines += [
            "",
            f"Recovery training, task A ({t['steps']} Adam steps; medians over timed runs"
            + (" after one warm-up run" if t["warmup"] else "")
            + "; total = fresh compile + all steps; other processes used "
            + f"{_fmt_pct(t.get('others_cpu'))} of the CPU meanwhile):",
            "",
            "| implementation | us/step | total ms (incl. compile) | compile ms | runs | final MSE "
            "| max abs kernel err |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n in IMPLS:
            if n not in t["results"]:
                continue
            r = t["results"][n]
            lines.append(
                f"| {n} | {_fmt_us(r['per_step_us'])} | {r['total_s'] * 1e3:,.0f} "
                f"| {r['compile_s'] * 1e3:,.0f} | {r['runs']} | {r['final_loss']:.2e} "
                f"| {r['max_abs_kernel_err']:.2e} |"
            )
        if "ratio_per_step_us" in t:
            lines += [
                "",
                f"jaxconv / best peer: per step {t['ratio_per_step_us']:.3f} "
                f"(best: {t['best_peer_per_step_us']}), total {t['ratio_total_s']:.3f} "
                f"(best: {t['best_peer_total_s']}).",
            ]
    return "\n".join(lines)


FIGURE_STYLE = {  # implementation -> (marker, colour)
    "jaxconv": ("o", "tab:red"), "lax": ("s", "tab:gray"), "lax_tuned": ("D", "tab:olive"),
    "torch": ("^", "tab:blue"), "flax": ("v", "tab:purple"), "equinox": ("<", "tab:green"),
}


def figure(report: dict, path: str) -> bool:
    """Draws the run: per row, each implementation's time relative to the best peer (log
    scale, < 1: faster than every peer) and the fraction of the FMA peak jaxconv and the best
    peer reach. Writes ``path``; False (and a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"note: no figure ({e}); pip install -e '.[viz]'")
        return False
    rows = [e for e in report["workloads"] if "best_peer_us" in e]
    if not rows:
        return False
    labels = [f"{e['workload']} {e['pass']}" for e in rows]
    ys = np.arange(len(rows))[::-1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.6), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 2]})
    for name, (marker, colour) in FIGURE_STYLE.items():
        pts = [(e["results"][name]["median_us"] / e["best_peer_us"], y)
               for e, y in zip(rows, ys, strict=True) if name in e["results"]]
        if pts:
            big = name == "jaxconv"
            ax.scatter(*zip(*pts, strict=True), marker=marker, color=colour, label=name,
                       s=42 if big else 18, zorder=3 if big else 2, alpha=1 if big else 0.7)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("time / best peer's time (log; < 1: jaxconv faster than every peer)")
    ax.set_yticks(ys, labels)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    h = 0.38
    jx = [100 * e["results"].get("jaxconv", {}).get("fma_fraction", 0) for e in rows]
    bp = [100 * e["results"][e["best_peer"]].get("fma_fraction", 0) for e in rows]
    ax2.barh(ys + h / 2, jx, h, color="tab:red", label="jaxconv")
    ax2.barh(ys - h / 2, bp, h, color="tab:blue", alpha=0.6, label="best peer")
    ax2.set_xlabel("% of the measured FMA peak")
    ax2.grid(axis="x", alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    m, c = report["machine"], report.get("ceilings") or {}
    load = report["load_before"]["loadavg"][0]
    fig.suptitle(
        f"{m['cpu']} ({m.get('isa', '')}), {m['usable_cores']} cores, load {load:.1f}; "
        f"FMA peak {c.get('fma_peak_gflops', 0):.0f} GFLOP/s, "
        f"memory {c.get('memory_gbps', 0):.1f} GB/s; jax {m['versions']['jax']}, "
        f"{m['date'][:10]}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="few repeats and workloads A,F only (a smoke run, < 60 s)",
    )
    p.add_argument(
        "--workloads",
        default=None,
        help="comma-separated subset of A-G, H, I, J, K, K8, LA-LF (default: all; --quick: A,F)",
    )
    p.add_argument("--passes", default="fwd,grad", help="fwd, grad or both (default)")
    p.add_argument("--no-training", action="store_true", help="skip the recovery training")
    p.add_argument("--no-g-grad", action="store_true", help="time only the forward pass of G")
    p.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}"
    )
    p.add_argument(
        "--out",
        default=os.path.join("benchmarks", "results.json"),
        help="where to write the JSON report",
    )
    p.add_argument(
        "--figure",
        default=os.path.join("docs", "bench_figure.png"),
        help="where to draw the figure ('' for none)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    s = QUICK if args.quick else FULL
    names = args.workloads or ("A,F" if args.quick else ",".join([*WORKLOADS, *OPS]))
    names = [n.strip().upper() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS and n not in OPS]
    if unknown:
        print(f"bench: unknown workload(s) {unknown}; expected some of "
              f"{[*WORKLOADS, *OPS]}.")
        return 2
    # float64 workloads last: jax_enable_x64 is switched on for them and stays on
    names.sort(key=lambda n: n.startswith("L"))
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    if not set(passes) <= {"fwd", "grad"}:
        print(f"bench: --passes must be fwd, grad or both, got {args.passes!r}.")
        return 2
    wanted = [n.strip() for n in args.impls.split(",") if n.strip()]
    if not set(wanted) <= set(IMPLS):
        print(f"bench: --impls must name some of {IMPLS}, got {args.impls!r}.")
        return 2

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    mods, skipped = load_peers()
    for name, why in skipped.items():
        print(f"note: skipping {name}: {why}")
    impls = [n for n in IMPLS
             if n in wanted and (n in ("jaxconv", "lax", "lax_tuned") or n in mods)]
    report: dict[str, Any] = {
        "machine": machine_info(mods),
        "settings": {**s._asdict(), "quick": args.quick, "impls": impls},
        "skipped": skipped,
        "load_before": {"loadavg": load_before, "uptime": _uptime()},
        "workloads": [],
    }
    report["ceilings"] = measure_ceilings(args.quick)
    m, c = report["machine"], report["ceilings"]
    libs = ", ".join(
        f"{n} {m['versions'][n] if n in mods or n == 'jax' else '(skipped)'}"
        for n in ("jax", "torch", "flax", "equinox")
    )
    print(f"# {m['cpu']} ({m['isa']}), {m['usable_cores']} cores; {libs}; "
          f"load {load_before[0]:.2f}")
    print(f"# roofs: FMA peak {c['fma_peak_gflops']:.0f} GFLOP/s ({c['fma_peak_from']}; "
          + ", ".join(f"{k} {v:.0f}" for k, v in c["fma_candidates_gflops"].items())
          + f"), memory {c['memory_gbps']:.1f} GB/s ({c['memory_from']}; "
          + ", ".join(f"{k} {v:.1f}" for k, v in c["memory_candidates_gbps"].items()) + ")")
    if load_before[0] > 0.5 * (m["usable_cores"] or 1):
        print(
            f"note: load average {load_before[0]:.2f} on {m['usable_cores']} cores: other "
            "processes compete for the CPU, so timings will be slow and noisy (torch's "
            "spinning OpenMP threads suffer most)."
        )
    for wname in names:
        if wname.startswith("L"):
            jax.config.update("jax_enable_x64", True)
        for pass_ in passes:
            if pass_ == "grad" and wname == "G" and args.no_g_grad:
                continue
            t0 = time.perf_counter()
            if wname in OPS:
                e = bench_op(wname, pass_, impls, mods, s)
            else:
                e = bench_workload(WORKLOADS[wname], pass_, impls, mods, s)
            report["workloads"].append(e)
            r = e["results"]
            summary = ", ".join(f"{n} {_fmt_us(r[n]['median_us'])}" for n in r)
            print(
                f"{wname} {pass_} ({time.perf_counter() - t0:.1f} s): {summary} us"
                f"  [auto: {e['auto_algorithm']}; others' CPU {_fmt_pct(e['others_cpu'])}]",
                flush=True,
            )
            for n, err in e["errors"].items():
                print(f"  error in {n}: {err}")
            for n, rr in r.items():
                if rr.get("rel_err", 0) > REL_TOL:
                    print(f"  WARNING: {n} differs from lax by rel err {rr['rel_err']:.2e}")
    if not args.no_training:
        t0 = time.perf_counter()
        report["training"] = bench_training(impls, mods, s)
        tr = report["training"]
        summary = ", ".join(f"{n} {_fmt_us(v['per_step_us'])}" for n, v in tr["results"].items())
        print(f"training ({time.perf_counter() - t0:.1f} s): {summary} us/step", flush=True)
        for n, err in tr["errors"].items():
            print(f"  error in {n}: {err}")
    # The roofs again at the end: on a shared machine the best the machine did in this run
    # (each figure the faster of the two measurements) is the roof.
    later = measure_ceilings(args.quick)
    c = report["ceilings"]
    for key in ("fma_candidates_gflops", "memory_candidates_gbps"):
        c[key] = {k: max(v, later[key][k]) for k, v in c[key].items()}
    c["fma_peak_gflops"] = max(c["fma_candidates_gflops"].values())
    c["fma_peak_from"] = max(c["fma_candidates_gflops"], key=c["fma_candidates_gflops"].get)
    c["memory_gbps"] = max(c["memory_candidates_gbps"].values())
    c["memory_from"] = max(c["memory_candidates_gbps"], key=c["memory_candidates_gbps"].get)
    for e in report["workloads"]:
        roofline(e, c)
    report["load_after"] = {"loadavg": os.getloadavg(), "uptime": _uptime()}
    report["elapsed_s"] = time.perf_counter() - t_start
    table = markdown(report)
    report["markdown"] = table
    print()
    print(table)
    print()
    la = report["load_after"]["loadavg"]
    print(
        f"load average before {load_before[0]:.2f}, after {la[0]:.2f} "
        f"(1 min); {report['elapsed_s']:.0f} s in all"
    )
    if args.out:
        write_report(report, args.out)
    if args.figure:
        figure(report, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
