"""Griffe extension for the docs build: ``Example:`` sections and Sphinx roles.

The house style writes Google docstrings with a singular ``Example:`` heading,
which griffe's Google parser would render as an admonition (the doctest lines
mangled into a paragraph). This rewrites the heading when griffe loads each
object, so the doctests render as code blocks. Sphinx roles that some docstrings
use (``:meth:`encode```, ``:class:`~pkg.Name```) become inline code, since Markdown
would show them raw. Only the docs build loads it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|mod|attr|data|obj|exc|const):`~?([^`]+)`")


class SingularExamples(griffe.Extension):
    """Rename ``Example:`` headings to ``Examples:`` and turn Sphinx roles into code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
