"""mkdocs hook: fills ``<!-- jaxconv:bench FILE -->`` markers with the markdown tables and the
machine recorded in a benchmark results file, so the site never quotes a number by hand; and
refuses to publish an executed notebook that ran with other flags than the full run's (a
``make notebooks NOTEBOOK_ARGS=--quick`` build)."""

from __future__ import annotations

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
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


def on_pre_build(config):
    from mkdocs.exceptions import PluginError

    short = short_runs(pathlib.Path(config["docs_dir"]) / "notebooks")
    if short:
        raise PluginError(
            "docs: these notebooks ran with flags, not in full: " + ", ".join(short)
            + ". Run `make docs` (it rebuilds them without NOTEBOOK_ARGS)."
        )
