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


class Target(BaseModel):
    """The class an explanation is of."""

    index: int
    label: str
    score: float


class Heatmap(BaseModel):
    """Grad-CAM at the model input's size (the preprocessed crop), normalised to [0, 1]: `height` rows of
    `width` values."""

    width: int
    height: int
    values: list[list[float]]


class Explanation(BaseModel):
    """The answer of POST /explain/{model}: the class explained and where its evidence lies."""

    model: str
    version: str
    target: Target
    predictions: list[Prediction] = Field(description="the top-k classes, as /classify answers them")
    layer: str = Field(description="module path of the Grad-CAM layer")
    heatmap: Heatmap
    overlay: str = Field(description="data:image/png;base64,...: the heatmap blended over the model's input")


class FeatureMaps(BaseModel):
    """The answer of POST /features/{model}: one convolution's output maps and the input's Sobel edges."""

    model: str
    version: str
    layer: str = Field(description="module path of the convolution shown")
    layers: list[str] = Field(description="module paths of the model's convolutions, in forward order")
    channels: int
    size: list[int] = Field(description="[height, width] of each map")
    maps: str = Field(description="data:image/png;base64,...: the maps in a grid, each scaled min to max")
    sobel: str = Field(description="data:image/png;base64,...: Sobel x, y and magnitude of the model's input")
