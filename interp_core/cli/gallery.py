"""An HTML page of tables, one per model: each image next to its overlays, one column per
method."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GalleryRow:
    """One image: its file, a caption, and one overlay file per method (paths relative)."""

    image: str
    caption: str
    overlays: dict[str, str]


@dataclass(frozen=True)
class GallerySection:
    """One table of the page: a heading, a note under it, and one row per image."""

    heading: str
    note: str
    rows: Sequence[GalleryRow]


def _table(rows: Sequence[GalleryRow]) -> str:
    methods = list(dict.fromkeys(m for row in rows for m in row.overlays))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    body = []
    for row in rows:
        cells = "".join(
            f'<td><img src="{html.escape(row.overlays[m])}" alt="{html.escape(m)}"></td>'
            if m in row.overlays else "<td></td>" for m in methods
        )
        body.append(
            f'<tr><td><img src="{html.escape(row.image)}" alt="input"><br>'
            f"<small>{html.escape(row.caption)}</small></td>{cells}</tr>"
        )
    return f"<table><tr><th>image</th>{head}</tr>{''.join(body)}</table>"


def write_gallery(path: Path, sections: Sequence[GallerySection], title: str) -> Path:
    """Write ``index.html`` at ``path``, one table per section; returns the path."""
    tables = "".join(
        f"<h2>{html.escape(s.heading)}</h2><p>{html.escape(s.note)}</p>{_table(s.rows)}"
        for s in sections
    )
    page = (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}td,th{padding:3px;text-align:center;"
        "vertical-align:top}img{width:160px;image-rendering:auto}small{display:block;"
        "max-width:160px}</style>"
        f"<h1>{html.escape(title)}</h1>{tables}"
    )
    path.write_text(page, encoding="utf-8")
    return path
