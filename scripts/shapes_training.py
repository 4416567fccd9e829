"""The training loop the demo models' scripts share (``train_demo_model.py``,
``train_demo_vit.py``): seeded epochs over generated shapes images, held-out accuracy.

Imported by those scripts from this folder (they run as ``python scripts/<name>.py``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn


def training_parser(doc: str, out: Path, train: int, epochs: int) -> argparse.ArgumentParser:
    """A training script's options: ``--out``, ``--train`` (images), ``--epochs``, ``--seed``,
    with these defaults; described by the first line of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--train", type=int, default=train)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` (eval mode, no gradients) on ``(N, 3, H, W)`` images."""
    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(torch.from_numpy(images[i : i + 500])).argmax(1)
                           for i in range(0, len(images), 500)])
    return float((preds.numpy() == labels).mean())


def train(model: nn.Module, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module,
          train_set: tuple[np.ndarray, np.ndarray], held_out: tuple[np.ndarray, np.ndarray], *,
          epochs: int, batch: int, gen: np.random.Generator,
          flip: Callable[[torch.Tensor, np.random.Generator], torch.Tensor],
          clip: float | None = None) -> None:
    """``epochs`` passes over ``train_set`` in batches of ``batch`` (order and ``flip`` drawn
    from ``gen``), printing the loss and held-out accuracy after each."""
    start = time.perf_counter()
    x_train, y_train = train_set
    steps_per_epoch = len(x_train) // batch
    for epoch in range(epochs):
        model.train()
        order = gen.permutation(len(x_train))
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch]
            xb = flip(torch.from_numpy(x_train[idx]), gen)
            loss = loss_fn(model(xb), torch.from_numpy(y_train[idx]))
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            total += loss.item()
        acc = accuracy(model, *held_out)
        print(f"epoch {epoch + 1}/{epochs}  loss {total / steps_per_epoch:.4f}  "
              f"held-out accuracy {acc:.4f}  ({time.perf_counter() - start:.0f} s, "
              f"{time.process_time():.0f} CPU s)", flush=True)


def flip_batch(xb: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """The whole batch flipped left-right with probability 1/2 (shapes keep their class)."""
    return xb.flip(3) if gen.random() < 0.5 else xb


def flip_samples(xb: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """Each sample flipped left-right with probability 1/2."""
    flip = torch.from_numpy(gen.random(len(xb)) < 0.5)
    return torch.where(flip[:, None, None, None], xb.flip(3), xb)
