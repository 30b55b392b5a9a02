"""torch ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` and ``Linear`` weights as ``jaxconv.nn``
params and back. torch is imported lazily (extra ``dev``); only layouts change, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxconv import _checks

KINDS = ("conv", "conv_transpose", "linear")
_MODULE_KINDS = {
    "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
    "ConvTranspose1d": "conv_transpose", "ConvTranspose2d": "conv_transpose",
    "ConvTranspose3d": "conv_transpose", "Linear": "linear",
}


def _to_channels_last(weight: np.ndarray) -> np.ndarray:
    """torch ``(A, B, *k)`` -> ``(*k, B, A)``: a conv's ``(O, I // g, *k)`` becomes
    ``nn.Conv``'s ``(*k, I // g, O)``; a transposed conv's ``(I, O // g, *k)`` becomes
    ``nn.ConvTranspose``'s (``conv_transpose``'s ``w``) ``(*k, O // g, I)``."""
    return np.transpose(weight, (*range(2, weight.ndim), 1, 0))


def _to_channels_first(kernel: np.ndarray) -> np.ndarray:
    n = kernel.ndim - 2
    return np.transpose(kernel, (n + 1, n, *range(n)))


def _numpy(op: str, name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (or parameter)
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{op}: {name} must hold floats, got dtype {array.dtype}.")
    return array


def from_torch(layer: Any, *, kind: str | None = None) -> dict[str, Any]:
    """A torch layer's weights as ``jaxconv.nn`` params (the layer's settings stay yours).

    ``Conv1d/2d/3d`` give ``nn.Conv`` params, ``ConvTranspose1d/2d/3d`` ``nn.ConvTranspose``
    params and ``Linear`` ``nn.Dense`` params: build the ``nn`` layer with the torch layer's
    ``stride``, ``padding``, ``dilation``, ``groups`` (and ``output_padding``) and it computes
    what the torch layer does on channels-last input. Dtypes are kept (float64 stays float64
    under ``jax.enable_x64``).

    Args:
      layer: a ``torch.nn`` module of the kinds above, or its ``state_dict()`` (a mapping with
        ``"weight"`` and optionally ``"bias"``; tensors or arrays).
      kind: ``"conv"``, ``"conv_transpose"`` or ``"linear"``; required for a state dict (a
        conv's and a transposed conv's weights have the same rank), checked for a module.

    Returns:
      ``{"kernel": ..., "bias": ...}`` (no ``"bias"`` when the layer has none): kernel
      ``(*k, C_in // groups, C_out)`` for a conv, ``(*k, C_out // groups, C_in)`` for a
      transposed conv, ``(in_features, out_features)`` for a linear layer.

    Example:
      >>> import torch, jaxconv.interop as interop
      >>> params = interop.from_torch(torch.nn.Conv2d(3, 8, 5))
      >>> params["kernel"].shape, params["bias"].shape
      ((5, 5, 3, 8), (8,))
    """
    op = "from_torch"
    if kind is not None:
        kind = _checks.check_choice(op, "kind", kind, KINDS)
    if isinstance(layer, Mapping):
        if kind is None:
            raise ValueError(
                f"{op}: a state dict does not say which layer it is from; pass kind= one of "
                f"{', '.join(repr(k) for k in KINDS)}."
            )
        state = dict(layer)
    else:
        module_kind = _MODULE_KINDS.get(type(layer).__name__)
        if module_kind is None or not hasattr(layer, "state_dict"):
            raise TypeError(
                f"{op}: layer must be a torch Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear "
                f"module or its state_dict(), got {type(layer).__name__}."
            )
        if kind is not None and kind != module_kind:
            raise ValueError(f"{op}: kind={kind!r} but the module is a "
                             f"{type(layer).__name__} ({module_kind!r}).")
        kind, state = module_kind, layer.state_dict()
    unknown = sorted(set(state) - {"weight", "bias"})
    if "weight" not in state or unknown:
        raise ValueError(
            f"{op}: a {kind} state dict has 'weight' and optionally 'bias', got keys "
            f"{sorted(state)}."
        )
    weight = _numpy(op, "weight", state["weight"])
    want_rank = "2" if kind == "linear" else "3 to 5"
    if (kind == "linear") != (weight.ndim == 2) or not 2 <= weight.ndim <= 5:
        raise ValueError(f"{op}: a {kind} weight has rank {want_rank}, got shape "
                         f"{weight.shape}.")
    kernel = weight.T if kind == "linear" else _to_channels_last(weight)
    params = {"kernel": jnp.asarray(kernel)}
    if state.get("bias") is not None:
        params["bias"] = jnp.asarray(_numpy(op, "bias", state["bias"]))
    return params


def to_torch(params: Mapping[str, Any], *, kind: str, module: Any = None) -> Any:
    """``jaxconv.nn`` params as a torch state dict (``from_torch``'s inverse), or loaded into
    ``module``.

    Args:
      params: ``{"kernel": ..., "bias": ...}`` of an ``nn.Conv`` (``kind="conv"``), an
        ``nn.ConvTranspose`` (``"conv_transpose"``) or an ``nn.Dense`` (``"linear"``).
      kind: which of the three.
      module: optional torch module of that kind; its weights are replaced
        (``load_state_dict``, shapes checked by torch) and it is returned.

    Returns:
      ``{"weight": tensor, "bias": tensor}`` (torch's layouts, dtypes kept), or ``module``.

    Example:
      >>> import jax, jaxconv.nn as nn, jaxconv.interop as interop
      >>> params = nn.Conv(8, 5).init(jax.random.key(0), (1, 9, 9, 3))
      >>> interop.to_torch(params, kind="conv")["weight"].shape
      torch.Size([8, 3, 5, 5])
    """
    import torch

    op = "to_torch"
    kind = _checks.check_choice(op, "kind", kind, KINDS)
    if not isinstance(params, Mapping) or "kernel" not in params:
        raise ValueError(f"{op}: params must be a layer's params with a 'kernel', got "
                         f"{type(params).__name__}.")
    kernel = np.asarray(params["kernel"])
    if (kind == "linear") != (kernel.ndim == 2):
        raise ValueError(f"{op}: a {kind} kernel has rank {'2' if kind == 'linear' else '3 to 5'}"
                         f", got shape {kernel.shape}.")
    weight = kernel.T if kind == "linear" else _to_channels_first(kernel)
    state = {"weight": torch.from_numpy(np.ascontiguousarray(weight))}
    if "bias" in params:
        state["bias"] = torch.from_numpy(np.array(params["bias"]))
    if module is None:
        return state
    module.load_state_dict(state)
    return module
