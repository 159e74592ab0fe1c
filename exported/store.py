"""Save an exported model into the BentoML model store, find it and load it back as a network."""

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
from safetensors.torch import load_file
from torch import nn

from exported.architectures import create_model
from exported.card import ModelCard

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ExportedModel:
    tag: bentoml.Tag
    card: ModelCard
    model: nn.Module


def save_model(name: str, weights: Path, card: ModelCard) -> bentoml.Tag:
    """Store `weights` with `card` as `name:<weights sha256 prefix>`; saving the same weights is a no-op."""
    tag = bentoml.Tag(name, file_sha256(weights)[:16])
    try:
        return bentoml.models.get(tag).tag
    except NotFound:
        pass
    with bentoml.models.create(
        tag,
        module=__name__,
        labels={"task": card.task, "arch": card.arch},
        metadata=_without_none(card.model_dump(mode="json")),
    ) as model_ref:
        shutil.copyfile(weights, model_ref.path_of(WEIGHTS_FILE))
    logger.info("saved %s as %s", weights, model_ref.tag)
    return model_ref.tag


def find_model(tag: str) -> tuple[bentoml.Tag, ModelCard] | None:
    """The resolved tag (`latest` becomes a version) and card of a stored model, or None."""
    try:
        model_ref = bentoml.models.get(tag)
    except NotFound:
        return None
    return model_ref.tag, ModelCard.model_validate(model_ref.info.metadata)


def load_model(tag: str, device: torch.device | str = "cpu") -> ExportedModel:
    """Rebuild the network of the stored model `tag` and load its weights, in eval mode."""
    try:
        model_ref = bentoml.models.get(tag)
    except NotFound:
        raise LookupError(f"model {tag!r} is not in the BentoML model store") from None
    card = ModelCard.model_validate(model_ref.info.metadata)
    model = create_model(card.arch, len(card.labels))
    model.load_state_dict(load_file(model_ref.path_of(WEIGHTS_FILE), device=str(device)))
    return ExportedModel(tag=model_ref.tag, card=card, model=model.to(device).eval())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _without_none(value: Any) -> Any:
    """BentoML metadata accepts basic types only: drop the None entries (they read back as defaults)."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value
