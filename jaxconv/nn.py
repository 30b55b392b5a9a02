"""The stacked-filter model: small immutable layer descriptions with ``init``/``apply``.

Params are plain pytrees (dicts of arrays keyed by layer name); every fixed setting lives in
the (hashable, frozen) layer description and never becomes a leaf. Channels-last throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import _activations as activations
from jaxconv import _checks
from jaxconv import _padding as padding_lib
from jaxconv import _pooling as pooling
from jaxconv import _shapes as shapes
from jaxconv._conv import conv, conv_transpose
from jaxconv._typing import Array, ArrayLike

Params = dict[str, Any]
Initializer = Callable[..., Array]
Shape = tuple[int, ...]


def _shape(op: str, input_shape: Sequence[int], min_rank: int) -> Shape:
    if (hasattr(input_shape, "shape") and hasattr(input_shape, "dtype")
            and len(input_shape.shape) == 1 and jnp.issubdtype(input_shape.dtype, jnp.integer)
            and not isinstance(input_shape, jax.core.Tracer)):
        # the sizes themselves in an integer array: "pass its .shape" would be wrong advice
        sizes = tuple(int(s) for s in np.asarray(input_shape).tolist())
        raise TypeError(
            f"{op}: input_shape must be a sequence of ints, got an integer array {sizes}; if "
            f"those are the sizes, pass them as a tuple: tuple(int(s) for s in input_shape) "
            f"(for an input x, pass x.shape)."
        )
    return _checks.check_shape(op, "input_shape", input_shape, min_rank=min_rank, minimum=1,
                               rank_hint="(batch, ..., channels)")


def _check_apply(layer, params: Params, shape: Shape) -> None:
    """Traces ``layer.apply`` on the shape: every setting is validated by the op it feeds."""
    jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct(shape, jnp.float32))


def _frozen(value):
    """Lists as tuples, recursively, and numpy ints as Python ints: ``padding=[(1, 1), (1, 1)]``
    must not make a layer unhashable (``Stack.init`` compiles once per model, keyed on its
    hash), and ``stride=np.int64(2)`` is the same setting as ``stride=2``."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if _checks.is_int(value):
        return int(value)
    return value


def _padding_setting(op: str, padding):
    """``padding`` checked, with a name upper-cased (``"same"`` is ``"SAME"``: layers built
    with either compare and hash equal) and lists as tuples."""
    form = padding_lib.check_padding(op, padding)
    return form if isinstance(form, str) else _frozen(padding)


def _set(layer, name: str, value) -> None:
    object.__setattr__(layer, name, value)


def _spatial(op: str, name: str, value):
    """A per-spatial-dim setting (kernel_size, stride, dilation, window): an int >= 1 or a
    non-empty sequence of them; its length is checked against the input's rank at init."""
    _checks.normalize_tuple(op, name, value, None)
    return _frozen(value)


@contextlib.contextmanager
def _named(op: str, *inner: str):
    """Errors raised by the op a layer calls name the layer: ``"conv: ..."`` becomes
    ``"nn.Conv: ..."`` in place (type, traceback and notes stay as they were)."""
    try:
        yield
    except (ValueError, TypeError) as e:
        if type(e) not in (ValueError, TypeError) or not e.args or not isinstance(e.args[0], str):
            raise  # jax's own subclasses (tracer errors) keep their message
        msg = e.args[0]
        for name in inner:
            msg = msg.removeprefix(f"{name}: ")
        if msg != e.args[0]:
            e.args = (f"{op}: {msg}", *e.args[1:])
        raise


# jax's named variance-scaling initialisers, by the settings their closure holds
_VARIANCE_SCALING_NAMES = {
    (1.0, "fan_avg", "uniform"): "glorot_uniform",
    (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
    (1.0, "fan_in", "uniform"): "lecun_uniform",
    (1.0, "fan_in", "truncated_normal"): "lecun_normal",
    (2.0, "fan_in", "uniform"): "he_uniform",
    (2.0, "fan_in", "truncated_normal"): "he_normal",
}


def _variance_scaling_name(fn) -> str | None:
    """``he_normal()``, ``glorot_uniform(in_axis=-3)`` or ``variance_scaling(...)`` for an
    initialiser made by ``jax.nn.initializers.variance_scaling`` (they all share one
    ``__qualname__``, ``variance_scaling.<locals>.init``); None for any other function."""
    if getattr(fn, "__qualname__", "") != "variance_scaling.<locals>.init":
        return None
    try:
        cells = inspect.getclosurevars(fn).nonlocals
        scale, mode, dist = float(cells["scale"]), cells["mode"], cells["distribution"]
    except (KeyError, TypeError, ValueError):
        return None
    axes = {"in_axis": -2, "out_axis": -1, "batch_axis": ()}
    extra = ", ".join(f"{k}={cells[k]!r}" for k, d in axes.items()
                      if k in cells and cells[k] != d)
    name = _VARIANCE_SCALING_NAMES.get((scale, mode, dist))
    if name is None:
        args = f"scale={scale!r}, mode={mode!r}, distribution={dist!r}"
        return f"variance_scaling({args}{', ' + extra if extra else ''})"
    return f"{name}({extra})"


def _show(value) -> str:
    """A setting in a repr: functions by name, never by address."""
    if callable(value) and not isinstance(value, type):
        vs_name = _variance_scaling_name(value)
        if vs_name is not None:
            return f"<function jax.nn.initializers.{vs_name}>"
        name = getattr(value, "__qualname__", None) or type(value).__qualname__
        module = getattr(value, "__module__", None) or ""
        prefix = "jax.nn.initializers." if module.startswith("jax.") else ""
        return f"<function {prefix}{name}>"
    return repr(value)


class _Layer:
    """What every layer shares: a repr of its class and settings, as equinox and flax print
    modules: the required settings and those changed from their default (a layer with one
    setting always shows it); functions by name, never by address."""

    def __repr__(self) -> str:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        shown = [
            f"{f.name}={_show(getattr(self, f.name))}"
            for f in fields
            if len(fields) == 1 or not _is_default(getattr(self, f.name), f.default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def _is_default(value, default) -> bool:
    if default is dataclasses.MISSING:
        return False
    return value is default or (type(value) is type(default) and value == default)


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


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


@dataclasses.dataclass(frozen=True, repr=False)
class Conv(_Layer):
    """A convolution layer over channels-last input ``[N, *spatial, C]``.

    Every setting is checked when the layer is made (``nn.Conv(8, padding="SMAE")`` raises
    there, naming ``nn.Conv``); what depends on the input (its rank, its channels) at ``init``.

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
        op = "nn.Conv"
        _set(self, "features", _checks.check_count(op, "features", self.features))
        for name in ("kernel_size", "stride", "dilation"):
            _set(self, name, _spatial(op, name, getattr(self, name)))
        _set(self, "padding", _padding_setting(op, self.padding))
        _set(self, "pad_mode",
             _checks.check_choice(op, "pad_mode", self.pad_mode, padding_lib.PAD_MODES))
        _set(self, "groups", _checks.check_groups(op, self.groups))
        _set(self, "use_bias", _checks.check_bool(op, "use_bias", self.use_bias))
        _set(self, "flip", _checks.check_bool(op, "flip", self.flip))
        from jaxconv.lowering import algorithms  # conv's own list; lowering imports no layer

        _checks.check_choice(op, "algorithm", self.algorithm, algorithms(), fold_case=False)
        _checks.check_callable(op, "kernel_init", self.kernel_init)
        _checks.check_callable(op, "bias_init", self.bias_init)

    def _kernel_shape(self, input_shape: Shape) -> Shape:
        n = len(input_shape) - 2
        k = _checks.normalize_tuple("nn.Conv", "kernel_size", self.kernel_size, n)
        in_ch = input_shape[-1]
        if in_ch % self.groups:
            raise ValueError(
                f"nn.Conv: in_channels (={in_ch}) must be divisible by groups (={self.groups})."
            )
        return (*k, in_ch // self.groups, self.features)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params ``{"kernel": (*kernel_size, C // groups, features), "bias": (features,)}``."""
        _checks.check_key("nn.Conv.init", key)
        shape = _shape("nn.Conv", input_shape, 3)
        kshape = self._kernel_shape(shape)
        self.output_shape(shape)  # validates the whole configuration before any randomness
        k_key, b_key = jax.random.split(key)
        params = {"kernel": self.kernel_init(k_key, kshape, jnp.float32)}
        if self.use_bias:
            params["bias"] = self.bias_init(b_key, (self.features,), jnp.float32)
        with _named("nn.Conv", "conv"):
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
                    "nn.Conv", f"params['kernel'] has shape {k_shape}, made for inputs with "
                    f"{made_for} channel(s), but x has shape {x_shape} "
                    f"({str(e).rstrip('.')})")) from None
            raise
        return _add_bias(y, params["bias"]) if self.use_bias else y

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.Conv", input_shape, 3)
        kernel = self._kernel_shape(shape)
        with _named("nn.Conv", "conv", "output_shape"):
            return shapes.output_shape(
                shape,
                kernel,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                groups=self.groups,
            )


def _own_to_forward(kernel: Array, groups: int) -> Array:
    """A transposed conv's kernel drawn in its own orientation ``(*k, C // groups, features)``
    as ``conv_transpose``'s forward-conv kernel ``(*k, features // groups, C)``: within each
    group the in and out channels swap."""
    *k, c_g, features = kernel.shape
    f_g = features // groups
    grouped = kernel.reshape(*k, c_g, groups, f_g)
    n = len(k)
    return jnp.transpose(grouped, (*range(n), n + 2, n + 1, n)).reshape(*k, f_g, c_g * groups)


@dataclasses.dataclass(frozen=True, repr=False)
class ConvTranspose(_Layer):
    """A transposed convolution layer (``jaxconv.conv_transpose``) over ``[N, *spatial, C]``:
    the upsampling layer of decoders and U-Nets.

    ``params["kernel"]`` is ``conv_transpose``'s ``w``, the kernel of the forward conv this
    layer transposes: ``(*kernel_size, features // groups, C)`` (torch's ``ConvTranspose``
    weight ``(C, features // groups, *k)`` channels-last). It is initialised in the layer's
    own orientation: ``kernel_init`` is called with ``(*kernel_size, C // groups, features)``,
    so fan-in is ``prod(kernel_size) * C // groups``, as for flax's ``ConvTranspose``.

    Attributes:
      features: number of output channels.
      kernel_size: int or per-spatial-dim tuple.
      stride: the upsampling factor per spatial dim.
      padding: as in ``jaxconv.conv_transpose``: ``"SAME"`` (output ``in * stride``),
        ``"VALID"`` (``(in - 1) * stride + max(k, stride)``), as ``lax.conv_transpose``;
        or the forward conv's ``"FULL"``/``"CAUSAL"``, ints or ``(low, high)`` pairs.
      output_padding, dilation, groups, algorithm: as in ``jaxconv.conv_transpose``.
      use_bias: add a learned per-channel bias.
      kernel_init: a ``jax.nn.initializers`` initializer (default lecun-normal).
      bias_init: initializer of the bias (default zeros).

    Example:
      >>> import jax, jaxconv.nn as nn
      >>> up = nn.ConvTranspose(4, 2, stride=2, padding="SAME")
      >>> params = up.init(jax.random.key(0), (1, 5, 5, 8))
      >>> params["kernel"].shape, up.output_shape((1, 5, 5, 8))
      ((2, 2, 4, 8), (1, 10, 10, 4))
    """

    features: int
    kernel_size: int | tuple[int, ...] = 3
    stride: int | tuple[int, ...] = 1
    padding: Any = "VALID"
    output_padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    use_bias: bool = True
    algorithm: str = "auto"
    kernel_init: Initializer = jax.nn.initializers.lecun_normal()
    bias_init: Initializer = jax.nn.initializers.zeros

    kind = "conv_transpose"

    def __post_init__(self):
        op = "nn.ConvTranspose"
        _set(self, "features", _checks.check_count(op, "features", self.features))
        for name in ("kernel_size", "stride", "dilation"):
            _set(self, name, _spatial(op, name, getattr(self, name)))
        _checks.normalize_tuple(op, "output_padding", self.output_padding, None, minimum=0)
        _set(self, "output_padding", _frozen(self.output_padding))
        _set(self, "padding", _padding_setting(op, self.padding))
        _set(self, "groups", _checks.check_groups(op, self.groups))
        if self.features % self.groups:
            raise ValueError(f"{op}: features (={self.features}) must be divisible by groups "
                             f"(={self.groups}).")
        _set(self, "use_bias", _checks.check_bool(op, "use_bias", self.use_bias))
        from jaxconv.lowering import algorithms

        _checks.check_choice(op, "algorithm", self.algorithm, algorithms(), fold_case=False)
        _checks.check_callable(op, "kernel_init", self.kernel_init)
        _checks.check_callable(op, "bias_init", self.bias_init)

    def _own_kernel_shape(self, input_shape: Shape) -> Shape:
        k = _checks.normalize_tuple("nn.ConvTranspose", "kernel_size", self.kernel_size,
                                    len(input_shape) - 2)
        in_ch = input_shape[-1]
        if in_ch % self.groups:
            raise ValueError(f"nn.ConvTranspose: in_channels (={in_ch}) must be divisible by "
                             f"groups (={self.groups}).")
        return (*k, in_ch // self.groups, self.features)

    def _kernel_shape(self, input_shape: Shape) -> Shape:
        *k, c_g, features = self._own_kernel_shape(input_shape)
        return (*k, features // self.groups, c_g * self.groups)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params ``{"kernel": (*kernel_size, features // groups, C), "bias": (features,)}``."""
        _checks.check_key("nn.ConvTranspose.init", key)
        shape = _shape("nn.ConvTranspose", input_shape, 3)
        own = self._own_kernel_shape(shape)
        self.output_shape(shape)
        k_key, b_key = jax.random.split(key)
        kernel = _own_to_forward(self.kernel_init(k_key, own, jnp.float32), self.groups)
        params = {"kernel": kernel}
        if self.use_bias:
            params["bias"] = self.bias_init(b_key, (self.features,), jnp.float32)
        with _named("nn.ConvTranspose", "conv_transpose"):
            _check_apply(self, params, shape)
        return params

    def apply(self, params: Params, x: ArrayLike) -> Array:
        kernel = params["kernel"]
        x_shape, k_shape = tuple(jnp.shape(x)), tuple(jnp.shape(kernel))
        if x_shape and len(k_shape) >= 2 and k_shape[-1] != x_shape[-1]:
            raise ValueError(_stale_params(
                "nn.ConvTranspose", f"params['kernel'] has shape {k_shape}, made for inputs "
                f"with {k_shape[-1]} channel(s), but x has shape {x_shape}"))
        with _named("nn.ConvTranspose", "conv_transpose"):
            y = conv_transpose(
                x,
                kernel,
                stride=self.stride,
                padding=self.padding,
                output_padding=self.output_padding,
                dilation=self.dilation,
                groups=self.groups,
                algorithm=self.algorithm,
            )
        return _add_bias(y, params["bias"]) if self.use_bias else y

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.ConvTranspose", input_shape, 3)
        kernel = self._kernel_shape(shape)
        with _named("nn.ConvTranspose", "conv_transpose", "output_shape"):
            return shapes.output_shape(
                shape,
                kernel,
                stride=self.stride,
                padding=self.padding,
                output_padding=self.output_padding,
                dilation=self.dilation,
                groups=self.groups,
                op="conv_transpose",
            )


@dataclasses.dataclass(frozen=True, repr=False)
class Identity(_Layer):
    """Returns its input: the skip branch of a ``Parallel`` (e.g. a U-Net's skip connection)."""

    kind = "identity"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return jnp.asarray(x)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return _shape("nn.Identity", input_shape, 1)


@dataclasses.dataclass(frozen=True, repr=False)
class Activation(_Layer):
    """An elementwise activation by name (see ``jaxconv.activation``), e.g. ``"relu"``;
    a misspelt name raises when the layer is made."""

    name: str = "relu"

    kind = "activation"

    def __post_init__(self):
        activations.lookup("nn.Activation", "name", self.name)
        _set(self, "name", self.name.lower())  # "ReLU" is "relu": equal layers compare equal

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return activations.activation(self.name)(x)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return tuple(input_shape)


@dataclasses.dataclass(frozen=True, repr=False)
class _Pool(_Layer):
    kind: ClassVar[str]  # "max_pool" or "avg_pool": the op whose errors are renamed

    window: int | tuple[int, ...] = 2
    stride: int | tuple[int, ...] | None = None
    padding: Any = "VALID"

    def __post_init__(self):
        op = f"nn.{type(self).__name__}"
        _set(self, "window", _spatial(op, "window", self.window))
        if self.stride is not None:
            _set(self, "stride", _spatial(op, "stride", self.stride))
        _set(self, "padding", _padding_setting(op, self.padding))

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        op = f"nn.{type(self).__name__}"
        shape = _shape(op, input_shape, 3)
        self.output_shape(shape)
        with _named(op, self.kind):
            _check_apply(self, {}, shape)
        return {}

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        op = f"nn.{type(self).__name__}"
        shape = _shape(op, input_shape, 3)
        with _named(op, "pool", "output_shape"):
            return shapes.output_shape(
                shape, self.window, stride=self.stride, padding=self.padding, op="pool"
            )


@dataclasses.dataclass(frozen=True, repr=False)
class MaxPool(_Pool):
    """Max pooling over the spatial dims (see ``jaxconv.max_pool``)."""

    kind = "max_pool"

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return pooling.max_pool(x, self.window, stride=self.stride, padding=self.padding)


@dataclasses.dataclass(frozen=True, repr=False)
class AvgPool(_Pool):
    """Average pooling over the spatial dims (see ``jaxconv.avg_pool``)."""

    count_include_pad: bool = True

    kind = "avg_pool"

    def __post_init__(self):
        super().__post_init__()
        _set(self, "count_include_pad",
             _checks.check_bool("nn.AvgPool", "count_include_pad", self.count_include_pad))

    def apply(self, params: Params, x: ArrayLike) -> Array:
        return pooling.avg_pool(
            x,
            self.window,
            stride=self.stride,
            padding=self.padding,
            count_include_pad=self.count_include_pad,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class GlobalPool(_Layer):
    """Pools every spatial dim away: ``[N, *spatial, C] -> [N, C]`` (``"avg"`` or ``"max"``,
    case-insensitive; kept lower-case)."""

    reduce: str = "avg"

    kind = "global_pool"

    def __post_init__(self):
        _set(self, "reduce", _checks.check_choice("nn.GlobalPool", "reduce", self.reduce,
                                                  ("avg", "max")))

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        self.output_shape(input_shape)
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 3:
            # [N, C] has no spatial dim: reducing over none would return it unchanged
            raise ValueError(
                f"nn.GlobalPool: x must have rank >= 3 ([N, *spatial, C]), got shape "
                f"{x.shape}, which has no spatial dim to pool; drop the layer, or apply it "
                f"before the layer that removed the spatial dims."
            )
        axes = tuple(range(1, x.ndim - 1))
        return jnp.mean(x, axes) if self.reduce == "avg" else jnp.max(x, axes)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.GlobalPool", input_shape, 3)
        return (shape[0], shape[-1])


@dataclasses.dataclass(frozen=True, repr=False)
class Flatten(_Layer):
    """Flattens everything but the batch axis: ``[N, ...] -> [N, prod(...)]``."""

    kind = "flatten"

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        return {}

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], -1)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.Flatten", input_shape, 1)
        return (shape[0], math.prod(shape[1:]))


@dataclasses.dataclass(frozen=True, repr=False)
class Dense(_Layer):
    """A fully connected layer on the last axis: ``[..., C] -> [..., features]``."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = jax.nn.initializers.lecun_normal()
    bias_init: Initializer = jax.nn.initializers.zeros

    kind = "dense"

    def __post_init__(self):
        op = "nn.Dense"
        _set(self, "features", _checks.check_count(op, "features", self.features))
        _set(self, "use_bias", _checks.check_bool(op, "use_bias", self.use_bias))
        _checks.check_callable(op, "kernel_init", self.kernel_init)
        _checks.check_callable(op, "bias_init", self.bias_init)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        _checks.check_key("nn.Dense.init", key)
        shape = _shape("nn.Dense", input_shape, 1)
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
                "nn.Dense", f"x of shape {x.shape} has {got} features on its last axis, but "
                f"params['kernel'] has shape {kernel.shape}, made for inputs with {made_for} "
                "features"))
        y = x @ kernel
        return _add_bias(y, params["bias"]) if self.use_bias else y

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.Dense", input_shape, 1)
        return (*shape[:-1], self.features)


def _is_layer(value) -> bool:
    return all(callable(getattr(value, m, None)) for m in ("init", "apply", "output_shape"))


def _block_repr(name: str, names: Sequence[str], layers: Sequence) -> str:
    """``Name(`` then one indented ``layer_name: Layer(...)`` line per layer, then ``)``."""
    lines = [f"  {n}: {_indent(repr(layer))}," for n, layer in zip(names, layers, strict=True)]
    return "\n".join([f"{name}(", *lines, ")"])


@dataclasses.dataclass(frozen=True, repr=False)
class Stack:
    """Layers applied in order; params and features are keyed by layer name.

    Names are ``f"{layer.kind}_{index}"`` (e.g. ``"conv_0"``, ``"activation_1"``) unless given.
    ``repr`` prints one ``name: layer`` line per layer, nested blocks indented.

    Example:
      >>> import jax, jaxconv.nn as nn
      >>> model = nn.Stack([nn.Conv(2, 3), nn.Activation("relu"), nn.Conv(1, 3)])
      >>> params = model.init(jax.random.key(0), (8, 12, 12, 1))
      >>> model.apply(params, jax.numpy.ones((8, 12, 12, 1))).shape
      (8, 8, 8, 1)
      >>> model
      Stack(
        conv_0: Conv(features=2),
        activation_1: Activation(name='relu'),
        conv_2: Conv(features=1),
      )
    """

    layers: tuple
    names: tuple[str, ...]  # always set by __init__ (generated when not given)

    def __init__(self, layers: Sequence, names: Sequence[str] | None = None):
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise TypeError(
                f"nn.Stack: layers must be a sequence of layers, got {type(layers).__name__}; "
                "wrap a single layer in a list: nn.Stack([layer])."
            )
        layers = tuple(layers)
        if not layers:
            raise ValueError("nn.Stack: needs at least one layer, got none.")
        for i, layer in enumerate(layers):
            if not _is_layer(layer):
                raise TypeError(
                    f"nn.Stack: layers[{i}] must be a layer (with init, apply and "
                    f"output_shape, e.g. nn.Conv(4)), got {type(layer).__name__} {layer!r}."
                )
        if names is None:
            names = tuple(f"{getattr(l, 'kind', type(l).__name__.lower())}_{i}"
                          for i, l in enumerate(layers))
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise TypeError(f"nn.Stack: names must be a sequence of strings, got {names!r}.")
        names = tuple(names)
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"nn.Stack: names must be strings, got {names}.")
        if len(names) != len(layers) or len(set(names)) != len(names):
            raise ValueError(
                f"nn.Stack: names must be unique, one per layer ({len(layers)}), got {names}."
            )
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "names", names)

    def __repr__(self) -> str:
        return _block_repr("Stack", self.names, self.layers)

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params for every layer that has any, keyed by layer name.

        Runs as one compiled call (cached per model and shape): eager initialisation would
        compile every random draw separately.
        """
        _checks.check_key("nn.Stack.init", key)
        return _jit_init(self, key, _shape("nn.Stack", input_shape, 1))

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
                msg = str(e.args[0]).removeprefix(f"nn.{kind}: ").removeprefix(f"{kind}: ")
                e.args = (f"nn.Stack layer {name!r} ({kind}): {msg}", *e.args[1:])
                raise
            features[name] = x
        return (x, features) if return_features else x

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return self.shapes(input_shape)[self.names[-1]]

    def shapes(self, input_shape: Sequence[int]) -> dict[str, Shape]:
        """Each layer's output shape, keyed by name."""
        out, shape = {}, _shape("nn.Stack", input_shape, 1)
        for name, layer in zip(self.names, self.layers, strict=True):
            shape = layer.output_shape(shape)
            out[name] = shape
        return out


@dataclasses.dataclass(frozen=True, repr=False)
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
                    "nn.Residual: names are for a sequence of layers; a Stack has its own names, "
                    "so pass either nn.Residual(stack) or nn.Residual(layers, names)."
                )
            block = layers
        elif isinstance(layers, Sequence) and not isinstance(layers, str):
            block = Stack(layers, names)
        else:
            raise TypeError(
                f"nn.Residual: layers must be a sequence of layers or an nn.Stack, got "
                f"{type(layers).__name__}; wrap a single layer in a list: nn.Residual([layer])."
            )
        object.__setattr__(self, "block", block)

    def __repr__(self) -> str:
        return _block_repr("Residual", self.block.names, self.block.layers)

    def _check_same(self, shape: Shape, out: Shape) -> None:
        if tuple(out) != tuple(shape):
            raise ValueError(
                f"nn.Residual: the block must keep its input's shape to be added to it, but it "
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
        shape = _shape("nn.Residual", input_shape, 1)
        self._check_same(shape, self.block.output_shape(shape))
        return shape


def _as_block(op: str, what: str, layers) -> Any:
    """A layer as it is, or a sequence of layers as a ``Stack``."""
    if _is_layer(layers):
        return layers
    if isinstance(layers, Sequence) and not isinstance(layers, str):
        return Stack(layers)
    raise TypeError(
        f"{op}: {what} must be a layer (with init, apply and output_shape, e.g. nn.Conv(4)) "
        f"or a sequence of layers, got {type(layers).__name__} {layers!r}."
    )


def _prefix_error(e: BaseException, where: str, layer) -> None:
    """Names the layer an error came from, in place (type, traceback and notes kept)."""
    if type(e) not in (ValueError, TypeError) or not e.args:
        return  # jax's own subclasses (tracer errors) keep their message
    kind = type(layer).__name__
    msg = str(e.args[0]).removeprefix(f"nn.{kind}: ").removeprefix(f"{kind}: ")
    e.args = (f"{where} ({kind}): {msg}", *e.args[1:])


@dataclasses.dataclass(frozen=True, repr=False)
class Parallel:
    """Branches applied to the same input, their outputs merged: concatenated along the
    channel (last) axis (``merge="concat"``) or added (``merge="add"``).

    The branch-and-merge block of U-Nets (``Parallel([Identity(), down_and_up],
    merge="concat")``), Inception blocks (parallel convs, concatenated) and residual blocks
    with a projection (``Parallel([block, Conv(features, 1)], merge="add")``). ``init`` and
    ``output_shape`` check that the branches' output shapes can merge: equal but for the
    channels for ``"concat"``, equal for ``"add"``.

    Attributes:
      branches: the branches, each a layer (a sequence of layers becomes a ``Stack``).
      names: one per branch; ``f"{kind}_{index}"`` (e.g. ``"identity_0"``, ``"stack_1"``)
        unless given. Params are keyed by them (branches without params are left out).
      merge: ``"concat"`` or ``"add"`` (case-insensitive).

    Example:
      >>> import jax, jaxconv.nn as nn
      >>> block = nn.Parallel([nn.Conv(4, 1), nn.Conv(2, 3, padding="SAME")], merge="concat")
      >>> params = block.init(jax.random.key(0), (2, 8, 8, 3))
      >>> sorted(params), block.output_shape((2, 8, 8, 3))
      (['conv_0', 'conv_1'], (2, 8, 8, 6))
    """

    branches: tuple
    names: tuple[str, ...]
    merge: str

    kind = "parallel"

    def __init__(self, branches: Sequence, names: Sequence[str] | None = None, *,
                 merge: str = "concat"):
        op = "nn.Parallel"
        if isinstance(branches, str) or not isinstance(branches, Sequence) or _is_layer(
                branches):
            raise TypeError(
                f"{op}: branches must be a sequence of branches (layers or sequences of "
                f"layers), got {type(branches).__name__}."
            )
        blocks = tuple(_as_block(op, f"branches[{i}]", b) for i, b in enumerate(branches))
        if len(blocks) < 2:
            raise ValueError(f"{op}: needs at least two branches to merge, got {len(blocks)}.")
        if names is None:
            names = tuple(f"{getattr(b, 'kind', type(b).__name__.lower())}_{i}"
                          for i, b in enumerate(blocks))
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(
                isinstance(n, str) for n in names):
            raise TypeError(f"{op}: names must be a sequence of strings, got {names!r}.")
        names = tuple(names)
        if len(names) != len(blocks) or len(set(names)) != len(names):
            raise ValueError(
                f"{op}: names must be unique, one per branch ({len(blocks)}), got {names}.")
        object.__setattr__(self, "branches", blocks)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "merge", _checks.check_choice(op, "merge", merge,
                                                               ("concat", "add")))

    def __repr__(self) -> str:
        text = _block_repr("Parallel", self.names, self.branches)
        return text.replace("Parallel(", f"Parallel(\n  merge={self.merge!r},", 1)

    def _merged_shape(self, shapes_: Sequence[Shape]) -> Shape:
        first = tuple(shapes_[0])
        listing = ", ".join(f"{n}: {tuple(s)}" for n, s in zip(self.names, shapes_, strict=True))
        if self.merge == "add":
            if any(tuple(s) != first for s in shapes_):
                raise ValueError(
                    f"nn.Parallel: merge='add' needs every branch to give the same shape, got "
                    f"{listing}; match the spatial sizes (stride, padding) and the channels "
                    f"(e.g. a 1x1 nn.Conv projection on the shortcut)."
                )
            return first
        if any(len(s) != len(first) or tuple(s[:-1]) != first[:-1] for s in shapes_):
            raise ValueError(
                f"nn.Parallel: merge='concat' joins the branches along the channel (last) axis, "
                f"so all other dims must agree, got {listing}; match the spatial sizes "
                f"(stride, padding; e.g. padding='SAME', or an nn.ConvTranspose with the "
                f"pool's stride)."
            )
        return (*first[:-1], sum(s[-1] for s in shapes_))

    def init(self, key: Array, input_shape: Sequence[int]) -> Params:
        """Params of every branch that has any, keyed by branch name."""
        shape = _shape("nn.Parallel", input_shape, 1)
        self.output_shape(shape)
        params = {}
        for k, name, branch in zip(jax.random.split(key, len(self.branches)), self.names,
                                   self.branches, strict=True):
            p = branch.init(k, shape)
            if p:
                params[name] = p
        return params

    def apply(self, params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        outs = []
        for name, branch in zip(self.names, self.branches, strict=True):
            try:
                outs.append(branch.apply(params.get(name, {}), x))
            except (ValueError, TypeError) as e:
                _prefix_error(e, f"nn.Parallel branch {name!r}", branch)
                raise
        self._merged_shape([o.shape for o in outs])
        if self.merge == "add":
            out = outs[0]
            for o in outs[1:]:
                out = out + o
            return out
        return jnp.concatenate(outs, axis=-1)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _shape("nn.Parallel", input_shape, 1)
        return self._merged_shape([b.output_shape(shape) for b in self.branches])


Layer = (Conv | ConvTranspose | Activation | MaxPool | AvgPool | GlobalPool | Flatten | Dense
         | Identity | Residual | Parallel)


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
    "ConvTranspose",
    "Dense",
    "Flatten",
    "GlobalPool",
    "Identity",
    "MaxPool",
    "Parallel",
    "Residual",
    "Stack",
]
