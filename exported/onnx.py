"""The ONNX copy of an exported network, for ONNX Runtime: exported from the same weights and checked.

The graph takes the normalised float32 batch (N, C, H, W) with a dynamic batch size and returns the
logits, like the PyTorch module. `export_onnx` refuses a graph whose class probabilities differ
from the module's by more than `PARITY_TOLERANCE` on a random batch (timm's `check_forward` idea).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from exported.preprocessing import Preprocessing

PARITY_TOLERANCE = 1e-4  # max |probability difference|
OPSET = 18


def export_onnx(model: nn.Module, spec: Preprocessing, path: Path) -> float:
    """Write `model` (in eval mode) as ONNX to `path`; return the measured max |Δ probability|."""
    model = model.eval()
    example = torch.randn(2, spec.channels, *spec.input_size)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    buffer = io.BytesIO()
    program.save(buffer)
    graph = buffer.getvalue()
    check = torch.randn(3, spec.channels, *spec.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(check).softmax(dim=1).numpy()
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {"pixels": check.numpy()})[0])
    difference = float(np.abs(logits.softmax(dim=1).numpy() - expected).max())
    if difference > PARITY_TOLERANCE:
        raise ValueError(
            f"the ONNX graph's probabilities differ from the network's by {difference:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e})"
        )
    path.write_bytes(graph)
    return difference
