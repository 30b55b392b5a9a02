"""A drop-in ``equinox.nn.Conv`` that runs ``jaxconv.conv`` (its planner and pad modes).

Importing this module imports equinox (extra ``interop``); ``jaxconv`` itself never does.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from jaxconv._conv import conv

_PAD_MODES = {"ZEROS": "zeros", "REFLECT": "reflect", "REPLICATE": "replicate",
              "CIRCULAR": "circular"}


def _channels_first(n: int) -> str:
    return {1: "NCW", 2: "NCHW", 3: "NCDHW"}[n]


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
        if jnp.ndim(x) != n + 1:
            raise ValueError(
                f"jaxconv.interop.equinox.Conv: x must have rank {n + 1} (in_channels, {n} "
                f"spatial dims; unbatched, as equinox.nn.Conv), got shape {jnp.shape(x)}; "
                f"use jax.vmap over a batch."
            )
        y = conv(jnp.asarray(x)[None], self.weight, stride=self.stride, padding=self.padding,
                 dilation=self.dilation, groups=self.groups, layout=_channels_first(n),
                 pad_mode=_PAD_MODES[self.padding_mode], flip=self.flip,
                 algorithm=self.algorithm)[0]
        if self.use_bias:
            y = y + self.bias
        return y
