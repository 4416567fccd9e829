"""``interp view``: an audit, an explain run or a training log in the browser, served locally.

>>> from interp_core.view import serve
>>> serve(["audit-out"])                        # doctest: +SKIP
interp view: serving audit audit-out at http://127.0.0.1:8765/ (Ctrl-C stops)

Parts: :mod:`~interp_core.view.folders` (what a folder is), :mod:`~interp_core.view.queries`
(DuckDB over ``results.parquet``), :mod:`~interp_core.view.images` (PNGs of maps and images),
:mod:`~interp_core.view.app` (the Starlette app, and why Starlette). Needs the ``view`` extra
(``pip install 'interp-core[view]'``: DuckDB, Starlette, uvicorn, Pillow); importing this
package imports none of them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import webbrowser
from collections.abc import Sequence
from typing import Any

from interp_core.view.folders import ViewError

__all__ = ["BackgroundServer", "ViewError", "create_app", "require_extras", "serve"]

EXTRAS = ("duckdb", "starlette", "uvicorn", "PIL")
INSTALL = "pip install 'interp-core[view]'"


def require_extras() -> None:
    """Raise :class:`ImportError` naming the install command when an extra is missing."""
    import importlib.util

    missing = [name for name in EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        names = ", ".join("Pillow" if m == "PIL" else m for m in missing)
        raise ImportError(f"interp view needs {names}: {INSTALL}")


def create_app(paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> Any:
    """The Starlette app showing ``paths``; see :func:`interp_core.view.app.create_app`."""
    require_extras()
    from interp_core.view.app import create_app as _create_app

    return _create_app(paths, **kwargs)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ViewError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another "
                        "--port (0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _app_and_server(paths: Sequence[str | os.PathLike[str]], host: str) -> tuple[Any, Any]:
    """The app for ``paths`` (answering only loopback ``Host`` names when bound to loopback)
    and the uvicorn server that runs it."""
    import uvicorn

    from interp_core.view.app import LOOPBACK_HOSTS

    app = create_app(paths, allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    return app, server


def _url(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class BackgroundServer:
    """The app served by uvicorn in a thread (tests, notebooks): ``with BackgroundServer(paths)
    as url: ...``; stopped, and its database closed, on leaving the block.

    Parameters
    ----------
    paths : list of path
        As for :func:`serve`.
    host : str
        Address to bind (default loopback).
    port : int
        0 picks a free port.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.app, self.server = _app_and_server(paths, host)
        try:
            self.sock = _socket(host, port)
        except BaseException:
            self.app.state.viewer.close()  # its DuckDB database and temporary folder
            raise
        self.port = int(self.sock.getsockname()[1])
        self.url = _url(host, self.port)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="interp-view")

    def start(self) -> str:
        self.thread.start()
        import time

        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("interp view: the server did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()
        self.app.state.viewer.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _announce(server: Any, line: str, url: str | None) -> None:
    """Once ``server`` listens: print ``line``, and open ``url`` (if any) in the browser."""
    import time

    while not server.started and not server.should_exit:
        time.sleep(0.02)
    if server.started:
        print(line, flush=True)
        if url is not None:
            webbrowser.open(url)


def serve(paths: Sequence[str | os.PathLike[str]], host: str = "127.0.0.1", port: int = 0,
          open_browser: bool = True) -> int:
    """Serve ``paths`` until Ctrl-C; prints the address first. Returns 0 (also after Ctrl-C).

    Parameters
    ----------
    paths : list of path
        One audit, explain or training-log folder, or two audit folders to compare.
    host : str
        Address to bind; anything but loopback prints a warning (the data is then readable
        by whoever reaches this machine).
    port : int
        0 picks a free port.
    open_browser : bool
        Open the page in the default browser (:mod:`webbrowser`).

    Raises
    ------
    ViewError
        A folder ``interp view`` cannot show, or a port it cannot listen on.
    ImportError
        The ``view`` extra is missing (the message names the install command).
    """
    require_extras()
    app, server = _app_and_server(paths, host)
    viewer = app.state.viewer
    try:
        sock = _socket(host, port)
        url = _url(host, int(sock.getsockname()[1]))
        try:
            if not is_loopback(host):
                print(f"interp view: warning: --host {host} serves the viewed folders to "
                      "every machine that can reach this one, without a password; use "
                      "127.0.0.1 unless you mean it", file=sys.stderr)
            what = f"{viewer.kind} {', '.join(str(s.path) for s in viewer.sources)}"
            line = f"interp view: serving {what} at {url} (Ctrl-C stops)"
            threading.Thread(target=_announce, args=(server, line, url if open_browser
                                                     else None), daemon=True).start()
            server.run(sockets=[sock])
        except KeyboardInterrupt as exc:
            # Ctrl-C is the normal end: uvicorn shuts down, then raises the signal again (or
            # it came before uvicorn was listening). SIGTERM, which the command line maps to
            # a subclass, goes on up.
            if type(exc) is not KeyboardInterrupt:
                raise
        finally:
            sock.close()
        print("interp view: stopped", flush=True)
    finally:
        viewer.close()
    return 0
