"""The explanations' pictures: a heatmap over its image, a grid of feature maps, Sobel edge maps; as PNG
data URLs."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

HEAT_COLOURS = colormaps["jet"]  # blue (no evidence) to red (the most)
HEAT_OPACITY = 0.6  # of the colour where the heat is highest; where it is 0, the image shows as it is
MAP_COLOURS = colormaps["viridis"]  # feature maps: dark blue (a map's minimum) to yellow (its maximum)
GAP = 1  # white pixels between the tiles of a sheet (white is in neither viridis nor the Sobel maps' grey
# between the tiles that meet: mid grey and black)


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def overlay(pixels: torch.Tensor, heatmap: torch.Tensor) -> Image.Image:
    """The heatmap (H, W) in [0, 1] coloured and blended over the image (C, H, W), uint8, in proportion
    to the heat."""
    image = pixels.cpu().expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
    heat = heatmap.cpu().numpy()[..., None]
    colour = HEAT_COLOURS(heat[..., 0])[..., :3] * 255
    blended = image * (1 - HEAT_OPACITY * heat) + colour * HEAT_OPACITY * heat
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def grid(maps: torch.Tensor) -> Image.Image:
    """Feature maps (C, h, w) row by row in a near-square grid, each coloured from its own minimum to its
    maximum; a constant map (a filter of zeros) takes the colour of the minimum."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    scaled = torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), 0.0)
    columns = math.ceil(math.sqrt(len(maps)))
    return _sheet(MAP_COLOURS(scaled.cpu().numpy())[..., :3], math.ceil(len(maps) / columns), columns)


def sobel_strip(edges: torch.Tensor) -> Image.Image:
    """Sobel x, y and magnitude (3, H, W) side by side in grey, on one scale: x and y from black (the
    steepest darkening) through mid grey (flat) to white (the steepest brightening), the magnitude from
    black (flat) to white."""
    peak = edges[2].max().clamp_min(1e-12)
    grey = torch.stack([0.5 + edges[0] / (2 * peak), 0.5 + edges[1] / (2 * peak), edges[2] / peak])
    return _sheet(grey.clamp(0, 1).cpu().numpy()[..., None].repeat(3, axis=-1), 1, 3)


def _sheet(tiles: np.ndarray, rows: int, columns: int) -> Image.Image:
    """RGB tiles (N, h, w, 3) in [0, 1] placed row by row, GAP white pixels apart, as one image."""
    count, height, width, _ = tiles.shape
    sheet = np.full((rows * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), 255, dtype=np.uint8)
    levels = np.rint(tiles * 255).astype(np.uint8)
    for index in range(count):
        top, left = (index // columns) * (height + GAP), (index % columns) * (width + GAP)
        sheet[top : top + height, left : left + width] = levels[index]
    return Image.fromarray(sheet)
