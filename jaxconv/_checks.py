"""Argument normalisation and validation for every public op, in one place.

Each check raises ``ValueError`` (shapes, values) or ``TypeError`` (dtypes) with a message
naming the op, the argument, what was expected, what came, and how to fix it. Nothing here
touches array data: all checks run in Python at trace time.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, TypeGuard, overload

import jax.numpy as jnp
import numpy as np

# Spatial letters per number of spatial dims, for the named layouts.
_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


class Layout(NamedTuple):
    """A resolved data layout.

    Attributes:
      name: the layout string, e.g. ``"NHWC"`` (``"N...C"`` / ``"NC..."`` beyond 3-D).
      channels_last: whether channels are the last axis (kernel ``(*spatial, in, out)``);
        otherwise channels follow the batch axis (kernel ``(out, in, *spatial)``).
      ndim: number of spatial dims.
    """

    name: str
    channels_last: bool
    ndim: int

    @property
    def channel_axis(self) -> int:
        return self.ndim + 1 if self.channels_last else 1

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 1 if self.channels_last else 2
        return tuple(range(start, start + self.ndim))

    @property
    def kernel_spatial_axes(self) -> tuple[int, ...]:
        start = 0 if self.channels_last else 2
        return tuple(range(start, start + self.ndim))

    @property
    def kernel_in_axis(self) -> int:
        return self.ndim if self.channels_last else 1

    @property
    def kernel_out_axis(self) -> int:
        return self.ndim + 1 if self.channels_last else 0

    def dimension_numbers(self):
        """``lax.ConvDimensionNumbers`` for this layout (same as the string form)."""
        from jax import lax

        n = self.ndim
        if self.channels_last:
            lhs = (0, n + 1, *range(1, n + 1))
            rhs = (n + 1, n, *range(n))
        else:
            lhs = (0, 1, *range(2, n + 2))
            rhs = (0, 1, *range(2, n + 2))
        return lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=rhs, out_spec=lhs)

    def kernel_doc(self) -> str:
        if self.channels_last:
            return f"(*spatial, in_channels // groups, out_channels) for {self.name}"
        return f"(out_channels, in_channels // groups, *spatial) for {self.name}"


def valid_layouts(ndim: int) -> tuple[str, ...]:
    if ndim in _SPATIAL_LETTERS:
        s = _SPATIAL_LETTERS[ndim]
        return (f"N{s}C", f"NC{s}")
    return ()


def resolve_layout(op: str, layout: str | None, ndim: int) -> Layout:
    """Resolves ``layout`` (None = channels-last by rank) for ``ndim`` spatial dims."""
    if ndim < 1:
        raise ValueError(f"{op}: needs at least 1 spatial dim, got {ndim}.")
    if layout is None:
        name = f"N{_SPATIAL_LETTERS[ndim]}C" if ndim in _SPATIAL_LETTERS else "N...C"
        return Layout(name, True, ndim)
    if not isinstance(layout, str):
        raise TypeError(f"{op}: layout must be a string or None, got {type(layout).__name__}.")
    name = layout.upper()
    valid = valid_layouts(ndim)
    if name not in valid:
        hint = (
            f"one of {', '.join(repr(v) for v in valid)} or None (channels-last)"
            if valid
            else "None (channels-last) for more than 3 spatial dims"
        )
        raise ValueError(
            f"{op}: unknown layout {layout!r} for {ndim} spatial dim(s); expected {hint}."
            f"{closest(layout, valid)}"
        )
    return Layout(name, name.endswith("C"), ndim)


def check_float(op: str, name: str, x: Any) -> None:
    """TypeError unless ``x`` is an array or scalar with a real floating dtype."""
    # jnp.result_type reads None as the default float and a string as a dtype name, and
    # rejects lists with a message that names neither the op nor the argument.
    try:
        dtype = None if x is None or isinstance(x, (str, bytes)) else jnp.result_type(x)
    except TypeError:
        dtype = None
    if dtype is None:
        raise TypeError(
            f"{op}: {name} must be an array or a scalar (jax.typing.ArrayLike), got "
            f"{type(x).__name__}; convert it first, e.g. jnp.asarray({name}, jnp.float32)."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{op}: {name} must have a real floating dtype (float32, float64, bfloat16, "
            f"float16), got {dtype}; cast it first, e.g. {name}.astype(jnp.float32)."
        )


def is_int(value: Any) -> TypeGuard[int | np.integer]:
    """A Python or numpy integer (``3``, ``np.int64(3)``), not a bool: ``True`` is no count."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_bool(value: Any) -> TypeGuard[bool | np.bool_]:
    """A Python or numpy bool (``True``, ``np.bool_(True)``); not ``1``, not ``"yes"``."""
    return isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    """A Python or numpy int or float scalar, not a bool (0-d arrays are not scalars here)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not is_bool(value)


@overload
def check_bool(op: str, name: str, value: Any, *, allow_none: Literal[False] = False) -> bool:
    ...


@overload
def check_bool(op: str, name: str, value: Any, *, allow_none: bool) -> bool | None:
    ...


def check_bool(op: str, name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``value`` as a Python bool (None passes with ``allow_none``); TypeError otherwise."""
    if value is None and allow_none:
        return None
    if not is_bool(value):
        raise TypeError(
            f"{op}: {name} must be a bool{' or None' if allow_none else ''}, got {value!r}."
        )
    return bool(value)


def check_callable(op: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    """TypeError unless ``value`` is callable (or None with ``allow_none``)."""
    if not (callable(value) or (value is None and allow_none)):
        raise TypeError(
            f"{op}: {name} must be callable{' or None' if allow_none else ''}, got "
            f"{type(value).__name__} {value!r}."
        )


def check_real(op: str, name: str, value: Any, what: str) -> float:
    """``value`` as a float: a concrete (untraced) real scalar; ``what`` says what it is."""
    try:
        if isinstance(value, (bool, str)) or np.ndim(value) != 0:
            raise TypeError
        return float(value)  # a traced value raises jax's ConcretizationTypeError, a TypeError
    except TypeError:
        raise TypeError(
            f"{op}: {name} must be a concrete real number ({what}), got "
            f"{type(value).__name__} {value!r}."
        ) from None


def check_int(op: str, name: str, value: Any, *, minimum: int = 1, fix: str = "") -> int:
    """``value`` (a Python or numpy int, not a bool) as an int >= ``minimum``.

    ``fix``, when given, ends the ValueError's message.
    """
    if not is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}.")
    if value < minimum:
        end = f"; {fix}" if fix else ""
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {name}={value}{end}.")
    return int(value)


@overload
def check_count(op: str, name: str, value: Any, *, allow_none: Literal[False] = False) -> int:
    ...


@overload
def check_count(op: str, name: str, value: Any, *, allow_none: bool) -> int | None:
    ...


def check_count(op: str, name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` (a Python or numpy int, not a bool) as a positive Python int: a number of
    steps, restarts, features... None passes with ``allow_none``.

    A wrong type (``"5"``, ``5.0``, ``True``) is a TypeError, a wrong value (``0``) a ValueError.
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        raise (ValueError if is_int(value) else TypeError)(
            f"{op}: {name} must be a positive int{' or None' if allow_none else ''}, "
            f"got {value!r}."
        )
    return int(value)


def check_key(op: str, key: Any, name: str = "key") -> None:
    """TypeError unless ``key`` is one PRNG key: a typed ``jax.random.key`` or a legacy
    ``uint32[2]`` ``jax.random.PRNGKey``; ValueError for a batch of keys."""
    import jax

    dtype = getattr(key, "dtype", None)
    single: tuple[int, ...]
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        shape, single = key.shape, ()
    elif dtype == jnp.uint32:
        shape, single = key.shape, (2,)
    else:
        raise TypeError(
            f"{op}: {name} must be a PRNG key such as jax.random.key(0), got "
            f"{type(key).__name__} with dtype {dtype}."
        )
    if shape != single:
        raise ValueError(
            f"{op}: {name} must be a single PRNG key, got a batch of shape {shape}; use "
            f"jax.vmap over the keys, or pass one key and a larger n."
        )


def check_shape(op: str, name: str, shape: Any, *, min_rank: int = 0, minimum: int = 0,
                rank_hint: str = "") -> tuple[int, ...]:
    """``shape`` (a sequence of Python or numpy ints) as a tuple of ints.

    Each size must be ``>= minimum`` and there must be at least ``min_rank`` of them;
    ``rank_hint`` (e.g. ``"(batch, ..., channels)"``) follows the rank in its message. An array
    passed for its shape is named by its shape alone (never printed whole).
    """
    if isinstance(shape, str) or not isinstance(shape, Sequence):
        got = (f"an array of shape {tuple(shape.shape)}; pass its .shape"
               if hasattr(shape, "shape") and hasattr(shape, "dtype")
               else f"{type(shape).__name__} {reprlib.repr(shape)}")
        raise TypeError(f"{op}: {name} must be a sequence of ints, got {got}.")
    if not all(is_int(s) for s in shape):
        raise TypeError(f"{op}: {name} must contain ints, got {tuple(shape)}.")
    out = tuple(int(s) for s in shape)
    if any(s < minimum for s in out):
        word = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
        raise ValueError(f"{op}: {name} entries must be {word}, got {out}.")
    if len(out) < min_rank:
        hint = f" {rank_hint}" if rank_hint else ""
        raise ValueError(f"{op}: {name} must have rank >= {min_rank}{hint}, got {out}.")
    return out


def check_ndim(op: str, name: str, x: Any, ndim: int, what: str) -> None:
    got = np.ndim(x)
    if got != ndim:
        raise ValueError(
            f"{op}: {name} must have rank {ndim} ({what}), got rank {got} "
            f"with shape {tuple(np.shape(x))}."
        )


def normalize_tuple(
    op: str, name: str, value: int | Sequence[int], n: int | None, *, minimum: int = 1
) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints, each ``>= minimum``, as a tuple.

    With ``n=None`` (a layer's setting, before the input's rank is known) any length passes and
    an int comes back as a 1-tuple; the length is checked when ``n`` is known.
    """
    if is_int(value):
        values = (int(value),) * (1 if n is None else n)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if n is None and not value:
            raise ValueError(f"{op}: {name} must be an int or a non-empty sequence of ints, "
                             f"got {tuple(value)}.")
        if n is not None and len(value) != n:
            raise ValueError(
                f"{op}: {name} must be an int or a sequence of {n} ints (one per spatial "
                f"dim), got {len(value)} values: {tuple(value)}."
            )
        if not all(is_int(v) for v in value):
            raise TypeError(f"{op}: {name} must contain ints, got {tuple(value)}.")
        values = tuple(int(v) for v in value)
    else:
        count = "" if n is None else f"{n} "
        raise TypeError(
            f"{op}: {name} must be an int or a sequence of {count}ints, got {value!r}."
        )
    bad = [v for v in values if v < minimum]
    if bad:
        word = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {word}, got {name}={value!r}.")
    return values


def check_groups(op: str, groups: Any) -> int:
    """``groups`` (a Python or numpy int, not a bool) as a positive Python int."""
    if not is_int(groups):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}.")
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got groups={groups}.")
    return int(groups)


def check_conv_channels(op: str, lay: Layout, in_ch: int, w_in: int, w_out: int,
                        groups: int, hint: str = "") -> None:
    """The input has ``in_ch`` channels; the kernel expects ``w_in * groups``, gives ``w_out``.

    ``hint`` (empty, or a sentence starting with a space) ends every message: e.g. that the
    shapes fit under the other layout convention.
    """
    if in_ch % groups:
        raise ValueError(
            f"{op}: in_channels (={in_ch}) must be divisible by groups (={groups}).{hint}"
        )
    if w_out % groups:
        raise ValueError(
            f"{op}: out_channels (={w_out}, w.shape[{lay.kernel_out_axis}]) must be divisible "
            f"by groups (={groups}).{hint}"
        )
    if w_in * groups != in_ch:
        raise ValueError(
            f"{op}: x has {in_ch} channels (layout {lay.name}) but w expects {w_in * groups} "
            f"(w.shape[{lay.kernel_in_axis}] * groups = {w_in} * {groups}); w is "
            f"{lay.kernel_doc()}.{hint}"
        )


def kernel_form(channels_last: bool, ndim: int) -> str:
    """A kernel's axes in words, e.g. ``"(kh, kw, I, O)"`` channels-last for 2 spatial dims."""
    names = {1: ("kw",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}
    spatial = names.get(ndim, tuple(f"k{i}" for i in range(ndim)))
    axes = (*spatial, "I", "O") if channels_last else ("O", "I", *spatial)
    return f"({', '.join(axes)})"


def kernel_permutation(to_channels_last: bool, ndim: int) -> tuple[int, ...]:
    """The ``jnp.transpose`` axes that turn a kernel of the other convention into this one."""
    if to_channels_last:  # (O, I, *k) -> (*k, I, O)
        return (*range(2, ndim + 2), 1, 0)
    return (ndim + 1, ndim, *range(ndim))  # (*k, I, O) -> (O, I, *k)


def closest(value: Any, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the choice nearest a misspelt string ``value``, else ``""``."""
    if not isinstance(value, str):
        return ""
    folded = {c.lower(): c for c in choices}
    best = difflib.get_close_matches(value.lower(), list(folded), n=1, cutoff=0.6)
    return f" Did you mean {folded[best[0]]!r}?" if best else ""


def check_choice(op: str, name: str, value: Any, choices: Sequence[str], *,
                 fold_case: bool = True) -> str:
    """Lower-cased ``value`` if it is one of ``choices`` (case-insensitive unless
    ``fold_case=False``, which returns ``value`` as given); ValueError naming the closest."""
    if isinstance(value, str):
        if not fold_case and value in choices:
            return value
        if fold_case and value.lower() in choices:
            return value.lower()
    raise ValueError(
        f"{op}: unknown {name} {value!r}; expected one of "
        f"{', '.join(repr(c) for c in choices)}.{closest(value, choices)}"
    )


_PRECISION_NAMES = ("default", "high", "highest", "bfloat16", "bfloat16_3x", "tensorfloat32",
                    "float32", "fastest")


def check_precision(op: str, precision: Any) -> Any:
    """``precision`` must be one lax's convs and dots take: None, a ``lax.Precision`` or its
    name, a pair of those, a ``lax.DotAlgorithmPreset`` (or its name) or a ``lax.DotAlgorithm``.

    Lowerings whose forward pass runs no dot would otherwise ignore a misspelt value silently.
    Returns it hashable (a pair as a tuple: the lowerings are jitted with static options).
    """
    from jax import lax

    def one(p) -> bool:
        return isinstance(p, lax.Precision) or (isinstance(p, str) and p in _PRECISION_NAMES)

    if (
        precision is None
        or one(precision)
        or isinstance(precision, (lax.DotAlgorithm, lax.DotAlgorithmPreset))
        or (isinstance(precision, str) and precision in lax.DotAlgorithmPreset.__members__)
        or (isinstance(precision, (tuple, list)) and len(precision) == 2
            and all(one(p) for p in precision))
    ):
        return tuple(precision) if isinstance(precision, list) else precision
    raise ValueError(
        f"{op}: unknown precision {precision!r}; expected None, a lax.Precision or one of "
        f"{', '.join(repr(p) for p in _PRECISION_NAMES)}, a pair of those (lhs, rhs), or a "
        f"lax.DotAlgorithmPreset or its name, e.g. precision='highest'."
        f"{closest(precision, _PRECISION_NAMES)}"
    )
