"""Which models the service serves: their store references and exported metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass

import bentoml
from bentoml.models import BentoModel

from exported import ModelCard
from service.schemas import ModelInfo
from service.settings import ModelKey, ServiceSettings


class ModelMissing(LookupError):
    """The required MNIST model is not in the BentoML model store."""


@dataclass(frozen=True)
class Entry:
    key: ModelKey
    ref: BentoModel
    card: ModelCard

    @property
    def tag(self) -> bentoml.Tag:
        return self.ref.tag

    def info(self) -> ModelInfo:
        return ModelInfo(
            model=self.key,
            name=self.tag.name,
            version=self.tag.version or "",
            tag=str(self.tag),
            arch=self.card.arch,
            labels=self.card.labels,
            preprocessing=self.card.preprocessing,
            test_accuracy=self.card.test_accuracy,
            val_accuracy=self.card.val_accuracy,
        )


def build_catalog(settings: ServiceSettings) -> dict[ModelKey, Entry]:
    """MNIST is required; the photo model is served only when it is in the store.

    `latest` is resolved here, once, so the front and the model service agree on the version.
    Looking models up at import time keeps BentoML from trying to pull a missing one from the cloud.
    """
    catalog: dict[ModelKey, Entry] = {}
    for key, tag in (("mnist", settings.mnist_model), ("photo", settings.photo_model)):
        stored = BentoModel(tag).stored
        if stored is None:
            if key == "mnist":
                raise ModelMissing(
                    f"model {tag!r} is not in the BentoML model store "
                    f"(BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}); "
                    "import the embedded one with `python -m training export models/mnist`"
                )
            continue
        card = ModelCard.model_validate(stored.info.metadata)
        catalog[key] = Entry(key=key, ref=BentoModel(stored.tag), card=card)
    return catalog
