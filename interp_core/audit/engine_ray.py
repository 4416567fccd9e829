"""The Ray engine: Ray Data ``map_batches`` over a pool of actors, Parquet parts written by Ray.

Imported only when ``engine="ray"`` is chosen (Ray is the optional extra
``interp-core[ray]``). Each actor is a :class:`~interp_core.audit.worker.BatchWorker` that
builds the model once from the config; batches are the same consecutive slices the local
engine uses, so both engines give the same rows. Ray restarts an actor that dies and retries
its batch (Ray Data's default for actor pools, without limit). Ray's write tasks store each
bundle of rows with :func:`~interp_core.audit.results.write_part` (temporary name, then
rename), so a killed run keeps every part already written and ``resume`` redoes only the
rest.

Cluster: an already-initialised Ray is used as it is; otherwise ``RAY_ADDRESS`` (or a
cluster started with ``ray start`` on this machine) is joined; otherwise a local instance is
started for the run and stopped after it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, Datasink
from ray.data.block import BlockAccessor

from interp_core.audit.config import AuditConfig, thread_env
from interp_core.audit.results import write_part
from interp_core.audit.worker import BatchWorker

BATCHES_PER_BLOCK = 4


class RayBatchWorker(BatchWorker):
    """A :class:`BatchWorker` in a Ray actor: the process is ours, so the thread variables
    of frameworks that read them at start-up (TensorFlow) are set before the model is built.
    Ray itself sets ``OMP_NUM_THREADS`` to the actor's CPUs (OpenMP, MKL and OpenBLAS follow
    it) and the worker holds torch to ``config.threads``."""

    def __init__(self, config: AuditConfig) -> None:
        for name, value in thread_env(config.threads).items():
            os.environ.setdefault(name, value)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        super().__init__(config)


def check_setup(todo: Any, config: AuditConfig, threads: int) -> None:
    """Build the worker once in a Ray task and run it on the first row, before the pool
    starts: a model that may not be loaded (a pickle without ``trust_model``), a layer that
    does not exist or inputs the model cannot take fail here with our own error, which an
    actor pool would bury in its own ("the actor died ...").

    A worker process that dies here (a crash, out of memory) is no setup error: the pool
    restarts its actors and retries their batches, as always.

    Raises
    ------
    Exception
        What building or running the worker raised (the original exception, not Ray's).
    """
    probe = ray.remote(_run_first_row).options(num_cpus=threads, max_retries=1)
    try:
        ray.get(probe.remote(dataclasses.replace(config, overlays=False, device=None),
                             todo.slice(0, 1)))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except ray.exceptions.RayError:
        pass  # the process died (a crash, out of memory): the pool restarts and retries


def _run_first_row(config: AuditConfig, first: Any) -> None:
    worker = RayBatchWorker(config)
    try:
        worker(first)  # the row is discarded: the pool explains it again
    finally:
        worker.close()


class PartsDatasink(Datasink):
    """Writes each bundle of result rows as one atomic part file (on the worker's node; the
    output folder must be shared by all nodes)."""

    def __init__(self, parts_dir: Path, part_size: int) -> None:
        self.parts_dir = str(parts_dir)
        self.part_size = part_size

    def write(self, blocks: Any, ctx: Any) -> int:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables, promote_options="permissive")
        write_part(table, self.parts_dir)
        return table.num_rows

    @property
    def min_rows_per_write(self) -> int:
        return self.part_size

    def get_name(self) -> str:
        return "AuditParts"


def connect() -> bool:
    """Make sure Ray is initialised; True when this call did it (so the run shuts it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    address = os.environ.get("RAY_ADDRESS")
    if address:  # an unreachable cluster is an error, not a reason to run locally
        ray.init(address=address, **quiet)
        return True
    try:  # a cluster started on this machine with `ray start`
        ray.init(address="auto", **quiet)
    except (ConnectionError, RuntimeError):
        ray.init(include_dashboard=False, **quiet)
    return True


def plan_resources(workers: int | None, threads: int | None, gpus: float | None
                   ) -> tuple[int, int, float]:
    """Actors, CPU threads per actor and GPUs per actor for the connected cluster.

    Defaults fill the cluster's CPUs with one-thread actors; an actor gets a GPU (or an
    equal share) when the cluster has GPUs.
    """
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    if threads is None:
        threads = 1 if workers is None else max(1, cpus // workers)
    if workers is None:
        workers = max(1, cpus // threads)
    if gpus is None:
        total = float(resources.get("GPU", 0.0))
        gpus = min(1.0, total / workers) if total > 0 else 0.0
    if workers * threads > cpus:
        warnings.warn(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs but the Ray "
            f"cluster has {cpus}: some actors wait for CPUs (unless the cluster autoscales)",
            RuntimeWarning, stacklevel=3,
        )
    return workers, threads, gpus


def run_ray(todo: Any, config: AuditConfig, parts_dir: Path, *, workers: int | None = None,
            threads: int | None = None, gpus: float | None = None, part_size: int = 1024,
            progress: bool = True, worker_class: type = RayBatchWorker) -> int:
    """Explain every row of ``todo`` on Ray; returns the rows written.

    Parameters
    ----------
    workers : int, optional
        Actors in the pool (default: cluster CPUs // threads).
    threads : int, optional
        CPU threads (and Ray CPUs) per actor; default 1, or an equal share when ``workers``
        is given.
    gpus : float, optional
        GPUs per actor; default one (or a share) when the cluster has GPUs, else none.
    worker_class : type
        The actor: :class:`RayBatchWorker` or a subclass (to trace or extend each batch).
    """
    if todo.num_rows == 0:
        return 0
    started = connect()
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    if not progress:
        data_logger.setLevel(logging.WARNING)
    try:
        workers, threads, gpus = plan_resources(workers, threads, gpus)
        actor_config = dataclasses.replace(
            config, threads=threads, device="cuda" if gpus > 0 else None)
        check_setup(todo, actor_config, threads)
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = progress
        data_context.print_on_execution_start = progress
        bs = config.batch_size
        # Input blocks of a few whole batches: Ray cuts them into the same batches as the
        # local engine (boundaries at multiples of batch_size) with less per-block overhead.
        batches = -(-todo.num_rows // bs)
        workers = min(workers, batches)  # no idle actors on a short list
        rows = bs * max(1, min(BATCHES_PER_BLOCK, batches // workers))
        blocks = [todo.slice(start, rows) for start in range(0, todo.num_rows, rows)]
        dataset = ray.data.from_arrow(blocks).map_batches(
            worker_class,
            fn_constructor_kwargs={"config": actor_config},
            compute=ActorPoolStrategy(size=workers),
            batch_size=bs,
            batch_format="pyarrow",
            num_cpus=threads,
            num_gpus=gpus or None,
        )
        sink = PartsDatasink(parts_dir, part_size)
        # Write tasks take no CPU slot: the actors hold them all, and parts must be written
        # while the run goes on (not after it), so that a killed run keeps them.
        dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    finally:
        data_logger.setLevel(level)
        if started:
            ray.shutdown()
    return todo.num_rows

