"""The host side of ``fit``: small hooks the driver calls after every compiled chunk, and the
identity of a run (what a checkpoint must match to be resumed).

Each hook does one thing (guard non-finite streaks, guard divergence, save checkpoints, draw
progress, call the user back) and holds no math; each is testable alone with numpy inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from jaxconv._typing import PyTree


class NonFiniteError(FloatingPointError):
    """Raised when too many consecutive steps (one chunk's worth) had a non-finite loss or
    gradient; params were kept at their last finite values."""


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
    finite: np.ndarray  # bool, same shape
    boundary: bool  # a checkpoint falls at ``end``


class Hook(Protocol):
    """What the driver calls after every chunk; a hook may also have ``close()``."""

    def after_chunk(self, chunk: Chunk) -> None: ...


@dataclasses.dataclass
class RunState:
    """The driver's state between chunks: what a checkpoint holds, and what ``fit`` returns."""

    params: PyTree
    opt_state: PyTree
    losses: np.ndarray  # [steps] or [R, steps], NaN where not run yet
    nonfinite: np.ndarray  # skipped steps per restart
    streak: np.ndarray  # consecutive non-finite steps ending the last chunk, per restart

    def checkpoint(self, key_data: np.ndarray) -> dict:
        """The pytree a checkpoint holds (also the target it is restored into)."""
        return {"params": self.params, "opt_state": self.opt_state, "losses": self.losses,
                "nonfinite": self.nonfinite, "streak": self.streak, "key_data": key_data}


def nonfinite_runs(finite: np.ndarray, run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per restart: the longest run of consecutive non-finite steps in a chunk's ``finite``
    flags ([k] or [R, k]), counting the ``run`` steps that ended the previous chunk, and the
    run still open at the chunk's end."""
    longest = run
    for j in range(finite.shape[-1]):
        run = np.where(finite[..., j], 0, run + 1)
        longest = np.maximum(longest, run)
    return longest, run


def _restarts_note(mask: np.ndarray, restarts: int | None) -> str:
    return "" if restarts is None else f" in restart(s) {np.flatnonzero(mask)[:8].tolist()}"


class NonFiniteGuard:
    """Counts skipped steps; raises ``NonFiniteError`` once ``limit`` consecutive steps were
    non-finite (counted across chunks, so chunking does not matter), and warns at the end of
    a run still inside a shorter streak (its params stopped at the streak's first step)."""

    def __init__(self, state: RunState, *, limit: int, restarts: int | None):
        self.state, self.limit, self.restarts = state, limit, restarts

    def after_chunk(self, chunk: Chunk) -> None:
        st = self.state
        st.nonfinite = st.nonfinite + (~chunk.finite).sum(axis=-1)
        longest, st.streak = nonfinite_runs(chunk.finite, st.streak)
        stuck = longest >= self.limit
        if np.any(stuck):
            raise NonFiniteError(
                f"fit: {int(longest.max())} consecutive steps up to step {chunk.end - 1}"
                f"{_restarts_note(stuck, self.restarts)} had a non-finite loss or gradient "
                f"(the limit is {self.limit}, one chunk); params were kept at their last finite "
                "values. Lower the learning rate, clip gradients (optax.clip_by_global_norm) or "
                "check the loss and data."
            )

    def finish(self, end: int) -> None:
        open_ = self.state.streak > 0
        if np.any(open_):
            n = int(self.state.streak.max())
            warnings.warn(
                f"fit: the run ended inside a streak of {n} non-finite steps (steps "
                f"{end - n}..{end - 1}{_restarts_note(open_, self.restarts)}); params are those "
                f"before step {end - n}, not trained since. Lower the learning rate or clip "
                "gradients (optax.clip_by_global_norm).",
                RuntimeWarning, stacklevel=3,
            )


class Checkpoints:
    """Saves a checkpoint whenever a chunk ends on a checkpoint boundary."""

    def __init__(self, ckpt, state: RunState, *, key_data: np.ndarray, config: dict):
        self.ckpt, self.state, self.key_data, self.config = ckpt, state, key_data, config

    def after_chunk(self, chunk: Chunk) -> None:
        if chunk.boundary:
            self.ckpt.save(chunk.end, self.state.checkpoint(self.key_data),
                           metadata={"config": self.config, "step": chunk.end})

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


def _describe(obj: Any, depth: int, seen: set) -> Any:
    """A JSON-able description of an optax transformation's hyperparameters: the numbers,
    strings and arrays its functions close over, recursively (schedules included)."""
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
        return repr(obj)
    if isinstance(obj, np.generic):
        return f"{obj.dtype}:{obj.item()!r}"
    if isinstance(obj, np.ndarray | jax.Array):
        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            obj = jax.random.key_data(obj)
        what, raw = _array_bytes(obj)
        return f"{what}:{hashlib.blake2b(raw, digest_size=8).hexdigest()}"
    if depth > 16 or id(obj) in seen:
        return type(obj).__qualname__
    seen = seen | {id(obj)}
    if isinstance(obj, tuple | list):
        return [type(obj).__qualname__, [_describe(v, depth + 1, seen) for v in obj]]
    if isinstance(obj, dict):
        return {str(k): _describe(v, depth + 1, seen) for k, v in sorted(obj.items(), key=str)}
    if isinstance(obj, functools.partial):
        return ["partial", _describe(obj.func, depth + 1, seen),
                _describe(obj.args, depth + 1, seen), _describe(obj.keywords, depth + 1, seen)]
    if isinstance(obj, types.FunctionType):
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        return [f"{obj.__module__}.{obj.__qualname__}",
                _describe(obj.__defaults__, depth + 1, seen),
                _describe(obj.__kwdefaults__, depth + 1, seen),
                _describe(cells, depth + 1, seen)]
    if isinstance(obj, types.MethodType):
        return [_describe(obj.__func__, depth + 1, seen), _describe(obj.__self__, depth + 1, seen)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [type(obj).__qualname__,
                {f.name: _describe(getattr(obj, f.name), depth + 1, seen)
                 for f in dataclasses.fields(obj)}]
    return type(obj).__qualname__


def _filled(cell) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell (a closure variable not assigned yet)
        return False
    return True


def optimizer_digest(optimizer) -> str:
    """A digest of the optimizer's hyperparameters (see ``_describe``): the same for two
    ``optax.adam(1e-3)`` built separately, different for ``optax.adam(1e-2)``."""
    import json

    text = json.dumps(_describe(optimizer, 0, set()), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
