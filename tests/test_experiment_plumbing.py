"""jaxconv._experiment: the experiments' strict flags, results folder, figures and metrics."""

import json
import pathlib
import sys

import jax
import pytest

from jaxconv import _experiment

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def script(tmp_path):
    """A tiny experiment file: start, one figure, finish."""
    path = tmp_path / "tiny.py"
    path.write_text(
        "from jaxconv import viz\n"
        "from jaxconv._experiment import start\n"
        "import numpy as np\n"
        "EXP = start('tiny', 'a tiny experiment', options=('steps',))\n"
        "EXP.show(viz.image_grid({'a': [np.eye(3)]}), 'eye.png')\n"
        "metrics = EXP.finish({'steps': EXP.args.steps})\n"
    )
    return path


def test_run_script_passes_flags_and_returns_what_it_wrote(script, tmp_path, capsys):
    out = tmp_path / "out"
    m = _experiment.run_script(script, ["--quick", "--out", str(out), "--steps", "7",
                                        "--seed", "3"])
    assert m["steps"] == 7 and m["seed"] == 3 and m["quick"] is True
    assert m["figures"] == ["eye.png"] and (out / "eye.png").is_file()
    assert json.loads((out / "metrics.json").read_text()) == m
    assert f"wrote {out}/metrics.json and 1 figures in" in capsys.readouterr().out
    # the flags were for that run only
    assert _experiment._ARGV.get() is None


def test_no_figures_writes_none(script, tmp_path):
    m = _experiment.run_script(script, ["--out", str(tmp_path), "--no-figures"])
    assert m["figures"] == [] and not (tmp_path / "eye.png").exists()


def test_an_unknown_flag_is_an_error(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _experiment.run_script(script, ["--out", str(tmp_path), "--quik"])
    assert "unrecognized arguments: --quik" in capsys.readouterr().err


def test_an_unknown_common_option_is_named():
    with pytest.raises(ValueError, match=r"unknown option 'epochs'; choose from"):
        _experiment.start("x", "x", options=("epochs",))


def test_in_a_notebook_the_flags_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # what in_notebook() looks for
    monkeypatch.setenv(_experiment.ENV, f"--quick --out '{tmp_path}/a b'")
    monkeypatch.setattr(sys, "argv", ["kernel", "--f=/some/kernel.json"])
    exp = _experiment.start("x", "x")
    assert exp.args.quick and exp.out == f"{tmp_path}/a b" and exp.draw
    assert pathlib.Path(exp.out).is_dir()
    assert _experiment.process_seconds() is None


def test_from_the_command_line_outside_a_notebook(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setenv(_experiment.ENV, "--quick")  # read in a notebook only
    # --no-compile-cache: a command-line start() would turn jax's persistent compilation
    # cache on for this whole test process
    monkeypatch.setattr(sys, "argv", ["x.py", "--out", str(tmp_path), "--no-figures",
                                      "--no-compile-cache"])
    exp = _experiment.start("x", "x")
    assert not exp.args.quick and not exp.draw and exp.out == str(tmp_path)
    assert exp.args.no_compile_cache and jax.config.jax_compilation_cache_dir is None


def test_paths_are_shown_relative_to_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x.py"])
    root = _experiment.repo_root()
    assert (root / "experiments").is_dir()
    assert _experiment.shown(root / "results" / "x") == "results/x"
    assert _experiment.shown(tmp_path) == str(tmp_path)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.py")), ids=lambda p: p.stem)
def test_experiments_use_the_strict_shared_plumbing(path):
    text = path.read_text()
    for banned in ("parse_known_args", "runpy", "def parse_args", "def show(", "def repo_root"):
        assert banned not in text, f"{path.name}: {banned}"
    assert "_experiment import" in text and "EXP.finish(" in text


def test_only_a_command_line_run_turns_on_the_compile_cache(script, tmp_path):
    """The persistent compilation cache is process state: run_script (tests, the docs build)
    and notebooks never turn it on; a command-line run does unless --no-compile-cache."""
    import subprocess

    _experiment.run_script(script, ["--out", str(tmp_path / "a")])
    assert jax.config.jax_compilation_cache_dir is None
    probe = tmp_path / "probe.py"
    probe.write_text(script.read_text() + "import jax\nprint('CACHE', jax.config."
                     "jax_compilation_cache_dir)\n")
    cache = tmp_path / "root"
    for flags, want in (([], str(cache / ".cache" / "xla")), (["--no-compile-cache"], "None")):
        code = ("import sys, runpy; from jaxconv import _experiment; import pathlib;"
                f"_experiment.repo_root = lambda: pathlib.Path({str(cache)!r});"
                f"sys.argv = ['probe.py', '--out', {str(tmp_path / 'b')!r}, *{flags!r}];"
                f"runpy.run_path({str(probe)!r}, run_name='__main__')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        assert f"CACHE {want}" in out
