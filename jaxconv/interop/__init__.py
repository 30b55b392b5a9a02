"""Interoperation with other frameworks' layers: torch weights in and out (``from_torch``,
``to_torch``), and drop-in ``Conv``/``ConvTranspose`` layers run by ``jaxconv.conv`` /
``jaxconv.conv_transpose`` in ``jaxconv.interop.flax_nnx`` and ``jaxconv.interop.equinox``
(import those modules; extra ``interop``). Each framework is an optional dependency, imported
only when needed.
"""

from jaxconv.interop._torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch"]
