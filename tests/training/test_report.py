"""The report: accuracy and per-class precision/recall, the plots, and the Keras summary's rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.models import create_model
from training.report import (
    classification_report,
    format_report,
    layer_rows,
    plot_confusion_matrix,
    plot_curves,
)
from training.rundir import EpochRow


def test_classification_report_counts() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])  # predicts 0, 1, 0, 0
    targets = torch.tensor([0, 1, 1, 0])
    report = classification_report(logits, targets, ["ant", "bee"])
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]
    assert report["accuracy"] == 0.75 and report["images"] == 4
    ant, bee = report["per_class"]
    assert (ant["precision"], ant["recall"], bee["precision"], bee["recall"]) == pytest.approx(
        (2 / 3, 1, 1, 0.5)
    )
    text = format_report(report)
    assert text.splitlines()[0] == "accuracy 0.7500 on 4 images"
    assert text.splitlines()[-1].split() == ["bee", "1.0000", "0.5000", "2"]


def test_plots_are_png_files(tmp_path: Path) -> None:
    rows = [
        EpochRow("features", 1, 1.0, 0.5, 0.9, 0.6, 1e-3, 1.0),
        EpochRow("finetune", 1, 0.5, 0.8, 0.6, 0.7, 1e-4, 1.0),
    ]
    plot_curves(rows, tmp_path / "curves.png")
    plot_confusion_matrix([[5, 1], [0, 4]], ["T-shirt/top", "Trouser"], tmp_path / "matrix.png", "title")
    for name in ("curves.png", "matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_rows_list_subclasses_of_keras_layers_too() -> None:
    """timm's BatchNormAct2d is a BatchNorm2d: Keras would list it as BatchNormalization."""
    rows = layer_rows(create_model("timm/resnetv2_50", 2), (3, 64, 64))
    kinds = {row.kind for row in rows}
    assert {"Conv2D", "BatchNormalization", "MaxPooling2D"} <= kinds
    assert rows[-2:][-1].output_shape in ((2,), (1, 1, 2))
