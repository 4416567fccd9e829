"""Where the images come from: a folder or a manifest, as one table of work items.

SOURCE forms
------------
folder
    Every image or array file below it (recursive, sorted; broken symbolic links are listed
    too, and end in ``errors.jsonl``). The first sub-folder under the root is
    the label (``root/cat/x.png`` -> ``cat``); files directly in the root have none. The id
    is the path relative to the root.
manifest (``.csv`` or ``.parquet``)
    One row per image. Columns: ``path`` (required; relative paths are relative to the
    manifest's folder), and optionally ``id`` (default: ``path`` as written), ``label``,
    ``group``, a box as ``x0, y0, x1, y1`` (pixels of the original image, end-exclusive) and
    ``mask`` (path of a mask image, non-zero on the object). Empty cells mean "none".

The work table (pyarrow) has the columns of :data:`WORK_COLUMNS`: ``index`` is the position
in the source, and rows keep that order.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
WORK_COLUMNS = ("id", "index", "path", "label", "label_index", "group",
                "box_x0", "box_y0", "box_x1", "box_y1", "mask")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
#: A manifest larger than this is refused before it is read (about 10 million rows).
MAX_MANIFEST_BYTES = 2 * 1024**3
#: Class numbers from labels must fit the results' int32 column.
MAX_CLASSES = 2**31 - 1
#: Box coordinates beyond this are no pixel coordinates (and would overflow float32).
MAX_COORDINATE = 1e9


def work_schema() -> Any:
    """The pyarrow schema of the work table."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("index", pa.int64()), ("path", pa.string()),
        ("label", pa.string()), ("label_index", pa.int32()), ("group", pa.string()),
        ("box_x0", pa.float32()), ("box_y0", pa.float32()),
        ("box_x1", pa.float32()), ("box_y1", pa.float32()), ("mask", pa.string()),
    ])


def read_source(source: str | os.PathLike[str]) -> dict[str, list[Any]]:
    """The work items of a folder or manifest as columns (``label_index`` still unset).

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist.
    ValueError
        A manifest without a ``path`` column, with half a box, or with repeated ids; a
        folder without images; a file that is neither a folder nor a manifest.
    """
    path = Path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"SOURCE {str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        reason = exc.strerror if isinstance(exc, OSError) else "a NUL byte in the name"
        raise ValueError(f"SOURCE {str(path)!r} cannot be read: {reason or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        return _read_folder(path)
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ValueError(
            f"SOURCE {str(path)!r} is neither a folder nor a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    if not stat.S_ISREG(info.st_mode):  # a pipe or a device would never end
        raise ValueError(f"manifest {str(path)!r} is not a regular file")
    if info.st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest {str(path)!r} has {info.st_size:,} bytes, more than the "
                         f"limit of {MAX_MANIFEST_BYTES:,}")
    rows = _csv_rows(path) if suffix == ".csv" else _parquet_rows(path)
    return _from_manifest(rows, path)


def _read_folder(root: Path) -> dict[str, list[Any]]:
    from interp_core.io.images import IMAGE_SUFFIXES, find_files
    from interp_core.io.volumes import ARRAY_SUFFIXES

    found = find_files([root], (*IMAGE_SUFFIXES, *ARRAY_SUFFIXES))
    # Broken links are work items too: reading them fails, and errors.jsonl says why.
    files = sorted([*found.files, *(path for path, _ in found.problems)])
    columns = _empty_columns()
    for index, file in enumerate(files):
        rel = file.relative_to(root)
        columns["id"].append(rel.as_posix())
        columns["index"].append(index)
        columns["path"].append(os.path.abspath(file))
        columns["label"].append(rel.parts[0] if len(rel.parts) > 1 else None)
        columns["group"].append(None)
        for name in ("box_x0", "box_y0", "box_x1", "box_y1", "mask"):
            columns[name].append(None)
    return columns


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except UnicodeDecodeError as exc:
        raise ValueError(f"manifest {str(path)!r} is not UTF-8 text (byte {exc.start}): save "
                         "it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise ValueError(f"manifest {str(path)!r} is not valid CSV: {exc}") from None


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"manifest {str(path)!r} is not a readable Parquet file: "
                         f"{type(exc).__name__}: {exc}") from None


def _text(value: Any, column: str, row: int) -> str | None:
    """A cell as text; empty cells and NaN are None; 3.0 from a float column is '3'.

    Raises
    ------
    ValueError
        A cell that holds no single value (a list, a struct), or bytes that are not UTF-8.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"manifest row {row}: {column} holds bytes that are not UTF-8 "
                             "text") from None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if not isinstance(value, str | int | float):
        raise ValueError(f"manifest row {row}: {column} holds a {type(value).__name__}, not "
                         "text or a number")
    text = str(value).strip()
    return text or None


def _number(value: Any, column: str, row: int) -> float | None:
    text = _text(value, column, row)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"manifest row {row}: {column}={text!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > MAX_COORDINATE:
        raise ValueError(f"manifest row {row}: {column}={text!r} is not a pixel coordinate "
                         f"(a finite number within +-{MAX_COORDINATE:g})")
    return number


def _empty_columns() -> dict[str, list[Any]]:
    return {name: [] for name in WORK_COLUMNS if name != "label_index"}


def _from_manifest(rows: list[dict[str, Any]], manifest: Path) -> dict[str, list[Any]]:
    if not rows:
        raise ValueError(f"manifest {str(manifest)!r} has no rows")
    names = {name for name in rows[0] if isinstance(name, str)}  # extra CSV cells: None
    if "path" not in names:
        raise ValueError(
            f"manifest {str(manifest)!r} has no 'path' column (columns: {sorted(names)}); "
            "it needs path and may have id, label, group, x0, y0, x1, y1, mask"
        )
    has_box = [c for c in BOX_COLUMNS if c in names]
    if has_box and len(has_box) != 4:
        raise ValueError(
            f"manifest {str(manifest)!r} has box columns {has_box}; a box needs all of "
            f"{list(BOX_COLUMNS)}"
        )
    base = manifest.resolve().parent
    columns = _empty_columns()
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        line = index + 2 if manifest.suffix.lower() == ".csv" else index
        raw_path = _text(row.get("path"), "path", line)
        if raw_path is None:
            raise ValueError(f"manifest row {line}: empty path")
        item_id = _text(row.get("id"), "id", line) or raw_path
        if item_id in seen:
            raise ValueError(
                f"manifest rows {seen[item_id]} and {line} have the same id {item_id!r}; ids "
                "must be unique (add an 'id' column when a file is listed twice)"
            )
        seen[item_id] = line
        columns["id"].append(item_id)
        columns["index"].append(index)
        columns["path"].append(os.path.abspath(base / raw_path))
        columns["label"].append(_text(row.get("label"), "label", line))
        columns["group"].append(_text(row.get("group"), "group", line))
        box = [_number(row.get(c), c, line) if has_box else None for c in BOX_COLUMNS]
        if any(v is None for v in box) and any(v is not None for v in box):
            raise ValueError(f"manifest row {line}: the box {box} is incomplete")
        for name, value in zip(("box_x0", "box_y0", "box_x1", "box_y1"), box, strict=True):
            columns[name].append(value)
        mask = _text(row.get("mask"), "mask", line)
        columns["mask"].append(None if mask is None else os.path.abspath(base / mask))
    return columns


def resolve_classes(labels: Sequence[str | None], classes: Sequence[str] | None
                    ) -> tuple[tuple[str, ...] | None, list[int | None]]:
    """Class names and each label's class index.

    With ``classes`` given, a label is a class name or a class number. Without, labels that
    are all numbers are class numbers (no names); otherwise the sorted distinct labels are the
    classes (the torchvision ``ImageFolder`` convention: pass ``classes`` when the model's
    outputs are in another order or the data holds only some classes).

    Raises
    ------
    ValueError
        A label that is neither a class name nor a class number in range.
    """
    present = sorted({lab for lab in labels if lab is not None})
    if classes is None:
        if all(_is_int(lab) for lab in present):
            for lab in present:
                if not 0 <= int(lab) < MAX_CLASSES:
                    raise ValueError(f"label {lab!r} is not a class number (0 to "
                                     f"{MAX_CLASSES - 1:,}); pass classes= (--classes) to "
                                     "name the classes")
            return None, [None if lab is None else int(lab) for lab in labels]
        classes = tuple(present)
    classes = tuple(str(c) for c in classes)
    lookup = {name: i for i, name in enumerate(classes)}
    indices: list[int | None] = []
    for lab in labels:
        if lab is None:
            indices.append(None)
        elif lab in lookup:
            indices.append(lookup[lab])
        elif _is_int(lab) and 0 <= int(lab) < len(classes):
            indices.append(int(lab))
        else:
            raise ValueError(
                f"label {lab!r} is not one of the classes {list(classes)} nor a class number "
                f"0..{len(classes) - 1}; pass classes= (--classes) in the model's output order"
            )
    return classes, indices


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def work_table(source: str | os.PathLike[str], classes: Sequence[str] | None = None
               ) -> tuple[Any, tuple[str, ...] | None]:
    """The work table of ``source`` (see the module docstring) and the class names."""
    import pyarrow as pa

    columns = read_source(source)
    names, indices = resolve_classes(columns["label"], classes)
    columns["label_index"] = indices
    table = pa.table({name: columns[name] for name in WORK_COLUMNS}, schema=work_schema())
    return table, names
