"""float32 precision of every lowering on an accelerator, against a float64 numpy oracle.

On recent NVIDIA GPUs XLA may run float32 convolutions and dots in TF32 (10-bit mantissa)
unless asked for ``precision="highest"``; this script measures what each lowering returns
with ``precision`` left at its default and with ``"highest"``, as the worst error relative
to the elementwise bound ``sum |x| |w|`` over each output's window (float32's own rounding
gives ~1e-7 of that bound; TF32's ~1e-3).

Run: ``python benchmarks/gpu_check.py [--out FILE.json]`` (any backend; the device is named).
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

import jaxconv
from jaxconv.lowering import algorithms

CASES = [  # (x shape, w shape): NHWC, HWIO
    ((8, 32, 32, 16), (3, 3, 16, 32)),
    ((4, 16, 16, 64), (3, 3, 64, 64)),
    ((2, 28, 28, 1), (5, 5, 1, 6)),
    ((2, 20, 20, 3), (7, 7, 3, 8)),
]


def oracle(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAME cross-correlation in float64, and the elementwise bound sum |x| |w|."""
    kh, kw = w.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    w64 = w.astype(np.float64)
    y = np.einsum("nhwcij,ijco->nhwo", win, w64)
    bound = np.einsum("nhwcij,ijco->nhwo", np.abs(win), np.abs(w64))
    return y, bound


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = jax.devices()[0]
    print(f"# {dev.platform} {getattr(dev, 'device_kind', '')}; jax {jax.__version__}",
          flush=True)
    rng = np.random.default_rng(0)
    rows = []
    for xs, ws in CASES:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        ref, bound = oracle(x, w)
        for alg in ["auto", *[a for a in algorithms() if a != "auto"]]:
            for precision in (None, "highest"):
                try:
                    y = np.asarray(jax.jit(lambda x, w, a=alg, p=precision: jaxconv.conv(
                        x, w, padding="SAME", algorithm=a, precision=p))(x, w), np.float64)
                except (ValueError, NotImplementedError) as e:  # a lowering that declines
                    rows.append({"x": xs, "w": ws, "algorithm": alg, "precision": precision,
                                 "declined": str(e)[:120]})
                    continue
                rel = float(np.max(np.abs(y - ref) / bound))
                rows.append({"x": xs, "w": ws, "algorithm": alg, "precision": precision,
                             "max_err_over_bound": rel})
                print(f"{xs} * {ws} {alg:10s} precision={precision!s:8s} "
                      f"max |y - exact| / sum|x||w| = {rel:.2e}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": f"{dev.platform} {getattr(dev, 'device_kind', '')}",
                       "jax": jax.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
