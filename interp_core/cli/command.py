"""The ``interp`` command: demo gallery, explaining image files, and listings.

    interp demo [--backend torch|tensorflow|jax] [--out DIR] [--overwrite]
    interp explain MODEL IMAGES... --method gradcam --layer NAME [--target N] [--out DIR]
    interp backends | methods | layers MODEL

Errors print one line and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
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
from interp_core.cli.gallery import GalleryRow, write_gallery
from interp_core.cli.imageio import Preprocess, batches, find_images, parse_size, parse_triple
from interp_core.methods import method_class
from interp_core.methods.postprocess import resize_bilinear
from interp_core.viz import overlay, save_png

DEMO_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "cam",
                "scorecam", "ablationcam")
DEMO_IMAGES = 8
DEMO_SEED = 7  # held out: the training script draws from seeds 1000 and 2000
DISPLAY = 192  # pixels of the gallery pictures


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# -- model loading -----------------------------------------------------------------------
def load_model(spec: str) -> Any:
    """A model from a ``.keras`` file, a saved torch module, or ``module:attribute``.

    ``module:attribute`` names a model object or a zero-argument factory (function or class);
    ``module`` may be a dotted import path or a ``.py`` file.
    """
    path = Path(spec)
    if path.suffix in (".keras", ".h5") and path.is_file():
        import keras

        return keras.models.load_model(path, compile=False)
    if path.suffix in (".pt", ".pth", ".ts", ".jit") and path.is_file():
        import torch

        model = torch.load(path, weights_only=False, map_location="cpu")
        if isinstance(model, torch.jit.ScriptModule):
            raise CLIError(
                f"{spec} is a TorchScript module: PyTorch does not run Python hooks inside "
                "TorchScript, so its layers cannot be captured; save the eager module with "
                "torch.save(model, path) or pass module:attribute"
            )
        if not isinstance(model, torch.nn.Module):
            raise CLIError(
                f"{spec} holds a {type(model).__name__}, not a model (a state dict?): save "
                "the whole module with torch.save(model, path) or pass module:attribute"
            )
        return model
    if ":" not in spec:
        raise CLIError(
            f"MODEL {spec!r} is not a .keras or .pt/.pth file nor module:attribute"
        )
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        file = Path(module_name)
        if not file.is_file():
            raise CLIError(f"no such file: {module_name}")
        loader_spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[file.stem] = module
        loader_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise CLIError(f"{module_name} has no attribute {attr!r}") from None
    if inspect.isfunction(obj) or inspect.isclass(obj):
        obj = obj()
    return obj


# -- commands ----------------------------------------------------------------------------
def _prepare_out(out: Path, outputs: Sequence[Path], overwrite: bool) -> None:
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        raise CLIError(
            f"{len(existing)} output file(s) already exist in {out} (e.g. {existing[0].name}); "
            "pass --overwrite to replace them"
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
    model = load_model(args.model)
    backend = get_backend(args.backend if args.backend else model)
    files = find_images(args.images)
    prep = Preprocess(parse_size(args.size), parse_triple(args.mean, "mean"),
                      parse_triple(args.std, "std"))
    cls = method_class(args.method)
    cam = cls(model, args.layer, backend=backend.name)
    out = Path(args.out)
    tag = cls.name.replace("+", "p")
    names = _unique_names(files)
    _prepare_out(out, [out / f"{n}_{tag}.png" for n in names] + [out / "results.jsonl"],
                 args.overwrite)
    skipped: list[str] = []
    written = 0
    chunks = list(batches(list(zip(files, names, strict=True)), args.batch_size))
    progress = _progress(chunks, len(files) > args.batch_size)
    with open(out / "results.jsonl", "w", encoding="utf-8") as results:
        for chunk in progress:
            loaded, kept = [], []
            for file, name in chunk:
                try:
                    loaded.append(prep.load(file))
                    kept.append((file, name))
                except ValueError as exc:
                    skipped.append(str(file))
                    print(f"interp: skipped: {exc}", file=sys.stderr)
            if not loaded:
                continue
            images = np.stack(loaded)
            x = to_backend_layout(prep.normalise(images), backend)
            exp = cam.explain(x, args.target)
            for i, (file, name) in enumerate(kept):
                target = f"{out / name}_{tag}.png"
                save_png(target, overlay(images[i], exp.maps[i], alpha=args.alpha))
                results.write(json.dumps({
                    "file": str(file), "target": int(exp.targets[i]),
                    "score": float(exp.scores[i]), "method": cls.name,
                    "layer": ",".join(exp.layers), "backend": backend.name, "overlay": target,
                }) + "\n")
                written += 1
    if written == 0:
        raise CLIError(f"none of the {len(files)} files could be read as an image")
    print(f"interp explain: {written} image(s) explained with {cls.name} on {backend.name}, "
          f"{len(skipped)} skipped (unreadable); wrote {out.resolve()}")
    return 0


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
    explain.add_argument("--overwrite", action="store_true")
    explain.set_defaults(func=cmd_explain)

    sub.add_parser("backends", help="installed backends").set_defaults(func=cmd_backends)
    sub.add_parser("methods", help="available methods").set_defaults(func=cmd_methods)
    layers = sub.add_parser("layers", help="layer names of a model")
    layers.add_argument("model")
    layers.add_argument("--backend", default=None)
    layers.set_defaults(func=cmd_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise on a terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"interp: error: {message}", file=sys.stderr)
        return 2
