"""``interp backends --verbose``: each backend with its distribution, version, capabilities."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from interp_core.backend.registry import BackendRegistration, load_attribute, registrations


@dataclass(frozen=True)
class BackendRow:
    """One installed backend as the listing shows it."""

    name: str
    distribution: str
    version: str
    capabilities: str


def backend_rows() -> list[BackendRow]:
    """One row per installed backend, sorted by name.

    Capabilities are read from the backend class, which imports its framework: only this
    listing does that. A backend whose class cannot be imported says so in its row.
    """
    owners = metadata.packages_distributions()
    rows = []
    for name, reg in sorted(registrations().items()):
        module = (reg.factory.partition(":")[0] if isinstance(reg.factory, str)
                  else getattr(reg.factory, "__module__", None) or "")
        dists = owners.get(module.split(".")[0]) or []
        distribution = dists[0] if dists else "(not from a distribution)"
        version = metadata.version(distribution) if dists else "-"
        rows.append(BackendRow(name, distribution, version, _capabilities(reg)))
    return rows


def _capabilities(reg: BackendRegistration) -> str:
    try:
        factory = load_attribute(reg, reg.factory)
        capabilities = getattr(factory, "capabilities", None)
        if capabilities is None:  # a factory function rather than the class
            capabilities = factory().capabilities
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"cannot import the backend: {type(exc).__name__}: {message}"
    return ", ".join(sorted(capabilities)) or "(none)"


def format_rows(rows: list[BackendRow]) -> list[str]:
    """The rows as aligned text lines, with a header."""
    table = [("backend", "distribution", "version", "capabilities")]
    table += [(r.name, r.distribution, r.version, r.capabilities) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  "
            + row[3] for row in table]
