"""Model registry: every architecture the project trains or serves is built here by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from training.errors import UserError

ModelBuilder = Callable[[int], nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder `fn(num_classes) -> nn.Module` under `name`."""

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build an untrained model; raise a UserError listing the valid names for an unknown one."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None
    return builder(num_classes)


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


@register_model("mnist_cnn")
def mnist_cnn(num_classes: int) -> nn.Module:
    return MnistConvNet(num_classes)


# The ImageNet backbones register themselves here (last: they use register_model), so that every
# user of create_model, the service included, knows them.
from training import backbones  # noqa: E402, F401
