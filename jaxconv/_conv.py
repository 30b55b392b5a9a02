"""Convolution ops: N-D ``conv``, its adjoint ``conv_transpose``, scipy-style 2-D filtering.

All are plain functions on ``jax.lax.conv_general_dilated``; validation happens at trace time
in ``_checks``/``padding``. Alternative exact lowerings live in ``jaxconv.lowering``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import _checks, lowering
from jaxconv import _padding as padding_lib
from jaxconv import _shapes as shapes
from jaxconv._typing import Array, ArrayLike
from jaxconv.lowering import transpose

_OP = "conv"


def conv(
    x: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: padding_lib.Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    layout: str | None = None,
    pad_mode: str = "zeros",
    flip: bool = False,
    precision: lax.PrecisionLike = None,
    algorithm: str = "auto",
) -> Array:
    """N-D convolution (cross-correlation by default) of a batch ``x`` with kernel ``w``.

    The number of spatial dims is ``w.ndim - 2``. Channels-last layouts use a kernel
    ``(*spatial, in_channels // groups, out_channels)``; channels-first layouts use torch's
    ``(out_channels, in_channels // groups, *spatial)``, so a channels-first call equals
    ``torch.nn.functional.convNd`` with the same weight array.

    Args:
      x: [N, *spatial, C] (channels-last, the default) or [N, C, *spatial] (channels-first).
      w: the kernel, laid out as described above.
      stride: int or one int per spatial dim.
      padding: ``"VALID"``, ``"SAME"`` (extra pad at the end, TF/lax convention),
        ``"SAME_LOWER"`` (extra pad at the start), ``"FULL"`` (``k_eff - 1`` each side),
        ``"CAUSAL"`` (``k_eff - 1`` at the start), an int, a sequence of ints (per dim, both
        sides) or a sequence of ``(low, high)`` pairs. Strings are case-insensitive.
      dilation: kernel dilation, int or per dim.
      groups: feature groups; ``groups == in_channels`` is a depthwise convolution.
      layout: None (channels-last by rank: NWC, NHWC, NDHWC, ...), or one of NWC, NCW, NHWC,
        NCHW, NDHWC, NCDHW.
      pad_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (as torch's
        ``padding_mode``) or ``"symmetric"`` (edge repeated, numpy's mode).
      flip: False for cross-correlation (deep learning); True for the mathematical
        convolution (kernel reversed on every spatial axis).
      precision: passed to ``lax.conv_general_dilated``. With ``algorithm="auto"``, None
        means float32 in full precision on every platform (off CPU XLA's default may round
        float32 operands to TF32); by name, None is XLA's default.
      algorithm: ``"auto"`` (let ``jaxconv.plan`` choose an exact lowering) or the name of
        one lowering (``"xla"`` is ``lax.conv_general_dilated`` itself).

    Returns:
      [N, *out_spatial, out_channels] (or channels-first), with
      ``out = (in + low + high - (k - 1) * dilation - 1) // stride + 1`` per spatial dim.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> x = jnp.ones((1, 5, 5, 1))
      >>> w = jaxconv.filters.stack([jaxconv.filters.cross()])
      >>> jaxconv.conv(x, w, padding="SAME").shape
      (1, 5, 5, 1)
    """
    _checks.check_float(_OP, "x", x)
    _checks.check_float(_OP, "w", w)
    x, w = jnp.asarray(x), jnp.asarray(w)
    dtype = jnp.result_type(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    args, pre_pads = lowering._conv_args(
        _OP, x.shape, w.shape, dtype, stride, padding, dilation, groups, layout, pad_mode,
        precision,
    )
    flip = _checks.check_bool(_OP, "flip", flip)
    if flip:
        w = jnp.flip(w, axis=args.layout.kernel_spatial_axes)
    if pre_pads is not None:
        x = padding_lib.pad(_OP, x, *pre_pads, args.layout.spatial_axes)
    return lowering._dispatch(algorithm, x, w, args)


def conv_transpose(
    y: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: padding_lib.Padding = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    layout: str | None = None,
    precision: lax.PrecisionLike = None,
    algorithm: str = "auto",
) -> Array:
    """Transposed convolution: the adjoint of ``conv(., w, ...)`` with the same kernel ``w``.

    ``<conv(x, w, ...), y> == <x, conv_transpose(y, w, ...)>`` for matching options. With a
    channels-first layout and int padding it equals torch's ``conv_transposeNd(y, w, ...)``
    (torch's transposed weight ``(in, out // groups, *spatial)`` is this ``w``).

    Args:
      y: [N, *spatial, C_out] (channels-last) or [N, C_out, *spatial]; ``C_out`` is the
        out-channel count of ``w``.
      w: the forward conv's kernel, ``(*spatial, C_in // groups, C_out)`` channels-last or
        ``(C_out, C_in // groups, *spatial)`` channels-first.
      stride: the forward conv's stride.
      padding: the forward conv's padding: int, per-dim ints, ``(low, high)`` pairs,
        ``"FULL"`` or ``"CAUSAL"``; or, with ``lax.conv_transpose``'s semantics (and
        flax's and TensorFlow's), ``"SAME"`` (output size ``in * stride``: the adjoint of
        the forward ``"SAME"`` conv on that size; ``"SAME_LOWER"`` likewise) or ``"VALID"``
        (output size ``(in - 1) * stride + max(k_eff, stride)``: no padding, plus the
        ``stride - k_eff`` tail a stride longer than the kernel leaves). Strings are
        case-insensitive.
      output_padding: extra size added at the high end of each output dim (to pick among the
        input sizes a strided conv maps to the same output size); must be smaller than
        stride or dilation, as in torch; only with explicit padding (the strings set it).
      dilation: the forward conv's dilation.
      groups: the forward conv's feature groups.
      layout: as in ``conv``.
      precision: passed to ``lax.conv_general_dilated`` (as in ``conv``).
      algorithm: the lowering of the convolution it runs, as in ``conv``. Without dilation
        that is one ordinary conv of ``y`` whose output channels are the ``prod(stride)``
        phases of the result (``jaxconv.lowering.transpose``), so no multiply touches the
        zeros a strided transposed conv inserts; with dilation, the transpose of the forward
        conv on ``"xla"`` (other names are rejected there).

    Returns:
      [N, *out_spatial, C_in] with ``out = (in - 1) * stride - low - high +
      (k - 1) * dilation + 1 + output_padding`` (for the strings, as said under ``padding``).

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.conv_transpose(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 2, 8)), stride=2).shape
      (1, 9, 9, 2)
      >>> jaxconv.conv_transpose(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 2, 8)), stride=2,
      ...                        padding="SAME").shape
      (1, 8, 8, 2)
    """
    op = "conv_transpose"
    _checks.check_float(op, "y", y)
    _checks.check_float(op, "w", w)
    y, w = jnp.asarray(y), jnp.asarray(w)
    geo = shapes.conv_transpose_geometry(
        y.shape, w.shape, stride, padding, output_padding, dilation, groups, layout
    )
    dtype = jnp.result_type(y, w)
    y, w = y.astype(dtype), w.astype(dtype)
    precision = _checks.check_precision(op, precision)
    lay = geo.layout
    algorithm = _checks.check_choice(op, "algorithm", algorithm, lowering.algorithms(),
                                     fold_case=False)
    if any(d != 1 for d in geo.dilation):
        if algorithm not in ("auto", "xla"):
            raise ValueError(
                f"{op}: algorithm {algorithm!r} cannot run a dilated transposed conv (its taps "
                f"mix the output phases; it runs as the transpose of the forward conv): use "
                f"'auto' or 'xla'."
            )
        args = lowering.ConvArgs(lay, geo.stride, geo.pads, geo.dilation, int(groups),
                                 precision, geo.out_shape, w.shape, jnp.dtype(dtype))
        if algorithm == "auto":  # lax's convolution, as auto's: float32 in full precision
            args = lowering._exact(args)
        return transpose.linear_transpose(y, w, args)
    y, w = transpose.channels_last(y, w, lay)
    kernel, js = transpose.phase_kernel(w, geo.stride, groups)
    z = conv(y, kernel, padding=[(j - 1, j - 1) for j in js], groups=groups,
             precision=precision, algorithm=algorithm)
    out = [geo.out_shape[a] for a in lay.spatial_axes]
    x = transpose.interleave(z, geo.stride, groups, geo.pads, out)
    return x if lay.channels_last else jnp.moveaxis(x, -1, 1)


def _is_real_scalar(value) -> bool:
    """A 0-d int or float (Python, numpy or jax, traced or not); not bool, complex or None."""
    if value is None or isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        return False
    try:
        dtype = jnp.result_type(value)
    except TypeError:
        return False
    return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))


def _is_literal_zero(value) -> bool:
    """A concrete Python or numpy 0 (not a traced value: its gradient is asked for)."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and (
        value == 0)


def _filter2d(op, a, k, mode, boundary, fillvalue, flip):
    for name, v in (("in1", a), ("in2", k)):
        _checks.check_float(op, name, v)
        _checks.check_ndim(op, name, v, 2, "a plain 2-D array; batch with jax.vmap")
    if not _is_real_scalar(fillvalue):
        raise TypeError(
            f"{op}: fillvalue must be a real scalar (int or float), got "
            f"{type(fillvalue).__name__} {fillvalue!r}."
        )
    mode = _checks.check_choice(op, "mode", mode, ("full", "valid", "same"))
    boundary = _checks.check_choice(op, "boundary", boundary, ("fill", "wrap", "symm"))
    dtype = jnp.result_type(a, k)
    a, k = jnp.asarray(a, dtype), jnp.asarray(k, dtype)
    swapped = False
    if mode == "valid":
        a_big = all(s >= t for s, t in zip(a.shape, k.shape, strict=True))
        k_big = all(t >= s for s, t in zip(a.shape, k.shape, strict=True))
        if not (a_big or k_big):
            raise ValueError(
                f"{op}: for 'valid' mode one input must be at least as large as the other in "
                f"every dimension, got shapes {a.shape} and {k.shape}."
            )
        if not a_big:
            a, k, swapped = k, a, True
    if a.size == 0 or k.size == 0:
        raise ValueError(f"{op}: inputs must be non-empty, got shapes {a.shape} and {k.shape}.")
    if flip:
        k = k[::-1, ::-1]
    kh, kw = k.shape
    if mode == "full":
        pads = ((kh - 1, kh - 1), (kw - 1, kw - 1))
    elif mode == "same":
        # scipy keeps the centre of the 'full' output: the flipped kernel of a convolution
        # is anchored at k // 2, the kernel of a correlation at (k - 1) // 2.
        if flip:
            pads = ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))
        else:
            pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    else:
        pads = ((0, 0), (0, 0))
    # jnp.pad, not padding.pad: scipy's wrap/symm allow pads wider than the input, which
    # conv's pad modes (torch's rules) reject
    conv_pads = ((0, 0), (0, 0))
    if boundary == "fill" and _is_literal_zero(fillvalue):
        conv_pads = pads  # conv's own zero padding: no padded copy of the image
    elif boundary == "fill":
        if any(p != (0, 0) for p in pads):
            # A select against a constant mask, not jnp.pad's constant_values: lax.pad's
            # transpose cannot differentiate the pad value alone (jax.grad w.r.t. fillvalue
            # raised a raw TypeError), and a select is linear in each branch, exact for any
            # fillvalue (inf and nan included) and batches under vmap.
            border = np.pad(np.zeros(a.shape, bool), pads, constant_values=True)
            a = jnp.where(border, jnp.asarray(fillvalue, dtype), jnp.pad(a, pads))
    else:
        np_mode = "wrap" if boundary == "wrap" else "symmetric"
        a = jnp.pad(a, pads, mode=np_mode)
    # through conv's planner (jaxconv.plan): one image and one filter is what shift_add is
    # fastest at on CPU; HIGHEST keeps float32 products exact on GPU/TPU as scipy's are
    out = conv(a[None, :, :, None], k[:, :, None, None], padding=conv_pads,
               precision=lax.Precision.HIGHEST)[0, :, :, 0]
    if swapped and not flip:
        # correlation is not symmetric in its inputs: corr(k, a) is corr(a, k) reversed.
        out = out[::-1, ::-1]
    return out


def correlate2d(
    in1: ArrayLike,
    in2: ArrayLike,
    *,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: float = 0,
) -> Array:
    """2-D cross-correlation with the semantics and defaults of ``scipy.signal.correlate2d``.

    Args:
      in1: [H, W] array.
      in2: [kh, kw] array.
      mode: ``"full"`` ([H + kh - 1, W + kw - 1]), ``"valid"`` ([H - kh + 1, W - kw + 1]) or
        ``"same"`` ([H, W], centred as scipy does).
      boundary: ``"fill"`` (pad with ``fillvalue``), ``"wrap"`` (circular) or ``"symm"``
        (mirror with the edge repeated).
      fillvalue: the pad value for ``boundary="fill"``.

    Returns:
      The correlation, shaped by ``mode`` as above. It is one ``conv`` call (through the
      planner, ``jaxconv.plan``), so ``jax.vmap`` over images runs it as ``conv`` on the
      stacked batch.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.correlate2d(jnp.eye(3), jnp.ones((2, 2)), mode="valid")
      Array([[2., 1.],
             [1., 2.]], dtype=float32)
    """
    return _filter2d("correlate2d", in1, in2, mode, boundary, fillvalue, flip=False)


def convolve2d(
    in1: ArrayLike,
    in2: ArrayLike,
    *,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: float = 0,
) -> Array:
    """2-D convolution with the semantics and defaults of ``scipy.signal.convolve2d``.

    Args:
      in1: [H, W] array.
      in2: [kh, kw] array.
      mode: ``"full"``, ``"valid"`` or ``"same"``, as in ``correlate2d``.
      boundary: ``"fill"``, ``"wrap"`` or ``"symm"``.
      fillvalue: the pad value for ``boundary="fill"``.

    Returns:
      The convolution, shaped by ``mode``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.convolve2d(jnp.ones((2, 2)), jnp.ones((2, 2))).shape
      (3, 3)
    """
    return _filter2d("convolve2d", in1, in2, mode, boundary, fillvalue, flip=True)
