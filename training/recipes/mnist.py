"""The MNIST ConvNet on a 28x28 IDX dataset: AdamW, a one-cycle learning rate, batched affine augmentation.

MNIST itself by default; any dataset in the MNIST file layout (Fashion-MNIST, KMNIST, your own) with its
class names from a dataset preset (`--dataset`) or a names file (`--labels-file`), recorded in the run
and, at export, in the model card.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from exported.architectures import MNIST_CNN
from exported.preprocessing import MNIST_PREPROCESSING
from training.data import (
    IDX_PRESETS,
    IdxBatches,
    IdxSplit,
    file_sha256,
    idx_preset,
    idx_sha256,
    load_idx_split,
    read_labels_file,
    split_train_val,
)
from training.distributed import ONE_PROCESS, World
from training.engine import Batches, Phase, fit
from training.models import create_model
from training.recipes import finish, start
from training.rundir import RunDir, RunInfo
from training.transforms import AffineAugment

logger = logging.getLogger(__name__)

TASK = "mnist"
EVAL_BATCH = 1000
SPLITS = ("test", "val", "train")


class Config(BaseModel):
    """The recipe's settings; the defaults are the embedded model's recipe (configs/mnist.yaml)."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="folder with the four IDX .gz files in the MNIST layout")
    dataset: str = Field(
        "mnist", description=f"class names and augmentation preset: {', '.join(IDX_PRESETS)}"
    )
    labels_file: str | None = Field(None, description="class names, one per line, instead of the preset's")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1, description="images per batch and process")
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the one-cycle schedule (x processes)")
    weight_decay: float = Field(1e-2, ge=0)
    val_size: int = Field(5000, ge=1, description="validation images carved from the training images")
    train_limit: int | None = Field(None, ge=1, description="train on only this many images (quick runs)")
    augment: bool = Field(
        True, description="random rotations, shifts and zoom (flips where the preset allows)"
    )
    rotation: float | None = Field(None, ge=0, le=180, description="max rotation, degrees (the preset's)")
    shift: float | None = Field(
        None, ge=0, le=0.5, description="max shift, fraction of the side (the preset's)"
    )
    zoom: float | None = Field(None, ge=0, lt=1, description="max zoom in or out, fraction (the preset's)")
    hflip: float | None = Field(
        None, ge=0, le=1, description="probability of a horizontal flip (the preset's)"
    )
    seed: int = Field(0, description="random seed: the same seed gives the same run")
    device: str = Field("auto", description="auto, cpu or cuda")

    @model_validator(mode="after")
    def _preset_fills_the_augmentation(self) -> Config:
        """Resolve the preset's augmentation, so the recorded config holds the numbers that were used."""
        if self.dataset not in IDX_PRESETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(IDX_PRESETS)}")
        preset = IDX_PRESETS[self.dataset].augment
        for name in ("rotation", "shift", "zoom", "hflip"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, float(getattr(preset, name)))
        return self

    def augmentation(self) -> AffineAugment | None:
        if not self.augment:
            return None
        return AffineAugment(rotation=self.rotation, shift=self.shift, zoom=self.zoom, hflip=self.hflip)  # type: ignore[arg-type]

    def labels(self) -> list[str]:
        if self.labels_file is not None:
            return read_labels_file(Path(self.labels_file))
        return list(idx_preset(self.dataset).labels)


def batches(
    split: IdxSplit,
    batch_size: int,
    world: World = ONE_PROCESS,
    *,
    seed: int | None = None,
    augment: AffineAugment | None = None,
) -> IdxBatches:
    """Batches normalised as the exported preprocessing does; shuffled and augmented with `seed`."""
    mean, std = MNIST_PREPROCESSING.mean[0], MNIST_PREPROCESSING.std[0]
    return IdxBatches(split, batch_size, mean, std, seed=seed, augment=augment, world=world)


def train(config: Config, out: Path, *, resume: bool = False) -> RunDir:
    """Train and write the run directory; with `resume`, continue an interrupted run exactly."""
    data_dir = Path(config.data_dir)
    labels = config.labels()
    train_split, val_split = split_train_val(
        load_idx_split(data_dir, "train", len(labels)), config.val_size, config.seed
    )
    test_split = load_idx_split(data_dir, "test", len(labels))
    if config.train_limit is not None:
        train_split = train_split.subset(torch.arange(min(config.train_limit, len(train_split))))
    provenance = idx_sha256(data_dir)
    if config.labels_file is not None:
        provenance[Path(config.labels_file).name] = file_sha256(Path(config.labels_file))
    info = RunInfo(
        task=TASK,
        arch=MNIST_CNN,
        labels=labels,
        preprocessing=MNIST_PREPROCESSING,
        config=config.model_dump(mode="json"),
        data_sha256=provenance,
    )
    session = start(info, out, seed=config.seed, device=config.device, resume=resume)
    world = session.world

    model = create_model(MNIST_CNN, len(labels)).to(session.device)
    lr = world.scale_lr(config.lr)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    augment = config.augmentation()

    def train_batches(epoch: int) -> IdxBatches:
        global_batch = config.batch_size * world.size
        return batches(train_split, global_batch, world, seed=config.seed * 1000 + epoch, augment=augment)

    steps = len(train_batches(1))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=config.epochs, steps_per_epoch=steps
    )
    logger.info(
        "training %s on %d %s images (%d validation) on %s, %d process(es)",
        MNIST_CNN, len(train_split), config.dataset, len(val_split), session.device, world.size,
    )  # fmt: skip
    fit(
        model,
        Phase("train", config.epochs, steps, optimizer, scheduler),
        train_batches,
        batches(val_split, EVAL_BATCH, world),
        session.run,
        session.precision,
        world,
        resume=session.saved,
    )
    return finish(session, "test", lambda: batches(test_split, EVAL_BATCH))


def eval_batches(info: RunInfo, data_dir: Path, split: str, _device: torch.device) -> Batches:
    """The images of `split`: "test", "val" (the carved-out validation set) or "train" (the rest)."""
    config = Config.model_validate(info.config)
    if split == "test":
        return batches(load_idx_split(data_dir, "test", len(info.labels)), EVAL_BATCH)
    train_split, val_split = split_train_val(
        load_idx_split(data_dir, "train", len(info.labels)), config.val_size, config.seed
    )
    return batches(val_split if split == "val" else train_split, EVAL_BATCH)
