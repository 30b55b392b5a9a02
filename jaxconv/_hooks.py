"""The host side of ``fit``: small hooks the driver calls after every compiled chunk, and the
identity of a run (what a checkpoint must match to be resumed).

Each hook does one thing (guard non-finite streaks, guard divergence, save checkpoints, draw
progress, call the user back) and holds no math; each is testable alone with numpy inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from jaxconv._typing import PyTree


class NonFiniteError(FloatingPointError):
    """Raised when ``fit``'s ``max_nonfinite`` consecutive steps had a non-finite loss,
    gradient or update (in every restart, with restarts); params were kept at their last
    finite values."""


class DivergenceError(FloatingPointError):
    """Raised when a finite loss exceeds ``fit``'s ``max_loss``: the run is diverging.

    Attributes:
      step: the first step whose loss exceeded the limit.
      loss: that loss.
      restart: the restart it happened in (None without restarts).
      checkpoint_step: the newest checkpoint's step (written before the divergence), or None.
    """

    def __init__(self, message: str, *, step: int, loss: float, restart: int | None = None,
                 checkpoint_step: int | None = None):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.restart = restart
        self.checkpoint_step = checkpoint_step


class Chunk(NamedTuple):
    """What the driver hands every hook after a chunk: steps ``start .. end - 1`` ran."""

    start: int
    end: int
    losses: np.ndarray  # [end - start] or [R, end - start]
    boundary: bool  # a checkpoint falls at ``end``


class Hook(Protocol):
    """What the driver calls after every chunk; a hook may also have ``close()``."""

    def after_chunk(self, chunk: Chunk) -> None: ...


@dataclasses.dataclass
class RunState:
    """The driver's state between chunks: what a checkpoint holds, and what ``fit`` returns."""

    run: Any  # jaxconv._trainer.State: params, optimizer state, the non-finite counters
    losses: np.ndarray  # [steps] or [R, steps], NaN where not run yet

    def checkpoint(self, key_data: np.ndarray) -> dict:
        """The pytree a checkpoint holds (also the target it is restored into)."""
        return {"params": self.run.params, "opt_state": self.run.opt_state,
                "guard": self.run.guard._asdict(), "losses": self.losses,
                "key_data": key_data}


def _restarts_note(mask: np.ndarray, restarts: int | None) -> str:
    return "" if restarts is None else f" in restart(s) {np.flatnonzero(mask)[:8].tolist()}"


class NonFiniteGuard:
    """Reports the trainer's non-finite counters (``_trainer.Guard``, counted on the device
    step by step, so chunking does not matter): raises ``NonFiniteError`` when a run without
    restarts (or every restart) has stopped after ``limit`` consecutive non-finite steps, and
    at the end warns about stopped restarts and about runs still inside a shorter streak."""

    def __init__(self, state: RunState, *, limit: int, restarts: int | None):
        self.state, self.limit, self.restarts = state, limit, restarts

    def _stopped(self) -> np.ndarray:
        return np.asarray(self.state.run.guard.stopped)

    def after_chunk(self, chunk: Chunk) -> None:
        stopped = self._stopped()
        if np.all(stopped >= 0):
            last = int(stopped.max())
            raise NonFiniteError(
                f"fit: {self.limit} consecutive steps up to step {last}"
                f"{_restarts_note(stopped >= 0, self.restarts)} had a non-finite loss, "
                f"gradient or update (the limit is max_nonfinite={self.limit}); params were "
                f"kept at their values before step {last - self.limit + 1}. Lower the learning "
                "rate, clip gradients (optax.clip_by_global_norm) or check the loss and data."
            )

    def finish(self, end: int) -> None:
        stopped = self._stopped()
        if np.any(stopped >= 0):
            which = np.flatnonzero(stopped >= 0)
            steps = [int(stopped[i]) - self.limit + 1 for i in which[:8]]
            warnings.warn(
                f"fit: restart(s) {which[:8].tolist()} stopped after {self.limit} consecutive "
                f"non-finite steps starting at step(s) {steps}; their params are those before "
                "that step (FitResult.stopped). The other restarts ran to the end.",
                RuntimeWarning, stacklevel=3,
            )
        streak = np.asarray(self.state.run.guard.streak)
        open_ = (streak > 0) & (stopped < 0)
        if np.any(open_):
            n = int(streak[open_].max())
            warnings.warn(
                f"fit: the run ended inside a streak of {n} non-finite steps (steps "
                f"{end - n}..{end - 1}{_restarts_note(open_, self.restarts)}); params are those "
                f"before step {end - n}, not trained since. Lower the learning rate or clip "
                "gradients (optax.clip_by_global_norm).",
                RuntimeWarning, stacklevel=3,
            )


class Checkpoints:
    """Saves a checkpoint whenever a chunk ends on a checkpoint boundary."""

    def __init__(self, ckpt, state: RunState, *, key_data: np.ndarray, config: dict,
                 probe: Callable[[Any], list]):
        self.ckpt, self.state, self.key_data, self.config = ckpt, state, key_data, config
        self.probe = probe

    def after_chunk(self, chunk: Chunk) -> None:
        if chunk.boundary:
            self.ckpt.save(chunk.end, self.state.checkpoint(self.key_data),
                           metadata={"config": self.config, "step": chunk.end,
                                     "optimizer_probe": self.probe(self.state.run.opt_state)})

    def drop_from(self, step: int) -> int | None:
        """Deletes the checkpoints at ``step`` and later; returns the newest one left."""
        for s in self.ckpt.steps():
            if s >= step:
                self.ckpt.delete(s)
        return (self.ckpt.steps() or [None])[-1]


class DivergenceGuard:
    """Raises ``DivergenceError`` at the first finite loss above ``max_loss``. A checkpoint
    at or after that step holds the params that gave the bad loss: it is dropped, so the
    newest one left is known good."""

    def __init__(self, max_loss: float, *, restarts: int | None,
                 checkpoints: Checkpoints | None):
        self.max_loss, self.restarts, self.checkpoints = max_loss, restarts, checkpoints

    def after_chunk(self, chunk: Chunk) -> None:
        over = np.isfinite(chunk.losses) & (chunk.losses > self.max_loss)
        if not over.any():
            return
        done = chunk.end - chunk.start
        over2 = over.reshape(-1, done)
        first = [int(np.argmax(r)) if r.any() else done for r in over2]
        restart = int(np.argmin(first))
        step = chunk.start + first[restart]
        value = float(chunk.losses.reshape(-1, done)[restart, first[restart]])
        last, saved = None, ""
        if self.checkpoints is not None:
            last = self.checkpoints.drop_from(step)
            saved = (f" The newest checkpoint ({self.checkpoints.ckpt.path(last)}) predates it "
                     "and is intact." if last is not None else " No checkpoint predates it.")
        where = "" if self.restarts is None else f" in restart {restart}"
        raise DivergenceError(
            f"fit: diverging: loss {value:.6g} at step {step}{where} exceeds "
            f"max_loss={self.max_loss:g}; stopped.{saved} Lower the learning rate or clip "
            "gradients (optax.clip_by_global_norm).",
            step=step, loss=value, restart=None if self.restarts is None else restart,
            checkpoint_step=last,
        )


class Progress:
    """A tqdm bar: steps done, one rate, and the best finite last loss.

    The rate is steps per second from the end of the first chunk on (timed between chunk
    ends, so it includes the hooks' time, e.g. checkpoint writes): the bar starts before the
    compile, which the first chunk's time therefore holds. tqdm's own rate, which counted the
    compile and so disagreed with ``FitResult.steps_per_s``, is left out of the bar; until a
    second chunk has run no rate is shown.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, steps: int, start: int, *, clock: Callable[[], float] | None = None):
        import time

        from tqdm.auto import tqdm

        self.clock = clock or time.perf_counter
        self.first: tuple[float, int] | None = None  # (time, step) at the first chunk's end
        self.bar = tqdm(total=steps, initial=start, desc="fit", unit="step", leave=True,
                        bar_format=self.BAR_FORMAT)

    def after_chunk(self, chunk: Chunk) -> None:
        now = self.clock()
        last = chunk.losses[..., -1]
        last = last[np.isfinite(last)]  # np.nanmin would warn on an all-NaN chunk end
        shown = [f"loss={last.min():.3e}" if last.size else "loss=nan"]
        if self.first is None:
            self.first = (now, chunk.end)
        elif now > self.first[0]:
            rate = (chunk.end - self.first[1]) / (now - self.first[0])
            shown.insert(0, f"{rate:,.0f} steps/s")
        self.bar.set_postfix_str(", ".join(shown), refresh=False)
        self.bar.update(chunk.end - chunk.start)

    def close(self) -> None:
        self.bar.close()


class Callback:
    """The user's ``on_chunk(step, losses)``."""

    def __init__(self, fn: Callable[[int, np.ndarray], None]):
        self.fn = fn

    def after_chunk(self, chunk: Chunk) -> None:
        self.fn(chunk.end, chunk.losses)


def show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


# ---- the identity of a run: what resuming must match ----

def _array_bytes(x) -> tuple[str, bytes]:
    """(a description, the bytes) of this process's part of ``x``."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        parts = sorted(((str(s.index), np.asarray(s.data)) for s in x.addressable_shards),
                       key=lambda p: p[0])
        return f"{x.dtype}{x.shape}", b"".join(i.encode() + a.tobytes() for i, a in parts)
    a = np.ascontiguousarray(np.asarray(x))
    return f"{a.dtype}{a.shape}", a.tobytes()


def _combine_processes(digest: bytes) -> str:
    """One digest for all processes: each hashes what it holds, the digests are gathered."""
    if jax.process_count() == 1:
        return digest.hex()
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather(np.frombuffer(digest, np.uint8))
    return hashlib.blake2b(np.asarray(every).tobytes(), digest_size=16).hexdigest()


def data_digest(data: PyTree) -> str:
    """A digest of every data array's values, shape and dtype (each process hashes its own
    shards or slice; the digests are combined in process order)."""
    h = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        what, raw = _array_bytes(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{what}:".encode())
        h.update(raw)
    return _combine_processes(h.digest())


def check_run_config(run_config: Any) -> dict:
    """``fit``'s ``run_config``: a dict that JSON round-trips unchanged (it is stored with
    every checkpoint and compared on resume)."""
    import json

    if not isinstance(run_config, dict):
        raise TypeError(
            f"fit: run_config must be a dict (JSON-serialisable), got {type(run_config).__name__}."
        )
    try:
        back = json.loads(json.dumps(run_config))
    except (TypeError, ValueError) as e:
        raise TypeError(f"fit: run_config must be JSON-serialisable: {e}") from e
    if back != run_config:
        raise ValueError(
            "fit: run_config must round-trip through JSON unchanged (string keys, lists not "
            f"tuples, finite numbers); got {run_config!r}, which reads back as {back!r}."
        )
    return back


def probes_match(saved: Any, now: Any, rtol: float = 1e-5) -> bool:
    """Whether two probes (lists of floats: see ``_trainer.loss_probe``/``optimizer_probe``)
    agree: equal length, the same non-finite entries, and every value within ``rtol`` of
    itself (or of ``rtol`` x 0.1 of the probe's largest magnitude, for values that cancel to
    near zero). So equal values computed from hyperparameters of different Python or numpy
    types match, and a changed hyperparameter does not."""
    if saved is None or now is None:
        return saved is now
    a, b = np.asarray(saved, np.float64), np.asarray(now, np.float64)
    if a.shape != b.shape:
        return False
    if not (np.all(np.isfinite(a) == np.isfinite(b)) and np.all(a[~np.isfinite(a)]
                                                                 == b[~np.isfinite(b)])):
        return False
    ok = np.isfinite(a)
    scale = max(float(np.abs(a[ok]).max(initial=0.0)), float(np.abs(b[ok]).max(initial=0.0)))
    return bool(np.allclose(a[ok], b[ok], rtol=rtol, atol=0.1 * rtol * scale))
