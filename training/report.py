"""What a run tells a person: accuracy and per-class precision/recall, the classic plots, a Keras summary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from training.engine import Batches, MixedPrecision, predict  # noqa: E402
from training.models import create_model  # noqa: E402
from training.rundir import EpochRow, RunDir  # noqa: E402

# Metrics --------------------------------------------------------------------------------------------


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    flat = targets * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(logits: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    matrix = confusion_matrix(logits.argmax(1), targets, len(labels))
    true_positives = matrix.diag().double()
    predicted = matrix.sum(0).double()
    actual = matrix.sum(1).double()
    per_class = [
        {
            "label": label,
            "precision": (true_positives[i] / predicted[i]).item() if predicted[i] else 0.0,
            "recall": (true_positives[i] / actual[i]).item() if actual[i] else 0.0,
            "support": int(actual[i]),
        }
        for i, label in enumerate(labels)
    ]
    return {
        "images": len(targets),
        "accuracy": (true_positives.sum() / max(len(targets), 1)).item(),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    width = max(6, *(len(c["label"]) for c in report["per_class"]))
    lines = [
        f"accuracy {report['accuracy']:.4f} on {report['images']} images",
        "",
        f"{'label':<{width}} precision  recall  support",
    ]
    lines += [
        f"{c['label']:<{width}} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['support']:>8}"
        for c in report["per_class"]
    ]
    return "\n".join(lines)


def evaluate_run(
    run: RunDir, batches: Batches, split: str, device: torch.device, *, plot: bool = False
) -> dict[str, Any]:
    """Score the best weights on `split` (evaluation-<split>.json; with `plot`, the confusion matrix)."""
    info = run.read_info()
    model = create_model(info.arch, len(info.labels))
    run.load_weights(model)
    logits, targets = predict(model.to(device), batches, MixedPrecision(device), description=split)
    report = classification_report(logits, targets, info.labels)
    run.write_evaluation(split, report)
    if plot:
        title = f"{info.arch} on the {split} set: accuracy {report['accuracy']:.2%}"
        plot_confusion_matrix(report["confusion_matrix"], info.labels, run.confusion_matrix, title)
    return report


# Plots ----------------------------------------------------------------------------------------------


def plot_curves(rows: list[EpochRow], path: Path) -> None:
    """Loss and accuracy per epoch, training vs validation; a dashed line where a new phase starts."""
    x = range(1, len(rows) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(x, [getattr(r, f"train_{metric}") for r in rows], "o-", label=f"training {metric}")
        axes.plot(x, [getattr(r, f"val_{metric}") for r in rows], "s-", label=f"validation {metric}")
        for i in range(1, len(rows)):
            if rows[i].phase != rows[i - 1].phase:
                axes.axvline(i + 0.5, color="grey", linestyle="--", label=f"start of {rows[i].phase}")
        axes.set_xlabel("epoch")
        axes.set_title(f"Training and validation {metric}")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    size = max(4.0, 0.55 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    long_labels = len(labels) > 10 or max(len(label) for label in labels) > 3
    axes.set_xticks(range(len(labels)), labels, rotation=45 if long_labels else 0)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


# Keras-style summary --------------------------------------------------------------------------------

# Keras names for the layers that Keras lists (subclasses too: timm's BatchNormAct2d is a BatchNorm2d);
# activations are part of their layer there.
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


def _keras_kind(module: nn.Module) -> str | None:
    return next((kind for cls, kind in _KERAS_TYPES.items() if isinstance(module, cls)), None)


def layer_rows(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one (C, H, W) input through `model` and record every Keras-listed layer in call order."""
    rows: list[LayerRow] = []
    counts: dict[str, int] = {}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        kind = _keras_kind(module) or ""
        base = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).lower()  # MaxPooling2D -> max_pooling2d
        index = counts.get(base, 0)
        counts[base] = index + 1
        shape = tuple(output.shape[1:])
        if len(shape) == 3:  # (C, H, W) -> (H, W, C)
            shape = (shape[1], shape[2], shape[0])
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(base if index == 0 else f"{base}_{index}", kind, shape, params))

    hooks = [m.register_forward_hook(record) for m in model.modules() if _keras_kind(m) is not None]
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
    header = f"{'Layer (type)':<36}{'Output Shape':<24}{'Param #':>12}"
    rule = "=" * len(header)
    lines = [f'Model: "{name}"', "_" * len(header), header, rule]
    for row in rows:
        shape = "(None, " + ", ".join(map(str, row.output_shape)) + ")"
        lines.append(f"{f'{row.name} ({row.kind})':<36}{shape:<24}{row.params:>12,}")
    lines += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * len(header),
    ]
    return "\n".join(lines)
