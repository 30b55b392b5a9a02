"""Griffe extension for the API reference: jaxconv's docstrings title their doctests
``Example:`` (the project's style guide); griffe's Google-style parser knows that section
only as ``Examples:``, so the title is read as that before the docstring is parsed."""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
