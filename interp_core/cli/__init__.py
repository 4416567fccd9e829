"""The ``interp`` command and what only it needs: image reading, the HTML gallery, the demo.

``interp_core.cli.main`` is the console-script entry point (see :mod:`interp_core.cli.command`).
"""

from interp_core.cli.command import CLIError, build_parser, load_model, main

__all__ = ["CLIError", "build_parser", "load_model", "main"]
