"""The photo model the benchmark serves: an ImageNet MobileNetV2 from the weights staged in ../shared.

Kept in one function so that a model shipped with the repository can replace it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bentoml
import torch
from safetensors.torch import save_file
from torchvision.models import MobileNet_V2_Weights

from bench.workload import PHOTO_WEIGHTS
from exported import ModelCard, Preprocessing, create_model, save_model
from exported.onnx import export_onnx

IMAGENET_PREPROCESSING = Preprocessing(
    input_size=(224, 224),
    channels=3,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    resize_size=256,
    interpolation="bilinear",
)


def export_imagenet_mobilenet_v2(weights: Path = PHOTO_WEIGHTS, *, onnx: bool = True) -> bentoml.Tag:
    """Save the MobileNetV2 state dict in `weights` as `photo-classifier` in the current model store,
    with its ONNX graph unless `onnx` is false."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    labels = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    network = create_model("mobilenet_v2", len(labels))
    network.load_state_dict(state)  # strict: fails on any mismatch
    card = ModelCard(
        task="photo",
        arch="mobilenet_v2",
        labels=labels,
        preprocessing=IMAGENET_PREPROCESSING,
        training_config={},
        data_sha256={},
    )
    with tempfile.TemporaryDirectory() as scratch:
        safetensors, graph = Path(scratch) / "model.safetensors", Path(scratch) / "model.onnx"
        save_file(state, str(safetensors))
        if onnx:
            export_onnx(network, IMAGENET_PREPROCESSING, graph)  # as `python -m training export --onnx` does
        return save_model("photo-classifier", safetensors, card, onnx=graph if onnx else None)
