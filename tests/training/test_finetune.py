"""Transfer learning on the real hymenoptera photos: backbones, data checks, both phases, CLI errors.

Runs are tiny (a few photos per class, small inputs). ResNet has no ImageNet weights here, so its
paths run with `--weights none`; MobileNetV2 uses the real ImageNet weights in shared/weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.models import get_model_weights

from exported import load_model
from tests.conftest import HYMENOPTERA_DIR, WEIGHTS_DIR
from tests.support.cli import assert_one_line_error, run_cli
from training import backbones, finetune, history, trainer
from training.checkpoint import load_weights
from training.errors import UserError
from training.export import export_run
from training.models import create_model, list_models
from training.photo_data import PhotoAugment, find_split, find_splits
from training.rundir import RunDir

MOBILENET_FILE = WEIGHTS_DIR / "mobilenet_v2_imagenet1k_from_tflite_quant.pth"


@pytest.fixture(scope="session")
def photos() -> Path:
    if not (HYMENOPTERA_DIR / "train" / "ants").is_dir():
        pytest.fail(
            f"the hymenoptera photos are expected at {HYMENOPTERA_DIR} (see the README's Tests section)"
        )
    return HYMENOPTERA_DIR


@pytest.fixture(scope="session")
def mobilenet_file() -> Path:
    if not MOBILENET_FILE.is_file():
        pytest.fail(f"the MobileNetV2 ImageNet weights are expected at {MOBILENET_FILE}")
    return MOBILENET_FILE


def module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


# Backbones ------------------------------------------------------------------------------------------


def test_the_classic_families_are_registered() -> None:
    names = set(list_models())
    required = {"mnist_cnn", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "vgg16", "vgg19"}
    required |= {"resnext50_32x4d", "inception_v3", "densenet121", "mobilenet_v3_large", "efficientnet_b0"}
    assert required <= names


@pytest.mark.parametrize(
    ("arch", "head", "top_block", "side"),
    [
        ("mobilenet_v2", "classifier.1", "features.18", 64),
        ("mobilenet_v3_small", "classifier.3", "classifier.0", 64),
        ("resnet18", "fc", "layer4.1", 64),
        ("resnext50_32x4d", "fc", "layer4.2", 64),
        ("densenet121", "classifier", "features.norm5", 64),
        ("efficientnet_b0", "classifier.1", "features.8", 64),
        ("vgg11", "classifier.6", "classifier.3", 32),
        ("inception_v3", "fc", "Mixed_7c", 75),
    ],
)
def test_head_and_top_blocks(arch: str, head: str, top_block: str, side: int) -> None:
    model = create_model(arch, 3).eval()
    path, linear = backbones.head(model)
    assert (path, linear.out_features) == (head, 3)
    assert [module_name(model, b) for b in backbones.top_blocks(model, 1)] == [top_block]
    head_parameters = {id(p) for p in linear.parameters()}
    assert not any(id(p) in head_parameters for b in backbones.blocks(model) for p in b.parameters())
    assert not any("AuxLogits" in key or "aux1" in key for key in model.state_dict())
    with torch.no_grad():
        assert model(torch.rand(1, 3, side, side)).shape == (1, 3)


def test_create_model_rebuilds_the_finetuned_network(mobilenet_file: Path) -> None:
    backbone = backbones.get_backbone("mobilenet_v2")
    trained = backbones.build(
        backbone, 2, finetune.pretrained_state_dict(backbone, str(mobilenet_file))
    ).eval()
    rebuilt = create_model("mobilenet_v2", 2).eval()
    rebuilt.load_state_dict(trained.state_dict())  # strict: same keys and shapes
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), trained(images))


def test_local_weights_file_is_loaded(mobilenet_file: Path) -> None:
    backbone = backbones.get_backbone("mobilenet_v2")
    state_dict = finetune.pretrained_state_dict(backbone, str(mobilenet_file))
    model = backbones.build(backbone, 2, state_dict)
    torch.testing.assert_close(model.features[0][0].weight, state_dict["features.0.0.weight"])
    with pytest.raises(UserError, match="do not fit resnet18"):
        backbones.build(backbones.get_backbone("resnet18"), 2, state_dict)


def test_imagenet_weights_come_from_the_torch_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    url = get_model_weights("resnet18").DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    expected = backbones.get_backbone("resnet18").network().state_dict()
    torch.save(expected, cached)
    loaded = finetune.pretrained_state_dict(backbones.get_backbone("resnet18"), "imagenet")
    assert loaded is not None and loaded.keys() == expected.keys()
    torch.testing.assert_close(loaded["fc.weight"], expected["fc.weight"])


def test_imagenet_weights_neither_cached_nor_downloadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*_args: object, **_kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match="cannot get the ImageNet weights of resnet18.*no network"):
        finetune.pretrained_state_dict(backbones.get_backbone("resnet18"), "imagenet")


def test_preprocessing_comes_from_the_weights() -> None:
    mobilenet = backbones.get_backbone("mobilenet_v2")
    default = mobilenet.preprocessing(True)  # IMAGENET1K_V2: resize 232, crop 224
    assert (default.input_size, default.resize_size, default.mean) == (
        (224, 224),
        232,
        (0.485, 0.456, 0.406),  # ImageNet mean
    )
    assert mobilenet.preprocessing(False).resize_size == 256  # a local file: the classic 256/224
    inception = backbones.get_backbone("inception_v3").preprocessing(False)
    assert (inception.input_size, inception.resize_size) == ((299, 299), 342)
    small = finetune.resize(mobilenet.preprocessing(False), 64)
    assert (small.input_size, small.resize_size) == ((64, 64), 73)


# Data -----------------------------------------------------------------------------------------------


def test_image_folders_skip_the_gif_placeholder(photos: Path) -> None:
    train, val = find_splits(photos)
    assert (len(train.samples), len(val.samples), train.classes) == (244, 153, ["ants", "bees"])
    names = {Path(path).name for path, _ in train.samples}
    assert "imageNotFound.gif" not in names
    assert {"ant photos.jpg", "formica.jpeg"} <= names
    few = find_split(photos, "val", limit=3)
    assert [label for _, label in few.samples] == [0, 0, 0, 1, 1, 1]


def test_augmentation_preset(photos: Path) -> None:
    preprocessing = finetune.resize(backbones.get_backbone("resnet18").preprocessing(False), 64)
    image = Image.open(photos / "train" / "ants" / "ant photos.jpg")
    augment = PhotoAugment().transform(preprocessing)
    first, second = augment(image), augment(image)
    assert first.shape == second.shape == (3, 64, 64)
    assert not torch.equal(first, second)
    plain = PhotoAugment(enabled=False).transform(preprocessing)
    torch.testing.assert_close(plain(image), preprocessing.eval_transform()(image))


# The recipe's parts ---------------------------------------------------------------------------------


def test_cached_features_give_the_network_logits(photos: Path) -> None:
    model = create_model("resnet18", 2).eval()
    config = finetune.FinetuneConfig(arch="resnet18", data_dir=str(photos), workers=0, batch_size=3)
    preprocessing = finetune.resize(backbones.get_backbone("resnet18").preprocessing(False), 64)
    loaders = finetune.Loaders(config, preprocessing, torch.device("cpu"))
    batches = loaders.eval(find_split(photos, "val", limit=4))
    precision = finetune.MixedPrecision(torch.device("cpu"))
    features, targets = finetune.extract_features(model, model.fc, batches, precision)
    assert features.shape == (8, 512) and targets.tolist() == [0] * 4 + [1] * 4
    logits, _ = finetune.predict(model, batches, precision)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(features), logits)


def test_batchnorm_keeps_its_running_statistics_in_train_mode() -> None:
    model = create_model("resnet18", 2)
    finetune.keep_batchnorm_in_eval_mode(model)
    before = model.bn1.running_mean.clone()
    model.train()
    model(torch.rand(4, 3, 64, 64))
    assert torch.equal(model.bn1.running_mean, before)


# A tiny run of both phases on real photos with the real ImageNet MobileNetV2 -------------------------------


@pytest.fixture(scope="module")
def mobilenet_run(photos: Path, mobilenet_file: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    config = finetune.FinetuneConfig(
        arch="mobilenet_v2",
        weights=str(mobilenet_file),
        data_dir=str(photos),
        image_size=128,
        limit=12,
        batch_size=8,
        feature_epochs=8,
        head_lr=3e-3,
        finetune_epochs=1,
        unfreeze=2,
        workers=1,
    )
    return finetune.finetune(config, tmp_path_factory.mktemp("mobilenet"))


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
    phases = [line.split(",")[0] for line in mobilenet_run.metrics.read_text().splitlines()[1:]]
    assert phases == ["features"] * 8 + ["finetune"]


def test_phases_train_only_what_they_unfreeze(mobilenet_run: RunDir, mobilenet_file: Path) -> None:
    """The last state is after fine-tuning: the top 2 blocks and the head moved, the rest (BatchNorm
    statistics included) is exactly the ImageNet file."""
    imagenet = torch.load(mobilenet_file, weights_only=True)
    last = {k.removeprefix("model."): v for k, v in load_file(mobilenet_run.last_weights).items()}
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
    load_weights(model, mobilenet_run.weights)
    photo = Image.open(sorted((photos / "val" / "bees").glob("*.jpg"))[0])
    image = exported.card.preprocessing.eval_transform()(photo)
    with torch.no_grad():
        torch.testing.assert_close(exported.model(image[None]), model(image[None]))


# The command line: a tiny ResNet run without weights, evaluation, and one-line errors ---------------


def test_finetune_and_evaluate_resnet_from_the_cli(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet"
    result = run_cli(
        "finetune", "--arch", "resnet18", "--weights", "none", "--data-dir", photos, "--out", out,
        "--image-size", "48", "--limit", "4", "--feature-epochs", "1", "--finetune-epochs", "1",
        "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and f"run directory: {out}" in result.stdout
    assert json.loads((out / "evaluation-val.json").read_text())["images"] == 8  # --limit 4, two classes
    evaluated = run_cli("evaluate", out, "--data-dir", photos, "--split", "val", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "on 153 images" in evaluated.stdout  # the whole val folder
    assert json.loads((out / "evaluation-val.json").read_text())["images"] == 153
    assert_one_line_error(run_cli("evaluate", out, "--data-dir", photos), "has no test/ folder")


def test_list_archs() -> None:
    result = run_cli("list-archs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.split()[:3] == ["mobilenet_v2", "224", "MobileNet_V2_Weights.IMAGENET1K_V2"] for line in lines
    )
    assert any(line.split()[:2] == ["inception_v3", "299"] for line in lines)


def link_photos(target: Path, split: str, label: str, photos: Path, count: int = 2) -> None:
    """A class folder of symbolic links to real photos (never copies)."""
    folder = target / split / label
    folder.mkdir(parents=True)
    for source in sorted((photos / split / label).glob("*.jpg"))[:count]:
        (folder / source.name).symlink_to(source)


def test_missing_train_or_val_folder(photos: Path, tmp_path: Path) -> None:
    link_photos(tmp_path / "data", "train", "ants", photos)
    link_photos(tmp_path / "data", "train", "bees", photos)
    args = ("finetune", "--arch", "resnet18", "--weights", "none", "--out", tmp_path / "run", "--data-dir")
    assert_one_line_error(run_cli(*args, tmp_path / "data"), "has no val/ folder")
    assert_one_line_error(run_cli(*args, tmp_path / "data" / "train"), "has no train/ folder")
    assert_one_line_error(run_cli(*args, tmp_path / "nowhere"), "data directory not found")


def test_class_folder_without_images(photos: Path, tmp_path: Path) -> None:
    for split in ("train", "val"):
        link_photos(tmp_path, split, "ants", photos)
        (tmp_path / split / "bees").mkdir()
    (tmp_path / "train" / "bees" / "notes.txt").write_text("no photos yet")
    result = run_cli(
        "finetune", "--arch", "resnet18", "--weights", "none", "--data-dir", tmp_path, "--out", tmp_path / "r"
    )
    assert_one_line_error(result, "train", "Found no valid file for the classes bees")


def test_unreadable_image(photos: Path, tmp_path: Path) -> None:
    for split in ("train", "val"):
        link_photos(tmp_path, split, "ants", photos)
        link_photos(tmp_path, split, "bees", photos)
    (tmp_path / "val" / "bees" / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_cli(
        "finetune", "--arch", "resnet18", "--weights", "none", "--data-dir", tmp_path, "--out", tmp_path / "r"
    )
    assert_one_line_error(result, "broken.jpg is not a readable image")


def test_unknown_arch(photos: Path, tmp_path: Path) -> None:
    result = run_cli("finetune", "--arch", "resnet19", "--data-dir", photos, "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown arch 'resnet19'", "list-archs")


def test_weights_file_of_another_architecture(photos: Path, mobilenet_file: Path, tmp_path: Path) -> None:
    args = ("finetune", "--arch", "resnet18", "--data-dir", photos, "--out", tmp_path / "run", "--weights")
    assert_one_line_error(run_cli(*args, mobilenet_file), "the weights do not fit resnet18")
    assert_one_line_error(run_cli(*args, tmp_path / "missing.pth"), "weights file not found")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert_one_line_error(run_cli(*args, tmp_path / "notes.pth"), "is not a state_dict file")


def test_timm_backbones_when_installed() -> None:
    pytest.importorskip("timm", reason="the optional timm extra is not installed")
    model = create_model("timm/legacy_xception", 2).eval()
    assert backbones.head(model)[0] == "fc"
    assert backbones.get_backbone("timm/inception_resnet_v2").preprocessing(True).input_size == (299, 299)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 96, 96)).shape == (1, 2)


# Resume ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interrupted_call", [2, 3], ids=["in feature extraction", "in fine-tuning"])
def test_an_interrupted_run_resumes_as_if_never_stopped(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupted_call: int
) -> None:
    config = finetune.FinetuneConfig(
        arch="resnet18", weights="none", data_dir=str(photos), image_size=64, limit=4, batch_size=4,
        feature_epochs=2, finetune_epochs=2, unfreeze=1, workers=0,
    )  # fmt: skip
    straight = finetune.finetune(config, tmp_path / "straight")

    # Stop at the validation of the given epoch (the 2nd is phase 1's last, the 3rd phase 2's first).
    real_evaluate, calls = trainer.evaluate, []

    def interrupted_evaluate(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == interrupted_call:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", interrupted_evaluate)
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(config, tmp_path / "resumed")
    monkeypatch.setattr(trainer, "evaluate", real_evaluate)
    resumed = finetune.finetune(config, tmp_path / "resumed", resume=True)

    def logits(run: RunDir) -> torch.Tensor:
        model = create_model("resnet18", 2).eval()
        load_weights(model, run.weights)
        return model(torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64))

    torch.testing.assert_close(logits(resumed), logits(straight))
    assert epochs(resumed) == epochs(straight)


def epochs(run: RunDir) -> list[tuple[str, int, float]]:
    """Phase, epoch and validation accuracy of every metrics.csv row (times differ between runs)."""
    return [(row.phase, row.epoch, row.val_accuracy) for row in history.read(run.metrics)]
