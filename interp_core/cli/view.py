"""``interp view PATH [PATH2] [--port N] [--host H] [--no-browser]``: folders in the browser.

Wired into the ``interp`` command by :func:`add_view_parser`. See :mod:`interp_core.view`.
Importing this module imports none of the ``view`` extra (DuckDB, Starlette, uvicorn).
"""

from __future__ import annotations

import argparse
from typing import Any

from interp_core.cli.errors import CLIError
from interp_core.cli.options import parser_kwargs

HELP = ("look at an audit, an explain run or a training log in the browser (or compare two "
        "audits)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port {text!r} must be a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port {port} must be between 0 (any free port) "
                                         "and 65535")
    return port


def add_view_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``view`` to the ``interp`` sub-commands."""
    view: argparse.ArgumentParser = sub.add_parser("view", help=HELP, **parser_kwargs(HELP))
    view.add_argument("paths", nargs="+", metavar="PATH",
                      help="an audit folder (results.parquet), an interp explain folder "
                           "(results.jsonl) or a training-log folder (log.json); two audit "
                           "folders to compare them")
    view.add_argument("--port", type=_port, default=0,
                      help="port to listen on; 0 picks a free one")
    view.add_argument("--host", default="127.0.0.1",
                      help="address to bind: 127.0.0.1 is this machine only; any other "
                           "prints a warning")
    view.add_argument("--no-browser", action="store_true",
                      help="print the address without opening a browser")
    view.set_defaults(func=cmd_view)
    return view


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the folders until Ctrl-C."""
    from interp_core.view import ViewError, require_extras, serve

    try:
        require_extras()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    try:
        return serve(args.paths, host=args.host, port=args.port,
                     open_browser=not args.no_browser)
    except ViewError as exc:
        raise CLIError(str(exc)) from None
