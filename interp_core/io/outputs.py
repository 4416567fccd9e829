"""Output folders that a run owns through its manifest.

A run (``interp explain``, ``interp audit``, ``interp demo``) writes a manifest into its
folder (``explain.json``, ``audit.json``, ``demo.json``) *before* any other file. The manifest
lists what the run writes: files by name, and the files of its sub-folders by pattern
(``overlays/*-??????????.png``). That list is all the run owns:

- ``overwrite`` removes the files an earlier run's manifest lists, and nothing else;
- a file in the way that no manifest lists (yours) is never replaced or removed: the run
  refuses to start, and says which file and why, without suggesting ``--overwrite``;
- a run that stops before its first result removes the empty files it made, and an earlier
  run without results (a typo in the layer name, nothing readable) never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.io.errors import InputError

MANIFEST_KEY = "interp_outputs"


class OutputFolderError(InputError):
    """An output folder that a run may not write into as asked."""


@dataclass(frozen=True)
class OutputPlan:
    """What one kind of run writes into its folder.

    Attributes
    ----------
    command : str
        ``"explain"``, ``"audit"`` or ``"demo"`` (used in messages and in the manifest).
    manifest : str
        The manifest's file name (``"explain.json"``).
    files : tuple of str
        Files the run always writes, relative to the folder.
    patterns : tuple of str
        ``fnmatch`` patterns of the files it writes in its sub-folders (``"parts/*"``).
    results : tuple of str
        Files or folders whose non-empty presence means the run has results to keep.
    legacy_files : tuple of str
        What a manifest of an earlier release (one without a file list) owns.
    """

    command: str
    manifest: str
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    legacy_files: tuple[str, ...] = ()


@dataclass
class OutputFolder:
    """An output folder opened for a run (:func:`open_output`).

    ``record`` is the manifest's content; :meth:`save` writes it (atomically), with the
    owned file list under ``interp_outputs``.
    """

    path: Path
    plan: OutputPlan
    record: dict[str, Any]
    owned: list[str] = field(default_factory=list)
    created: bool = False
    _had_results: bool = False

    @property
    def manifest(self) -> Path:
        return self.path / self.plan.manifest

    def own(self, names: Iterable[str]) -> None:
        """Add files (relative names) to what the run owns, and save the manifest, before
        the files are written."""
        new = [n for n in names if n not in set(self.owned)]
        if new:
            self.owned.extend(new)
            self.save()

    def save(self, **fields: Any) -> None:
        """Merge ``fields`` into the record and write the manifest atomically."""
        self.record.update(fields)
        self.record[MANIFEST_KEY] = {"command": self.plan.command, "files": self.owned,
                                     "patterns": list(self.plan.patterns)}
        partial = self.manifest.with_name(f".tmp-{self.plan.manifest}")
        partial.write_text(json.dumps(self.record, indent=1, sort_keys=True, default=str),
                           encoding="utf-8")
        os.replace(partial, self.manifest)

    def abandon(self) -> None:
        """The run stopped before its first result: remove the empty files it made (and the
        manifest when nothing it owns is left), so that nothing blocks a corrected rerun."""
        if self._had_results or _has_results(self.path, self.plan):
            return
        for name in self.owned:
            path = self.path / name
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
        _remove_empty_folders(self.path, self.plan)
        if not any((self.path / n).exists() for n in self.owned):
            self.manifest.unlink(missing_ok=True)
            if self.created:
                with contextlib.suppress(OSError):  # something else is there now
                    self.path.rmdir()


def open_output(out: str | os.PathLike[str], plan: OutputPlan, *, planned: Sequence[str] = (),
                identity: dict[str, Any] | None = None, resume: bool = False,
                overwrite: bool = False) -> OutputFolder:
    """Open ``out`` for a run: check what is there, clear what ``overwrite`` may clear, and
    write the manifest.

    Parameters
    ----------
    out : path
        The output folder (created if missing).
    plan : OutputPlan
        What this kind of run writes.
    planned : sequence of str
        Further files this run will write (e.g. the overlay names of ``explain``).
    identity : dict, optional
        The settings that decide the results; a resumed run must have the same.
    resume, overwrite : bool
        Continue the earlier run / replace its files.

    Raises
    ------
    OutputFolderError
        ``resume`` with ``overwrite``; earlier results without either; a file in the way that
        no manifest lists; ``resume`` with other settings than the earlier run's.
    """
    path = Path(out)
    if resume and overwrite:
        raise OutputFolderError(
            "resume=True keeps the results in the output folder and overwrite=True replaces "
            "them: pass one of the two",
            cli="--resume keeps the results in --out and --overwrite replaces them: pass one "
                "of the two")
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"the output folder {str(path)!r} is a file; choose a folder",
                                cli=f"--out {str(path)!r} is a file; choose a folder")
    previous = read_manifest(path, plan)
    earlier = owned_files(path, plan, previous) if previous is not None else set()
    wanted = [*plan.files, *planned]
    foreign = [n for n in wanted if (path / n).exists() and n not in earlier]
    foreign += [n for n in _pattern_files(path, plan.patterns) if n not in earlier]
    if foreign:
        raise OutputFolderError(
            f"{str(path / foreign[0])!r} is in the way and no earlier interp {plan.command} run "
            f"in {str(path)!r} lists it in {plan.manifest}; interp only replaces files its own "
            f"runs wrote: choose another output folder, or move {len(foreign)} file(s) away "
            f"yourself",
            cli=f"{str(path / foreign[0])!r} is in the way and no earlier `interp "
                f"{plan.command}` in {str(path)!r} lists it in {plan.manifest}; interp only "
                f"replaces files its own runs wrote: choose another --out, or move "
                f"{len(foreign)} file(s) away yourself")
    has_results = previous is not None and _has_results(path, plan)
    if has_results and not (resume or overwrite):
        raise OutputFolderError(
            f"{str(path)!r} holds the results of an earlier {plan.command} run "
            f"({plan.manifest}); pass resume=True to continue it or overwrite=True to "
            "replace its files (only the files it lists)",
            cli=f"--out {str(path)!r} holds the results of an earlier `interp {plan.command}` "
                f"({plan.manifest}); pass --resume to continue it or --overwrite to replace "
                "its files (only the files it lists)")
    record: dict[str, Any] = {}
    owned: list[str] = []
    if previous is not None and resume and has_results:
        _check_identity(path, plan, previous.get("identity"), identity)
        record = previous
        owned = sorted(earlier - _pattern_files(path, plan.patterns))
    elif previous is not None:
        _remove(path, plan, earlier)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    folder = OutputFolder(path, plan, record, owned, created, has_results)
    if identity is not None:
        folder.record["identity"] = identity
    folder.own(n for n in wanted if n not in owned)
    folder.save()
    return folder


def read_manifest(path: Path, plan: OutputPlan) -> dict[str, Any] | None:
    """The manifest of an earlier run of ``plan``'s kind in ``path``, or None.

    Raises
    ------
    OutputFolderError
        A manifest that is not ours (not JSON, or written by something else).
    """
    manifest = path / plan.manifest
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not (MANIFEST_KEY in record or (
            plan.legacy_files and "identity" in record)):
        raise OutputFolderError(
            f"{str(manifest)!r} is not the manifest of an interp {plan.command} run; interp "
            "will not write beside it: choose another output folder",
            cli=f"{str(manifest)!r} is not the manifest of an `interp {plan.command}` run; "
                "choose another --out")
    return record


def owned_files(path: Path, plan: OutputPlan, record: dict[str, Any]) -> set[str]:
    """The files (relative names) an earlier run's manifest owns, existing or not: those it
    lists, those under its patterns that exist, and the manifest itself."""
    listing = record.get(MANIFEST_KEY)
    if isinstance(listing, dict):
        files = {str(n) for n in listing.get("files", [])}
        patterns = tuple(str(p) for p in listing.get("patterns", []))
    else:  # a manifest of an earlier release
        files, patterns = set(plan.legacy_files), plan.patterns
    return files | _pattern_files(path, patterns) | {plan.manifest}


def _pattern_files(path: Path, patterns: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        folder = path / Path(pattern).parent
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            name = child.relative_to(path).as_posix()
            if child.is_file() and fnmatch.fnmatchcase(name, pattern):
                found.add(name)
    return found


def _has_results(path: Path, plan: OutputPlan) -> bool:
    for name in plan.results:
        target = path / name
        if target.is_dir() and any(target.iterdir()):
            return True
        if target.is_file() and target.stat().st_size > 0:
            return True
    return False


def _remove(path: Path, plan: OutputPlan, names: Iterable[str]) -> None:
    """Remove the owned files, then the plan's sub-folders where they are left empty."""
    for name in sorted(names):
        target = path / name
        if target.is_file() or target.is_symlink():
            target.unlink()
    _remove_empty_folders(path, plan)


def _remove_empty_folders(path: Path, plan: OutputPlan) -> None:
    for folder in sorted({Path(p).parent for p in plan.patterns if Path(p).parent != Path()},
                         key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):  # missing, or holds files that are not ours
            (path / folder).rmdir()


def _check_identity(path: Path, plan: OutputPlan, before: Any, now: Any) -> None:
    if now is None or not isinstance(before, dict):
        return
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise OutputFolderError(
            f"resume: the settings differ from the {plan.command} run in {str(path)!r} "
            f"({detail}); use the same settings, or overwrite=True to start again",
            cli=f"--resume: the settings differ from the `interp {plan.command}` in "
                f"{str(path)!r} ({detail}); use the same options, or --overwrite to start "
                "again")


def save_whole(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write a file through a temporary name in its folder and a rename, so that a run
    stopped mid-write leaves no torn file under the final name.

    Parameters
    ----------
    path : path
        The final name (parent folders are created).
    write : callable
        ``write(temporary_path)`` writes the content (it must not rely on the suffix).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".tmp-{final.name}")
    try:
        write(partial)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def save_array(path: str | os.PathLike[str], values: np.ndarray) -> Path:
    """``values`` as a float32 ``.npy`` file, written whole (:func:`save_whole`)."""

    def write(partial: Path) -> None:
        with open(partial, "wb") as handle:  # a handle: np.save would append ".npy"
            np.save(handle, np.asarray(values, dtype=np.float32), allow_pickle=False)

    return save_whole(path, write)
