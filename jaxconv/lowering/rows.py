"""Rows lowering: a 2-D convolution as one 1-D convolution over W whose channels are the kernel's
``kh`` input rows, so that XLA:CPU runs it on Eigen inside any ``jax.jit``.

jaxlib 0.10's XLA:CPU hands a float32 convolution to YNNPACK when it has exactly two spatial
dimensions, canonical labels, no batch groups and more than 16 input or output features
(``IsConvolutionOpSupportedByYnn`` in openxla/xla's ``xla/backends/cpu/ynn_support.cc``); on
this CPU that ran 3-4x slower than XLA's Eigen convolution (C, E; benchmarks/NOTES.md). The
compiler option that turns it off applies to a whole executable, which a library cannot set for
a user's own ``jax.jit``. A 1-D convolution is declined by YNNPACK's rule and runs on Eigen, so
here the ``kh`` row windows of the (padded) input are stacked into the channel axis,
``[N * Ho, W, G * kh * Cg]``, and convolved over W with the kernel ``[kw, kh * Cg, O]`` in
``G`` feature groups; the result is the 2-D convolution, every output a direct sum of the same
products (direct summation's elementwise error bound). The price is ``kh`` copies of the input.
Gradients are the 1-D convolution's, written canonically by ``xla``'s custom JVP (also 1-D, so
also on Eigen), and plain autodiff of the row stacking. Must not be used where the 2-D
convolution would not reach YNNPACK anyway: there ``xla`` runs Eigen's 2-D convolution directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._checks import Layout
from jaxconv.lowering import im2col, xla
from jaxconv.lowering._base import (
    ConvArgs,
    Lowering,
    channels_last,
    convs_on_eigen,
    float32_itemsize,
    in_float32,
    out_size,
    pad_spatial,
)

# XLA:CPU's YNNPACK rule: a 2-D float32 convolution goes to YNNPACK when max(input features,
# output features) exceeds this (ynn_support.cc, the jaxlib 0.10.2 source; probed: C, E and
# 32x32x32 3x3 32->32 compile to a ynn_fusion, D (3->16) and 16->16 do not).
YNN_MIN_FEATURES = 16
_CHANNELS_LAST = Layout("NHWC", True, 2)


def reaches_ynnpack(args: ConvArgs) -> bool:
    """Whether XLA:CPU under its default options would run this convolution on YNNPACK."""
    return (
        args.layout.ndim == 2
        and args.dtype == jnp.float32
        and max(args.in_channels, args.out_channels) > YNN_MIN_FEATURES
        and not convs_on_eigen()
    )


def declines(args: ConvArgs) -> str | None:
    if args.layout.ndim != 2:
        return (f"a {args.layout.ndim}-D convolution: this lowering rewrites 2-D ones (1-D and "
                "3-D convolutions reach Eigen as they are)")
    return None


GROUPED_MAX_CHANNELS = 8


def prefers(args: ConvArgs) -> str | None:
    # The forward only, and only where im2col would run it otherwise (many channels per group).
    # Measured against im2col, XLA's default options, ms forward (benchmarks/NOTES.md): quiet,
    # C 28.3 vs 25.8, E 24.7 vs 30.6, C SAME 18.9 vs 22.7, 16x56x56 3x3 s2 32->64 7.0 vs 10.9;
    # load 3-5, C 19.7 vs 29.6, E 26.7 vs 37.8 (6 of 8 medians ahead, 0.62-0.83; behind 1.10
    # once). Its gradients were slower than im2col's on 3 of 4 (1.18-1.36), so they are not
    # preferred here: im2col plans them. Nor grouped convs with at most GROUPED_MAX_CHANNELS
    # input channels per group, where its grouped 1-D conv lost to im2col on all 4 measured
    # (3x3 SAME, 16x32x32, fwd ms: 64 ch groups 8 11.4 vs 6.0, groups 16 17.5 vs 15.9, groups
    # 32 25.1 vs 9.1; 32 ch groups 8 8.1 vs 3.3; plan_grouped_results.json, NOTES.md).
    if (args.part != "forward" or not reaches_ynnpack(args) or im2col.prefers(args) is None
            or (args.groups > 1 and args.c_group <= GROUPED_MAX_CHANNELS)):
        return None
    return (
        f"XLA:CPU would run this 2-D float32 convolution ({args.in_channels} -> "
        f"{args.out_channels} channels > {YNN_MIN_FEATURES}) on YNNPACK, 3-4x slower here than "
        f"Eigen; as a 1-D convolution over W of the {args.kernel[0]} stacked input rows it runs "
        "on Eigen inside any jax.jit, ahead of im2col's forward (not its gradients)"
    )


def _rows(x, kh, sh, dh, groups):
    """[N, H, W, C] (padded) -> [N * Ho, W, G * kh * Cg]: row tap i of output row r is input
    row ``r * sh + i * dh``; channels ordered (group, tap, channel) so feature groups hold."""
    n, h, w, c = x.shape
    ho = out_size(h, kh, sh, dh)
    taps = [
        lax.slice(x, (0, i * dh, 0, 0), (n, i * dh + (ho - 1) * sh + 1, w, c), (1, sh, 1, 1))
        for i in range(kh)
    ]
    stacked = jnp.stack([t.reshape(n, ho, w, groups, c // groups) for t in taps], axis=4)
    return stacked.reshape(n * ho, w, c * kh), ho


def _forward(x, w, args, linear: bool):
    """The 2-D convolution of channels-last ``x`` and ``w`` as a 1-D one over W. ``linear``:
    written with ``xla``'s tangent form, whose transpose (the input gradient) is a canonical
    1-D convolution; else ``xla``'s canonical convolution."""
    x = pad_spatial(x, args.pads)
    kh, kw, c_group, out_ch = w.shape
    (sh, sw), (dh, dw) = args.stride, args.dilation
    rows, ho = _rows(x, kh, sh, dh, args.groups)
    w_rows = jnp.swapaxes(w, 0, 1).reshape(kw, kh * c_group, out_ch)  # [kw, (tap, Cg), O]
    static = ((sw,), ((0, 0),), (dw,), args.groups, args.precision)
    if linear:
        y = xla._x_tangent(rows, w_rows, static)
    else:
        y = xla.conv_channels_last(rows, w_rows, stride=static[0], pads=static[1],
                                   dilation=static[2], groups=static[3], precision=static[4])
    return y.reshape(x.shape[0], ho, y.shape[1], out_ch)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _conv_cl(x, w, args):
    return _forward(x, w, args, linear=False)


@functools.partial(_conv_cl.defjvp, symbolic_zeros=True)
def _conv_cl_jvp(args, primals, tangents):
    """The input gradient transposes the rows form (a 1-D convolution on Eigen, then the row
    stacking's transpose); the kernel gradient is ``im2col``'s, chunked GEMMs
    ``patches^T @ g``: Eigen's 1-D kernel-gradient convolution, which contracts ``N * Ho`` as
    features over a ``Wo``-wide window, ran 4-5x slower than the 2-D one on C, and ``kw``
    unchunked GEMMs of the rows' W-windows 12x slower (benchmarks/NOTES.md)."""
    x, w = primals
    x_dot, w_dot = tangents
    y = _conv_cl(x, w, args)
    y_dot = None
    if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
        y_dot = _forward(x_dot, w, args, linear=True)
    if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
        term = im2col.conv(x, w_dot, args)
        y_dot = term if y_dot is None else y_dot + term
    return y, jnp.zeros_like(y) if y_dot is None else y_dot


@in_float32  # the stacking's transpose (the input gradient) would sum kh rows in half
def conv(x, w, args):
    """``lax.conv_general_dilated(x, w, ...)`` for a 2-D call, as a 1-D convolution over W."""
    x, w = channels_last(x, w, args.layout)
    cl_args = args._replace(layout=_CHANNELS_LAST, x_shape=x.shape, w_shape=w.shape)
    y = _conv_cl(x, w, cl_args)
    return y if args.layout.channels_last else jnp.moveaxis(y, -1, 1)


def temporaries(args: ConvArgs) -> int:
    """Bytes materialised for ``args.part``: the ``kh`` stacked input rows ``[N * Ho, W,
    kh * C]`` (forward; the input gradient builds their cotangent); the kernel gradient is
    ``im2col``'s, with its patch matrices."""
    if args.part == "kernel_grad":
        return im2col.temporaries(args)
    rows = args.x_shape[0] * args.out_spatial[0] * args.padded_spatial[1] * args.kernel[0]
    return rows * args.in_channels * float32_itemsize(args)


LOWERING = Lowering("rows", conv, declines=declines, prefers=prefers, temporaries=temporaries)
