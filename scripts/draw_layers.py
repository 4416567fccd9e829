"""Draw the layers of interp-core from the code: docs/images/layers.svg.

Every module of ``interp_core/`` and of the adapters is parsed; an arrow from package A to
package B means some module of A imports B. Packages sit on rows by depth (a package is one row
above the highest package it imports), so every arrow points down. The picture is made from
the imports as they are, not by hand: ``tests/test_layering.py`` checks that the committed
picture is what this script draws today.

    python scripts/draw_layers.py            # rewrite docs/images/layers.svg
    python scripts/draw_layers.py --check    # exit 1 if the picture is out of date
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "interp_core"
ADAPTERS = ROOT / "backends"
PICTURE = ROOT / "docs" / "images" / "layers.svg"
ADAPTER_BOX = "adapters"  # interp_torch, interp_tensorflow, interp_jax, drawn as one box

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 112, 30, 16, 46, 20


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "interp_core":
        return None
    return parts[1] if len(parts) > 1 else "interp_core"


#: Calls that import a module named by a string argument.
IMPORT_CALLS = {"import_module", "__import__", "find_spec"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for each absolute import in ``source`` (``import x.y``, ``from x.y
    import z``, ``importlib.import_module("x.y")``), anywhere, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (called in IMPORT_CALLS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)):
                names = [first.value]
        found += [(node.lineno, name) for name in names]
    return found


def _imports(path: Path) -> set[str]:
    """The core packages ``path`` imports."""
    modules = imported_modules(path.read_text(encoding="utf-8"))
    return {p for p in (_package(name) for _, name in modules) if p is not None}


def _own_package(path: Path) -> str:
    rel = path.relative_to(CORE)
    if len(rel.parts) == 1:
        return "interp_core" if rel.name == "__init__.py" else rel.stem
    return rel.parts[0]


def import_graph() -> dict[str, set[str]]:
    """Package -> the core packages its modules import (itself excluded). Entry scripts
    (``__main__.py``) are programs that nothing imports, and are left out."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        own = _own_package(path)
        graph[own] |= _imports(path) - {own}
    for path in sorted(ADAPTERS.glob("*/interp_*/*.py")):
        graph[ADAPTER_BOX] |= _imports(path)
    return {name: set(deps) for name, deps in graph.items()}


def rows(graph: dict[str, set[str]]) -> list[list[str]]:
    """Packages by depth, the lowest row first; raises on an import cycle."""
    depth: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> int:
        if name in trail:
            raise ValueError(f"import cycle: {' -> '.join((*trail, name))}")
        if name not in depth:
            below = [visit(d, (*trail, name)) for d in graph.get(name, ())]
            depth[name] = 1 + max(below, default=-1)
        return depth[name]

    for name in graph:
        visit(name, ())
    by_row: dict[int, list[str]] = defaultdict(list)
    for name, level in depth.items():
        by_row[level].append(name)
    return [sorted(by_row[level]) for level in sorted(by_row)]


def reduced(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The edges not implied by a longer path (the transitive reduction of the acyclic
    graph): what the picture draws, so that its arrows can be followed. The adapters keep
    every arrow: which core packages they reach is what the layering is about."""

    def reach(name: str, seen: set[str]) -> set[str]:
        for dep in graph.get(name, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    out = {}
    for name, deps in graph.items():
        implied = set().union(*(reach(d, set()) for d in deps)) if deps else set()
        # The adapters' arrows are the point of the picture: each is drawn.
        out[name] = set(deps) if name == ADAPTER_BOX else deps - implied
    return out


def svg(graph: dict[str, set[str]]) -> str:
    """The picture as SVG text (deterministic: the same graph gives the same bytes)."""
    levels = rows(graph)
    drawn = reduced(graph)
    widest = max(len(row) for row in levels)
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + len(levels) * BOX_H + (len(levels) - 1) * GAP_Y + 40
    centre: dict[str, tuple[float, float]] = {}
    for level, row in enumerate(levels):
        y = height - MARGIN - 40 - BOX_H - level * (BOX_H + GAP_Y)
        span = len(row) * BOX_W + (len(row) - 1) * GAP_X
        x0 = (width - span) / 2
        for i, name in enumerate(row):
            centre[name] = (x0 + i * (BOX_W + GAP_X) + BOX_W / 2, y + BOX_H / 2)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
           f'height="{height:.0f}" font-family="sans-serif" font-size="12">',
           '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" '
           'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8a8a8a"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    for name in sorted(drawn):
        for dep in sorted(drawn[name]):
            (x1, y1), (x2, y2) = centre[name], centre[dep]
            out.append(f'<line x1="{x1:.1f}" y1="{y1 + BOX_H / 2:.1f}" x2="{x2:.1f}" '
                       f'y2="{y2 - BOX_H / 2:.1f}" stroke="#b0b0b0" marker-end="url(#a)"/>')
    for name, (x, y) in sorted(centre.items()):
        fill = "#fde9c9" if name == ADAPTER_BOX else "#dbe9f6"
        label = "interp_core" if name == "interp_core" else name
        out.append(f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" '
                   f'height="{BOX_H}" rx="5" fill="{fill}" stroke="#4a6d8c"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
                   f'{html.escape(label)}</text>')
    for i, line in enumerate(("An arrow: the upper package imports the lower one (arrows",
                              "implied through another package are left out). Drawn from",
                              "the code by scripts/draw_layers.py.")):
        out.append(f'<text x="{MARGIN}" y="{height - MARGIN - 24 + 14 * i:.0f}" '
                   f'fill="#555">{line}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/images/layers.svg is not what the code gives")
    args = parser.parse_args(argv)
    picture = svg(import_graph())
    if args.check:
        current = PICTURE.read_text(encoding="utf-8") if PICTURE.exists() else ""
        if current != picture:
            print(f"{PICTURE} is out of date: run python scripts/draw_layers.py",
                  file=sys.stderr)
            return 1
        return 0
    PICTURE.write_text(picture, encoding="utf-8")
    print(f"wrote {PICTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
