"""Every convolution of an XLA:CPU executable jaxconv compiles, in the form XLA:CPU runs fast.

XLA:CPU sends a convolution to its fast kernels (Eigen, YNNPACK) only when its dimension
numbers are canonical: batch first and features last in the input and output, the kernel
``[*spatial, in, out]``, spatial dimensions in order (``PotentiallyImplementedAsEigenConvolution``
in ``xla/service/cpu/ir_emission_utils.cc``). Its ``ConvCanonicalization`` pass rewrites other
convolutions into that form with transposes, but it walks ``module->entry_computation()`` only:
a convolution inside a ``while`` body (every ``lax.scan`` / ``fori_loop``, so every step of
``fit``'s loop) keeps its labels and runs XLA's naive loop emitter. Autodiff's gradients of a
convolution are never canonical, nor are convolutions a user writes in another layout (NCHW,
OIHW), nor batch-grouped ones. Measured on LeNet-5 (benchmarks/NOTES.md): its first layer's
kernel gradient (``bf01_oi01->01bf``) made the whole step 3.2x slower inside the loop than as
a single-step executable.

``lower`` does that pass's work where XLA does not: it lowers a traced computation with a
lowering rule for ``lax.conv_general_dilated`` that writes each non-canonical float32/float16
convolution as transposes around a canonical one (batch groups as feature groups), in every
computation of the module, loop bodies included. Transposes move values, the convolution
computes the same sums: only the summation order may differ (as between XLA's own kernels).

jax has no public way to replace a primitive's lowering for one executable; this uses the
lowering parameters ``jax.export`` uses (``Traced.lower(_private_parameters=...)``, jax 0.10.2).
Where the installed jax lacks them, ``lower`` warns once and lowers as jax does.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))  # XLA:CPU's Eigen conv dtypes


def canonical_dims(n: int) -> lax.ConvDimensionNumbers:
    """[N, *sp, C] x [*k, I, O] -> [N, *sp, O] with ``n`` spatial dims: the form XLA:CPU's
    fast convolutions take (positions of batch, feature and spatial dims, as lax orders them)."""
    sp = tuple(range(1, n + 1))
    return lax.ConvDimensionNumbers((0, n + 1, *sp), (n + 1, n, *range(n)), (0, n + 1, *sp))


def is_canonical(dims, batch_group_count: int = 1) -> bool:
    """Whether a convolution with these ``lax.ConvDimensionNumbers`` is one XLA:CPU runs on
    its fast kernels."""
    dims = tuple(tuple(d) for d in dims)
    return batch_group_count == 1 and dims == tuple(canonical_dims(len(dims[0]) - 2))


def canonical_conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, batch_group_count, precision,
                   preferred_element_type, **unused):
    """``lax.conv_general_dilated`` with the same parameters, written as a canonical
    convolution between transposes (batch groups rewritten as feature groups)."""
    (lb, lf, *ls), (ro, ri, *rs), (ob, of, *osp) = dimension_numbers
    n = len(ls)
    x = jnp.transpose(lhs, (lb, *ls, lf))  # [N, *sp, C]
    w = jnp.transpose(rhs, (*rs, ri, ro))  # [*k, I, O]
    groups = feature_group_count
    if batch_group_count > 1:
        # Batch group g (batch elements g * N/G ... (g+1) * N/G - 1) meets output features
        # g * O/G ... : the same as feature group g over the features of that batch slice.
        groups = batch_group_count
        batch, channels = x.shape[0], x.shape[-1]
        x = x.reshape(groups, batch // groups, *x.shape[1:])
        x = jnp.moveaxis(x, 0, -2).reshape(batch // groups, *x.shape[2:-1], groups * channels)
    y = lax.conv_general_dilated(
        x, w, window_strides, padding, lhs_dilation, rhs_dilation, canonical_dims(n),
        feature_group_count=groups, precision=precision,
        preferred_element_type=preferred_element_type)
    perm = [0] * (n + 2)  # y is [N, *out, O]: back to the requested output layout
    perm[ob], perm[of] = 0, n + 1
    for i, d in enumerate(osp):
        perm[d] = i + 1
    return jnp.transpose(y, perm)


@functools.cache
def _lowering_parameters():
    """jax's lowering parameters with the canonicalising convolution rule, or None where
    this jax lacks what it needs."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.lax import convolution as lax_convolution

        if "_private_parameters" not in inspect.signature(jax.stages.Traced.lower).parameters:
            return None
        # XLA:CPU's registered rule (complex convolutions as real ones)
        default = functools.partial(lax_convolution._conv_general_dilated_lower,
                                    expand_complex_convolutions=True)
        rewritten = mlir.lower_fun(canonical_conv, multiple_results=False)

        def rule(ctx, lhs, rhs, **params):
            if (ctx.avals_in[0].dtype not in _FAST_DTYPES
                    or ctx.avals_in[1].dtype not in _FAST_DTYPES
                    or params.get("out_sharding") is not None
                    or is_canonical(params["dimension_numbers"], params["batch_group_count"])):
                return default(ctx, lhs, rhs, **params)
            return rewritten(ctx, lhs, rhs, **params)  # its own conv comes back here, canonical

        return mlir.LoweringParameters(
            override_lowering_rules=((lax.conv_general_dilated_p, rule),))
    except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - other jax
        return None


@functools.cache
def _warn_unavailable() -> None:
    warnings.warn(
        "jaxconv: this jax version offers no lowering parameters to rewrite convolutions "
        "into XLA:CPU's canonical form; convolutions inside fit's loop that are not canonical "
        "(gradients, NCHW layouts) run XLA's slow loop emitter. jax 0.10.2 has them.",
        RuntimeWarning, stacklevel=3)


def lower(traced: jax.stages.Traced, platform: str) -> jax.stages.Lowered:
    """``traced.lower()``, with every float32/float16 convolution canonical when
    ``platform`` is ``"cpu"`` (see the module docstring)."""
    if platform != "cpu":
        return traced.lower()
    params = _lowering_parameters()
    if params is None:  # another jax
        _warn_unavailable()
        return traced.lower()
    return traced.lower(_private_parameters=params)
