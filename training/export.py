"""Save a finished run into the BentoML model store (the exported-model contract in `exported/`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import bentoml
from safetensors.torch import load_file

from exported import ModelCard, create_model, find_model, save_model
from exported.onnx import export_onnx
from training.rundir import RunDir

logger = logging.getLogger(__name__)

DEFAULT_NAMES = {"mnist": "mnist-convnet", "photo": "photo-classifier"}


def export_run(
    run_dir: Path, name: str | None = None, *, onnx: bool = False, if_absent: bool = False
) -> bentoml.Tag:
    """Create `name:<weights sha256 prefix>` in the model store; exporting twice is a no-op.

    An unfinished run is refused: its weights file holds the best epoch so far of a run that may
    still be in its first phase, and it has no final evaluation. With `onnx`, the same weights also
    go in as an ONNX graph, checked against the network. With `if_absent`, a store that already
    holds a model of this name is left as it is and its latest tag returned: the store's `latest` is
    the newest saved, so a default exported this way never displaces another model of the name.
    """
    run = RunDir.open_finished(run_dir)
    info = run.read_info()
    name = name or DEFAULT_NAMES.get(info.task, info.task)
    if if_absent and (stored := find_model(name)) is not None:
        logger.info("the store already holds %s: %s not exported", stored[0], run_dir)
        return stored[0]
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
    if not onnx:
        return save_model(name, run.weights, card)
    model = create_model(card.arch, len(card.labels))
    model.load_state_dict(load_file(run.weights))
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / "model.onnx"
        difference = export_onnx(model, card.preprocessing, graph)
        logger.info("ONNX graph of %s: max |Δ probability| %.1e on a random batch", run_dir, difference)
        return save_model(name, run.weights, card, onnx=graph)
