"""`interp explain` on bad files and interrupted runs: every readable image is explained, every
unreadable one is listed with its reason, and a stopped run resumes without loss or repeats."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interp_core import cli
from interp_core.io.errors import FileReadError
from interp_core.io.preprocess import InputFormat
from tests.conftest import require_framework

torch = require_framework("torch", "torch")

MODEL = "interp_torch.demo:DemoNet"
ROOT = Path(__file__).resolve().parent.parent


def _noise(seed: int, size: int = 40) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def _claim_size_in_png_header(png: Path, width: int, height: int) -> None:
    """Rewrite the IHDR chunk of ``png`` to claim another size (pixel data unchanged)."""
    data = bytearray(png.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    png.write_bytes(bytes(data))


#: file name -> the words its reason must contain
UNREADABLE = {
    "empty.png": "empty file",
    "truncated.jpg": "truncated",
    "text.jpg": "not an image format",
    "bomb.png": "decompression bomb",
}
READABLE = ["gray16.png", "gray.png", "rgba.png", "cmyk.jpg", "palette.gif", "plain.png"]


def write_zoo(folder: Path) -> Path:
    """Every kind of file of the issue, generated with Pillow: six readable, four not."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "gray16.png")  # mode I;16: a 16-bit PNG
    Image.fromarray(_noise(1)).convert("L").save(folder / "gray.png")
    Image.fromarray(_noise(2)).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(_noise(3)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(_noise(4)).convert("P").save(folder / "palette.gif")
    Image.fromarray(_noise(5)).save(folder / "plain.png")
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(_noise(6, 64)).save(folder / "whole.jpg", quality=95)
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    Image.fromarray(_noise(7, 8)).save(folder / "bomb.png")
    _claim_size_in_png_header(folder / "bomb.png", 30000, 30000)
    return folder


def _lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "last line is not whole"
    return [json.loads(line) for line in text.splitlines()]


def _explain(folder: Path, out: Path, *extra: str) -> int:
    return cli.main(["explain", MODEL, str(folder), "--layer", "block3", "--size", "32",
                     "--out", str(out), *extra])


def test_every_readable_image_is_explained_and_every_bad_one_listed(tmp_path, capsys):
    zoo = write_zoo(tmp_path / "zoo")
    out = tmp_path / "out"
    assert _explain(zoo, out) == 0
    captured = capsys.readouterr()
    explained = {Path(r["file"]).name for r in _lines(out / "results.jsonl")}
    assert explained == set(READABLE)
    errors = {Path(r["file"]).name: r["error"] for r in _lines(out / "errors.jsonl")}
    assert set(errors) == set(UNREADABLE)
    for name, words in UNREADABLE.items():
        assert words in errors[name], (name, errors[name])
        assert name in captured.err
    assert "4 skipped" in captured.out
    for name in READABLE:
        assert (out / f"{Path(name).stem}_gradcam.png").is_file()


def test_sixteen_bit_images_keep_their_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    image = InputFormat((64, 64)).load(tmp_path / "ramp16.png").pixels
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, :, 0], np.linspace(0, 1, 64), atol=0.02)
    assert np.array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_raise_one_error_type_with_the_reason(tmp_path, name):
    zoo = write_zoo(tmp_path / "zoo")
    with pytest.raises(FileReadError, match=UNREADABLE[name]) as info:
        InputFormat((32, 32)).load(zoo / name)
    assert info.value.path == zoo / name


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    Image.fromarray(_noise(8, 64)).save(tmp_path / "big.png")
    with pytest.raises(FileReadError, match=r"claims 64x64 pixels.*limit of 1,000"):
        InputFormat((32, 32), max_pixels=1000).load(tmp_path / "big.png")


def test_nothing_readable_exits_non_zero_with_the_reasons(tmp_path, capsys):
    zoo = write_zoo(tmp_path / "zoo")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in UNREADABLE:
        (zoo / name).rename(bad / name)
    out = tmp_path / "out"
    assert _explain(bad, out) == 2
    err = capsys.readouterr().err
    assert "none of the 4 files" in err.splitlines()[-1]
    assert {Path(r["file"]).name for r in _lines(out / "errors.jsonl")} == set(UNREADABLE)
    # nothing blocks the corrected rerun: no empty results.jsonl is left, the reasons stay
    assert not (out / "results.jsonl").exists()
    assert _explain(zoo, out) == 0


def _write_pngs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(_noise(100 + i, 24)).save(paths[-1])
    return paths


def test_resume_skips_done_images_and_adds_new_ones(tmp_path, capsys):
    folder = tmp_path / "in"
    _write_pngs(folder, 3)
    out = tmp_path / "out"
    assert _explain(folder, out) == 0
    first = _lines(out / "results.jsonl")
    _write_pngs(folder, 5)  # two more images (the first three are rewritten unchanged)
    assert _explain(folder, out) == 2  # existing results are kept without --resume
    assert "--resume" in capsys.readouterr().err
    assert _explain(folder, out, "--resume") == 0
    assert "2 image(s) explained" in capsys.readouterr().out
    lines = _lines(out / "results.jsonl")
    assert lines[:3] == first
    assert sorted(Path(r["file"]).name for r in lines) == [f"img{i:03d}.png" for i in range(5)]
    assert _explain(folder, out, "--resume") == 0  # all done: nothing to do is no error
    assert "0 image(s) explained" in capsys.readouterr().out
    assert len(_lines(out / "results.jsonl")) == 5


def test_resume_repairs_a_torn_last_line_and_refuses_another_method(tmp_path, capsys):
    folder = tmp_path / "in"
    _write_pngs(folder, 4)
    out = tmp_path / "out"
    assert _explain(folder, out) == 0
    results = out / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # a power cut
    assert _explain(folder, out, "--resume") == 0
    assert "dropped 1 incomplete line" in capsys.readouterr().err
    names = [Path(r["file"]).name for r in _lines(results)]
    assert sorted(names) == [f"img{i:03d}.png" for i in range(4)]
    assert _explain(folder, out, "--resume", "--method", "hirescam") == 2
    err = capsys.readouterr().err
    assert "method: 'gradcam' -> 'hirescam'" in err and "--overwrite" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_killed_run_leaves_whole_lines_and_resume_completes(tmp_path, signum):
    n = 600  # about a second of work at 24x24: long enough to be stopped midway
    folder = tmp_path / "in"
    _write_pngs(folder, n)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "interp_core.cli", "explain", MODEL, str(folder), "--layer",
            "block3", "--size", "24", "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that: give the run the default disposition, as a terminal would.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()}"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if signum == signal.SIGTERM else 130), err
    assert "--resume" in err
    done = _lines(results)  # every line whole and valid JSON
    assert 3 <= len(done) < n
    assert not list(out.glob("*.partial"))
    assert cli.main([*argv[3:], "--resume", "--batch-size", "64"]) == 0
    files = [Path(r["file"]).name for r in _lines(results)]
    assert len(files) == n and len(set(files)) == n
    assert len(list(out.glob("img*_gradcam.png"))) == n
