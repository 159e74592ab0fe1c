"""ImageNet backbones for transfer learning: torchvision's classification models, and timm's when installed.

Each backbone is known by the name under which the exported-model contract rebuilds the fine-tuned
network (`exported.create_model(arch, num_classes)`): the ImageNet architecture with its
classification head replaced by one for `num_classes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torchvision
from torch import Tensor, nn
from torchvision.models import get_model_weights
from torchvision.models.vision_transformer import Encoder

from exported.architectures import (
    TIMM_PREFIX,
    drop_auxiliary_heads,
    head,
    imagenet_network,
    replace_head,
)
from exported.preprocessing import Preprocessing
from training.errors import UserError

logger = logging.getLogger(__name__)

# SqueezeNet's classifier is a 1x1 convolution followed by ReLU and pooling, not a layer on pooled
# features, so the feature-extraction recipe does not apply to it.
TORCHVISION_EXCLUDED = ("squeezenet1_0", "squeezenet1_1")
# The seed's families that torchvision lacks, from timm (`pip install 'convnet-serve[timm]'`).
TIMM_MODELS = ("legacy_xception", "inception_resnet_v2", "nasnetalarge")


@dataclass(frozen=True)
class Backbone:
    """One ImageNet architecture: how to build it, get its ImageNet weights and preprocess its input."""

    name: str  # registry name: torchvision's, or "timm/<timm name>"
    source: Literal["torchvision", "timm"]
    network: Callable[[], nn.Module]  # the untrained 1000-class ImageNet network
    imagenet_state_dict: Callable[[], dict[str, Tensor]]  # downloads, or reads a local cache
    preprocessing: Callable[[bool], Preprocessing]  # (for the default ImageNet weights?) -> preprocessing
    weights_name: str  # what `--weights imagenet` loads, for list-archs


BACKBONES: dict[str, Backbone] = {}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(
            f"unknown arch {name!r}; `python -m training list-archs` shows the available ones"
        ) from None


def build(backbone: Backbone, num_classes: int, state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """The ImageNet network (with `state_dict` loaded, if given), its head replaced for `num_classes`.

    Auxiliary heads (Inception v3, GoogLeNet) are dropped: they only help training from scratch, and
    the shared training loop expects one tensor of logits.
    """
    model = backbone.network()
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:  # missing, unexpected or mis-shaped tensors: another architecture
            message = " ".join(str(error).split())
            raise UserError(f"the weights do not fit {backbone.name}: {message[:300]}") from None
    drop_auxiliary_heads(model)
    replace_head(model, num_classes)
    return model


def blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's stages in forward order, bottom to top (the head excluded).

    Plain containers (nn.Sequential, nn.ModuleList, the ViT encoder) are opened, as is the module
    holding the head; their parts (a ResNet block, a MobileNet inverted residual, VGG's first
    fully connected layers...) are the blocks that fine-tuning unfreezes from the top.
    """
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


def _torchvision_preprocessing(name: str, default_weights: bool) -> Preprocessing:
    """The eval transforms of the ImageNet weights: the default ones, or else the arch's first ImageNet
    recipe (e.g. 256/224, Inception v3 342/299), which a ported or local file is expected to follow."""
    weights_enum = get_model_weights(name)
    weights = weights_enum.DEFAULT if default_weights else next(iter(weights_enum))
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


def _torchvision_state_dict(name: str) -> dict[str, Tensor]:
    return get_model_weights(name).DEFAULT.get_state_dict(progress=True, check_hash=True)


def _register(backbone: Backbone) -> None:
    BACKBONES[backbone.name] = backbone


def _register_torchvision() -> None:
    for name in torchvision.models.list_models(module=torchvision.models):
        if name in TORCHVISION_EXCLUDED:
            continue
        _register(
            Backbone(
                name=name,
                source="torchvision",
                network=partial(imagenet_network, name),
                imagenet_state_dict=partial(_torchvision_state_dict, name),
                preprocessing=partial(_torchvision_preprocessing, name),
                weights_name=str(get_model_weights(name).DEFAULT),
            )
        )


def _register_timm() -> None:
    try:
        import timm
    except ImportError:
        return

    def preprocessing(name: str, default_weights: bool) -> Preprocessing:
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

    def state_dict(name: str) -> dict[str, Tensor]:
        return timm.create_model(name, pretrained=True).state_dict()  # Hugging Face hub cache

    for name in TIMM_MODELS:
        _register(
            Backbone(
                name=f"{TIMM_PREFIX}{name}",
                source="timm",
                network=partial(imagenet_network, f"{TIMM_PREFIX}{name}"),
                imagenet_state_dict=partial(state_dict, name),
                preprocessing=partial(preprocessing, name),
                weights_name=f"timm {name} (pretrained)",
            )
        )


_register_torchvision()
_register_timm()
