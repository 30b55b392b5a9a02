"""flax.nnx.Conv vs jaxconv.interop.flax_nnx.Conv: one Adam training step of the same nnx
model (equal params), median of interleaved repeats after warm-up.

    .venv/bin/python benchmarks/interop_bench.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxconv.interop import flax_nnx

WORKLOADS = {  # name: (layers as (in, out, kernel), input shape)
    "cross_1ch_3x3": ([(1, 1, 3)], (64, 16, 16, 1)),
    "two_layer_8ch": ([(1, 8, 3), (8, 1, 3)], (64, 16, 16, 1)),
    "cnn_16_32": ([(16, 32, 3), (32, 32, 3)], (32, 32, 32, 16)),
}


class Model(nnx.Module):
    def __init__(self, conv, layers, rngs):
        self.convs = nnx.List([conv(i, o, (k, k), padding="SAME", rngs=rngs)
                               for i, o, k in layers])

    def __call__(self, x):
        for c in self.convs:
            x = jax.nn.relu(c(x))
        return x


def make_step(conv, layers, shape):
    model = Model(conv, layers, nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), shape)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        return loss

    return lambda: step(model, opt).block_until_ready()


def main(repeats=7, inner=20):
    print(f"{'workload':16s} {'nnx.Conv us':>12s} {'flax_nnx.Conv us':>17s} {'ratio':>6s}")
    for name, (layers, shape) in WORKLOADS.items():
        fns = {"flax": make_step(nnx.Conv, layers, shape),
               "jaxconv": make_step(flax_nnx.Conv, layers, shape)}
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
        print(f"{name:16s} {a:12.0f} {b:17.0f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
