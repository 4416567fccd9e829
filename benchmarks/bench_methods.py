"""Speed of the slow methods against their peers' loops: ResNet-50 ``layer4``, one image, CPU.

Prints, side by side in one run (interleaved, so machine load hits both alike), wall and CPU
time and the ratio ours / peer for:

- Integrated Gradients at 32 steps (Gauss-Legendre, zero baseline): ours vs Captum's
  ``IntegratedGradients`` (target <= 0.9), Captum also with ``return_convergence_delta=True``
  (ours always computes the delta);
- Ablation-CAM: ours vs pytorch-grad-cam's ``AblationCAM`` (target <= 0.7);
- Score-CAM: ours vs pytorch-grad-cam's ``ScoreCAM`` (target <= 0.6);

and the largest difference between the two maps (or attributions) of each pair.

pytorch-grad-cam's ``ScoreCAM`` and ``AblationCAM`` are the package itself where it imports
(the ``.venv-zoo`` environment, ``grad-cam`` 1.5.7 with torchvision); elsewhere (it does not
install beside torch 2.13, it needs torchvision) its two loops are re-implemented here from
its source (``base_cam.py``, ``score_cam.py``, ``ablation_cam.py``, ``ablation_layer.py``): the
same forward passes in the same batches, ``tqdm`` and OpenCV aside. Captum is the package
itself (``pip install --no-deps captum``); without it Integrated Gradients is skipped. The
first lines of the output say which peer implementation ran.

The model is ``benchmarks/resnet50_torch.py`` (torchvision's ResNet-50 layout, Kaiming
initialisation, no download). Run::

    python benchmarks/bench_methods.py [--repeats 1] [--size 224] [--threads N]
        [--only ig,ablationcam,scorecam] [--scorecam-batch 16,64] [--fold]

``--fold`` also times ours inside ``interp_torch.folding.folded_batchnorm()`` (opt-in
BatchNorm folding: the same function in float32, fewer elementwise passes).

Wall time counts the time other processes hold the cores; on a shared machine compare the CPU
time ratios too, and use ``--repeats`` (the variants run interleaved, medians are printed).

Measured on 2026-11-30, 2 shared CPU cores (2 torch threads, other jobs running), CPU-time
ratios ours / peer (wall in brackets), ours at its defaults:

==============================  =========================  ==============  ===============
method                          peer                       torch 2.14.1    torch 2.13.0
==============================  =========================  ==============  ===============
Integrated Gradients, 32 steps  Captum 0.9.0               0.836 (0.839)   0.725 (0.722)
same, Captum with its delta     Captum 0.9.0               0.856 (0.861)   0.736 (0.733)
Ablation-CAM                    pytorch-grad-cam 1.5.7     0.003 (0.002)   0.004 (0.002)
Score-CAM (batches of 16)       pytorch-grad-cam 1.5.7     0.640-0.712     0.745 (0.735)
Score-CAM, batch 8 / 16        same, one run              0.647 / 0.640
Score-CAM, ``--fold``           same (ours not folded)     0.780 (0.782)
IG, ``--fold``                  Captum 0.9.0               0.705 (0.703)   0.592 (0.588)
==============================  =========================  ==============  ===============

torch 2.14.1: ``.venv-zoo``, the pytorch-grad-cam and Captum packages themselves; torch
2.13.0: ``.venv``, Captum itself and pytorch-grad-cam's loops re-implemented. IG: medians of
3 repeats (load average 0.7 to 1.7); the CAMs: 1 repeat (load 2; Ablation-CAM at 2.13 from an
earlier run at load 7). Score-CAM at its defaults in three runs on the quiet machine (load
1.5-2.0, our own two threads): 0.712, 0.667, 0.640 in CPU time (0.715, 0.672, 0.642 wall);
before, at batch 64: 0.866 plain and 0.695 folded (torch 2.13: 0.876 plain).
Maps agree with the peers' to 2.4e-06 (Score-CAM, Ablation-CAM), IG attributions with
Captum's to 5.7e-05 (1.7e-05 folded).

Score-CAM misses its 0.6 target: every distinct masked input (1923 of the 2048 here: constant
and duplicate channel maps share one) is a forward pass of the whole network, as in the peer,
so the forward passes themselves are the cost. Ours runs them channels-last with the
BatchNorms folded (its default scoring session), ~100 ms of CPU per masked image against the
peer's ~150 ms. Of our ~100 ms about 15 are the kernel's (page faults: glibc returns the
large activation buffers of each batch to the system and the next batch touches fresh pages;
``mallopt`` or jemalloc would remove them but change the whole process, not ours to set).
TorchScript ``freeze`` + ``optimize_for_inference`` saves a further ~7-10% per image
(deprecated API); ``torch.compile`` with inductor's freezing ~12% per image but costs ~14 s
of compilation per model, ~9% of the peer's whole run here.
Ablation-CAM runs only the part of the network above the layer on the ablated copies (the
peer runs the part below the layer on every copy).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet50_torch import resnet50

import interp_core as ic
from interp_core.methods import IntegratedGradients

try:
    from pytorch_grad_cam import AblationCAM as PackageAblationCAM
    from pytorch_grad_cam import ScoreCAM as PackageScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:
    PackageAblationCAM = PackageScoreCAM = ClassifierOutputTarget = None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- pytorch-grad-cam, the package ---------------------------------------------------------------
def quiet() -> contextlib.AbstractContextManager:
    """Its ``tqdm`` progress bars (written to stderr) out of the report."""
    return contextlib.redirect_stderr(io.StringIO())


def package_scorecam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                     batch_size: int = 16) -> np.ndarray:
    """``pytorch_grad_cam.ScoreCAM(model, [layer])(x, [ClassifierOutputTarget(target)])``;
    its hooks are released afterwards."""
    with PackageScoreCAM(model, [layer]) as cam, quiet():
        cam.batch_size = batch_size  # the attribute its loop reads (16 when absent)
        return cam(x, [ClassifierOutputTarget(target)])


def package_ablationcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                        batch_size: int = 32) -> np.ndarray:
    """``pytorch_grad_cam.AblationCAM(model, [layer], batch_size=32)(x, [target])``."""
    with PackageAblationCAM(model, [layer], batch_size=batch_size) as cam, quiet():
        return cam(x, [ClassifierOutputTarget(target)])

# -- pytorch-grad-cam's loops, re-implemented ----------------------------------------------------


def _scale_cam_image(cam: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """``utils/image.py::scale_cam_image`` (``cv2.resize`` -> torch bilinear, half-pixel)."""
    out = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if size is not None:
            img = nn.functional.interpolate(torch.from_numpy(np.float32(img))[None, None],
                                            size=size, mode="bilinear",
                                            align_corners=False)[0, 0].numpy()
        out.append(img)
    return np.float32(out)


def _activations(model: nn.Module, layer: nn.Module, x: torch.Tensor
                 ) -> tuple[np.ndarray, torch.Tensor]:
    """``ActivationsAndGradients.__call__``: a forward pass (grad mode on, as ``BaseCAM``)
    that keeps the layer's output."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        outputs = model(x)
    finally:
        handle.remove()
    return store["a"].detach().cpu().numpy(), outputs


def _cam_from_weights(weights: np.ndarray, acts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``BaseCAM.get_cam_image`` (no eigen_smooth), ReLU, scaling, ``aggregate_multi_layers``."""
    cam = (weights[:, :, None, None] * acts).sum(axis=1)
    scaled = _scale_cam_image(np.maximum(cam, 0), size)
    return _scale_cam_image(np.maximum(scaled[:, None], 0).mean(axis=1))


def pgc_scorecam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                 batch_size: int = 16) -> np.ndarray:
    """pytorch-grad-cam ``ScoreCAM(model, [layer])(x, [ClassifierOutputTarget(target)])``."""
    acts, _ = _activations(model, layer, x)
    with torch.no_grad():
        upsample = nn.UpsamplingBilinear2d(size=x.shape[-2:])
        upsampled = upsample(torch.from_numpy(acts))
        flat = upsampled.view(upsampled.size(0), upsampled.size(1), -1)
        maxs, mins = flat.max(dim=-1)[0][:, :, None, None], flat.min(dim=-1)[0][:, :, None, None]
        upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
        input_tensors = x[:, None, :, :] * upsampled[:, :, None, :, :]
        scores = []
        for tensor in input_tensors:
            for i in range(0, tensor.size(0), batch_size):
                batch = tensor[i : i + batch_size, :]
                scores.extend([o[target].cpu().item() for o in model(batch)])
        weights = torch.nn.Softmax(dim=-1)(
            torch.Tensor(scores).view(acts.shape[0], acts.shape[1])).numpy()
    return _cam_from_weights(weights, acts, tuple(x.shape[-2:]))


class _AblationLayer(nn.Module):
    """``ablation_layer.py::AblationLayer`` (``ratio_channels_to_ablate=1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.indices = np.zeros(0, np.int32)
        self.activations: torch.Tensor | None = None

    def set_next_batch(self, input_batch_index: int, activations: torch.Tensor,
                       num_channels_to_ablate: int) -> None:
        self.activations = activations[input_batch_index, :, :, :].clone().unsqueeze(0).repeat(
            num_channels_to_ablate, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.activations
        for i in range(output.size(0)):
            if torch.min(output) == 0:
                output[i, self.indices[i], :] = 0
            else:
                output[i, self.indices[i], :] = torch.min(output) - 1e7
        return output


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """``utils/find_layers.py::replace_layer_recursive``."""
    for name, child in model._modules.items():
        if child is old:
            model._modules[name] = new
            return
        _replace(child, old, new)


def pgc_ablationcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                    batch_size: int = 32) -> np.ndarray:
    """pytorch-grad-cam ``AblationCAM(model, [layer])(x, [ClassifierOutputTarget(target)])``:
    the target layer is replaced by an ablation layer that returns the cached activations with
    one channel zeroed per copy; every copy still runs the network below the layer."""
    acts, _ = _activations(model, layer, x)
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("a", o))
    with torch.no_grad():
        outputs = model(x)
    handle.remove()
    original = np.float32([o[target].cpu().item() for o in outputs])
    ablation = _AblationLayer()
    _replace(model, layer, ablation)
    try:
        channels = acts.shape[1]
        weights = []
        with torch.no_grad():
            for batch_index, tensor in enumerate(x):
                new_scores = []
                batch_tensor = tensor.repeat(batch_size, 1, 1, 1)
                ablation.indices = np.int32(range(channels))
                for i in range(0, channels, batch_size):
                    if i + batch_size > channels:
                        batch_tensor = batch_tensor[: channels - i]
                    ablation.set_next_batch(batch_index, saved["a"], batch_tensor.size(0))
                    new_scores.extend([o[target].cpu().item() for o in model(batch_tensor)])
                    ablation.indices = ablation.indices[batch_tensor.size(0):]
                weights.extend(new_scores)
    finally:
        _replace(model, ablation, layer)
    weights = np.float32(weights).reshape(acts.shape[:2])
    weights = (original[:, None] - weights) / original[:, None]
    return _cam_from_weights(weights, acts, tuple(x.shape[-2:]))


# -- measuring --------------------------------------------------------------------------------
def folded(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``fn`` run inside ``interp_torch.folding.folded_batchnorm()`` (the stand-in is built in
    the timed call)."""
    from interp_torch.folding import folded_batchnorm

    def run() -> np.ndarray:
        with folded_batchnorm():
            return fn()
    return run


def measure(pairs: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, dict]:
    """Run each function ``repeats`` times, interleaved; median wall and CPU time, last result."""
    runs: dict[str, dict] = {k: {"wall": [], "cpu": [], "out": None} for k in pairs}
    for r in range(repeats):
        for name, fn in pairs.items():
            start, cpu = time.perf_counter(), time.process_time()
            out = fn()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
            runs[name]["out"] = out
            print(f"    repeat {r + 1}/{repeats}  {name:28s} wall {wall:8.1f} s  cpu {cpu:8.1f} s"
                  f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    for v in runs.values():
        v["wall"], v["cpu"] = statistics.median(v["wall"]), statistics.median(v["cpu"])
    return runs


def report(title: str, runs: dict[str, dict], ours: str, peer: str, target: float) -> float:
    ratio = runs[ours]["wall"] / runs[peer]["wall"]
    cpu = runs[ours]["cpu"] / runs[peer]["cpu"]
    diff = float(np.abs(np.asarray(runs[ours]["out"]) - np.asarray(runs[peer]["out"])).max())
    print(f"{title}: ours {runs[ours]['wall']:.1f} s, {peer} {runs[peer]['wall']:.1f} s  ->  "
          f"ratio {ratio:.3f} wall, {cpu:.3f} cpu  (target <= {target})  "
          f"max |difference| {diff:.1e}", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--only", default="ig,ablationcam,scorecam")
    parser.add_argument("--scorecam-batch", type=lambda v: [int(b) for b in v.split(",")],
                        default=[16], help="our Score-CAM batch sizes, e.g. 16,64")
    parser.add_argument("--fold", action="store_true",
                        help="also time our IG inside interp_torch's folded_batchnorm() (opt-in) "
                             "and our Score-CAM without its default folding")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        target = int(model(x).argmax(1))  # also the warm-up pass
    print(f"ResNet-50 layer4 (2048 channels), 1 x 3 x {args.size} x {args.size}, class {target}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s), {args.repeats} repeat(s)", flush=True)
    if PackageScoreCAM is not None:
        scorecam, ablationcam = package_scorecam, package_ablationcam
        print(f"pytorch-grad-cam: the package, grad-cam {package_version('grad-cam')}")
    else:
        scorecam, ablationcam = pgc_scorecam, pgc_ablationcam
        print("pytorch-grad-cam: not installed; its loops re-implemented here from its source")
    captum_version = package_version("captum")
    print(f"Captum: the package, captum {captum_version}" if captum_version else
          "Captum: not installed; Integrated Gradients skipped", flush=True)
    ratios = {}
    if "ig" in only and captum_version:
        from captum.attr import IntegratedGradients as CaptumIG

        # One pass: 32 path points plus the input and the baseline (for the convergence
        # delta, which ours always reports); Captum is timed without and with its delta.
        ours_ig = IntegratedGradients(model, steps=32)
        captum = CaptumIG(model)
        pairs = {
            "ours IntegratedGradients": lambda: ours_ig.explain(x, target).raw["input"],
            "Captum IntegratedGradients": lambda: captum.attribute(
                x, target=target, n_steps=32).detach().numpy(),
            "Captum IG + delta": lambda: captum.attribute(
                x, target=target, n_steps=32, return_convergence_delta=True)[0].detach().numpy(),
        }
        if args.fold:
            pairs["ours IG folded"] = folded(lambda: ours_ig.explain(x, target).raw["input"])
        runs = measure(pairs, args.repeats)
        for ours in [k for k in pairs if k.startswith("ours")]:
            ratios.setdefault("ig", report(f"Integrated Gradients (32 steps), {ours}", runs,
                                           ours, "Captum IntegratedGradients", 0.9))
            report(f"Integrated Gradients (32 steps), both with the convergence delta, {ours}",
                   runs, ours, "Captum IG + delta", 0.9)
    if "ablationcam" in only:
        ours_ab = ic.AblationCAM(model, "layer4", batch_size=32)
        runs = measure({"ours AblationCAM": lambda: ours_ab(x, target),
                        "pytorch-grad-cam AblationCAM": lambda: ablationcam(
                            model, model.layer4, x, target, 32)}, args.repeats)
        ratios["ablationcam"] = report("Ablation-CAM", runs, "ours AblationCAM",
                                       "pytorch-grad-cam AblationCAM", 0.7)
    if "scorecam" in only:
        # pytorch-grad-cam's default batch of 16 masked images; ours at the batches given
        # (16, our default too), folded by default (its scoring session); ``--fold`` adds
        # ours without folding (fast_scoring=False).
        pairs = {f"ours ScoreCAM bs={bs}": (lambda bs=bs: ic.ScoreCAM(
            model, "layer4", batch_size=bs)(x, target)) for bs in args.scorecam_batch}
        if args.fold:
            pairs.update({f"ours ScoreCAM bs={bs} unfolded": (lambda bs=bs: ic.ScoreCAM(
                model, "layer4", batch_size=bs, fast_scoring=False)(x, target))
                for bs in args.scorecam_batch})
        pairs["pytorch-grad-cam ScoreCAM"] = lambda: scorecam(model, model.layer4, x,
                                                              target, 16)
        runs = measure(pairs, args.repeats)
        for ours in [k for k in pairs if k.startswith("ours")]:
            ratio = report(f"Score-CAM ({ours}, peer batch 16)", runs, ours,
                           "pytorch-grad-cam ScoreCAM", 0.6)
            ratios.setdefault("scorecam", ratio)
    print("ratios (ours / peer, wall): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
