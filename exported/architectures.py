"""Networks by architecture name, built on demand: the MNIST ConvNet, torchvision's and timm's classifiers.

`create_model(arch, num_classes)` rebuilds, without weights, exactly the network a recipe trained:
an ImageNet architecture has its classification head replaced by one for `num_classes`;
`gradcam_layer(arch, model)` names the layer whose feature maps Grad-CAM weighs. Nothing is
registered at import; torchvision and timm are imported only for the names that need them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

MNIST_CNN = "mnist_cnn"
TIMM_PREFIX = "timm/"
IMAGENET_CLASSES = 1000

# Built with the options their ImageNet weights need: the weights expect the input remapped from
# ImageNet normalisation to [-1, 1] inside the network, as torchvision's own builders do with weights.
TORCHVISION_OPTIONS: dict[str, dict[str, Any]] = {
    "inception_v3": {"transform_input": True, "init_weights": True},
    "googlenet": {"transform_input": True, "init_weights": True},
}


# Grad-CAM's layer (Selvaraju et al., 2017): the output of the last convolutional block, the most abstract
# feature maps that are still spatial (N, C, H, W). Per torchvision family (the arch name's prefix), a
# module path, where "[-1]" is the last module of a Sequential, or AFTER_LAST_CONVOLUTION: the activation
# that follows the network's last convolution. timm models list their stages themselves (`feature_info`).
# Vision transformers (vit, swin, maxvit) have no such map and are not in the table.
AFTER_LAST_CONVOLUTION = "the activation after the last convolution"
GRADCAM_LAYERS = {
    MNIST_CNN: AFTER_LAST_CONVOLUTION,
    "alexnet": AFTER_LAST_CONVOLUTION,
    "vgg": AFTER_LAST_CONVOLUTION,
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "densenet": "features",
    "inception_v3": "Mixed_7c",
    "googlenet": "inception5b",
    "regnet": "trunk_output",
    "shufflenet": "conv5",
    "squeezenet": "features",
    "mobilenet": "features[-1]",
    "efficientnet": "features[-1]",
    "convnext": "features[-1]",
    "mnasnet": "layers[-1]",
}


class MnistConvNet(nn.Sequential):
    """The classic Keras-book MNIST ConvNet: three 3x3 convolutions, two pools, two dense layers.

    The final softmax is left to the loss (training) and to the service (inference): the
    module returns logits, which is the numerically stable form of the same network.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(inplace=True),
            # Keras flattens channels-last (H, W, C); the order does not change the network.
            nn.Flatten(),
            nn.Linear(3 * 3 * 64, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )


def create_model(arch: str, num_classes: int) -> nn.Module:
    """An untrained `arch` with `num_classes` outputs; a LookupError names an unknown arch."""
    if arch == MNIST_CNN:
        return MnistConvNet(num_classes)
    model = imagenet_network(arch)
    drop_auxiliary_heads(model)
    replace_head(model, num_classes)
    return model


def imagenet_network(arch: str) -> nn.Module:
    """The untrained 1000-class ImageNet network: torchvision's by name, or timm's as `timm/<name>`."""
    if arch.startswith(TIMM_PREFIX):
        import timm

        name = arch.removeprefix(TIMM_PREFIX)
        if not timm.is_model(name):
            raise LookupError(f"unknown timm architecture {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=IMAGENET_CLASSES)
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise LookupError(
            f"unknown architecture {arch!r}: expected {MNIST_CNN!r}, a torchvision classification model "
            f"or {TIMM_PREFIX}<timm model>"
        )
    options = TORCHVISION_OPTIONS.get(arch, {})
    return torchvision.models.get_model(arch, weights=None, num_classes=IMAGENET_CLASSES, **options)


def drop_auxiliary_heads(model: nn.Module) -> None:
    """Inception v3 and GoogLeNet's auxiliary heads only help training from scratch; the shared
    training loop and the service expect one tensor of logits."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, aux):
                setattr(model, aux, None)


def head(model: nn.Module) -> tuple[str, nn.Linear | nn.Conv2d]:
    """The classification head: the last linear layer (fc, classifier[-1], heads.head, head...), or in a
    network without one, the last 1x1 convolution (timm's ResNet v2 classifies with one)."""
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears:
        return linears[-1]
    convolutions = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
    ]
    if not convolutions:
        raise ValueError(f"{type(model).__name__} has no linear or 1x1 convolution classification head")
    return convolutions[-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the head for a new layer of the same kind with `num_classes` outputs, in place."""
    path, old = head(model)
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    new = (
        nn.Linear(old.in_features, num_classes)
        if isinstance(old, nn.Linear)
        else nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    )
    setattr(parent, attribute, new)


def gradcam_layer(arch: str, model: nn.Module) -> str:
    """The module path of `model`'s Grad-CAM layer (`GRADCAM_LAYERS`); a LookupError for an arch without."""
    if arch.startswith(TIMM_PREFIX):
        return model.feature_info[-1]["module"]
    family = next((family for family in GRADCAM_LAYERS if arch.startswith(family)), None)
    if family is None:
        raise LookupError(f"no Grad-CAM layer is known for {arch!r}: it has no convolutional feature map")
    path = GRADCAM_LAYERS[family]
    if path == AFTER_LAST_CONVOLUTION:
        names = [name for name, _ in model.named_modules()]
        last = max(i for i, (_, module) in enumerate(model.named_modules()) if isinstance(module, nn.Conv2d))
        return names[last + 1]
    if path.endswith("[-1]"):
        parent = path.removesuffix("[-1]")
        return f"{parent}.{len(model.get_submodule(parent)) - 1}"
    return path
