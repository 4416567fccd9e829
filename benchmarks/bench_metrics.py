"""Speed of our metrics against Quantus 0.6: ResNet-18, a batch of 32 images, CPU.

Prints, side by side in one run (interleaved, so machine load hits both alike), the median
wall and CPU time of ours and of Quantus's, and the ratio ours / Quantus (goal <= 0.5), for:

- Faithfulness Correlation: ``--nr-runs`` random subsets of ``--subset-size`` pixels per image
  (both sides: the same counts; Quantus draws values, ours pixels, see
  docs/explanation/conventions.md), baseline zeros (Quantus: ``perturb_baseline=0.0``),
  logits (Quantus: ``softmax=False``, its default here);
- ROAD: the same ``--percentages`` on both sides, noise 0.01, MoRF; ours returns the scores,
  Quantus whether the top-1 class survived (the same imputations and forward passes);
- Sparseness: the Gini index of the 32 maps.

The model is ``benchmarks/resnet18_torch.py`` (torchvision's ResNet-18 layout, Kaiming
initialisation, random weights, no download), input ``32 x 3 x 224 x 224``, maps random. ROAD
runs on a one-channel (grayscale) ResNet-18: Quantus 0.6's ROAD indexes the map's pixels by
the input's values and raises ``IndexError`` on a 3-channel input with a 1-channel map.
Targets are the model's top-1 classes, given to both (Quantus's ``y_batch``).

Quantus is imported from the zoo venv (``requirements-zoo.txt`` pins ``quantus==0.6.0``)::

    .venv-zoo/bin/python benchmarks/bench_metrics.py [--repeats 3] [--nr-runs 20]
        [--percentages 10,50,90] [--only fc,road,sparseness] [--threads N]

Wall time counts the time other processes hold the cores; on a shared machine compare the CPU
time ratios too.

Measured on 2026-12-04, 2 shared CPU cores (2 torch threads; load average 3 to 7 from other
jobs), ``.venv-zoo`` (torch 2.14.1, quantus 0.6.0), ``--repeats 2 --nr-runs 20 --percentages
10,30,50,70,90``, medians, ratio ours / Quantus:

========================  ======================================  =============  ==============
metric                    setting (both sides)                    CPU ratio      wall ratio
========================  ======================================  =============  ==============
Faithfulness Correlation  20 runs x 224, 672 images scored        0.709 (0.719)  0.709 (0.720)
ROAD                      MoRF 10..90 % (5), 160 imputations      0.329          0.334
Sparseness                32 maps of 224 x 224                    0.028          0.031
========================  ======================================  =============  ==============

(In brackets: a second run of the Faithfulness Correlation alone, load 0.2 at its start.)
Ours: FC 25.8 s CPU against 36.4 s, ROAD 13.7 s against 41.7 s, Sparseness 17 ms against
629 ms.

Faithfulness Correlation misses the 0.5 goal: both sides score the same 672 images in 21
forward passes of 32, and those are ~95% of our time. Ours runs them channels-last with the
BatchNorms folded (the adapter's scoring session), ~1.2 s of CPU per pass against Quantus's
~1.65 s (NCHW, unfolded, plus ~0.1 s per run of its own: ``np.random.choice`` over all 150528
values per image, copies, checks); what is left is the convolutions themselves. TorchScript
``freeze`` + ``optimize_for_inference`` would save a further ~10% per pass (deprecated API;
``benchmarks/bench_methods.py`` measured the same on ResNet-50). ROAD's time is the imputation:
Quantus factorises one sparse system per image and percentage (SciPy's ``spsolve``); ours runs
conjugate gradients on all images of a batch at once, converged ones leaving the working set.
Sparseness: Quantus's input checks (``assert_attributions``) take most of its time.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import benchmark_parser
from resnet18_torch import resnet18

from interp_core import metrics


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU (all threads of this process) seconds of one call."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, setting: str, ours: Callable[[], object], theirs: Callable[[], object],
            repeats: int) -> None:
    """Interleaved medians of ours and Quantus's, and their ratios."""
    ours()  # warm-up: first-call costs (imports, allocator, oneDNN primitives) on both sides
    theirs()
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "quantus": []}
    for _ in range(repeats):
        runs["ours"].append(timed(ours))
        runs["quantus"].append(timed(theirs))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in runs.items()}
    print(f"{name} ({setting})")
    for k, (wall, cpu) in med.items():
        print(f"  {k:8s} median wall {wall:9.3f} s   cpu {cpu:9.3f} s")
    print(f"  ratio ours / Quantus: wall {med['ours'][0] / med['quantus'][0]:.3f}   "
          f"cpu {med['ours'][1] / med['quantus'][1]:.3f}")


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=3, batch=32, size=224, nr_runs=20,
                              subset_size=224, threads=0)
    parser.add_argument("--percentages", default="10,50,90")
    parser.add_argument("--only", default="fc,road,sparseness")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import quantus

    warnings.filterwarnings("ignore")
    quiet = dict(disable_warnings=True, display_progressbar=False)
    only = set(args.only.split(","))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n, size = args.batch, args.size
    maps = rng.random((n, size, size)).astype(np.float32)
    print(f"ResNet-18 (random weights), {n} x C x {size} x {size}, CPU, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), quantus "
          f"{quantus.__version__}, repeats {args.repeats}")

    def case(channels: int) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
        model = resnet18(in_channels=channels)
        x = rng.random((n, channels, size, size)).astype(np.float32)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).argmax(1).numpy()
        return model, x, y

    if "fc" in only:
        model, x, y = case(3)
        fc = quantus.FaithfulnessCorrelation(nr_runs=args.nr_runs, subset_size=args.subset_size,
                                             perturb_baseline=0.0, return_aggregate=False,
                                             **quiet)
        compare("Faithfulness Correlation",
                f"{args.nr_runs} runs x {args.subset_size} pixels/values, baseline 0, "
                f"{n * (args.nr_runs + 1)} images scored",
                lambda: metrics.faithfulness_correlation(
                    model, torch.from_numpy(x), maps, y.tolist(), nr_runs=args.nr_runs,
                    subset_size=args.subset_size, batch_size=n),
                lambda: fc(model=model, x_batch=x, y_batch=y, a_batch=maps.copy(),
                           device="cpu", batch_size=n),
                args.repeats)
    if "road" in only:
        model, x, y = case(1)
        pct = [float(p) for p in args.percentages.split(",")]
        road = quantus.ROAD(percentages=pct, noise=0.01, **quiet)
        compare("ROAD", f"MoRF at {args.percentages} %, noise 0.01, 1-channel input, "
                        f"{n * len(pct)} imputations and images scored",
                lambda: metrics.road(model, torch.from_numpy(x), maps, y.tolist(),
                                     percentages=pct, batch_size=n),
                lambda: road(model=model, x_batch=x, y_batch=y, a_batch=maps.copy(),
                             device="cpu", batch_size=n),
                args.repeats)
    if "sparseness" in only:
        model, x, y = case(3)
        sp = quantus.Sparseness(**quiet)
        compare("Sparseness", f"Gini index of {n} maps of {size} x {size}",
                lambda: metrics.sparseness(maps),
                lambda: sp(model=model, x_batch=x, y_batch=y, a_batch=maps.copy(),
                           device="cpu", batch_size=n),
                max(args.repeats, 5))


if __name__ == "__main__":
    main()
