"""``python -m interp_core.audit MODEL SOURCE --out DIR``: the same as ``interp audit``."""

import sys

from interp_core.cli.audit import main

sys.exit(main())
