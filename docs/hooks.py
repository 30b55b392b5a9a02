"""mkdocs hook: fills ``<!-- jaxconv:bench FILE -->`` markers with the markdown tables and the
machine recorded in a benchmark results file, so the site never quotes a number by hand;
refuses to publish an executed notebook that ran with other flags than the full run's (a
``make notebooks NOTEBOOK_ARGS=--quick`` build); and drops the executed notebooks' widget
state, so a page shows each live control's picture."""

from __future__ import annotations

import json
import logging
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
log = logging.getLogger("mkdocs.hooks.jaxconv")
MARKER = re.compile(r"<!-- jaxconv:bench (\S+) -->")


def _tables(path: str) -> str:
    report = json.loads((ROOT / path).read_text())
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cores']} cores, "
        f"{'/'.join(m['cpu_flags'])}), jaxconv commit `{m['jaxconv_commit']}`; {versions}. "
        f"From `{path}`.\n\n{report['markdown']}\n"
    )


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda match: _tables(match.group(1)), markdown)


def short_runs(notebooks: pathlib.Path) -> list[str]:
    """The executed notebooks in ``notebooks`` whose recorded flags (the Makefile writes them
    to the metadata as ``{"jaxconv": {"args": ...}}``) are not the full run's (none)."""
    found = []
    for path in sorted(notebooks.glob("*.ipynb")):
        args = json.loads(path.read_text()).get("metadata", {}).get("jaxconv", {}).get("args")
        if args and args.strip():
            found.append(f"{path.name} ({args.strip()})")
    return found


def drop_widget_state(notebooks: pathlib.Path) -> list[str]:
    """Removes the ipywidgets state that nbclient stores in each executed notebook's metadata
    and returns the names of the notebooks it changed. With the state there, the page would
    load Jupyter's widget manager from a CDN and draw controls that no kernel answers; without
    it each control's output shows its PNG (the tutorial's controls give one)."""
    changed = []
    for path in sorted(notebooks.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        if "widgets" in nb.get("metadata", {}):
            del nb["metadata"]["widgets"]
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path.name)
    return changed


def on_pre_build(config):
    from mkdocs.exceptions import PluginError

    notebooks = pathlib.Path(config["docs_dir"]) / "notebooks"
    dropped = drop_widget_state(notebooks)
    if dropped:
        log.info("docs: the live controls of %s show their pictures (a static page has no "
                 "kernel; the widget state is dropped)", ", ".join(dropped))
    short = short_runs(notebooks)
    if short:
        raise PluginError(
            "docs: these notebooks ran with flags, not in full: " + ", ".join(short)
            + ". Run `make docs` (it rebuilds them without NOTEBOOK_ARGS)."
        )
