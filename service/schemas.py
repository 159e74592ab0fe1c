"""Pydantic models of the public responses."""

from __future__ import annotations

from pydantic import BaseModel

from exported import Preprocessing


class Prediction(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    """The result for one image: top-k predictions sorted by score, and the model that made them."""

    model: str
    version: str
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    """Metadata of a loaded model, as recorded at export."""

    model: str
    name: str
    version: str
    tag: str
    arch: str
    labels: list[str]
    preprocessing: Preprocessing
    test_accuracy: float | None  # on the held-out test set, when the data had one
    val_accuracy: float | None  # of the exported (best) checkpoint
