"""Pydantic models of the public requests and responses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, WithJsonSchema

from exported import Preprocessing

# An image file as a JSON string: standard base64 (OpenAPI's `format: byte`); a `data:` URL is accepted too.
Base64Image = Annotated[str, WithJsonSchema({"type": "string", "format": "byte"})]


class Prediction(BaseModel):
    label: str
    score: float = Field(ge=0, le=1)  # the softmax probability


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
