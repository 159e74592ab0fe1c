"""The exported-model contract shared by `training/` (which writes it) and `service/` (which reads it).

An exported model is a BentoML model store entry: safetensors weights plus a `ModelCard` (labels,
architecture, preprocessing, accuracies, provenance). The architecture is looked up lazily by name,
so reading the contract never imports more than the one network it rebuilds.
"""

from exported.architectures import create_model
from exported.card import ModelCard
from exported.preprocessing import Preprocessing
from exported.store import ExportedModel, find_model, load_model, save_model

__all__ = [
    "ExportedModel",
    "ModelCard",
    "Preprocessing",
    "create_model",
    "find_model",
    "load_model",
    "save_model",
]
