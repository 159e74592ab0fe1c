"""The exported-model contract shared by `training/` (which writes it) and `service/` (which reads it).

An exported model is a BentoML model store entry: safetensors weights plus a `ModelCard` (labels,
architecture, preprocessing, accuracies, provenance). The architecture is looked up lazily by name.

The names below are imported on first use (PEP 562), so that reading a card, as the server's parent
process does, never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ModelCard": "exported.card",
    "Preprocessing": "exported.preprocessing",
    "create_model": "exported.architectures",
    "find_model": "exported.store",
    "save_model": "exported.store",
    "ExportedModel": "exported.loading",
    "load_model": "exported.loading",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'exported' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
