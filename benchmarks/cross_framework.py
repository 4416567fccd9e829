"""Do torch, tensorflow and jax give the same maps? The project's headline claim, measured.

The bundled demo model (the same weights in each framework), generated images, every gradient
method and CAM: prints, per method, the max abs difference of maps and the max relative
difference of target scores between each pair of backends.

    python benchmarks/cross_framework.py [--n 32]
"""

from __future__ import annotations

import argparse
import itertools
import os

import interp_core as ic
from interp_core.testing.agreement import AGREEMENT_METHODS, explain_everywhere


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    names = [b for b in ("torch", "tensorflow", "jax") if b in ic.backends()]
    if len(names) < 2:
        raise SystemExit(f"need at least two backends, installed: {ic.backends()}")
    results = explain_everywhere(names, n=args.n)
    print(f"demo model, {args.n} images, backends {names}")
    print(f"  {'method':22s} {'pair':20s} {'max |map diff|':>15s} {'max rel score diff':>19s}")
    for method in AGREEMENT_METHODS:
        for a, b in itertools.combinations(names, 2):
            ea, eb = results[a][method], results[b][method]
            map_diff = float(abs(ea.maps - eb.maps).max())
            score_diff = float((abs(ea.scores - eb.scores) / abs(ea.scores).clip(1e-6)).max())
            print(f"  {method:22s} {a + ' vs ' + b:20s} {map_diff:15.2e} {score_diff:19.2e}")


if __name__ == "__main__":
    main()
