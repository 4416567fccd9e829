"""Where training-time loggers send images: a folder with an HTML page, TensorBoard, W&B.

A sink takes named uint8 RGB images for one step (epoch)::

    sink.log_images("gradcam/layer4", {"sample_000": img0, "sample_001": img1}, step=3)
    sink.close()

Every sink imports its backend lazily, so the core still needs only NumPy and pluggy.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from interp_core.viz import save_png, to_uint8_image


@runtime_checkable
class Sink(Protocol):
    """What a logger writes to."""

    def log_images(self, tag: str, images: Mapping[str, np.ndarray], step: int) -> None:
        """Record ``images`` (name -> uint8 ``(H, W, 3)``) under ``tag`` at ``step``."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class FolderSink:
    """PNG files ``root/<tag>/<name>/step_0003.png`` plus ``root/index.html``.

    The page has one row per (tag, image name) and one column per step, so the evolution of
    each sample's explanation over training reads left to right. ``root/log.json`` lists what
    was written.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._log_path = self.root / "log.json"
        self.entries: list[dict[str, Any]] = (
            json.loads(self._log_path.read_text()) if self._log_path.exists() else []
        )

    def log_images(self, tag: str, images: Mapping[str, np.ndarray], step: int) -> None:
        for name, image in images.items():
            rel = Path(_safe(tag)) / _safe(name) / f"step_{int(step):04d}.png"
            save_png(self.root / rel, image)
            self.entries = [e for e in self.entries
                            if (e["tag"], e["name"], e["step"]) != (tag, name, int(step))]
            self.entries.append({"tag": tag, "name": name, "step": int(step), "path": str(rel)})
        self._write_index()

    def _write_index(self) -> None:
        self._log_path.write_text(json.dumps(self.entries, indent=1))
        steps = sorted({e["step"] for e in self.entries})
        rows: dict[tuple[str, str], dict[int, str]] = {}
        for e in self.entries:
            rows.setdefault((e["tag"], e["name"]), {})[e["step"]] = e["path"]
        head = "".join(f"<th>step {s}</th>" for s in steps)
        body = []
        for (tag, name), by_step in sorted(rows.items()):
            cells = "".join(
                f'<td><img src="{html.escape(by_step[s])}" width="128"></td>' if s in by_step
                else "<td></td>" for s in steps
            )
            body.append(f"<tr><th>{html.escape(tag)}<br>{html.escape(name)}</th>{cells}</tr>")
        page = (
            "<!doctype html><meta charset='utf-8'><title>interp-core training log</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;text-align:center}"
            "img{image-rendering:pixelated}</style><h1>Explanations during training</h1>"
            f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"
        )
        (self.root / "index.html").write_text(page)

    def close(self) -> None:
        self._write_index()


class TensorBoardSink:
    """Images into a TensorBoard event file under ``logdir``.

    Writes the event file itself, with the ``tensorboard`` package's protocol buffers and
    record framing only, so it imports no framework: a torch run never loads TensorFlow and a
    Keras run needs no torch. ``tensorboard`` (which TensorFlow >= 2.20 no longer installs)
    is checked here rather than after the first epoch.
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            raise ImportError("TensorBoardSink needs the tensorboard package: pip install "
                              "tensorboard") from None
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_EVENT_FILES)}")
        self.path = os.path.join(self.logdir, name)
        self._writer = RecordWriter(open(self.path, "wb"))  # noqa: SIM115 (closed in close())
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def log_images(self, tag: str, images: Mapping[str, np.ndarray], step: int) -> None:
        for name, image in images.items():
            img = to_uint8_image(image)
            picture = self._summary.Image(height=img.shape[0], width=img.shape[1],
                                          colorspace=3, encoded_image_string=_png_bytes(img))
            value = self._summary.Value(tag=f"{tag}/{name}", image=picture)
            self._write(self._event(wall_time=time.time(), step=int(step),
                                    summary=self._summary(value=[value])))
        self.flush()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if not self._writer.closed:
            self._writer.close()


#: Distinguishes event files that one process opens within the same second.
_EVENT_FILES = itertools.count()


def _png_bytes(image: np.ndarray) -> bytes:
    """uint8 ``(H, W, 3)`` as PNG bytes (zlib only, no Pillow): what TensorBoard displays."""
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


class WandbSink:
    """Images logged to Weights & Biases (``wandb.Image``), one run per sink.

    ``mode="offline"`` (or ``WANDB_MODE=offline``) writes locally without a network.
    Extra keyword arguments go to ``wandb.init``. Each tag is plotted against its own step
    metric (``interp/step``, declared with ``define_metric``) rather than W&B's global step, so
    images are not dropped when another logger (e.g. ``WandbMetricsLogger``) has already
    advanced the global step past the epoch number.
    """

    STEP_METRIC = "interp/step"

    def __init__(self, project: str = "interp-core", **init_kwargs: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError("WandbSink needs wandb: pip install wandb") from None
        self._wandb = wandb
        init_kwargs.setdefault("reinit", _wandb_reinit_value(wandb))
        self.run = wandb.init(project=project, **init_kwargs)
        self.run.define_metric(self.STEP_METRIC)
        self._tags: set[str] = set()

    def log_images(self, tag: str, images: Mapping[str, np.ndarray], step: int) -> None:
        if tag not in self._tags:
            self.run.define_metric(f"{tag}/*", step_metric=self.STEP_METRIC)
            self._tags.add(tag)
        payload: dict[str, Any] = {f"{tag}/{name}": self._wandb.Image(to_uint8_image(img))
                                   for name, img in images.items()}
        payload[self.STEP_METRIC] = int(step)
        self.run.log(payload)

    def close(self) -> None:
        self.run.finish()


def _wandb_reinit_value(wandb: Any) -> Any:
    """``"create_new"`` where this wandb accepts it (0.19.10+), else ``True`` (older versions
    take a bool), so that each sink gets a run of its own."""
    import inspect

    try:
        annotation = str(inspect.signature(wandb.init).parameters["reinit"].annotation)
    except (KeyError, TypeError, ValueError):
        return True
    return "create_new" if "create_new" in annotation else True
