"""Audit a whole dataset: explain every image, score the maps, compare classes and groups.

Engines: ``engine="local"`` (one process) and ``engine="ray"`` (Ray Data, optional extra
``interp-core[ray]``). Importing this package imports neither Ray nor pyarrow nor a framework:
they load when a run starts. See ``docs/audit.md``.

Examples
--------
>>> import interp_core as ic
>>> result = ic.audit("demo:torch", "images/", "audit-out")      # doctest: +SKIP
>>> result.summary["overall"]["accuracy"]                         # doctest: +SKIP
"""

from interp_core.audit.results import SCHEMA_VERSION
from interp_core.audit.run import AuditResult, audit

__all__ = ["SCHEMA_VERSION", "AuditResult", "audit"]
