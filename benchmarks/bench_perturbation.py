"""Score-CAM speed, memory and localisation: ResNet-50 layer4 (2048 channels), CPU.

Prints:
- Score-CAM on one image through a ResNet-50-shaped model at ``layer4``: median wall and CPU
  time of ours (exact), ours with ``top_k=256`` ("Faster Score-CAM") and, when
  ``pytorch_grad_cam`` is importable (a side venv, never CI), pytorch-grad-cam's ``ScoreCAM``
  with the same batch size, on the same model weights, input and target; the ratios
  ours / pytorch-grad-cam (target <= 0.8) and top_k / exact (target <= 0.2); the largest
  difference between our map and pytorch-grad-cam's.
  Every measured call runs in a fresh process (the variants interleaved), so that peak memory
  is comparable: the resident-set high-water mark (``VmHWM`` after ``clear_refs``) minus the
  resident set after building the model and one warm-up forward pass of one image. CPU time
  (all threads) is printed next to wall time: on a shared machine wall time also counts the
  time other processes hold the cores.
- Memory for a large channel count: Score-CAM at a layer of ``--wide`` channels (fresh
  process), peak resident memory added and NumPy's peak (tracemalloc), next to what all masked
  copies at once would take.
- With the demo weights (``interp_core/data/demo_shapes.npz``): pointing game and energy
  pointing game on the shapes set for exact Score-CAM and for top_k = C / 8 (the channel
  fraction that 256 is of 2048), Grad-CAM for reference, and the time ratio.

Run, e.g. (the peer comparison needs a venv with pytorch-grad-cam)::

    python benchmarks/bench_perturbation.py [--repeats 1] [--size 224] [--batch-size 16]
        [--threads N] [--only resnet|memory|shapes]
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars, set before tqdm

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import benchmark_parser
from resnet50_torch import resnet50

import interp_core as ic
from interp_core import metrics


# -- measuring -------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def timed(fn: Callable[[], object]) -> tuple[float, float, float, object]:
    """Wall time (s), process CPU time (s), peak resident memory added (MB), result."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    base = _status_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return elapsed, cpu, (_status_kb("VmHWM") - base) / 1024.0, out


def peer_available() -> bool:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


# -- one measured call in this process (--probe) ---------------------------------------------
class WideNet(nn.Module):
    """Input (N, 3, S, S) -> pool to 7x7 -> 1x1 conv to ``channels`` -> GAP -> 10 logits."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.wide = nn.Sequential(nn.Conv2d(3, channels, 1), nn.ReLU())
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.wide(self.pool(x)).mean((2, 3)))


def probe(args: argparse.Namespace) -> None:
    """Build the model, warm up, measure one call of ``args.probe``; print one JSON line."""
    torch.manual_seed(0)
    wide = args.probe == "wide"
    model = (WideNet(args.wide) if wide else resnet50()).eval()
    layer = "wide" if wide else "layer4"
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        target = int(model(x).argmax(1))  # also the warm-up pass
    bs = args.batch_size
    if args.probe == "peer":
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = ScoreCAM(model=model, target_layers=[model.layer4])
        cam.batch_size = bs

        def fn() -> np.ndarray:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    elif args.probe == "forward":
        batch = x.repeat(bs, 1, 1, 1)

        def fn() -> np.ndarray:
            with torch.no_grad():
                return model(batch).numpy()
    else:
        top_k = args.top_k if args.probe == "topk" else None
        ours = ic.ScoreCAM(model, layer, batch_size=bs, top_k=top_k)

        def fn() -> np.ndarray:
            return ours(x, target)
    if wide:
        tracemalloc.start()
    wall, cpu, peak, out = timed(fn)
    numpy_peak = tracemalloc.get_traced_memory()[1] / 2**20 if wide else None
    if args.save:
        np.save(args.save, np.asarray(out))
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak, "numpy_peak_mb": numpy_peak,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def run_probe(args: argparse.Namespace, name: str, save: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--probe", name, "--size", str(args.size),
           "--batch-size", str(args.batch_size), "--top-k", str(args.top_k),
           "--wide", str(args.wide)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if save:
        cmd += ["--save", save]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- sections --------------------------------------------------------------------------------
def resnet_section(args: argparse.Namespace) -> None:
    names = {"ours": "ours exact", "topk": f"ours top_k={args.top_k}"}
    if peer_available() and not args.skip_peer:
        names["peer"] = "pytorch-grad-cam"
    tmp = Path(tempfile.mkdtemp(prefix="bench_perturbation_"))
    runs: dict[str, list[dict]] = {k: [] for k in names}
    info: dict = {}
    for r in range(args.repeats):
        for key, label in names.items():
            info = run_probe(args, key, save=str(tmp / f"{key}.npy"))
            runs[key].append(info)
            print(f"    repeat {r + 1}/{args.repeats}  {label:24s} wall {info['wall']:8.1f} s  "
                  f"cpu {info['cpu']:8.1f} s  +{info['peak_mb']:6.0f} MB  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    forward = run_probe(args, "forward")
    print(f"Score-CAM, ResNet-50 layer4 (2048 ch), 1 x 3 x {args.size} x {args.size}, "
          f"batch_size {args.batch_size}, torch {info['torch']}, {info['threads']} thread(s), "
          f"{args.repeats} repeat(s), fresh process per run")
    wall = {k: statistics.median(i["wall"] for i in v) for k, v in runs.items()}
    cpu = {k: statistics.median(i["cpu"] for i in v) for k, v in runs.items()}
    for key, label in names.items():
        peak = max(i["peak_mb"] for i in runs[key])
        print(f"  {label:24s} median wall {wall[key]:8.1f} s  cpu {cpu[key]:8.1f} s  "
              f"peak extra {peak:6.0f} MB")
    print(f"  (one forward pass of {args.batch_size} images, for scale: wall "
          f"{forward['wall']:.2f} s, peak extra {forward['peak_mb']:.0f} MB)")
    print(f"Score-CAM time  top_k={args.top_k} / exact (ours)   = "
          f"{wall['topk'] / wall['ours']:.3f} wall, {cpu['topk'] / cpu['ours']:.3f} cpu  "
          "(target <= 0.2)")
    maps = {k: np.load(tmp / f"{k}.npy") for k in names}
    if "peer" in names:
        print(f"Score-CAM time  ours / pytorch-grad-cam      = "
              f"{wall['ours'] / wall['peer']:.3f} wall, {cpu['ours'] / cpu['peer']:.3f} cpu  "
              "(target <= 0.8)")
        print(f"  max |ours - pytorch-grad-cam| over the map = "
              f"{np.abs(maps['ours'] - maps['peer']).max():.2e}")
    else:
        print("  pytorch-grad-cam not importable (or --skip-peer): no peer ratio")
    print(f"  Spearman(exact map, top_k map)             = "
          f"{metrics.spearman(maps['ours'], maps['topk'])[0]:.3f}")


def memory_section(args: argparse.Namespace) -> None:
    info = run_probe(args, "wide")
    c = args.wide
    all_at_once = c * 3 * args.size * args.size * 4 / 2**20
    print(f"Score-CAM memory, {c} channels, 1 x 3 x {args.size} x {args.size}, batch_size "
          f"{args.batch_size}: peak extra RSS {info['peak_mb']:.0f} MB, NumPy peak "
          f"(tracemalloc) {info['numpy_peak_mb']:.0f} MB, {info['wall']:.1f} s (all {c} masked "
          f"copies at once would be {all_at_once:.0f} MB)")


def shapes_section(args: argparse.Namespace) -> None:
    from interp_core.datasets import demo
    from interp_core.datasets.shapes import make_shapes

    try:
        model = demo.demo_model("torch")
    except FileNotFoundError as exc:
        print(f"Shapes pointing game: skipped ({exc})")
        return
    batch = make_shapes(args.shapes, size=demo.IMAGE_SIZE, seed=1234)
    x = torch.from_numpy(batch.channels_first())
    targets = batch.labels.tolist()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1).numpy() == batch.labels).mean())
    channels = ic.get_backend(model).capture(
        model, x[:1], [demo.LAYER], ic.backend.resolve_targets(None, 1), gradients=False
    ).layers[demo.LAYER].activations.shape[-1]
    k = max(1, channels // 8)
    bs = args.batch_size
    fns = {
        "exact": lambda: ic.ScoreCAM(model, demo.LAYER, batch_size=bs)(x, targets),
        f"top_k={k}": lambda: ic.ScoreCAM(model, demo.LAYER, batch_size=bs, top_k=k)(x, targets),
        "gradcam": lambda: ic.GradCAM(model, demo.LAYER)(x, targets),
    }
    print(f"Shapes set: {len(batch)} images {demo.IMAGE_SIZE}px, demo model accuracy "
          f"{accuracy:.3f}, layer {demo.LAYER} ({channels} ch), ground-truth classes")
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    maps = {}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t, c, _, maps[name] = timed(fn)
            wall[name].append(t)
            cpu[name].append(c)
    for name, m in maps.items():
        hits = metrics.pointing_game(m, masks=batch.masks)
        hits_tol = metrics.pointing_game(m, masks=batch.masks, tolerance=3)
        energy = metrics.energy_pointing_game(m, boxes=batch.boxes)
        print(f"  {name:10s} {statistics.median(wall[name]):7.2f} s  pointing game "
              f"{hits.mean():.3f} (3 px tolerance {hits_tol.mean():.3f})  energy in box "
              f"{energy.mean():.3f}")
    fast = f"top_k={k}"
    print(f"  time top_k={k} / exact = "
          f"{statistics.median(wall[fast]) / statistics.median(wall['exact']):.3f} wall, "
          f"{statistics.median(cpu[fast]) / statistics.median(cpu['exact']):.3f} cpu")


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=1, size=224, batch_size=16, top_k=256, wide=8192,
                              shapes=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--only", choices=["resnet", "memory", "shapes"], default=None)
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        probe(args)
        return
    sections = {"resnet": resnet_section, "memory": memory_section, "shapes": shapes_section}
    for name, section in sections.items():
        if args.only in (None, name):
            section(args)


if __name__ == "__main__":
    main()
