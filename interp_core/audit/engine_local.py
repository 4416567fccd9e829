"""The embedded engine: one process, consecutive batches, progress, parts on disk.

Rows are written to a part file every ``part_size`` rows or ``flush_seconds`` seconds,
whichever comes first, so a killed run loses at most that much work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from interp_core.audit.config import AuditConfig
from interp_core.audit.results import write_part
from interp_core.audit.worker import BatchWorker
from interp_core.io.progress import Progress


def run_local(todo: Any, config: AuditConfig, parts_dir: Path, *, model: Any = None,
              part_size: int = 1024, flush_seconds: float = 30.0, progress: bool = True,
              worker_class: type = BatchWorker) -> int:
    """Explain every row of ``todo`` (a work table) and write result parts.

    Parameters
    ----------
    todo : pyarrow.Table
        Work items (:func:`interp_core.audit.sources.work_schema`).
    config : AuditConfig
        Run settings; ``config.threads`` holds torch to that many threads while it runs.
    parts_dir : Path
        Where part files go.
    model : optional
        A live model to use instead of building ``config.model``.
    worker_class : type
        :class:`BatchWorker` or a subclass (to trace or extend each batch).

    Returns
    -------
    int
        Rows written (results and errors).
    """
    import pyarrow as pa

    if todo.num_rows == 0:
        return 0
    worker = worker_class(config, model=model)
    bar = Progress(todo.num_rows, "auditing", show=progress)
    pending: list[Any] = []
    pending_rows = written = 0
    last_flush = time.monotonic()
    try:
        for start in range(0, todo.num_rows, config.batch_size):
            rows = worker(todo.slice(start, config.batch_size))
            pending.append(rows)
            pending_rows += rows.num_rows
            bar.update(rows.num_rows)
            if pending_rows >= part_size or time.monotonic() - last_flush >= flush_seconds:
                write_part(pa.concat_tables(pending), parts_dir)
                written += pending_rows
                pending, pending_rows, last_flush = [], 0, time.monotonic()
        if pending:
            write_part(pa.concat_tables(pending), parts_dir)
            written += pending_rows
    finally:
        worker.close()
        bar.close()
    return written
