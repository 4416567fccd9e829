"""Small, realistic folders for the ``interp view`` tests (server and browser), built in seconds.

Every folder is made by the project's own writers on the bundled demo model:

* :func:`make_audit` - ``ic.audit`` over a generated shapes dataset (class sub-folders, a
  manifest with ids, groups, boxes, a few masks, a few images without a box);
* :func:`make_compare` - two audits of the same images: the demo model with Grad-CAM, and
  the demo model with a changed last layer ("after a fix") with Grad-CAM++, on all but the
  last few images, so that predictions and pointing change and some ids are in one only;
* :func:`make_explain` - ``interp explain`` (``results.jsonl`` and overlays);
* :func:`make_training_log` - the torch ``CAMLogger`` and ``FeatureMapLogger`` writing to a
  ``FolderSink`` after each of a few quick training epochs.

The data is nasty on purpose (:data:`NASTY_ID`, :data:`NASTY_GROUP`, :data:`NASTY_CLASS`,
:data:`NASTY_FILE`): markup, quotes, ampersands and non-ASCII in ids, groups and labels, a
space and an accent in a file name, and one 16-bit grayscale image; a viewer must show
them as text.

Use from a test::

    from tests.view_fixtures import make_audit
    audit_dir = make_audit(tmp_path / "audit")
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

#: An id with markup, quotes and non-ASCII text.
NASTY_ID = "<script>alert(\"id\")</script> 'quoted' & «ünïcödé»"
#: A group name with markup and quotes.
NASTY_GROUP = "<b onmouseover=\"alert('group')\">g&amp;ü</b>"
#: A class name (so a label and a prediction) with markup and non-ASCII text.
NASTY_CLASS = "ring <img src=x onerror=alert(1)> \"é\""
#: An image file name with a space and an accent.
NASTY_FILE = "photo été 1.png"
#: The class names given to the audits: the demo model's, the last one nasty.
CLASS_NAMES = ("circle", "square", "triangle", "cross", NASTY_CLASS)
GROUPS = ("north", "south", "east", NASTY_GROUP)
WRONG_BOX = (0, 0, 6, 6)  # a corner where no object is: the map "misses" it


def make_dataset(root: str | os.PathLike[str], n: int = 60, seed: int = 0) -> Path:
    """Shapes PNGs in class sub-folders, a few masks, and ``manifest.csv``; returns the manifest.

    Row ``i``: group ``GROUPS[i % 4]``; every 7th row has no box, every 5th a box in an empty
    corner (a pointing miss), every 11th a mask instead of a box. Row 1 has :data:`NASTY_ID`,
    row 2 is :data:`NASTY_FILE`, row 3 is a 16-bit grayscale PNG.
    """
    from PIL import Image

    from interp_core.datasets import CLASSES, make_shapes
    from interp_core.viz import save_png

    root = Path(root)
    data = make_shapes(n, seed=seed)
    rows = []
    for i in range(n):
        label = int(data.labels[i])
        folder = root / "imgs" / CLASSES[label]
        name = NASTY_FILE if i == 2 else f"img{i:03d}.png"
        if i == 3:  # 16-bit grayscale
            folder.mkdir(parents=True, exist_ok=True)
            gray = data.images[i].mean(axis=-1)
            Image.fromarray(np.round(gray * 65535).astype(np.uint16)).save(folder / name)
        else:
            save_png(folder / name, data.images[i])
        rel = (folder / name).relative_to(root).as_posix()
        y0, x0, y1, x1 = (int(v) for v in data.boxes[i])
        box: tuple[int, int, int, int] | None = WRONG_BOX if i % 5 == 0 else (x0, y0, x1, y1)
        mask = ""
        if i % 7 == 6:
            box = None
        elif i % 11 == 10:
            box = None
            mask = f"masks/m{i:03d}.png"
            save_png(root / mask, data.masks[i].astype(np.uint8) * 255)
        rows.append({
            "path": rel, "id": NASTY_ID if i == 1 else rel, "label": CLASS_NAMES[label],
            "group": GROUPS[i % len(GROUPS)],
            **dict(zip(("x0", "y0", "x1", "y1"), box or ("", "", "", ""), strict=True)),
            "mask": mask,
        })
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def fixed_model(seed: int = 1) -> object:
    """The demo torch model with its last layer changed: another model "after a fix" whose
    predictions differ from the demo model's on some images."""
    from interp_core.datasets.demo import demo_model, demo_weights

    weights = demo_weights()
    rng = np.random.default_rng(seed)
    weights["fc/kernel"] = weights["fc/kernel"] + rng.normal(
        0, 1.5 * float(weights["fc/kernel"].std()), weights["fc/kernel"].shape
    ).astype(np.float32)
    return demo_model("torch", weights=weights)


def make_audit(out: str | os.PathLike[str], n: int = 60, method: str = "gradcam", seed: int = 0,
               *, source: str | os.PathLike[str] | None = None, model: object = "demo:torch",
               layer: str | None = None) -> Path:
    """An audit folder (``results.parquet``, ``overlays/``, ``report.html``...) at ``out``.

    ``source``: a manifest or folder; default a new :func:`make_dataset` in
    ``<out>-images`` next to ``out``.
    """
    from interp_core.audit import audit

    out = Path(out)
    if source is None:
        source = make_dataset(out.parent / f"{out.name}-images", n=n, seed=seed)
    audit(model, source, out, method=method, layer=layer, classes=list(CLASS_NAMES),
          size=64, progress=False, map_size=16)
    return out


def make_compare(root: str | os.PathLike[str], n: int = 60, seed: int = 0,
                 drop: int = 3) -> tuple[Path, Path]:
    """Two audits of the same images under ``root``: ``a`` (demo model, Grad-CAM) over every
    image, ``b`` (:func:`fixed_model`, Grad-CAM++) over all but the last ``drop``."""
    root = Path(root)
    manifest = make_dataset(root / "images", n=n, seed=seed)
    a = make_audit(root / "a", method="gradcam", source=manifest)
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    fewer = root / "images" / "manifest_b.csv"
    fewer.write_text("".join(lines[:len(lines) - drop]), encoding="utf-8")
    b = make_audit(root / "b", method="gradcampp", source=fewer, model=fixed_model())
    return a, b


def demo_torch() -> object:
    """The demo torch model (a ``file.py:attr`` spec for ``interp explain``)."""
    from interp_core.datasets.demo import demo_model

    return demo_model("torch")


def make_explain(out: str | os.PathLike[str], n: int = 12, seed: int = 0) -> Path:
    """An ``interp explain`` folder (``results.jsonl``, ``errors.jsonl``, overlays) at ``out``,
    over ``n`` images of a new dataset in ``<out>-images``; a file name has a space and an
    accent."""
    from interp_core.cli.command import main

    out = Path(out)
    manifest = make_dataset(out.parent / f"{out.name}-images", n=n, seed=seed)
    spec = f"{Path(__file__).resolve()}:demo_torch"
    status = main(["explain", spec, str(manifest.parent / "imgs"), "--out", str(out),
                   "--size", "64", "--no-progress"])
    if status != 0:
        raise RuntimeError(f"interp explain exited with {status}")
    return out


def make_training_log(out: str | os.PathLike[str], epochs: int = 4, samples: int = 3,
                      seed: int = 0) -> Path:
    """A training-log folder at ``out``: the demo torch model trained from its bundled weights
    with a little noise for ``epochs`` short epochs, with a ``CAMLogger`` (Grad-CAM on
    ``block3``) and a ``FeatureMapLogger`` (``block2``) sending to one ``FolderSink``."""
    import torch
    from interp_torch.training import CAMLogger, FeatureMapLogger

    from interp_core.datasets import make_shapes
    from interp_core.datasets.demo import demo_model, demo_weights
    from interp_core.logging import FolderSink

    rng = np.random.default_rng(seed)
    weights = {k: v + rng.normal(0, 0.5 * float(v.std() or 1.0), v.shape).astype(np.float32)
               for k, v in demo_weights().items()}
    model = demo_model("torch", weights=weights)
    data = make_shapes(64, seed=seed + 100)
    x = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(data.labels.astype(np.int64))
    sink = FolderSink(out)
    loggers = [CAMLogger(x[:samples], layer="block3", sink=sink),
               FeatureMapLogger(x[:samples], layer="block2", sink=sink, max_channels=8)]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(epochs):
        model.train()
        for start in range(0, len(x), 16):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[start:start + 16]),
                                                     y[start:start + 16])
            loss.backward()
            optimiser.step()
        model.eval()
        for logger in loggers:
            logger.on_epoch_end(model, epoch)
    for logger in loggers:
        logger.close()
    sink.close()
    return Path(out)
