"""A checkpoint resumes only the run that wrote it: the optimizer is identified by what it
computes (its updates from the checkpoint's state on a fixed probe problem), not by walking its
closures; the loss function by its value and gradient at the initial params; the initial
params and data by digests; and the user's run_config. Equal hyperparameters of different
Python or numpy types resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv

pytest.importorskip("orbax.checkpoint")

X = jax.random.normal(jax.random.key(0), (16, 3))
DATA = (X, X @ jnp.array([1.0, -2.0, 0.5]))
P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
RUN = dict(steps=20, checkpoint_every=10, progress=False, key=jax.random.key(1))
GLOBAL = {"rate": 0.05}


def _loss(p, b):
    return jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)


def _other_loss(p, b):
    return jnp.mean(jnp.abs(b[0] @ p["w"] + p["b"] - b[1]))


def _warmup_cosine(peak):
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, peak, 10, 100), weight_decay=1e-4))


def _reads_global(count):
    return GLOBAL["rate"] + 0 * count


CHANGED = {
    "warmup_cosine_peak": (lambda: _warmup_cosine(0.1), lambda: _warmup_cosine(0.2)),
    "multisteps_lr": (lambda: optax.MultiSteps(optax.adam(0.05), 2),
                      lambda: optax.MultiSteps(optax.adam(0.07), 2)),
    "schedule_object_rate": (lambda: optax.sgd(optax.constant_schedule(0.05)),
                             lambda: optax.sgd(optax.constant_schedule(0.06))),
    "lambda_schedule": (lambda: optax.sgd(lambda c: 0.1), lambda: optax.sgd(lambda c: 0.5)),
    "adam_b1": (lambda: optax.adam(0.05), lambda: optax.adam(0.05, b1=0.8)),
    "sgd_vs_momentum": (lambda: optax.sgd(0.05), lambda: optax.sgd(0.05, momentum=0.5)),
}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_changed_optimizer_is_refused(tmp_path, name):
    first, second = CHANGED[name]
    jaxconv.fit(_loss, P0, first(), DATA, checkpoint_dir=tmp_path, **RUN)
    # another state structure (momentum's trace) is named by the restore itself
    match = "the optimizer computes other updates|holds a different tree than the target"
    with pytest.raises(ValueError, match=match):
        jaxconv.fit(_loss, P0, second(), DATA, checkpoint_dir=tmp_path, resume=True, **RUN)


def test_a_schedule_reading_a_changed_global_is_refused(tmp_path):
    jaxconv.fit(_loss, P0, optax.sgd(_reads_global), DATA, checkpoint_dir=tmp_path, **RUN)
    GLOBAL["rate"] = 0.5
    try:
        with pytest.raises(ValueError, match="the optimizer computes other updates"):
            jaxconv.fit(_loss, P0, optax.sgd(_reads_global), DATA, checkpoint_dir=tmp_path,
                        resume=True, **RUN)
    finally:
        GLOBAL["rate"] = 0.05


@pytest.mark.parametrize(
    ("first", "second"),
    [(lambda: optax.adam(0.1), lambda: optax.adam(np.float64(0.1))),
     (lambda: optax.adam(1), lambda: optax.adam(1.0)),
     (lambda: optax.sgd(lambda c: 0.1), lambda: optax.sgd(lambda c: np.float32(0.1))),
     (lambda: _warmup_cosine(0.1), lambda: _warmup_cosine(0.1))],
    ids=["float64", "int_vs_float", "schedule_numpy", "rebuilt_chain"],
)
def test_equal_hyperparameters_of_other_types_resume(tmp_path, first, second):
    with pytest.raises(_Stop):
        jaxconv.fit(_loss, P0, first(), DATA, checkpoint_dir=tmp_path, on_chunk=_stop_at(10),
                    **RUN)
    resumed = jaxconv.fit(_loss, P0, second(), DATA, checkpoint_dir=tmp_path, resume=True,
                          **RUN)
    plain = jaxconv.fit(_loss, P0, first(), DATA, **{k: v for k, v in RUN.items()
                                                     if k != "checkpoint_every"})
    np.testing.assert_allclose(resumed.losses, plain.losses, rtol=1e-6)


class _Stop(Exception):
    pass


def _stop_at(step):
    def hook(s, losses):
        if s >= step:
            raise _Stop
    return hook


def test_a_changed_loss_function_is_refused(tmp_path):
    jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path, **RUN)
    with pytest.raises(ValueError, match="loss_fn computes other values"):
        jaxconv.fit(_other_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path,
                    resume=True, **RUN)


def test_changed_initial_params_are_refused(tmp_path):
    jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path, **RUN)
    other = {"w": jnp.full(3, 0.1), "b": jnp.zeros(())}
    with pytest.raises(ValueError, match="params: the values differ"):
        jaxconv.fit(_loss, other, optax.adam(0.05), DATA, checkpoint_dir=tmp_path,
                    resume=True, **RUN)


def test_run_config_is_stored_and_compared(tmp_path):
    jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path,
                run_config={"lr": 0.05, "note": "baseline"}, **RUN)
    from jaxconv.checkpoint import Checkpointer

    with Checkpointer(tmp_path) as ckpt:
        meta = ckpt.read_metadata(20)
    assert meta["config"]["run_config"] == {"lr": 0.05, "note": "baseline"}
    assert len(meta["optimizer_probe"]) == 4 * 4
    with pytest.raises(ValueError, match=r"run_config: checkpoint has \{'lr': 0.05"):
        jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path, resume=True,
                    run_config={"lr": 0.06, "note": "baseline"}, **RUN)


def test_another_chunk_size_resumes_bit_identically(tmp_path):
    plain = jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, chunk_size=4,
                        **{k: v for k, v in RUN.items() if k != "checkpoint_every"})
    with pytest.raises(_Stop):
        jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path, chunk_size=4,
                    on_chunk=_stop_at(10), **RUN)
    out = jaxconv.fit(_loss, P0, optax.adam(0.05), DATA, checkpoint_dir=tmp_path,
                      chunk_size=3, resume=True, **RUN)
    np.testing.assert_array_equal(out.losses, plain.losses)
    np.testing.assert_array_equal(out.params["w"], plain.params["w"])
