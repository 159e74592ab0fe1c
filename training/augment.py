"""Batched data augmentation for small grey images: one random affine per image, on any device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field


class AffineAugment(BaseModel):
    """Small rotations, shifts and zoom, as in the classic Keras MNIST recipe."""

    enabled: bool = True
    degrees: float = Field(10.0, ge=0, le=180, description="maximum rotation either way")
    translate: float = Field(0.1, ge=0, le=0.5, description="maximum shift, fraction of the side")
    zoom: float = Field(0.1, ge=0, lt=1, description="maximum zoom in or out, fraction")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform (N, C, H, W) float images in [0, 1]; the background fills with 0."""
        if not self.enabled:
            return images
        n = images.shape[0]

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator) * 2 - 1

        angle = uniform(n) * math.radians(self.degrees)
        scale = 1 + uniform(n) * self.zoom
        shift = uniform(n, 2) * self.translate * 2  # the grid spans [-1, 1]: a side is 2 units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        ).to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
