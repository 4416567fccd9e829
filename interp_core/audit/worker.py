"""The per-batch work shared by every engine: images in, result rows out.

:class:`BatchWorker` is built once per process (the local engine) or once per Ray actor; it
builds the model from the config and then maps a pyarrow table of work items
(:func:`interp_core.audit.sources.work_schema`) to a table of result rows
(:func:`interp_core.audit.results.part_schema`), one per item, in the same order. An image
that cannot be read becomes a row with ``error`` set; it never stops the batch. Both engines
feed the same batches (consecutive ``batch_size`` slices of the work table) to the same code,
so they produce the same rows.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.audit.config import AuditConfig, build_model, set_framework_threads
from interp_core.audit.results import encode_maps, part_schema
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import get_backend
from interp_core.backend.target_spec import resolve_targets
from interp_core.io.images import read_mask
from interp_core.io.outputs import save_array, save_whole
from interp_core.io.preprocess import LoadedInput, input_format
from interp_core.io.volumes import middle_slice_map
from interp_core.methods import method_class
from interp_core.methods.postprocess import resize_bilinear
from interp_core.metrics import (
    average_drop,
    deletion,
    energy_pointing_game,
    insertion,
    pointing_game,
)
from interp_core.viz import overlay, save_png

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _output_name(item_id: str, folder: str, suffix: str) -> str:
    stem = _UNSAFE.sub("_", Path(item_id).stem)[:60] or "image"
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:10]
    return f"{folder}/{stem}-{digest}{suffix}"


def overlay_name(item_id: str) -> str:
    """``overlays/<stem>-<hash>.png``: readable, unique per id, stable across runs."""
    return _output_name(item_id, "overlays", ".png")


def array_name(item_id: str) -> str:
    """``maps/<stem>-<hash>.npy``: the full map of an array input (a volume)."""
    return _output_name(item_id, "maps", ".npy")


def box_region(box: tuple[float, float, float, float], width: int, height: int,
               size: tuple[int, int]) -> np.ndarray:
    """A box ``(x0, y0, x1, y1)`` in original pixels as a bool ``(H, W)`` mask at ``size``.

    Raises
    ------
    ValueError
        An empty box, or one wholly outside the ``width`` x ``height`` image (a box that
        crosses the border is cut to the image).
    """
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box (x0, y0, x1, y1)={box} is empty: it needs x1 > x0 and y1 > y0")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box (x0, y0, x1, y1)={box} lies wholly outside the {width}x{height} "
                         "image: boxes are in the original image's pixels")
    sy, sx = size[0] / height, size[1] / width
    rows = np.arange(size[0])
    cols = np.arange(size[1])
    in_y = (rows >= math.floor(y0 * sy)) & (rows < math.ceil(y1 * sy))
    in_x = (cols >= math.floor(x0 * sx)) & (cols < math.ceil(x1 * sx))
    return in_y[:, None] & in_x[None, :]


def stored_map_size(size: tuple[int, ...], longest: int) -> tuple[int, int]:
    """The map's stored ``(h, w)``: the input's aspect (of a volume's slice), longest side at
    most ``longest``."""
    size = size[-2:]
    scale = min(1.0, longest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


class BatchWorker:
    """Builds the model once; then ``worker(batch) -> rows`` (both pyarrow tables).

    Parameters
    ----------
    config : AuditConfig
        The run's settings; ``config.model`` is built here (never shipped as a live object).
    model : optional
        A live model to use instead (the local engine with a model object).
    """

    #: A first batch that fails on every image raises (a setup error) instead of giving error
    #: rows. The Ray engine checks its setup on one row before the pool starts, so its
    #: actors (restarted ones too) need not.
    raise_setup_errors = True

    def __init__(self, config: AuditConfig, model: Any = None) -> None:
        self.config = config
        self.model = (build_model(config.model, config.cwd, trust=config.trust_model,
                                  weights=config.weights) if model is None else model)
        self._restore_threads = set_framework_threads(config.threads)
        if config.device == "cuda" and model is None and hasattr(self.model, "to"):
            self.model = self.model.to("cuda")
        self.backend = get_backend(config.backend if config.backend else self.model)
        self.format = input_format(self.backend, self.model, size=config.size,
                                   channels=config.channels, mean=config.mean, std=config.std)
        self.cam = method_class(config.method)(self.model, config.layer,
                                               backend=self.backend.name,
                                               **config.method_options)
        self.map_hw = stored_map_size(self.format.size, config.map_size)
        self.out = Path(config.out)
        self.explained = 0  # images explained so far (a first batch that all fails raises)

    def close(self) -> None:
        """Give the framework back its thread count (the local engine's process is the
        user's)."""
        self._restore_threads()

    # -- one batch ------------------------------------------------------------------------
    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        items = batch.to_pylist()
        rows: list[dict[str, Any]] = [_base_row(item) for item in items]
        loaded: list[int] = []
        inputs: list[LoadedInput] = []
        regions: list[np.ndarray | None] = []
        for i, item in enumerate(items):
            try:
                read = self.format.load(item["path"])
                region = self._region(item, read)
            except ValueError as exc:  # FileReadError, and a box that is no box
                rows[i]["error"] = str(exc)
                continue
            rows[i]["width"], rows[i]["height"] = read.width, read.height
            loaded.append(i)
            inputs.append(read)
            regions.append(region)
        if loaded:
            self._explain_isolated(items, rows, loaded, inputs, regions)
        return pa.Table.from_pylist(rows, schema=part_schema())

    def _explain_isolated(self, items: list[dict[str, Any]], rows: list[dict[str, Any]],
                          loaded: list[int], inputs: list[LoadedInput],
                          regions: list[np.ndarray | None]) -> None:
        """Explain the batch; where that raises, each image alone, so that the images the
        model cannot take get an ``error`` row and the others their results.

        A worker that has not explained any image yet and fails on every one of its first
        batch raises the first error (a setup error: a wrong layer, inputs of the wrong
        shape), rather than turning the whole dataset into error rows.
        """
        try:
            self._explain(items, rows, loaded, inputs, regions)
            self.explained += len(loaded)
            return
        except Exception as exc:
            if len(loaded) > 1:
                first = exc
            elif self.explained or not self.raise_setup_errors:
                self._failed(items[loaded[0]], rows, loaded[0], exc)
                return
            else:
                raise
        ok = 0
        for k, i in enumerate(loaded):
            try:
                self._explain(items, rows, [i], [inputs[k]], [regions[k]])
                ok += 1
            except Exception as exc:
                self._failed(items[i], rows, i, exc)
        if not ok and not self.explained and self.raise_setup_errors:
            raise first
        self.explained += ok

    @staticmethod
    def _failed(item: dict[str, Any], rows: list[dict[str, Any]], i: int,
                exc: Exception) -> None:
        rows[i] = {**_base_row(item), "width": rows[i].get("width"),
                   "height": rows[i].get("height"),
                   "error": f"explaining failed: {type(exc).__name__}: {exc}"}

    def _region(self, item: dict[str, Any], read: LoadedInput) -> np.ndarray | None:
        if item.get("mask") is None and item.get("box_x0") is None:
            return None
        size = self.format.size
        if len(size) != 2:
            raise ValueError(f"{item['path']!r}: boxes and masks are 2-D; this "
                             f"{len(size)}-D input cannot have one")
        if item.get("mask"):
            return read_mask(item["mask"], (size[0], size[1]),
                             max_pixels=self.format.max_pixels)
        box = (item["box_x0"], item["box_y0"], item["box_x1"], item["box_y1"])
        return box_region(box, read.width, read.height, (size[0], size[1]))

    def _targets(self, x: Any, labels: list[int | None]) -> tuple[Any, np.ndarray | None,
                                                                  np.ndarray | None]:
        """What to explain, and the (prediction, score) pair when it needs its own pass."""
        target = self.config.target
        if target == "predicted" and not self.cam.target_free:
            return None, None, None
        top1 = resolve_targets(None, len(labels))
        cap = self.backend.capture(self.model, x, [], top1, gradients=False,
                                   output=self.cam.output)
        predicted = np.asarray(cap.targets, dtype=np.int64)
        if target == "predicted":  # a target-free method's explanation has no prediction
            return None, predicted, np.asarray(cap.scores, dtype=np.float32)
        if target == "label":
            chosen = [p if lab is None else lab for lab, p in zip(labels, predicted, strict=True)]
            return chosen, predicted, np.asarray(cap.scores, dtype=np.float32)
        return int(target), predicted, np.asarray(cap.scores, dtype=np.float32)

    def _explain(self, items: list[dict[str, Any]], rows: list[dict[str, Any]],
                 loaded: list[int], inputs: list[LoadedInput],
                 regions: list[np.ndarray | None]) -> None:
        cfg = self.config
        batch = self.format.normalise(np.stack([item.pixels for item in inputs]))
        x = self.backend.from_numpy(to_backend_layout(batch, self.backend, self.model),
                                    self.model)
        labels = [items[i]["label_index"] for i in loaded]
        targets, predicted, predicted_scores = self._targets(x, labels)
        exp = self.cam.explain(x, targets)
        maps = exp.maps
        if predicted is None:
            predicted, predicted_scores = exp.targets, exp.scores
        # A target-free map explains no class; its faithfulness is measured for the class
        # the audit asked for (the prediction, the label or the given class).
        asked = exp.targets if not self.cam.target_free else (
            predicted if targets is None else np.broadcast_to(np.asarray(targets), len(maps)))
        metrics = self._metrics(x, maps, np.asarray(asked, dtype=np.int64), regions)
        scores = [None] * len(maps) if self.cam.target_free else exp.scores.tolist()
        slices = maps if maps.ndim == 3 else np.stack([middle_slice_map(m) for m in maps])
        small = (slices if tuple(slices.shape[1:]) == self.map_hw
                 else resize_bilinear(slices, self.map_hw))
        blobs = encode_maps(small)
        layer = ",".join(exp.layers)
        for j, i in enumerate(loaded):
            row = rows[i]
            label = items[i]["label_index"]
            row.update(
                prediction=int(predicted[j]), prediction_score=float(predicted_scores[j]),
                correct=None if label is None else bool(int(predicted[j]) == label),
                target=int(exp.targets[j]), score=scores[j], layer=layer,
                map=blobs[j],
                map_height=self.map_hw[0], map_width=self.map_hw[1],
            )
            for name, values in metrics.items():
                value = values[j]
                row[name] = None if value is None else (
                    bool(value) if name == "pointing_game" else float(value))
            if cfg.overlays:
                name = overlay_name(items[i]["id"])
                picture = overlay(inputs[j].display, slices[j], alpha=cfg.alpha)
                save_whole(self.out / name, lambda p, image=picture: save_png(p, image))
                row["overlay"] = name
            if inputs[j].is_array:
                name = array_name(items[i]["id"])
                save_array(self.out / name, maps[j])
                row["map_array"] = name

    def _metrics(self, x: Any, maps: np.ndarray, targets: np.ndarray,
                 regions: list[np.ndarray | None]) -> dict[str, list[Any]]:
        n = len(maps)
        out: dict[str, list[Any]] = {}
        have = [j for j, r in enumerate(regions) if r is not None]
        if have:
            masks = np.stack([regions[j] for j in have])
            hits = pointing_game(maps[have], masks=masks)
            energy = energy_pointing_game(maps[have], masks=masks)
            pg: list[Any] = [None] * n
            en: list[Any] = [None] * n
            for k, j in enumerate(have):
                pg[j], en[j] = bool(hits[k]), float(energy[k])
            out["pointing_game"], out["energy_in_box"] = pg, en
        functions = {"deletion": ("deletion_auc", deletion),
                     "insertion": ("insertion_auc", insertion),
                     "average_drop": ("average_drop", average_drop)}
        for metric in self.config.faithfulness:
            column, fn = functions[metric]
            values = fn(self.model, x, maps, targets.tolist(), backend=self.backend.name,
                        batch_size=self.config.batch_size, output=self.cam.output)
            out[column] = [float(v) for v in values]
        return out


def _base_row(item: dict[str, Any]) -> dict[str, Any]:
    """A result row with the work item's columns and nothing computed yet."""
    return {
        "id": item["id"], "index": item["index"], "path": item["path"],
        "label": item["label"], "label_index": item["label_index"], "group": item["group"],
        "box_x0": item["box_x0"], "box_y0": item["box_y0"], "box_x1": item["box_x1"],
        "box_y1": item["box_y1"], "mask": item["mask"], "map_array": None, "error": None,
    }
