"""Every experiment executes as a notebook, headless (jupytext reads the percent script,
nbclient runs it in a kernel of this Python) in its ``--quick`` form, and shows its figures
inline next to the cells that make them."""

import base64
import json
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py"))
# each notebook's figures, shown inline in the cells that make them (the fewest expected)
INLINE = {"recover_cross": 3, "filters_on_photo": 3, "recover_stack": 2, "learn_features": 2,
          "recover_stack_map": 1, "convolution_tutorial": 3, "recovery_benchmark": 2}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    cache = {}

    def run(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            nb = jupytext.read(ROOT / "experiments" / f"{name}.py")
            mp = pytest.MonkeyPatch()
            # the kernel inherits the environment: the flags and where the results go
            mp.setenv("JAXCONV_EXPERIMENT_ARGS", f"--quick --out {out}")
            try:
                # "python3" is ipykernel's own kernel: this Python, no kernelspec to install
                nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                        resources={"metadata": {"path": str(out)}}).execute()
            finally:
                mp.undo()
            cache[name] = (nb, out)
        return cache[name]

    return run


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") in kind]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_without_errors_or_warnings(executed, name):
    nb, out = executed(name)
    for cell in nb.cells:
        for o in _outputs(cell, {"error"}):
            pytest.fail(f"{name}: {o['ename']}: {o['evalue']}")
        for o in _outputs(cell, {"stream"}):
            if o["name"] == "stderr":
                assert "Warning" not in o["text"], f"{name}: {o['text'][:500]}"
    assert (out / "metrics.json").is_file(), f"{name} wrote no metrics.json to --out"


def test_the_tutorial_animations_are_embedded_and_step(executed):
    """The two animations play on a static page: matplotlib's to_jshtml output (frames as
    inline PNGs, the player's step buttons) in the notebook, more than one frame each."""
    nb, _ = executed("convolution_tutorial")
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
            for o in _outputs(c, {"display_data"}) if "text/html" in o.get("data", {})]
    players = [h for h in html if "animation" in h.lower() and "frames[" in h]
    assert len(players) == 2
    for h in players:
        assert h.count("data:image/png;base64") > 1 and "next_frame" in h.lower()


def test_the_tutorial_controls_run_headless_and_leave_a_picture(executed):
    """The kernel-editor and learning-step controls execute without a front end; each output
    is the live widget for Jupyter plus the PNG a static page shows instead."""
    nb, _ = executed("convolution_tutorial")
    controls = [o["data"] for c in nb.cells if c.cell_type == "code"
                for o in _outputs(c, {"display_data"})
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(controls) == 2
    for data in controls:
        assert base64.b64decode(data["image/png"])[:8] == PNG_SIGNATURE
        assert "Jupyter" in data["text/plain"]


def test_the_docs_drop_the_widget_state(tmp_path):
    hooks = _hooks()
    nb = {"cells": [], "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json":
                                                {"state": {}}}, "kernelspec": {"name": "k"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "live.ipynb").write_text(json.dumps(nb))
    del nb["metadata"]["widgets"]
    (tmp_path / "static.ipynb").write_text(json.dumps(nb))
    assert hooks.drop_widget_state(tmp_path) == ["live.ipynb"]
    assert json.loads((tmp_path / "live.ipynb").read_text()) == nb
    assert hooks.drop_widget_state(tmp_path) == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_its_story_then_a_computing_cell(executed, name):
    """No plumbing cell before the story: markdown first, and the first code cell already
    prints or shows something."""
    nb, _ = executed(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert _outputs(first, {"stream", "display_data"}), f"{name}: first code cell is silent"
    assert "Plumbing" not in "".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", sorted(INLINE))
def test_figures_show_inline_next_to_their_cells(executed, name):
    nb, _ = executed(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_png = [c for c in code if any("image/png" in o.get("data", {})
                                       for o in _outputs(c, {"display_data"}))]
    assert len(with_png) >= INLINE[name], f"{name}: only {len(with_png)} cells show a figure"
    for cell in with_png:
        for o in _outputs(cell, {"display_data"}):
            if "image/png" in o["data"]:
                assert base64.b64decode(o["data"]["image/png"])[:8] == PNG_SIGNATURE
    printing = [c for c in code if _outputs(c, {"stream"})]
    assert len(printing) >= 3, f"{name}: output appears in {len(printing)} cells only"
    assert code[-1] not in with_png or len(with_png) > 1


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", ["--quick", " --steps 3 "])
def test_the_docs_refuse_a_notebook_built_with_flags(tmp_path, args):
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    hooks = _hooks()
    (tmp_path / "notebooks").mkdir()
    nb = {"cells": [], "metadata": {"jaxconv": {"args": ""}}, "nbformat": 4,
          "nbformat_minor": 5}
    (tmp_path / "notebooks" / "full.ipynb").write_text(json.dumps(nb))
    hooks.on_pre_build({"docs_dir": str(tmp_path)})  # the full runs pass
    nb["metadata"]["jaxconv"]["args"] = args
    (tmp_path / "notebooks" / "short.ipynb").write_text(json.dumps(nb))
    assert hooks.short_runs(tmp_path / "notebooks") == [f"short.ipynb ({args.strip()})"]
    with pytest.raises(PluginError, match=r"ran with flags, not in full: short\.ipynb"):
        hooks.on_pre_build({"docs_dir": str(tmp_path)})
