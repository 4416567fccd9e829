"""The Ray engine: Ray Data ``map_batches`` over a pool of actors that write the Parquet parts.

Imported only when ``engine="ray"`` is chosen (Ray is the optional extra
``interp-core[ray]``). Each actor is a :class:`~interp_core.audit.worker.BatchWorker` that
builds the model once from the config; batches are the same consecutive slices the local
engine uses, so both engines give the same rows. The actors read the images themselves (the
blocks hold only the manifest's rows) and store their rows with
:func:`~interp_core.audit.results.write_part` (temporary name, then rename) as they go, so a
killed run keeps every part already written and ``resume`` redoes only the rest; only a
one-row status per block goes back through Ray.

Faults: Ray restarts an actor that dies and retries its block (Ray Data's actor pools set
``max_restarts=-1`` and ``max_task_retries=-1``; passing them ourselves goes through
``**ray_remote_args``, deprecated in Ray 2.60 and removed in 2.64). Where Ray Data
gives up on the whole run (a node that leaves takes the blocks it held), the engine submits
what has no part yet again, up to :data:`ATTEMPTS` times. A block done twice (an actor that
died after writing a part, its block retried) gives two rows for those ids in the parts; the
merge keeps one. Each row records the node that explained it (the part-only ``node`` column).

Cluster: ``address`` (``ray_address=``, ``--ray-address``) or ``RAY_ADDRESS`` is joined
(never a Ray of our own: an unreachable cluster is an error); otherwise an already-initialised
Ray is used as it is; otherwise a cluster started with ``ray start`` on this machine is
joined, or a local instance is started for the run and stopped after it. A ``module:attr``
model that lives in the driver's folder travels to the workers in the job's ``runtime_env``
(:func:`model_runtime_env`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import ActorPoolStrategy

from interp_core.audit.config import AuditConfig, is_demo_spec, is_factory, thread_env
from interp_core.audit.results import finished_ids, write_part
from interp_core.audit.worker import BatchWorker

#: The most batches in one input block (one actor call, at most one part file per
#: ``part_size`` rows). Blocks shrink so that each actor gets at least
#: :data:`BLOCKS_PER_ACTOR` of them (a short list still spreads over all nodes). With no
#: result rows going back through Ray, a block costs little (a task and a one-row status),
#: so blocks stay small: an actor that starts late or finishes early idles for less than
#: one block (8 batches of 32 images: about half a second on one CPU).
BATCHES_PER_BLOCK = 8
BLOCKS_PER_ACTOR = 4
#: Runs of the Ray Data pipeline before the engine gives up: the first, then re-submissions
#: of what has no part yet after Ray Data failed (a lost node, lost blocks).
ATTEMPTS = 3
#: Ray's errors that say a process, node or object went away: the work is submitted again.
#: Any other error (the model's own, raised in every retry) ends the run.
LOST = ("ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
        "NodeDiedError", "ObjectLostError", "ObjectFetchTimedOutError", "OwnerDiedError",
        "ObjectReconstructionFailedError", "ObjectReconstructionFailedMaxAttemptsExceededError",
        "ObjectReconstructionFailedLineageEvictedError", "ReferenceCountingAssertionError",
        "WorkerCrashedError", "LocalRayletDiedError", "RaySystemError", "TaskUnschedulableError",
        "GetTimeoutError")


class RayBatchWorker(BatchWorker):
    """A :class:`BatchWorker` in a Ray actor that writes its own parts.

    Each call gets one input block (a few whole batches), explains it batch by batch (the
    same ``batch_size`` slices as the local engine) and writes the rows as atomic part files
    of about ``part_size`` rows (:func:`~interp_core.audit.results.write_part`) in
    ``parts_dir``, which every node must reach (a shared folder). It returns only a
    one-row status (rows written, node), so no result rows travel through Ray's object store
    and no write tasks run.

    The process is ours, so the thread variables of frameworks that read them at start-up
    (TensorFlow) are set before the model is built. Ray itself sets ``OMP_NUM_THREADS`` to the
    actor's CPUs (OpenMP, MKL and OpenBLAS follow it) and the worker holds torch to
    ``config.threads``."""

    raise_setup_errors = False  # check_setup did, on one row

    def __init__(self, config: AuditConfig, parts_dir: str | None = None,
                 part_size: int = 1024) -> None:
        for name, value in thread_env(config.threads).items():
            os.environ.setdefault(name, value)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        super().__init__(config)
        self.node = ray.get_runtime_context().get_node_id()
        self.parts_dir = parts_dir
        self.part_size = max(1, part_size)

    def explain(self, batch: Any) -> Any:
        """The result rows of one batch, with the ``node`` that explained them."""
        rows = BatchWorker.__call__(self, batch)
        at = rows.schema.get_field_index("node")
        return rows.set_column(at, "node", pa.array([self.node] * rows.num_rows, pa.string()))

    def __call__(self, block: Any) -> Any:
        if self.parts_dir is None:
            raise ValueError("RayBatchWorker(parts_dir=None) has nowhere to write its parts: "
                             "give the audit's parts folder")
        size = self.config.batch_size
        pending: list[Any] = []
        count = written = 0
        for start in range(0, block.num_rows, size):
            rows = self.explain(block.slice(start, size))
            pending.append(rows)
            count += rows.num_rows
            if count >= self.part_size:
                write_part(pa.concat_tables(pending), self.parts_dir)
                written += count
                pending, count = [], 0
        if count:
            write_part(pa.concat_tables(pending), self.parts_dir)
            written += count
        return pa.table({"rows": pa.array([written], pa.int64()),
                         "node": pa.array([self.node], pa.string())})


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
    worker.raise_setup_errors = True
    try:
        worker.explain(first)  # the row is discarded: the pool explains it again
    finally:
        worker.close()


def connect(address: str | None = None, runtime_env: dict[str, Any] | None = None) -> bool:
    """Make sure Ray is initialised; True when this call did it (so the run shuts it down).

    ``address`` (else ``RAY_ADDRESS``) names the cluster to join; an unreachable one is an
    error, never a reason to start a Ray of our own. ``runtime_env`` becomes the job's
    (where this call initialises Ray; an initialised Ray keeps its own).

    Raises
    ------
    ConnectionError
        No Ray cluster answers at ``address``.
    ValueError
        Ray is already initialised in this process, connected elsewhere.
    """
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address and address != "auto" and not _same_address(address, current):
            raise ValueError(f"ray_address={address!r}, but this process is already connected "
                             f"to the Ray cluster at {current}: call ray.shutdown() first, "
                             "or leave ray_address out to use that cluster")
        return False
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                             "runtime_env": runtime_env}
    if address:
        _check_reachable(address)  # ray.init would retry for minutes
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:
            raise _unreachable(address, _first_line(exc)) from None
        return True
    try:  # a cluster started on this machine with `ray start`
        ray.init(address="auto", **quiet)
    except (ConnectionError, RuntimeError):
        ray.init(include_dashboard=False, **quiet)
    return True


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A quick TCP check of a ``HOST:PORT`` address (``auto`` and ``ray://`` pass)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or address.startswith("ray://") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise _unreachable(address, str(exc.strerror or exc)) from None


def _unreachable(address: str, why: str) -> ConnectionError:
    return ConnectionError(
        f"no Ray cluster answers at ray_address={address!r} ({why}): start one with "
        "`ray start --head`, or check the address (host:port of the head node's GCS, or "
        "'auto' on a node of the cluster)")


def _same_address(a: str, b: str) -> bool:
    def split(text: str) -> tuple[str, str]:
        host, _, port = text.removeprefix("ray://").rpartition(":")
        return host, port

    (host_a, port_a), (host_b, port_b) = split(a), split(b)
    local = ("127.0.0.1", "localhost", ray.util.get_node_ip_address())
    return port_a == port_b and (host_a == host_b or (host_a in local and host_b in local))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _user_module(name: str, cwd: str) -> str | None:
    """The file or package folder of top-level module ``name`` when it lives under ``cwd``
    (the driver's folder, not an installed package); else None."""
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    finally:
        if added:
            sys.path.remove(cwd)
    if found is None or not found.origin or not os.path.isabs(found.origin):
        return None
    origin = os.path.realpath(found.origin)
    root = os.path.realpath(cwd)
    if not origin.startswith(root + os.sep):
        return None
    if found.submodule_search_locations:  # a package: ship its folder
        return os.path.dirname(origin)
    return origin


def model_runtime_env(config: AuditConfig, staging: str | os.PathLike[str]
                      ) -> tuple[AuditConfig, dict[str, Any] | None]:
    """The config the workers get, and the ``runtime_env`` that carries the model's code.

    A ``module:attr`` spec (or a factory defined in a module) whose top-level module is a
    file or package in the driver's working folder is copied into ``staging``, which becomes
    the job's ``working_dir``; a ``file.py:attr`` spec ships that file and becomes
    ``file:attr``. The workers then import the copy Ray unpacks on their node (their working
    folder), so nodes need not share the driver's folder, and the driver's folder is not put
    on their ``sys.path`` (Ray adds it to every worker's path only without a
    ``working_dir``). Demo models, model files (``.pt``, ``.keras``: on a shared file
    system) and installed modules travel as they are.

    Ray uploads local files only with the job's own ``runtime_env`` (``ray.init``): the
    engine uses it where it connects to Ray itself. In a process that initialised Ray
    already, or a driver run by ``ray job submit`` (whose ``--working-dir`` is the job's),
    the model is imported as it is.
    """
    model = config.model
    found: str | None = None
    shipped = model
    if isinstance(model, str) and not is_demo_spec(model) and not os.path.isfile(model):
        module, sep, attr = model.rpartition(":")
        if sep and module.endswith(".py") and os.path.isfile(module):
            found = os.path.abspath(module)
            shipped = f"{os.path.splitext(os.path.basename(module))[0]}:{attr}"
        elif sep and module:
            found = _user_module(module.split(".")[0], config.cwd)
    elif is_factory(model):
        name = getattr(getattr(model, "func", model), "__module__", "") or ""
        if name not in ("", "__main__"):
            found = _user_module(name.split(".")[0], config.cwd)
    if found is None or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return config, None
    target = os.path.join(staging, os.path.basename(found))
    if os.path.isdir(found):
        shutil.copytree(found, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(found, target)
    return (dataclasses.replace(config, model=shipped, cwd=""),
            {"working_dir": os.fspath(staging)})


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
            progress: bool = True, worker_class: type = RayBatchWorker,
            address: str | None = None) -> int:
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
    part_size : int
        Rows per part file (an actor writes a part when it has this many, and at the end of
        each block).
    worker_class : type
        The actor: :class:`RayBatchWorker` or a subclass (to trace or extend each block);
        built with ``config``, ``parts_dir`` and ``part_size``.
    address : str, optional
        The Ray cluster to join (default ``RAY_ADDRESS``; see :func:`connect`).
    """
    total = todo.num_rows
    if total == 0:
        return 0
    with tempfile.TemporaryDirectory(prefix="interp-audit-env-") as staging:
        shipped, runtime_env = model_runtime_env(config, staging)
        started = connect(address, runtime_env)  # uploads the working_dir
    if started:
        config = shipped
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    if not progress:
        data_logger.setLevel(logging.WARNING)
    try:
        workers, threads, gpus = plan_resources(workers, threads, gpus)
        actor_config = dataclasses.replace(config, threads=threads,
                                           device="cuda" if gpus > 0 else None)
        check_setup(todo, actor_config, threads)
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = progress
        data_context.print_on_execution_start = progress
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _execute(todo, actor_config, parts_dir, workers=workers, threads=threads,
                         gpus=gpus, part_size=part_size, worker_class=worker_class)
                break
            except Exception as exc:
                lost = _lost(exc)
                if lost is None or attempt == ATTEMPTS:
                    raise
                done = finished_ids(parts_dir)
                todo = todo.filter(pc.invert(pc.is_in(todo.column("id"), value_set=done)))
                warnings.warn(
                    f"Ray lost part of the audit ({lost}); submitting the {todo.num_rows} "
                    f"image(s) without a result again (attempt {attempt + 1} of {ATTEMPTS})",
                    RuntimeWarning, stacklevel=2)
                if todo.num_rows == 0:
                    break
                workers = min(workers, plan_resources(None, threads, gpus)[0])
    finally:
        data_logger.setLevel(level)
        if started:
            ray.shutdown()
    return total


def _lost(exc: BaseException) -> str | None:
    """The name of the Ray error in ``exc``'s chain that says something went away."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for cls in type(current).__mro__:
            if cls.__name__ in LOST and cls.__module__.startswith("ray"):
                return cls.__name__
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


def _execute(todo: Any, config: AuditConfig, parts_dir: Path, *, workers: int, threads: int,
             gpus: float, part_size: int, worker_class: type) -> int:
    """One run of the Ray Data pipeline over ``todo``; returns the rows the actors wrote."""
    bs = config.batch_size
    # Input blocks of a few whole batches (boundaries at multiples of batch_size, so the
    # actors cut them into the same batches as the local engine): one actor task each,
    # whose per-task cost (scheduling, object store) is spread over more images.
    batches = -(-todo.num_rows // bs)
    workers = max(1, min(workers, batches))  # no idle actors on a short list
    rows = bs * max(1, min(BATCHES_PER_BLOCK, batches // (workers * BLOCKS_PER_ACTOR)))
    blocks = [todo.slice(start, rows) for start in range(0, todo.num_rows, rows)]
    # from_blocks keeps the blocks as they are and reads their metadata here (from_arrow
    # starts a Ray task, a worker process, for that).
    dataset = ray.data.from_blocks(blocks).map_batches(
        worker_class,
        fn_constructor_kwargs={"config": config, "parts_dir": os.fspath(parts_dir),
                               "part_size": part_size},
        compute=ActorPoolStrategy(size=workers),
        batch_size=None,  # a whole block per call: the actor cuts it into batches
        batch_format="pyarrow",
        zero_copy_batch=True,
        num_cpus=threads,
        num_gpus=gpus or None,
    )
    # The actors write their parts as they go (a killed run keeps them); what comes back is
    # one status row per block.
    return sum(sum(status.column("rows").to_pylist())
               for status in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
