"""Summary statistics of an audit with 95% confidence intervals (NumPy only).

Proportions (accuracy, pointing game) use the Wilson score interval, which stays inside
[0, 1] and behaves at 0% and 100% and for small groups. Means (energy in box, deletion and
insertion AUC, Average Drop) use Student's t interval, ``mean +- t(0.975, n-1) * sd / sqrt(n)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
PROPORTIONS = ("accuracy", "pointing_game")
MEANS = ("energy_in_box", "deletion_auc", "insertion_auc", "average_drop")


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """``(p, low, high)``: the proportion and its Wilson score interval; NaNs when n = 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (> 0.5) of Student's t with ``df`` degrees of freedom.

    Exact for 1 and 2 degrees of freedom; the Cornish-Fisher expansion (Abramowitz and Stegun
    26.7.5) above, within 1e-3 of the exact value for df >= 3 at p = 0.975.
    """
    if df < 1:
        return math.nan
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = _normal_quantile(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _normal_quantile(p: float) -> float:
    """Inverse normal CDF by bisection on ``erf`` (enough for a handful of calls)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_half_width(sd: float, n: int) -> float:
    """Half the width of the 95% t interval of a mean of ``n`` (>= 2) values whose sample
    standard deviation (ddof 1) is ``sd``."""
    return t_quantile(0.975, n - 1) * sd / math.sqrt(n)


def mean_interval(values: np.ndarray) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the finite values with a 95% t interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = t_half_width(float(v.std(ddof=1)), n)
    return mean, mean - half, mean + half, n


def _proportion(flags: np.ndarray) -> dict[str, float]:
    """Wilson summary of a nullable boolean column (NaN = no value)."""
    known = flags[~np.isnan(flags)]
    p, lo, hi = wilson(int(known.sum()), len(known))
    return {"value": p, "low": lo, "high": hi, "n": len(known)}


def summarise_rows(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every statistic of one set of rows.

    Parameters
    ----------
    columns : dict
        ``correct`` and ``pointing_game`` as float arrays (1, 0, NaN for null) and the mean
        metrics as float arrays (NaN for null), all ``(N,)``.

    Returns
    -------
    dict
        ``{"n": N, name: {"value", "low", "high", "n"}}`` for each metric with any value.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    out: dict[str, Any] = {"n": n}
    if "correct" in columns:
        stat = _proportion(columns["correct"])
        if stat["n"]:
            out["accuracy"] = stat
    if "pointing_game" in columns:
        stat = _proportion(columns["pointing_game"])
        if stat["n"]:
            out["pointing_game"] = stat
    for name in MEANS:
        if name in columns:
            mean, lo, hi, k = mean_interval(columns[name])
            if k:
                out[name] = {"value": mean, "low": lo, "high": hi, "n": k}
    return out


def summarise(metrics: dict[str, np.ndarray],
              by: dict[str, tuple[np.ndarray, Sequence[str]]] | None = None) -> dict[str, Any]:
    """Overall statistics and the same per value of each breakdown.

    Parameters
    ----------
    metrics : dict
        ``correct``, ``pointing_game`` (1.0, 0.0, NaN for null) and the mean metrics (NaN for
        null), float ``(N,)`` each.
    by : dict, optional
        Breakdown name (``"label"``, ``"group"``) -> (int codes ``(N,)``, -1 for none; the
        names of the codes). Rows with code -1 are left out of that breakdown.

    Returns
    -------
    dict
        ``{"overall": stats, "by_label": {name: stats}, "by_group": {...}}`` with ``stats``
        as :func:`summarise_rows` gives.
    """
    summary: dict[str, Any] = {"overall": summarise_rows(metrics)}
    for key, (codes, names) in (by or {}).items():
        present = sorted(set(np.unique(codes[codes >= 0]).tolist()), key=lambda c: names[c])
        if present:
            summary[f"by_{key}"] = {
                str(names[c]): summarise_rows({k: v[codes == c] for k, v in metrics.items()})
                for c in present
            }
    return summary
