"""The fine-tune recipe: a tiny two-phase run on real photos with the real ImageNet MobileNetV2; on
FakeData photos, exact resume in either phase, a whole-network weights file in the cached phase, and
a convolutional head (timm's ResNet v2) through the feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from exported import load_model
from training import engine
from training.export import export_run
from training.models import create_model
from training.recipes import finetune
from training.rundir import RunDir

TINY = {"weights": "none", "image_size": 32, "batch_size": 4, "workers": 0, "device": "cpu"}


def tiny_config(data_dir: Path, arch: str = "resnet18", **changes: object) -> finetune.Config:
    settings = {"feature_epochs": 2, "finetune_epochs": 2, "unfreeze": 1, **TINY, **changes}
    return finetune.Config(arch=arch, data_dir=str(data_dir), **settings)


@pytest.fixture(scope="module")
def mobilenet_run(photos: Path, mobilenet_file: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    config = finetune.Config(
        arch="mobilenet_v2", weights=str(mobilenet_file), data_dir=str(photos), image_size=128, limit=12,
        batch_size=8, feature_epochs=8, head_lr=3e-3, finetune_epochs=1, unfreeze=2, workers=1,
    )  # fmt: skip
    return finetune.train(config, tmp_path_factory.mktemp("mobilenet"))


def test_pretrained_features_classify_real_photos(mobilenet_run: RunDir) -> None:
    report = mobilenet_run.read_evaluation("val")
    assert report is not None and report["images"] == 24
    assert report["accuracy"] >= 0.75  # chance is 0.5


def test_run_directory_holds_every_artifact(mobilenet_run: RunDir) -> None:
    assert mobilenet_run.weights.stat().st_size > 8_000_000  # MobileNetV2: 2.2M parameters
    for plot in (mobilenet_run.curves, mobilenet_run.confusion_matrix):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = mobilenet_run.read_info()
    assert (info.task, info.arch, info.labels) == ("photo", "mobilenet_v2", ["ants", "bees"])
    assert (info.preprocessing.input_size, info.preprocessing.resize_size) == ((128, 128), 146)
    assert set(info.data_sha256) == {"train", "val"}
    assert [row.phase for row in mobilenet_run.read_metrics()] == ["features"] * 8 + ["finetune"]


def test_phases_train_only_what_they_unfreeze(mobilenet_run: RunDir, mobilenet_file: Path) -> None:
    """The last state is after fine-tuning: the top 2 blocks and the head moved, the rest (BatchNorm
    statistics included) is exactly the ImageNet file."""
    imagenet = torch.load(mobilenet_file, weights_only=True)
    last = mobilenet_run.load_checkpoint().model
    top = ("features.17.", "features.18.")
    for key, value in imagenet.items():
        if key.startswith("classifier."):
            continue
        if key.startswith(top) and value.is_floating_point() and "running" not in key:
            assert not torch.equal(last[key], value), key
        else:
            assert torch.equal(last[key], value), key
    assert last["classifier.1.weight"].shape == (2, 1280)


def test_exported_photo_model_gives_the_run_logits(mobilenet_run: RunDir, photos: Path) -> None:
    exported = load_model(str(export_run(mobilenet_run.path)))
    assert str(exported.tag).startswith("photo-classifier:")
    assert exported.card.preprocessing == mobilenet_run.read_info().preprocessing
    model = create_model("mobilenet_v2", 2).eval()
    mobilenet_run.load_weights(model)
    photo = Image.open(sorted((photos / "val" / "bees").glob("*.jpg"))[0])
    image = exported.card.preprocessing.eval_transform()(photo)
    with torch.no_grad():
        torch.testing.assert_close(exported.model(image[None]), model(image[None]))


def interrupt_at_validation(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Raise KeyboardInterrupt at the `call`-th validation, as Ctrl-C would."""
    real_evaluate, calls = engine.evaluate, []

    def interrupted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupted)


def network_logits(run: RunDir, arch: str = "resnet18") -> torch.Tensor:
    model = create_model(arch, 2).eval()
    run.load_weights(model)  # strict: the whole network, never the head alone
    return model(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))


@pytest.mark.parametrize("interrupted_call", [2, 3], ids=["in feature extraction", "in fine-tuning"])
def test_an_interrupted_run_resumes_as_if_never_stopped(
    fake_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupted_call: int
) -> None:
    config = tiny_config(fake_photos)
    straight = finetune.train(config, tmp_path / "straight")
    interrupt_at_validation(
        monkeypatch, interrupted_call
    )  # the 2nd is phase 1's last, the 3rd phase 2's first
    with pytest.raises(KeyboardInterrupt):
        finetune.train(config, tmp_path / "resumed")
    monkeypatch.undo()
    resumed = finetune.train(config, tmp_path / "resumed", resume=True)
    torch.testing.assert_close(network_logits(resumed), network_logits(straight))
    epochs = [(row.phase, row.epoch, row.val_accuracy) for row in straight.read_metrics()]
    assert [(row.phase, row.epoch, row.val_accuracy) for row in resumed.read_metrics()] == epochs


def test_a_run_stopped_in_the_cached_phase_holds_the_whole_network_and_is_not_exported(
    fake_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at_validation(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        finetune.train(tiny_config(fake_photos), tmp_path / "stopped")
    run = RunDir(tmp_path / "stopped")
    assert network_logits(run).shape == (2, 2)
    with pytest.raises(Exception, match="unfinished run \\(stopped after features epoch 1\\)"):
        export_run(run.path)


def test_a_convolutional_head_trains_on_cached_features_and_exports(
    fake_photos: Path, tmp_path: Path
) -> None:
    """timm's ResNet v2 classifies with a 1x1 convolution: swapped, cached, fine-tuned and rebuilt."""
    run = finetune.train(
        tiny_config(fake_photos, "timm/resnetv2_50", feature_epochs=1, finetune_epochs=1),
        tmp_path / "resnetv2",
    )
    exported = load_model(str(export_run(run.path, "resnetv2-test")))
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported.model(images).shape, torch.Size([2, 2]))
        torch.testing.assert_close(exported.model(images), network_logits_of(run, images))


def network_logits_of(run: RunDir, images: torch.Tensor) -> torch.Tensor:
    model = create_model("timm/resnetv2_50", 2).eval()
    run.load_weights(model)
    return model(images)
