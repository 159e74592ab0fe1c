"""The classic course plots: training curves and a confusion matrix, as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.history import EpochRow  # noqa: E402


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
    axes.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 10 else 0)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
