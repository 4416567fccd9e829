"""Griffe extension: Sphinx roles in docstrings (``:func:`~a.b.c``` ) shown as code.

The library's docstrings cross-reference with Sphinx roles, which Markdown would show
literally. This turns ``:role:`~pkg.mod.name``` into ``name`` and ``:role:`pkg.mod.name``` into
``pkg.mod.name``, as inline code, before mkdocstrings renders them.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj|const):`(~?)([^`<]+?)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    target = target.strip()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"``{target}``"


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
