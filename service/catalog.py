"""Which models this service serves: the model table resolved once against the BentoML model store.

Read at import, in every process (`bentoml serve`'s parent too), so it needs neither torch nor the
weights: only the cards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import bentoml
from bentoml.models import BentoModel

from exported import ModelCard
from service.schemas import ModelInfo
from service.settings import ServiceSettings


class ModelMissing(LookupError):
    """A required model is not in the BentoML model store."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # the route name: /classify/<name>
    ref: BentoModel
    card: ModelCard

    @property
    def tag(self) -> bentoml.Tag:
        return self.ref.tag

    def info(self) -> ModelInfo:
        return ModelInfo(
            model=self.name,
            name=self.tag.name,
            version=self.tag.version or "",
            tag=str(self.tag),
            arch=self.card.arch,
            labels=self.card.labels,
            preprocessing=self.card.preprocessing,
            test_accuracy=self.card.test_accuracy,
            val_accuracy=self.card.val_accuracy,
        )


def build_catalog(settings: ServiceSettings) -> dict[str, CatalogEntry]:
    """The table's models that are in the store; a missing required one stops the start.

    `latest` is resolved here, once, so every worker serves the same version. `BentoModel(tag).stored`
    only looks in the local store (a class-level reference to a missing model would make BentoML try
    to pull it from the cloud).
    """
    catalog: dict[str, CatalogEntry] = {}
    for name, served in settings.models.items():
        stored = BentoModel(served.tag).stored
        if stored is None:
            if served.required:
                raise ModelMissing(
                    f"model {served.tag!r} ({name}) is not in the BentoML model store "
                    f"(BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}); "
                    "import the embedded one with `python -m training export models/mnist`"
                )
            continue
        card = ModelCard.model_validate(stored.info.metadata)
        catalog[name] = CatalogEntry(name=name, ref=BentoModel(stored.tag), card=card)
    return catalog
