"""jaxconv: pure functional convolution and activation ops on jax.lax, the classical filter
bank, a tiny stacked-filter model and fast optax fitting."""

from jaxconv import checkpoint, data, filters, nn, recovery
from jaxconv._compile import compiler_options
from jaxconv.activations import (
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
from jaxconv.conv import conv, conv_transpose, convolve2d, correlate2d
from jaxconv.fitting import DivergenceError, FitResult, NonFiniteError, fit
from jaxconv.lowering import Plan, plan
from jaxconv.pooling import avg_pool, max_pool
from jaxconv.shapes import output_shape, receptive_field

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "FitResult",
    "NonFiniteError",
    "Plan",
    "activation",
    "avg_pool",
    "checkpoint",
    "compiler_options",
    "conv",
    "conv_transpose",
    "convolve2d",
    "correlate2d",
    "data",
    "elu",
    "filters",
    "fit",
    "gelu",
    "leaky_relu",
    "max_pool",
    "nn",
    "output_shape",
    "plan",
    "recovery",
    "receptive_field",
    "relu",
    "sigmoid",
    "silu",
    "softplus",
    "tanh",
]
