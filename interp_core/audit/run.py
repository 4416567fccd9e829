"""``ic.audit``: explain and score a whole dataset, on one machine or a Ray cluster."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp_core.audit.config import (
    AuditConfig,
    absolute_spec,
    as_numbers,
    as_size,
    check_engine_model,
    demo_defaults,
    is_factory,
)
from interp_core.io.outputs import OutputFolder, OutputPlan, open_output
from interp_core.methods import method_class

ENGINES = ("local", "ray")
#: What an audit writes: a run owns these files and nothing else in its folder.
AUDIT_PLAN = OutputPlan(
    "audit", "audit.json", files=("results.parquet", "errors.jsonl", "report.html"),
    patterns=("parts/part-*.parquet", "parts/.tmp-*", "overlays/*-??????????.png",
              "overlays/.tmp-*", "maps/*-??????????.npy", "maps/.tmp-*"),
    results=("parts", "results.parquet"),
    legacy_files=("results.parquet", "errors.jsonl", "report.html"))


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit` wrote and found.

    Attributes
    ----------
    out, results, errors, report : Path
        The output folder, ``results.parquet``, ``errors.jsonl`` and ``report.html``.
    images : int
        Images explained (rows of ``results.parquet``).
    failed : int
        Unreadable images (lines of ``errors.jsonl``).
    resumed : int
        Images found already done in an earlier run (``resume=True``).
    seconds : float
        Wall time of the run.
    summary : dict
        Overall, per-class and per-group statistics (:func:`interp_core.audit.stats.summarise`).
    layers : tuple of str
        The names of the layers explained, as the workers resolved them (with ``layer=None``,
        the default layer's name), from the ``layer`` column.
    nodes : dict
        Ray engine: rows (results and errors, one per image) per Ray node id, as kept by
        the merge, resumed rows included; empty for the local engine.
    """

    out: Path
    results: Path
    errors: Path
    report: Path | None
    images: int
    failed: int
    resumed: int
    seconds: float
    summary: dict[str, Any] = field(repr=False)
    layers: tuple[str, ...] = ()
    nodes: dict[str, int] = field(default_factory=dict)

    def table(self, columns: Sequence[str] | None = None) -> Any:
        """``results.parquet`` as a pyarrow Table."""
        import pyarrow.parquet as pq

        return pq.read_table(self.results, columns=None if columns is None else list(columns))


def _read_errors(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def audit(
    model: Any,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    layer: Any = None,
    target: str | int = "predicted",
    classes: Sequence[str] | None = None,
    size: int | Sequence[int] | None = None,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    backend: str | None = None,
    batch_size: int = 32,
    map_size: int = 32,
    faithfulness: Sequence[str] = (),
    overlays: bool = True,
    alpha: float = 0.5,
    engine: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    gpus: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    part_size: int = 1024,
    progress: bool = True,
    report: bool = True,
    wandb: bool = False,
    wandb_project: str | None = None,
    wandb_rows: int = 1000,
    method_options: dict[str, Any] | None = None,
    channels: int | None = None,
    trust_model: bool = False,
    weights: str | os.PathLike[str] | None = None,
    ray_address: str | None = None,
) -> AuditResult:
    """Explain every image of a dataset, score the maps, and write a report.

    Writes ``out/results.parquet`` (one row per image, schema in
    :mod:`interp_core.audit.results`), ``out/overlays/*.png``, ``out/errors.jsonl``
    (unreadable images and why), ``out/report.html`` and ``out/audit.json`` (settings and
    summary). See ``docs/audit.md``.

    Parameters
    ----------
    model : str, callable or model
        A spec (``"demo:torch"``, ``"file.pt"``, ``"file.keras"``, ``"module:attr"``,
        ``"file.py:attr"``) or a zero-argument factory; each worker builds its own model
        from it. A live model object works with ``engine="local"`` only.
    source : path
        A folder of images (the first sub-folder is the label) or a CSV/Parquet manifest with
        ``path`` and optional ``id``, ``label``, ``group``, ``x0, y0, x1, y1``, ``mask``
        (:mod:`interp_core.audit.sources`).
    out : path
        Output folder.
    method, layer, backend
        As for the CAM classes (the demo model defaults to its layer ``block3``).
    target : "predicted", "label" or int
        The class to explain: each image's top-1 prediction, its true label (the prediction
        where there is none), or one class for all.
    classes : sequence of str, optional
        The model's class names in output order (default: the demo model's, or the sorted
        labels unless they are class numbers).
    size : int, (int, int) or (int, int, int), optional
        Model input size; inputs are resized to it (default 224 on every spatial axis, the
        demo model's 64).
    mean, std : float or one float per channel
        Normalisation of inputs scaled to [0, 1].
    batch_size : int
        Images per forward/backward pass (also the unit of work of the Ray engine).
    map_size : int
        Longest side of the stored float16 map.
    faithfulness : sequence of str
        Any of ``"deletion"``, ``"insertion"``, ``"average_drop"`` (extra forward passes).
        Scores are the model's outputs: Average Drop needs probabilities (a softmax model).
    overlays, alpha
        Write overlay PNGs, heatmap weight.
    engine : "local" or "ray"
        One process with a progress bar, or Ray Data with an actor pool.
    workers, threads, gpus
        Ray: actors, CPU threads per actor, GPUs per actor (defaults in
        :func:`interp_core.audit.engine_ray.plan_resources`). Local: ``threads`` holds torch to
        that many threads during the run.
    resume : bool
        Continue a run in ``out``: images with a row already written are skipped.
    overwrite : bool
        Delete the files an earlier audit's ``audit.json`` lists in ``out`` first (and
        nothing else: files no audit wrote are never touched).
    part_size : int
        Rows per part file (the most a killed run can lose per worker).
    wandb, wandb_project, wandb_rows
        Log a W&B Table (at most ``wandb_rows`` rows) and the summary.
    method_options : dict, optional
        Extra keyword arguments of the method.
    channels : int, optional
        Channels the model takes (default: what it declares, else 3).
    trust_model : bool
        Load a pickled model file (``.pt`` holding a whole module): this runs the code in the
        file, so only for files you trust. See ``docs/how-to/model-files.md``.
    weights : path, optional
        Weights (``.safetensors``, a state dict ``.pt``, Keras ``.weights.h5``) loaded into
        the model that ``model`` builds.
    ray_address : str, optional
        ``engine="ray"``: the cluster to join (``"HOST:PORT"`` of the head node, or
        ``"auto"``); default ``RAY_ADDRESS``. A cluster given is joined, never replaced by a
        Ray of our own. See "Running on a cluster" in ``docs/audit.md``.

    Returns
    -------
    AuditResult
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} must be one of {list(ENGINES)}")
    check_engine_model(model, engine)
    if ray_address is not None and engine != "ray":
        raise ValueError(f"ray_address={ray_address!r} needs engine='ray' (engine={engine!r})")
    method = method_class(method).name  # a typo fails here, before anything is written
    defaults = demo_defaults(model)
    options = dict(method_options or {})
    if defaults and method == "cam":
        options.setdefault("fc", "fc")
    out_dir = Path(out).resolve()
    from interp_core.audit.sources import work_table

    work, class_names = work_table(source, classes if classes is not None
                                   else defaults.get("classes"))
    config = AuditConfig(
        model=absolute_spec(model) if isinstance(model, str) else model,
        out=str(out_dir), method=method,
        layer=layer if layer is not None else defaults.get("layer"),
        backend=backend, target=target, classes=class_names,
        size=as_size(size if size is not None else defaults.get("size", 224)),
        channels=channels, mean=as_numbers(mean, "mean"), std=as_numbers(std, "std"),
        batch_size=batch_size, map_size=map_size, faithfulness=tuple(faithfulness),
        overlays=overlays, alpha=alpha, threads=threads, method_options=options,
        trust_model=trust_model, weights=None if weights is None else str(
            Path(weights).resolve()),
    )
    folder = open_output(out_dir, AUDIT_PLAN, identity=config.identity(), resume=resume,
                         overwrite=overwrite)
    folder.save(config=config.describe(), engine=engine, source=str(source),
                status="running", schema_version=None, images_in_source=work.num_rows)
    try:
        todo, resumed = _todo(work, out_dir, resume)
        _run_engine(engine, todo, config, out_dir, model=model, workers=workers,
                    threads=threads, gpus=gpus, part_size=part_size, progress=progress,
                    ray_address=ray_address)
    except BaseException:
        folder.abandon()  # only when no result was written: nothing blocks a corrected rerun
        raise
    return _finish(folder, work, config, resumed, start, report=report, wandb=wandb,
                   wandb_project=wandb_project, wandb_rows=wandb_rows)


def _todo(work: Any, out: Path, resume: bool) -> tuple[Any, int]:
    import pyarrow.compute as pc

    from interp_core.audit.results import PARTS, finished_ids, remove_stale

    remove_stale(out / PARTS)
    if not resume:
        return work, 0
    done = finished_ids(out / PARTS)
    if len(done) == 0:
        return work, 0
    todo = work.filter(pc.invert(pc.is_in(work.column("id"), value_set=done)))
    return todo, work.num_rows - todo.num_rows


def _run_engine(engine: str, todo: Any, config: AuditConfig, out: Path, *, model: Any,
                workers: int | None, threads: int | None, gpus: float | None, part_size: int,
                progress: bool, ray_address: str | None = None) -> None:
    from interp_core.audit.results import PARTS

    if engine == "local":
        from interp_core.audit.engine_local import run_local

        live = None if isinstance(model, str) or is_factory(model) else model
        run_local(todo, config, out / PARTS, model=live, part_size=part_size,
                  progress=progress)
        return
    try:
        from interp_core.audit.engine_ray import run_ray
    except ImportError as exc:
        raise ImportError(
            f"engine='ray' needs Ray Data: pip install 'interp-core[ray]' ({exc})"
        ) from exc
    run_ray(todo, config, out / PARTS, workers=workers, threads=threads, gpus=gpus,
            part_size=part_size, progress=progress, address=ray_address)


def _finish(folder: OutputFolder, work: Any, config: AuditConfig, resumed: int,
            start: float, *, report: bool, wandb: bool, wandb_project: str | None,
            wandb_rows: int) -> AuditResult:
    from interp_core.audit.report import load_report_data, write_report
    from interp_core.audit.results import SCHEMA_VERSION, finalise, layers_used
    from interp_core.audit.stats import summarise

    out = folder.path
    described = config.describe()
    n_ok, n_err, nodes = finalise(out, wanted_ids=work.column("id"), config=described)
    if n_ok + n_err != work.num_rows:
        raise RuntimeError(
            f"the audit of {work.num_rows} images ended with {n_ok} results and {n_err} "
            f"errors; {work.num_rows - n_ok - n_err} are missing: run again with resume=True"
        )
    results, errors = out / "results.parquet", out / "errors.jsonl"
    data = load_report_data(results)
    summary = summarise(data.metrics, data.by)
    layers = layers_used(results)
    report_path = None
    if report:
        report_path = write_report(out, data, summary, described,
                                   _read_errors(errors, 50), n_err)
    seconds = time.perf_counter() - start
    folder.save(status="complete", schema_version=SCHEMA_VERSION, layers=list(layers),
                images=n_ok, failed=n_err, resumed=resumed, seconds=round(seconds, 3),
                nodes=nodes, summary=summary)
    if wandb:
        from interp_core.audit.tracking import log_wandb

        log_wandb(out, results, summary, described, project=wandb_project,
                  max_rows=wandb_rows)
    return AuditResult(out=out, results=results, errors=errors, report=report_path,
                       images=n_ok, failed=n_err, resumed=resumed, seconds=seconds,
                       summary=summary, layers=layers, nodes=nodes)
