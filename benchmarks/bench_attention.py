"""Speed of the attention methods on a ViT-B/16-sized transformer (224x224, batch 8, CPU, torch).

The demo ViT architecture at ViT-B/16's sizes (768 wide, 12 heads, 12 blocks, MLP 3072,
16-pixel patches, a class token; random weights: speed does not depend on them). Prints the
ratios of issue #22, all measured side by side in one run (interleaved medians):

- attention rollout / one plain forward pass (``torch.inference_mode``, the fused attention
  kernel), target <= 1.2;
- gradient-weighted rollout / our token Grad-CAM, target <= 1.3;
- LeGrad / our token Grad-CAM, target <= 1.3.

Token Grad-CAM is ``ic.GradCAM`` on the last block's first norm (``blocks.11.norm1``, the layer
pytorch-grad-cam's ViT example uses). It back-propagates through the last block only; the
gradient methods need the gradient at every block's attention, a backward pass through all
blocks, so the script also times that floor in plain torch (the attention written out, one
``autograd.grad`` with respect to every block's probabilities) and prints our gradient
rollout against it.

    python benchmarks/bench_attention.py [--repeats 5] [--batch 8] [--blocks 12]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import benchmark_parser, interleaved_medians
from interp_torch.demo_vit import DemoViT

import interp_core as ic
from interp_core.datasets.demo_vit import ViTConfig

TARGETS = {"attentionrollout": 1.2, "gradientrollout": 1.3, "legrad": 1.3}


def bare_attention_gradients(model: DemoViT, x: torch.Tensor,
                             targets: torch.Tensor) -> list[torch.Tensor]:
    """The least any gradient rollout does, in plain torch: a forward pass with every block's
    attention written out (probabilities kept), one backward to all of them."""
    probs = []
    z = model.patch_embed(x).flatten(2).transpose(1, 2) + model.pos_embed
    z = torch.cat([model.cls_token.expand(len(x), -1, -1), z], dim=1)
    for block in model.blocks:
        mha, h = block.attn, block.norm1(z)
        n, t, d = h.shape
        heads = mha.num_heads
        qkv = torch.nn.functional.linear(h, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        probs.append(a)
        z = z + mha.out_proj((a @ v).transpose(1, 2).reshape(n, t, d))
        z = z + block.mlp(block.norm2(z))
    logits = model.head(model.norm(z)[:, 0])
    return list(torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), probs))


def main() -> None:
    parser = benchmark_parser(__doc__, repeats=5, batch=8, blocks=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ViTConfig(patch=16, grid=(14, 14), dim=768, heads=12, blocks=args.blocks,
                       mlp=3072, classes=1000)
    model = DemoViT(config).eval()
    x = torch.rand(args.batch, 3, 224, 224)
    targets = list(range(args.batch))
    layer = f"blocks.{args.blocks - 1}.norm1"
    methods = {
        "gradcam": ic.GradCAM(model, layer),
        "attentionrollout": ic.AttentionRollout(model),
        "gradientrollout": ic.GradientRollout(model),
        "legrad": ic.LeGrad(model),
    }

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    index = torch.tensor(targets)
    runs = {"forward": forward,
            "bare torch gradients": lambda: bare_attention_gradients(model, x, index),
            **{name: (lambda m=m: m(x, targets)) for name, m in methods.items()}}
    times = interleaved_medians(runs, repeats=args.repeats)
    print(f"ViT-B/16-sized transformer ({args.blocks} blocks), batch {args.batch}, 224x224, "
          f"CPU ({torch.get_num_threads()} threads), median of {args.repeats}")
    for name, seconds in times.items():
        print(f"  {name:18s} {seconds * 1000:9.1f} ms")
    ratios = {
        "attentionrollout": ("forward", times["attentionrollout"] / times["forward"]),
        "gradientrollout": ("gradcam", times["gradientrollout"] / times["gradcam"]),
        "legrad": ("gradcam", times["legrad"] / times["gradcam"]),
    }
    for name, (base, ratio) in ratios.items():
        verdict = "met" if ratio <= TARGETS[name] else "NOT met"
        print(f"  {name} / {base}: {ratio:.2f} (target <= {TARGETS[name]}: {verdict})")
    floor = times["bare torch gradients"]
    print(f"  the floor of the gradient methods (bare torch gradients) / gradcam: "
          f"{floor / times['gradcam']:.2f}")
    for name in ("gradientrollout", "legrad"):
        print(f"  {name} / bare torch gradients: {times[name] / floor:.2f}")
    finite = all(np.isfinite(m(x[:1])).all() for m in methods.values())
    print(f"  maps finite: {finite}")


if __name__ == "__main__":
    main()
