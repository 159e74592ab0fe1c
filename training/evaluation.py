"""Evaluating a run's best weights on a split: the report file and, for the final evaluation, its plot."""

from __future__ import annotations

import json
from typing import Any

import torch

from training.checkpoint import load_weights
from training.engine import Batches, MixedPrecision, predict
from training.models import create_model
from training.plots import plot_confusion_matrix
from training.report import classification_report
from training.rundir import RunDir


def evaluate_run(
    run: RunDir, batches: Batches, split: str, device: torch.device, *, plot: bool = False
) -> dict[str, Any]:
    """Write evaluation-<split>.json; with `plot`, also the run's confusion_matrix.png."""
    info = run.read_info()
    model = create_model(info.arch, len(info.labels))
    load_weights(model, run.weights)
    logits, targets = predict(model.to(device), batches, MixedPrecision(device), description=split)
    report = classification_report(logits, targets, info.labels)
    run.evaluation(split).write_text(json.dumps(report, indent=2) + "\n")
    if plot:
        title = f"{info.arch} on the {split} set: accuracy {report['accuracy']:.2%}"
        plot_confusion_matrix(report["confusion_matrix"], info.labels, run.confusion_matrix, title)
    return report
