"""Tests for data-parallel ``fit(..., mesh=...)``: on 4 forced CPU devices in a subprocess
(XLA_FLAGS must be set before jax is imported), and the argument checks in-process."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv

WORKER = pathlib.Path(__file__).with_name("_fit_worker.py")
ROOT = WORKER.parent.parent


slow = pytest.mark.slow  # the child compiles ~10 fits on 4 devices


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Runs every sharding scenario once in a child with 4 CPU devices; its JSON report."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(WORKER), "sharding",
         "--dir", str(tmp_path_factory.mktemp("shard_ckpt"))],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@slow
def test_child_sees_four_devices(report):
    assert report["device_count"] == 4


@slow
def test_sharded_and_single_device_runs_agree(report):
    diff = report["sharded_vs_single"]
    assert diff["params"] < 1e-5 and diff["losses"] < 1e-5
    assert diff["ref_final_loss"] < 1.0  # the run actually trained
    # one compiled call per step, on the mesh, gives the same run
    assert diff["step_mode"] == "step" and diff["step_mode_params"] < 1e-5


@slow
def test_minibatches_are_sharded_inside_the_compiled_step(report):
    seen = report["batch_sharding_in_step"]
    assert seen["type"] == "NamedSharding" and seen["spec"] == "P('data',)"
    assert seen["devices"] == 4 and seen["shard_shape"] == [2, 3]  # 8 examples over 4 devices


@slow
def test_data_is_sharded_and_params_replicated(report):
    data = report["data_sharding"]
    assert data["spec"] == "P('data',)" and data["addressable_shards"] == 4
    assert data["shard_rows"] == [8, 8, 8, 8]  # 32 examples, 8 per device
    params = report["params_sharding"]
    assert params["spec"] == "P()" and params["addressable_shards"] == 4
    assert params["fully_replicated"] and params["same_mesh"]


@slow
def test_full_batch_on_an_auto_mesh(report):
    assert report["full_batch_diff"] < 1e-5


@slow
def test_restarts_with_a_mesh(report):
    r = report["restarts"]
    assert r["params"] < 1e-5 and r["losses_shape"] == [3, 30] and r["addressable_shards"] == 4
    assert r["batch_spec_in_step"] == "P(None, 'data')"  # restarts axis, then examples split


@slow
def test_two_dimensional_mesh_shards_over_data_axis_only(report):
    m = report["mesh_2d"]
    assert m["params"] < 1e-5
    assert m["batch_sharding_in_step"]["shard_shape"] == [4, 3]  # 8 examples over 2


@slow
def test_one_device_mesh_is_the_single_device_run(report):
    assert report["one_device"] < 1e-6


@slow
def test_divisibility_errors(report):
    errors = report["errors"]
    assert "number of examples (=30) must be divisible by the number of devices on mesh axis " \
           "'data' (=4)" in errors["examples"]
    assert "batch_size (=6) must be divisible by the number of devices" in errors["batch"]


@slow
def test_checkpoints_on_a_mesh_resume_bit_identical_with_sharding(report):
    r = report["resume_on_mesh"]
    assert r["steps_after_cut"] == [10]
    assert r["bit_identical"]
    assert r["params_sharding"]["spec"] == "P()" and r["params_sharding"]["devices"] == 4
    restored = report["restored_sharding"]
    assert restored["rows"]["spec"] == "P('data',)" and restored["rows"]["shard_shape"] == [2, 2]
    assert restored["rows_equal"]
    assert restored["w"]["spec"] == "P()" and restored["w"]["devices"] == 4


# ---- in-process: one device, argument checks ----

def _loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] - y) ** 2)


def _data():
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    return x, x @ np.array([1.0, 2.0, 3.0], np.float32)


P0 = {"w": jnp.zeros(3)}


@pytest.mark.slow
def test_one_device_mesh_in_process():
    mesh = jax.make_mesh((1,), ("batch",))
    ref = jaxconv.fit(_loss, P0, optax.adam(0.1), _data(), steps=20, progress=False)
    out = jaxconv.fit(_loss, P0, optax.adam(0.1), _data(), steps=20, mesh=mesh, progress=False)
    np.testing.assert_allclose(out.params["w"], ref.params["w"], rtol=1e-6)
    assert out.params["w"].sharding.mesh.axis_names == ("batch",)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mesh": "cpu"}, TypeError, "mesh must be a jax.sharding.Mesh"),
        ({"mesh": "MESH", "data_axis": "model"}, ValueError,
         r"data_axis \(='model'\) is not an axis of the mesh"),
        ({"data_axis": "data"}, ValueError, "data_axis needs a mesh"),
        ({"mesh": "MESH", "data": None}, ValueError, "a mesh shards the data, but data is None"),
    ],
    ids=["mesh_type", "axis_name", "axis_without_mesh", "no_data"],
)
def test_mesh_argument_errors(kwargs, exc, match):
    kwargs = dict(kwargs)
    if kwargs.get("mesh") == "MESH":
        kwargs["mesh"] = jax.make_mesh((1,), ("data",))
    data = kwargs.pop("data", _data())
    with pytest.raises(exc, match=match):
        jaxconv.fit(_loss, P0, optax.adam(0.1), data, steps=2, progress=False, **kwargs)
