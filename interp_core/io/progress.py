"""Progress of a long run, with or without tqdm.

On a terminal: a tqdm bar when tqdm is installed, else one line rewritten in place. Elsewhere
(a log file, a CI job, a pipe): one plain line every ``every`` items and at the end, so that a
log shows how far a run got and how fast it went.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Progress:
    """Counts items done out of ``total``; a context manager.

    Parameters
    ----------
    total : int
        Items to do.
    label : str
        What is being done (``"explaining"``).
    unit : str
        What an item is (``"image"``).
    show : bool
        False prints nothing.
    stream : file, optional
        Where to print (default ``sys.stderr``).
    every : int, optional
        Off a terminal, items between lines (default: about 20 lines per run, at least 1).
    """

    def __init__(self, total: int, label: str, unit: str = "image", *, show: bool = True,
                 stream: TextIO | None = None, every: int | None = None) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.show = show and total > 0
        self.every = every if every is not None else max(1, total // 20)
        self._start = time.monotonic()
        self._printed_at = 0
        self._bar: Any = None
        self._terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.show and self._terminal:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=label, unit=unit, file=self.stream)

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.done += n
        if not self.show:
            return
        if self._bar is not None:
            self._bar.update(n)
        elif self._terminal:
            self._write(self.line(), end="\r")
        elif self.done - self._printed_at >= self.every or self.done >= self.total:
            self._printed_at = self.done
            self._write(self.line())

    def line(self) -> str:
        """``explaining: 40/200 images (20%), 12.5 images/s, about 13 s left``."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        share = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = "" if self.done >= self.total or left == float("inf") else (
            f", about {_duration(left)} left")
        return (f"{self.label}: {self.done}/{self.total} {self.unit}s ({share:.0f}%), "
                f"{rate:.1f} {self.unit}s/s{eta}")

    def close(self) -> None:
        """Finish the bar or the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.show and self._terminal and self.done:
            self._write("")

    def _write(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
