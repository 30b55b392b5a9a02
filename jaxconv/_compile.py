"""XLA compiler options for executables that run jaxconv models, detected for the installed
jaxlib (flag names change between versions: an option this jaxlib does not know is left out).
"""

from __future__ import annotations

import functools
import warnings

import jax

from jaxconv import _checks

# jaxlib 0.10's XLA:CPU sends float32 convolutions with more than 16 channels to YNNPACK
# (a ``ynn_fusion`` in the compiled HLO). The option is the list of operation kinds YNNPACK
# takes; jaxlib 0.10's default behaves as reductions + dots + convolutions (measured: the same
# step times, benchmarks/NOTES.md). Leaving convolutions out of it keeps them on XLA's Eigen
# convolution and YNNPACK's fast reductions and dots where they are ("" would drop those too:
# task A's training step went from 24 to 84-90 us).
_YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


@functools.cache
def _accepted(backend: str, name: str, value: str) -> bool:
    """Whether this jaxlib's compiler for ``backend`` knows the option ``name``."""
    try:
        x = jax.device_put(1.0, jax.local_devices(backend=backend)[0])
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(x).compile()
    except jax.errors.JaxRuntimeError:  # "No such compile option", or a value it refuses
        return False
    return True


def compiler_options(*, ynnpack: bool = False, backend: str | None = None) -> dict[str, str]:
    """Compiler options for ``jax.jit(f, compiler_options=...)`` of code that runs jaxconv ops.

    ``jaxconv.fit`` compiles its steps with ``compiler_options()`` unless told otherwise (its
    ``compiler_options`` argument); pass the same to your own ``jax.jit`` to get the same
    executables. By default XLA:CPU's convolutions stay off YNNPACK, on XLA's Eigen
    convolution: measured with ``fit`` on the training workloads of
    ``benchmarks/train_bench.py``, the depthwise-separable block (T5) trains 2.1x faster per
    step (74 vs 154 ms), the residual block (T4) 7% faster, the others unchanged
    (benchmarks/NOTES.md).

    Args:
      ynnpack: True keeps jaxlib's default (2-D float32 convolutions with many channels on
        YNNPACK); False (the default) keeps convolutions off YNNPACK where the installed
        jaxlib has the option (its reductions and dots stay on it).
      backend: the backend the options are for; None for ``jax.default_backend()``. Off CPU
        the result is empty (the options are XLA:CPU's).

    Returns:
      A dict of option names to values, possibly empty.

    Example:
      >>> import jax, jaxconv
      >>> f = jax.jit(lambda x: x * 2, compiler_options=jaxconv.compiler_options())
      >>> float(f(1.0))
      2.0
    """
    ynnpack = _checks.check_bool("compiler_options", "ynnpack", ynnpack)
    backend = jax.default_backend() if backend is None else backend
    options = {}
    if backend == "cpu" and not ynnpack:
        if _accepted(backend, _YNN_FUSION, _YNN_WITHOUT_CONVOLUTIONS):
            options[_YNN_FUSION] = _YNN_WITHOUT_CONVOLUTIONS
        elif _accepted(backend, _YNN_FUSION, ""):
            # The option exists but not its fusion kinds: "" would also take YNNPACK's dots and
            # reductions away (measured 3.5x slower on task A), so keep XLA's defaults, loudly.
            warnings.warn(
                f"jaxconv.compiler_options: this jaxlib refuses {_YNN_FUSION}="
                f"{_YNN_WITHOUT_CONVOLUTIONS!r}; keeping XLA's default options (convolutions "
                "may run on YNNPACK). Pass compiler_options={...} to fit to choose yourself.",
                RuntimeWarning, stacklevel=2)
    return options


def convs_on_eigen(options) -> bool:
    """Whether an XLA:CPU executable compiled with ``options`` runs its float convolutions on
    XLA's Eigen kernels: the YNNPACK option is given and leaves convolutions out."""
    value = (options or {}).get(_YNN_FUSION)
    return value is not None and "CONVOLUTION" not in value.upper()
