"""benchmarks/arch_bench.py: its architecture generator and the implementations it times.

Correctness only (the timings are the benchmark's): the generator is a function of its seed,
every generated model's init shape is its apply shape, and fit, the jitted loop and flax nnx
compute the same training run.
"""

import collections
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import arch_bench as ab  # noqa: E402

N = 40  # draws checked without training (shapes only: a few seconds)


def _draw(seed, n=N, conv_transpose=False):
    return [ab.generate(seed, i, conv_transpose=conv_transpose) for i in range(n)]


def test_generator_is_deterministic_per_seed():
    first, again = _draw(0), _draw(0)
    assert first == again
    assert ab.generate(0, 7, conv_transpose=False) == first[7]  # index alone, not draw order
    other = _draw(1)
    assert sum(a.spec != b.spec for a, b in zip(first, other, strict=True)) > N // 2


def test_generator_covers_the_issue_space():
    archs = _draw(0, 60)
    used = collections.Counter(f for a in archs for f in a.features)
    for feature in ("stride", "dilation", "groups", "depthwise", "causal", "maxpool",
                    "avgpool", "globalmaxpool", "globalavgpool", "residual", "dense"):
        assert used[feature] >= 3, (feature, used)
    assert {f"kernel{k}" for k in range(1, 8)} <= set(used)
    assert {a.ndim for a in archs} == {1, 2, 3}
    assert {a.loss for a in archs} == {"ce", "mse"}

    def convs(spec):
        for s in spec:
            if isinstance(s, ab.Residual):
                yield from convs(s.block)
            elif isinstance(s, ab.Conv):
                yield s

    widths = [c.features for a in archs for c in convs(a.spec)]
    assert 1 <= min(widths) and max(widths) <= 64 and max(widths) >= 32


@pytest.mark.parametrize("conv_transpose", [False, True], ids=["plain", "with_transpose"])
def test_init_shape_is_apply_shape(conv_transpose):
    if conv_transpose and not ab.has_conv_transpose():
        pytest.skip("jaxconv.nn has no ConvTranspose in this checkout")
    for arch in _draw(3, N, conv_transpose):
        model = ab.model_of(arch)
        predicted = model.output_shape(arch.input_shape)
        # abstract init and apply: nothing is compiled (40 models stay a few seconds)
        params = jax.eval_shape(lambda k, m=model, a=arch: m.init(k, a.input_shape),
                                jax.random.key(0))
        got = jax.eval_shape(model.apply, params,
                             jax.ShapeDtypeStruct(arch.input_shape, jnp.float32))
        assert got.shape == predicted == (arch.input_shape[0], arch.out), arch.description


def test_minibatches_are_fits_epochs():
    p = ab.make_problem(ab.generate(0, 19, conv_transpose=False))
    rows = ab.minibatches(p, 9)  # 4 batches per epoch: two epochs and one batch more
    batch = p.arch.input_shape[0]
    assert [len(r) for r in rows] == [batch] * 9
    first_epoch = np.concatenate(rows[:4])
    assert sorted(first_epoch.tolist()) == list(range(len(p.x)))
    assert not np.array_equal(rows[0], rows[4])


# 1-D depthwise stride 2; 2-D residual + global avg; 3-D grouped VALID convs; 2-D causal
FIT_CASES = {19: {"depthwise", "stride"}, 23: {"residual"}, 4: {"groups"}, 0: {"causal"}}


@pytest.mark.slow
@pytest.mark.parametrize("index", list(FIT_CASES), ids=[f"arch{i}" for i in FIT_CASES])
def test_fit_computes_the_loops_params(index):
    arch = ab.generate(0, index, conv_transpose=False)
    assert FIT_CASES[index] <= set(arch.features), arch.description  # the case it stands for
    p = ab.make_problem(arch)
    steps = 5  # > one epoch (4 batches): the reshuffle is covered
    fit = ab.fit_runner(p)(steps)
    for opts in (False, True):
        loop = ab.loop_runner(p, opts)(steps)
        np.testing.assert_allclose(fit.losses, loop.losses, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(fit.state), jax.tree.leaves(loop.state), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert not np.allclose(fit.losses[0], fit.losses[-1])  # it trained: params moved


@pytest.mark.slow
@pytest.mark.parametrize("index", [6, 7], ids=["2d_causal_residual", "1d_causal_groups"])
def test_nnx_computes_the_loops_losses(index):
    nnx = pytest.importorskip("flax.nnx")
    arch = ab.generate(0, index, conv_transpose=False)
    assert {"causal", "depthwise"} <= set(arch.features), arch.description
    p = ab.make_problem(arch)
    got = ab.nnx_runner(p, nnx)(3).losses
    want = ab.loop_runner(p)(3).losses
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bad_arguments_are_named(capsys):
    assert ab.main(["--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().out
    assert ab.main(["--impls", "fit,torch"]) == 2
    assert "--impls a subset of" in capsys.readouterr().out
