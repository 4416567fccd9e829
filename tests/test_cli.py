"""The `interp` command: demo gallery, explain on files, listings and error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from interp_core import cli
from tests.conftest import require_framework

torch = require_framework("torch", "torch")

MODELS = Path(__file__).resolve().parent / "torch_models.py"


def run(*argv: str) -> int:
    return cli.main(list(argv))


def _write_images(folder: Path, n: int = 3) -> list[Path]:
    from PIL import Image

    from interp_core.datasets import make_shapes

    folder.mkdir(parents=True, exist_ok=True)
    data = make_shapes(n, seed=3)
    paths = []
    for i, img in enumerate(data.images):
        path = folder / f"img{i}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_listings(capsys):
    assert run("backends") == 0
    assert "torch" in capsys.readouterr().out.split()
    assert run("methods") == 0
    assert "gradcam" in capsys.readouterr().out.split()
    assert run("layers", "interp_torch.demo:DemoNet") == 0
    out = capsys.readouterr().out.split()
    assert "block3" in out and "fc" in out


def test_demo_writes_gallery(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--backend", "torch", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert str((out / "index.html").resolve()) in printed
    page = (out / "index.html").read_text()
    assert "gradcam" in page and "predicted" in page
    assert len(list(out.glob("image_00_*.png"))) >= 7
    # the demo ViT beside the CNN: its own table, overlays, and record in demo.json
    assert "Vision transformer" in page and (out / "image_00_vit_gradcam.png").is_file()
    record = json.loads((out / "demo.json").read_text())
    assert record["models"]["vit"]["layer"] == "blocks.3.norm1"
    owned = set(record["interp_outputs"]["files"])
    for key in ("cnn", "vit"):
        for pattern in record["models"][key]["overlays"].values():
            assert {pattern.format(i=i) for i in range(8)} <= owned, pattern
            assert (out / pattern.format(i=7)).is_file()
    # a second run refuses to overwrite, unless asked
    assert run("demo", "--backend", "torch", "--out", str(out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run("demo", "--backend", "torch", "--out", str(out), "--overwrite") == 0


def test_explain_files_and_folders(tmp_path, capsys):
    images = _write_images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    code = run("explain", "interp_torch.demo:DemoNet", str(tmp_path / "in"), "--layer",
               "block3", "--size", "64", "--out", str(out), "--method", "gradcam++")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "broken.png" in captured.err and "1 skipped" in captured.out
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(images)
    assert {"file", "target", "score", "method", "layer", "backend"} <= set(lines[0])
    assert lines[0]["method"] == "gradcam++" and lines[0]["backend"] == "torch"
    assert (out / "img0_gradcampp.png").exists()
    # existing outputs are kept without --overwrite
    assert run("explain", "interp_torch.demo:DemoNet", str(images[0]), "--layer", "block3",
               "--size", "64", "--out", str(out), "--method", "gradcam++") == 2


def test_explain_target_free_method_writes_no_score(tmp_path, capsys):
    images = _write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    code = run("explain", "interp_torch.demo:DemoNet", *map(str, images), "--layer", "block3",
               "--size", "64", "--out", str(out), "--method", "eigencam", "--target", "3")
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["target"], r["score"], r["method"]) for r in lines] == [(-1, None, "eigencam")] * 2


def test_explain_saved_torch_module_and_target(tmp_path):
    from interp_torch.demo import DemoNet

    path = tmp_path / "model.pt"
    torch.save(DemoNet(), path)
    images = _write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = ("explain", str(path), *map(str, images), "--layer", "block3", "--size", "64",
            "--target", "2", "--out", str(out), "--mean", "0.5", "--std", "0.25")
    assert run(*args) == 2  # a pickled module runs code when loaded: refused unless trusted
    assert not out.exists()
    assert run(*args, "--trust-model") == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["target"] for r in lines] == [2, 2]


@pytest.mark.parametrize("argv,message", [
    (["explain", "interp_torch.demo:DemoNet", "missing.png"], "no such file"),
    (["explain", "interp_torch.demo:DemoNet", "{empty}"], "no input files"),
    (["explain", "interp_torch.demo:DemoNet", "{img}", "--layer", "block9"], "block3"),
    (["explain", "interp_torch.demo:DemoNet", "{img}", "--backend", "nope"], "not installed"),
    (["explain", "interp_torch.demo:DemoNet", "{img}", "--method", "magic"], "known methods"),
    (["explain", "interp_torch.demo:DemoNet", "{broken}"], "none of the 1 files"),
    (["explain", "nomodel.py:thing", "{img}"], "no such file"),
    (["demo", "--backend", "nope"], "not installed"),
])
def test_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    img = _write_images(tmp_path / "in", 1)[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"junk")
    subst = {"{empty}": str(tmp_path / "empty"), "{img}": str(img), "{broken}": str(broken)}
    argv = [subst.get(a, a) for a in argv]
    extra = ["--out", str(tmp_path / "o")]
    assert run(*argv, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("interp: error:")
    assert message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_console_script_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "interp_core.cli", "methods"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "gradcam" in result.stdout


def test_torchscript_file_gets_a_clear_error(tmp_path, capsys):
    from interp_torch.demo import DemoNet

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(DemoNet()), path)
    img = _write_images(tmp_path / "in", 1)[0]
    assert run("explain", str(path), str(img), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "TorchScript" in err and "torch.save(model, path)" in err


@pytest.fixture
def torch_adapter_only(monkeypatch):
    """Only interp-torch installed (as far as the registry can tell)."""
    from importlib import metadata

    from interp_core.backend import registry

    torch_ep = [ep for ep in metadata.entry_points(group="interp_core.backends")
                if ep.name == "torch"]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None, **kw: torch_ep)
    registry.reset_registry()
    yield registry
    registry.reset_registry()


def test_backends_verbose_lists_distribution_version_capabilities(torch_adapter_only, capsys):
    from importlib import metadata

    import interp_core as ic

    ic.register_backend(ic.BackendRegistration(
        "ghost", factory="ghost_framework_adapter.backend:Ghost", install_hint="pip install g"))
    assert run("backends", "--verbose") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["backend", "distribution", "version", "capabilities"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"ghost", "torch"}
    assert rows["torch"].split()[1:3] == ["interp-torch", metadata.version("interp-torch")]
    assert "gradients" in rows["torch"] and "input_gradients" in rows["torch"]
    assert "cannot import the backend" in rows["ghost"] and "pip install g" in rows["ghost"]


def test_model_files_without_a_loader_get_a_hint(torch_adapter_only, tmp_path, capsys):
    img = _write_images(tmp_path / "in", 1)[0]
    for name, message in [("model.keras", "pip install interp-tensorflow"),
                          ("model.onnx", "no installed backend loads")]:
        (tmp_path / name).write_bytes(b"\0")
        assert run("explain", str(tmp_path / name), str(img), "--out", str(tmp_path / "o")) == 2
        assert message in capsys.readouterr().err


def test_a_state_dict_file_gets_a_clear_error(tmp_path, capsys):
    from interp_torch.demo import DemoNet

    path = tmp_path / "weights.pth"
    torch.save(DemoNet().state_dict(), path)
    assert run("layers", str(path)) == 2
    assert "state dict" in capsys.readouterr().err


def test_keras_file_is_loaded_by_the_tensorflow_adapter(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    pytest.importorskip("interp_tensorflow")
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.save(tmp_path / "tiny.keras")
    assert run("layers", str(tmp_path / "tiny.keras")) == 0
    assert "conv" in capsys.readouterr().out.split()


def _summary(printed: str, command: str) -> str:
    return next(line for line in printed.splitlines() if line.startswith(f"interp {command}:"))


def test_explain_prints_the_layer_it_used(tmp_path, capsys):
    img = str(_write_images(tmp_path / "in", 2)[0])
    common = ("interp_torch.demo:DemoNet", img, "--size", "64")
    assert run("explain", *common, "--out", str(tmp_path / "default")) == 0
    summary = _summary(capsys.readouterr().out, "explain")
    recorded = json.loads((tmp_path / "default" / "results.jsonl").read_text())["layer"]
    assert recorded  # the default layer the explanation came from, by name
    assert f" at layer {recorded} (the default) on torch" in summary
    assert run("explain", *common, "--layer", "block2", "--out", str(tmp_path / "named")) == 0
    summary = _summary(capsys.readouterr().out, "explain")
    assert " at layer block2 on torch" in summary and "(the default)" not in summary


def test_audit_prints_the_layer_it_used(tmp_path, capsys):
    pytest.importorskip("pyarrow.parquet")
    _write_images(tmp_path / "data" / "circle", 2)
    assert run("audit", "interp_torch.demo:DemoNet", str(tmp_path / "data"), "--layer",
               "block2", "--size", "64", "--out", str(tmp_path / "o"), "--no-progress",
               "--no-report") == 0
    assert " at layer block2, " in _summary(capsys.readouterr().out, "audit")
    assert run("audit", "interp_torch.demo:DemoNet", str(tmp_path / "data"), "--size", "64",
               "--out", str(tmp_path / "d"), "--no-progress", "--no-report") == 0
    assert " at layer block3 (the default), " in _summary(capsys.readouterr().out, "audit")


def test_summary_names_the_layers():
    from interp_core.cli.summary import layer_phrase

    assert layer_phrase(["block3"], None) == "layer block3 (the default)"
    assert layer_phrase(["a", "b"], ["a", "b"]) == "layers a, b"
    assert layer_phrase([], "block2") == "layer block2"
    assert layer_phrase([], None) == "the default layer"
