"""Interoperation with other frameworks' layers: torch weights in and out (``from_torch``,
``to_torch``). Each framework is an optional dependency, imported only when a function needs it.
"""

from jaxconv.interop._torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch"]
