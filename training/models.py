"""Architectures by name: the MNIST ConvNet, torchvision's classifiers and five timm families.

Names are the exported-model contract's (`exported.create_model(arch, num_classes)` rebuilds what a
recipe trained): `mnist_cnn`, a torchvision name (`mobilenet_v2`, `resnet50`, ...) or `timm/<name>`.
Nothing is built or registered at import; `list_archs()` and `get_backbone()` work on demand.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from exported.architectures import (
    MNIST_CNN,
    TIMM_PREFIX,
    drop_auxiliary_heads,
    head,
    imagenet_network,
    replace_head,
)
from exported.architectures import (
    create_model as create_exported_model,
)
from exported.preprocessing import MNIST_PREPROCESSING, Preprocessing
from training.errors import UserError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

logger = logging.getLogger(__name__)

# SqueezeNet's classifier is a 1x1 convolution followed by ReLU and pooling, not a layer on pooled
# features, so the feature-extraction recipe does not apply to it.
TORCHVISION_EXCLUDED = ("squeezenet1_0", "squeezenet1_1")
# The ImageNet families torchvision lacks, from timm (in the `timm` and `dev` extras).
TIMM_ARCHS = {
    "legacy_xception": "Xception",
    "inception_resnet_v2": "Inception-ResNet-v2",
    "nasnetalarge": "NASNet-A Large",
    "resnetv2_50": "ResNet v2 (pre-activation) 50",
    "mobilenetv1_100": "MobileNet v1",
}

__all__ = ["MNIST_CNN", "Backbone", "blocks", "create_model", "get_backbone", "head", "list_archs"]


@dataclass(frozen=True)
class Backbone:
    """One ImageNet architecture: how to build it, get its ImageNet weights and preprocess its input."""

    name: str  # torchvision's name, or "timm/<timm name>"
    imagenet_state_dict: Callable[[], dict[str, Tensor]]  # downloads, or reads a local cache
    preprocessing: Callable[[bool], Preprocessing]  # (for the default ImageNet weights?) -> preprocessing
    weights_name: str  # what `--weights imagenet` loads, for list-archs

    def build(self, num_classes: int, state_dict: dict[str, Tensor] | None = None) -> nn.Module:
        """The ImageNet network (with `state_dict` loaded, if given), its head replaced for `num_classes`;
        auxiliary heads (Inception v3, GoogLeNet) dropped, as `exported.create_model` does."""
        model = imagenet_network(self.name)
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as error:  # missing, unexpected or mis-shaped tensors: another architecture
                message = " ".join(str(error).split())
                raise UserError(f"the weights do not fit {self.name}: {message[:300]}") from None
        drop_auxiliary_heads(model)
        replace_head(model, num_classes)
        return model


def list_archs() -> list[str]:
    """Every name `create_model` and `get_backbone` accept."""
    import torchvision

    names = [
        n for n in torchvision.models.list_models(module=torchvision.models) if n not in TORCHVISION_EXCLUDED
    ]
    return sorted([MNIST_CNN, *names, *(f"{TIMM_PREFIX}{n}" for n in TIMM_ARCHS)])


def create_model(name: str, num_classes: int) -> nn.Module:
    """An untrained model; a UserError names an unknown one and where to find the valid names."""
    if name.startswith(TIMM_PREFIX):
        _require_timm(name)
    try:
        return create_exported_model(name, num_classes)
    except LookupError:
        raise UserError(
            f"unknown arch {name!r}; `python -m training list-archs` shows the valid ones"
        ) from None


def input_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of one input image at the architecture's own (default weights') size."""
    if name == MNIST_CNN:
        return (1, *MNIST_PREPROCESSING.input_size)
    return (3, *get_backbone(name).preprocessing(True).input_size)


def get_backbone(name: str) -> Backbone:
    if name.startswith(TIMM_PREFIX) and name.removeprefix(TIMM_PREFIX) in TIMM_ARCHS:
        _require_timm(name)
        return _timm_backbone(name.removeprefix(TIMM_PREFIX))
    if name != MNIST_CNN and name in list_archs():
        return _torchvision_backbone(name)
    raise UserError(f"unknown arch {name!r}; `python -m training list-archs` shows the valid ones")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's stages in forward order, bottom to top (the head excluded).

    Plain containers (nn.Sequential, nn.ModuleList, the ViT encoder) are opened, as is the module
    holding the head; their parts (a ResNet block, a MobileNet inverted residual, VGG's first
    fully connected layers...) are the blocks that fine-tuning unfreezes from the top.
    """
    from torchvision.models.vision_transformer import Encoder

    _, top = head(model)

    def walk(module: nn.Module) -> Iterator[nn.Module]:
        for child in module.children():
            if child is top or not any(True for _ in child.parameters()):
                continue
            opened = type(child) in (nn.Sequential, nn.ModuleList, Encoder)
            if opened or any(m is top for m in child.modules()):
                yield from walk(child)
            else:
                yield child

    return list(walk(model))


def top_blocks(model: nn.Module, count: int) -> list[nn.Module]:
    return blocks(model)[-count:] if count > 0 else []


def pretrained_state_dict(backbone: Backbone, weights: str) -> dict[str, Tensor] | None:
    """`imagenet` (the torch or Hugging Face cache, else a download), `none`, or a local state_dict file."""
    if weights == "none":
        return None
    if weights == "imagenet":
        try:
            return backbone.imagenet_state_dict()
        except OSError as error:  # URLError, HTTPError and the hub's offline errors included
            raise UserError(
                f"cannot get the ImageNet weights of {backbone.name} ({backbone.weights_name}): not in the "
                f"local cache ({torch.hub.get_dir()}) and the download failed ({error}); "
                "pass --weights FILE or none"
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (--weights takes imagenet, none or a file)")
    return read_state_dict(path)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state_dict file: safetensors, or a torch.save file loaded with weights_only=True."""
    try:
        state_dict = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path} is not a state_dict file (loaded with weights_only=True): {message}"
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise UserError(f"{path} is not a state_dict: expected a dict of tensors")
    return state_dict


def weights_preprocessing(weights: WeightsEnum) -> Preprocessing:
    """The eval transforms of torchvision weights (read from their meta: nothing is downloaded)."""
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return Preprocessing(
        input_size=(crop, crop),
        channels=3,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        resize_size=resize,
        interpolation=transforms.interpolation.value,
    )


def _torchvision_backbone(name: str) -> Backbone:
    from torchvision.models import get_model_weights

    def preprocessing(default_weights: bool) -> Preprocessing:
        """The eval transforms of the default ImageNet weights, or else of the arch's first ImageNet
        recipe (e.g. 256/224, Inception v3 342/299), which a ported or local file is expected to follow."""
        weights_enum = get_model_weights(name)
        return weights_preprocessing(weights_enum.DEFAULT if default_weights else next(iter(weights_enum)))

    default = get_model_weights(name).DEFAULT
    return Backbone(
        name=name,
        imagenet_state_dict=lambda: default.get_state_dict(progress=True, check_hash=True),
        preprocessing=preprocessing,
        weights_name=str(default),
    )


def _timm_backbone(name: str) -> Backbone:
    import timm

    def preprocessing(_default_weights: bool) -> Preprocessing:
        config = timm.models.get_pretrained_cfg(name)
        size = config.input_size[1]
        return Preprocessing(
            input_size=(size, size),
            channels=3,
            mean=tuple(config.mean),
            std=tuple(config.std),
            resize_size=int(size / config.crop_pct),
            interpolation=config.interpolation,
        )

    return Backbone(
        name=f"{TIMM_PREFIX}{name}",
        imagenet_state_dict=lambda: timm.create_model(name, pretrained=True).state_dict(),  # the hub's cache
        preprocessing=preprocessing,
        weights_name=f"timm {name} ({TIMM_ARCHS[name]})",
    )


def _require_timm(name: str) -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        raise UserError(f"{name} needs timm: pip install 'convnet-serve[timm]'") from None
