"""Drop-in ``flax.nnx.Conv`` and ``flax.nnx.ConvTranspose`` run by ``jaxconv.conv`` (its
planner and pad modes) and ``jaxconv.conv_transpose`` (its phase lowering).

Importing this module imports flax (extra ``interop``); ``jaxconv`` itself never does.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding
from jax import lax

from jaxconv._conv import conv, conv_transpose
from jaxconv.interop._dilated import dilated_input_conv

_LAYOUTS = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _jaxconv_conv_general_dilated(
    inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
    dimension_numbers=None, feature_group_count=1, precision=None, *, pad_mode="zeros",
    flip=False, algorithm="auto", out_sharding=None, preferred_element_type=None,
):
    """``lax.conv_general_dilated``'s signature, as ``nnx.Conv`` calls it, run by
    ``jaxconv.conv``; what jaxconv cannot do is refused, never ignored."""
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        raise ValueError(
            f"jaxconv.interop.flax_nnx.Conv: input_dilation={tuple(lhs_dilation)} is not "
            f"supported by jaxconv.conv; use flax.nnx.Conv, or nnx.ConvTranspose for "
            f"upsampling."
        )
    for name, value in (("out_sharding", out_sharding),
                        ("preferred_element_type", preferred_element_type)):
        if value is not None:
            raise ValueError(f"jaxconv.interop.flax_nnx.Conv: {name}={value!r} is not "
                             f"supported by jaxconv.conv; use flax.nnx.Conv.")
    nd = inputs.ndim
    channels_last = lax.ConvDimensionNumbers(  # N, C, *spatial positions as flax gives them
        lhs_spec=(0, nd - 1, *range(1, nd - 1)), rhs_spec=(nd - 1, nd - 2, *range(nd - 2)),
        out_spec=(0, nd - 1, *range(1, nd - 1)))
    if tuple(dimension_numbers) != tuple(channels_last):
        raise ValueError(f"jaxconv.interop.flax_nnx.Conv: unexpected dimension numbers "
                         f"{dimension_numbers!r}.")
    return conv(inputs, kernel, stride=tuple(window_strides), padding=padding,
                dilation=tuple(rhs_dilation or (1,) * (kernel.ndim - 2)),
                groups=feature_group_count, precision=precision, pad_mode=pad_mode, flip=flip,
                algorithm=algorithm)


class Conv(nnx.Conv):
    """``flax.nnx.Conv`` (same constructor arguments, params ``kernel`` ``(*kernel_size,
    in_features // feature_group_count, out_features)`` and ``bias``, same outputs) computed
    by ``jaxconv.conv``: ``algorithm="auto"`` lets ``jaxconv.plan`` choose an exact lowering.

    Args:
      *args: as ``flax.nnx.Conv`` (``in_features``, ``out_features``, ``kernel_size``, ...).
      pad_mode: ``jaxconv.conv``'s pad mode for the padding given (``"zeros"``,
        ``"reflect"``, ``"replicate"``, ``"circular"``, ``"symmetric"``).
      flip: True for the mathematical convolution (kernel reversed).
      algorithm: ``"auto"`` or a lowering's name, as in ``jaxconv.conv``.
      **kwargs: as ``flax.nnx.Conv`` (``padding``, ``rngs``, ...); ``input_dilation`` other
        than 1 and ``conv_general_dilated`` are refused.

    Returns:
      The layer (``layer(x)``: ``[*batch, *spatial, in_features] -> [*batch, *out_spatial,
      out_features]``, as ``flax.nnx.Conv``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxconv.interop import flax_nnx
      >>> layer = flax_nnx.Conv(3, 8, (3, 3), padding="SAME", pad_mode="reflect",
      ...                       rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 16, 16, 3))).shape
      (2, 16, 16, 8)
    """

    def __init__(self, *args: Any, pad_mode: str = "zeros", flip: bool = False,
                 algorithm: str = "auto", **kwargs: Any):
        if "conv_general_dilated" in kwargs:
            raise TypeError("jaxconv.interop.flax_nnx.Conv: conv_general_dilated is jaxconv's "
                            "here; use flax.nnx.Conv to pass your own.")
        fn = functools.partial(_jaxconv_conv_general_dilated, pad_mode=pad_mode, flip=flip,
                               algorithm=algorithm)
        super().__init__(*args, conv_general_dilated=fn, **kwargs)


class ConvTranspose(nnx.ConvTranspose):
    """``flax.nnx.ConvTranspose`` (same constructor arguments, params ``kernel``
    ``(*kernel_size, in_features, out_features)`` - ``(*kernel_size, out_features,
    in_features)`` with ``transpose_kernel=True`` - and ``bias``, same outputs, padding with
    ``lax.conv_transpose``'s meaning as flax's) computed by ``jaxconv.conv_transpose``: one
    ordinary conv whose outputs are the stride's phases, so no multiply touches the zeros a
    strided transposed conv inserts.

    Args:
      *args: as ``flax.nnx.ConvTranspose`` (``in_features``, ``out_features``,
        ``kernel_size``, ...).
      algorithm: ``"auto"`` or a lowering's name, as in ``jaxconv.conv_transpose``.
      **kwargs: as ``flax.nnx.ConvTranspose`` (``strides``, ``padding`` - ``"SAME"``,
        ``"VALID"``, ``"CIRCULAR"``, ints or ``(low, high)`` pairs -, ``kernel_dilation``,
        ``transpose_kernel``, ``mask``, ``rngs``, ...); ``preferred_element_type`` is refused.

    Returns:
      The layer (``layer(x)``: ``[*batch, *spatial, in_features] -> [*batch, *out_spatial,
      out_features]``, as ``flax.nnx.ConvTranspose``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxconv.interop import flax_nnx
      >>> up = flax_nnx.ConvTranspose(8, 4, (2, 2), strides=2, rngs=nnx.Rngs(0))
      >>> up(jnp.ones((2, 16, 16, 8))).shape
      (2, 32, 32, 4)
    """

    def __init__(self, *args: Any, algorithm: str = "auto", **kwargs: Any):
        if kwargs.get("preferred_element_type") is not None:
            raise ValueError(
                f"jaxconv.interop.flax_nnx.ConvTranspose: preferred_element_type="
                f"{kwargs['preferred_element_type']!r} is not supported by "
                f"jaxconv.conv_transpose; use flax.nnx.ConvTranspose."
            )
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm

    def __call__(self, inputs):
        """As ``flax.nnx.ConvTranspose.__call__``, computed by ``jaxconv.conv_transpose``."""
        op = "jaxconv.interop.flax_nnx.ConvTranspose"
        n = len(self.kernel_size)
        batch_dims = inputs.ndim - (n + 1)
        batch_shape = inputs.shape[:batch_dims]
        if batch_dims != 1:  # flax's convention: flatten the batch dims (none: add one)
            inputs = jnp.reshape(inputs, (-1, *inputs.shape[batch_dims:]))
        strides, dilation = _per_dim(self.strides, n), _per_dim(self.kernel_dilation, n)
        if self.mask is not None and self.mask.shape != self.kernel_shape:
            raise ValueError(f"{op}: mask must have the kernel's shape {self.kernel_shape}, "
                             f"got {self.mask.shape}.")
        kernel = self.kernel[...]
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        if not self.transpose_kernel:  # lax's un-transposed kernel: flip and swap for the
            kernel = jnp.flip(kernel, tuple(range(n))).swapaxes(-1, -2)  # forward conv's
        padding = canonicalize_padding(self.padding, n)
        if isinstance(padding, str):
            if padding not in ("SAME", "VALID", "CIRCULAR"):
                raise ValueError(f"{op}: padding {self.padding!r} is not one of 'SAME', "
                                 f"'VALID', 'CIRCULAR' or explicit pads, as in "
                                 f"flax.nnx.ConvTranspose.")
            y = conv_transpose(inputs, kernel, stride=strides,
                               padding="VALID" if padding == "CIRCULAR" else padding,
                               dilation=dilation, precision=self.precision,
                               algorithm=self.algorithm)
        else:
            y = dilated_input_conv(inputs, kernel, kernel_size=self.kernel_size, stride=strides,
                                   pads=padding, dilation=dilation, groups=1,
                                   layout=_LAYOUTS[n], precision=self.precision,
                                   algorithm=self.algorithm)
        if padding == "CIRCULAR":
            y = _wrap_periodically(y, inputs.shape[1:-1], strides, self.transpose_kernel)
        if batch_dims != 1:
            y = jnp.reshape(y, (*batch_shape, *y.shape[1:]))
        if bias is not None:
            y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y


def _per_dim(value, n: int) -> tuple[int, ...]:
    """flax's ``maybe_broadcast``: None is 1, an int is repeated."""
    if value is None or isinstance(value, int):
        return (1 if value is None else value,) * n
    return tuple(value)


def _wrap_periodically(y, in_sizes, strides, transpose_kernel):
    """flax.nnx.ConvTranspose's ``"CIRCULAR"`` padding (the same steps as its code): pad each
    spatial dim of the ``"VALID"`` result to whole periods ``in * stride`` and sum them."""
    periods = [m * s for m, s in zip(in_sizes, strides, strict=True)]
    diffs = [-(n - p) % (2 * p) for n, p in zip(y.shape[1:-1], periods, strict=True)]
    if transpose_kernel:
        pads = [(d // 2, (d + 1) // 2) for d in diffs]
    else:
        pads = [((d + 1) // 2, d // 2) for d in diffs]
    y = jnp.pad(y, [(0, 0), *pads, (0, 0)])
    for i in range(1, y.ndim - 1):
        y = y.reshape(y.shape[:i] + (-1, periods[i - 1]) + y.shape[i + 1:]).sum(axis=i)
    return y
