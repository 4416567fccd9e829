"""``interp audit MODEL SOURCE --out DIR``: explain and score a whole dataset.

Wired into the ``interp`` command by :func:`add_audit_parser`; also runs on its own as
``python -m interp_core.audit``. See :func:`interp_core.audit.audit` and ``docs/audit.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from interp_core.cli.errors import CLIError, run_command
from interp_core.cli.options import (
    add_input_options,
    add_method_option,
    add_model_options,
    parser_kwargs,
    positive_int,
)
from interp_core.cli.summary import layer_phrase
from interp_core.io.preprocess import parse_numbers, parse_size

HELP = "explain every image of a folder or manifest; results.parquet + report.html"


def _target(text: str) -> str | int:
    if text in ("predicted", "label"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--target {text!r} must be 'predicted', 'label' or a class number") from None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``audit`` options (shared by ``interp audit`` and ``python -m interp_core.audit``)."""
    parser.add_argument("model", metavar="MODEL",
                        help="demo:torch, file.keras/.h5/.hdf5, file.pt2, file.pt (needs "
                             "--trust-model), module:attr or file.py:attr (each worker builds "
                             "the model from it)")
    parser.add_argument("source", metavar="SOURCE",
                        help="a folder (sub-folder = label) or a CSV/Parquet manifest with "
                             "path[, id, label, group, x0, y0, x1, y1, mask]")
    parser.add_argument("--out", default="interp-audit", help="output folder")
    add_method_option(parser)
    parser.add_argument("--layer", default=None,
                        help="layer name, or several comma-separated (fused); default: the "
                             "last spatial layer")
    parser.add_argument("--target", type=_target, default="predicted",
                        help="predicted, label, or a class number")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names in the model's output order")
    add_model_options(parser)
    add_input_options(parser, None)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--map-size", type=positive_int, default=32,
                        help="longest side of the stored float16 map")
    parser.add_argument("--faithfulness", default=None,
                        help="comma-separated: deletion, insertion, average_drop")
    parser.add_argument("--no-overlays", action="store_true", help="write no overlay PNGs")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=positive_int, default=None, help="Ray actors")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads per worker")
    parser.add_argument("--gpus", type=float, default=None, help="GPUs per Ray actor")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="--engine ray: the Ray cluster to join (the head node's address, "
                             "or auto); default RAY_ADDRESS")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out, skipping finished images")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the files an earlier audit in --out wrote (only those; "
                             "audit.json lists them) first")
    parser.add_argument("--part-size", type=positive_int, default=1024,
                        help="rows per part file")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--wandb", action="store_true", help="log a W&B Table and summary")
    parser.add_argument("--wandb-project", default=None)
    parser.add_argument("--wandb-rows", type=int, default=1000)


def add_audit_parser(subparsers: Any) -> None:
    """Add ``audit`` to the ``interp`` command's sub-commands."""
    parser = subparsers.add_parser("audit", help=HELP, **parser_kwargs(HELP))
    add_arguments(parser)
    parser.set_defaults(func=cmd_audit)


def _percent(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "n/a"
    return f"{100 * stat['value']:.1f}% ({100 * stat['low']:.1f}-{100 * stat['high']:.1f})"


def cmd_audit(args: argparse.Namespace) -> int:
    """Run the audit the parsed ``args`` describe; prints a short summary."""
    from interp_core.audit import audit

    layer = _names(args.layer)
    result = audit(
        args.model, args.source, args.out, method=args.method,
        layer=layer[0] if layer and len(layer) == 1 else layer, target=args.target,
        classes=_names(args.classes), backend=args.backend,
        size=None if args.size is None else parse_size(args.size), channels=args.channels,
        mean=parse_numbers(args.mean, "mean"), std=parse_numbers(args.std, "std"),
        trust_model=args.trust_model, weights=args.weights,
        batch_size=args.batch_size, map_size=args.map_size,
        faithfulness=tuple(_names(args.faithfulness) or ()), overlays=not args.no_overlays,
        alpha=args.alpha, engine=args.engine, workers=args.workers, threads=args.threads,
        gpus=args.gpus, resume=args.resume, overwrite=args.overwrite,
        part_size=args.part_size, progress=not args.no_progress,
        report=not args.no_report, wandb=args.wandb, wandb_project=args.wandb_project,
        wandb_rows=args.wandb_rows, ray_address=args.ray_address,
    )
    overall = result.summary["overall"]
    # The layers the workers used (empty when nothing was explained: then what was asked for).
    print(f"interp audit: {result.images} image(s) explained at "
          f"{layer_phrase(result.layers, layer)}, "
          f"{result.failed} unreadable, "
          f"{result.resumed} already done, in {result.seconds:.1f} s; accuracy "
          f"{_percent(overall.get('accuracy'))}, pointing game "
          f"{_percent(overall.get('pointing_game'))}")
    if result.nodes:
        print(f"rows per Ray node ({len(result.nodes)} node(s)): " + ", ".join(
            f"{node[:12]} {rows}" for node, rows in result.nodes.items()))
    print(f"wrote {result.results}" + (f" and {result.report}" if result.report else ""))
    if result.images == 0 and result.resumed == 0:
        raise CLIError(f"nothing was explained: none of the {result.failed} files could be "
                       f"read (reasons in {result.errors})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m interp_core.audit``: errors print one line, exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m interp_core.audit", **parser_kwargs(HELP))
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: cmd_audit(args), debug=args.debug)
