"""Options that several ``interp`` sub-commands share, with choices and defaults in
``--help``."""

from __future__ import annotations

import argparse
from typing import Any

from interp_core.api import methods


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's default; descriptions keep their line breaks."""


def parser_kwargs(description: str) -> dict[str, Any]:
    """Keyword arguments of every ``interp`` parser and sub-parser."""
    return {"description": description, "formatter_class": HelpFormatter}


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--trust-model`` and ``--weights``: how MODEL is loaded."""
    parser.add_argument("--backend", default=None,
                        help="adapter to use (default: found from the model)")
    parser.add_argument("--trust-model", action="store_true",
                        help="load pickled model files (a whole torch module saved with "
                             "torch.save): loading them runs the code inside the file, so "
                             "only for files from a source you trust")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="weights to load into MODEL (module:factory), e.g. "
                             "model.safetensors or a state dict .pt (no code runs)")


def add_method_option(parser: argparse.ArgumentParser) -> None:
    """``--method`` with its choices listed."""
    parser.add_argument("--method", default="gradcam", help=f"one of: {', '.join(methods())}")


def add_input_options(parser: argparse.ArgumentParser, size_default: str | None) -> None:
    """``--size``, ``--channels``, ``--mean``, ``--std``: how files become model inputs."""
    parser.add_argument("--size", default=size_default,
                        help="input size: 224, HxW (224x160) or DxHxW (32x64x64) for volumes")
    parser.add_argument("--channels", type=positive_int, default=None,
                        help="channels the model takes (default: what the model declares, "
                             "else 3); images are converted to it (gray, RGB, RGBA)")
    parser.add_argument("--mean", default="0",
                        help="normalisation: one number, or one per channel, comma-separated")
    parser.add_argument("--std", default="1",
                        help="normalisation: one number, or one per channel, comma-separated")
