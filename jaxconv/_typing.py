"""Type aliases shared by the package (one place, as optax's ``base.py``)."""

from jax import Array
from jax.typing import ArrayLike, DTypeLike

PyTree = object
__all__ = ["Array", "ArrayLike", "DTypeLike", "PyTree"]
