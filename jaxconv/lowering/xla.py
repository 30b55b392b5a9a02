"""The reference lowering: ``lax.conv_general_dilated``, in the form XLA:CPU runs fast everywhere.

XLA:CPU sends a convolution to its fast kernels (Eigen, YNNPACK) only when its dimension
numbers are canonical: batch first and features last in the input and output, the kernel
``[*spatial, in, out]``, spatial dims in order. Its ``ConvCanonicalization`` pass rewrites other
convolutions into that form, but it walks only the entry computation: a convolution inside a
``lax.scan``/``while_loop`` body keeps its labels and runs XLA's naive loop. Autodiff's kernel
gradient (``f01b_i01o->01bf``) and input gradient (kernel ``01oi``) are never canonical, so one
conv layer's training step ran 55x slower inside a scan than in a Python loop of jitted steps
(benchmarks/NOTES.md). Here every convolution is written canonically by hand: the layout is
transposed to channels-last around it, and a custom JVP writes each tangent so that reverse
mode's transpose of it is a canonical convolution (the kernel gradient contracts the batch as
the feature axis of a ``[C, *spatial, N]`` input with a ``[*spatial, N, O]`` cotangent). The
values are the same convolutions autodiff computes, so gradients agree to float rounding.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._canonical import canonical_dims
from jaxconv.lowering import im2col
from jaxconv.lowering._base import ConvArgs, Lowering, channels_last, convs_on_eigen, never


def _dims(lhs, rhs, out):
    """ConvDimensionNumbers from (batch, feature, *spatial) positions, as lax orders them."""
    return lax.ConvDimensionNumbers(tuple(lhs), tuple(rhs), tuple(out))


def _primal(x, w, static):
    stride, pads, dilation, groups, precision = static
    return lax.conv_general_dilated(
        x, w, stride, pads, rhs_dilation=dilation, dimension_numbers=canonical_dims(w.ndim - 2),
        feature_group_count=groups, precision=precision,
    )


def _x_tangent(x_dot, w, static):
    """conv(x_dot, w) with the kernel stored [*k, O, I]: reverse mode transposes it into the
    input gradient ``conv(pad(g), flip(w))`` with a canonical [*k, I', O'] kernel."""
    stride, pads, dilation, groups, precision = static
    n = w.ndim - 2
    sp = tuple(range(1, n + 1))
    dims = _dims((0, n + 1, *sp), (n, n + 1, *range(n)), (0, n + 1, *sp))
    return lax.conv_general_dilated(
        x_dot, jnp.swapaxes(w, -1, -2), stride, pads, rhs_dilation=dilation,
        dimension_numbers=dims, feature_group_count=groups, precision=precision,
    )


def _w_tangent(x, w_dot, static):
    """conv(x, w_dot) with x as [C/G, *sp, G * N] (features as the batch), w_dot as
    [I, *k, O] and the output as [*out, N, O], the G feature groups as batch groups: reverse
    mode transposes it into the kernel gradient, a canonical convolution of that input with
    the [*out, N, O] cotangent in G feature groups, giving [I, *k, O]. (Autodiff's own kernel
    gradient uses batch groups, which XLA:CPU rewrites into a non-canonical convolution.)"""
    stride, pads, dilation, groups, precision = static
    n = w_dot.ndim - 2
    sp = tuple(range(1, n + 1))
    batch, *spatial, channels = x.shape
    x = x.reshape(batch, *spatial, groups, channels // groups)
    x = jnp.moveaxis(x, (0, n + 1, n + 2), (n + 2, n + 1, 0))  # [C/G, *sp, G, N]
    x = x.reshape(channels // groups, *spatial, groups * batch)
    dims = _dims((n + 1, 0, *sp), (n + 1, 0, *sp), (n, n + 1, *range(n)))
    y = lax.conv_general_dilated(
        x, jnp.moveaxis(w_dot, n, 0), stride, pads, rhs_dilation=dilation,
        dimension_numbers=dims, batch_group_count=groups, precision=precision,
    )
    return jnp.moveaxis(y, n, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _conv_cl(x, w, static):
    return _primal(x, w, static)


@functools.partial(_conv_cl.defjvp, symbolic_zeros=True)
def _conv_cl_jvp(static, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    y = _primal(x, w, static)
    y_dot = None
    if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        y_dot = _x_tangent(x_dot, w, static)
    if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
        term = _w_tangent(x, w_dot, static)
        y_dot = term if y_dot is None else y_dot + term
    return y, jnp.zeros_like(y) if y_dot is None else y_dot


def _channels_last(x, w, args):
    x, w = channels_last(x, w, args.layout)
    return x, w, (args.stride, args.pads, args.dilation, args.groups, args.precision)


def conv(x, w, args):
    """``lax.conv_general_dilated(x, w, ...)``, canonical forward and gradients."""
    x, w, static = _channels_last(x, w, args)
    y = _conv_cl(x, w, static)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


def _static(stride, pads, dilation, groups, precision) -> tuple:
    """The hashable settings ``_conv_cl`` and the tangents take."""
    return (tuple(stride), tuple(tuple(p) for p in pads), tuple(dilation), int(groups),
            precision)


def conv_channels_last(x, w, *, stride, pads, dilation, groups, precision):
    """``lax.conv_general_dilated`` of ``x`` [N, *sp, C] and ``w`` [*k, C // groups, O] with
    explicit ``pads``, canonical forward and gradients (for lowerings that rewrite a conv into
    another one)."""
    return _conv_cl(x, w, _static(stride, pads, dilation, groups, precision))


def kernel_linear_conv(x, w_dot, *, stride, pads, dilation, groups, precision):
    """``lax.conv_general_dilated`` of ``x`` [N, *sp, C] and ``w_dot`` [*k, C // groups, O] as
    a plain linear function of ``w_dot``, written so that its transpose (the kernel gradient)
    is a canonical convolution (for lowerings whose kernel tangent is a convolution)."""
    return _w_tangent(x, w_dot, _static(stride, pads, dilation, groups, precision))


def linear_conv(x, w, args):
    """The same convolution as a plain linear function of ``x`` (no custom JVP), written so
    that its transpose, ``conv_transpose``, is a canonical convolution."""
    x, w, static = _channels_last(x, w, args)
    y = _x_tangent(x, w, static)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)



def _prefers(args) -> str:
    if im2col.f64_loop_forward(args):
        return (f"float64 with {args.macs_per_value} multiply-adds per output value and "
                f"{args.macs_per_pixel} per output pixel: XLA:CPU's float64 convolution loop "
                "beats building im2col's patch matrix for so small a GEMM")
    if convs_on_eigen():
        return ("XLA's Eigen convolution: compiled with YNNPACK's convolutions off "
                "(jaxconv.compiler_options(), as fit does), no other exact lowering is faster")
    return "no faster exact lowering applies on CPU for these shapes"


def temporaries(args: ConvArgs) -> int:
    """Bytes materialised for ``args.part``: none forward and for the input gradient (XLA's
    convolution pads and dilates internally); the kernel gradient reads x and the cotangent
    transposed to ``[C/G, *sp, G * N]`` and ``[*out, N, O]`` (``_w_tangent``)."""
    if args.part != "kernel_grad":
        return 0
    return (math.prod(args.x_shape) + args.out_size) * args.dtype.itemsize


LOWERING = Lowering("xla", conv, declines=never, prefers=_prefers, temporaries=temporaries)
