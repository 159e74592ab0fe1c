"""The fine-tune recipe under its former import path, for tests/service/test_photo_e2e.py (outside
training/): `FinetuneConfig` and `finetune` are `training.recipes.finetune`'s `Config` and `train`."""

from training.recipes.finetune import Config as FinetuneConfig
from training.recipes.finetune import train as finetune

__all__ = ["FinetuneConfig", "finetune"]
