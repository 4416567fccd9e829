"""JSON-lines records that survive an interrupted run: ``results.jsonl`` and ``errors.jsonl``.

Each record is written with one ``write`` call on an unbuffered file, so a run stopped by
Ctrl-C or SIGTERM (handled as Ctrl-C; see :mod:`interp_core.cli.errors`) leaves whole lines
only: Python runs signal handlers between calls, never inside one. ``--resume`` reads the
results back, drops a torn last line should one exist (a power cut), and skips what is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


class JsonLinesWriter:
    """Appends (or, with ``append=False``, writes afresh) one JSON object per line."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        self._file = open(path, "ab" if append else "wb", buffering=0)  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        """One record as one line, on disk when this returns."""
        data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
        while data:  # a regular file takes it in one call; the loop is for the odd case
            data = data[self._file.write(data) or 0 :]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSON-lines file, and how many torn or invalid lines were dropped.

    A file with dropped lines is rewritten without them (atomically), so that lines appended
    later start on a line of their own. A missing file has no records.
    """
    if not path.is_file():
        return [], 0
    records: list[dict[str, Any]] = []
    kept: list[bytes] = []
    dropped = 0
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
            kept.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(b"".join(kept))
        os.replace(partial, path)
    return records, dropped
