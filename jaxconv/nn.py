"""The stacked-filter model: small immutable layer descriptions with ``init``/``apply``.

Params are plain pytrees (dicts of arrays keyed by layer name); every fixed setting lives in
the (hashable, frozen) layer description and never becomes a leaf. Channels-last throughout.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv import _checks, activations, pooling, shapes
from jaxconv._typing import Array, ArrayLike
from jaxconv.conv import conv

Params = dict[str, Any]
Initializer = Callable[..., Array]
Shape = tuple[int, ...]


def _describe(value) -> str:
    """``value`` for an error message: an array by its shape alone, anything else by a short
    repr (``model.init(key, X)`` once printed all of ``X``)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}; pass its .shape"
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _shape(op: str, input_shape: Sequence[int], min_rank: int) -> Shape:
    if isinstance(input_shape, str) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"{op}: input_shape must be a sequence of ints, got {_describe(input_shape)}."
        )
    if not all(_checks.is_int(s) for s in input_shape):
        raise TypeError(f"{op}: input_shape must contain ints, got {tuple(input_shape)}.")
    shape = tuple(int(s) for s in input_shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"{op}: input_shape entries must be positive, got {shape}.")
    if len(shape) < min_rank:
        raise ValueError(
            f"{op}: input_shape must have rank >= {min_rank} (batch, ..., channels), got "
            f"{shape}."
        )
    return shape


def _positive_int(op: str, name: str, value) -> int:
    if not _checks.is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{op}: {name} must be positive, got {name}={value}.")
    return int(value)


def _check_apply(layer, params: Params, shape: Shape) -> None:
    """Traces ``layer.apply`` on the shape: every setting is validated by the op it feeds."""
    jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct(shape, jnp.float32))


def _frozen(value):
    """Lists as tuples, recursively: ``padding=[(1, 1), (1, 1)]`` must not make a layer
    unhashable (``Stack.init`` compiles once per model, keyed on its hash)."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _freeze_fields(layer, names: Sequence[str]) -> None:
    for name in names:
        object.__setattr__(layer, name, _frozen(getattr(layer, name)))


def _stale_params(layer: str, what: str) -> str:
    """The likely cause when params do not fit the input they are applied to."""
    return (
        f"{layer}: {what}; the params were likely made by model.init for a different input "
        "shape: make them with model.init(key, x.shape) for the x you apply the model to, or "
        "apply them to inputs of the shape init was given."
    )


def _add_bias(y: Array, bias: Array) -> Array:
    # explicit broadcast: works under jax_numpy_rank_promotion="raise"
    return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution layer over channels-last input ``[N, *spatial, C]``.

    Attributes:
      features: number of output channels.
      kernel_size: int or per-spatial-dim tuple; the rank of the input decides the dims.
      stride, padding, pad_mode, dilation, groups, flip, algorithm: as in ``jaxconv.conv``.
      use_bias: add a learned per-channel bias.
      kernel_init: a ``jax.nn.initializers`` initializer (default lecun-normal), called with
        the kernel shape ``(*kernel_size, C // groups, features)``: fan-in is
        ``prod(kernel_size) * C // groups`` and fan-out ``prod(kernel_size) * features``, as
        in flax's ``Conv``.
      bias_init: initializer of the bias (default zeros).
    """

    features: int
    kernel_size: int | tuple[int, ...] = 3
    stride: int | tuple[int, ...] = 1
    padding: Any = "VALID"
    pad_mode: str = "zeros"
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    use_bias: bool = True
    flip: bool = False
    algorithm: str = "auto"
    kernel_init: Initializer = jax.nn.initializers.lecun_normal()
    bias_init: Initializer = jax.nn.initializers.zeros

    kind = "conv"

    def __post_init__(self):
        _freeze_fields(self, ("kernel_size", "stride", "padding", "dilation"))

    def _kernel_shape(self, input_shape: Shape) -> Shape:
        _positive_int("Conv", "features", self.features)
        _positive_int("Conv", "groups", self.groups)
        n = len(input_shape) - 2
        k = _checks.normalize_tuple("Conv", "kernel_size", self.kernel_size, n)
        in_ch = input_shape[-1]
        if in_ch % self.groups:
            raise ValueError(
                f"Conv: in_channels (={in_ch}) must be divisible by groups (={self.groups})."
            )
        return (*k, in_ch // self.groups, self.features)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params ``{"kernel": (*kernel_size, C // groups, features), "bias": (features,)}``."""
        shape = _shape("Conv", input_shape, 3)
        kshape = self._kernel_shape(shape)
        self.output_shape(shape)  # validates the whole configuration before any randomness
        k_key, b_key = jax.random.split(key)
        params = {"kernel": self.kernel_init(k_key, kshape, jnp.float32)}
        if self.use_bias:
            params["bias"] = self.bias_init(b_key, (self.features,), jnp.float32)
        _check_apply(self, params, shape)
        return params

    def apply(self, params: Params, x: ArrayLike) -> Array:
        kernel = params["kernel"]
        try:
            y = conv(
                x,
                kernel,
                stride=self.stride,
                padding=self.padding,
                pad_mode=self.pad_mode,
                dilation=self.dilation,
                groups=self.groups,
                flip=self.flip,
                algorithm=self.algorithm,
            )
        except ValueError as e:
            x_shape, k_shape = tuple(jnp.shape(x)), tuple(jnp.shape(kernel))
            made_for = k_shape[-2] * self.groups if len(k_shape) >= 2 else None
            if x_shape and made_for != x_shape[-1]:
                # conv's message names the op, not the layer, nor why the shapes disagree
                raise ValueError(_stale_params(
                    "Conv", f"params['kernel'] has shape {k_shape}, made for inputs with "
                    f"{made_for} channel(s), but x has shape {x_shape} "
                    f"({str(e).rstrip('.')})")) from None
            raise
        return _add_bias(y, params["bias"]) if self.use_bias else y

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("Conv", input_shape, 3)
        return shapes.output_shape(
            shape,
            self._kernel_shape(shape),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise activation by name (see ``jaxconv.activation``), e.g. ``"relu"``."""

    name: str = "relu"

    kind = "activation"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        activations.activation(self.name)
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return activations.activation(self.name)(x)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return tuple(input_shape)


@dataclasses.dataclass(frozen=True)
class _Pool:
    window: int | tuple[int, ...] = 2
    stride: int | tuple[int, ...] | None = None
    padding: Any = "VALID"

    def __post_init__(self):
        _freeze_fields(self, ("window", "stride", "padding"))

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        _check_apply(self, {}, _shape(type(self).__name__, input_shape, 3))
        return {}

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape(type(self).__name__, input_shape, 3)
        return shapes.output_shape(
            shape, self.window, stride=self.stride, padding=self.padding, op="pool"
        )


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max pooling over the spatial dims (see ``jaxconv.max_pool``)."""

    kind = "max_pool"

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return pooling.max_pool(x, self.window, stride=self.stride, padding=self.padding)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Average pooling over the spatial dims (see ``jaxconv.avg_pool``)."""

    count_include_pad: bool = True

    kind = "avg_pool"

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return pooling.avg_pool(
            x,
            self.window,
            stride=self.stride,
            padding=self.padding,
            count_include_pad=self.count_include_pad,
        )


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Pools every spatial dim away: ``[N, *spatial, C] -> [N, C]`` (``"avg"`` or ``"max"``)."""

    reduce: str = "avg"

    kind = "global_pool"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        _checks.check_choice("GlobalPool", "reduce", self.reduce, ("avg", "max"))
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        axes = tuple(range(1, x.ndim - 1))
        return jnp.mean(x, axes) if self.reduce == "avg" else jnp.max(x, axes)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("GlobalPool", input_shape, 3)
        return (shape[0], shape[-1])


@dataclasses.dataclass(frozen=True)
class Flatten:
    """Flattens everything but the batch axis: ``[N, ...] -> [N, prod(...)]``."""

    kind = "flatten"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], -1)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("Flatten", input_shape, 1)
        return (shape[0], math.prod(shape[1:]))


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer on the last axis: ``[..., C] -> [..., features]``."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = jax.nn.initializers.lecun_normal()
    bias_init: Initializer = jax.nn.initializers.zeros

    kind = "dense"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        shape = _shape("Dense", input_shape, 1)
        _positive_int("Dense", "features", self.features)
        k_key, b_key = jax.random.split(key)
        params = {"kernel": self.kernel_init(k_key, (shape[-1], self.features), jnp.float32)}
        if self.use_bias:
            params["bias"] = self.bias_init(b_key, (self.features,), jnp.float32)
        return params

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x, kernel = jnp.asarray(x), params["kernel"]
        got = x.shape[-1] if x.ndim else None
        made_for = kernel.shape[0] if kernel.ndim == 2 else None
        if got is None or got != made_for:
            # jax's own message (dot_general's contracting dimensions) names no layer
            raise ValueError(_stale_params(
                "Dense", f"x of shape {x.shape} has {got} features on its last axis, but "
                f"params['kernel'] has shape {kernel.shape}, made for inputs with {made_for} "
                "features"))
        y = x @ kernel
        return _add_bias(y, params["bias"]) if self.use_bias else y

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("Dense", input_shape, 1)
        return (*shape[:-1], _positive_int("Dense", "features", self.features))


@dataclasses.dataclass(frozen=True)
class Stack:
    """Layers applied in order; params and features are keyed by layer name.

    Names are ``f"{layer.kind}_{index}"`` (e.g. ``"conv_0"``, ``"activation_1"``) unless given.

    Example:
      >>> import jax, jaxconv.nn as nn
      >>> model = nn.Stack([nn.Conv(2, 3), nn.Activation("relu"), nn.Conv(1, 3)])
      >>> params = model.init(jax.random.key(0), (8, 12, 12, 1))
      >>> model.apply(params, jax.numpy.ones((8, 12, 12, 1))).shape
      (8, 8, 8, 1)
    """

    layers: tuple
    names: tuple[str, ...]  # always set by __init__ (generated when not given)

    def __init__(self, layers: Sequence, names: Sequence[str] | None = None):
        layers = tuple(layers)
        if not layers:
            raise ValueError("Stack: needs at least one layer, got none.")
        if names is None:
            names = tuple(f"{getattr(l, 'kind', type(l).__name__.lower())}_{i}"
                          for i, l in enumerate(layers))
        names = tuple(names)
        if len(names) != len(layers) or len(set(names)) != len(names):
            raise ValueError(
                f"Stack: names must be unique, one per layer ({len(layers)}), got {names}."
            )
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "names", names)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params for every layer that has any, keyed by layer name.

        Runs as one compiled call (cached per model and shape): eager initialisation would
        compile every random draw separately.
        """
        return _jit_init(self, key, _shape("Stack", input_shape, 1))

    def _init(self, key: Array, input_shape: Shape) -> Params:
        shape = input_shape
        params = {}
        for k, name, layer in zip(
            jax.random.split(key, len(self.layers)), self.names, self.layers, strict=True
        ):
            p = layer.init(k, shape)
            if p:
                params[name] = p
            shape = layer.output_shape(shape)
        return params

    def apply(self, params: Params, x: ArrayLike, *, return_features: bool = False):
        """Runs the stack; with ``return_features`` also every layer's output by name."""
        features = {}
        for name, layer in zip(self.names, self.layers, strict=True):
            try:
                x = layer.apply(params.get(name, {}), x)
            except (ValueError, TypeError) as e:
                if type(e) not in (ValueError, TypeError) or not e.args:
                    raise  # jax's own subclasses (tracer errors) keep their message
                # prefix the layer in place: the type, traceback and notes stay as they were
                kind = type(layer).__name__
                msg = str(e.args[0]).removeprefix(f"{kind}: ")
                e.args = (f"Stack layer {name!r} ({kind}): {msg}", *e.args[1:])
                raise
            features[name] = x
        return (x, features) if return_features else x

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return self.shapes(input_shape)[self.names[-1]]

    def shapes(self, input_shape: Sequence[int]) -> dict[str, Shape]:
        """Each layer's output shape, keyed by name."""
        out, shape = {}, tuple(input_shape)
        for name, layer in zip(self.names, self.layers, strict=True):
            shape = layer.output_shape(shape)
            out[name] = shape
        return out


@dataclasses.dataclass(frozen=True)
class Residual:
    """A skip connection around a block of layers: ``x + block(x)``.

    The block must keep its input's shape: stride 1 and ``padding="SAME"`` in its convs, and as
    many features in its last conv as the input has channels. ``init`` and ``output_shape``
    check this. Params are the block's, keyed by the block's layer names.

    Attributes:
      block: the wrapped layers, as a ``Stack`` (built from the sequence of layers given, or
        the ``Stack`` itself).

    Example:
      >>> import jax, jaxconv.nn as nn
      >>> block = nn.Residual([nn.Conv(4, 3, padding="SAME"), nn.Activation("relu"),
      ...                      nn.Conv(4, 3, padding="SAME")])
      >>> params = block.init(jax.random.key(0), (2, 8, 8, 4))
      >>> sorted(params), block.apply(params, jax.numpy.ones((2, 8, 8, 4))).shape
      (['conv_0', 'conv_2'], (2, 8, 8, 4))
    """

    block: Stack

    kind = "residual"

    def __init__(self, layers: Stack | Sequence, names: Sequence[str] | None = None):
        if isinstance(layers, Stack):
            if names is not None:
                raise ValueError(
                    "Residual: names are for a sequence of layers; a Stack has its own names, "
                    "so pass either nn.Residual(stack) or nn.Residual(layers, names)."
                )
            block = layers
        elif isinstance(layers, Sequence) and not isinstance(layers, str):
            block = Stack(layers, names)
        else:
            raise TypeError(
                f"Residual: layers must be a sequence of layers or an nn.Stack, got "
                f"{type(layers).__name__}; wrap a single layer in a list: nn.Residual([layer])."
            )
        object.__setattr__(self, "block", block)

    def _check_same(self, shape: Shape, out: Shape) -> None:
        if tuple(out) != tuple(shape):
            raise ValueError(
                f"Residual: the block must keep its input's shape to be added to it, but it "
                f"maps {tuple(shape)} to {tuple(out)}; keep the spatial size (stride 1, "
                f'padding="SAME" in every conv and pool) and the channel count (the last '
                f"Conv's features = {shape[-1]}, the input's channels)."
            )

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """The block's params (``Stack.init``) after checking it keeps ``input_shape``."""
        shape = self.output_shape(input_shape)
        return self.block.init(key, shape)

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        y = self.block.apply(params, x)
        self._check_same(x.shape, y.shape)
        return x + y  # equal shapes: nothing broadcasts

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("Residual", input_shape, 1)
        self._check_same(shape, self.block.output_shape(shape))
        return shape


Layer = Conv | Activation | MaxPool | AvgPool | GlobalPool | Flatten | Dense | Residual


def _init_untraced(model: Stack, key: Array, shape: Shape) -> Params:
    # The non-partitionable threefry lowering compiles several times faster on CPU for the
    # small multi-dimensional draws of initializers (and their vmapped restarts).
    with jax.threefry_partitionable(False):
        return model._init(key, shape)


_jit_init = jax.jit(_init_untraced, static_argnums=(0, 2))

__all__ = [
    "Activation",
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalPool",
    "MaxPool",
    "Residual",
    "Stack",
]
