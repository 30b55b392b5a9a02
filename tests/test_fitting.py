"""Tests for jaxconv._fitting: convergence, restarts == separate runs, the non-finite guard,
determinism, minibatches and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv
from jaxconv import fit


def _linear_problem(key, n=32):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (n, 3))
    w_true = jnp.array([1.5, -2.0, 0.5])
    return (x, x @ w_true), w_true


def _loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}


@pytest.mark.slow
def test_fit_converges_and_reports(key):
    data, w_true = _linear_problem(key)
    out = fit(_loss, P0, optax.adam(0.05), data, steps=600, progress=False)
    np.testing.assert_allclose(out.params["w"], w_true, atol=1e-3)
    assert out.losses.shape == (600,)
    assert out.losses[-1] < out.losses[0] * 1e-4
    assert out.steps == 600 and out.nonfinite_steps == 0
    assert out.wall_s > 0 and out.compile_s > 0 and out.steps_per_s > 0


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1000], ids=lambda c: f"chunk{c}")
@pytest.mark.slow
def test_chunking_does_not_change_the_result(key, chunk_size):
    data, _ = _linear_problem(key)
    ref = fit(_loss, P0, optax.sgd(0.05), data, steps=50, chunk_size=50, progress=False)
    out = fit(_loss, P0, optax.sgd(0.05), data, steps=50, chunk_size=chunk_size, progress=False)
    # fit's docstring promises bit-identical results however the run is chunked
    np.testing.assert_array_equal(out.losses, ref.losses)
    np.testing.assert_array_equal(out.params["w"], ref.params["w"])


@pytest.mark.slow
def test_matches_a_plain_python_loop(key):
    data, _ = _linear_problem(key)
    opt = optax.adam(0.05)
    params, state = P0, opt.init(P0)
    losses = []
    for _ in range(20):
        loss, grads = jax.value_and_grad(_loss)(params, data)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(loss)
    out = fit(_loss, P0, opt, data, steps=20, progress=False)
    np.testing.assert_allclose(out.losses, np.array(losses), rtol=1e-5)
    np.testing.assert_allclose(out.params["w"], params["w"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_restarts_equal_separate_runs_with_the_same_keys(key):
    data, _ = _linear_problem(key, n=40)
    restarts = 3
    init = lambda k: {"w": jax.random.normal(k, (3,)), "b": jnp.zeros(())}
    params = jax.vmap(init)(jax.random.split(jax.random.key(7), restarts))
    out = fit(_loss, params, optax.adam(0.05), data, steps=30, key=key, batch_size=8,
              restarts=restarts, progress=False)
    assert out.losses.shape == (restarts, 30)
    assert out.nonfinite_steps.shape == (restarts,)
    run_keys = jax.random.split(key, restarts)
    for r in range(restarts):
        single = fit(_loss, jax.tree.map(lambda x, r=r: x[r], params), optax.adam(0.05), data,
                     steps=30, key=run_keys[r], batch_size=8, progress=False)
        np.testing.assert_allclose(out.losses[r], single.losses, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.params["w"][r], single.params["w"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_deterministic_bit_identical(key):
    data, _ = _linear_problem(key)
    a = fit(_loss, P0, optax.adam(0.05), data, steps=40, key=key, batch_size=5, progress=False)
    b = fit(_loss, P0, optax.adam(0.05), data, steps=40, key=key, batch_size=5, progress=False)
    np.testing.assert_array_equal(a.losses, b.losses)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    c = fit(_loss, P0, optax.adam(0.05), data, steps=40, key=jax.random.key(99), batch_size=5,
            progress=False)
    assert not np.array_equal(a.losses, c.losses)


@pytest.mark.slow
def test_minibatches_are_subsets_without_replacement(key):
    x = jnp.arange(10.0)[:, None]
    seen = []

    def loss(p, batch):
        jax.debug.callback(lambda b: seen.append(np.asarray(b)), batch[:, 0])
        return jnp.sum(p["w"] * batch)

    fit(loss, {"w": jnp.zeros(())}, optax.sgd(0.0), x, steps=3, key=key, batch_size=4,
        progress=False)
    assert len(seen) == 3
    for b in seen:
        assert b.shape == (4,) and len(set(b.tolist())) == 4


@pytest.mark.slow
def test_nonfinite_steps_are_skipped_and_counted(key):
    data, _ = _linear_problem(key)

    def loss(p, batch):
        x, y = batch
        # a minibatch that contains example 0 is poisoned
        bad = jnp.any(x[:, 0] == data[0][0, 0])
        return jnp.where(bad, jnp.nan, _loss(p, batch))

    out = fit(loss, P0, optax.adam(0.05), data, steps=60, key=key, batch_size=4,
              progress=False)
    assert 0 < out.nonfinite_steps < 60
    assert np.isnan(out.losses).sum() == out.nonfinite_steps
    for leaf in jax.tree.leaves(out.params):
        assert np.all(np.isfinite(leaf))


@pytest.mark.slow
def test_a_wholly_nonfinite_chunk_raises_naming_the_step(key):
    data, _ = _linear_problem(key)
    loss = lambda p, b: _loss(p, b) * jnp.nan
    match = r"10 consecutive steps up to step 9 .*max_nonfinite=10.*before step 0"
    with pytest.raises(jaxconv.NonFiniteError, match=match):
        fit(loss, P0, optax.adam(0.05), data, steps=20, chunk_size=3, max_nonfinite=10,
            progress=False)


@pytest.mark.parametrize("chunk_size", [3, 5])
@pytest.mark.slow
def test_a_short_nonfinite_tail_warns_the_same_however_chunked(chunk_size):
    # c grows by 1 per step (sgd with learning rate -1 on d loss / dc = 1); step 9 is the first
    # non-finite one, and the last. Chunks of 3 end with a chunk of that step alone.
    loss = lambda p, b: jnp.where(p["c"] >= 9, jnp.nan, p["c"]) + 0 * jnp.sum(b[0])
    with pytest.warns(RuntimeWarning, match=r"ended inside a streak of 1 non-finite steps "
                                            r"\(steps 9\.\.9\); params are those before step 9"):
        out = fit(loss, {"c": jnp.zeros(())}, optax.sgd(-1.0), (jnp.zeros((4, 1)),), steps=10,
                  chunk_size=chunk_size, progress=False)
    assert int(out.nonfinite_steps) == 1
    assert float(out.params["c"]) == 9.0


@pytest.mark.slow
def test_minibatches_are_shuffled_epochs(key):
    # with a frozen parameter the loss of step t is the mean index in its batch
    n, batch = 10, 3  # 3 steps per epoch; one example sits each epoch out
    x = jnp.arange(n, dtype=jnp.float32)
    loss = lambda p, b: jnp.mean(b[0] * p["s"])
    out = fit(loss, {"s": jnp.ones(())}, optax.sgd(0.0), (x,), steps=7, batch_size=batch,
              key=key, chunk_size=2, progress=False)
    want = []
    for t in range(7):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, t // 3), n))
        want.append(order[(t % 3) * batch:(t % 3 + 1) * batch].mean())
    np.testing.assert_allclose(out.losses, want, rtol=1e-6)


@pytest.mark.slow
def test_nan_in_data_is_rejected_with_its_index(key):
    (x, y), _ = _linear_problem(key)
    x = x.at[5, 2].set(jnp.inf)
    with pytest.raises(ValueError, match=r"data\[0\] has a non-finite value .* index \(5, 2\)"):
        fit(_loss, P0, optax.adam(0.05), (x, y), steps=5, progress=False)
    # opting out hands the bad data to the guard: every full-batch step is non-finite
    with pytest.raises(jaxconv.NonFiniteError, match="5 consecutive steps up to step 4"):
        fit(_loss, P0, optax.adam(0.05), (x, y), steps=5, progress=False, check_data=False,
            max_nonfinite=5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"steps": 0}, ValueError, "steps must be a positive int"),
        ({"steps": 5, "chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"steps": 5, "batch_size": 0}, ValueError, r"batch_size must be an int in \[1, 32\]"),
        ({"steps": 5, "batch_size": 33}, ValueError, r"batch_size must be an int in \[1, 32\]"),
        ({"steps": 5, "restarts": 0}, ValueError, "restarts must be a positive int"),
        ({"steps": 5, "restarts": 2}, ValueError, "leading axis of size 2"),
        # the wrong type is a TypeError, the wrong value a ValueError
        ({"steps": "5"}, TypeError, "steps must be a positive int, got '5'"),
        ({"steps": 5.0}, TypeError, "steps must be a positive int, got 5.0"),
        ({"steps": 5, "batch_size": 2.5}, TypeError, r"batch_size must be an int in \[1, 32\]"),
        ({"steps": 5, "restarts": "2"}, TypeError, "restarts must be a positive int or None"),
    ],
    ids=["steps", "chunk", "batch0", "batch_big", "restarts0", "restarts_shape", "steps_str",
         "steps_float", "batch_float", "restarts_str"],
)
def test_argument_errors(key, kwargs, exc, match):
    data, _ = _linear_problem(key)
    with pytest.raises(exc, match=match):
        fit(_loss, P0, optax.adam(0.05), data, progress=False, **kwargs)


def test_loss_must_be_scalar_and_data_consistent(key):
    data, _ = _linear_problem(key)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        fit(lambda p, b: b[0] @ p["w"], P0, optax.adam(0.1), data, steps=2, progress=False)
    with pytest.raises(ValueError, match="same leading"):
        fit(_loss, P0, optax.adam(0.1), (data[0], data[1][:5]), steps=2, progress=False)
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        fit(_loss, P0, "adam", data, steps=2, progress=False)
    with pytest.raises(TypeError, match="floating"):
        fit(_loss, {"w": jnp.zeros(3, jnp.int32), "b": jnp.zeros(())}, optax.adam(0.1), data,
            steps=2, progress=False)


@pytest.mark.slow
def test_progress_bar_runs(key, capsys):
    data, _ = _linear_problem(key)
    fit(_loss, P0, optax.adam(0.05), data, steps=20, chunk_size=5, progress=True)
    err = capsys.readouterr().err
    assert "20/20" in err and "loss=" in err


def test_progress_bar_survives_a_nonfinite_last_step(key):
    # the bar showed np.nanmin of the chunk's last loss, which warns (an error under
    # filterwarnings=error) when that one step was non-finite
    # c is t before step t; step 9 (the chunk's last) alone is non-finite
    loss = lambda p, batch: jnp.where(p["c"] > 8.5, jnp.nan, -p["c"])
    with pytest.warns(RuntimeWarning, match="ended inside a streak"):
        out = fit(loss, {"c": jnp.zeros(())}, optax.sgd(1.0), steps=10, progress=True)
    assert out.nonfinite_steps == 1 and np.isnan(out.losses[9])


@pytest.mark.slow
def test_fit_trains_a_conv_model(key):
    model = jaxconv.nn.Stack([jaxconv.nn.Conv(1, 3, use_bias=False)])
    x = jax.random.normal(key, (16, 10, 10, 1))
    teacher = {"conv_0": {"kernel": jaxconv.filters.stack([jaxconv.filters.cross()])}}
    y = model.apply(teacher, x)
    params = model.init(jax.random.key(1), x.shape)
    loss = lambda p, b: jnp.mean((model.apply(p, b[0]) - b[1]) ** 2)
    out = fit(loss, params, optax.adam(0.05), (x, y), steps=1500, progress=False)
    np.testing.assert_allclose(out.params["conv_0"]["kernel"], teacher["conv_0"]["kernel"],
                               atol=1e-3)


# ---- compile cache, optimizers with extra arguments, dtypes, short divergent runs ----

@pytest.mark.slow
def test_a_repeated_fit_reuses_the_compiled_chunk(key):
    from jaxconv import _trainer

    data, _ = _linear_problem(key)
    jaxconv.clear_caches()
    first = fit(_loss, P0, optax.adam(0.05), data, steps=30, progress=False)
    cached = list(_trainer._CACHE)
    assert len(cached) == 1
    # the same computation again, even from a new optimizer object: no new executable
    # (counted, not timed: timings live in benchmarks/)
    again = fit(_loss, P0, optax.adam(0.05), data, steps=30, progress=False)
    assert list(_trainer._CACHE) == cached
    np.testing.assert_array_equal(again.losses, first.losses)
    # another learning rate, or other shapes, compile afresh
    fit(_loss, P0, optax.adam(0.04), data, steps=30, progress=False)
    fit(_loss, P0, optax.adam(0.05), (data[0][:8], data[1][:8]), steps=30, progress=False)
    assert len(_trainer._CACHE) == 3
    jaxconv.clear_caches()
    assert not _trainer._CACHE


@pytest.mark.slow
def test_an_unhashable_loss_callable_still_fits(key):
    class Loss:
        __hash__ = None

        def __call__(self, p, b):
            return _loss(p, b)

    data, w_true = _linear_problem(key)
    out = fit(Loss(), P0, optax.adam(0.05), data, steps=600, progress=False)
    np.testing.assert_allclose(out.params["w"], w_true, atol=1e-3)


@pytest.mark.slow
def test_lbfgs_gets_value_grad_and_value_fn(key):
    data, w_true = _linear_problem(key)
    out = fit(_loss, P0, optax.lbfgs(), data, steps=30, progress=False)
    np.testing.assert_allclose(out.params["w"], w_true, atol=1e-4)
    assert out.losses[-1] < 1e-8


@pytest.mark.slow
def test_reduce_on_plateau_gets_the_loss(key):
    data, _ = _linear_problem(key)
    # the learning rate falls once the (full-batch) loss stops improving
    opt = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=2, factor=0.5))
    out = fit(_loss, P0, opt, data, steps=200, progress=False)
    assert float(out.opt_state[1].scale) < 1.0
    assert out.losses[-1] < out.losses[0] * 1e-3


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn],
                         ids=["bfloat16", "float16", "float8_e4m3fn"])
@pytest.mark.slow
def test_nan_in_low_precision_data_is_rejected_with_its_index(key, dtype):
    (x, y), _ = _linear_problem(key)
    x = x.astype(dtype).at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"data\[0\] has a non-finite value .* index \(3, 1\)"):
        fit(lambda p, b: _loss(p, (b[0].astype(jnp.float32), b[1])), P0, optax.adam(0.05),
            (x, y), steps=5, progress=False)


@pytest.mark.slow
def test_divergence_in_a_short_run_warns_with_the_step(key):
    data, _ = _linear_problem(key)
    with pytest.warns(RuntimeWarning, match=r"ended inside a streak of \d+ non-finite steps "
                                            r"\(steps \d+\.\.199\)"):
        out = fit(_loss, P0, optax.sgd(1e6), data, steps=200, progress=False)
    assert out.nonfinite_steps > 150


def test_compiler_options_reach_the_compiled_chunk(key):
    data, _ = _linear_problem(key)
    with pytest.raises(Exception, match="No such compile option"):
        fit(_loss, P0, optax.adam(0.05), data, steps=5, progress=False,
            compiler_options={"xla_no_such_option": ""})
    with pytest.raises(TypeError, match="compiler_options must be a dict or None"):
        fit(_loss, P0, optax.adam(0.05), data, steps=5, progress=False, compiler_options="fast")


def _cnn_problem(key):
    nn = jaxconv.nn
    model = nn.Stack([nn.Conv(8, 3, padding="SAME"), nn.Activation("relu"), nn.MaxPool(2),
                      nn.Conv(16, 3, padding="SAME", algorithm="xla"), nn.Activation("relu"),
                      nn.Flatten(), nn.Dense(3)])
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (32, 8, 8, 3))
    y = jax.random.randint(ky, (32,), 0, 3)
    params = model.init(kp, (8, 8, 8, 3))

    def loss(p, b):
        logits = model.apply(p, b[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b[1]).mean()

    return loss, params, (x, y)


@pytest.mark.slow
def test_a_cnn_fit_matches_a_python_loop_of_jitted_steps(key):
    loss, params, data = _cnn_problem(key)
    opt = optax.adam(1e-2)
    out = fit(loss, params, opt, data, steps=12, batch_size=8, key=key, chunk_size=5,
              progress=False)

    @jax.jit
    def step(p, s, batch):
        value, grads = jax.value_and_grad(loss)(p, batch)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    p, s, losses = params, opt.init(params), []
    for t in range(12):  # the batches fit draws: epoch t // 4 of permutation(fold_in(key, e))
        order = jax.random.permutation(jax.random.fold_in(key, t // 4), 32)
        idx = order[(t % 4) * 8:(t % 4 + 1) * 8]
        p, s, value = step(p, s, jax.tree.map(lambda a, idx=idx: a[idx], data))
        losses.append(value)
    np.testing.assert_allclose(out.losses, np.array(losses), rtol=2e-5)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
