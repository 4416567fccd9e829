"""What the ``interp`` command raises for its user, how a stop signal reaches it, and how a
command's outcome becomes an exit status (shared by ``interp`` and ``python -m
interp_core.audit``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C raises :class:`KeyboardInterrupt`, so
    that the same clean-up runs (files closed, whole lines only). Exit status ``128 + 15``."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere
    signals cannot be handled and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command: Callable[[], int | None], debug: bool = False) -> int:
    """Run one command as the ``interp`` entry points do; returns the exit status.

    Parameters
    ----------
    command : callable
        The parsed command, called without arguments; returns its status (None means 0).
    debug : bool
        Let errors raise with their traceback instead of printing one line.

    Returns
    -------
    int
        The command's status; ``128 + 15`` after SIGTERM and 130 after Ctrl-C (both with the
        same clean-up); 2 after any other error, printed as one line on stderr.
    """
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise on a terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with sigterm_as_interrupt():
            return int(command() or 0)
    except Terminated:
        print("interp: terminated (SIGTERM)", file=sys.stderr)
        return 128 + int(Terminated.signum)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message = cli_message(exc)
        print(f"interp: error: {message}", file=sys.stderr)
        return 2


def cli_message(exc: BaseException) -> str:
    """The first line of an error, in the command line's words where the error has them
    (``cli_message()``: flags such as ``--resume`` instead of ``resume=True``)."""
    phrase = getattr(exc, "cli_message", None)
    text = str(phrase() if callable(phrase) else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
