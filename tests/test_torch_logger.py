"""The PyTorch training loggers: what they write, when, and that training is unaffected."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
from interp_torch import training as torch_training  # noqa: E402
from interp_torch.training import CAMLogger, FeatureMapLogger, display_images  # noqa: E402
from torch import nn  # noqa: E402

from interp_core.logging.sinks import FolderSink  # noqa: E402


class TinyNet(nn.Module):
    """Conv, BatchNorm, in-place ReLU, dropout: every kind of state a logger could disturb."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6),
                                      nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x).mean((2, 3))))


class RecordingSink:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, dict, int]] = []
        self.closed = self.flushed = 0

    def log_images(self, tag, images, step):
        self.logged.append((tag, dict(images), step))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed += 1


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)


def _train(loggers: list, epochs: int = 3, seed: int = 0
           ) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    for epoch in range(epochs):
        model.train()
        for i in range(0, 16, 4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 4]), y[i : i + 4]).backward()
            opt.step()
        for lg in loggers:
            lg.on_epoch_end(model, epoch)
    return model, opt


@pytest.fixture
def samples() -> torch.Tensor:
    return _data(1)[0][:3]


def test_training_is_bit_identical_with_and_without_loggers(samples):
    plain, plain_opt = _train([])
    logged, logged_opt = _train([CAMLogger(samples, "features", sink=RecordingSink()),
                                 FeatureMapLogger(samples, "features", sink=RecordingSink())])
    for a, b in zip(plain.state_dict().values(), logged.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights and BatchNorm buffers
    for a, b in zip(plain.parameters(), logged.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    sa, sb = plain_opt.state_dict()["state"], logged_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    assert torch.equal(torch.get_rng_state(), _rng_after_plain_training())


def _rng_after_plain_training() -> torch.Tensor:
    _train([])
    return torch.get_rng_state()


def test_model_state_untouched_by_one_call(samples):
    model, opt = _train([], epochs=1)
    model.train()
    model.features[1].eval()  # a mixed mode must come back exactly
    before = {
        "training": [m.training for m in model.modules()],
        "state": copy.deepcopy(model.state_dict()),
        "grads": [p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "opt": copy.deepcopy(opt.state_dict()),
        "rng": torch.get_rng_state(),
        "hooks": [len(m._forward_hooks) for m in model.modules()],
    }
    with torch.no_grad():  # also from inside an outer no_grad block
        for lg in (CAMLogger(samples, "features", sink=RecordingSink()),
                   CAMLogger(samples, "features", method="scorecam", sink=RecordingSink()),
                   FeatureMapLogger(samples, "features", sink=RecordingSink())):
            assert lg.on_epoch_end(model, 0) is not None
        assert not torch.is_grad_enabled()
    assert [m.training for m in model.modules()] == before["training"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before["state"][k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before["grads"],
                                                         strict=True))
    assert [p.requires_grad for p in model.parameters()] == before["requires_grad"]
    assert opt.state_dict()["state"].keys() == before["opt"]["state"].keys()
    assert torch.equal(torch.get_rng_state(), before["rng"])
    assert [len(m._forward_hooks) for m in model.modules()] == before["hooks"]


def test_schedule_tags_names_and_current_weights(samples):
    sink = RecordingSink()
    cam = CAMLogger(samples, "features", every_n_epochs=2, sink=sink)
    fmap = FeatureMapLogger(samples, "features", every_n_epochs=2, sink=sink, channels=[0, 2, 5])
    model, _ = _train([cam, fmap], epochs=5)
    assert [(tag, step) for tag, _, step in sink.logged] == [
        ("gradcam/features", 1), ("features/features", 1),
        ("gradcam/features", 3), ("features/features", 3)]
    _, images, _ = sink.logged[0]
    assert sorted(images) == ["sample_000", "sample_001", "sample_002"]
    assert all(im.dtype == np.uint8 and im.shape == (12, 12, 3) for im in images.values())
    grid = sink.logged[1][1]["sample_000"]
    assert grid.shape == (2 * 37 + 1, 2 * 37 + 1, 3)  # 3 maps, 2 columns, tiles of 36 px
    # The CAM of the last logged epoch is the CAM of the weights at that epoch.
    again = CAMLogger(samples, "features", sink=RecordingSink()).on_epoch_end(model, 0)
    assert any(not np.array_equal(again[k], sink.logged[2][1][k]) for k in again)


def test_samples_are_copied_and_display_images(samples):
    sink = RecordingSink()
    cam = CAMLogger(samples, "features", sink=sink)
    model, _ = _train([], epochs=1)
    first = cam.on_epoch_end(model, 0)
    samples.mul_(0).add_(5)  # the caller reuses its tensor
    second = cam.on_epoch_end(model, 1)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    shown = display_images(torch.rand(2, 3, 5, 4) * 10 - 3)
    assert shown.shape == (2, 5, 4, 3) and shown.min() == 0 and shown.max() == pytest.approx(1)
    inside = torch.rand(2, 1, 5, 4)
    np.testing.assert_array_equal(display_images(inside), np.moveaxis(inside.numpy(), 1, -1))
    own = np.zeros((3, 12, 12, 3), np.uint8)
    drawn = CAMLogger(samples, "features", images=own, alpha=1.0, sink=sink).on_epoch_end(model, 0)
    assert drawn["sample_000"].shape == (12, 12, 3)


def test_folder_sink_default_and_ownership(samples, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, _ = _train([], epochs=1)
    with CAMLogger(samples, "features") as cam:
        assert not (tmp_path / "interp_logs").exists()  # created on first use only
        cam.on_epoch_end(model, 0)
        cam.on_epoch_end(model, 1)
    index = (tmp_path / "interp_logs" / "index.html").read_text()
    assert "step 0" in index and "step 1" in index and "sample_002" in index
    log = json.loads((tmp_path / "interp_logs" / "log.json").read_text())
    assert len(log) == 6 and (tmp_path / "interp_logs" / log[0]["path"]).is_file()
    mine = RecordingSink()
    lg = FeatureMapLogger(samples, "features", sink=mine)
    lg.on_epoch_end(model, 0)
    lg.close()
    assert mine.flushed == 1 and mine.closed == 0  # a sink passed in is only flushed
    folder = FolderSink(tmp_path / "fm")
    FeatureMapLogger(samples, "features", sink=folder).on_epoch_end(model, 4)
    assert (tmp_path / "fm" / "features_features" / "sample_000" / "step_0004.png").is_file()


def test_bad_arguments(samples):
    with pytest.raises(ValueError, match="every_n_epochs"):
        CAMLogger(samples, "features", every_n_epochs=0)
    with pytest.raises(TypeError, match="log_images"):
        CAMLogger(samples, "features", sink="runs/cam")
    with pytest.raises(ValueError, match="unknown method"):
        CAMLogger(samples, "features", method="nope")
    with pytest.raises(ValueError, match="images has 2 entries"):
        CAMLogger(samples, "features", images=np.zeros((2, 12, 12, 3)))
    model, _ = _train([], epochs=1)
    with pytest.raises(ValueError, match=r"channels \[9\] are out of range"):
        FeatureMapLogger(samples, "features", channels=[1, 9],
                         sink=RecordingSink()).on_epoch_end(model, 0)
    with pytest.raises(ValueError, match="2-D feature maps"):
        FeatureMapLogger(samples, "fc", sink=RecordingSink()).on_epoch_end(model, 0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        CAMLogger(samples, "features", sink=RecordingSink()).on_epoch_end(lambda x: x, 0)


def test_tensorboard_sink(samples, tmp_path):
    pytest.importorskip("tensorboard")
    from interp_core.logging.sinks import TensorBoardSink

    model, _ = _train([], epochs=1)
    with CAMLogger(samples, "features", sink=TensorBoardSink(tmp_path / "tb")) as cam:
        cam.on_epoch_end(model, 0)
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_wandb_offline_sink(samples, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from interp_core.logging.sinks import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    model, _ = _train([], epochs=1)
    sink = WandbSink(project="interp-test", mode="offline", dir=str(tmp_path))
    cam = CAMLogger(samples, "features", sink=sink)
    cam.on_epoch_end(model, 0)
    sink.close()
    assert list(tmp_path.rglob("*.wandb"))


@pytest.mark.filterwarnings("ignore:.*LeafSpec")  # inside lightning, not ours
def test_lightning_callback(samples, tmp_path):
    pytest.importorskip("lightning")
    import lightning

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    sink = RecordingSink()
    callback = torch_training.LightningCallback(
        CAMLogger(samples, "net.features", sink=sink),
        FeatureMapLogger(samples, "net.features", every_n_epochs=2, sink=sink))
    trainer = lightning.Trainer(max_epochs=2, callbacks=[callback], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path,
                                accelerator="cpu", devices=1)
    trainer.fit(Module(), loader)
    assert [(tag, step) for tag, _, step in sink.logged] == [
        ("gradcam/net.features", 0), ("gradcam/net.features", 1), ("features/net.features", 1)]
    assert sink.flushed == 2  # both loggers closed at the end of fit (a passed sink: flushed)
    with pytest.raises(TypeError, match="CAMLogger"):
        torch_training.LightningCallback(sink)


def test_lightning_callback_only_with_lightning(monkeypatch):
    import builtins

    assert ("LightningCallback" in torch_training.__all__) == (
        torch_training._lightning_base() is not None)
    real_import = builtins.__import__

    def no_lightning(name, *args, **kwargs):
        if name.split(".")[0] in ("lightning", "pytorch_lightning"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightning)
    assert torch_training._lightning_base() is None


