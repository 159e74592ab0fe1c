"""The stock BentoML reference: an image classifier written as BentoML's documentation writes one.

One service, one worker, one batchable API per model over `list[PIL.Image.Image]` (the multipart
field is the parameter name, `images`), loading the same stored weights as the project's service:

    bentoml serve bench.stock_service:StockClassifier --port 3100
"""

from __future__ import annotations

import bentoml
import torch
from PIL.Image import Image

from exported import load_model

# High enough that BentoML sheds nothing at concurrency 64 on photos: the reference measures throughput.
BATCHING = {"max_batch_size": 32, "max_latency_ms": 10_000}


class Classifier:
    """A stored model with its eval preprocessing: PIL images in, top-5 {label: score} per image out."""

    def __init__(self, tag: str) -> None:
        exported = load_model(tag)
        self.model = exported.model
        self.labels = exported.card.labels
        self.transform = exported.card.preprocessing.eval_transform()

    def __call__(self, images: list[Image]) -> list[dict[str, float]]:
        batch = torch.stack([self.transform(image) for image in images])
        with torch.inference_mode():
            scores, indices = self.model(batch).softmax(dim=1).topk(5)
        return [
            {self.labels[index]: score for index, score in zip(row_indices, row_scores, strict=True)}
            for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
        ]


@bentoml.service(workers=1)
class StockClassifier:
    def __init__(self) -> None:
        self.mnist = Classifier("mnist-convnet:latest")
        self.photo = Classifier("photo-classifier:latest")

    @bentoml.api(route="/classify/mnist", batchable=True, **BATCHING)
    def classify_mnist(self, images: list[Image]) -> list[dict[str, float]]:
        return self.mnist(images)

    @bentoml.api(route="/classify/photo", batchable=True, **BATCHING)
    def classify_photo(self, images: list[Image]) -> list[dict[str, float]]:
        return self.photo(images)
