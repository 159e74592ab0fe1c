"""What a network's convolutions respond to: one layer's feature maps, and beside them the classic Sobel
edge maps of the same input, computed with the same operator (`torch.nn.functional.conv2d`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# conv2d is a cross-correlation: this kernel answers > 0 where the image gets brighter to the right,
# as the Sobel operator convolved with the image does (the kernel flipped). Its transpose: downwards.
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B: the grey PIL's convert("L") makes


def conv_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The module paths of `model`'s 2-D convolutions, in the order a forward pass of `example` runs them."""
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: order.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(order))  # a module run twice counts once, where it first ran


def feature_maps(model: nn.Module, layer: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """`layer`'s output maps (C, h, w) for one normalised image (1, C, H, W)."""
    captured: list[torch.Tensor] = []
    # A copy: the in-place activation that usually follows a convolution would rectify its output.
    hook = layer.register_forward_hook(lambda _module, _input, output: captured.append(output[0].clone()))
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        hook.remove()
    return captured[0]


def sobel(pixels: torch.Tensor) -> torch.Tensor:
    """Sobel x, y and gradient magnitude (3, H, W) of one image (1, C, H, W), in grey.

    An RGB image's grey is its BT.601 luma, folded into the kernels (the filter is linear), so that one
    conv2d computes both derivatives; the border is padded by repeating the edge pixels, so that the
    frame of the image is not taken for an edge.
    """
    grey = torch.tensor(LUMA if pixels.shape[1] == 3 else (1.0,))
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None] * grey[None, :, None, None]  # (2, C, 3, 3)
    padded = F.pad(pixels, (1, 1, 1, 1), mode="replicate")
    dx, dy = F.conv2d(padded, kernels.to(pixels))[0]
    return torch.stack([dx, dy, torch.hypot(dx, dy)])
