"""Grad-CAM's layer per architecture family: the last convolutional block, a spatial feature map."""

from __future__ import annotations

import pytest
import torch

from exported.architectures import create_model, gradcam_layer


@pytest.mark.parametrize(
    ("arch", "layer", "side"),
    [
        ("mnist_cnn", "7", 28),  # the ReLU after the last convolution, as for VGG and AlexNet
        ("mobilenet_v2", "features.18", 64),
        ("resnet18", "layer4", 64),
        ("densenet121", "features", 64),
        ("mnasnet0_5", "layers.16", 64),
        ("shufflenet_v2_x0_5", "conv5", 64),
        ("timm/resnetv2_50", "stages.3", 64),
    ],
)
def test_the_gradcam_layer_is_the_last_spatial_feature_map(arch: str, layer: str, side: int) -> None:
    model = create_model(arch, 3).eval()
    assert gradcam_layer(arch, model) == layer
    shapes = []
    model.get_submodule(layer).register_forward_hook(lambda _m, _i, output: shapes.append(output.shape))
    channels = 1 if arch == "mnist_cnn" else 3
    with torch.no_grad():
        model(torch.rand(1, channels, side, side))
    assert len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][-1] > 1  # (N, C, H, W), still a map


@pytest.mark.parametrize("arch", ["vit_b_16", "swin_t", "maxvit_t"])
def test_transformers_have_no_gradcam_layer(arch: str) -> None:
    with pytest.raises(LookupError, match="no convolutional feature map"):
        gradcam_layer(arch, torch.nn.Identity())
