"""The ``interp`` command: demo gallery, explaining image files, and listings.

    interp demo [--backend torch|tensorflow|jax] [--out DIR] [--overwrite]
    interp explain MODEL IMAGES... --method gradcam --layer NAME [--target N] [--out DIR]
                   [--resume | --overwrite]
    interp audit MODEL SOURCE --out DIR [--engine local|ray] [--resume]
    interp backends [--verbose] | methods | layers MODEL

Errors print one line and exit with status 2 (``--debug`` shows the traceback). ``explain``
never stops for a bad image file: it lists each unreadable file with its reason (on stderr and
in ``OUT/errors.jsonl``) and fails only when no file could be read. Ctrl-C and SIGTERM stop it
with whole lines in ``OUT/results.jsonl``; ``--resume`` goes on from there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.api import methods
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import backends, get_backend
from interp_core.cli.audit import add_audit_parser
from interp_core.cli.errors import CLIError, run_command
from interp_core.cli.gallery import GalleryRow, write_gallery
from interp_core.cli.imageio import (
    Preprocess,
    UnreadableImageError,
    batches,
    find_images,
    parse_size,
    parse_triple,
)
from interp_core.cli.listing import backend_rows, format_rows
from interp_core.cli.models import load_model
from interp_core.cli.records import JsonLinesWriter, read_records
from interp_core.cli.summary import layer_phrase
from interp_core.methods import method_class
from interp_core.methods.postprocess import resize_bilinear
from interp_core.viz import overlay, save_png

__all__ = ["CLIError", "build_parser", "load_model", "main"]

DEMO_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                "gradcam-guidedgrads", "eigencam", "kpcacam", "cam", "scorecam", "ablationcam",
                "guidedgradcam", "guidedbackprop", "saliency", "smoothgrad",
                "integratedgradients", "inputxgradient", "fullgrad")
DEMO_IMAGES = 8
DEMO_SEED = 7  # held out: the training script draws from seeds 1000 and 2000
DISPLAY = 192  # pixels of the gallery pictures
RESULTS = "results.jsonl"  # one line per explained image
ERRORS = "errors.jsonl"  # one line per unreadable file, rewritten by each run


# -- commands ----------------------------------------------------------------------------
def _prepare_out(out: Path, outputs: Sequence[Path], overwrite: bool,
                 resumable: bool = False) -> None:
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        also = " or --resume to add the images not done yet" if resumable else ""
        raise CLIError(
            f"{len(existing)} output file(s) already exist in {out} (e.g. {existing[0].name}); "
            f"pass --overwrite to replace them{also}"
        )
    out.mkdir(parents=True, exist_ok=True)


def _display(image: np.ndarray, heatmap: np.ndarray | None = None) -> np.ndarray:
    """An image (and overlay) upscaled for the gallery: ``(DISPLAY, DISPLAY, 3)`` uint8."""
    big = resize_bilinear(np.moveaxis(image, -1, 0), (DISPLAY, DISPLAY))
    big = np.clip(np.moveaxis(big, 0, -1), 0, 1)
    if heatmap is None:
        return (big * 255).round().astype(np.uint8)
    return overlay(big, resize_bilinear(heatmap[None], (DISPLAY, DISPLAY))[0], alpha=0.5)


def cmd_demo(args: argparse.Namespace) -> int:
    from interp_core.datasets import make_shapes
    from interp_core.datasets.demo import CLASSES, FC, LAYER, demo_model

    start = time.perf_counter()
    model = demo_model(args.backend)
    backend = get_backend(model) if args.backend is None else get_backend(args.backend)
    out = Path(args.out)
    chosen = [m for m in DEMO_METHODS if m in methods()]
    _prepare_out(out, [out / "index.html"], args.overwrite)
    data = make_shapes(DEMO_IMAGES, seed=DEMO_SEED)
    x = to_backend_layout(data.images, backend)
    rows = [GalleryRow(f"image_{i:02d}.png", "", {}) for i in range(DEMO_IMAGES)]
    for i in range(DEMO_IMAGES):
        save_png(out / rows[i].image, _display(data.images[i]))
    for name in chosen:
        options = {"fc": FC} if name == "cam" else {}
        exp = method_class(name)(model, LAYER, backend=backend.name, **options).explain(x)
        for i in range(DEMO_IMAGES):
            file = f"image_{i:02d}_{name.replace('+', 'p')}.png"
            save_png(out / file, _display(data.images[i], exp.maps[i]))
            rows[i].overlays[name] = file
        if name == "gradcam":
            for i, row in enumerate(rows):
                rows[i] = GalleryRow(
                    row.image,
                    f"true: {CLASSES[data.labels[i]]}; predicted: {CLASSES[exp.targets[i]]} "
                    f"(logit {exp.scores[i]:.2f})", row.overlays)
    index = write_gallery(
        out / "index.html", rows, "interp-core demo",
        f"Bundled shapes classifier, backend {backend.name}, layer {LAYER}; each overlay "
        "explains the predicted class.",
    )
    elapsed = time.perf_counter() - start
    print(f"interp demo: {len(chosen)} methods x {DEMO_IMAGES} images on backend "
          f"{backend.name} in {elapsed:.1f} s")
    print(f"wrote {index.resolve()}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise CLIError("--resume keeps the results in --out and --overwrite replaces them: "
                       "pass one of the two")
    model = load_model(args.model)
    backend = get_backend(args.backend if args.backend else model)
    files = find_images(args.images)
    prep = Preprocess(parse_size(args.size), parse_triple(args.mean, "mean"),
                      parse_triple(args.std, "std"))
    cls = method_class(args.method)
    cam = cls(model, args.layer, backend=backend.name)
    out = Path(args.out)
    tag = cls.name.replace("+", "p")
    todo = list(zip(files, _unique_names(files), strict=True))
    if args.resume:
        out.mkdir(parents=True, exist_ok=True)
        done = _finished_files(out / RESULTS, cls.name, backend.name)
        todo = [(file, name) for file, name in todo if _file_key(file) not in done]
    else:
        _prepare_out(out, [out / f"{name}_{tag}.png" for _, name in todo] + [out / RESULTS],
                     args.overwrite, resumable=True)
    already = len(files) - len(todo)
    unreadable = written = 0
    used_layers: list[str] = []
    chunks = list(batches(todo, args.batch_size))
    with (JsonLinesWriter(out / RESULTS, append=args.resume) as results,
          JsonLinesWriter(out / ERRORS, append=False) as errors):
        try:
            for chunk in _progress(chunks, len(todo) > args.batch_size):
                loaded, kept = [], []
                for file, name in chunk:
                    try:
                        loaded.append(prep.load(file))
                        kept.append((file, name))
                    except UnreadableImageError as exc:
                        unreadable += 1
                        print(f"interp: skipped {str(file)!r}: {exc.reason}", file=sys.stderr)
                        errors.write({"file": str(file), "error": exc.reason})
                if not loaded:
                    continue
                images = np.stack(loaded)
                exp = cam.explain(to_backend_layout(prep.normalise(images), backend),
                                  args.target)
                used_layers = list(exp.layers)
                for i, (file, name) in enumerate(kept):
                    target = out / f"{name}_{tag}.png"
                    _save_png_whole(target, overlay(images[i], exp.maps[i], alpha=args.alpha))
                    results.write({
                        "file": str(file), "target": int(exp.targets[i]),
                        "score": float(exp.scores[i]), "method": cls.name,
                        "layer": ",".join(exp.layers), "backend": backend.name,
                        "overlay": str(target),
                    })
                    written += 1
        except KeyboardInterrupt:
            print(f"interp: stopped after {written} image(s) in this run; {RESULTS} holds "
                  "whole lines only; rerun with --resume to continue", file=sys.stderr)
            raise
    if written == 0 and already == 0 and unreadable > 0:
        raise CLIError(f"none of the {len(files)} files could be read as an image "
                       f"(reasons in {out / ERRORS})")
    resumed = f", {already} already done" if args.resume else ""
    print(f"interp explain: {written} image(s) explained with {cls.name} at "
          f"{layer_phrase(used_layers, args.layer)} on {backend.name}, {unreadable} skipped "
          f"(unreadable; listed in {ERRORS}){resumed}; wrote {out.resolve()}")
    return 0


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


def _save_png_whole(path: Path, image: np.ndarray) -> None:
    """``save_png`` through a temporary file, so that an interrupted write leaves no torn
    picture under the final name."""
    partial = path.with_name(path.name + ".partial")
    try:
        save_png(partial, image)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _unique_names(files: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for f in files:
        count = seen.get(f.stem, 0)
        seen[f.stem] = count + 1
        names.append(f.stem if count == 0 else f"{f.stem}_{count}")
    return names


def _progress(items: Sequence[Any], show: bool) -> Any:
    if not show:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="explaining", unit="batch")


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
    model = load_model(args.model)
    backend = get_backend(args.backend if args.backend else model)
    for name in backend.layer_names(model):
        print(name)
    return 0


# -- argument parsing --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="CAM / Grad-CAM explanations.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="explain generated images with the bundled model")
    demo.add_argument("--backend", choices=None, help="torch, tensorflow or jax")
    demo.add_argument("--out", default="interp-demo", help="output folder (./interp-demo)")
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(func=cmd_demo)

    explain = sub.add_parser("explain", help="write overlays for image files")
    explain.add_argument("model", help="file.keras, file.pt (torch.save(model)) or module:attr")
    explain.add_argument("images", nargs="+", help="image files or folders")
    explain.add_argument("--method", default="gradcam")
    explain.add_argument("--layer", default=None, help="layer name (interp layers MODEL)")
    explain.add_argument("--target", type=int, default=None, help="class (default: top-1)")
    explain.add_argument("--backend", default=None)
    explain.add_argument("--out", default="interp-out")
    explain.add_argument("--size", default="224", help="224 or HxW")
    explain.add_argument("--mean", default="0", help="one or three comma-separated numbers")
    explain.add_argument("--std", default="1", help="one or three comma-separated numbers")
    explain.add_argument("--batch-size", type=int, default=16)
    explain.add_argument("--alpha", type=float, default=0.5)
    explain.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    explain.add_argument("--resume", action="store_true",
                         help=f"skip the images already in OUT/{RESULTS} and add the rest")
    explain.set_defaults(func=cmd_explain)

    add_audit_parser(sub)

    listing = sub.add_parser("backends", help="installed backends")
    listing.add_argument("--verbose", "-v", action="store_true",
                         help="with distribution, version and capabilities (imports each "
                              "backend's framework)")
    listing.set_defaults(func=cmd_backends)
    sub.add_parser("methods", help="available methods").set_defaults(func=cmd_methods)
    layers = sub.add_parser("layers", help="layer names of a model")
    layers.add_argument("model")
    layers.add_argument("--backend", default=None)
    layers.set_defaults(func=cmd_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args), debug=args.debug)
