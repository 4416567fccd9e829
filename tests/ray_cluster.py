"""A real multi-node Ray cluster on this machine, for tests and the benchmark.

:class:`LocalCluster` starts a head node (``ray start --head``) and any number of worker
nodes (``ray start --address=...``), each with its own CPUs and its own short ``--temp-dir``
(Ray's socket paths have a length limit), each in its own process group, so that one node
can be stopped alone (:meth:`LocalCluster.stop_node`) and :meth:`LocalCluster.stop` ends
exactly the processes it started, never another Ray on the machine (``ray stop`` would stop
them all).

Ray replaces ``--node-ip-address=127.0.0.1`` by the machine's address (a node must be
reachable by the others); clients connect through ``127.0.0.1:<port>``. The cluster uses
token authentication with its own token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``):
:attr:`LocalCluster.env` holds the variables a driver needs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCluster:
    """Ray nodes started with ``ray start --block`` in their own process groups.

    Parameters
    ----------
    workers : int
        Worker nodes besides the head.
    cpus : int
        CPUs per node (``--num-cpus``).
    timeout : float
        Seconds to wait for the nodes to join.
    """

    def __init__(self, workers: int = 1, cpus: int = 1, timeout: float = 60.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": self.address}
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.started = time.perf_counter()
        try:
            self._start(["--head", f"--port={self.port}", "--include-dashboard=false"], cpus)
            self._wait(1, timeout)
            for _ in range(workers):
                self._start([f"--address={self.address}"], cpus)
            self._wait(1 + workers, timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - self.started

    def _start(self, args: list[str], cpus: int) -> None:
        k = len(self.nodes)
        log = open(self.root / f"node{k}.log", "wb")  # noqa: SIM115 (the child keeps it)
        self.nodes.append(subprocess.Popen(
            [RAY, "start", "--block", *args, f"--num-cpus={cpus}",
             "--node-ip-address=127.0.0.1", f"--temp-dir={self.root}/n{k}",
             "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
            env={**os.environ, **self.env}))
        log.close()

    def alive_nodes(self) -> list[str]:
        """The ids of the cluster's live nodes, the head's first (asked in a fresh
        process)."""
        code = ("import ray; ray.init(logging_level='ERROR', log_to_driver=False); "
                "nodes = [n for n in ray.nodes() if n['Alive']]; "
                "nodes.sort(key=lambda n: 'node:__internal_head__' not in n['Resources']); "
                "print(' '.join(n['NodeID'] for n in nodes))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=60, cwd=self.root)
        return done.stdout.split() if done.returncode == 0 else []

    def _wait(self, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [p.args for p in self.nodes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a Ray node exited while starting: {dead}; logs in "
                                   f"{self.root}")
            if len(self.alive_nodes()) >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{n} Ray node(s) did not come up in {timeout} s; logs in {self.root}")

    def stop_node(self, k: int, grace: float = 0.0) -> None:
        """Stop node ``k`` (0 is the head) and every process it started: SIGTERM, then
        SIGKILL after ``grace`` seconds."""
        proc = self.nodes[k]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            if sig == signal.SIGTERM and grace:
                time.sleep(grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node, worker nodes first, then remove the temp folder."""
        for k in reversed(range(len(self.nodes))):
            self.stop_node(k, grace=1.0 if k == 0 else 0.0)
        end = time.monotonic() + 10
        while (leftover := self.processes()) and time.monotonic() < end:
            for pid in leftover:  # workers that outlive their raylet for a moment
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> list[int]:
        """Live processes of this cluster: their command line names its temp folder, or
        they work in it (Ray's workers, whose command line is ``ray::...``)."""
        found = []
        root = str(self.root)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            ours = root.encode() in cmd or cwd == root or cwd.startswith(root + os.sep)
            if ours and state != "Z":
                found.append(int(entry.name))
        return found

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
