"""Tests for jaxconv.checkpoint and fit's checkpoints: save/restore, keep-last, resume ==
uninterrupted (also after SIGKILL of a child), corruption fallback, half-written checkpoints,
config mismatch, and divergence leaving a good checkpoint behind."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import _fit_worker
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv
from jaxconv import checkpoint
from jaxconv._fitting import DivergenceError
from jaxconv.checkpoint import Checkpointer, CorruptCheckpointError

# orbax reads a checkpoint's arrays in tasks of an event loop it closes when one fails; the
# others, finishing later on tensorstore's threads, can no longer call back into it, and
# Python reports that (a RuntimeError of orbax's, not a failure of these tests) as unraisable
pytestmark = pytest.mark.filterwarnings(
    "ignore:(?s).*Event loop is closed:pytest.PytestUnraisableExceptionWarning")

WORKER = pathlib.Path(_fit_worker.__file__)
ROOT = WORKER.parent.parent


def _problem(n=32):
    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    return x, x @ np.array([1.5, -2.0, 0.5], np.float32)


def _loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


P0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
# full batch: compiles in a third of the time; the SIGKILL test covers minibatches + restarts
RUN = dict(steps=30, key=jax.random.key(5), chunk_size=4, checkpoint_every=10, progress=False)


def _fit(directory, **kwargs):
    return jaxconv.fit(_loss, P0, optax.adam(0.05), _problem(), checkpoint_dir=directory,
                       **{**RUN, **kwargs})


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Stop(Exception):
    pass


def _stop_at(step):
    def on_chunk(s, losses):
        if s == step:
            raise _Stop

    return on_chunk


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted checkpointed run: its directory (steps 10, 20, 30) and result."""
    d = tmp_path_factory.mktemp("finished")
    return d, _fit(d / "ckpt")


def _copy(finished, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(finished[0] / "ckpt", d)
    return d


# ---- the Checkpointer on its own ----

@pytest.mark.slow
def test_save_and_restore_keep_the_newest(tmp_path):
    opt = optax.adam(0.1)
    state = {"params": P0, "opt_state": opt.init(P0), "step_losses": np.arange(4.0)}
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in (1, 2, 3):
            path = ckpt.save(step, state, metadata={"note": f"s{step}"})
            assert path == tmp_path.absolute() / str(step)
        assert ckpt.steps() == [2, 3]
        got = ckpt.restore_latest(state)
    assert got.step == 3 and got.metadata == {"note": "s3"}
    assert type(got.state["opt_state"][0]) is type(state["opt_state"][0])  # namedtuples kept
    _assert_same(got.state, state)
    # the module-level helpers, without a target: numpy arrays
    plain = checkpoint.restore_latest(tmp_path)
    assert plain.step == 3 and isinstance(plain.state["params"]["w"], np.ndarray)
    assert checkpoint.restore_latest(tmp_path / "nothing") is None
    checkpoint.save(tmp_path, 7, {"a": np.ones(2)}, keep=None)
    assert checkpoint.restore_latest(tmp_path).step == 7


def test_save_argument_errors(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, {"a": np.ones(2)})
        with pytest.raises(ValueError, match=r"step \(=5\) must be greater than the newest"):
            ckpt.save(5, {"a": np.ones(2)})
        with pytest.raises(ValueError, match=r"Checkpointer.save: step must be >= 0, got step=-1"):
            ckpt.save(-1, {"a": np.ones(2)})
        with pytest.raises(TypeError, match="step must be an int, got str '6'"):
            ckpt.save("6", {"a": np.ones(2)})
        with pytest.raises(TypeError, match="JSON-serialisable"):
            ckpt.save(6, {"a": np.ones(2)}, metadata={"x": object()})
        with pytest.raises(TypeError, match=r"metadata must be a dict, got <class 'list'>"):
            ckpt.save(6, {"a": np.ones(2)}, metadata=[1])
        with pytest.raises(TypeError, match="state leaf 'a' must be an array, got str"):
            ckpt.save(6, {"a": "x"})
        with pytest.raises(ValueError, match="two leaves share the path 'a/b'"):
            ckpt.save(6, {"a/b": np.ones(1), "a": {"b": np.ones(1)}})
        with pytest.raises(ValueError, match=r"different tree than the target: "
                                             r"not in the checkpoint: \['b'\]"):
            ckpt.restore_latest({"a": np.ones(2), "b": np.ones(1)})
        with pytest.raises(ValueError, match=r"a: saved \(2,\) float64, target \(3,\) float64"):
            ckpt.restore_latest({"a": np.ones(3)})
    with pytest.raises(ValueError, match="keep must be a positive int"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(TypeError, match=r"directory must be a non-empty path .*got ''"):
        Checkpointer("")
    with pytest.raises(TypeError, match="keep must be a positive int or None, got '3'"):
        Checkpointer(tmp_path, keep="3")
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        assert ckpt.steps() == [5]
        with pytest.raises(ValueError, match="opened with read_only=True"):
            ckpt.save(6, {"a": np.ones(2)})
        with pytest.raises(ValueError, match="opened with read_only=True"):
            ckpt.delete(5)
        with pytest.raises(ValueError, match="opened with read_only=True"):
            ckpt.set_aside(5)
        assert ckpt.steps() == [5]


@pytest.mark.parametrize("with_target", [True, False], ids=["target", "no_target"])
@pytest.mark.slow
def test_typed_prng_keys_round_trip(tmp_path, with_target):
    state = {"k": jax.random.key(3), "ks": jax.random.split(jax.random.key(1, impl="rbg"), 2),
             "w": np.ones(2)}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        got = ckpt.restore_latest(state if with_target else None).state
    for name in ("k", "ks"):
        assert jax.random.key_impl(got[name]) == jax.random.key_impl(state[name])
        np.testing.assert_array_equal(jax.random.key_data(got[name]),
                                      jax.random.key_data(state[name]))
    np.testing.assert_array_equal(got["w"], state["w"])


# ---- fit writes checkpoints ----

@pytest.mark.slow
def test_fit_checkpoints_every_k_steps_and_at_the_end(tmp_path):
    out = _fit(tmp_path, steps=25, keep=2)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [20, 25]
        got = ckpt.restore_latest()
    meta = got.metadata
    assert meta["step"] == 25
    assert meta["config"]["steps"] == 25 and meta["config"]["batch_size"] is None
    assert meta["config"]["restarts"] is None and meta["config"]["max_nonfinite"] == 500
    np.testing.assert_array_equal(got.state["losses"], out.losses)
    np.testing.assert_array_equal(got.state["params"]["w"], out.params["w"])
    np.testing.assert_array_equal(got.state["key_data"], jax.random.key_data(RUN["key"]))
    assert int(got.state["guard"]["skipped"]) == out.nonfinite_steps == 0
    assert int(got.state["guard"]["stopped"]) == -1


@pytest.mark.slow
def test_checkpointing_does_not_change_the_result(finished):
    plain = jaxconv.fit(_loss, P0, optax.adam(0.05), _problem(),
                        **{k: v for k, v in RUN.items() if k != "checkpoint_every"})
    np.testing.assert_allclose(finished[1].losses, plain.losses, rtol=1e-6)
    np.testing.assert_allclose(finished[1].params["w"], plain.params["w"], rtol=1e-6)


@pytest.mark.slow
def test_interrupted_then_resumed_is_bit_identical(finished, tmp_path):
    with pytest.raises(_Stop):
        _fit(tmp_path, on_chunk=_stop_at(20))
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [10, 20]
    seen = []
    out = _fit(tmp_path, resume=True, on_chunk=lambda s, losses: seen.append(s))
    assert seen == [24, 28, 30]  # continued from step 20, in the same chunks
    _assert_same(out.params, finished[1].params)
    _assert_same(out.opt_state, finished[1].opt_state)
    np.testing.assert_array_equal(out.losses, finished[1].losses)


@pytest.mark.slow
def test_restarts_by_map_resumes_bit_identical(tmp_path):
    params = jax.tree.map(lambda x: jnp.stack([x, x + 1.0]), P0)
    run = dict(RUN, restarts=2, restarts_by="map", batch_size=4)
    whole = jaxconv.fit(_loss, params, optax.adam(0.05), _problem(), **{
        k: v for k, v in run.items() if k != "checkpoint_every"})
    with pytest.raises(_Stop):
        jaxconv.fit(_loss, params, optax.adam(0.05), _problem(), checkpoint_dir=tmp_path,
                    on_chunk=_stop_at(20), **run)
    out = jaxconv.fit(_loss, params, optax.adam(0.05), _problem(), checkpoint_dir=tmp_path,
                      resume=True, **run)
    assert out.restarts_by == "map"
    _assert_same(out.params, whole.params)
    np.testing.assert_array_equal(out.losses, whole.losses)


@pytest.mark.slow
def test_resume_of_a_finished_run_returns_it(finished, tmp_path):
    d = _copy(finished, tmp_path)
    out = _fit(d, resume=True)
    _assert_same(out.params, finished[1].params)
    np.testing.assert_array_equal(out.losses, finished[1].losses)
    assert out.compile_s == 0.0


@pytest.mark.slow
def test_resume_on_an_empty_directory_starts_afresh(finished, tmp_path):
    out = _fit(tmp_path / "new", resume=True)
    _assert_same(out.params, finished[1].params)


@pytest.mark.slow
def test_existing_checkpoints_need_resume(finished, tmp_path):
    d = _copy(finished, tmp_path)
    with pytest.raises(ValueError, match=r"already holds checkpoints \(steps \[10, 20, 30\]\); "
                                         "pass resume=True"):
        _fit(d)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 40}, "steps: checkpoint has 30, this call has 40"),
        ({"batch_size": 4}, "batch_size: checkpoint has None, this call has 4"),
        ({"key": jax.random.key(6)}, r"key: checkpoint has \['threefry2x32', \[0, 5\]\]"),
        ({"max_nonfinite": 7}, "max_nonfinite: checkpoint has 500, this call has 7"),
        ({"run_config": {"lr": 0.05}}, r"run_config: checkpoint has None, this call has \{"),
    ],
    ids=["steps", "batch_size", "key", "max_nonfinite", "run_config"],
)
@pytest.mark.slow
def test_resume_with_a_different_config_raises(finished, tmp_path, kwargs, match):
    d = _copy(finished, tmp_path)
    with pytest.raises(ValueError, match=rf"cannot resume from .*{match}"):
        _fit(d, resume=True, **kwargs)


@pytest.mark.parametrize(
    "optimizer", [optax.sgd(0.05), optax.adam(0.06), optax.adam(0.05, b1=0.8)],
    ids=["sgd", "adam_lr", "adam_b1"],
)
@pytest.mark.slow
def test_resume_with_a_different_optimizer_raises(finished, tmp_path, optimizer):
    d = _copy(finished, tmp_path)
    # sgd's state has another structure than adam's: the restore itself names that
    match = r"cannot resume .*the optimizer computes other updates|holds a different tree"
    with pytest.raises(ValueError, match=match):
        jaxconv.fit(_loss, P0, optimizer, _problem(), checkpoint_dir=d, resume=True, **RUN)


def test_resume_with_the_same_optimizer_built_again_works(finished, tmp_path):
    d = _copy(finished, tmp_path)  # finished ran optax.adam(0.05): a new, equal one resumes
    out = jaxconv.fit(_loss, P0, optax.adam(0.05), _problem(), checkpoint_dir=d, resume=True,
                      **RUN)
    np.testing.assert_array_equal(out.params["w"], finished[1].params["w"])


@pytest.mark.parametrize("change", ["negated_targets", "shuffled_rows"])
def test_resume_with_different_data_of_the_same_shape_raises(finished, tmp_path, change):
    x, y = _problem()
    data = (x, -y) if change == "negated_targets" else (x[::-1], y[::-1])
    d = _copy(finished, tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume .*data: the values differ"):
        jaxconv.fit(_loss, P0, optax.adam(0.05), data, checkpoint_dir=d, resume=True, **RUN)


@pytest.mark.slow
def test_fit_checkpoints_an_optimizer_state_holding_a_typed_key(tmp_path):
    opt = optax.noisy_sgd(0.01, key=jax.random.key(4))
    run = dict(RUN, steps=20)
    whole = jaxconv.fit(_loss, P0, opt, _problem(), **{k: v for k, v in run.items()
                                                        if k != "checkpoint_every"})
    with pytest.raises(_Stop):
        jaxconv.fit(_loss, P0, opt, _problem(), checkpoint_dir=tmp_path, on_chunk=_stop_at(10),
                    **run)
    out = jaxconv.fit(_loss, P0, opt, _problem(), checkpoint_dir=tmp_path, resume=True, **run)
    np.testing.assert_array_equal(out.params["w"], whole.params["w"])
    np.testing.assert_array_equal(out.losses, whole.losses)


# ---- corruption, truncation, half-written checkpoints ----

def _largest_file(directory):
    files = [p for p in pathlib.Path(directory).rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _halve(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt(step_dir, how):
    data_file = _largest_file(step_dir / "state" / "d")  # orbax's b-tree: the small arrays
    if how == "flip":  # bytes changed in place: orbax would restore different numbers
        data = bytearray(data_file.read_bytes())
        for i in range(len(data) // 3, len(data), max(1, len(data) // 7)):
            data[i] ^= 0xFF
        data_file.write_bytes(bytes(data))
    elif how == "truncate":
        _halve(data_file)
    elif how == "garble":
        data_file.write_bytes(np.random.default_rng(0).bytes(data_file.stat().st_size))
    elif how == "metadata":
        _halve(step_dir / "meta" / "metadata")
    elif how == "step_metadata":  # orbax's file holding the metadata given to save
        _halve(step_dir / "_CHECKPOINT_METADATA")
    elif how == "array_metadata":
        _halve(step_dir / "state" / "_METADATA")
    elif how == "manifest":
        _halve(step_dir / "state" / "manifest.ocdbt")
    elif how == "digest":  # a record that does not match what was saved
        meta_file = step_dir / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        meta["sha256"]["losses"] = "0" * 64
        meta_file.write_text(json.dumps(meta))
    elif how == "arrays_gone":
        shutil.rmtree(step_dir / "state")


CORRUPTIONS = ["flip", "truncate", "garble", "metadata", "step_metadata", "array_metadata",
               "manifest", "digest", "arrays_gone"]


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(finished, tmp_path, how):
    d = _copy(finished, tmp_path)
    _corrupt(d / "30", how)
    bad = rf"checkpoint {d.absolute()}/30\b"
    with pytest.warns(RuntimeWarning, match=bad):
        got = checkpoint.restore_latest(d)
    assert got.step == 20 and got.skipped == (30,)
    np.testing.assert_array_equal(got.state["losses"][:20], finished[1].losses[:20])
    # fit resumes from step 20, sets the bad checkpoint aside, saves step 30 again and ends
    # where it would have
    with pytest.warns(RuntimeWarning, match=bad):
        with pytest.warns(RuntimeWarning, match=r"moved checkpoint 30 aside to .*30\.corrupt"):
            out = _fit(d, resume=True)
    _assert_same(out.params, finished[1].params)
    np.testing.assert_array_equal(out.losses, finished[1].losses)
    with Checkpointer(d) as ckpt:
        assert ckpt.steps() == [10, 20, 30]
        assert ckpt.restore_latest().step == 30
    assert (d / "30.corrupt").is_dir()  # the unreadable one is kept aside, not deleted


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("digest", r"/30: sha256 mismatch in \['losses'\] \(the files were changed after saving\)"),
        ("flip", r"/30: array metadata undecodable \(ValueError: Error opening \"zarr\" driver"),
        ("truncate", r"/30: array metadata undecodable \(ValueError: OUT_OF_RANGE"),
        ("garble", r"/30: array metadata undecodable \(ValueError: DATA_LOSS"),
        ("manifest", r"/30: array metadata undecodable \(ValueError: DATA_LOSS"),
        ("array_metadata", r"/30: array metadata undecodable \(JSONDecodeError"),
        ("metadata", r"/30: sha256 record undecodable \(JSONDecodeError"),
        ("step_metadata", r"/30: its metadata \(_CHECKPOINT_METADATA\) does not match its sha256"),
        ("arrays_gone", r"/30: its state/ directory is gone"),
    ],
)
def test_each_kind_of_corruption_says_what_it_found(finished, tmp_path, how, match):
    d = _copy(finished, tmp_path)
    _corrupt(d / "30", how)
    with Checkpointer(d, read_only=True) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=match):
            ckpt.restore(30)
        with pytest.warns(RuntimeWarning, match=match + ".*; falling back to the previous"):
            assert ckpt.restore_latest().skipped == (30,)


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("flip", r"/2: sha256 mismatch in \['big'\]"),
        ("truncate", r"/2: arrays undecodable \(ValueError: OUT_OF_RANGE"),
        ("garble", r"/2: arrays undecodable \(ValueError: FAILED_PRECONDITION"),
    ],
)
def test_damaged_array_bytes_are_corruption(tmp_path, how, match):
    # an array too big to live in orbax's b-tree: its bytes are a file of their own
    big = np.random.default_rng(0).normal(size=20000).astype(np.float32)
    with Checkpointer(tmp_path, keep=None) as ckpt:
        ckpt.save(1, {"big": big})
        ckpt.save(2, {"big": big + 1})
        data_file = _largest_file(tmp_path / "2" / "state")
        assert data_file.stat().st_size > big.nbytes // 2
        data = bytearray(data_file.read_bytes())
        if how == "flip":
            for i in range(len(data) // 3, len(data), len(data) // 7):
                data[i] ^= 0xFF
        elif how == "truncate":
            data = data[: len(data) // 2]
        else:
            data = bytearray(np.random.default_rng(1).bytes(len(data)))
        data_file.write_bytes(bytes(data))
        with pytest.warns(RuntimeWarning, match=match):
            got = ckpt.restore_latest()
    assert got.step == 1 and got.skipped == (2,)
    np.testing.assert_array_equal(got.state["big"], big)


def test_restore_latest_names_the_corrupt_steps_it_skipped(finished, tmp_path):
    d = _copy(finished, tmp_path)
    with Checkpointer(d, read_only=True) as ckpt:
        assert ckpt.restore_latest().skipped == ()
        _corrupt(d / "30", "digest")
        _corrupt(d / "20", "metadata")
        with pytest.warns(RuntimeWarning, match="falling back") as caught:
            got = ckpt.restore_latest()
    assert got.step == 10 and got.skipped == (30, 20)
    assert [str(d.absolute() / s) in str(w.message) for w in caught for s in ("30", "20")
            ].count(True) == 2


def _oserror():
    return OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize(
    ("make_error", "match"),
    [
        (_oserror, "Input/output error"),
        (lambda: MemoryError("cannot allocate"), "cannot allocate"),
        # what tensorstore raises for a file it may not read, and for a flaky network store
        (lambda: ValueError("PERMISSION_DENIED: Error reading local file"), "PERMISSION_DENIED"),
        (lambda: ValueError("UNAVAILABLE: Connection reset"), "UNAVAILABLE"),
        (lambda: RuntimeError("device cpu:7 is not one of the available devices"), "cpu:7"),
    ],
    ids=["oserror", "memory", "permission", "unavailable", "devices"],
)
@pytest.mark.slow
def test_an_error_that_is_not_corruption_propagates_and_sets_nothing_aside(
        finished, tmp_path, monkeypatch, make_error, match):
    import orbax.checkpoint as ocp

    d = _copy(finished, tmp_path)
    error = make_error()
    real = ocp.CheckpointManager.restore

    def restore(self, step, *args, **kwargs):  # the newest checkpoint's arrays fail to load
        if step == 30 and "state" in kwargs["args"].keys():
            raise error
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    with pytest.raises(type(error), match=match) as info:
        _fit(d, resume=True)
    assert info.value is error  # its own type, not retyped
    assert any(f"while reading the arrays of checkpoint {d.absolute()}/30" in note
               for note in info.value.__notes__)
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == ["10", "20", "30"]  # nothing set aside
    with Checkpointer(d, read_only=True) as ckpt:
        assert ckpt.restore_latest().step == 30  # and it was good all along


def test_a_filesystem_error_on_the_step_metadata_is_not_corruption(finished, tmp_path):
    # orbax reads _CHECKPOINT_METADATA leniently (an unreadable file reads as no metadata);
    # the error the filesystem gives must still reach the caller, not pass for corruption
    d = _copy(finished, tmp_path)
    meta = d / "30" / "_CHECKPOINT_METADATA"
    saved = meta.read_bytes()
    meta.unlink()
    meta.mkdir()  # reading it fails with IsADirectoryError
    with Checkpointer(d, read_only=True) as ckpt:
        with pytest.raises(IsADirectoryError) as info:
            ckpt.restore_latest()
    assert "while reading the metadata of checkpoint" in info.value.__notes__[0]
    meta.rmdir()
    meta.write_bytes(saved)
    assert checkpoint.restore_latest(d).step == 30


def test_every_checkpoint_corrupt_raises(finished, tmp_path):
    d = _copy(finished, tmp_path)
    for step in (10, 20, 30):
        _corrupt(d / str(step), "metadata")
    with pytest.warns(RuntimeWarning, match="falling back"):
        with pytest.raises(CorruptCheckpointError,
                           match=r"no checkpoint in .* verifies \(3 tried\)"):
            _fit(d, resume=True)


@pytest.mark.slow
def test_half_written_checkpoint_is_never_picked_up(finished, tmp_path):
    d = _copy(finished, tmp_path)
    # what a save killed mid-write leaves: orbax's temporary directory, never renamed into place
    shutil.rmtree(d / "30")
    tmp = d / "30.orbax-checkpoint-tmp"
    shutil.copytree(d / "20", tmp)
    _corrupt(tmp, "truncate")
    got = checkpoint.restore_latest(d)  # no warning: it is not a checkpoint at all
    assert got.step == 20
    # a reader leaves it alone: it may be a save in progress (only fit, the writer, cleans up)
    assert tmp.exists()
    out = _fit(d, resume=True)
    _assert_same(out.params, finished[1].params)
    with Checkpointer(d) as ckpt:
        assert ckpt.steps() == [10, 20, 30]
    assert not tmp.exists()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    """A child fit is SIGKILLed after its second checkpoint; a second child resumes it; the
    params equal (bit for bit) those of an uninterrupted run in this process."""
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    d = tmp_path / "ckpt"
    cmd = [sys.executable, str(WORKER), "train", "--dir", str(d)]
    seen = []
    with open(tmp_path / "stderr1.txt", "w") as err, subprocess.Popen(
        cmd + ["--pause", "0.2"], stdout=subprocess.PIPE, stderr=err, text=True, env=env
    ) as child:
        watchdog = threading.Timer(120, child.kill)
        watchdog.start()
        for line in child.stdout:
            seen.append(line.strip())
            if line.strip() == "CKPT 20":
                child.send_signal(signal.SIGKILL)
                break
        child.wait()
        watchdog.cancel()
    assert "CKPT 20" in seen, (seen, (tmp_path / "stderr1.txt").read_text()[-2000:])
    assert child.returncode == -signal.SIGKILL
    with Checkpointer(d) as ckpt:
        left = ckpt.steps()
    assert 20 <= left[-1] < _fit_worker.TRAIN["steps"], left

    with open(tmp_path / "stderr2.txt", "w") as err:
        done = subprocess.run(cmd + ["--resume", "--out", str(tmp_path / "out.npz")],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=120)
    assert done.returncode == 0, (tmp_path / "stderr2.txt").read_text()[-2000:]
    first = int(done.stdout.split()[1])  # the first checkpoint it wrote after resuming
    assert first == left[-1] + _fit_worker.TRAIN["checkpoint_every"]
    resumed = np.load(tmp_path / "out.npz")

    whole = _fit_worker.train_problem(tmp_path / "whole")
    expected = _fit_worker.leaves(whole.params)
    assert set(expected) <= set(resumed.files)
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    np.testing.assert_array_equal(resumed["losses"], whole.losses)


# ---- divergence ----

@pytest.mark.slow
def test_divergence_stops_with_an_error_and_a_good_checkpoint(tmp_path):
    # converges for 20 steps, then the learning rate jumps to 1.0 and the loss explodes
    opt = optax.sgd(optax.piecewise_constant_schedule(0.05, {20: 20.0}))
    with pytest.raises(DivergenceError, match=r"loss 1\d\d\.?\d* at step 30 exceeds "
                                               r"max_loss=100.*/20\) predates it") as info:
        jaxconv.fit(_loss, P0, opt, _problem(), steps=60, chunk_size=10, checkpoint_every=10,
                    checkpoint_dir=tmp_path, max_loss=100.0, progress=False)
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert err.step == 30 and err.loss > 100 and err.checkpoint_step == 20
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [10, 20]  # step 30's params gave the exploding loss: dropped
        got = ckpt.restore_latest()
    assert got.step == 20
    params = jax.tree.map(jnp.asarray, got.state["params"])
    assert float(_loss(params, _problem())) < 100.0
    assert np.nanmax(got.state["losses"][:20]) < 100.0


@pytest.mark.slow
def test_divergence_in_a_restart_names_it():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.array([0.0, 50.0])}
    with pytest.raises(DivergenceError, match=r"at step 0 in restart 1 exceeds max_loss=1000"):
        jaxconv.fit(_loss, params, optax.sgd(0.01), _problem(), steps=5, restarts=2,
                    max_loss=1000.0, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"checkpoint_every": 5}, ValueError, "checkpoint_every and resume need checkpoint_dir"),
        ({"resume": True}, ValueError, "checkpoint_every and resume need checkpoint_dir"),
        ({"checkpoint_dir": "D", "checkpoint_every": 0}, ValueError,
         "checkpoint_every must be a positive int or None"),
        ({"checkpoint_dir": "D", "keep": 0}, ValueError, "keep must be a positive int"),
        ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir must be a path"),
        ({"max_loss": float("nan")}, ValueError, "max_loss must be a finite number"),
        ({"max_loss": "big"}, TypeError, "max_loss must be a finite number"),
        ({"on_chunk": 3}, TypeError, "on_chunk must be callable"),
        ({"resume": "yes", "checkpoint_dir": "D"}, TypeError, "resume must be a bool"),
        ({"restarts_by": "map", "checkpoint_dir": "D"}, ValueError,
         r"restarts_by \(='map'\) needs restarts"),
    ],
    ids=["every_no_dir", "resume_no_dir", "every0", "keep0", "dir_type", "max_nan", "max_str",
         "on_chunk", "resume_str", "restarts_by_no_restarts"],
)
def test_checkpoint_argument_errors(tmp_path, kwargs, exc, match):
    kwargs = {k: (str(tmp_path) if v == "D" else v) for k, v in kwargs.items()}
    with pytest.raises(exc, match=match):
        jaxconv.fit(_loss, P0, optax.adam(0.1), _problem(), steps=5, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written before the arguments were checked


def test_metadata_is_orbax_custom_metadata_and_the_record_plain_json(finished):
    import orbax.checkpoint as ocp

    step_dir = finished[0] / "ckpt" / "30"
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    assert meta["format"] == "jaxconv.checkpoint/2" and meta["step"] == 30
    assert {"params/w", "params/b", "losses", "guard/skipped"} <= set(meta["sha256"])
    assert all(len(h) == 64 for h in meta["sha256"].values())
    # the run's identity is orbax's own per-step custom_metadata, readable without jaxconv
    with ocp.CheckpointManager(step_dir.parent,
                               options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        custom = mngr.metadata(30).custom_metadata
    assert custom["config"]["steps"] == 30 and custom["step"] == 30
    with Checkpointer(step_dir.parent, read_only=True) as ckpt:
        assert ckpt.read_metadata(30) == custom


def test_a_checkpoint_of_the_first_format_is_refused_not_set_aside(finished, tmp_path):
    d = _copy(finished, tmp_path)
    meta_file = d / "30" / "meta" / "metadata"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()),
                                     "format": "jaxconv.checkpoint/1"}))
    with Checkpointer(d, read_only=True) as ckpt:
        with pytest.raises(ValueError, match=r"/30 was written by jaxconv.checkpoint/1 .*"
                                             r"restore it with the jaxconv that wrote it"):
            ckpt.restore_latest()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"step": 20}, r"/30: meta/ is not a jaxconv.checkpoint/2 record for step 30"),
        ({"sha256": "none"}, r"/30: meta/ is not a jaxconv.checkpoint/2 record for step 30"),
        ({"sha256": {"extra": "0" * 64}}, r"/30: restored tree differs from its record"),
    ],
    ids=["step", "sha256_type", "sha256_keys"],
)
def test_a_record_that_does_not_fit_is_corruption(finished, tmp_path, edit, match):
    d = _copy(finished, tmp_path)
    meta_file = d / "30" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    if isinstance(edit.get("sha256"), dict):
        edit = {"sha256": {**meta["sha256"], **edit["sha256"]}}
    meta_file.write_text(json.dumps({**meta, **edit}))
    with Checkpointer(d, read_only=True) as ckpt, pytest.raises(CorruptCheckpointError,
                                                                  match=match):
        ckpt.restore(30)


def test_missing_orbax_says_how_to_install_it(monkeypatch):
    import sys

    from jaxconv import checkpoint as checkpoint_lib

    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[checkpoint\]'"):
        checkpoint_lib._orbax()
