"""Save a trained run into the BentoML model store, and load it back for serving."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import torch
from bentoml.exceptions import NotFound
from pydantic import BaseModel
from safetensors.torch import load_file
from torch import nn

from training import history
from training.errors import UserError
from training.models import create_model
from training.preprocessing import Preprocessing
from training.rundir import RunDir

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
DEFAULT_NAMES = {"mnist": "mnist-convnet", "photo": "photo-classifier"}


class ModelCard(BaseModel):
    """The metadata stored with an exported model: all the service needs besides the weights."""

    task: str
    arch: str
    labels: list[str]
    preprocessing: Preprocessing
    test_accuracy: float | None = None  # on the held-out test set, when the data had one
    val_accuracy: float | None = None  # of the exported (best) checkpoint
    training_config: dict[str, Any]
    data_sha256: dict[str, str]


@dataclass(frozen=True)
class ExportedModel:
    tag: str
    card: ModelCard
    model: nn.Module


def export_run(run_dir: Path, name: str | None = None) -> bentoml.Tag:
    """Create `name:<weights sha256 prefix>` in the model store; exporting twice is a no-op."""
    run = RunDir.open(run_dir)
    info = run.read_info()
    test = run.read_evaluation("test")
    epochs = history.read(run.metrics)
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
    tag = bentoml.Tag(name or DEFAULT_NAMES.get(info.task, info.task), _file_sha256(run.weights)[:16])
    try:
        return bentoml.models.get(tag).tag
    except NotFound:
        pass
    with bentoml.models.create(
        tag,
        module=__name__,
        labels={"task": info.task, "arch": info.arch},
        metadata=_without_none(card.model_dump(mode="json")),
    ) as model_ref:
        shutil.copyfile(run.weights, model_ref.path_of(WEIGHTS_FILE))
    logger.info("exported %s as %s", run_dir, model_ref.tag)
    return model_ref.tag


def load_exported(tag: str, device: torch.device | str = "cpu") -> ExportedModel:
    """Rebuild the network from the store entry `tag` and load its weights, in eval mode."""
    try:
        model_ref = bentoml.models.get(tag)
    except NotFound:
        raise UserError(f"model {tag!r} is not in the BentoML model store") from None
    card = ModelCard.model_validate(model_ref.info.metadata)
    model = create_model(card.arch, len(card.labels))
    model.load_state_dict(load_file(model_ref.path_of(WEIGHTS_FILE), device=str(device)))
    return ExportedModel(tag=str(model_ref.tag), card=card, model=model.to(device).eval())


def _without_none(value: Any) -> Any:
    """BentoML metadata accepts basic types only: drop the None entries (they read back as defaults)."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
