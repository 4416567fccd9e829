"""The errors of the door between a run and the outside world (files, models, folders).

Each is a ``ValueError`` whose message names the bad value and what would be right, in the
Python API's words (``trust=True``). Where the command line spells the fix differently
(``--trust-model``), the error carries that phrasing too: :meth:`InputError.cli_message`,
which ``interp`` prints instead of the Python message.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input from the user: a file, a model spec, an output folder.

    Parameters
    ----------
    message : str
        The error in the Python API's words.
    cli : str, optional
        The same error in the command line's words (flags, commands); default ``message``.
    """

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self._cli = cli

    def cli_message(self) -> str:
        """The message as the ``interp`` command prints it."""
        return self._cli if self._cli is not None else str(self)


class FileReadError(InputError):
    """A file that cannot be read as an input (image, mask, array, volume).

    ``path`` is the file and ``reason`` says why in a few words (the line written to
    ``errors.jsonl``); the message names both.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read {str(path)!r}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ModelLoadError(InputError):
    """A model spec or model file that cannot be loaded (or may not be, without trust)."""
