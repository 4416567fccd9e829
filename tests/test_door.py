"""The one door for files, models and output folders, tried as a user would: every case of
issue 20 through ``interp explain`` and ``interp audit`` (local engine; the Ray engine in
``tests/test_door_ray.py``)."""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interp_core import cli
from tests.conftest import require_framework

torch = require_framework("torch", "torch")
pq = pytest.importorskip("pyarrow.parquet")

from tests.door_models import recorded  # noqa: E402

MODELS = Path(__file__).resolve().parent / "door_models.py"
GRAY = f"{MODELS}:GrayNet"
VOLUME = f"{MODELS}:VolumeNet"


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ramp16(path: Path, size: int = 48) -> Path:
    """A 16-bit grayscale PNG whose values run from 0 to 65535 (mean 0.5 of white)."""
    values = np.tile(np.linspace(0, 65535, size), (size, 1)).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    return path


def noise_png(path: Path, seed: int, size: int = 40, mode: str = "RGB") -> Path:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def claim_png_size(path: Path, width: int, height: int) -> Path:
    """Rewrite a PNG's header to claim ``width`` x ``height`` (a 389 KB file can claim
    20000x20000)."""
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


# -- images: one reader ---------------------------------------------------------------------
def test_sixteen_bit_image_gives_the_same_array_through_explain_and_audit(tmp_path,
                                                                         monkeypatch):
    image = ramp16(tmp_path / "in" / "ramp.png")
    seen = {}
    for command in ("explain", "audit"):
        folder = tmp_path / f"seen-{command}"
        folder.mkdir()
        monkeypatch.setenv("INTERP_RECORD_INPUTS", str(folder))
        extra = ("--no-progress",) if command == "audit" else ()
        assert run(command, GRAY, image if command == "explain" else image.parent,
                   "--size", "32", "--out", tmp_path / f"out-{command}", *extra) == 0
        seen[command] = recorded(folder)
    (explained,), (audited,) = seen["explain"], seen["audit"]
    assert explained.shape == (1, 32, 32)  # one channel: the model's, with no flag
    np.testing.assert_array_equal(explained, audited)
    # the values keep their 16 bits: a ramp from black to white, not 99% white
    assert abs(float(explained.mean()) - 0.5) < 0.02
    np.testing.assert_allclose(explained[0, 0], np.linspace(0, 1, 32), atol=0.02)


def test_huge_broken_and_linked_files_become_error_lines_in_explain_and_audit(tmp_path):
    folder = tmp_path / "in"
    noise_png(folder / "good" / "a.png", 1)
    ramp16(folder / "good" / "b.png")
    claim_png_size(noise_png(folder / "bad" / "huge.png", 2, 8), 20000, 20000)
    (folder / "bad" / "text.png").write_text("not an image")
    (folder / "bad" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "bad" / "loop.png").symlink_to(folder / "bad" / "loop.png")
    reasons = {"huge.png": "decompression bomb", "text.png": "not an image format",
               "dangling.png": "broken symbolic link", "loop.png": "loop"}

    out = tmp_path / "explain"
    assert run("explain", GRAY, folder, "--size", "32", "--out", out) == 0
    assert len(lines(out / "results.jsonl")) == 2
    errors = {Path(e["file"]).name: e["error"] for e in lines(out / "errors.jsonl")}
    assert set(errors) == set(reasons)
    for name, words in reasons.items():
        assert words in errors[name], (name, errors[name])

    audit_out = tmp_path / "audit"
    assert run("audit", GRAY, folder, "--size", "32", "--out", audit_out, "--no-progress") == 0
    table = pq.read_table(audit_out / "results.parquet")
    assert sorted(Path(p).name for p in table.column("path").to_pylist()) == ["a.png", "b.png"]
    errors = {Path(e["path"]).name: e["error"] for e in lines(audit_out / "errors.jsonl")}
    assert set(errors) == set(reasons)
    for name, words in reasons.items():
        assert words in errors[name] and name in errors[name], (name, errors[name])


def _manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "x0", "y0", "x1", "y1", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_oversized_mask_and_box_outside_the_image_are_error_rows(tmp_path):
    image = noise_png(tmp_path / "img.png", 3)
    mask = claim_png_size(noise_png(tmp_path / "mask.png", 4, 8, "L"), 20000, 20000)
    rows = [
        {"path": "img.png", "x0": 5, "y0": 5, "x1": 20, "y1": 20},      # a good box
        {"path": "img.png", "x0": 50, "y0": 5, "x1": 60, "y1": 20},     # right of the image
        {"path": "img.png", "x0": -30, "y0": -30, "x1": -1, "y1": -1},  # above and left
    ]
    manifest = _manifest(tmp_path / "boxes.csv", [
        {**row, "mask": ""} for row in rows])
    for i, row in enumerate(rows):
        row_id = f"{row['path']}#{i}"  # the same file three times needs ids
        rows[i] = {**row, "id": row_id}
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "x0", "y0", "x1", "y1",
                                                    "mask"])
        writer.writeheader()
        writer.writerows([*({**r, "mask": ""} for r in rows),
                          {"id": "masked", "path": image.name, "mask": mask.name}])
    out = tmp_path / "out"
    assert run("audit", GRAY, manifest, "--size", "32", "--out", out, "--no-progress") == 0
    table = pq.read_table(out / "results.parquet")
    assert table.column("id").to_pylist() == ["img.png#0"]
    errors = {e["id"]: e["error"] for e in lines(out / "errors.jsonl")}
    assert "wholly outside the 40x40 image" in errors["img.png#1"]
    assert "wholly outside" in errors["img.png#2"]
    assert "mask" in errors["masked"] and "decompression bomb" in errors["masked"]
    assert str(mask) in errors["masked"]


def test_nothing_explained_exits_2_in_explain_and_audit(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert run("explain", GRAY, folder, "--out", tmp_path / "e") == 2
    assert "nothing was explained" in capsys.readouterr().err
    assert run("audit", GRAY, folder, "--out", tmp_path / "a", "--no-progress") == 2
    err = capsys.readouterr().err
    assert "nothing was explained" in err and "errors.jsonl" in err


# -- models the CLI used to refuse ----------------------------------------------------------
def test_one_channel_torch_model_is_explained_with_no_flags(tmp_path):
    noise_png(tmp_path / "in" / "rgb.png", 5)
    noise_png(tmp_path / "in" / "rgba.png", 6, mode="RGBA")
    assert run("explain", GRAY, tmp_path / "in", "--size", "32", "--out", tmp_path / "o") == 0
    assert len(lines(tmp_path / "o" / "results.jsonl")) == 2


def test_grayscale_keras_model_saved_as_hdf5_is_explained_with_no_flags(tmp_path):
    require_framework("tensorflow", "tensorflow")
    import keras

    model = keras.Sequential([
        keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    path = tmp_path / "gray.hdf5"  # what ModelCheckpoint writes by default
    model.save(path)
    noise_png(tmp_path / "in" / "rgb.png", 7)
    ramp16(tmp_path / "in" / "gray16.png")
    assert run("explain", path, tmp_path / "in", "--size", "32", "--out", tmp_path / "o") == 0
    results = lines(tmp_path / "o" / "results.jsonl")
    assert [r["backend"] for r in results] == ["tensorflow", "tensorflow"]


def test_channel_counts_that_do_not_convert_are_a_clear_error(tmp_path, capsys):
    noise_png(tmp_path / "a.png", 8)
    assert run("explain", GRAY, tmp_path / "a.png", "--channels", "2",
               "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "3 channel(s) and the model takes 2" in err
    assert run("explain", GRAY, tmp_path / "a.png", "--mean", "0.4,0.5,0.6",
               "--out", tmp_path / "o") == 2
    assert "--mean has 3 numbers and the model takes 1 channel" in capsys.readouterr().err


MALICIOUS = """
import builtins


class Payload:
    def __reduce__(self):
        return (builtins.exec, ("open({marker!r}, 'w').write('ran')",))
"""


def test_malicious_pt_runs_nothing_without_trust_model(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    namespace: dict = {}
    exec(MALICIOUS.format(marker=str(marker)), namespace)  # the attacker's side
    evil = tmp_path / "evil.pt"
    torch.save({"model": namespace["Payload"]()}, evil)
    noise_png(tmp_path / "in" / "a.png", 9)
    assert run("explain", evil, tmp_path / "in", "--out", tmp_path / "o") == 2
    assert run("layers", evil) == 2
    assert run("audit", evil, tmp_path / "in", "--out", tmp_path / "a", "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.count("--trust-model") == 3 and "trust=True" not in err
    assert not marker.exists()
    assert not (tmp_path / "o").exists() and not (tmp_path / "a").exists()
    run("layers", evil, "--trust-model")  # the opt-in does load it: the test can fail
    assert marker.read_text() == "ran"


# -- output folders ---------------------------------------------------------------------------
def test_audit_overwrite_never_deletes_what_no_audit_wrote(tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(3):
        noise_png(folder / f"img{i}.png", 10 + i)
    out = tmp_path / "out"
    for name in ("parts", "overlays"):
        (out / name).mkdir(parents=True)
        (out / name / "mine.txt").write_text("my notes")
    (out / "report.html").write_text("my report")
    (out / "errors.jsonl").write_text("my log\n")
    for extra in ((), ("--overwrite",)):
        assert run("audit", GRAY, folder, "--size", "32", "--out", out, "--no-progress",
                   *extra) == 2
        err = capsys.readouterr().err
        assert "in the way" in err and "pass --overwrite" not in err
    assert (out / "report.html").read_text() == "my report"
    assert (out / "parts" / "mine.txt").exists() and (out / "overlays" / "mine.txt").exists()

    fresh = tmp_path / "fresh"
    assert run("audit", GRAY, folder, "--size", "32", "--out", fresh, "--no-progress") == 0
    (fresh / "overlays" / "mine.png").write_bytes(b"my picture")
    (fresh / "notes.txt").write_text("mine")
    first_overlays = sorted(p.name for p in (fresh / "overlays").glob("*-*.png"))
    assert len(first_overlays) == 3
    assert run("audit", GRAY, folder, "--size", "32", "--out", fresh, "--no-progress") == 2
    assert "--resume" in capsys.readouterr().err
    (folder / "img2.png").unlink()
    assert run("audit", GRAY, folder, "--size", "32", "--out", fresh, "--no-progress",
               "--overwrite") == 0
    assert (fresh / "overlays" / "mine.png").read_bytes() == b"my picture"
    assert (fresh / "notes.txt").read_text() == "mine"
    assert len(list((fresh / "overlays").glob("*-*.png"))) == 2  # the old third is gone
    assert pq.read_table(fresh / "results.parquet").num_rows == 2


def test_explain_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    noise_png(tmp_path / "in" / "x.png", 20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_gradcam.png").write_bytes(b"someone else's picture")
    assert run("explain", GRAY, tmp_path / "in", "--out", out, "--overwrite") == 2
    assert "in the way" in capsys.readouterr().err
    assert (out / "x_gradcam.png").read_bytes() == b"someone else's picture"
    (out / "x_gradcam.png").unlink()
    (out / "notes.txt").write_text("mine")
    assert run("explain", GRAY, tmp_path / "in", "--out", out) == 0
    assert run("explain", GRAY, tmp_path / "in", "--out", out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"
    owned = json.loads((out / "explain.json").read_text())["interp_outputs"]["files"]
    assert "notes.txt" not in owned and "x_gradcam.png" in owned


def test_explain_overlay_names_never_collide(tmp_path):
    for seed, (folder, stem) in enumerate((("a", "x"), ("b", "x"), ("c", "x_1"))):
        noise_png(tmp_path / "in" / folder / f"{stem}.png", seed)
    out = tmp_path / "out"
    assert run("explain", GRAY, tmp_path / "in", "--size", "32", "--out", out) == 0
    results = lines(out / "results.jsonl")
    overlays = [r["overlay"] for r in results]
    assert len(set(overlays)) == 3 and all(Path(o).is_file() for o in overlays)
    assert any(Path(o).name == "x_1_gradcam.png" for o in overlays)
    pictures = {np.asarray(Image.open(o)).tobytes() for o in overlays}
    assert len(pictures) == 3  # three different images, three different pictures


def test_two_runs_into_one_folder_keep_each_others_files(tmp_path, capsys):
    noise_png(tmp_path / "in" / "x.png", 21)
    out = tmp_path / "shared"
    assert run("explain", GRAY, tmp_path / "in", "--out", out) == 0
    assert run("explain", GRAY, tmp_path / "in", "--out", out, "--method", "layercam") == 2
    assert "--resume" in capsys.readouterr().err
    assert run("audit", GRAY, tmp_path / "in", "--out", out, "--no-progress") == 2
    assert "errors.jsonl" in capsys.readouterr().err  # explain's: not the audit's to replace


# -- typos never block their fix --------------------------------------------------------------
def test_a_method_typo_in_audit_writes_nothing(tmp_path, capsys):
    noise_png(tmp_path / "in" / "a.png", 22)
    out = tmp_path / "out"
    assert run("audit", GRAY, tmp_path / "in", "--out", out, "--method", "scorcam") == 2
    assert "did you mean 'scorecam'" in capsys.readouterr().err
    assert not out.exists()
    assert run("audit", GRAY, tmp_path / "in", "--out", out, "--method", "scorecam",
               "--size", "32", "--no-progress") == 0


def test_a_layer_typo_leaves_nothing_that_blocks_the_rerun(tmp_path, capsys):
    noise_png(tmp_path / "in" / "a.png", 23)
    for command in ("explain", "audit"):
        out = tmp_path / command
        assert run(command, GRAY, tmp_path / "in", "--out", out, "--layer", "feature") == 2
        err = capsys.readouterr().err
        assert "unknown --layer 'feature'; did you mean 'features'" in err
        assert "interp layers MODEL" in err and "layer_names" not in err
        assert not (out / "results.jsonl").exists() and not (out / "parts").exists()
        assert run(command, GRAY, tmp_path / "in", "--out", out, "--layer", "features",
                   "--size", "32", "--no-progress") == 0


# -- command-line manners ---------------------------------------------------------------------
def test_help_shows_choices_and_defaults(capsys):
    for command in ("explain", "audit"):
        with pytest.raises(SystemExit):
            run(command, "--help")
        text = " ".join(capsys.readouterr().out.split())
        assert "gradcam++" in text and "scorecam" in text  # the methods
        assert "(default: gradcam)" in text and "--trust-model" in text
    with pytest.raises(SystemExit):
        run("--version")
    assert capsys.readouterr().out.startswith("interp ")


def test_progress_without_tqdm_prints_lines_off_a_terminal(monkeypatch):
    from interp_core.io.progress import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    stream = io.StringIO()
    with Progress(100, "auditing", stream=stream, every=25) as progress:
        for _ in range(10):
            progress.update(10)
    printed = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in printed] == [
        "auditing: 30/100 images", "auditing: 60/100 images", "auditing: 90/100 images",
        "auditing: 100/100 images"]
    assert "images/s" in printed[0]


def test_explain_reports_progress_when_not_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    for i in range(3):
        noise_png(tmp_path / "in" / f"{i}.png", 30 + i)
    assert run("explain", GRAY, tmp_path / "in", "--size", "32", "--batch-size", "1",
               "--out", tmp_path / "o") == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err] == [
        f"explaining: {i}/3 images" for i in (1, 2, 3)]


def test_meta_device_model_gets_our_error(tmp_path, capsys):
    factory = tmp_path / "meta_model.py"
    factory.write_text(
        "import torch\nfrom tests.door_models import GrayNet\n\n\ndef build():\n"
        "    with torch.device('meta'):\n        return GrayNet()\n")
    noise_png(tmp_path / "in" / "a.png", 40)
    assert run("explain", f"{factory}:build", tmp_path / "in", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "meta" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# -- volumes and stacks -----------------------------------------------------------------------
def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((12, 16, 16)).astype(np.float32) * 1000.0


def test_volumes_through_explain_and_audit(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", _volume(1))
    np.savez(folder / "b.npz", image=_volume(2))
    nibabel.save(nibabel.Nifti1Image(_volume(3), np.eye(4)), folder / "c.nii.gz")
    out = tmp_path / "explain"
    assert run("explain", VOLUME, folder, "--size", "8x12x12", "--out", out) == 0
    results = lines(out / "results.jsonl")
    assert len(results) == 3
    for record in results:
        overlay = Image.open(record["overlay"])
        assert overlay.size == (12, 12)  # the middle slice
        saved = np.load(Path(record["overlay"]).with_suffix(".npy"))
        assert saved.shape == (8, 12, 12) and saved.dtype == np.float32
        assert saved.min() >= 0.0 and saved.max() <= 1.0
    assert (out / "c_gradcam.npy").is_file()  # the double suffix is the file's

    audit_out = tmp_path / "audit"
    assert run("audit", VOLUME, folder, "--size", "8x12x12", "--out", audit_out,
               "--no-progress") == 0
    table = pq.read_table(audit_out / "results.parquet")
    assert table.num_rows == 3
    for name, explained in zip(table.column("map_array").to_pylist(), results, strict=True):
        full = np.load(audit_out / name)
        np.testing.assert_allclose(full, np.load(Path(explained["overlay"]).with_suffix(
            ".npy")), atol=1e-6)  # the same map through both commands
    assert set(table.column("map_height").to_pylist()) == {12}


def test_dicom_is_read_as_a_2d_image_with_its_stored_values(tmp_path, monkeypatch):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "scan.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    values = np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100  # up to 57,500
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = values.tobytes()
    ds.save_as(tmp_path / "scan.dcm", enforce_file_format=True)
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("INTERP_RECORD_INPUTS", str(seen))
    assert run("explain", GRAY, tmp_path / "scan.dcm", "--size", "24",
               "--out", tmp_path / "o") == 0
    (fed,) = recorded(seen)
    np.testing.assert_array_equal(fed[0], values.astype(np.float32))  # stored values, as is


def test_factory_with_weights_is_the_safe_way_in_explain_and_audit(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from interp_core.audit import audit
    from tests.door_models import GrayNet

    trained = GrayNet()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)  # weights that differ from the factory's
    safetensors_torch.save_model(trained, tmp_path / "gray.safetensors")
    noise_png(tmp_path / "in" / "a.png", 50)
    out = tmp_path / "o"
    assert run("explain", GRAY, tmp_path / "in", "--size", "32", "--out", out,
               "--weights", tmp_path / "gray.safetensors") == 0
    (record,) = lines(out / "results.jsonl")
    from interp_core.io.preprocess import InputFormat

    pixels = InputFormat((32, 32), channels=1).load(tmp_path / "in" / "a.png").pixels
    x = torch.from_numpy(np.moveaxis(pixels, -1, 0)[None])
    with torch.no_grad():
        logits = trained.eval()(x)[0]
    assert record["target"] == int(logits.argmax())
    assert record["score"] == pytest.approx(float(logits.max()), abs=1e-5)
    result = audit(GrayNet, tmp_path / "in", tmp_path / "a", size=32, progress=False,
                   weights=tmp_path / "gray.safetensors")
    assert result.table(["score"]).column(0)[0].as_py() == pytest.approx(record["score"])
