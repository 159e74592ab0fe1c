"""Save a finished run into the BentoML model store (the exported-model contract in `exported/`)."""

from __future__ import annotations

from pathlib import Path

import bentoml

from exported import ModelCard, save_model
from training.rundir import RunDir

DEFAULT_NAMES = {"mnist": "mnist-convnet", "photo": "photo-classifier"}


def export_run(run_dir: Path, name: str | None = None) -> bentoml.Tag:
    """Create `name:<weights sha256 prefix>` in the model store; exporting twice is a no-op.

    An unfinished run is refused: its weights file holds the best epoch so far of a run that may
    still be in its first phase, and it has no final evaluation."""
    run = RunDir.open_finished(run_dir)
    info = run.read_info()
    test = run.read_evaluation("test")
    epochs = run.read_metrics()
    card = ModelCard(
        task=info.task,
        arch=info.arch,
        labels=info.labels,
        preprocessing=info.preprocessing,
        test_accuracy=test["accuracy"] if test else None,
        val_accuracy=round(max(row.val_accuracy for row in epochs), 6) if epochs else None,
        training_config=info.config,
        data_sha256=info.data_sha256,
    )
    return save_model(name or DEFAULT_NAMES.get(info.task, info.task), run.weights, card)
