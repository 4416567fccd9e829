"""``ic.audit`` / ``interp audit`` with the local engine, on generated shapes images."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_framework

require_framework("torch", "torch")
pq = pytest.importorskip("pyarrow.parquet", reason="the audit needs pyarrow (interp-core[audit])")

import interp_core as ic  # noqa: E402
from interp_core.audit import SCHEMA_VERSION, audit  # noqa: E402
from interp_core.audit import results as results_module  # noqa: E402
from interp_core.audit.results import decode_map, result_schema  # noqa: E402
from interp_core.audit.stats import mean_interval, t_quantile, wilson  # noqa: E402
from interp_core.cli.audit import add_audit_parser, cmd_audit, main  # noqa: E402
from interp_core.datasets import CLASSES, make_shapes  # noqa: E402
from interp_core.datasets.demo import demo_model  # noqa: E402
from interp_core.io.errors import ModelLoadError  # noqa: E402
from interp_core.io.outputs import OutputFolderError  # noqa: E402
from interp_core.methods.postprocess import resize_bilinear  # noqa: E402
from interp_core.metrics import energy_pointing_game, pointing_game  # noqa: E402
from interp_core.viz import save_png  # noqa: E402

N = 40
WRONG_BOX = (0, 0, 6, 6)  # (x0, y0, x1, y1): a corner where no object is


def write_dataset(root: Path, n: int, seed: int = 5) -> dict[str, object]:
    """Shapes PNGs in class sub-folders, mask PNGs, and a manifest with boxes and groups.

    Every fifth image gets a box in an empty corner, so the model that finds the object
    "misses" it: those are the right-for-the-wrong-reasons candidates.
    """
    data = make_shapes(n, seed=seed)
    rows = []
    for i in range(n):
        rel = f"imgs/{CLASSES[data.labels[i]]}/img{i:03d}.png"
        save_png(root / rel, data.images[i])
        save_png(root / f"masks/m{i:03d}.png", data.masks[i].astype(np.uint8) * 255)
        y0, x0, y1, x1 = (int(v) for v in data.boxes[i])
        box = WRONG_BOX if i % 5 == 0 else (x0, y0, x1, y1)
        rows.append({"path": rel, "label": CLASSES[data.labels[i]], "group": "AB"[i % 2],
                     "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"data": data, "rows": rows, "manifest": manifest, "folder": root / "imgs"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return write_dataset(tmp_path_factory.mktemp("shapes"), N)


@pytest.fixture(scope="module")
def manifest_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    return audit("demo:torch", dataset["manifest"], out, progress=False)


def library_maps(images: np.ndarray) -> ic.Explanation:
    """The maps the library gives for these images, to check the audit's rows against."""
    cam = ic.GradCAM(demo_model("torch"), "block3")
    return cam.explain(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def stored_maps(table) -> np.ndarray:
    return np.stack([decode_map(b, h, w) for b, h, w in zip(
        table.column("map").to_pylist(), table.column("map_height").to_pylist(),
        table.column("map_width").to_pylist(), strict=True)])


def png_images(paths: list[str]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                     for p in paths])


# -- sources ---------------------------------------------------------------------------------
def test_folder_source_labels_come_from_sub_folders(dataset, tmp_path):
    result = audit("demo:torch", dataset["folder"], tmp_path / "out", progress=False)
    table = result.table()
    assert result.images == N and result.failed == 0 and table.num_rows == N
    ids = table.column("id").to_pylist()
    assert ids == sorted(ids)  # source order: sorted file paths
    for item_id, label, index in zip(ids, table.column("label").to_pylist(),
                                     table.column("label_index").to_pylist(), strict=True):
        assert item_id.split("/")[0] == label
        assert CLASSES[index] == label
    assert table.column("pointing_game").null_count == N  # no boxes in a folder source
    assert all((tmp_path / "out" / o).is_file() for o in table.column("overlay").to_pylist())
    # the stored map is the library's map, resized to 32x32 and kept as float16
    exp = library_maps(png_images(table.column("path").to_pylist()))
    expected = resize_bilinear(exp.maps, (32, 32))
    np.testing.assert_allclose(stored_maps(table), expected, atol=1e-3)
    assert table.column("prediction").to_pylist() == exp.targets.tolist()
    np.testing.assert_allclose(table.column("score").to_numpy(), exp.scores, rtol=1e-5)


def test_manifest_boxes_groups_and_localisation(dataset, manifest_run):
    table = manifest_run.table()
    assert table.column("group").to_pylist() == [r["group"] for r in dataset["rows"]]
    exp = library_maps(png_images(table.column("path").to_pylist()))
    boxes = np.array([[r["y0"], r["x0"], r["y1"], r["x1"]] for r in dataset["rows"]])
    assert table.column("prediction").to_pylist() == exp.targets.tolist()
    hits = np.array(table.column("pointing_game").to_pylist())
    np.testing.assert_array_equal(hits, pointing_game(exp.maps, boxes=boxes))
    np.testing.assert_allclose(table.column("energy_in_box").to_numpy(),
                               energy_pointing_game(exp.maps, boxes=boxes), rtol=1e-5)
    wrong = np.arange(N) % 5 == 0
    assert not hits[wrong].any() and hits[~wrong].mean() > 0.8
    summary = manifest_run.summary
    assert set(summary["by_group"]) == {"A", "B"}
    assert set(summary["by_label"]) <= set(CLASSES)
    acc = summary["overall"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"] and acc["n"] == N
    correct = np.array(table.column("correct").to_pylist())
    assert acc["value"] == pytest.approx(correct.mean())


def test_masks_in_manifest(dataset, tmp_path):
    rows = [{"path": str(dataset["manifest"].parent / r["path"]), "label": r["label"],
             "mask": str(dataset["manifest"].parent / f"masks/m{i:03d}.png")}
            for i, r in enumerate(dataset["rows"][:12])]
    manifest = tmp_path / "masks.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    table = audit("demo:torch", manifest, tmp_path / "out", progress=False).table()
    exp = library_maps(png_images(table.column("path").to_pylist()))
    np.testing.assert_array_equal(np.array(table.column("pointing_game").to_pylist()),
                                  pointing_game(exp.maps, masks=dataset["data"].masks[:12]))
    assert table.column("box_x0").null_count == 12


def test_manifest_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.png,circle\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        audit("demo:torch", bad, tmp_path / "o1", progress=False)
    half = tmp_path / "half.csv"
    half.write_text("path,x0,y0\na.png,1,2\n")
    with pytest.raises(ValueError, match="a box needs all of"):
        audit("demo:torch", half, tmp_path / "o2", progress=False)
    twice = tmp_path / "twice.csv"
    twice.write_text("path\na.png\na.png\n")
    with pytest.raises(ValueError, match="same id"):
        audit("demo:torch", twice, tmp_path / "o3", progress=False)


# -- results: schema, report ----------------------------------------------------------------
def test_schema_is_versioned_and_documented(manifest_run):
    schema = pq.read_schema(manifest_run.results)
    assert schema.metadata[b"interp_audit_schema_version"] == str(SCHEMA_VERSION).encode()
    assert schema.names == result_schema().names
    config = json.loads(schema.metadata[b"interp_audit_config"])
    assert config["method"] == "gradcam" and config["classes"] == list(CLASSES)
    for name in schema.names:  # every column is described in the module's schema table
        assert name in results_module.__doc__, name
    record = json.loads((manifest_run.out / "audit.json").read_text())
    assert record["status"] == "complete" and record["schema_version"] == SCHEMA_VERSION
    # the demo model's layer: recorded per row, in the record and on the result
    assert set(manifest_run.table(["layer"]).column("layer").to_pylist()) == {"block3"}
    assert record["layers"] == ["block3"] and manifest_run.layers == ("block3",)


def test_default_layer_is_recorded(tmp_path, dataset):
    """With no layer given (a model that is not the demo spec), the row, the record and the
    result name the layer the workers chose."""
    result = audit("interp_torch.demo:DemoNet", dataset["manifest"], tmp_path / "out",
                   progress=False, size=64, report=False)
    assert result.layers == ("block3",)
    assert set(result.table(["layer"]).column("layer").to_pylist()) == {"block3"}


def test_report_names_classes_groups_and_wrong_reasons(dataset, manifest_run):
    html = manifest_run.report.read_text()
    table = manifest_run.table()
    for name in set(table.column("label").to_pylist()):
        assert f"<td>{name}</td>" in html
    assert "<td>A</td>" in html and "<td>B</td>" in html
    assert "Right for the wrong reasons" in html and "Worst-localised" in html
    assert "Wilson" in html
    # the correctly classified images with a misplaced box are shown as wrong reasons
    correct = table.column("correct").to_pylist()
    ids = table.column("id").to_pylist()
    section = html.split("Right for the wrong reasons")[1].split("Worst-localised")[0]
    for i in range(0, N, 5):
        if correct[i]:
            assert ids[i] in section
    overlays = [o for o in table.column("overlay").to_pylist()]
    assert any(o in section for o in overlays)


def test_unreadable_images_go_to_errors_jsonl(dataset, tmp_path):
    folder = tmp_path / "imgs"
    data = dataset["data"]
    for i in range(6):
        save_png(folder / CLASSES[data.labels[i]] / f"ok{i}.png", data.images[i])
    (folder / "circle" / "broken.png").write_bytes(b"not a png")
    good = (folder / CLASSES[data.labels[0]] / "ok0.png").read_bytes()
    (folder / "ring" / "truncated.png").parent.mkdir(exist_ok=True)
    (folder / "ring" / "truncated.png").write_bytes(good[: len(good) // 2])
    result = audit("demo:torch", folder, tmp_path / "out", progress=False)
    assert (result.images, result.failed) == (6, 2)
    errors = [json.loads(line) for line in result.errors.read_text().splitlines()]
    assert {e["id"] for e in errors} == {"circle/broken.png", "ring/truncated.png"}
    assert all(e["path"] in e["error"] for e in errors)
    assert "Unreadable images (2)" in result.report.read_text()


# -- nothing lost -----------------------------------------------------------------------------
SLOW_MODEL = """
    import time

    from interp_core.datasets.demo import demo_model


    def build():
        model = demo_model("torch")
        inner = model.forward

        def forward(x):
            time.sleep(0.25)
            return inner(x)

        model.forward = forward  # the instance's own forward: layers keep their names
        return model
"""


def test_resume_after_a_kill_ends_with_every_image_once(dataset, tmp_path):
    spec = tmp_path / "slow_model.py"
    spec.write_text(textwrap.dedent(SLOW_MODEL))
    out = tmp_path / "out"
    args = [f"{spec}:build", str(dataset["manifest"]), "--out", str(out), "--layer", "block3",
            "--size", "64", "--classes", ",".join(CLASSES), "--batch-size", "4",
            "--part-size", "4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "interp_core.audit", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "parts").glob("part-*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run wrote no parts in 2 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert not (out / "results.parquet").exists()
    written = pq.read_table(out / "parts", columns=["id"]).num_rows
    assert 8 <= written < N
    (out / "parts" / ".tmp-half-written.parquet").write_bytes(b"PAR1")  # as a kill leaves

    with pytest.raises(OutputFolderError, match="resume"):
        cmd_audit(_parse(args))
    assert cmd_audit(_parse([*args, "--resume"])) == 0
    record = json.loads((out / "audit.json").read_text())
    assert record["resumed"] == written and record["images"] == N
    table = pq.read_table(out / "results.parquet")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(r["path"] for r in dataset["rows"]) and len(set(ids)) == N
    assert table.column("index").to_pylist() == list(range(N))
    assert not list((out / "parts").glob(".tmp-*"))
    # the rows are those of an uninterrupted run
    fresh = audit("demo:torch", dataset["manifest"], tmp_path / "fresh", progress=False).table()
    assert table.column("prediction").equals(fresh.column("prediction"))
    assert table.column("pointing_game").equals(fresh.column("pointing_game"))
    np.testing.assert_allclose(stored_maps(table), stored_maps(fresh), atol=1e-3)


def test_resume_refuses_changed_settings_and_out_is_never_clobbered(dataset, tmp_path):
    out = tmp_path / "out"
    audit("demo:torch", dataset["manifest"], out, progress=False, map_size=16)
    with pytest.raises(OutputFolderError, match="results of an earlier audit"):
        audit("demo:torch", dataset["manifest"], out, progress=False)
    with pytest.raises(ValueError, match="map_size: 16 -> 32"):
        audit("demo:torch", dataset["manifest"], out, progress=False, resume=True)
    again = audit("demo:torch", dataset["manifest"], out, progress=False, map_size=16,
                  resume=True)
    assert (again.images, again.resumed) == (N, N)
    fresh = audit("demo:torch", dataset["manifest"], out, progress=False, overwrite=True)
    assert fresh.resumed == 0 and fresh.table(["map_height"]).column(0)[0].as_py() == 32


# -- options ----------------------------------------------------------------------------------
def first_four(dataset, tmp_path) -> Path:
    """A manifest of the dataset's first four images (absolute paths)."""
    manifest = tmp_path / "four.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows({"path": str(dataset["manifest"].parent / r["path"]),
                          "label": r["label"]} for r in dataset["rows"][:4])
    return manifest


def test_faithfulness_metrics_when_asked(dataset, tmp_path):
    manifest = first_four(dataset, tmp_path)
    table = audit("demo:torch", manifest, tmp_path / "out", progress=False,
                  faithfulness=("deletion", "insertion", "average_drop")).table()
    images = png_images(table.column("path").to_pylist())
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    model = demo_model("torch")
    exp = library_maps(images)
    expected = ic.metrics.deletion(model, x, exp.maps, exp.targets.tolist())
    np.testing.assert_allclose(table.column("deletion_auc").to_numpy(), expected, rtol=1e-4)
    assert table.column("insertion_auc").null_count == 0
    assert table.column("average_drop").null_count == 0


def test_target_label_explains_the_true_class(dataset, tmp_path):
    table = audit("demo:torch", dataset["manifest"], tmp_path / "out", progress=False,
                  target="label").table()
    assert table.column("target").to_pylist() == table.column("label_index").to_pylist()
    predicted = table.column("prediction").to_numpy()
    exp = library_maps(png_images(table.column("path").to_pylist()))
    np.testing.assert_array_equal(predicted, exp.targets)


def test_live_model_only_with_the_local_engine(dataset, tmp_path):
    model = demo_model("torch")
    with pytest.raises(TypeError, match="cannot ship a live"):
        audit(model, dataset["manifest"], tmp_path / "ray", engine="ray", progress=False)
    result = audit(model, dataset["folder"], tmp_path / "local", layer="block3", size=64,
                   classes=CLASSES, progress=False)
    assert result.images == N


def test_model_file_spec_is_built_by_the_worker(dataset, tmp_path, monkeypatch):
    import torch

    torch.save(demo_model("torch"), tmp_path / "demo.pt")
    monkeypatch.chdir(tmp_path)  # a relative path: the config stores it absolute
    with pytest.raises(ModelLoadError, match="trust"):  # a pickle runs code: trusted only
        audit("demo.pt", dataset["folder"], tmp_path / "out", layer="block3", size=64,
              classes=CLASSES, progress=False)
    assert not (tmp_path / "out").exists()
    result = audit("demo.pt", dataset["folder"], tmp_path / "out", layer="block3", size=64,
                   classes=CLASSES, progress=False, trust_model=True)
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert record["config"]["model"] == str(tmp_path / "demo.pt")
    reference = audit("demo:torch", dataset["folder"], tmp_path / "ref", progress=False)
    assert result.table().drop(["map"]).equals(reference.table().drop(["map"]))


def test_wandb_offline_logs_table_and_summary(dataset, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = audit("demo:torch", dataset["manifest"], tmp_path / "out", progress=False,
                   wandb=True, wandb_rows=10)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (table_file,) = runs[0].rglob("audit_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:4] == ["id", "image", "overlay", "label"]
    assert len(table["data"]) == 10
    assert table["data"][0][0] == result.table(["id"]).column(0)[0].as_py()
    keys = (b"group/A/accuracy", b"class/circle/pointing_game", b"accuracy_low")
    deadline = time.monotonic() + 30  # W&B's service process may still be flushing the file
    while True:
        log = wandb_payload(next(runs[0].glob("*.wandb")))
        if all(k in log for k in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key in keys:
        assert key in log  # summary keys, stored as run metrics


def wandb_payload(path: Path) -> bytes:
    """The records of a W&B run file, joined: the file is a LevelDB-style log of 32 KiB
    blocks whose 7-byte record headers may cut a key in two."""
    data, out, pos, block = path.read_bytes(), bytearray(), 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's zero-padded tail
            pos += block - pos % block
            continue
        length = struct.unpack("<H", data[pos + 4:pos + 6])[0]
        out += data[pos + 7:pos + 7 + length]
        pos += 7 + length
    return bytes(out)


# -- command line -----------------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="interp")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["audit", *argv])


def test_cli_audit_prints_a_summary(dataset, tmp_path, capsys):
    args = _parse(["demo:torch", str(dataset["manifest"]), "--out", str(tmp_path / "o"),
                   "--no-progress", "--map-size", "8"])
    assert args.func is cmd_audit and cmd_audit(args) == 0
    out = capsys.readouterr().out
    assert f"{N} image(s) explained" in out and "report.html" in out
    assert pq.read_table(tmp_path / "o" / "results.parquet").column("map_width")[0].as_py() == 8
    assert main(["demo:torch", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_importing_the_audit_loads_no_heavy_module():
    code = ("import sys, interp_core.audit, interp_core.cli.audit; "
            "print(sorted(m for m in ('ray', 'pyarrow', 'torch', 'PIL', 'wandb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- statistics -------------------------------------------------------------------------------
def test_confidence_intervals():
    p, lo, hi = wilson(0, 10)
    assert (p, lo) == (0.0, 0.0) and hi == pytest.approx(0.2775, abs=1e-4)
    p, lo, hi = wilson(95, 100)
    assert (lo, hi) == pytest.approx((0.8882, 0.9785), abs=1e-4)
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-3)
    mean, lo, hi, n = mean_interval(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (mean, n) == (2.0, 3) and hi - mean == pytest.approx(4.3027 / np.sqrt(3), abs=1e-3)


def test_target_free_method_rows_have_no_score_but_a_prediction(dataset, tmp_path):
    manifest = first_four(dataset, tmp_path)
    table = audit("demo:torch", manifest, tmp_path / "out", progress=False, method="eigencam",
                  faithfulness=("deletion",)).table()
    images = png_images(table.column("path").to_pylist())
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    gradcam = library_maps(images)
    # the prediction comes from its own pass, the map explains no class
    np.testing.assert_array_equal(table.column("prediction").to_numpy(), gradcam.targets)
    np.testing.assert_allclose(table.column("prediction_score").to_numpy(), gradcam.scores,
                               rtol=1e-5)
    assert table.column("target").to_pylist() == [-1] * 4
    assert table.column("score").null_count == 4
    maps = ic.EigenCAM(demo_model("torch"), "block3")(x)
    expected = ic.metrics.deletion(demo_model("torch"), x, maps, gradcam.targets.tolist())
    np.testing.assert_allclose(table.column("deletion_auc").to_numpy(), expected, rtol=1e-4)
