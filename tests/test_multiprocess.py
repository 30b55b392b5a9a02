"""Tests for ``fit`` and ``jaxconv.checkpoint`` across processes: two processes on this machine
joined by ``jax.distributed`` (gloo CPU collectives, one CPU device each) train over the global
2-device mesh, each passing only its own half of the examples (tests/_multiprocess_worker.py).
"""

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import _multiprocess_worker as worker
import numpy as np
import pytest
from _fit_worker import leaves

from jaxconv import checkpoint

WORKER = pathlib.Path(worker.__file__)
ROOT = WORKER.parent.parent
# per group of children: ~15 s on an idle 2-core machine (imports, connecting, compiling)
TIMEOUT_S = 180

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Children:
    def __init__(self, procs, logs):
        self.procs, self.logs = procs, logs
        self.deadline = time.monotonic() + TIMEOUT_S

    def stdout(self, i) -> str:
        return self.logs[i][0].read_text()

    def report(self) -> str:
        """Every child's exit status and the tail of its stderr (for assertion messages)."""
        return "\n".join(f"--- process {i} (rc={p.returncode}):\n{err.read_text()[-1500:]}"
                         for i, (p, (_, err)) in enumerate(zip(self.procs, self.logs, strict=True)))

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: jax's preemption notifier catches SIGTERM
        for p in self.procs:
            p.wait()

    def wait(self) -> None:
        """Waits for all to exit 0 by the deadline; kills them all and fails otherwise."""
        try:
            for p in self.procs:
                p.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"multi-process children timed out after {TIMEOUT_S} s\n{self.report()}")
        if any(p.returncode for p in self.procs):
            pytest.fail(f"a multi-process child failed\n{self.report()}")

    def wait_for_line(self, i: int, line: str) -> None:
        """Waits until child ``i`` has printed ``line`` (all must still be running)."""
        while line not in self.stdout(i).splitlines():
            if time.monotonic() > self.deadline or any(p.poll() is not None for p in self.procs):
                self.kill()
                pytest.fail(f"child {i} never printed {line!r}\n{self.report()}")
            time.sleep(0.05)


@contextlib.contextmanager
def _children(tmp_path: pathlib.Path, name: str, *args: str, n: int = 2):
    """``n`` workers running ``args`` as one distributed job; any still running on the way out
    are killed."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    port = _free_port()
    procs, logs = [], []
    try:
        for i in range(n):
            out, err = tmp_path / f"{name}{i}.out", tmp_path / f"{name}{i}.err"
            with open(out, "w") as o, open(err, "w") as e:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), *args, "--port", str(port),
                     "--process-id", str(i), "--num-processes", str(n)],
                    stdout=o, stderr=e, env=env))
            logs.append((out, err))
        yield _Children(procs, logs)
    finally:
        _Children(procs, logs).kill()


def _fit_children(tmp_path, name, directory, *extra):
    """Runs the worker's 2-process fit to the end: each process's params and losses, and the
    step of the first checkpoint it wrote."""
    outs = [tmp_path / f"{name}{i}.npz" for i in range(2)]
    with _children(tmp_path, name, "fit", "--dir", str(directory), "--out",
                   str(tmp_path / f"{name}{{i}}.npz"), *extra) as kids:
        kids.wait()
        # gloo prints to stdout too
        first = next(ln for ln in kids.stdout(0).splitlines() if ln.startswith("CKPT "))
    return [dict(np.load(o)) for o in outs], int(first.split()[1])


def _params(out: dict) -> dict:
    return {k: v for k, v in out.items() if k.startswith("[")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One 2-process checkpointed fit run to the end: its directory, results, wall seconds."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    t0 = time.perf_counter()
    outs, _ = _fit_children(tmp, "whole", tmp / "ckpt")
    return tmp / "ckpt", outs, time.perf_counter() - t0


def test_two_processes_train_like_one(uninterrupted):
    """Both processes end with the same params, and those of one process fitting all the
    examples at once, to float rounding: the gradient all-reduce adds the two halves' sums in
    another order (measured: params within ~1e-7 absolute, losses within ~2e-7 relative)."""
    _, (p0, p1), _ = uninterrupted
    for name in [*_params(p0), "losses"]:
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
    one = worker.train(worker.global_data())
    expected = leaves(one.params)
    assert set(expected) == set(_params(p0))
    for name, value in expected.items():
        np.testing.assert_allclose(p0[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(p0["losses"], one.losses, rtol=1e-5)
    assert p0["losses"][-1] < 0.9 * p0["losses"][0]  # it trained


def test_checkpoints_are_written_once_and_read_back_in_one_process(uninterrupted):
    directory, (p0, _), _ = uninterrupted
    every, steps = worker.TRAIN["checkpoint_every"], worker.TRAIN["steps"]
    # one directory per step, shared by both processes (no per-process copies, no leftovers)
    assert sorted(os.listdir(directory), key=int) == [str(s) for s in range(every, steps + 1,
                                                                            every)]
    got = checkpoint.restore_latest(directory)
    assert got.step == steps
    restored = leaves(got.state["params"])
    assert set(restored) == set(_params(p0))
    for name, value in restored.items():
        np.testing.assert_array_equal(value, p0[name], err_msg=name)
    np.testing.assert_array_equal(got.state["losses"], p0["losses"])
    assert got.metadata["config"]["num_examples"] == worker.N_EXAMPLES  # global, not per process
    meta = json.loads((directory / str(steps) / "meta" / "metadata").read_text())
    # replicated params are hashed whole, as in one process
    assert all(isinstance(h, str) and len(h) == 64 for h in meta["sha256"].values())


def test_sigkill_both_then_resume_is_bit_identical(uninterrupted, tmp_path):
    """Both processes are SIGKILLed after a mid-run checkpoint; two fresh ones resume and end
    bit-identical (params and losses) to the uninterrupted 2-process run."""
    d = tmp_path / "ckpt"
    with _children(tmp_path, "killed", "fit", "--dir", str(d), "--pause", "0.2") as kids:
        kids.wait_for_line(0, "CKPT 20")
        for p in kids.procs:
            p.send_signal(signal.SIGKILL)
        kids.kill()
        assert [p.returncode for p in kids.procs] == [-signal.SIGKILL] * 2, kids.report()
    with checkpoint.Checkpointer(d, read_only=True) as ckpt:
        left = ckpt.steps()
    assert 20 <= left[-1] < worker.TRAIN["steps"], left

    outs, first = _fit_children(tmp_path, "resumed", d, "--resume")
    assert first == left[-1] + worker.TRAIN["checkpoint_every"]  # continued, not restarted
    expected = uninterrupted[1][0]
    for out in outs:
        assert set(_params(out)) == set(_params(expected))
        for name in [*_params(expected), "losses"]:
            np.testing.assert_array_equal(out[name], expected[name], err_msg=name)


def test_nan_data_on_one_process_makes_both_raise(tmp_path):
    """A NaN in a row only process 1 holds: process 1 names its global index, process 0 says
    where it is, and neither waits for the other at a collective (both hung or died before)."""
    with _children(tmp_path, "nan", "fit", "--dir", str(tmp_path / "ckpt"),
                   "--nan-row", "19") as kids:
        kids.wait()
        said = [kids.stdout(i) for i in range(2)]
    assert "data[0] has a non-finite value (nan) at index (19, 1)" in said[1], said[1]
    assert "data has a non-finite value on process 1" in said[0], said[0]


def test_a_corrupt_newest_checkpoint_is_set_aside_once_and_resumed_past(uninterrupted,
                                                                        tmp_path):
    """Both processes resume past a corrupt newest checkpoint: it is renamed once (each renamed
    it before, and the second rename failed), and the run ends bit-identical."""
    d = tmp_path / "ckpt"
    shutil.copytree(uninterrupted[0], d)
    steps = worker.TRAIN["steps"]
    meta = d / str(steps) / "meta" / "metadata"
    meta.write_text(meta.read_text()[:20])
    outs, first = _fit_children(tmp_path, "fallback", d, "--resume")
    assert first == steps  # resumed from the previous checkpoint and saved the last step again
    assert sorted(p.name for p in d.iterdir() if "corrupt" in p.name) == [f"{steps}.corrupt"]
    expected = uninterrupted[1][0]
    for out in outs:
        for name in [*_params(expected), "losses"]:
            np.testing.assert_array_equal(out[name], expected[name], err_msg=name)


def _sha256(a: np.ndarray) -> str:
    """The digest format of jaxconv.checkpoint, written out independently."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def test_an_array_split_across_processes_is_hashed_shard_by_shard(tmp_path):
    """Each process hashes the rows it holds; the digests are recorded once, per global region;
    each process verifies its own shards on restore, and a bad digest of a shard only process
    1 holds makes both fall back to the same earlier checkpoint."""
    d = tmp_path / "ckpt"
    with _children(tmp_path, "shards", "shards", "--dir", str(d), "--out",
                   str(tmp_path / "shards{i}.json")) as kids:
        kids.wait()
    r0, r1 = (json.loads((tmp_path / f"shards{i}.json").read_text()) for i in range(2))
    assert (r0["rows_held"], r1["rows_held"]) == (["0:4"], ["4:8"])
    rows = np.arange(24, dtype=np.float32).reshape(8, 3)
    meta = json.loads((d / "1" / "meta" / "metadata").read_text())
    assert meta["sha256"] == {
        "count": _sha256(np.int64(7)),
        "rows": {"0:4,0:3": _sha256(rows[:4]), "4:8,0:3": _sha256(rows[4:])},
        "w": _sha256(np.array([1.0, 2.0], np.float32)),  # replicated: one digest, whole
    }
    for r in (r0, r1):
        assert r["restored_equal"] and r["restored_rows_sharding"] == "P('data',)"
        assert r["fallback_step"] == 1
        assert any(f"{d.absolute()}/2: sha256 mismatch in ['rows']" in w
                   for w in r["fallback_warnings"]), r["fallback_warnings"]
    assert r0["spoiled"] == "4:8,0:3"  # the shard process 0 does not hold: it trusted process 1
    # one process reading it back checks every region from the whole array
    with pytest.warns(RuntimeWarning, match=r"/2: sha256 mismatch in \['rows'\]"):
        got = checkpoint.restore_latest(d)
    assert got.step == 1
    np.testing.assert_array_equal(got.state["rows"], rows)

