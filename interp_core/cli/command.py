"""The ``interp`` command: demo gallery, explaining files, auditing datasets, listings.

    interp demo [--backend torch|tensorflow|jax] [--out DIR] [--overwrite]
    interp explain MODEL FILES... --method gradcam --layer NAME [--target N] [--out DIR]
                   [--resume | --overwrite] [--channels C] [--trust-model] [--weights FILE]
    interp audit MODEL SOURCE --out DIR [--engine local|ray] [--resume]
    interp view PATH [PATH2] [--port N] [--host H] [--no-browser]
    interp backends [--verbose] | methods | layers MODEL

Errors print one line in the command line's words and exit with status 2 (``--debug`` shows
the traceback). ``explain`` never stops for a bad file: it lists each unreadable file with its
reason (on stderr and in ``OUT/errors.jsonl``) and exits 2 only when nothing was explained.
Ctrl-C and SIGTERM stop it with whole lines in ``OUT/results.jsonl``; ``--resume`` goes on
from there. Files, models and output folders all go through :mod:`interp_core.io`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from interp_core.api import methods
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import backends, get_backend
from interp_core.cli.audit import add_audit_parser
from interp_core.cli.demo import cmd_demo
from interp_core.cli.errors import CLIError, run_command
from interp_core.cli.listing import backend_rows, format_rows
from interp_core.cli.options import (
    add_input_options,
    add_method_option,
    add_model_options,
    parser_kwargs,
    positive_int,
)
from interp_core.cli.records import JsonLinesWriter, read_records
from interp_core.cli.summary import layer_phrase
from interp_core.cli.view import add_view_parser
from interp_core.io.errors import FileReadError
from interp_core.io.images import IMAGE_SUFFIXES, find_files
from interp_core.io.models import load_model
from interp_core.io.outputs import OutputPlan, open_output, save_array, save_whole
from interp_core.io.preprocess import LoadedInput, input_format, parse_numbers, parse_size
from interp_core.io.progress import Progress
from interp_core.io.volumes import ARRAY_SUFFIXES, is_array_file, middle_slice_map
from interp_core.methods import method_class
from interp_core.viz import overlay, save_png

__all__ = ["CLIError", "build_parser", "load_model", "main"]

RESULTS = "results.jsonl"  # one line per explained image
ERRORS = "errors.jsonl"  # one line per unreadable file, rewritten by each run
EXPLAIN_PLAN = OutputPlan("explain", "explain.json", files=(RESULTS, ERRORS),
                          results=(RESULTS,))


# -- commands ----------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    model = load_model(args.model, trust=args.trust_model, weights=args.weights)
    backend = get_backend(args.backend if args.backend else model)
    fmt = input_format(backend, model, size=parse_size(args.size), channels=args.channels,
                       mean=parse_numbers(args.mean, "mean"), std=parse_numbers(args.std, "std"))
    found = find_files(args.images, (*IMAGE_SUFFIXES, *ARRAY_SUFFIXES))
    cls = method_class(args.method)  # a typo fails here, before anything is written
    cam = cls(model, args.layer, backend=backend.name)
    tag = cls.name.replace("+", "p")
    names = unique_names(found.files)
    planned = [f"{name}_{tag}.png" for name in names]
    planned += [f"{name}_{tag}.npy" for file, name in zip(found.files, names, strict=True)
                if is_array_file(file)]
    identity = {"method": cls.name, "backend": backend.name, "layer": args.layer,
                "size": list(fmt.size), "channels": fmt.channels, "mean": list(fmt.mean),
                "std": list(fmt.std), "target": args.target}
    folder = open_output(args.out, EXPLAIN_PLAN, planned=planned, identity=identity,
                         resume=args.resume, overwrite=args.overwrite)
    out = folder.path
    todo = list(zip(found.files, names, strict=True))
    if args.resume:
        done = _finished_files(out / RESULTS, cls.name, backend.name)
        todo = [(file, name) for file, name in todo if _file_key(file) not in done]
    already = len(found.files) - len(todo)
    unreadable = written = 0
    used_layers: list[str] = []
    try:
        with (JsonLinesWriter(out / RESULTS, append=args.resume) as results,
              JsonLinesWriter(out / ERRORS, append=False) as errors,
              Progress(len(todo), "explaining", show=not args.no_progress) as progress):
            for path, reason in found.problems:
                unreadable += 1
                _report_unreadable(errors, path, reason)
            try:
                for chunk in _chunks(todo, args.batch_size):
                    loaded, kept = [], []
                    for file, name in chunk:
                        try:
                            loaded.append(fmt.load(file))
                            kept.append((file, name))
                        except FileReadError as exc:
                            unreadable += 1
                            _report_unreadable(errors, file, exc.reason)
                    if loaded:
                        batch = fmt.normalise(np.stack([item.pixels for item in loaded]))
                        exp = cam.explain(to_backend_layout(batch, backend, model), args.target)
                        used_layers = list(exp.layers)
                        for i, (file, name) in enumerate(kept):
                            target = _write_outputs(out, name, tag, loaded[i], exp.maps[i],
                                                    args.alpha)
                            results.write({
                                "file": str(file), "target": int(exp.targets[i]),
                                "score": float(exp.scores[i]) if len(exp.scores) else None,
                                "method": cls.name,
                                "layer": ",".join(exp.layers), "backend": backend.name,
                                "overlay": str(target),
                            })
                            written += 1
                    progress.update(len(chunk))
            except KeyboardInterrupt:
                print(f"interp: stopped after {written} image(s) in this run; {RESULTS} holds "
                      "whole lines only; rerun with --resume to continue", file=sys.stderr)
                raise
    except BaseException:
        if written == 0:
            folder.abandon()
        raise
    if written == 0 and already == 0:
        folder.abandon()
        raise CLIError(f"nothing was explained: none of the {len(found.files)} files could be "
                       f"read (reasons in {out / ERRORS})")
    folder.save(status="complete")
    resumed = f", {already} already done" if args.resume else ""
    print(f"interp explain: {written} image(s) explained with {cls.name} at "
          f"{layer_phrase(used_layers, args.layer)} on {backend.name}, {unreadable} skipped "
          f"(unreadable; listed in {ERRORS}){resumed}; wrote {out.resolve()}")
    return 0


def _report_unreadable(errors: JsonLinesWriter, file: Path, reason: str) -> None:
    print(f"interp: skipped {str(file)!r}: {reason}", file=sys.stderr)
    errors.write({"file": str(file), "error": reason})


def _write_outputs(out: Path, name: str, tag: str, item: LoadedInput, heatmap: np.ndarray,
                   alpha: float) -> Path:
    """The overlay PNG (a volume's middle slice) and, for array inputs, the map as ``.npy``."""
    picture = heatmap if heatmap.ndim == 2 else middle_slice_map(heatmap)
    target = out / f"{name}_{tag}.png"
    save_whole(target, lambda p: save_png(p, overlay(item.display, picture, alpha=alpha)))
    if item.is_array:
        save_array(out / f"{name}_{tag}.npy", heatmap)
    return target


def _chunks(items: Sequence[tuple[Path, str]], size: int) -> list[Sequence[tuple[Path, str]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _file_key(file: str | Path) -> str:
    return str(Path(file).resolve())


def _finished_files(results: Path, method: str, backend: str) -> set[str]:
    """The files ``results`` lists as explained, checked to come from the same method and
    backend (a results file that mixes methods would be silently wrong)."""
    records, dropped = read_records(results)
    if dropped:
        print(f"interp: dropped {dropped} incomplete line(s) from {results}", file=sys.stderr)
    for record in records:
        if (record.get("method"), record.get("backend")) != (method, backend):
            raise CLIError(
                f"{results} holds results of method {record.get('method')!r} on backend "
                f"{record.get('backend')!r}; resume with those, or choose another --out"
            )
    return {_file_key(r["file"]) for r in records if "file" in r}


def unique_names(files: Sequence[Path]) -> list[str]:
    """One output name per file: its stem, or ``stem-<8 hex of its path>`` where stems
    collide (compared case-insensitively, as macOS and Windows file systems do).

    ``a/x.png``, ``b/x.png`` and ``c/x_1.png`` give ``x-1f0c...``, ``x-9ab2...`` and ``x_1``.
    """
    stems = [_stem(f) for f in files]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    names = []
    for file, stem in zip(files, stems, strict=True):
        if counts[stem.lower()] == 1:
            names.append(stem)
        else:
            digest = hashlib.sha1(_file_key(file).encode("utf-8")).hexdigest()[:8]
            names.append(f"{stem}-{digest}")
    taken: set[str] = set()
    for i, name in enumerate(names):  # a stem that looks like a hashed name: rare, settled
        while name.lower() in taken:
            name += "_"
        taken.add(name.lower())
        names[i] = name
    return names


def _stem(file: Path) -> str:
    name = file.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else file.stem


def cmd_backends(args: argparse.Namespace) -> int:
    if args.verbose:
        for line in format_rows(backend_rows()):
            print(line)
        return 0
    for name in backends():
        print(name)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    for name in methods():
        print(name)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    model = load_model(args.model, trust=args.trust_model, weights=args.weights)
    backend = get_backend(args.backend if args.backend else model)
    for name in backend.layer_names(model):
        print(name)
    return 0


# -- argument parsing --------------------------------------------------------------------
MODEL_HELP = ("file.keras / .h5 / .hdf5, file.pt2 (torch.export), file.pt (a pickled module: "
              "needs --trust-model), or module:attr / file.py:attr (a model or a factory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", **parser_kwargs(
        "CAM / Grad-CAM explanations of image, signal and volume models."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    help_ = "explain generated images with the bundled model"
    demo = sub.add_parser("demo", help=help_, **parser_kwargs(help_))
    demo.add_argument("--backend", default=None,
                      help=f"one of: {', '.join(backends())} (default: the first installed)")
    demo.add_argument("--out", default="interp-demo", help="output folder")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the files an earlier demo in --out wrote (only those)")
    demo.set_defaults(func=cmd_demo)

    help_ = "write an overlay per image (or volume) file, and results.jsonl"
    explain = sub.add_parser("explain", help=help_, **parser_kwargs(help_))
    explain.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    explain.add_argument("images", nargs="+", metavar="FILES",
                         help="image, .npy/.npz, NIfTI or DICOM files, or folders of them")
    add_method_option(explain)
    explain.add_argument("--layer", default=None,
                         help="layer name (interp layers MODEL lists them; default: the last "
                              "spatial layer)")
    explain.add_argument("--target", type=int, default=None,
                         help="class to explain (default: each file's top-1)")
    explain.add_argument("--out", default="interp-out", help="output folder")
    add_input_options(explain, "224")
    add_model_options(explain)
    explain.add_argument("--batch-size", type=positive_int, default=16)
    explain.add_argument("--alpha", type=float, default=0.5, help="heatmap weight")
    explain.add_argument("--overwrite", action="store_true",
                         help="replace the files an earlier explain in --out wrote (only "
                              "those)")
    explain.add_argument("--resume", action="store_true",
                         help=f"skip the files already in OUT/{RESULTS} and add the rest")
    explain.add_argument("--no-progress", action="store_true", help="print no progress")
    explain.set_defaults(func=cmd_explain)

    add_audit_parser(sub)
    add_view_parser(sub)

    help_ = "installed backends"
    listing = sub.add_parser("backends", help=help_, **parser_kwargs(help_))
    listing.add_argument("--verbose", "-v", action="store_true",
                         help="with distribution, version and capabilities (imports each "
                              "backend's framework)")
    listing.set_defaults(func=cmd_backends)
    help_ = "available methods"
    sub.add_parser("methods", help=help_, **parser_kwargs(help_)).set_defaults(
        func=cmd_methods)
    help_ = "layer names of a model"
    layers = sub.add_parser("layers", help=help_, **parser_kwargs(help_))
    layers.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    add_model_options(layers)
    layers.set_defaults(func=cmd_layers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("interp-core")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args), debug=args.debug)
