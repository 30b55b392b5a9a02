"""flax.nnx.Conv / ConvTranspose vs jaxconv.interop.flax_nnx.Conv / ConvTranspose: one Adam
training step of the same nnx model (equal params), median of interleaved repeats after warm-up.

    .venv/bin/python benchmarks/interop_bench.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxconv.interop import flax_nnx

WORKLOADS = {  # name: (layers as (in, out, kernel[, transposed stride]), input shape)
    "cross_1ch_3x3": ([(1, 1, 3)], (64, 16, 16, 1)),
    "two_layer_8ch": ([(1, 8, 3), (8, 1, 3)], (64, 16, 16, 1)),
    "cnn_16_32": ([(16, 32, 3), (32, 32, 3)], (32, 32, 32, 16)),
    # decoders: transposed convs, stride 2, 'SAME' (output = input x 2)
    "up_4x4_s2_32_16": ([(32, 16, 4, 2)], (32, 16, 16, 32)),
    "up_2x2_s2_16_8_3x3": ([(16, 8, 2, 2), (8, 8, 3)], (32, 16, 16, 16)),
}
CLASSES = {"flax": (nnx.Conv, nnx.ConvTranspose),
           "jaxconv": (flax_nnx.Conv, flax_nnx.ConvTranspose)}


class Model(nnx.Module):
    def __init__(self, classes, layers, rngs):
        conv, transposed = classes
        self.convs = nnx.List([
            conv(*spec[:2], (spec[2],) * 2, padding="SAME", rngs=rngs) if len(spec) == 3 else
            transposed(*spec[:2], (spec[2],) * 2, strides=spec[3], padding="SAME", rngs=rngs)
            for spec in layers])

    def __call__(self, x):
        for c in self.convs:
            x = jax.nn.relu(c(x))
        return x


def make_step(classes, layers, shape):
    model = Model(classes, layers, nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), shape)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        return loss

    return lambda: step(model, opt).block_until_ready()


def main(repeats=7, inner=20):
    print(f"{'workload':20s} {'nnx us':>12s} {'flax_nnx us':>12s} {'nnx/drop-in':>11s}")
    for name, (layers, shape) in WORKLOADS.items():
        fns = {k: make_step(c, layers, shape) for k, c in CLASSES.items()}
        for f in fns.values():
            f(), f()  # compile and warm up
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():  # interleaved
                t = time.perf_counter()
                for _ in range(inner):
                    f()
                times[k].append((time.perf_counter() - t) / inner * 1e6)
        a, b = np.median(times["flax"]), np.median(times["jaxconv"])
        print(f"{name:20s} {a:12.0f} {b:12.0f} {a / b:11.2f}", flush=True)


if __name__ == "__main__":
    main()
