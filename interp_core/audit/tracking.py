"""Experiment tracking: the audit as a W&B Table and its summary as run metrics.

The table has one row per image (up to ``max_rows``, in source order): id, the image, the
overlay, label, prediction, score, correct, group and every metric. The summary goes to
``run.summary`` as flat keys: ``accuracy``, ``accuracy_low``, ``accuracy_high``,
``pointing_game``, ..., and per group and class ``group/<name>/accuracy``,
``class/<name>/accuracy`` and so on. ``WANDB_MODE=offline`` (or ``mode="offline"``) writes
the run locally.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TABLE_COLUMNS = ("id", "image", "overlay", "label", "prediction", "score", "correct", "group",
                 "pointing_game", "energy_in_box", "deletion_auc", "insertion_auc",
                 "average_drop")


def flat_summary(summary: dict[str, Any]) -> dict[str, float]:
    """The nested summary of :func:`interp_core.audit.stats.summarise` as flat metrics."""
    flat: dict[str, float] = {}

    def add(prefix: str, stats: dict[str, Any]) -> None:
        flat[f"{prefix}images"] = stats["n"]
        for name, stat in stats.items():
            if isinstance(stat, dict):
                flat[f"{prefix}{name}"] = stat["value"]
                flat[f"{prefix}{name}_low"] = stat["low"]
                flat[f"{prefix}{name}_high"] = stat["high"]

    add("", summary["overall"])
    for key, prefix in (("by_label", "class"), ("by_group", "group")):
        for name, stats in summary.get(key, {}).items():
            add(f"{prefix}/{name}/", stats)
    return flat


def log_wandb(out: str | os.PathLike[str], results: str | os.PathLike[str],
              summary: dict[str, Any], config: dict[str, Any], *,
              project: str | None = None, max_rows: int = 1000, **init_kwargs: Any) -> str:
    """Log the audit to a new W&B run; returns the run's local folder.

    Parameters
    ----------
    out : path
        The audit folder (overlays are read from it; W&B writes under ``out/wandb``).
    results : path
        ``results.parquet``.
    project : str, optional
        W&B project (default ``interp-audit``).
    max_rows : int
        Rows of the table (the summary always covers every image).
    """
    try:
        import wandb
    except ImportError:
        raise ImportError("--wandb needs wandb: pip install wandb") from None
    import pyarrow.parquet as pq

    from interp_core.logging.sinks import _wandb_reinit_value

    out = Path(out)
    init_kwargs.setdefault("reinit", _wandb_reinit_value(wandb))
    init_kwargs.setdefault("dir", str(out))
    run = wandb.init(project=project or "interp-audit", config=config, job_type="audit",
                     **init_kwargs)
    try:
        classes = config.get("classes")
        table = wandb.Table(columns=list(TABLE_COLUMNS))
        names = ["id", "path", "overlay", "label", "prediction", "score", "correct", "group",
                 *TABLE_COLUMNS[8:]]
        reader = pq.ParquetFile(results)
        taken = 0
        for batch in reader.iter_batches(batch_size=256, columns=names):
            for row in batch.to_pylist():
                if taken >= max_rows:
                    break
                pred = row["prediction"]
                table.add_data(
                    row["id"], wandb.Image(row["path"]),
                    None if row["overlay"] is None else wandb.Image(str(out / row["overlay"])),
                    row["label"], classes[pred] if classes else pred, row["score"],
                    row["correct"], row["group"], *(row[c] for c in TABLE_COLUMNS[8:]),
                )
                taken += 1
            if taken >= max_rows:
                break
        run.log({"audit": table})
        run.summary.update(flat_summary(summary))
        return str(run.dir)
    finally:
        run.finish()
