"""One model's explanations of one image, on its PyTorch network: Grad-CAM of a class, a convolution's
feature maps beside the input's Sobel edges. The answers of `/explain/<model>` and `/features/<model>`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from exported import load_model
from exported.architectures import gradcam_layer
from service.catalog import CatalogEntry
from service.decoding import decode_image
from service.errors import NotExplainable, UnknownLayer, UnknownTarget
from service.feature_maps import conv_layers, feature_maps, sobel
from service.gradcam import gradcam
from service.pictures import data_url, grid, overlay, sobel_strip
from service.pipeline import top_k
from service.preprocess import InputTransform
from service.settings import ServiceSettings
from service.torch_network import normalize_tensor


class ExplainedModel:
    """One model's PyTorch network, with the layers its explanations look at."""

    def __init__(self, entry: CatalogEntry, settings: ServiceSettings, device: str) -> None:
        self.entry = entry
        self.settings = settings
        self.device = torch.device(device)
        self.spec = entry.card.preprocessing
        self.labels = entry.card.labels
        self.transform = InputTransform(self.spec)
        self.model = load_model(str(entry.tag), self.device).model.requires_grad_(False)
        try:
            self.gradcam_layer: str | None = gradcam_layer(entry.card.arch, self.model)
        except LookupError:
            self.gradcam_layer = None
        blank = torch.zeros(1, self.spec.channels, *self.spec.input_size, device=self.device)
        self.conv_layers = conv_layers(self.model, blank)

    def explain(self, image: bytes, target: str | None) -> dict[str, Any]:
        """The answer of `POST /explain/<model>`: the target class and its Grad-CAM map (README)."""
        if self.gradcam_layer is None:
            raise NotExplainable(
                f"the {self.entry.name} model ({self.entry.card.arch}) has no convolutional feature map "
                "for Grad-CAM"
            )
        index = self._target_index(target)
        pixels = self._prepare(image)
        batch = normalize_tensor(pixels, self.spec)
        with torch.inference_mode():
            probabilities = self.model(batch).float().softmax(dim=1).cpu().numpy()
        if index is None:
            index = int(probabilities[0].argmax())
        heatmap = gradcam(self.model, self.model.get_submodule(self.gradcam_layer), batch, index)
        tag = self.entry.tag
        (classified,) = top_k(
            probabilities, self.labels, self.settings.top_k, name=tag.name, version=tag.version or ""
        )
        height, width = heatmap.shape
        return {
            **classified,  # model, version and predictions, as /classify answers them
            "target": {
                "index": index,
                "label": self.labels[index],
                "score": round(float(probabilities[0, index]), 6),
            },
            "layer": self.gradcam_layer,
            "heatmap": {
                "width": width,
                "height": height,
                "values": heatmap.double().round(decimals=4).tolist(),
            },
            "overlay": data_url(overlay(pixels[0], heatmap)),
        }

    def features(self, image: bytes, layer: str | None) -> dict[str, Any]:
        """The answer of `POST /features/<model>`: one convolution's maps and the input's Sobel edges."""
        layer = self.conv_layers[0] if layer is None else layer
        if layer not in self.conv_layers:
            raise UnknownLayer(
                f"unknown layer {layer!r}: the {self.entry.name} model's convolutional layers are "
                f"{', '.join(self.conv_layers)}"
            )
        pixels = self._prepare(image)
        maps = feature_maps(self.model, self.model.get_submodule(layer), normalize_tensor(pixels, self.spec))
        edges = sobel(F.to_dtype(pixels, torch.float32, scale=True))
        tag = self.entry.tag
        return {
            "model": tag.name,
            "version": tag.version or "",
            "layer": layer,
            "layers": self.conv_layers,
            "channels": maps.shape[0],
            "size": list(maps.shape[1:]),
            "maps": data_url(grid(maps)),
            "sobel": data_url(sobel_strip(edges)),
        }

    def _target_index(self, target: str | None) -> int | None:
        """A label of the model, else a class index; None (the top class) when not given."""
        if target is None:
            return None
        if target in self.labels:
            return self.labels.index(target)
        if target.isascii() and target.isdigit() and int(target) < len(self.labels):
            return int(target)
        examples = ", ".join(repr(label) for label in self.labels[:3])
        raise UnknownTarget(
            f"unknown target class {target!r}: give one of the {self.entry.name} model's labels "
            f"({examples}, ...) or a class index from 0 to {len(self.labels) - 1}"
        )

    def _prepare(self, image: bytes) -> torch.Tensor:
        """The image as the model's uint8 input (1, C, H, W), decoded and preprocessed as for /classify."""
        decoded = decode_image(
            image, max_pixels=self.settings.max_image_pixels, min_side=self.transform.min_side
        )
        return torch.from_numpy(np.array(self.transform(decoded)[None])).to(self.device)
