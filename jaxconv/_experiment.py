"""The plumbing every ``experiments/*.py`` shares: strict flags, the results folder, figures
shown inline and saved, metrics.json and the summary line.

For the experiment scripts and notebooks only: the library never imports it, and it holds
no state beyond one run's ``Experiment`` (and the flags ``run_script`` passes for one call).
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import pathlib
import runpy
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

ENV = "JAXCONV_EXPERIMENT_ARGS"
CACHE_DIR = ".cache/xla"

# the flags `run_script` passes to the file it runs (None: the command line or ENV)
_ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("argv", default=None)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (figures then display inline)."""
    return "ipykernel" in sys.modules


def repo_root() -> pathlib.Path:
    """The checkout the running experiment is in: the running script's folder, else the
    working directory, else the checkout jaxconv is installed from (a notebook kernel may
    start anywhere); the working directory when none of them is a checkout."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    here = pathlib.Path(__file__).resolve().parents[1]
    starts = [pathlib.Path(p).resolve() for p in (main, os.getcwd()) if p] + [here]
    for start in starts:
        for d in (start, *start.parents):
            if (d / "pyproject.toml").is_file() and (d / "experiments").is_dir():
                return d
    return pathlib.Path.cwd()


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the checkout when it is inside it (what a printout shows)."""
    rel = os.path.relpath(path, repo_root())
    return os.fspath(path) if rel.startswith("..") else rel


def process_seconds() -> float | None:
    """Seconds since this process started (imports included), or None where unknown (only
    Linux's /proc is read) or meaningless (a notebook kernel outlives its runs)."""
    if in_notebook():
        return None
    try:
        with open("/proc/self/stat") as f:
            started_ticks = float(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def _argv() -> list[str]:
    given = _ARGV.get()
    if given is not None:
        return list(given)
    if in_notebook():
        return shlex.split(os.environ.get(ENV, ""))
    return sys.argv[1:]


@dataclass
class Experiment:
    """One run of an experiment: its flags, its results folder and what it has written.

    Attributes:
      name: the experiment's name (its file's stem).
      args: the parsed flags (``quick``, ``out``, ``seed``, ``no_figures`` and the
        experiment's own).
      draw: whether figures are built at all (to show inline or to save).
      figures: the PNG names written to ``args.out`` so far.
    """

    name: str
    args: argparse.Namespace
    draw: bool
    figures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> str:
        """The results folder."""
        return os.fspath(self.args.out)

    def show(self, fig: Any, name: str | None = None) -> None:
        """Saves ``fig`` as ``out/name`` (unless ``--no-figures`` or ``name`` is None) and
        displays it in a notebook.

        Args:
          fig: a matplotlib figure (``jaxconv.viz`` makes them).
          name: the PNG's file name in the results folder, or None to only display it.
        """
        if name is not None and not self.args.no_figures:
            from jaxconv import viz

            viz.save(fig, os.path.join(self.out, name))
            self.figures.append(name)
        if in_notebook():
            from IPython.display import display

            display(fig)

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Writes ``metrics`` (plus seed, quick, figures, backend, ``total_s``: seconds
        since ``start``, and ``process_s``: since the process started, where known) to
        ``out/metrics.json``, prints the summary line and returns what it wrote.

        Args:
          metrics: the experiment's own numbers (JSON-serialisable).

        Returns:
          ``metrics`` with the run's description added.
        """
        import jax

        full = {
            **metrics,
            "seed": self.args.seed,
            "quick": self.args.quick,
            "figures": list(self.figures),
            "total_s": time.perf_counter() - self.started,
            "process_s": process_seconds(),
            "backend": jax.default_backend(),
        }
        with open(os.path.join(self.out, "metrics.json"), "w") as f:
            json.dump(full, f, indent=2)
        process = full["process_s"]
        print(f"wrote {shown(self.out)}/metrics.json and {len(self.figures)} figures in "
              f"{full['total_s']:.2f} s"
              + ("" if process is None else f" ({process:.2f} s since the process started)"))
        return full


def start(
    name: str,
    description: str,
    *,
    quick: str = "the short form, for tests",
    options: Sequence[str] = (),
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Experiment:
    """Parses the flags strictly (an unknown flag is an error), creates the results folder
    and prints where the results go.

    The flags come from ``run_script``'s ``argv``, else, in a notebook, from the environment
    variable ``JAXCONV_EXPERIMENT_ARGS``, else from the command line. Every experiment takes
    ``--quick``, ``--out DIR`` (default ``results/NAME`` in the checkout), ``--seed N``,
    ``--no-figures`` and ``--no-compile-cache`` (a command-line run otherwise turns on jax's
    persistent compilation cache in ``.cache/xla`` of the checkout: ``use_compile_cache``).

    Args:
      name: the experiment's name: the default results folder and the summary line.
      description: the ``--help`` text.
      quick: what ``--quick`` does, for ``--help``.
      options: common optional flags this experiment takes: ``"steps"``, ``"restarts"``
        (integers, None when not given).
      add_flags: adds the experiment's own flags to the parser.

    Returns:
      The run's ``Experiment``.
    """
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", default=str(repo_root() / "results" / name),
                   help=f"output directory (default: results/{name} in the checkout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="run without jax's persistent compilation cache (a command-line run "
                   f"otherwise keeps compiled executables in {CACHE_DIR} of the checkout, so "
                   "a second run compiles less; notebooks and run_script never use it)")
    common = {"steps": "override the number of steps", "restarts": "override the restarts"}
    for option in options:
        if option not in common:
            raise ValueError(f"start: unknown option {option!r}; choose from {sorted(common)}")
        p.add_argument(f"--{option}", type=int, default=None, help=common[option])
    if add_flags is not None:
        add_flags(p)
    args = p.parse_args(_argv())
    if _ARGV.get() is None and not in_notebook() and not args.no_compile_cache:
        use_compile_cache(repo_root() / CACHE_DIR)
    os.makedirs(args.out, exist_ok=True)
    return Experiment(name, args, draw=in_notebook() or not args.no_figures)


def use_compile_cache(path: str | os.PathLike) -> None:
    """Turns on jax's persistent compilation cache in ``path`` for this process, for every
    executable however briefly it compiled (jax's default keeps only those over 1 s). jax
    keys each entry on the compiled computation, its compile options and the jax/jaxlib
    versions, so a cached executable is the one a fresh compile would give.

    Args:
      path: the cache folder (created if missing).
    """
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_script(path: str | os.PathLike, argv: Sequence[str]) -> dict[str, Any]:
    """Runs an experiment file top to bottom as ``python PATH ARGV`` would, in this process,
    and returns its ``metrics`` (what it wrote to metrics.json).

    Args:
      path: the experiment's ``.py`` file.
      argv: its flags.

    Returns:
      The ``metrics`` the file defines.
    """
    token = _ARGV.set(list(argv))
    try:
        return runpy.run_path(os.fspath(path), run_name="__main__")["metrics"]
    finally:
        _ARGV.reset(token)
