"""Train the bundled demo model on generated shapes images (PyTorch, CPU, seeded).

    python scripts/train_demo_model.py [--out interp_core/data/demo_shapes.npz]

Trains with BatchNorm after each convolution (plain conv + ReLU stacks of this depth barely
learn from scratch), then folds each BatchNorm into its convolution, so the shipped model is the
plain architecture of :mod:`interp_core.datasets.demo` that every framework builds identically.
Prints the held-out accuracy and writes the weights (channels-last convention, a few hundred KB).
Takes several minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from interp_torch.demo import DemoNet
from shapes_training import accuracy, flip_batch, train, training_parser
from torch import nn

from interp_core.datasets import make_shapes
from interp_core.datasets.demo import CLASSES

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "interp_core" / "data" / "demo_shapes.npz"


class TrainNet(nn.Module):
    """:class:`DemoNet` with a BatchNorm after each convolution (training only)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = DemoNet(classes)
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for c in (16, 32, 64)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        for i, pool in ((0, net.pool1), (1, net.pool2), (2, None)):
            x = torch.relu(self.norms[i](getattr(net, f"block{i + 1}")[0](x)))
            x = pool(x) if pool is not None else x
        return net.fc(net.gap(x).flatten(1))

    def folded(self) -> DemoNet:
        """The plain DemoNet computing the same function in eval mode (BatchNorm folded)."""
        plain = DemoNet(self.net.fc.out_features)
        plain.load_state_dict(self.net.state_dict())
        with torch.no_grad():
            for i, bn in enumerate(self.norms):
                conv = getattr(plain, f"block{i + 1}")[0]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale[:, None, None, None])
                conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
        return plain.eval()


def main() -> None:
    args = training_parser(__doc__, DEFAULT_OUT, train=16000, epochs=10).parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    start = time.perf_counter()
    train_set = make_shapes(args.train, seed=args.seed + 1000)
    held_out = make_shapes(2000, seed=args.seed + 2000)  # different seed: disjoint draws
    x_train, y_train = train_set.channels_first(), train_set.labels
    x_test, y_test = held_out.channels_first(), held_out.labels

    model = TrainNet(classes=len(CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = len(x_train) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    train(model, opt, sched, loss_fn, (x_train, y_train), (x_test, y_test),
          epochs=args.epochs, batch=64, gen=np.random.default_rng(args.seed), flip=flip_batch)

    plain = model.eval().folded()
    with torch.no_grad():
        probe = torch.from_numpy(x_test[:64])
        gap = float((plain(probe) - model(probe)).abs().max())
    print(f"BatchNorm folded into the convolutions: max |logit difference| {gap:.2e}")
    acc = accuracy(plain, x_test, y_test)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **plain.export_weights())
    print(f"held-out accuracy {acc:.4f} on {len(y_test)} images; wrote {args.out} "
          f"({args.out.stat().st_size / 1024:.0f} KB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
