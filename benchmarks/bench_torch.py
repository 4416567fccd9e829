"""Grad-CAM speed and memory on a ResNet-50-shaped torch model (224x224, batch 8, CPU).

Prints three ratios:
- ours / hand-written baseline (forward with a hook, autograd.grad of the summed target scores
  w.r.t. the layer, weighted sum), wall time (target <= 1.10) and peak memory (<= 1.2);
- ours / pytorch-grad-cam GradCAM on the same model, layer and targets (target <= 0.70), when
  `pytorch_grad_cam` is importable (a side venv; never CI), with the max abs difference of maps.

    python benchmarks/bench_torch.py [--repeats 5] [--batch 8] [--size 224]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import benchmark_parser, interleaved_medians, peak_extra_mb
from resnet50_torch import resnet50

import interp_core as ic


def baseline_gradcam(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """The textbook Grad-CAM in plain torch: what a user would write by hand."""
    store = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        out = model(x)
    finally:
        handle.remove()
    scores = out.gather(1, targets[:, None])[:, 0]
    (grads,) = torch.autograd.grad(scores.sum(), [store["a"]])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * store["a"]).sum(1)).detach().numpy()


def peak_memory_in_fresh_process(name: str, args: argparse.Namespace) -> float:
    """Peak extra MB of one call of ``name``, measured as the first call in a new process.

    In one long process the allocator reuses memory freed by earlier calls, so a later call
    shows no new peak; a fresh process per variant measures each on equal terms.
    """
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, "--batch", str(args.batch),
         "--size", str(args.size)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=5, batch=8, size=224)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    targets = torch.arange(args.batch) * 7
    target_list = targets.tolist()
    ours = ic.GradCAM(model, "layer4")

    fns = {
        "baseline": lambda: baseline_gradcam(model, x, targets),
        "ours": lambda: ours(x, target_list),
    }
    try:
        from pytorch_grad_cam import GradCAM as TheirGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        theirs = TheirGradCAM(model=model, target_layers=[model.layer4[-1]])
        their_targets = [ClassifierOutputTarget(t) for t in target_list]
        fns["pytorch-grad-cam"] = lambda: theirs(input_tensor=x, targets=their_targets)
    except ImportError as exc:
        if args.memory_child is None:
            print(f"pytorch-grad-cam not importable here ({exc}); peer comparison skipped")
    if args.memory_child is not None:
        print(peak_extra_mb(fns[args.memory_child]))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.size}x{args.size}, layer4, {args.repeats} repeats")
    times = interleaved_medians(fns, repeats=args.repeats)
    memory = {name: peak_memory_in_fresh_process(name, args) for name in fns}
    for name in fns:
        print(f"  {name:18s} median {times[name] * 1000:8.1f} ms   "
              f"peak extra {memory[name]:7.1f} MB")
    print(f"Grad-CAM time   ours / baseline         = {times['ours'] / times['baseline']:.3f}"
          "  (target <= 1.10)")
    print(f"Grad-CAM memory ours / baseline         = {memory['ours'] / memory['baseline']:.3f}"
          "  (target <= 1.20)")
    if "pytorch-grad-cam" in fns:
        print(f"Grad-CAM time   ours / pytorch-grad-cam = "
              f"{times['ours'] / times['pytorch-grad-cam']:.3f}  (target <= 0.70)")
        print(f"Grad-CAM memory ours / pytorch-grad-cam = "
              f"{memory['ours'] / memory['pytorch-grad-cam']:.3f}")
        diff = np.abs(ours(x, target_list) - fns["pytorch-grad-cam"]()).max()
        print(f"max |ours - pytorch-grad-cam| over the maps = {diff:.2e}")


if __name__ == "__main__":
    main()
