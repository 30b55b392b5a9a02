"""jaxconv: pure functional convolution and activation ops on jax.lax, the classical filter
bank, a tiny stacked-filter model and fast optax fitting.

The library (this namespace, one name per concept):

- ops: ``conv``, ``conv_transpose``, ``correlate2d``, ``convolve2d``, ``max_pool``,
  ``avg_pool``, the activations, ``output_shape`` / ``receptive_field`` (``ReceptiveField``),
  and the planner behind ``conv``: ``plan`` (``Plan``; the lowering records are in
  ``jaxconv.lowering``);
- ``filters``: the classical hand-designed filter bank;
- ``nn``: immutable layers and ``Stack`` over plain pytrees of arrays;
- ``interop``: torch weights in and out, a drop-in ``flax.nnx.Conv``;
- training: ``fit`` (``FitResult``, ``NonFiniteError``, ``DivergenceError``),
  ``compiler_options``, and ``checkpoint`` (orbax, integrity-checked).

Helpers for the tutorial and the experiments (not needed to use the library): ``data``
(synthetic images and teacher targets), ``recovery`` (matching learned filters to
references) and ``viz`` (matplotlib figures; import it as ``jaxconv.viz``, extra ``viz``).

The implementation lives in private modules (``jaxconv._conv``, ``jaxconv._fitting``, ...).
"""

from jaxconv import checkpoint, data, filters, interop, nn, recovery
from jaxconv._activations import (
    activation,
    elu,
    gelu,
    leaky_relu,
    relu,
    sigmoid,
    silu,
    softplus,
    tanh,
)
from jaxconv._compile import compiler_options
from jaxconv._conv import conv, conv_transpose, convolve2d, correlate2d
from jaxconv._fitting import DivergenceError, FitResult, NonFiniteError, fit
from jaxconv._pooling import avg_pool, max_pool
from jaxconv._shapes import ReceptiveField, output_shape, receptive_field
from jaxconv._trainer import clear_caches
from jaxconv.lowering import Plan, plan

__version__ = "0.1.0"  # the one version source (pyproject.toml reads it)

__all__ = [
    # ops
    "activation",
    "avg_pool",
    "conv",
    "conv_transpose",
    "convolve2d",
    "correlate2d",
    "elu",
    "gelu",
    "leaky_relu",
    "max_pool",
    "output_shape",
    "plan",
    "Plan",
    "receptive_field",
    "ReceptiveField",
    "relu",
    "sigmoid",
    "silu",
    "softplus",
    "tanh",
    # filters and layers
    "filters",
    "interop",
    "nn",
    # training
    "checkpoint",
    "clear_caches",
    "compiler_options",
    "DivergenceError",
    "fit",
    "FitResult",
    "NonFiniteError",
    # tutorial and experiment helpers
    "data",
    "recovery",
]
