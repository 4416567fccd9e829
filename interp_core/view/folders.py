"""What a folder given to ``interp view`` is: an audit, an ``interp explain`` run, a training log.

=============  ======================  ========================================================
kind           recognised by           written by
=============  ======================  ========================================================
``audit``      ``results.parquet``     ``interp audit`` / :func:`interp_core.audit.audit`
``explain``    ``results.jsonl``       ``interp explain``
``training``   ``log.json``            :class:`interp_core.logging.FolderSink` (the torch
                                       loggers, the Keras callbacks)
=============  ======================  ========================================================

Two audit folders make a comparison. A file among those three may be given instead of its
folder. Anything else is a :class:`ViewError` that names what was found and what would do.
Nothing here writes: folders are only listed and read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIT_FILE = "results.parquet"
EXPLAIN_FILE = "results.jsonl"
TRAINING_FILE = "log.json"
KIND_FILES = {"audit": AUDIT_FILE, "explain": EXPLAIN_FILE, "training": TRAINING_FILE}
EXPECTED = (f"an audit folder ({AUDIT_FILE}, from interp audit), an interp explain folder "
            f"({EXPLAIN_FILE}) or a training-log folder ({TRAINING_FILE}, from FolderSink)")


class ViewError(ValueError):
    """A folder (or request) ``interp view`` cannot show; the message says why and what would."""


@dataclass
class Source:
    """One folder being viewed.

    Attributes
    ----------
    index : int
        Position on the command line (0, or 1 for the second audit of a comparison).
    path : Path
        The folder, resolved.
    kind : str
        ``"audit"``, ``"explain"`` or ``"training"``.
    data : Path
        The file that made the kind (``results.parquet``, ``results.jsonl``, ``log.json``).
    method, layer, model : str or None
        From the audit's settings or the explain lines.
    classes : tuple of str or None
        The audit's class names in the model's output order.
    entries : list of dict
        Training logs: the entries of ``log.json``; explain folders: the parsed lines.
    """

    index: int
    path: Path
    kind: str
    data: Path
    method: str | None = None
    layer: str | None = None
    model: str | None = None
    classes: tuple[str, ...] | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)


def detect(path: str | os.PathLike[str], index: int = 0) -> Source:
    """The :class:`Source` that ``path`` (a folder, or the file that marks one) is.

    Raises
    ------
    ViewError
        ``path`` does not exist, or holds none of the files of the module docstring.
    """
    given = Path(os.fspath(path)).expanduser()
    if not given.exists():
        raise ViewError(f"{str(given)!r} does not exist; expected {EXPECTED}")
    if given.is_file():
        if given.name not in KIND_FILES.values():
            raise ViewError(f"{str(given)!r} is a file, not a folder; expected {EXPECTED}")
        given = given.parent
    folder = given.resolve()
    if not folder.is_dir():
        raise ViewError(f"{str(given)!r} is not a folder; expected {EXPECTED}")
    for kind, name in KIND_FILES.items():
        data = folder / name
        if data.is_file():
            source = Source(index=index, path=folder, kind=kind, data=data)
            {"audit": _read_audit, "explain": _read_explain, "training": _read_training}[
                kind](source)
            return source
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as exc:
        raise ViewError(f"{str(given)!r} cannot be listed ({exc.strerror}); expected "
                        f"{EXPECTED}") from None
    if (folder / "parts").is_dir() and (folder / "audit.json").is_file():
        raise ViewError(f"{str(given)!r} is an audit that has not finished (parts/ but no "
                        f"{AUDIT_FILE}): finish it with interp audit --resume, then view it")
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise ViewError(f"{str(given)!r} holds {shown or 'nothing'}; expected {EXPECTED}")


def detect_all(paths: list[str | os.PathLike[str]]) -> list[Source]:
    """The sources of the command line: one folder, or two audit folders to compare."""
    if not paths:
        raise ViewError(f"no folder given; expected {EXPECTED}")
    if len(paths) > 2:
        raise ViewError(f"{len(paths)} folders given; interp view shows one folder, or "
                        "compares two audit folders")
    sources = [detect(p, i) for i, p in enumerate(paths)]
    if len(sources) == 2:
        kinds = [s.kind for s in sources]
        if kinds != ["audit", "audit"]:
            raise ViewError(f"two folders compare only as two audits ({AUDIT_FILE} each); "
                            f"got {kinds[0]} {str(sources[0].path)!r} and {kinds[1]} "
                            f"{str(sources[1].path)!r}")
    return sources


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _read_audit(source: Source) -> None:
    """Method, layer, model and classes from the settings stored in the Parquet metadata
    (read by DuckDB: no pyarrow needed)."""
    import duckdb

    from interp_core.audit.results import CONFIG_KEY

    try:
        con = duckdb.connect(":memory:", config=read_only_config())
        try:
            meta = dict(con.execute("SELECT key, value FROM parquet_kv_metadata(?)",
                                    [str(source.data)]).fetchall())
        finally:
            con.close()
    except duckdb.Error as exc:
        raise ViewError(f"{str(source.data)!r} is not a readable Parquet file: "
                        f"{str(exc).splitlines()[0]}") from None
    try:
        config = json.loads(meta.get(CONFIG_KEY, b"{}") or b"{}")
    except ValueError:
        config = {}
    if not isinstance(config, dict):
        config = {}
    source.method = _text(config.get("method"))
    source.layer = _text(config.get("layer"))
    source.model = _text(config.get("model"))
    classes = config.get("classes")
    source.classes = tuple(str(c) for c in classes) if isinstance(classes, list) else None


def _read_explain(source: Source) -> None:
    """The lines of ``results.jsonl`` (broken lines are skipped), with each overlay made
    relative to the folder where it lies in it."""
    entries = []
    with open(source.data, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict) or not isinstance(item.get("file"), str):
                continue
            score = item.get("score")
            target = item.get("target")
            entries.append({
                "id": item["file"], "index": number, "file": item["file"],
                "target": target if isinstance(target, int) else None,
                "score": float(score) if isinstance(score, int | float) else None,
                "method": _text(item.get("method")), "layer": _text(item.get("layer")),
                "backend": _text(item.get("backend")),
                "overlay": _inside(source.path, item.get("overlay")),
            })
    source.entries = entries
    methods = {e["method"] for e in entries if e["method"]}
    layers = {e["layer"] for e in entries if e["layer"]}
    source.method = ",".join(sorted(methods)) or None
    source.layer = ",".join(sorted(layers)) or None


def _inside(folder: Path, written: Any) -> str | None:
    """``written`` (an absolute or relative path) relative to ``folder`` when it lies in it;
    else the file of the same name in ``folder`` (a moved folder); else None."""
    if not isinstance(written, str) or not written:
        return None
    path = Path(written)
    candidates = [path] if path.is_absolute() else [folder / path]
    candidates.append(folder / path.name)
    for candidate in candidates:
        try:
            rel = candidate.resolve().relative_to(folder)
        except (ValueError, OSError):
            continue
        if (folder / rel).is_file():
            return rel.as_posix()
    return None


def _read_training(source: Source) -> None:
    """The entries of ``log.json``: ``{"tag", "name", "step", "path"}`` each."""
    try:
        entries = json.loads(source.data.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ViewError(f"{str(source.data)!r} is not the JSON list FolderSink writes: "
                        f"{exc}") from None
    if not isinstance(entries, list):
        raise ViewError(f"{str(source.data)!r} holds a {type(entries).__name__}, not the "
                        "list of {tag, name, step, path} entries FolderSink writes")
    keep = []
    for e in entries:
        if (isinstance(e, dict) and isinstance(e.get("tag"), str)
                and isinstance(e.get("name"), str) and isinstance(e.get("step"), int)
                and isinstance(e.get("path"), str)):
            keep.append(e)
    if entries and not keep:
        raise ViewError(f"{str(source.data)!r} has no entry of the form {{tag, name, step, "
                        "path}} that FolderSink writes")
    source.entries = keep


def read_only_config() -> dict[str, Any]:
    """DuckDB settings that download and install nothing."""
    return {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
