"""Accuracy, per-class precision/recall and the confusion matrix of a set of predictions."""

from __future__ import annotations

from typing import Any

import torch


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
    lines = [
        f"accuracy {report['accuracy']:.4f} on {report['images']} images",
        "",
        "label  precision  recall  support",
    ]
    lines += [
        f"{c['label']:<6} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['support']:>8}"
        for c in report["per_class"]
    ]
    return "\n".join(lines)
