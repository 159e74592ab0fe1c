"""Architectures by name for training: the exported-model contract's lookup, with CLI errors."""

from __future__ import annotations

from torch import nn

from exported.architectures import MNIST_CNN
from exported.architectures import create_model as create_exported_model
from training.backbones import BACKBONES
from training.errors import UserError


def list_models() -> list[str]:
    return sorted([MNIST_CNN, *BACKBONES])


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build an untrained model; raise a UserError listing the valid names for an unknown one."""
    try:
        return create_exported_model(name, num_classes)
    except LookupError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None
