"""The model card: everything the service needs to know about an exported model besides its weights."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from exported.preprocessing import Preprocessing


class ModelCard(BaseModel):
    task: str  # the recipe that trained it ("mnist", "photo", ...)
    arch: str  # an architecture name `create_model` knows
    labels: list[str]  # class names, in the order of the network's outputs
    preprocessing: Preprocessing
    test_accuracy: float | None = None  # on the held-out test set, when the data had one
    val_accuracy: float | None = None  # of the exported (best) checkpoint
    training_config: dict[str, Any]
    data_sha256: dict[str, str]  # data file name -> sha256, for provenance
    files_sha256: dict[str, str] = {}  # stored file name -> sha256, written by save_model, checked at load
