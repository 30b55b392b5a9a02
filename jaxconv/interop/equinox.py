"""Drop-in ``equinox.nn.Conv`` and ``equinox.nn.ConvTranspose`` run by ``jaxconv.conv`` (its
planner and pad modes) and ``jaxconv.conv_transpose`` (its phase lowering).

Importing this module imports equinox (extra ``interop``); ``jaxconv`` itself never does.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from jaxconv._conv import conv
from jaxconv.interop._dilated import dilated_input_conv

_PAD_MODES = {"ZEROS": "zeros", "REFLECT": "reflect", "REPLICATE": "replicate",
              "CIRCULAR": "circular"}


def _channels_first(n: int) -> str:
    return {1: "NCW", 2: "NCHW", 3: "NCDHW"}[n]


def _check_rank(op: str, x, n: int, original: str) -> None:
    if jnp.ndim(x) != n + 1:
        raise ValueError(
            f"jaxconv.interop.equinox.{op}: x must have rank {n + 1} (in_channels, {n} "
            f"spatial dims; unbatched, as {original}), got shape {jnp.shape(x)}; use jax.vmap "
            f"over a batch."
        )


class Conv(eqx.nn.Conv):
    """``equinox.nn.Conv`` (same constructor arguments, ``weight`` ``(out_channels,
    in_channels // groups, *kernel_size)`` and ``bias`` ``(out_channels, 1, ..., 1)``, same
    outputs) computed by ``jaxconv.conv`` (``algorithm="auto"``: ``jaxconv.plan`` chooses an
    exact lowering). ``padding_mode`` is equinox's; ``flip`` and ``algorithm`` are jaxconv's.

    Args:
      *args: as ``equinox.nn.Conv`` (``num_spatial_dims``, ``in_channels``, ...).
      flip: True for the mathematical convolution (kernel reversed).
      algorithm: ``"auto"`` or a lowering's name, as in ``jaxconv.conv``.
      **kwargs: as ``equinox.nn.Conv`` (``padding``, ``padding_mode``, ``key``, ...).

    Returns:
      The layer (``layer(x)``: ``[in_channels, *spatial] -> [out_channels, *out_spatial]``,
      unbatched as equinox's; ``jax.vmap`` it over a batch).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxconv.interop import equinox as jeqx
      >>> layer = jeqx.Conv(2, 3, 8, 3, padding="SAME", padding_mode="REFLECT",
      ...                   key=jax.random.key(0))
      >>> layer(jnp.ones((3, 16, 16))).shape
      (8, 16, 16)
    """

    flip: bool = eqx.field(static=True)
    algorithm: str = eqx.field(static=True)

    def __init__(self, *args: Any, flip: bool = False, algorithm: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.flip = flip
        self.algorithm = algorithm

    def __call__(self, x, *, key=None):
        """``[in_channels, *spatial] -> [out_channels, *out_spatial]``, as equinox's."""
        n = self.num_spatial_dims
        _check_rank("Conv", x, n, "equinox.nn.Conv")
        y = conv(jnp.asarray(x)[None], self.weight, stride=self.stride, padding=self.padding,
                 dilation=self.dilation, groups=self.groups, layout=_channels_first(n),
                 pad_mode=_PAD_MODES[self.padding_mode], flip=self.flip,
                 algorithm=self.algorithm)[0]
        if self.use_bias:
            y = y + self.bias
        return y


class ConvTranspose(eqx.nn.ConvTranspose):
    """``equinox.nn.ConvTranspose`` (same constructor arguments, ``weight`` ``(out_channels,
    in_channels // groups, *kernel_size)`` and ``bias``, same outputs, padding and
    ``output_padding`` those of the equivalent ``equinox.nn.Conv``) computed by
    ``jaxconv.conv_transpose``: one ordinary conv whose outputs are the stride's phases, so
    no multiply touches the zeros a strided transposed conv inserts.

    Args:
      *args: as ``equinox.nn.ConvTranspose`` (``num_spatial_dims``, ``in_channels``, ...).
      algorithm: ``"auto"`` or a lowering's name, as in ``jaxconv.conv_transpose``.
      **kwargs: as ``equinox.nn.ConvTranspose`` (``stride``, ``padding``,
        ``output_padding``, ``padding_mode``, ``key``, ...).

    Returns:
      The layer (``layer(x)``: ``[in_channels, *spatial] -> [out_channels, *out_spatial]``,
      unbatched as equinox's; ``jax.vmap`` it over a batch).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxconv.interop import equinox as jeqx
      >>> up = jeqx.ConvTranspose(2, 8, 4, 2, stride=2, key=jax.random.key(0))
      >>> up(jnp.ones((8, 16, 16))).shape
      (4, 32, 32)
    """

    algorithm: str = eqx.field(static=True)

    def __init__(self, *args: Any, algorithm: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm

    def __call__(self, x, *, key=None):
        """``[in_channels, *spatial] -> [out_channels, *out_spatial]``, as equinox's."""
        n = self.num_spatial_dims
        _check_rank("ConvTranspose", x, n, "equinox.nn.ConvTranspose")
        # equinox's own padding of the dilated input (and its circular wrap of the input):
        # private methods of the class this subclasses, checked on equinox 0.13.8 (the tests
        # compare every padding form with equinox's own layer)
        pads = self._padding_transpose()
        if self.padding_mode == "CIRCULAR":
            x, pads = self._circular_pad(x, pads)
        # equinox convolves the dilated input with weight as it is; the forward conv's kernel
        # is that weight flipped, with in and out channels swapped within each group.
        g, spatial = self.groups, tuple(range(2, 2 + n))
        w = jnp.flip(self.weight, spatial)
        w = w.reshape(g, w.shape[0] // g, *w.shape[1:]).swapaxes(1, 2)
        w = w.reshape(-1, *w.shape[2:])
        y = dilated_input_conv(jnp.asarray(x)[None], w, kernel_size=self.kernel_size,
                               stride=self.stride, pads=pads, dilation=self.dilation,
                               groups=g, layout=_channels_first(n), precision=None,
                               algorithm=self.algorithm)[0]
        if self.use_bias:
            y = y + self.bias
        return y
