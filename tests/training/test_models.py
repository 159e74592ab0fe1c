"""The architecture registry: every family by name, heads and top blocks, timm's five, weights files."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import get_model_weights

from training import models
from training.errors import UserError


def module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def test_the_classic_families_are_registered() -> None:
    names = set(models.list_archs())
    required = {"mnist_cnn", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "vgg16", "vgg19"}
    required |= {"resnext50_32x4d", "inception_v3", "densenet121", "mobilenet_v3_large", "efficientnet_b0"}
    required |= {f"timm/{name}" for name in models.TIMM_ARCHS}
    assert required <= names
    assert "squeezenet1_0" not in names  # a convolutional classifier on unpooled features


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
def test_torchvision_head_and_top_blocks(arch: str, head: str, top_block: str, side: int) -> None:
    model = models.create_model(arch, 3).eval()
    path, linear = models.head(model)
    assert (path, linear.out_features) == (head, 3)
    assert [module_name(model, b) for b in models.top_blocks(model, 1)] == [top_block]
    head_parameters = {id(p) for p in linear.parameters()}
    assert not any(id(p) in head_parameters for b in models.blocks(model) for p in b.parameters())
    assert not any("AuxLogits" in key or "aux1" in key for key in model.state_dict())
    with torch.no_grad():
        assert model(torch.rand(1, 3, side, side)).shape == (1, 3)


# Xception, Inception-ResNet-v2, NASNet, ResNet v2 and MobileNet v1: built, head swapped, one forward
# pass at about the smallest side each network's strides allow.
@pytest.mark.parametrize(
    ("name", "head", "side"),
    [
        ("legacy_xception", "fc", 71),
        ("inception_resnet_v2", "classif", 75),
        ("nasnetalarge", "last_linear", 64),
        ("resnetv2_50", "head.fc", 32),
        ("mobilenetv1_100", "classifier", 32),
    ],
)
def test_timm_families_build_swap_their_head_and_classify(name: str, head: str, side: int) -> None:
    arch = f"timm/{name}"
    model = models.create_model(arch, 3).eval()
    path, layer = models.head(model)
    assert path == head
    assert (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels) == 3
    assert models.top_blocks(model, 2)
    backbone = models.get_backbone(arch)
    assert backbone.preprocessing(True).channels == 3
    with torch.no_grad():
        assert model(torch.rand(1, 3, side, side)).shape == (1, 3)


def test_create_model_rebuilds_the_finetuned_network(mobilenet_file: Path) -> None:
    backbone = models.get_backbone("mobilenet_v2")
    trained = backbone.build(2, models.pretrained_state_dict(backbone, str(mobilenet_file))).eval()
    rebuilt = models.create_model("mobilenet_v2", 2).eval()
    rebuilt.load_state_dict(trained.state_dict())  # strict: same keys and shapes
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), trained(images))
    torch.testing.assert_close(
        trained.features[0][0].weight, torch.load(mobilenet_file)["features.0.0.weight"]
    )


def test_weights_files_that_do_not_fit(mobilenet_file: Path, tmp_path: Path) -> None:
    resnet = models.get_backbone("resnet18")
    with pytest.raises(UserError, match="the weights do not fit resnet18"):
        resnet.build(2, models.pretrained_state_dict(resnet, str(mobilenet_file)))
    with pytest.raises(UserError, match="weights file not found"):
        models.pretrained_state_dict(resnet, str(tmp_path / "missing.pth"))
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="is not a state_dict file"):
        models.pretrained_state_dict(resnet, str(tmp_path / "notes.pth"))


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
    expected = models.create_model("resnet18", 1000).state_dict()
    torch.save(expected, cached)
    loaded = models.pretrained_state_dict(models.get_backbone("resnet18"), "imagenet")
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
        models.pretrained_state_dict(models.get_backbone("resnet18"), "imagenet")


def test_preprocessing_comes_from_the_weights() -> None:
    mobilenet = models.get_backbone("mobilenet_v2")
    default = mobilenet.preprocessing(True)  # IMAGENET1K_V2: resize 232, crop 224
    assert (default.input_size, default.resize_size, default.mean) == ((224, 224), 232, (0.485, 0.456, 0.406))
    assert mobilenet.preprocessing(False).resize_size == 256  # a local file: the classic 256/224
    inception = models.get_backbone("inception_v3").preprocessing(False)
    assert (inception.input_size, inception.resize_size) == ((299, 299), 342)
    assert models.get_backbone("timm/legacy_xception").preprocessing(True).input_size == (299, 299)


def test_unknown_arch_points_to_list_archs() -> None:
    for lookup in (models.get_backbone, lambda name: models.create_model(name, 2)):
        with pytest.raises(UserError, match=r"unknown arch 'resnet19'; `python -m training list-archs`"):
            lookup("resnet19")
    with pytest.raises(UserError, match="unknown arch 'mnist_cnn'"):
        models.get_backbone("mnist_cnn")  # not an ImageNet backbone
    assert models.input_shape("mnist_cnn") == (1, 28, 28)
    assert models.input_shape("timm/nasnetalarge") == (3, 331, 331)
