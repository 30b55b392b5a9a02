"""The records every lowering and the planner share: one conv call, one lowering, one plan."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import _compile
from jaxconv import _padding as padding_lib
from jaxconv._checks import Layout

# What a plan is for: the conv itself, or one of its two gradients. A conv is linear in each
# operand, so under differentiation the forward value and each needed gradient are separate
# computations, and the fastest lowering for one is often not the fastest for another
# (benchmarks/NOTES.md, issue 19 item 2): the planner chooses each by its own rule.
PARTS = ("forward", "input_grad", "kernel_grad")


class ConvArgs(NamedTuple):
    """One conv call, validated and normalised (explicit zero padding only): the static part
    that the planner reads and every lowering receives beside ``x`` and ``w``.

    ``part`` (one of ``PARTS``) is what the planner is choosing for: the forward call, or
    the input or kernel gradient of a differentiated call. Lowerings always receive
    ``"forward"`` (they compute the conv; its gradients are their JVPs').
    """

    layout: Layout
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    precision: lax.PrecisionLike
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    dtype: np.dtype
    part: str = "forward"

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.w_shape[a] for a in self.layout.kernel_spatial_axes)

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def in_channels(self) -> int:
        return self.x_shape[self.layout.channel_axis]

    @property
    def out_channels(self) -> int:
        return self.w_shape[self.layout.kernel_out_axis]

    @property
    def c_group(self) -> int:
        """Input channels each output value sums over."""
        return self.w_shape[self.layout.kernel_in_axis]

    @property
    def o_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def depthwise(self) -> bool:
        """One input channel per group (``groups == in_channels``): each output value reads
        one channel's window, so channels never contract."""
        return self.c_group == 1 and self.groups > 1

    @property
    def out_spatial(self) -> tuple[int, ...]:
        sizes = [self.x_shape[a] for a in self.layout.spatial_axes]
        k_eff = padding_lib.effective_kernel(self.kernel, self.dilation)
        return tuple(
            padding_lib.output_size(s, k, st, lo, hi)
            for s, k, st, (lo, hi) in zip(sizes, k_eff, self.stride, self.pads, strict=True)
        )

    @property
    def macs_per_value(self) -> int:
        """Multiply-adds behind one output value: ``taps * in_channels / groups``."""
        return self.taps * self.c_group

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-adds behind one output position, all output channels."""
        return self.macs_per_value * self.out_channels

    @property
    def macs(self) -> int:
        """Multiply-adds of the whole call (and of each of its gradients)."""
        return self.x_shape[0] * math.prod(self.out_spatial) * self.macs_per_pixel

    @property
    def padded_spatial(self) -> tuple[int, ...]:
        """The spatial sizes of ``x`` after its explicit zero padding."""
        return tuple(self.x_shape[a] + lo + hi
                     for a, (lo, hi) in zip(self.layout.spatial_axes, self.pads, strict=True))

    @property
    def out_size(self) -> int:
        """Elements of the output (and of its cotangent)."""
        return self.x_shape[0] * math.prod(self.out_spatial) * self.out_channels

    @property
    def padded_size(self) -> int:
        """Elements of ``x`` after its explicit zero padding."""
        return self.x_shape[0] * math.prod(self.padded_spatial) * self.in_channels


class Expected(NamedTuple):
    """What the roofline model (``lowering._cost``) expects of one lowering for one part of a
    call: the work, and the time and roof fractions that work takes at the lowering's fitted
    efficiency. An expectation from timings on one machine, not a measurement of this call.

    Attributes:
      algorithm: the lowering's name.
      flops: 2 flops per multiply-add of the part.
      bytes: the operands read and the result written once, plus the temporaries the lowering
        materialises for the part (``Lowering.temporaries``), each written once and read once.
      seconds: the expected time: ``max(flops / (efficiency * peak), bytes / bandwidth)``.
      compute_fraction: ``flops / seconds`` as a fraction of the FMA peak.
      memory_fraction: ``bytes / seconds`` as a fraction of the memory bandwidth.
      relative_time: ``seconds`` over the fastest expected lowering's (1.0 for it).
      bound: ``"compute"`` or ``"memory"``: which roof sets ``seconds``.
    """

    algorithm: str
    flops: float
    bytes: float
    seconds: float
    compute_fraction: float
    memory_fraction: float
    relative_time: float
    bound: str


class Plan(NamedTuple):
    """The planner's decision: which lowering runs a conv call, and why.

    Attributes:
      algorithm: the lowering's name, one of ``algorithms()`` other than ``"auto"``: what
        computes the conv's value.
      reason: one sentence saying why it was picked.
      input_grad: under differentiation (``jax.grad``, ``vjp``, ``jvp``, inside ``fit``), the
        plan of the gradient with respect to the input: the lowering whose derivative computes
        it, and why. None for a plan of one part.
      kernel_grad: likewise for the gradient with respect to the kernel.
      expected: on CPU, what the roofline model expects of each exact lowering that can run
        this part (``Expected``), fastest first; the reason ends with it in words, and says
        where the model ranks the chosen lowering below another. Empty off CPU and where the
        model has no fitted efficiencies (dtypes other than float32).
    """

    algorithm: str
    reason: str
    input_grad: Plan | None = None
    kernel_grad: Plan | None = None
    expected: tuple[Expected, ...] = ()


class Lowering(NamedTuple):
    """One way to compute ``conv``, declared in one place.

    Attributes:
      name: what ``conv(..., algorithm=name)`` selects.
      conv: ``conv(x, w, args) -> y``, the same function as ``lax.conv_general_dilated``.
      declines: ``declines(args)``: None if it can run the call, else why not.
      prefers: ``prefers(args)``: on CPU, the reason ``"auto"`` should pick it for this call,
        or None; the planner asks the lowerings in order and takes the first that prefers
        the call and does not decline it. ``args.part`` says which part of the call is being
        planned: the forward value, or (under differentiation) the input or kernel gradient,
        computed as this lowering's derivative. Only lowerings that keep direct summation's error
        bound on every output value are in ``AUTO_ORDER``.
      faster_by_name: ``faster_by_name(args)``, for a lowering ``auto`` never runs (it is not
        exact elementwise, e.g. ``fft``): a sentence saying how much faster it would run this
        call when asked by name, and its error model; None where it would not be faster.
        ``plan`` appends it to its reason.
      temporaries: ``temporaries(args)``: bytes of the intermediate arrays the lowering
        materialises to compute ``args.part`` beyond its operands and result (patch
        matrices, padded or stacked copies), for the roofline model (``lowering._cost``).
    """

    name: str
    conv: Callable[[Any, Any, ConvArgs], Any]
    declines: Callable[[ConvArgs], str | None]
    prefers: Callable[[ConvArgs], str | None]
    faster_by_name: Callable[[ConvArgs], str | None] = lambda args: None
    temporaries: Callable[[ConvArgs], int] = lambda args: 0


def out_size(size: int, k: int, stride: int, dilation: int) -> int:
    """Output length of a ``k``-tap kernel dilated by ``dilation`` over an already padded axis
    of length ``size`` (``padding.output_size`` with no padding)."""
    return padding_lib.output_size(size, (k - 1) * dilation + 1, stride, 0, 0)


def never(args: ConvArgs) -> None:
    """A ``declines`` or ``prefers`` that always answers None."""
    return None


def in_float32(conv, below_bits: int = 32):
    """``conv`` for dtypes narrower than ``below_bits`` computed in float32 and rounded once
    at the end, as XLA's own convolution accumulates them: summing taps in float16 or float8
    would round every partial sum (and float8_e8m0fnu cannot hold the zero padding)."""

    @functools.wraps(conv)
    def wrapped(x, w, args):
        dtype = x.dtype
        if jnp.finfo(dtype).bits < below_bits:
            return conv(x.astype(jnp.float32), w.astype(jnp.float32), args).astype(dtype)
        return conv(x, w, args)

    return wrapped


def float32_itemsize(args: ConvArgs) -> int:
    """Bytes per element of the arrays a lowering wrapped in ``in_float32`` computes with."""
    return max(args.dtype.itemsize, 4)


def channels_last(x, w, layout: Layout):
    """x as [N, *spatial, C] and w as [*k, C // groups, O], whatever ``layout`` is."""
    if not layout.channels_last:
        n = layout.ndim
        x = jnp.moveaxis(x, 1, -1)
        w = jnp.moveaxis(w, (0, 1), (n + 1, n))
    return x, w


def pad_spatial(x, pads, first: int = 1):
    """Zero-pads the spatial axes of ``x``, which start at axis ``first``."""
    if all(p == (0, 0) for p in pads):
        return x
    cfg = [(0, 0, 0)] * x.ndim
    for i, (lo, hi) in enumerate(pads):
        cfg[first + i] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


# The name of the ``jax.vmap`` axis of fit's restarts: lowerings that bound their memory by
# chunking (im2col) divide their budget by its size, which ``jax.lax.axis_size`` reads from the
# trace (an unnamed ``jax.vmap`` axis is invisible to the function it maps).
RESTARTS_AXIS = "jaxconv_restarts"


def vmapped_copies() -> int:
    """How many copies of the code being traced run at once under fit's restarts ``vmap``
    (1 outside it)."""
    try:
        return int(lax.axis_size(RESTARTS_AXIS))
    except NameError:
        return 1


def _eigen_convs_state():
    """The planner's "XLA's convolutions run on Eigen" intent, as a jax config state in jax's
    trace context: ``jax.jit`` keys its trace cache on it, so a function traced once outside
    ``compiling_with`` is traced again inside it (the plan follows the executable being built).
    jax offers no public way to add such a state; this uses ``jax._src.config.bool_state``
    (jax 0.10.2). A jax without it gets a context variable, which jax's caches do not see."""
    try:
        from jax._src import config as jax_config

        return jax_config.bool_state(
            "jaxconv_convs_on_eigen", False,
            "jaxconv: the executable being traced runs XLA:CPU's convolutions on Eigen",
            include_in_jit_key=True, include_in_trace_context=True,
        )
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - another jax
        return None


_EIGEN_STATE = _eigen_convs_state()
_EIGEN_CONVS = contextvars.ContextVar("jaxconv_eigen_convs", default=False)


@contextlib.contextmanager
def compiling_with(compiler_options):
    """Tells the planner, while tracing code for an executable compiled with
    ``compiler_options``, whether XLA's convolutions will run on its Eigen kernels (``fit``
    traces its steps inside this; ``plan(..., compiler_options=...)`` asks under it).

    The intent is part of jax's trace context (see ``_eigen_convs_state``): a user's
    ``jax.jit(apply)`` traced once outside is traced afresh inside, not reused with the
    default plan."""
    on_eigen = _compile.convs_on_eigen(compiler_options)
    if _EIGEN_STATE is not None:
        with _EIGEN_STATE(on_eigen):
            yield
        return
    token = _EIGEN_CONVS.set(on_eigen)
    try:
        yield
    finally:
        _EIGEN_CONVS.reset(token)


def convs_on_eigen() -> bool:
    """Whether the code being traced will run XLA's convolutions on Eigen (see above)."""
    if _EIGEN_STATE is not None:
        return bool(_EIGEN_STATE.value)
    return _EIGEN_CONVS.get()
