"""Griffe extension for the docs build: read ``Example:`` sections as ``Examples:``.

The house style writes Google docstrings with a singular ``Example:`` heading,
which griffe's Google parser would render as an admonition (the doctest lines
mangled into a paragraph). This rewrites the heading when griffe loads each
object, so the doctests render as code blocks. Only the docs build loads it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class SingularExamples(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
