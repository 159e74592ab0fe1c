"""A Keras-style table of a model's layers: name (type), output shape, parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

# Keras names for the layers that Keras lists; activations are part of their layer there.
_KERAS_TYPES: dict[type[nn.Module], str] = {
    nn.Conv2d: "Conv2D",
    nn.MaxPool2d: "MaxPooling2D",
    nn.AvgPool2d: "AveragePooling2D",
    nn.AdaptiveAvgPool2d: "GlobalAveragePooling2D",
    nn.BatchNorm2d: "BatchNormalization",
    nn.Dropout: "Dropout",
    nn.Flatten: "Flatten",
    nn.Linear: "Dense",
}


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # channels last, without the batch dimension, as Keras prints it
    params: int


def layer_rows(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one (C, H, W) input through `model` and record every Keras-listed layer in call order."""
    rows: list[LayerRow] = []
    counts: dict[str, int] = {}

    def record(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        kind = _KERAS_TYPES[type(module)]
        base = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).lower()  # MaxPooling2D -> max_pooling2d
        index = counts.get(base, 0)
        counts[base] = index + 1
        shape = tuple(output.shape[1:])
        if len(shape) == 3:  # (C, H, W) -> (H, W, C)
            shape = (shape[1], shape[2], shape[0])
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(base if index == 0 else f"{base}_{index}", kind, shape, params))

    hooks = [m.register_forward_hook(record) for m in model.modules() if type(m) in _KERAS_TYPES]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return rows


def format_summary(name: str, model: nn.Module, rows: list[LayerRow]) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    header = f"{'Layer (type)':<30}{'Output Shape':<24}{'Param #':>10}"
    rule = "=" * len(header)
    lines = [f'Model: "{name}"', "_" * len(header), header, rule]
    for row in rows:
        shape = "(None, " + ", ".join(map(str, row.output_shape)) + ")"
        lines.append(f"{f'{row.name} ({row.kind})':<30}{shape:<24}{row.params:>10,}")
    lines += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * len(header),
    ]
    return "\n".join(lines)
