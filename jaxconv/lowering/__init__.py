"""Alternative lowerings of ``conv`` and the planner that picks one per call.

Every lowering computes the same function as ``lax.conv_general_dilated``. ``shift_add``,
``depthwise``, ``rows``, ``im2col`` and ``xla`` sum each output's products directly, so each
output value keeps direct summation's error bound (exact zeros stay zero, a NaN or inf reaches
only the outputs whose window reads it, small-integer sums are exact): ``auto`` picks only
among them, and asks for float32 in full precision (``_exact``: off CPU XLA's default may
round float32 operands to TF32, which a lowering asked for by name with ``precision=None``
keeps, as lax does).
``fft``'s error is small against the output's largest magnitude but not elementwise, so it runs
only when asked for by name (``algorithm="fft"``); ``plan`` says when it would be faster, by how
much, and its error model. Each lowering declares itself in one ``Lowering`` record (its
module's ``LOWERING``): what it declines, and when ``auto`` prefers it, with the threshold and
its measurement beside it in that module. The planner asks them in ``AUTO_ORDER`` and takes the
first that prefers the call; ``xla`` prefers everything, so it is the fallback. A differentiated
call is planned part by part (its value, input gradient and kernel gradient: ``ConvArgs.part``),
each gradient the derivative of its own part's lowering (``_planned``). The choice is
static (shapes, dtype, and whether the executable being traced runs XLA's convolutions on
Eigen: ``fit`` says so for its compiler options, see ``compiling_with``), so it costs nothing
under jit; this module runs no convolution itself. The thresholds come from timings on a
2-core x86-64 CPU, recorded in ``benchmarks/NOTES.md``. Each CPU plan also says what a roofline
model (``_cost``: work per part, and one efficiency per lowering and class of call fitted to
those timings) expects of every exact lowering that can run the part; it explains the choice
and does not make it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxconv import _checks
from jaxconv import _padding as padding_lib
from jaxconv import _shapes as shapes
from jaxconv.lowering import _cost, depthwise, fft, im2col, rows, shift_add, xla
from jaxconv.lowering._base import ConvArgs, Expected, Lowering, Plan, compiling_with

__all__ = ["AUTO_ORDER", "BY_NAME_ONLY", "EXACT_BY_NAME", "ConvArgs", "Expected", "Lowering",
           "Plan", "algorithms", "plan"]

# The order ``auto`` asks the lowerings in on CPU; the first that prefers a call runs it.
# Only lowerings that keep direct summation's error bound on every output value belong here.
AUTO_ORDER: tuple[Lowering, ...] = (
    depthwise.LOWERING,
    shift_add.LOWERING,
    rows.LOWERING,  # forwards im2col would run, where XLA would take YNNPACK
    im2col.LOWERING,
    xla.LOWERING,  # prefers every call: the fallback
)
# Lowerings that run only when asked for by name (not exact elementwise); ``plan`` says when
# one would be faster.
BY_NAME_ONLY: tuple[Lowering, ...] = (fft.LOWERING,)
# Exact lowerings ``auto`` does not ask (yet): each module says why, with its measurements.
EXACT_BY_NAME: tuple[Lowering, ...] = ()
_BY_NAME = {low.name: low for low in (xla.LOWERING, *AUTO_ORDER, *EXACT_BY_NAME, *BY_NAME_ONLY)}


def algorithms() -> tuple[str, ...]:
    """Names accepted by ``conv(..., algorithm=...)``."""
    return ("auto", *_BY_NAME)


def _choose_part(args: ConvArgs, backend: str) -> Plan:
    """The lowering that computes ``args.part`` of this (validated) call, with no gradients'
    plans: off CPU ``"xla"`` (cuDNN and TPU convolutions are the fast path there); on CPU the
    first lowering of ``AUTO_ORDER`` that prefers it and does not decline the call."""
    if backend != "cpu":
        return Plan("xla", f"backend {backend!r}: lax.conv_general_dilated (cuDNN/TPU convs)")
    for low in AUTO_ORDER:
        reason = low.prefers(args)
        if reason is not None and low.declines(args) is None:
            notes = []
            if args.part == "forward":
                notes = [n for other in BY_NAME_ONLY if (n := other.faster_by_name(args))]
            expected = _cost.expect(args, [o for o in AUTO_ORDER if o.declines(args) is None])
            reason = "; ".join([reason, *notes, _cost.explain(low.name, expected)])
            return Plan(low.name, reason, expected=expected)
    raise AssertionError("unreachable: the xla lowering prefers every call")


def _choose(args: ConvArgs, backend: str | None = None) -> Plan:
    """What ``algorithm="auto"`` runs for this (validated) call: the forward's plan, with
    the plans of its input and kernel gradients (used when the call is differentiated)."""
    backend = backend or jax.default_backend()
    args = args._replace(part="forward")
    return _choose_part(args, backend)._replace(
        input_grad=_choose_part(args._replace(part="input_grad"), backend),
        kernel_grad=_choose_part(args._replace(part="kernel_grad"), backend),
    )


def _conv_args(
    op, x_shape, w_shape, dtype, stride, padding, dilation, groups, layout, pad_mode, precision
) -> tuple[ConvArgs, tuple[padding_lib.Pads, str] | None]:
    """Validates one conv call's options (the op's own errors) and normalises them.

    Returns ``(args, pre_pads)``: with a pad mode other than zeros, ``pre_pads`` is
    ``(pads, pad_mode)``, what the caller applies to ``x`` first (``padding.pad``), and
    ``args`` describe the conv of the padded ``x`` with no padding left; else None.
    """
    geo = shapes.conv_geometry(op, x_shape, w_shape, stride, padding, dilation, groups, layout)
    pad_mode = _checks.check_choice(op, "pad_mode", pad_mode, padding_lib.PAD_MODES)
    precision = _checks.check_precision(op, precision)
    lay, pads, x_shape = geo.layout, geo.pads, tuple(x_shape)
    pre_pads = None
    if pad_mode != "zeros" and any(p != (0, 0) for p in pads):
        pre_pads = (pads, pad_mode)
        grown = list(x_shape)
        for axis, (lo, hi) in zip(lay.spatial_axes, pads, strict=True):
            grown[axis] += lo + hi
        x_shape, pads = tuple(grown), ((0, 0),) * lay.ndim
    args = ConvArgs(lay, geo.stride, pads, geo.dilation, int(groups), precision, x_shape,
                    tuple(w_shape), jnp.dtype(dtype))
    return args, pre_pads


def _parts(p: Plan) -> tuple[str, str, str]:
    """The lowerings of a plan from ``_choose``: forward, input gradient, kernel gradient."""
    assert p.input_grad is not None and p.kernel_grad is not None  # _choose sets both
    return p.algorithm, p.input_grad.algorithm, p.kernel_grad.algorithm


def _dispatch(algorithm: str, x, w, args: ConvArgs):
    """Runs ``conv`` through the named lowering (``"auto"``: the planner's choice).

    ``"auto"`` decides CPU vs accelerator when the computation is lowered for its platform
    (``lax.platform_dependent``), not from ``jax.default_backend()`` at trace time: a CPU
    computation on a GPU host, or one lowered ahead of time for another platform, runs the
    plan of the platform it is compiled for. Where the CPU plan of a gradient differs from
    the forward's, the call is differentiated through ``_planned`` (see there).
    """
    if algorithm == "auto":
        forward, input_grad, kernel_grad = _parts(_choose(args, "cpu"))
        if forward == input_grad == kernel_grad:
            return _run(forward, x, w, args)
        return _planned(x, w, args)
    elif algorithm not in _BY_NAME:
        names = ", ".join(repr(a) for a in algorithms())
        raise ValueError(f"conv: unknown algorithm {algorithm!r}; expected one of {names}."
                         f"{_checks.closest(algorithm, algorithms())}")
    else:
        declined = _BY_NAME[algorithm].declines(args)
        if declined is not None:
            raise ValueError(
                f"conv: algorithm {algorithm!r} does not support this call ({declined}); use "
                "algorithm='auto' or 'xla'."
            )
    if algorithm == "xla":
        return xla.conv(x, w, args)  # one lax op: nothing to gain from a jit
    return _compiled(algorithm)(x, w, args)


def _exact(args: ConvArgs) -> ConvArgs:
    """``args`` for ``auto``'s lax convolution: float32 in full precision where the caller
    left ``precision`` unset. On recent NVIDIA GPUs XLA otherwise rounds float32 operands to
    TF32: measured on an H200 (jax 0.11.2, ``benchmarks/gpu_check.py``), errors of 1e-4 of the
    elementwise bound ``sum |x| |w|`` against float32's 3e-7, which breaks ``auto``'s promise
    of direct summation's bound. XLA:CPU computes float32 fully either way (the compiled
    convolution differs only in its precision attribute, and runs as fast: NOTES)."""
    if args.precision is None and args.dtype == jnp.float32:
        return args._replace(precision=lax.Precision.HIGHEST)
    return args


def _run(cpu: str, x, w, args: ConvArgs):
    """The CPU lowering ``cpu`` where the computation is lowered for CPU, lax's convolution
    elsewhere; lax's convolution with ``_exact``'s precision."""
    if cpu == "xla":
        return xla.conv(x, w, _exact(args))
    return lax.platform_dependent(
        x, w, cpu=lambda x, w: _compiled(cpu)(x, w, args),
        default=lambda x, w: xla.conv(x, w, _exact(args)),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _planned(x, w, args: ConvArgs):
    """``auto``'s conv when its gradients' plans differ from its forward's: evaluated, the
    forward's lowering runs; differentiated, each gradient is the derivative of its own
    plan's lowering (``_planned_jvp``). Every lowering computes the same function, so this is
    the conv's exact derivative whichever runs."""
    return _run(_choose(args, "cpu").algorithm, x, w, args)


def _planned_jvp(args: ConvArgs, primals, tangents):
    # conv is bilinear: d conv(x, w) = conv(dx, w) + conv(x, dw), each term the JVP of the
    # lowering planned for that gradient (its custom JVP rule, where it has one, so its
    # transposition is the one the lowering was written for). A symbolic-zero tangent (an
    # operand not differentiated: a first layer's data) is not computed at all. The value
    # comes from the forward's lowering when one of the JVPs runs it; otherwise a JVP's own
    # value is unused, which XLA removes under jit.
    x, w = primals
    dx, dw = tangents
    forward, input_grad, kernel_grad = _parts(_choose(args, "cpu"))
    jobs: dict[str, list[int]] = {}
    if not isinstance(dx, SymbolicZero):
        jobs.setdefault(input_grad, []).append(0)
    if not isinstance(dw, SymbolicZero):
        jobs.setdefault(kernel_grad, []).append(1)
    y, dy = None, None
    for algorithm, which in jobs.items():
        def f(*ops, which=which, algorithm=algorithm):
            both = [x, w]
            for i, op in zip(which, ops, strict=True):
                both[i] = op
            return _run(algorithm, *both, args)

        value, tangent = jax.jvp(f, tuple(primals[i] for i in which),
                                 tuple(tangents[i] for i in which))
        if algorithm == forward:
            y = value
        dy = tangent if dy is None else dy + tangent
    if y is None:
        y = _run(forward, x, w, args)
    if dy is None:  # no operand differentiated: jax does not call the rule then, but be total
        dy = jnp.zeros_like(y)
    return y, dy


_planned.defjvp(_planned_jvp, symbolic_zeros=True)


@functools.cache
def _compiled(algorithm: str):
    # The non-xla lowerings are tens of small ops: run eagerly, each would be dispatched (and
    # compiled) on its own, ~1 s for a new shape; one jit makes an eager call one executable.
    # Under an outer jit this inner one is inlined.
    return jax.jit(_BY_NAME[algorithm].conv, static_argnums=2)


def plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding="VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    layout: str | None = None,
    pad_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    dtype=jnp.float32,
    backend: str | None = None,
    compiler_options: dict[str, str] | None = None,
) -> Plan:
    """Which lowerings ``conv(x, w, ..., algorithm="auto")`` runs for these shapes, and why.

    Validates exactly as ``conv`` does (same errors), on shapes alone.

    Args:
      x_shape: shape of ``x``: [N, *spatial, C] (channels-last) or [N, C, *spatial].
      w_shape: shape of the kernel ``w``, laid out as in ``conv``.
      stride, padding, dilation, groups, layout, pad_mode, precision: as in ``conv``.
      dtype: the dtype of ``x`` and ``w``.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; None for ``jax.default_backend()``.
      compiler_options: the options the executable is compiled with (None: XLA's defaults).
        ``jaxconv.compiler_options()``, which ``fit`` uses, moves XLA:CPU's convolutions to
        Eigen, where they beat ``"im2col"``: the plan inside ``fit`` is
        ``plan(..., compiler_options=jaxconv.compiler_options())``.

    Returns:
      A ``Plan(algorithm, reason, input_grad, kernel_grad, expected)``: the lowering of the
      conv's value, and the plans of its two gradients when the call is differentiated (each
      gradient is the derivative of its own plan's lowering). On CPU each part's ``expected``
      lists what the roofline model expects of every exact lowering that can run that part
      (``Expected``: flops, bytes moved, time, fractions of the FMA peak and of the memory
      roof), fastest first, and its reason ends with that in words, saying where the model
      ranks the chosen lowering below another: the thresholds choose (they come from timings
      of each lowering), the model, one fitted efficiency per lowering and class of call,
      explains. Empty for other dtypes than float32 and off CPU.

    Example:
      >>> import jaxconv
      >>> jaxconv.plan((64, 16, 16, 1), (3, 3, 1, 1), backend="gpu").algorithm
      'xla'
      >>> p = jaxconv.plan((32, 64, 64, 16), (3, 3, 16, 32), backend="cpu")
      >>> p.algorithm, [e.algorithm for e in p.expected][0]
      ('rows', 'rows')
    """
    op = "plan"
    x_shape = _checks.check_shape(op, "x_shape", x_shape)
    w_shape = _checks.check_shape(op, "w_shape", w_shape)
    _checks.check_float(op, "x", jax.ShapeDtypeStruct((), dtype))
    args, _ = _conv_args(op, x_shape, w_shape, dtype, stride, padding, dilation, groups, layout,
                        pad_mode, precision)
    with compiling_with(compiler_options):
        return _choose(args, backend)
