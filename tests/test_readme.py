"""Every ```python snippet in README.md runs as written (each in a fresh namespace)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
@pytest.mark.slow
def test_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


@pytest.mark.slow
def test_scaling_snippet_prints_what_the_readme_says(tmp_path):
    """The "Scaling out" script on 4 forced CPU devices prints the line the README quotes."""
    import os
    import subprocess
    import sys

    (block,) = [b for b in BLOCKS if "jax.make_mesh((jax.device_count(),)" in b]
    quoted = re.search(r"\(prints\s+`([^`]+)`\)", README.read_text()).group(1)
    script = tmp_path / "scale.py"
    script.write_text(block)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(README.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == quoted


@pytest.mark.slow
def test_checkpoint_snippet_leaves_what_the_readme_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in BLOCKS if 'checkpoint_dir="runs/demo"' in b]
    exec(compile(block, "README.md checkpoint block", "exec"), {})
    listed = re.search(r"`runs/demo` then holds (.*?) \(orbax", README.read_text(), re.S).group(1)
    assert sorted(p.name for p in (tmp_path / "runs" / "demo").iterdir()) == sorted(
        re.findall(r"`(\d+)/`", listed)
    )


def test_api_table_names_every_public_name():
    """The README's API table mentions every name in jaxconv.__all__ (in backticks)."""
    import jaxconv

    api = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    code = " ".join(re.findall(r"`([^`]+)`", api))
    missing = [n for n in jaxconv.__all__ if not re.search(rf"(?<![\w.]){n}\b", code)]
    assert not missing, missing
