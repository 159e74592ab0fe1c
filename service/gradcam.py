"""Grad-CAM (Selvaraju et al., 2017) with captum: where in an image the evidence for a class lies."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn


def gradcam(model: nn.Module, layer: nn.Module, batch: torch.Tensor, target: int) -> torch.Tensor:
    """The Grad-CAM map of class `target` for one normalised image (1, C, H, W): (H, W) in [0, 1].

    `layer`'s feature maps, each weighted by the mean gradient of the class's logit over it, summed and
    rectified (the evidence for the class, not against it), then upsampled bilinearly to the input's
    size and divided by their maximum. A map without any evidence for the class is all zeros.
    """
    attribution = LayerGradCam(model, layer).attribute(batch, target=target, relu_attributions=True)
    heatmap = LayerAttribution.interpolate(attribution, tuple(batch.shape[-2:]), interpolate_mode="bilinear")
    heatmap = heatmap[0, 0].detach()
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else heatmap
