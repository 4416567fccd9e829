"""``python -m interp_core.cli``: the same as the ``interp`` command."""

import sys

from interp_core.cli.command import main

sys.exit(main())
