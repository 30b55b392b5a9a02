"""mkdocs hook: fills ``<!-- jaxconv:bench FILE -->`` markers with the markdown tables and the
machine recorded in a benchmark results file, so the site never quotes a number by hand."""

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
