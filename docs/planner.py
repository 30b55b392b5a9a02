# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # How the planner chooses
#
# `jaxconv.conv(x, w, algorithm="auto")` (the default) computes the same function whichever
# way it runs, but it can run it several ways ("lowerings"): the raw
# `lax.conv_general_dilated` call (`"xla"`), and on CPU a few alternatives that are faster
# for some shapes and, like it, sum each output's products directly, so every output value
# keeps direct summation's error bound (exact zeros stay zero, a NaN reaches only the outputs
# whose window reads it). `"fft"` is not exact elementwise: `auto` never runs it, and the
# plan's reason says when asking for it by name would be faster, by how much, and its error
# model. `jaxconv.plan(x_shape, w_shape, ...)` takes the same arguments as
# `conv` (shapes instead of arrays), validates them the same way, and tells you which
# lowering `auto` runs and why. It looks at shapes, dtype and backend only, so it runs no
# convolution and costs nothing under `jit`.
#
# Each lowering declares in its own module what it declines and when it prefers a call
# (with the measured threshold beside it); the planner asks them in order and takes the
# first that prefers the call; `"xla"` prefers everything, so it is the fallback, and it is
# always the choice on GPU and TPU. The thresholds are measurements on a 2-core x86-64 CPU
# (`benchmarks/NOTES.md`), and they change as the lowerings do, so this page does not quote
# them: the outputs below are printed by the code of the build that made this page.

# %%
import jaxconv
from jaxconv import lowering

print("lowerings auto asks on CPU, in order:", [low.name for low in lowering.AUTO_ORDER])
print("run only when asked by name:", [low.name for low in lowering.BY_NAME_ONLY])
print("names conv(..., algorithm=...) takes:", jaxconv.lowering.algorithms())

# %% [markdown]
# ## The workloads of the benchmarks
#
# The shapes of `benchmarks/bench.py`'s workloads A-G (NHWC input, HWIO kernel), and what
# `auto` picks for each on CPU and on a GPU:

# %%
WORKLOADS = {
    "A: recovery task": ((64, 16, 16, 1), (3, 3, 1, 1)),
    "B: small filter bank": ((64, 16, 16, 1), (3, 3, 1, 8)),
    "C: CNN layer": ((32, 64, 64, 16), (3, 3, 16, 32)),
    "D: RGB stem": ((8, 128, 128, 3), (5, 5, 3, 16)),
    "E: wide CNN layer": ((32, 32, 32, 64), (3, 3, 64, 64)),
    "F: one 512x512 image": ((1, 512, 512, 1), (3, 3, 1, 1)),
    "G: 31x31 Gaussian blur": ((1, 1024, 1024, 1), (31, 31, 1, 1)),
}
for name, (x_shape, w_shape) in WORKLOADS.items():
    cpu = jaxconv.plan(x_shape, w_shape, backend="cpu")
    gpu = jaxconv.plan(x_shape, w_shape, backend="gpu")
    print(f"{name:<24} cpu: {cpu.algorithm:<10} gpu: {gpu.algorithm}")
    print(f"{'':<24} why: {cpu.reason}")

# %% [markdown]
# ## Kernel size, channels and groups change the plan
#
# The same 64x32x32 input with kernels from 3x3 to 15x15, one channel or sixteen, and a
# depthwise convolution (`groups` equal to the channels):

# %%
for label, (x_shape, w_shape, kwargs) in {
    "3x3, 1 -> 1": ((64, 32, 32, 1), (3, 3, 1, 1), {}),
    "7x7, 1 -> 1": ((64, 32, 32, 1), (7, 7, 1, 1), {}),
    "15x15, 1 -> 1": ((64, 32, 32, 1), (15, 15, 1, 1), {}),
    "3x3, 16 -> 16": ((64, 32, 32, 16), (3, 3, 16, 16), {}),
    "7x7, 16 -> 16": ((64, 32, 32, 16), (7, 7, 16, 16), {}),
    "3x3 depthwise, 16": ((64, 32, 32, 16), (3, 3, 1, 16), {"groups": 16}),
}.items():
    p = jaxconv.plan(x_shape, w_shape, **kwargs)
    print(f"{label:<18} -> {p.algorithm:<10} {p.reason}")

# %% [markdown]
# To force a lowering, pass `algorithm=` to `conv` (or to `nn.Conv`): every one of them is
# checked against `lax.conv_general_dilated` in the test suite, forward and gradients.

# %% [markdown]
# ## A differentiated conv is planned part by part
#
# Under `jax.grad`, `jax.vjp` or `jax.jvp` (and so inside `fit` and any training step), a conv
# runs up to three computations: its value, the gradient with respect to its input, and the
# gradient with respect to its kernel. A conv is linear in each, so they are separate
# convolutions, and the fastest lowering for one is often not the fastest for another: a
# first layer with one input channel is fastest forward as `shift_add`, but `shift_add`'s
# input gradient is many times slower than `im2col`'s there. The plan therefore names a
# lowering for each part (`plan.input_grad`, `plan.kernel_grad`); the gradient of a part is
# the derivative of its own lowering, so the result is the conv's exact derivative whichever
# runs. An operand that is not differentiated (a first layer's input is data) costs nothing:
# its gradient's plan is never traced.

# %%
for label, (x_shape, w_shape, kwargs) in {
    "first layer 3x3, 1 -> 32": ((64, 28, 28, 1), (3, 3, 1, 32), {}),
    "first layer 7x7, 3 -> 16, stride 2": ((16, 128, 128, 3), (7, 7, 3, 16), {"stride": 2}),
    "3-D 3x3x3, 2 -> 8": ((16, 17, 17, 17, 2), (3, 3, 3, 2, 8), {"padding": "SAME"}),
    "hidden 3x3, 16 -> 32": ((32, 64, 64, 16), (3, 3, 16, 32), {}),
}.items():
    p = jaxconv.plan(x_shape, w_shape, backend="cpu", **kwargs)
    print(f"{label}\n  value: {p.algorithm:<10} input gradient: {p.input_grad.algorithm:<10} "
          f"kernel gradient: {p.kernel_grad.algorithm}")

# %% [markdown]
# ## What the choice is expected to cost, in roofline terms
#
# Each part's plan also says what a roofline model expects of every exact lowering that can
# run it (`plan.expected`, fastest first): the part's flops, the bytes it moves (operands,
# result, and the lowering's own temporaries: im2col's patch matrix, rows' stacked rows, ...),
# and the fraction of the machine's FMA peak and memory bandwidth it would reach at an
# efficiency fitted to the planner's timings (`benchmarks/plan_model.py`). The model explains;
# the thresholds choose. Where the model ranks the chosen lowering below another, the reason
# says so: it agrees with the measured fastest less often than the thresholds do
# (`benchmarks/NOTES.md`).

# %%
p = jaxconv.plan((32, 64, 64, 16), (3, 3, 16, 32), backend="cpu")
for part, q in {"value": p, "input gradient": p.input_grad,
                "kernel gradient": p.kernel_grad}.items():
    print(f"{part}: {q.algorithm}")
    for e in q.expected:
        print(f"  {e.algorithm:<10} {e.compute_fraction:6.1%} of the FMA peak, "
              f"{e.memory_fraction:6.1%} of the memory roof, {e.relative_time:4.1f}x the time "
              f"({e.bound}-bound)")
print("\nwhy (the input gradient):", p.input_grad.reason)
