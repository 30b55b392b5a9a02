"""Elementwise activations as thin, validated names over ``jax.nn``, plus lookup by name.

Must not re-implement any activation: every function delegates to ``jax.nn`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxconv import _checks
from jaxconv._typing import Array, ArrayLike

__all__ = [
    "NAMES",
    "activation",
    "elu",
    "gelu",
    "leaky_relu",
    "relu",
    "sigmoid",
    "silu",
    "softplus",
    "tanh",
]


def _like(param: ArrayLike, x: ArrayLike) -> Array:
    """``param`` in x's dtype: a float32 slope must not promote a bfloat16 ``x``."""
    return jnp.asarray(param, jnp.result_type(x))


def relu(x: ArrayLike) -> Array:
    """Rectified linear unit, ``max(x, 0)`` (``jax.nn.relu``; gradient 0 at 0).

    Args:
      x: [...] any shape, real floating dtype.

    Returns:
      [...] same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.relu(jnp.array([-1.0, 0.0, 2.0])).tolist()
      [0.0, 0.0, 2.0]
    """
    _checks.check_float("relu", "x", x)
    return jax.nn.relu(x)


def leaky_relu(x: ArrayLike, *, negative_slope: ArrayLike = 0.01) -> Array:
    """Leaky ReLU, ``x`` where ``x >= 0`` else ``negative_slope * x`` (``jax.nn.leaky_relu``).

    Args:
      x: [...] any shape, real floating dtype.
      negative_slope: slope for negative inputs, a scalar.

    Returns:
      [...] same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.leaky_relu(jnp.array([-2.0, 3.0]), negative_slope=0.5).tolist()
      [-1.0, 3.0]
    """
    _checks.check_float("leaky_relu", "x", x)
    return jax.nn.leaky_relu(x, negative_slope=_like(negative_slope, x))


def tanh(x: ArrayLike) -> Array:
    """Hyperbolic tangent (``jax.nn.tanh``).

    Args:
      x: [...] any shape, real floating dtype.

    Returns:
      [...] same shape and dtype as ``x``, values in (-1, 1).

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.tanh(jnp.array([0.0])).tolist()
      [0.0]
    """
    _checks.check_float("tanh", "x", x)
    return jax.nn.tanh(x)


def sigmoid(x: ArrayLike) -> Array:
    """Logistic sigmoid, ``1 / (1 + exp(-x))`` (``jax.nn.sigmoid``).

    Args:
      x: [...] any shape, real floating dtype.

    Returns:
      [...] same shape and dtype as ``x``, values in (0, 1).

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.sigmoid(jnp.array([0.0])).tolist()
      [0.5]
    """
    _checks.check_float("sigmoid", "x", x)
    return jax.nn.sigmoid(x)


def gelu(x: ArrayLike, *, approximate: bool = True) -> Array:
    """Gaussian error linear unit (``jax.nn.gelu``).

    Args:
      x: [...] any shape, real floating dtype.
      approximate: True for the tanh approximation (jax's default), False for the exact
        ``x * Phi(x)`` with the normal CDF.

    Returns:
      [...] same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.gelu(jnp.array([0.0, 10.0]), approximate=False).tolist()
      [0.0, 10.0]
    """
    _checks.check_float("gelu", "x", x)
    approximate = _checks.check_bool("gelu", "approximate", approximate)
    return jax.nn.gelu(x, approximate=approximate)


def elu(x: ArrayLike, *, alpha: ArrayLike = 1.0) -> Array:
    """Exponential linear unit, ``x`` where ``x > 0`` else ``alpha * (exp(x) - 1)``.

    Delegates to ``jax.nn.elu``.

    Args:
      x: [...] any shape, real floating dtype.
      alpha: scale of the negative branch, a scalar.

    Returns:
      [...] same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.elu(jnp.array([0.0, 2.0]), alpha=0.5).tolist()
      [0.0, 2.0]
    """
    _checks.check_float("elu", "x", x)
    return jax.nn.elu(x, alpha=_like(alpha, x))


def softplus(x: ArrayLike) -> Array:
    """Softplus, ``log(1 + exp(x))``, computed stably (``jax.nn.softplus``).

    Args:
      x: [...] any shape, real floating dtype.

    Returns:
      [...] same shape and dtype as ``x``, values > 0.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> round(float(jaxconv.softplus(jnp.array(0.0))), 4)
      0.6931
    """
    _checks.check_float("softplus", "x", x)
    return jax.nn.softplus(x)


def silu(x: ArrayLike) -> Array:
    """Sigmoid linear unit (swish), ``x * sigmoid(x)`` (``jax.nn.silu``).

    Args:
      x: [...] any shape, real floating dtype.

    Returns:
      [...] same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.silu(jnp.array([0.0])).tolist()
      [0.0]
    """
    _checks.check_float("silu", "x", x)
    return jax.nn.silu(x)


def _identity(x: ArrayLike) -> Array:
    """The identity, validated like the other activations (``"identity"``/``"linear"``)."""
    _checks.check_float("identity", "x", x)
    return jnp.asarray(x)


_BY_NAME: dict[str, Callable[[ArrayLike], Array]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "gelu": gelu,
    "elu": elu,
    "softplus": softplus,
    "silu": silu,
    "identity": _identity,
    "linear": _identity,
}

#: Every name ``activation`` accepts (lower case; lookup is case-insensitive).
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def activation(name: str) -> Callable[[ArrayLike], Array]:
    """The activation function called ``name`` (case-insensitive), with default options.

    Args:
      name: one of ``NAMES``: relu, leaky_relu, tanh, sigmoid, gelu, elu, softplus, silu,
        identity, linear (``identity`` and ``linear`` both return ``x`` unchanged).

    Returns:
      A function mapping [...] to [...] of the same shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxconv
      >>> jaxconv.activation("ReLU")(jnp.array([-1.0, 1.0])).tolist()
      [0.0, 1.0]
    """
    return lookup("activation", "name", name)


def lookup(op: str, arg: str, name: str) -> Callable[[ArrayLike], Array]:
    """``activation(name)`` for a caller: its errors name ``op`` and its argument ``arg``."""
    if not isinstance(name, str):
        raise TypeError(
            f"{op}: {arg} must be a string (one of {', '.join(NAMES)}), got "
            f"{type(name).__name__} {name!r}; to use your own function, call it directly."
        )
    return _BY_NAME[_checks.check_choice(op, arg, name, NAMES)]
