"""fit gives the answer the current call describes: no stale compiled chunk (globals, closures,
redefined models, jax's trace context), the same result whichever way steps run (scan or one
call per step) as a plain loop of a jitted step, a non-finite policy that checks what is
applied and does not move with chunk_size or checkpoint_every, and user exceptions that keep
their type."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv
from jaxconv import _trainer, fit

MODES = ["scan", "step"]


@pytest.mark.parametrize("mode", MODES)
def test_a_changed_global_is_not_answered_from_the_old_executable(mode):
    g = {"scale": 1.0}
    loss = lambda p, b: jnp.sum((p["w"] - g["scale"]) ** 2)
    out = fit(loss, {"w": 0.0}, optax.sgd(0.5), None, steps=1, progress=False, mode=mode)
    assert float(out.params["w"]) == 1.0 and float(out.losses[0]) == 1.0
    g["scale"] = 5.0
    out = fit(loss, {"w": 0.0}, optax.sgd(0.5), None, steps=1, progress=False, mode=mode)
    assert float(out.params["w"]) == 5.0 and float(out.losses[0]) == 25.0


def test_a_rebound_closure_variable_is_seen():
    scale = 0.0

    def loss(p, b):
        return jnp.sum((p["w"] - scale) ** 2)

    def run():
        return float(fit(loss, {"w": jnp.zeros(2)}, optax.sgd(0.5), steps=1,
                         progress=False).losses[0])

    assert run() == 0.0
    scale = 4.0  # noqa: F841 (read by loss through its closure)
    assert run() == 32.0


def test_a_redefined_global_model_is_seen():
    x = jnp.linspace(-1.0, 2.0, 8)[:, None]
    params = {"w": jnp.ones((1, 1))}
    losses = {}
    for name, act in (("relu", jax.nn.relu), ("tanh", jnp.tanh)):
        model = lambda p, x, act=act: act(x @ p["w"])  # a notebook cell redefining the model
        loss = lambda p, b, model=model: jnp.mean(model(p, b[0]))
        losses[name] = fit(loss, params, optax.sgd(0.0), (x,), steps=1,
                           progress=False).losses[0]
    np.testing.assert_allclose(losses["relu"], np.mean(np.maximum(x, 0)), rtol=1e-6)
    np.testing.assert_allclose(losses["tanh"], np.mean(np.tanh(x)), rtol=1e-6)


def test_enable_x64_runs_a_float64_executable():
    loss = lambda p, b: jnp.sum((p["w"] - 2.0) ** 2) + (p["w"] * 0 + 1e-12)
    out32 = fit(loss, {"w": 0.0}, optax.sgd(0.5), steps=1, progress=False)
    with jax.enable_x64(True):
        out64 = fit(loss, {"w": jnp.float64(0.0)}, optax.sgd(0.5), steps=1, progress=False)
        assert out64.params["w"].dtype == jnp.float64
        assert out64.losses.dtype == np.float64
        assert out64.losses[0] == 4.0 + 1e-12  # float32 would round the 1e-12 away
    assert out32.losses[0] == np.float32(4.0)


def test_identical_redefinitions_compile_nothing_and_nothing_is_held():
    jaxconv.clear_caches()
    data = (jnp.arange(8.0), 2 * jnp.arange(8.0))

    def make():
        return lambda p, b: jnp.mean((p["w"] * b[0] - b[1]) ** 2)

    loss = make()
    fit(loss, {"w": jnp.zeros(())}, optax.adam(0.1), data, steps=5, progress=False)
    cached = list(_trainer._CACHE)
    # a notebook cell that builds the same loss and optimizer again: the same executable
    out = fit(make(), {"w": jnp.zeros(())}, optax.adam(0.1), data, steps=5, progress=False)
    assert list(_trainer._CACHE) == cached and out.steps == 5
    # the cache holds no reference to the loss function (nor what it closes over)
    ref = weakref.ref(loss)
    del loss
    gc.collect()
    assert ref() is None
    jaxconv.clear_caches()
    assert not _trainer._CACHE


def _linear(key=0, n=24):
    x = jax.random.normal(jax.random.key(key), (n, 3))
    return x, x @ jnp.array([1.5, -2.0, 0.5])


def _loss(p, b):
    return jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)


P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}


@pytest.mark.parametrize(("restarts", "by"), [(None, "auto"), (3, "vmap"), (3, "map")],
                         ids=["single", "restarts_vmap", "restarts_map"])
def test_scan_and_step_modes_match_a_plain_jitted_loop(restarts, by):
    data = _linear()
    opt = optax.adam(0.05)
    params = P0 if restarts is None else jax.tree.map(
        lambda x: jnp.stack([x + i for i in range(restarts)]), P0)
    key = jax.random.key(7)
    got = {m: fit(_loss, params, opt, data, steps=23, batch_size=8, key=key, chunk_size=5,
                  restarts=restarts, progress=False, mode=m, restarts_by=by) for m in MODES}
    assert got["scan"].mode == "scan" and got["step"].mode == "step"
    assert got["scan"].restarts_by == got["step"].restarts_by == (
        None if restarts is None else by)

    # the oracle: a Python loop of a jitted step, batches as fit documents them
    @jax.jit
    def step(p, s, batch):
        loss, g = jax.value_and_grad(_loss)(p, batch)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    keys = [key] if restarts is None else list(jax.random.split(key, restarts))
    for r, k in enumerate(keys):
        p = params if restarts is None else jax.tree.map(lambda x, r=r: x[r], params)
        s, losses = opt.init(p), []
        for t in range(23):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(k, t // 3), 24))
            idx = order[(t % 3) * 8:(t % 3 + 1) * 8]
            p, s, loss = step(p, s, (data[0][idx], data[1][idx]))
            losses.append(loss)
        for m in MODES:
            mine = got[m].params if restarts is None else jax.tree.map(
                lambda x, r=r: x[r], got[m].params)
            np.testing.assert_allclose(mine["w"], p["w"], rtol=1e-5, atol=1e-6)
            row = got[m].losses if restarts is None else got[m].losses[r]
            np.testing.assert_allclose(row, losses, rtol=1e-5, atol=1e-6)


def test_steps_run_in_the_loop_unless_asked_otherwise():
    data = _linear()
    assert fit(_loss, P0, optax.adam(0.05), data, steps=3, progress=False).mode == "scan"
    with pytest.raises(ValueError, match=r"mode.*'scan'.*'step'"):
        fit(_loss, P0, optax.adam(0.05), data, steps=3, progress=False, mode="auto")


# ---- the non-finite policy ----

def _burst_loss(p, b):
    """NaN for steps 100..119 (p["t"] counts steps: sgd with rate -1 on d loss / dt = 1)."""
    bad = (p["t"] >= 100) & (p["t"] < 120)
    return jnp.where(bad, jnp.nan, p["t"]) + 0 * jnp.sum(b[0])


def _burst_params():
    return {"t": jnp.zeros(())}


@pytest.mark.parametrize(
    "kwargs", [{}, {"chunk_size": 7}, {"checkpoint_every": 10}, {"mode": "step"}],
    ids=["default", "chunk7", "checkpoint10", "step"])
def test_a_nonfinite_burst_is_skipped_however_the_run_is_cut(kwargs, tmp_path):
    # The parameter t stops at 100 while its steps are NaN... and so stays NaN: the burst
    # is the rest of the run. 200 skipped steps stay under max_nonfinite=500 whatever the
    # chunking or checkpointing (the old limit, one chunk, raised with checkpoint_every=10).
    if "checkpoint_every" in kwargs:
        kwargs = {**kwargs, "checkpoint_dir": str(tmp_path)}
    with pytest.warns(RuntimeWarning, match=r"ended inside a streak of 200 non-finite steps "
                                            r"\(steps 100\.\.299\)"):
        out = fit(_burst_loss, _burst_params(), optax.sgd(-1.0), (jnp.zeros((2, 1)),),
                  steps=300, progress=False, **kwargs)
    assert out.nonfinite_steps == 200
    assert float(out.params["t"]) == 100.0


@pytest.mark.parametrize("kwargs", [{}, {"chunk_size": 3}, {"mode": "step"},
                                    {"restarts_by": "map"},
                                    {"restarts_by": "map", "mode": "step"}],
                         ids=["default", "chunk3", "step", "map", "map_step"])
def test_one_failing_restart_stops_while_the_others_finish(kwargs):
    # restart 2's loss is always NaN; the others train
    def loss(p, b):
        return jnp.where(p["bad"] > 0, jnp.nan, jnp.sum((p["w"] - 3.0) ** 2))

    params = {"w": jnp.zeros((4, 2)), "bad": jnp.array([0.0, 0.0, 1.0, 0.0])}
    with pytest.warns(RuntimeWarning, match=r"restart\(s\) \[2\] stopped after 5 consecutive "
                                            r"non-finite steps starting at step\(s\) \[0\]"):
        out = fit(loss, params, optax.sgd(0.25), steps=40, restarts=4, max_nonfinite=5,
                  progress=False, **kwargs)
    np.testing.assert_array_equal(out.stopped, [-1, -1, 4, -1])
    np.testing.assert_array_equal(out.nonfinite_steps, [0, 0, 5, 0])
    np.testing.assert_allclose(np.asarray(out.params["w"])[[0, 1, 3]], 3.0, rtol=1e-5)
    np.testing.assert_array_equal(out.params["w"][2], [0.0, 0.0])
    assert np.all(np.isnan(out.losses[2, 5:]))  # not run after the stop


def test_every_restart_stopping_raises():
    loss = lambda p, b: jnp.sum(p["w"]) * jnp.nan
    with pytest.raises(jaxconv.NonFiniteError, match=r"restart\(s\) \[0, 1\]"):
        fit(loss, {"w": jnp.zeros((2, 3))}, optax.sgd(0.1), steps=20, restarts=2,
            max_nonfinite=4, progress=False)


@pytest.mark.parametrize("mode", MODES)
def test_a_nonfinite_update_is_not_applied(mode):
    # finite loss and gradients, but the update overflows float32: the step is skipped
    loss = lambda p, b: jnp.sum((p["w"] - 10.0) ** 2)  # gradient -20: updates 2e39 = inf
    with pytest.warns(RuntimeWarning, match="ended inside a streak of 1 non-finite"):
        out = fit(loss, {"w": jnp.zeros(2)}, optax.sgd(1e38), steps=1, progress=False,
                  mode=mode)
    assert out.nonfinite_steps == 1
    np.testing.assert_array_equal(out.params["w"], [0.0, 0.0])


def test_a_nan_learning_rate_on_the_last_step_is_caught():
    schedule = lambda count: jnp.where(count == 9, jnp.nan, 0.1)
    loss = lambda p, b: jnp.sum((p["w"] - 1.0) ** 2)
    with pytest.warns(RuntimeWarning, match=r"streak of 1 non-finite steps \(steps 9\.\.9\)"):
        out = fit(loss, {"w": jnp.zeros(2)}, optax.sgd(schedule), steps=10, progress=False)
    assert np.all(np.isfinite(out.params["w"])) and out.nonfinite_steps == 1


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mode": "fast"}, ValueError, "mode"),
        ({"max_nonfinite": 0}, ValueError, "max_nonfinite must be a positive int"),
        ({"run_config": [1]}, TypeError, "run_config must be a dict"),
        ({"run_config": {"f": object()}}, TypeError, "run_config must be JSON-serialisable"),
        ({"run_config": {"lr": (1, 2)}}, ValueError, "round-trip through JSON"),
    ],
    ids=["mode", "max_nonfinite", "run_config-type", "run_config-json", "run_config-tuple"],
)
def test_new_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fit(_loss, P0, optax.sgd(0.1), _linear(), steps=2, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("loss", "exc", "match"),
    [(lambda p, b: p["missing"], KeyError, "missing"),
     (lambda p, b: b[5], IndexError, "index"),
     (lambda p, b: b[0] @ p["w"], ValueError, "scalar")],
    ids=["KeyError", "IndexError", "ValueError"])
def test_a_user_exception_keeps_its_type(loss, exc, match):
    with pytest.raises(exc, match=match) as info:
        fit(loss, P0, optax.sgd(0.1), _linear(), steps=2, progress=False)
    if exc is not ValueError:
        assert any("while tracing loss_fn" in n for n in info.value.__notes__)


# ---- restarts_by: how restarts share the compiled call ----

def _matmul_loss(p, b):  # one restart's step: 2 * 2 * n * k * m FLOPs (forward + gradient)
    return jnp.mean((b[0] @ p["w"] - b[1]) ** 2)


def _matmul_problem(n, k, m):
    x = jax.random.normal(jax.random.key(0), (n, k))
    return {"w": jnp.zeros((k, m))}, (x, jnp.ones((n, m)))


@pytest.mark.parametrize(("shape", "cpu"), [((8, 4, 2), "vmap"), ((64, 128, 128), "map")],
                         ids=["small", "big"])
def test_auto_maps_restarts_on_cpu_when_a_step_is_big(shape, cpu):
    params, data = _matmul_problem(*shape)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), data)
    by, flops = _trainer.restarts_by(_matmul_loss, params, batch, {}, "cpu")
    n, k, m = shape
    assert flops >= 4 * n * k * m  # the matmul and its weight gradient, at least
    assert (flops > _trainer.MAP_RESTARTS_FLOPS) == (cpu == "map")
    assert by == cpu
    assert _trainer.restarts_by(_matmul_loss, params, batch, {}, "gpu")[0] == "vmap"
    if jax.default_backend() == "cpu":  # fit decides the same way, and says so
        stacked = jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), params)
        out = fit(_matmul_loss, stacked, optax.sgd(0.01), data, steps=2, restarts=2,
                  progress=False)
        assert out.restarts_by == cpu


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_each_restart_is_the_run_of_its_own_key_vmapped_or_mapped(impl, mode):
    # restart r == a run without restarts from params[r] with jax.random.split(key, R)[r];
    # "rbg" draws other permutations for a vmapped batch of keys than for each key alone,
    # so the orders must be drawn key by key under vmap too
    params, data = _matmul_problem(32, 6, 3)
    params = jax.tree.map(lambda x: x + jnp.arange(3.0)[:, None, None] / 10,
                          jax.tree.map(lambda x: jnp.stack([x] * 3), params))
    key = jax.random.key(3, impl=impl)
    run = dict(steps=17, batch_size=5, chunk_size=6, progress=False, mode=mode)
    got = {by: fit(_matmul_loss, params, optax.adamw(0.05), data, restarts=3, key=key,
                   restarts_by=by, **run) for by in ("vmap", "map")}
    for r, k in enumerate(jax.random.split(key, 3)):
        one = fit(_matmul_loss, jax.tree.map(lambda x, r=r: x[r], params), optax.adamw(0.05),
                  data, key=k, **run)
        for by, out in got.items():
            np.testing.assert_allclose(out.losses[r], one.losses, rtol=1e-5, err_msg=by)
            np.testing.assert_allclose(out.params["w"][r], one.params["w"], rtol=1e-5,
                                       atol=1e-6, err_msg=by)
    assert not np.allclose(got["map"].losses[0], got["map"].losses[1])
