"""Save an exported model into the BentoML model store and find it again (no torch needed)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from exported.card import ModelCard

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"  # optional: the same network for ONNX Runtime (`exported.onnx`)


def save_model(name: str, weights: Path, card: ModelCard, *, onnx: Path | None = None) -> bentoml.Tag:
    """Store `weights` (and the `onnx` graph made from them) with `card` as `name:<weights sha256 prefix>`.

    Saving the same weights again is a no-op, unless it adds the ONNX graph that the stored copy lacks.
    """
    tag = bentoml.Tag(name, file_sha256(weights)[:16])
    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        pass
    else:
        if onnx is None or Path(stored.path_of(ONNX_FILE)).is_file():
            return stored.tag
        bentoml.models.delete(tag)  # the same weights, saved again with their ONNX graph
    files = {WEIGHTS_FILE: weights} | ({ONNX_FILE: onnx} if onnx is not None else {})
    card = card.model_copy(update={"files_sha256": {name: file_sha256(path) for name, path in files.items()}})
    with bentoml.models.create(
        tag,
        module=__name__,
        labels={"task": card.task, "arch": card.arch},
        metadata=_without_none(card.model_dump(mode="json")),
    ) as model_ref:
        for name, path in files.items():
            shutil.copyfile(path, model_ref.path_of(name))
    logger.info("saved %s as %s%s", weights, model_ref.tag, " with its ONNX graph" if onnx else "")
    return model_ref.tag


def find_model(tag: str) -> tuple[bentoml.Tag, ModelCard] | None:
    """The resolved tag (`latest` becomes a version) and card of a stored model, or None."""
    try:
        model_ref = bentoml.models.get(tag)
    except NotFound:
        return None
    return model_ref.tag, ModelCard.model_validate(model_ref.info.metadata)


class TamperedModel(ValueError):
    """A stored file's sha256 differs from the one recorded when the model was saved."""


def verified_file(model: bentoml.Model, card: ModelCard, name: str) -> Path:
    """The path of the stored file `name`, after checking it against the sha256 recorded at export.

    Models exported before the hashes were recorded are loaded with a warning.
    """
    path = Path(model.path_of(name))
    expected = card.files_sha256.get(name)
    if expected is None:
        logger.warning("%s has no recorded sha256 for %s: export it again to verify it", model.tag, name)
    elif (actual := file_sha256(path)) != expected:
        raise TamperedModel(
            f"{path} of model {model.tag} has sha256 {actual}, not the {expected} recorded at export: "
            "the file changed after export; export the model again"
        )
    return path


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
