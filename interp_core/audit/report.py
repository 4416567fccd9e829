"""``report.html``: accuracy and metrics per class and group, and picture grids.

The page is one self-contained HTML file next to ``overlays/`` (pictures are linked, not
embedded). Sections:

- the run (model, method, layer, counts) and the overall statistics;
- per class and per group: accuracy and mean metrics with 95% intervals
  (:mod:`interp_core.audit.stats`);
- "right for the wrong reasons": correct predictions whose map misses the object
  (pointing game miss), lowest energy-in-box first;
- the worst-localised images of each class (misses first, then by energy in box);
- unreadable images and why.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.audit.stats import MEANS

FIGURE_COLUMNS = ("id", "path", "label", "width", "height", "prediction", "overlay",
                  "box_x0", "box_y0", "box_x1", "box_y1", "pointing_game", "energy_in_box")
METRIC_COLUMNS = ("correct", "pointing_game", *MEANS)
WRONG_REASONS_SHOWN = 24
WORST_PER_CLASS = 8
ERRORS_SHOWN = 50

TITLES = {"accuracy": "accuracy", "pointing_game": "pointing game",
          "energy_in_box": "energy in box", "deletion_auc": "deletion AUC (lower better)",
          "insertion_auc": "insertion AUC (higher better)",
          "average_drop": "Average Drop (lower better)"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ci { color: #777; font-size: 0.85em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 160px; font-size: 0.8em; }
.pic { position: relative; width: 160px; height: 160px; }
.pic img { width: 160px; height: 160px; image-rendering: pixelated; }
.box { position: absolute; border: 2px solid #fff; outline: 1px solid #000; }
figcaption { word-break: break-all; }
.miss { color: #b00; }
"""


@dataclass
class ReportData:
    """What the report and the summary need of ``results.parquet``, kept compact: metrics as
    float arrays, labels and groups as integer codes, and the few picture columns in Arrow
    form (rows are turned into Python objects only for the pictures shown).

    Attributes
    ----------
    figures : pyarrow.Table
        :data:`FIGURE_COLUMNS` of every row.
    metrics : dict[str, np.ndarray]
        float64 ``(N,)`` per :data:`METRIC_COLUMNS` (booleans as 1.0/0.0; NaN for null).
    by : dict[str, tuple[np.ndarray, list[str]]]
        ``"label"`` and ``"group"``: int codes ``(N,)`` (-1 for none) and their names.
    """

    figures: Any
    metrics: dict[str, np.ndarray]
    by: dict[str, tuple[np.ndarray, list[str]]]


def load_report_data(results: str | os.PathLike[str]) -> ReportData:
    """Read :class:`ReportData` from ``results.parquet`` (never the maps)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = sorted(set(FIGURE_COLUMNS) | set(METRIC_COLUMNS) | {"label", "group"})
    table = pq.read_table(results, columns=names)
    metrics = {name: pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
               for name in METRIC_COLUMNS}
    by = {}
    for key in ("label", "group"):
        encoded = table.column(key).combine_chunks().dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        by[key] = (codes, [str(v) for v in encoded.dictionary.to_pylist()])
    return ReportData(table.select(list(FIGURE_COLUMNS)), metrics, by)


def _fmt(stat: dict[str, float] | None, percent: bool) -> str:
    if not stat or stat.get("n", 0) == 0 or math.isnan(stat["value"]):
        return "&ndash;"
    scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 3)
    value = f"{stat['value'] * scale:.{digits}f}{unit}"
    if math.isnan(stat["low"]):
        return value
    return (f"{value} <span class='ci'>({stat['low'] * scale:.{digits}f}&ndash;"
            f"{stat['high'] * scale:.{digits}f})</span>")


def _stats_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    names = ["accuracy", "pointing_game", *MEANS]
    shown = [m for m in names if any(m in r for r in rows.values())]
    head = "".join(f"<th>{TITLES[m]}</th>" for m in shown)
    body = []
    for name, stats in rows.items():
        cells = "".join(f"<td>{_fmt(stats.get(m), m in ('accuracy', 'pointing_game'))}</td>"
                        for m in shown)
        body.append(f"<tr><td>{html.escape(name)}</td><td>{stats['n']}</td>{cells}</tr>")
    return (f"<table><tr><th>{html.escape(title)}</th><th>images</th>{head}</tr>"
            + "".join(body) + "</table>")


def _figure(row: dict[str, Any], out: Path, class_name: Any) -> str:
    src = row["overlay"] or os.path.relpath(row["path"], out)
    box = ""
    if row["box_x0"] is not None and row["width"]:
        w, h = float(row["width"]), float(row["height"])
        x0, y0, x1, y1 = (float(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        box = (f"<div class='box' style='left:{100 * x0 / w:.2f}%;top:{100 * y0 / h:.2f}%;"
               f"width:{100 * (x1 - x0) / w:.2f}%;height:{100 * (y1 - y0) / h:.2f}%'></div>")
    hit = row["pointing_game"]
    pointing = "" if hit is None else (" &middot; hit" if hit else
                                       " &middot; <span class='miss'>miss</span>")
    energy = row["energy_in_box"]
    energy_text = "" if energy is None else f" &middot; energy {energy:.2f}"
    caption = (f"{html.escape(str(row['id']))}<br>{html.escape(str(row['label']))} &rarr; "
               f"{html.escape(class_name(row['prediction']))}{energy_text}{pointing}")
    return (f"<figure><div class='pic'><img loading='lazy' src='{html.escape(src)}' alt=''>"
            f"{box}</div><figcaption>{caption}</figcaption></figure>")


def _grid(data: ReportData, rows: np.ndarray, out: Path, class_name: Any) -> list[str]:
    picked = data.figures.take(np.asarray(rows, dtype=np.int64)).to_pylist()
    return (["<div class='grid'>"] + [_figure(r, out, class_name) for r in picked]
            + ["</div>"])


def _localisation_order(metrics: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted worst-localised first: pointing-game misses, then low energy."""
    hit = metrics["pointing_game"][rows]
    energy = np.nan_to_num(metrics["energy_in_box"][rows], nan=np.inf)
    return rows[np.lexsort((energy, hit))]


def wrong_reason_rows(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of correct predictions whose map's maximum misses the object, worst first."""
    rows = np.flatnonzero((metrics["correct"] == 1) & (metrics["pointing_game"] == 0))
    return _localisation_order(metrics, rows)


def worst_per_class(data: ReportData, k: int = WORST_PER_CLASS) -> dict[str, np.ndarray]:
    """Per label, the ``k`` worst-localised images (among those with a box or mask)."""
    codes, names = data.by["label"]
    measured = ~np.isnan(data.metrics["pointing_game"])
    out = {}
    for code in sorted(set(np.unique(codes[codes >= 0]).tolist()), key=lambda c: names[c]):
        rows = np.flatnonzero((codes == code) & measured)
        if len(rows):
            out[names[code]] = _localisation_order(data.metrics, rows)[:k]
    return out


def write_report(out: str | os.PathLike[str], data: ReportData,
                 summary: dict[str, Any], config: dict[str, Any],
                 errors: list[dict[str, Any]], n_errors: int) -> Path:
    """Write ``out/report.html``; returns its path."""
    out = Path(out)
    classes = config.get("classes")

    def class_name(index: Any) -> str:
        if index is None:
            return "?"
        return classes[int(index)] if classes and 0 <= int(index) < len(classes) else str(index)

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>interp audit"
             f"</title><style>{CSS}</style></head><body>",
             "<h1>Audit report</h1>",
             "<p>" + html.escape(
                 f"model {config.get('model')}, method {config.get('method')}, layer "
                 f"{config.get('layer') or '(auto)'}, target {config.get('target')}; "
                 f"{summary['overall']['n']} images explained, {n_errors} unreadable."
             ) + " Intervals are 95%: Wilson for proportions, Student's t for means.</p>",
             "<h2>Overall</h2>", _stats_table("", {"all images": summary["overall"]})]
    if summary.get("by_label"):
        parts += ["<h2>Per class</h2>", _stats_table("class", summary["by_label"])]
    if summary.get("by_group"):
        parts += ["<h2>Per group</h2>", _stats_table("group", summary["by_group"])]
    wrong = wrong_reason_rows(data.metrics)
    parts.append("<h2>Right for the wrong reasons</h2>")
    if len(wrong):
        parts.append(f"<p>{len(wrong)} correct predictions whose map's maximum lies off the "
                     f"object; the {min(len(wrong), WRONG_REASONS_SHOWN)} with the least "
                     "energy in the box:</p>")
        parts += _grid(data, wrong[:WRONG_REASONS_SHOWN], out, class_name)
    elif not np.isnan(data.metrics["pointing_game"]).all():
        parts.append("<p>None: every correct prediction points at the object.</p>")
    else:
        parts.append("<p>No boxes or masks were given, so localisation is not measured.</p>")
    worst = worst_per_class(data)
    if worst:
        parts.append("<h2>Worst-localised images per class</h2>")
        for name, rows in worst.items():
            parts.append(f"<h3>{html.escape(name)}</h3>")
            parts += _grid(data, rows, out, class_name)
    if n_errors:
        parts.append(f"<h2>Unreadable images ({n_errors})</h2><ul>")
        parts += [f"<li>{html.escape(str(e.get('id')))}: {html.escape(str(e.get('error')))}"
                  "</li>" for e in errors[:ERRORS_SHOWN]]
        parts.append("</ul><p>All of them are listed in errors.jsonl.</p>")
    parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(config, indent=1))
                 + "</pre></body></html>")
    path = out / "report.html"
    tmp = out / ".tmp-report.html"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path
