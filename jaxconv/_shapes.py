"""Shape arithmetic without running anything: ``output_shape`` of an op, ``receptive_field``.

Pure Python on shapes that reuses the ops' own validation (same messages); it never builds
arrays or calls lax, so it is free to call at init time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxconv import _checks
from jaxconv import _padding as padding_lib

_OPS = ("conv", "conv_transpose", "max_pool", "avg_pool", "pool")
_POOL_OPS = ("max_pool", "avg_pool", "pool")
_RF = "receptive_field"


class ReceptiveField(NamedTuple):
    """The receptive field of one layer's output on the stack's input, per spatial dim.

    Output pixel ``i`` (per dim) sees input coordinates ``start + i * jump`` to
    ``start + i * jump + size - 1`` (dilated or strided stacks may skip some inside).

    Attributes:
      size: receptive field size.
      jump: distance in input pixels between neighbouring outputs (product of strides).
      start: input coordinate of the first pixel of output 0's field; negative when the
        field reaches into padding.
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]


def _is_default(value: Any, default: int) -> bool:
    """``value`` is ``default`` or a sequence/array of it (e.g. ``dilation=np.array([1, 1])``)."""
    if isinstance(value, str):
        return False
    try:
        return bool(np.all(np.asarray(value) == default))
    except (TypeError, ValueError):  # ragged or odd objects: not the default
        return False


def _with_spatial(lay, batch: int, channels: int, spatial: Sequence[int]) -> tuple[int, ...]:
    if lay.channels_last:
        return (batch, *spatial, channels)
    return (batch, channels, *spatial)


class Geometry(NamedTuple):
    """The validated options of one ``conv`` or ``conv_transpose`` call and its output shape."""

    layout: _checks.Layout
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    out_shape: tuple[int, ...]


def _layout(op: str, name: str, a, w, layout) -> _checks.Layout:
    """Checks the kernel shape ``w`` and the rank of the batched operand ``name`` (shape
    ``a``), and resolves the layout."""
    if len(w) < 3:
        raise ValueError(
            f"{op}: w must have rank >= 3 (spatial dims + in and out channels), got rank "
            f"{len(w)} with shape {w}; for a single 2-D filter k use "
            f"k[:, :, None, None] (channels-last)."
        )
    if 0 in w:
        raise ValueError(f"{op}: w must not have a zero-size dimension, got shape {w}.")
    n = len(w) - 2
    lay = _checks.resolve_layout(op, layout, n)
    if len(a) != len(w):
        fix = f"add a batch axis with {name}[None]" if len(a) == len(w) - 1 else f"reshape {name}"
        raise ValueError(
            f"{op}: {name} must have rank {n + 2} (batch, {n} spatial, channels in layout "
            f"{lay.name}) to match w of rank {len(w)}, got rank {len(a)} with shape "
            f"{a}; {fix}."
        )
    return lay


def _layout_hint(lay: _checks.Layout, a, w, fits, name: str = "x") -> str:
    """A sentence (starting with a space) for a channel or kernel-size error that the other
    layout convention resolves: a torch-style ``(O, I, kh, kw)`` kernel on channels-last input,
    a ``(kh, kw, I, O)`` kernel with ``layout='NCHW'``, or channels-first data passed without
    ``layout``. Empty when no such reading of the shapes fits.

    ``fits(layout, a, w)`` says whether the operand shape ``a`` and kernel shape ``w`` pass the
    op's checks under ``layout``; it must not raise.
    """
    if fits(lay, a, w):
        return ""
    n = lay.ndim
    this_kind, other_kind = (
        ("channels-last", "channels-first") if lay.channels_last
        else ("channels-first", "channels-last")
    )
    perm = _checks.kernel_permutation(lay.channels_last, n)
    kernel_fits = fits(lay, a, tuple(w[i] for i in perm))
    others = [v for v in _checks.valid_layouts(n) if v != lay.name]
    other = _checks.Layout(others[0], not lay.channels_last, n) if others else None
    both_fit = other is not None and fits(other, a, w)
    other_form = _checks.kernel_form(not lay.channels_last, n)
    if kernel_fits:
        hint = (
            f" w (shape {tuple(w)}) looks like a {other_kind} {other_form} kernel; for "
            f"{lay.name} input use {_checks.kernel_form(lay.channels_last, n)}, e.g. "
            f"jnp.transpose(w, {perm})"
        )
        if both_fit:
            assert other is not None  # both_fit implies it
            hint += f", or pass layout={other.name!r} if {name} is {other_kind} too"
        return hint + "."
    if both_fit:
        assert other is not None  # both_fit implies it
        return (
            f" {name} (shape {tuple(a)}) and w (shape {tuple(w)}) look {other_kind} (a "
            f"{other_form} kernel), not {this_kind} as layout {lay.name} reads them; pass "
            f"layout={other.name!r}."
        )
    return ""


def _conv_fits(lay, x, w, stride, padding, dilation, groups) -> bool:
    """Whether ``conv``'s channel and kernel-size checks pass for these shapes under ``lay``."""
    in_ch, w_in, w_out = x[lay.channel_axis], w[lay.kernel_in_axis], w[lay.kernel_out_axis]
    if in_ch % groups or w_out % groups or w_in * groups != in_ch:
        return False
    sizes = [x[a] for a in lay.spatial_axes]
    k_eff = padding_lib.effective_kernel([w[a] for a in lay.kernel_spatial_axes], dilation)
    try:
        pads = padding_lib.resolve_padding("conv", padding, sizes, k_eff, stride)
    except (TypeError, ValueError):
        return False
    return all(k <= s + lo + hi for s, k, (lo, hi) in zip(sizes, k_eff, pads, strict=True))


def conv_geometry(op, x, w, stride, padding, dilation, groups, layout) -> Geometry:
    """Validates ``conv`` options for shapes ``x`` and ``w`` (the op's own errors)."""
    lay = _layout(op, "x", x, w, layout)
    n = lay.ndim
    stride = _checks.normalize_tuple(op, "stride", stride, n)
    dilation = _checks.normalize_tuple(op, "dilation", dilation, n)
    _checks.check_groups(op, groups)
    w_out = w[lay.kernel_out_axis]
    hint = _layout_hint(
        lay, x, w, lambda l, a, k: _conv_fits(l, a, k, stride, padding, dilation, groups)
    )
    _checks.check_conv_channels(
        op, lay, x[lay.channel_axis], w[lay.kernel_in_axis], w_out, groups, hint=hint
    )
    sizes = [x[a] for a in lay.spatial_axes]
    k_eff = padding_lib.effective_kernel([w[a] for a in lay.kernel_spatial_axes], dilation)
    pads = padding_lib.resolve_padding(op, padding, sizes, k_eff, stride)
    padding_lib.check_kernel_fits(op, sizes, k_eff, pads, hint=hint)
    out = [
        padding_lib.output_size(size, k, s, lo, hi)
        for size, k, s, (lo, hi) in zip(sizes, k_eff, stride, pads, strict=True)
    ]
    return Geometry(lay, stride, pads, dilation, _with_spatial(lay, x[0], w_out, out))


def conv_transpose_geometry(
    y, w, stride, padding, output_padding, dilation, groups, layout
) -> Geometry:
    """Validates ``conv_transpose`` options for shapes ``y`` and ``w`` (the op's own errors);
    ``out_shape`` is the shape of the conv input it returns."""
    op = "conv_transpose"
    lay = _layout(op, "y", y, w, layout)
    n = lay.ndim
    _checks.check_groups(op, groups)
    y_ch, w_out = y[lay.channel_axis], w[lay.kernel_out_axis]

    def fits(lay_, y_, w_):
        out = w_[lay_.kernel_out_axis]
        return y_[lay_.channel_axis] == out and not out % groups

    hint = _layout_hint(lay, y, w, fits, name="y")
    if y_ch != w_out:
        raise ValueError(
            f"{op}: y has {y_ch} channels (layout {lay.name}) but w has {w_out} out_channels "
            f"(w.shape[{lay.kernel_out_axis}]); w is the forward conv's kernel, "
            f"{lay.kernel_doc()}.{hint}"
        )
    if w_out % groups:
        raise ValueError(
            f"{op}: out_channels (={w_out}) must be divisible by groups (={groups}).{hint}"
        )
    stride = _checks.normalize_tuple(op, "stride", stride, n)
    dilation = _checks.normalize_tuple(op, "dilation", dilation, n)
    output_padding = _checks.normalize_tuple(op, "output_padding", output_padding, n, minimum=0)
    for op_, s, d in zip(output_padding, stride, dilation, strict=True):
        if op_ >= max(s, d):
            raise ValueError(
                f"{op}: output_padding ({output_padding}) must be smaller than stride "
                f"({stride}) or dilation ({dilation}) on every dim."
            )
    k_eff = padding_lib.effective_kernel([w[a] for a in lay.kernel_spatial_axes], dilation)
    sizes_y = [y[a] for a in lay.spatial_axes]
    form = padding_lib.check_padding(op, padding)
    if form in ("SAME", "SAME_LOWER", "VALID"):
        # lax.conv_transpose's semantics. "SAME": the adjoint of the forward "SAME" conv on
        # the input of size in * stride. "VALID": of the forward "VALID" conv on the largest
        # input it maps to `in`, (in - 1) * stride + max(k, stride): a stride longer than the
        # kernel leaves an unread tail, which comes back as output_padding.
        if any(output_padding):
            raise ValueError(
                f"{op}: output_padding ({output_padding}) cannot be combined with padding "
                f"{padding!r}, which sets the output size as lax.conv_transpose does; pass "
                f"explicit padding (ints or (low, high) pairs) to choose output_padding."
            )
        sizes_x = [
            s_y * s if form != "VALID" else (s_y - 1) * s + max(k, s)
            for s_y, s, k in zip(sizes_y, stride, k_eff, strict=True)
        ]
        pads = padding_lib.resolve_padding(op, form, sizes_x, k_eff, stride)
        output_padding = tuple(
            s_x - ((s_y - 1) * s - lo - hi + k)
            for s_x, s_y, s, (lo, hi), k in zip(sizes_x, sizes_y, stride, pads, k_eff, strict=True)
        )
    else:
        pads = padding_lib.resolve_padding(op, padding, sizes_y, k_eff, stride)
    out = [
        (s_y - 1) * s - lo - hi + k + op_
        for s_y, s, (lo, hi), k, op_ in zip(
            sizes_y, stride, pads, k_eff, output_padding, strict=True
        )
    ]
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: padding {padding!r} is too large: the output would have spatial size "
            f"{tuple(out)}."
        )
    x_shape = _with_spatial(lay, y[0], w[lay.kernel_in_axis] * groups, out)
    return Geometry(lay, stride, pads, dilation, x_shape)


class PoolArgs(NamedTuple):
    """Validated, normalised options of one pooling call.

    Attributes:
      layout: the resolved layout.
      window: window size per spatial dim.
      stride: stride per spatial dim.
      pads: ``(low, high)`` pads per spatial dim.
      sizes: input spatial sizes.
    """

    layout: _checks.Layout
    window: tuple[int, ...]
    stride: tuple[int, ...]
    pads: padding_lib.Pads
    sizes: tuple[int, ...]

    @property
    def out_sizes(self) -> tuple[int, ...]:
        return tuple(
            padding_lib.output_size(n, k, s, lo, hi)
            for n, k, s, (lo, hi) in zip(self.sizes, self.window, self.stride, self.pads,
                                         strict=True)
        )

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The output shape for input ``shape`` (channels and batch unchanged)."""
        out = list(shape)
        for axis, size in zip(self.layout.spatial_axes, self.out_sizes, strict=True):
            out[axis] = size
        return tuple(out)

    def full(self, per_dim: Sequence, fill) -> tuple:
        """``per_dim`` spread over all axes of x, ``fill`` on the batch and channel axes."""
        out = [fill] * (self.layout.ndim + 2)
        for axis, v in zip(self.layout.spatial_axes, per_dim, strict=True):
            out[axis] = v
        return tuple(out)


def _is_torch_padding(padding) -> bool:
    """An int or per-dim ints: the forms torch's pooling accepts (pairs and strings are ours)."""
    if _checks.is_int(padding):
        return True
    return (
        isinstance(padding, Sequence)
        and not isinstance(padding, str)
        and all(_checks.is_int(p) for p in padding)
    )


def pool_args(
    op: str,
    shape: Sequence[int],
    window: int | Sequence[int],
    stride: int | Sequence[int] | None,
    padding: padding_lib.Padding,
    layout: str | None,
) -> PoolArgs:
    """Validates a pooling call on an input of ``shape``; raises ValueError/TypeError.

    Shared by ``max_pool``, ``avg_pool`` and ``output_shape``, so the messages match.
    """
    shape = tuple(shape)
    if len(shape) < 3:
        raise ValueError(
            f"{op}: x must have rank >= 3 (batch, spatial dims, channels), got rank "
            f"{len(shape)} with shape {shape}; add a batch axis with x[None] (and a channel "
            f"axis with x[..., None])."
        )
    n = len(shape) - 2
    lay = _checks.resolve_layout(op, layout, n)
    window = _checks.normalize_tuple(op, "window", window, n)
    stride = window if stride is None else _checks.normalize_tuple(op, "stride", stride, n)
    sizes = tuple(shape[a] for a in lay.spatial_axes)
    pads = padding_lib.resolve_padding(op, padding, sizes, window, stride)
    if _is_torch_padding(padding):
        for axis, (k, (lo, _)) in enumerate(zip(window, pads, strict=True)):
            if lo > k // 2:
                raise ValueError(
                    f"{op}: padding ({lo} on spatial dim {axis}) must be at most half the "
                    f"window ({k} // 2 = {k // 2}), as torch's pooling requires; pad less, or "
                    f"pass (low, high) pairs or padding='SAME' to pad more."
                )
    padding_lib.check_kernel_fits(op, sizes, window, pads, what="window")
    args = PoolArgs(lay, window, stride, pads, sizes)
    for axis, (size, k, s, (lo, _), out) in enumerate(
        zip(sizes, window, stride, pads, args.out_sizes, strict=True)
    ):
        last_start = (out - 1) * s - lo
        if lo >= k or last_start >= size:
            which = "first" if lo >= k else "last"
            raise ValueError(
                f"{op}: padding {padding!r} puts the {which} window on spatial dim {axis} "
                f"entirely in the padding (window {k}, stride {s}, pads {pads[axis]}, input "
                f"size {size}); every window must cover at least one input element, so pad "
                f"less than the window on each side."
            )
    return args


def output_shape(
    input_shape: Sequence[int],
    kernel_shape: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: padding_lib.Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    layout: str | None = None,
    op: str = "conv",
    output_padding: int | Sequence[int] = 0,
) -> tuple[int, ...]:
    """The shape ``jaxconv.conv``, ``conv_transpose`` or a pooling op returns, without running it.

    Raises exactly what the op would raise for these shapes and options.

    Args:
      input_shape: the op's input shape, [N, *spatial, C] or [N, C, *spatial] per ``layout``.
      kernel_shape: ``op="conv"``/``"conv_transpose"``: the full kernel shape as those ops
        take it (``(*spatial, C_in // groups, C_out)`` channels-last, ``(C_out,
        C_in // groups, *spatial)`` channels-first; for ``conv_transpose`` the forward conv's
        kernel). Pooling ops: the window, int or per spatial dim.
      stride: int or per dim; None (default) is the op's default: 1 for convs, the window
        for pooling.
      padding: as the op takes it (see ``jaxconv.conv``).
      dilation: convs only (1 for pooling).
      groups: convs only (1 for pooling).
      layout: None (channels-last by rank) or a named layout, as in the ops.
      op: ``"conv"``, ``"conv_transpose"``, ``"max_pool"``, ``"avg_pool"`` or ``"pool"``
        (either pooling op: they share their shapes).
      output_padding: ``conv_transpose`` only.

    Returns:
      The output shape as a tuple: convs ``[N, *out_spatial, C_out]`` (``C_out = C_in *
      groups`` of the kernel for ``conv_transpose``), pooling ``[N, *out_spatial, C]``, or
      channels-first. ``out = (in + low + high - (k - 1) * dilation - 1) // stride + 1`` for
      conv and pooling, ``(in - 1) * stride - low - high + (k - 1) * dilation + 1 +
      output_padding`` for ``conv_transpose``.

    Example:
      >>> import jaxconv
      >>> jaxconv.output_shape((8, 32, 32, 3), (3, 3, 3, 16), stride=2, padding="SAME")
      (8, 16, 16, 16)
      >>> jaxconv.output_shape((8, 3, 32, 32), 2, op="max_pool", layout="NCHW")
      (8, 3, 16, 16)
    """
    kind = _checks.check_choice("output_shape", "op", op, _OPS)
    shape = _checks.check_shape("output_shape", "input_shape", input_shape)
    if kind in _POOL_OPS:
        for name, value, default in (
            ("dilation", dilation, 1), ("groups", groups, 1), ("output_padding", output_padding, 0)
        ):
            if not _is_default(value, default):
                raise ValueError(
                    f"output_shape: {name}={value!r} does not apply to op={op!r} (pooling has "
                    f"no {name}); leave it at {default}."
                )
        return pool_args(kind, shape, kernel_shape, stride, padding, layout).out_shape(shape)
    kernel = _checks.check_shape("output_shape", "kernel_shape", kernel_shape)
    stride = 1 if stride is None else stride
    if kind == "conv":
        if not _is_default(output_padding, 0):
            raise ValueError(
                f"output_shape: output_padding={output_padding!r} applies to "
                f"op='conv_transpose' only, not op={op!r}; leave it at 0."
            )
        return conv_geometry(
            "conv", shape, kernel, stride, padding, dilation, groups, layout
        ).out_shape
    return conv_transpose_geometry(
        shape, kernel, stride, padding, output_padding, dilation, groups, layout
    ).out_shape


class _Layer(NamedTuple):
    kernel_name: str
    kernel: Any
    stride: Any
    dilation: Any
    padding: Any
    output_padding: Any = 0


_TUPLE_FIELDS = ("kernel_size", "stride", "dilation", "padding")
# Layer kinds (``layer.kind``, as jaxconv.nn's layers have, or a mapping's "kind") that act on
# each pixel alone: their output sees exactly what their input saw. Dense is among them because
# on [N, *spatial, C] it acts on the channel axis only (a 1x1 conv).
POINTWISE_KINDS = ("activation", "dense", "identity")
# Kinds that remove the spatial dims: receptive_field stops before the first of them.
END_KINDS = ("flatten", "global_pool")
_POINTWISE, _END = "pointwise", "end"
_TRANSPOSE = "conv_transpose"  # the kind of a transposed conv (``kernel_size`` its kernel)


def _read_layer(at: str, layer: Any) -> _Layer | str:
    """The geometry of one layer, from a mapping, a tuple or an object's attributes; or
    ``_POINTWISE`` / ``_END`` for a layer of a kind in ``POINTWISE_KINDS`` / ``END_KINDS``."""
    get: Callable[[str], Any]
    if isinstance(layer, Mapping):
        get = layer.get
    elif isinstance(layer, Sequence) and not isinstance(layer, str):
        if not 2 <= len(layer) <= 4:
            raise ValueError(
                f"{_RF}: {at} as a tuple must be (kernel_size, stride) or (kernel_size, "
                f"stride, dilation[, padding]), got {len(layer)} values: {tuple(layer)!r}; for "
                f"a 2-D kernel nest it, e.g. ((3, 3), 1)."
            )
        get = dict(zip(_TUPLE_FIELDS, layer, strict=False)).get
    else:
        get = lambda name: getattr(layer, name, None)
    kernel, window = get("kernel_size"), get("window")
    kind = get("kind")
    kind = kind.lower() if isinstance(kind, str) else kind
    if kernel is None and window is None:
        if kind in POINTWISE_KINDS:
            return _POINTWISE
        if kind in END_KINDS:
            return _END
    if (kernel is None) == (window is None):
        got = "both" if kernel is not None else "neither"
        raise ValueError(
            f"{_RF}: {at} must give exactly one of kernel_size (conv) or window "
            f"(pooling), got {got} in {layer!r}; a layer with neither needs a kind in "
            f"{POINTWISE_KINDS} (pointwise: keeps the field) or {END_KINDS} (ends the spatial "
            f"layers), or leave it out."
        )
    stride, dilation, padding = get("stride"), get("dilation"), get("padding")
    if stride is None:
        # as the ops: conv strides 1 by default, pooling by its window.
        stride = 1 if window is None else window
    if kind == _TRANSPOSE and kernel is not None:
        output_padding = get("output_padding")
        return _Layer(_TRANSPOSE, kernel, 1 if stride is None else stride,
                      1 if dilation is None else dilation,
                      "VALID" if padding is None else padding,
                      0 if output_padding is None else output_padding)
    return _Layer(
        "kernel_size" if window is None else "window",
        kernel if window is None else window,
        stride,
        1 if dilation is None else dilation,
        "VALID" if padding is None else padding,
    )


def _spatial_ndim(layers: Sequence[_Layer]) -> int:
    """The length of the first per-dim sequence among the layers' options (1 if all are ints);
    a later layer that disagrees is the one the error names."""
    for layer in layers:
        for value in (layer.kernel, layer.stride, layer.dilation, layer.padding):
            if isinstance(value, Sequence) and not isinstance(value, str):
                return len(value)
    return 1


def receptive_field(
    layers: Sequence[Any], *, input_shape: Sequence[int] | None = None
) -> list[ReceptiveField]:
    """Receptive field, jump and start of every layer's output in a stack of conv/pool layers.

    Uses the recurrence ``size_l = size_{l-1} + (k_eff_l - 1) * jump_{l-1}``,
    ``jump_l = jump_{l-1} * stride_l``, ``start_l = start_{l-1} - pad_low_l * jump_{l-1}``
    with ``k_eff = (k - 1) * dilation + 1``, from ``size = jump = 1``, ``start = 0``.

    A whole model can be passed: anything with a ``layers`` sequence (e.g. a
    ``jaxconv.nn.Stack``; nested models too). Pointwise layers (a ``kind`` in
    ``POINTWISE_KINDS``: activations, ``Dense`` on the channel axis, ``Identity``) keep the
    field of the layer before them; the list stops before the first layer that removes the
    spatial dims (a ``kind`` in ``END_KINDS``: ``Flatten``, ``GlobalPool``), so it is shorter
    than the model then: from there on every output sees the whole input.

    Branches (``jaxconv.nn.Parallel``, and ``Residual``: its block and the identity) merge
    into the union of their fields, which must have one jump. A transposed conv (``kind``
    ``"conv_transpose"``, e.g. ``jaxconv.nn.ConvTranspose``; ``padding`` and
    ``output_padding`` as in ``jaxconv.conv_transpose``) divides the jump by its stride, which
    must divide it: with stride 1 its field is exact (a conv's); with a larger stride the
    taps an output reads depend on its phase, and the field given is the smallest window with
    the new jump that contains every output's.

    Args:
      layers: a sequence of layers, or an object with a ``layers`` sequence; each layer one of
        a mapping or an object (e.g. ``jaxconv.nn.Conv``/``MaxPool``) with ``kernel_size``
        (conv) or ``window`` (pooling), and optional ``stride`` (default 1 for conv, the window
        for pooling), ``dilation`` (1) and ``padding`` (``"VALID"``); other keys/attributes
        are ignored;
        or a tuple ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation[, padding])``;
        or a mapping/object with neither but a ``kind`` as above (e.g. ``jaxconv.nn.Activation``,
        ``{"kind": "activation"}``).
        Each option is an int or one entry per spatial dim; padding as in ``jaxconv.conv``.
      input_shape: the spatial shape of the stack's input, e.g. ``(28, 28)`` (no batch or
        channel axes). Needed only for ``"SAME"``/``"SAME_LOWER"`` padding; when given, every
        layer's kernel is also checked to fit its input. Sets the number of spatial dims;
        without it, the length of the first per-dim option (1 if all are ints).

    Returns:
      One ``ReceptiveField(size, jump, start)`` per layer up to the first one of a kind in
      ``END_KINDS`` (every layer if there is none), each field a tuple with one int per spatial
      dim.

    Example:
      >>> import jaxconv
      >>> jaxconv.receptive_field([(3, 1), (2, 2), (3, 1)])[-1]
      ReceptiveField(size=(8,), jump=(2,), start=(0,))
      >>> rf = jaxconv.receptive_field([{"kernel_size": 3, "padding": "SAME"}, {"window": 2}],
      ...                              input_shape=(8, 8))
      >>> rf[-1]
      ReceptiveField(size=(4, 4), jump=(2, 2), start=(-1, -1))
    """
    model_layers = getattr(layers, "layers", None)
    if isinstance(model_layers, Sequence) and not isinstance(model_layers, str):
        layers = model_layers  # a model: jaxconv.nn.Stack or anything holding its layers
    if not isinstance(layers, Sequence) or isinstance(layers, str):
        raise TypeError(
            f"{_RF}: layers must be a sequence of layers or an object with a layers sequence "
            f"(e.g. a jaxconv.nn.Stack), got {layers!r}."
        )
    parsed = _parse(layers, "layers")
    if input_shape is None:
        n, sizes = _spatial_ndim(list(_geometric(parsed))), None
    else:
        sizes = _checks.check_shape(_RF, "input_shape", input_shape)
        if not sizes:
            raise ValueError(
                f"{_RF}: input_shape must be the spatial shape (at least one dim, no batch or "
                f"channel axes), got {tuple(input_shape)}."
            )
        n = len(sizes)
    state = _Field(ReceptiveField((1,) * n, (1,) * n, (0,) * n), sizes)
    fields = []
    for where, item in parsed:
        state = _apply(where, item, state)
        fields.append(state.field)
    return fields


class _Field(NamedTuple):
    field: ReceptiveField
    sizes: tuple[int, ...] | None  # the spatial shape here, when input_shape was given


class _Branches(NamedTuple):
    """Branches on one input whose outputs merge (``Parallel``; ``Residual`` is its block
    and the identity)."""

    branches: list[list[tuple[str, Any]]]


def _parse(layers: Sequence[Any], where: str) -> list[tuple[str, Any]]:
    """``(where, item)`` per layer up to the first of a kind in ``END_KINDS``: a ``_Layer``,
    ``_POINTWISE``, ``_Branches`` or a parsed sub-list (a nested model)."""
    parsed: list[tuple[str, Any]] = []
    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        item = _read_any(at, layer)
        if item == _END:
            break
        parsed.append((at, item))
        if isinstance(item, list) and _ends(item, layer.layers):
            break  # the nested model ended the spatial layers
    return parsed


def _ends(parsed: list, layers: Sequence[Any]) -> bool:
    """Parsing stopped inside ``layers`` (at a kind in ``END_KINDS``)."""
    return len(parsed) < len(layers) or any(
        isinstance(item, list) and _ends(item, layer.layers)
        for (_, item), layer in zip(parsed, layers, strict=False))


def _read_any(at: str, layer: Any) -> Any:
    if not isinstance(layer, Mapping):
        kind = getattr(layer, "kind", None)
        if kind == "residual":
            block = _parse(layer.block.layers, f"{at}.block.layers")
            if _ends(block, layer.block.layers):
                raise ValueError(f"{_RF}: {at}.block removes the spatial dims (a kind in "
                                 f"{END_KINDS}) before the skip connection adds.")
            return _Branches([[], block])
        if kind == "parallel":
            branches = []
            for j, b in enumerate(layer.branches):
                sub = b.layers if _is_model(b) else [b]
                branches.append(_parse(sub, f"{at}.branches[{j}]"))
                if _ends(branches[-1], sub):
                    raise ValueError(f"{_RF}: {at}.branches[{j}] removes the spatial dims "
                                     f"(a kind in {END_KINDS}) before the branches merge.")
            return _Branches(branches)
        if _is_model(layer):
            return _parse(layer.layers, f"{at}.layers")
    return _read_layer(at, layer)


def _is_model(layer: Any) -> bool:
    sub = getattr(layer, "layers", None)
    return isinstance(sub, Sequence) and not isinstance(sub, str)


def _geometric(parsed: list[tuple[str, Any]]):
    for _, item in parsed:
        if isinstance(item, _Layer):
            yield item
        elif isinstance(item, list):
            yield from _geometric(item)
        elif isinstance(item, _Branches):
            for branch in item.branches:
                yield from _geometric(branch)


def _apply(where: str, item: Any, state: _Field) -> _Field:
    if isinstance(item, list):
        for at, sub in item:
            state = _apply(at, sub, state)
        return state
    if isinstance(item, _Branches):
        return _merge(where, [_apply(where, branch, state) for branch in item.branches])
    if not isinstance(item, _Layer):  # _POINTWISE
        return state
    op = f"{_RF}: {where}"
    field, sizes = state
    n = len(field.size)
    kernel = _checks.normalize_tuple(op, item.kernel_name, item.kernel, n)
    stride = _checks.normalize_tuple(op, "stride", item.stride, n)
    dilation = _checks.normalize_tuple(op, "dilation", item.dilation, n)
    k_eff = padding_lib.effective_kernel(kernel, dilation)
    if item.kernel_name == _TRANSPOSE:
        return _transposed(op, item, state, kernel, stride, dilation, k_eff)
    padding = item.padding
    if sizes is None and isinstance(padding, str) and padding.upper() in ("SAME",
                                                                          "SAME_LOWER"):
        raise ValueError(
            f"{op}: padding {padding!r} depends on the input size; pass input_shape= "
            f"(the stack input's spatial shape, e.g. (28, 28)) or give explicit padding."
        )
    # without input_shape no padding left here reads the sizes, only their count.
    pads = padding_lib.resolve_padding(op, padding, sizes if sizes is not None else (0,) * n,
                                       k_eff, stride)
    if sizes is not None:
        padding_lib.check_kernel_fits(op, sizes, k_eff, pads, what=item.kernel_name)
        sizes = tuple(
            padding_lib.output_size(m, k, s, lo, hi)
            for m, k, s, (lo, hi) in zip(sizes, k_eff, stride, pads, strict=True)
        )
    size = tuple(r + (k - 1) * j for r, k, j in zip(field.size, k_eff, field.jump, strict=True))
    start = tuple(a - lo * j for a, (lo, _), j in zip(field.start, pads, field.jump,
                                                       strict=True))
    jump = tuple(j * s for j, s in zip(field.jump, stride, strict=True))
    return _Field(ReceptiveField(size, jump, start), sizes)


def _transposed(op, item, state, kernel, stride, dilation, k_eff) -> _Field:
    """A transposed conv: output ``x`` reads the inputs ``j`` with ``j * stride = x + lo -
    t * dilation`` (``lo`` the forward conv's low pad, ``t`` a tap). With stride 1 that is a
    conv's field; with a larger stride which taps an output reads depends on its phase, and
    the field given is the smallest window with the new jump that contains every output's."""
    field, sizes = state
    n = len(kernel)
    if any(j % s for j, s in zip(field.jump, stride, strict=True)):
        raise ValueError(
            f"{op}: a transposed conv with stride {stride} after layers of jump {field.jump}: "
            f"its outputs are {stride} per input of jump {field.jump}, so their fields are not "
            f"spaced by a whole number of input pixels; receptive_field needs the jump to be "
            f"a multiple of the stride on every dim."
        )
    sizes_y = sizes if sizes is not None else (1,) * n  # string pads do not read the size
    try:
        geo = conv_transpose_geometry((1, *sizes_y, 1), (*kernel, 1, 1), stride, item.padding,
                                      item.output_padding, dilation, 1, None)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from e
    jump = tuple(j // s for j, s in zip(field.jump, stride, strict=True))
    size = tuple(r + (k - 1) * j for r, k, j in zip(field.size, k_eff, jump, strict=True))
    start = tuple(a + (lo - k + 1) * j for a, (lo, _), k, j in zip(field.start, geo.pads, k_eff,
                                                                  jump, strict=True))
    out = tuple(geo.out_shape[1:-1]) if sizes is not None else None
    return _Field(ReceptiveField(size, jump, start), out)


def _merge(where: str, outs: list[_Field]) -> _Field:
    """Branches merged (concatenated or added): each output sees the union of its branches'
    fields, which have one jump."""
    jumps = {o.field.jump for o in outs}
    if len(jumps) > 1:
        raise ValueError(
            f"{_RF}: {where} merges branches whose fields have different jumps "
            f"{sorted(jumps)}; their union is not one window per output."
        )
    start = tuple(min(s) for s in zip(*(o.field.start for o in outs), strict=True))
    end = tuple(max(s) for s in zip(*(tuple(a + r for a, r in zip(o.field.start, o.field.size,
                                                                 strict=True)) for o in outs),
                                   strict=True))
    size = tuple(e - a for e, a in zip(end, start, strict=True))
    return _Field(ReceptiveField(size, outs[0].field.jump, start), outs[0].sizes)
