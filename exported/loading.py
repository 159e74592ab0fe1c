"""Load an exported model from the BentoML model store back as a network."""

from __future__ import annotations

from dataclasses import dataclass

import bentoml
import torch
from bentoml.exceptions import NotFound
from safetensors.torch import load_file
from torch import nn

from exported.architectures import create_model
from exported.card import ModelCard
from exported.store import WEIGHTS_FILE, verified_file


@dataclass(frozen=True)
class ExportedModel:
    tag: bentoml.Tag
    card: ModelCard
    model: nn.Module


def load_model(tag: str, device: torch.device | str = "cpu") -> ExportedModel:
    """Rebuild the network of the stored model `tag` and load its (verified) weights, in eval mode."""
    try:
        model_ref = bentoml.models.get(tag)
    except NotFound:
        raise LookupError(f"model {tag!r} is not in the BentoML model store") from None
    card = ModelCard.model_validate(model_ref.info.metadata)
    model = create_model(card.arch, len(card.labels))
    model.load_state_dict(load_file(verified_file(model_ref, card, WEIGHTS_FILE), device=str(device)))
    return ExportedModel(tag=model_ref.tag, card=card, model=model.to(device).eval())
