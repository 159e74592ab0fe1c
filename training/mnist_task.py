"""Training and evaluating the MNIST ConvNet on real MNIST."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from exported.preprocessing import MNIST_PREPROCESSING
from training import history
from training.augment import AffineAugment
from training.engine import Batches, MixedPrecision, resolve_device
from training.evaluation import evaluate_run
from training.mnist import LABELS, MnistSplit, data_sha256, load_split, split_train_val
from training.models import create_model
from training.plots import plot_curves
from training.rundir import RunDir, RunInfo
from training.trainer import Phase, fit

logger = logging.getLogger(__name__)


class MnistConfig(BaseModel):
    """The recipe: AdamW with a one-cycle learning rate, affine augmentation, a fixed validation split."""

    data_dir: str
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(1e-2, ge=0)
    val_size: int = Field(5000, ge=1)
    train_limit: int | None = Field(None, ge=1, description="train on only this many images (quick runs)")
    seed: int = 0
    device: str = "auto"
    augment: AffineAugment = AffineAugment()


class MnistBatches:
    """Shuffled (or ordered) normalised batches from in-memory MNIST, augmented when asked."""

    def __init__(
        self,
        split: MnistSplit,
        batch_size: int,
        *,
        seed: int | None = None,
        augment: AffineAugment | None = None,
    ) -> None:
        self.split, self.batch_size, self.seed, self.augment = split, batch_size, seed, augment
        self.num_images = len(split)
        mean, std = MNIST_PREPROCESSING.mean[0], MNIST_PREPROCESSING.std[0]
        self.normalize = lambda x: (x - mean) / std

    def __len__(self) -> int:
        return math.ceil(self.num_images / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        order = torch.randperm(self.num_images, generator=generator) if self.seed is not None else None
        for start in range(0, self.num_images, self.batch_size):
            index = (
                slice(start, start + self.batch_size)
                if order is None
                else order[start : start + self.batch_size]
            )
            images = self.split.images[index].unsqueeze(1).float().div_(255)
            if self.augment is not None:
                images = self.augment(images, generator)
            yield self.normalize(images), self.split.labels[index]


def train(config: MnistConfig, out: Path, *, resume: bool = False) -> RunDir:
    data_dir = Path(config.data_dir)
    train_split, val_split = split_train_val(load_split(data_dir, "train"), config.val_size, config.seed)
    test_split = load_split(data_dir, "test")
    if config.train_limit is not None:
        train_split = train_split.subset(torch.arange(min(config.train_limit, len(train_split))))

    run = RunDir.create(out)
    info = RunInfo(
        task="mnist",
        arch="mnist_cnn",
        labels=LABELS,
        preprocessing=MNIST_PREPROCESSING,
        config=config.model_dump(mode="json"),
        data_sha256=data_sha256(data_dir),
    )
    run.begin(info, resume=resume)

    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(config.device)
    precision = MixedPrecision(device)
    model = create_model("mnist_cnn", len(LABELS)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    augment = config.augment if config.augment.enabled else None
    logger.info(
        "training mnist_cnn on %d images (%d validation) on %s", len(train_split), len(val_split), device
    )
    fit(
        model,
        Phase("train", config.epochs, optimizer, scheduler),
        lambda epoch: MnistBatches(
            train_split, config.batch_size, seed=config.seed * 1000 + epoch, augment=augment
        ),
        MnistBatches(val_split, 1000),
        run,
        precision,
        resume=resume,
    )
    plot_curves(history.read(run.metrics), run.curves)
    evaluate_run(run, MnistBatches(test_split, 1000), "test", device, plot=True)
    return run


def evaluation_batches(info: RunInfo, data_dir: Path, split: str) -> Batches:
    """The images of `split`: "test" (the 10,000), "val" (the carved-out validation set) or "train"."""
    if split == "test":
        return MnistBatches(load_split(data_dir, "test"), 1000)
    train_split, val_split = split_train_val(
        load_split(data_dir, "train"), info.config["val_size"], info.config["seed"]
    )
    return MnistBatches(val_split if split == "val" else train_split, 1000)
