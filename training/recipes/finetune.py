"""Transfer learning on the user's photos, in the two phases of the classic recipe.

1. Feature extraction ("features"): the ImageNet backbone is frozen and a new head is trained. Without
   augmentation in this phase, the backbone's pooled features are computed once and the head learns
   from them: every epoch then costs a few matrix products.
2. Fine-tuning ("finetune"): the top blocks are unfrozen and trained with the head, the backbone at a
   lower learning rate (parameter groups), on augmented photos, with early stopping on validation.

BatchNorm stays in eval mode in both phases (the Keras guide's advice): with small batches of a small
dataset, batch statistics would be noisier than the ImageNet ones. The weights file always holds the
whole network, in the cached phase too.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from exported.preprocessing import Preprocessing
from training import models
from training.data import ImageSplit, eval_loader, find_split, find_splits, train_loader
from training.distributed import ONE_PROCESS, World
from training.engine import Batches, MixedPrecision, Phase, fit, predict, restore_rng
from training.errors import UserError
from training.recipes import Session, finish, start
from training.rundir import RunDir, RunInfo
from training.transforms import PhotoAugment, resize

logger = logging.getLogger(__name__)

TASK = "photo"
SPLITS = ("test", "val", "train")  # the DIR/<split>/ folder


class Config(BaseModel):
    """The recipe's settings; the defaults fine-tune MobileNetV2 on a few hundred photos."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field(description="backbone, e.g. mobilenet_v2 or resnet50 (see list-archs)")
    data_dir: str = Field(description="ImageFolder photos: DIR/train/<class>/*, DIR/val/<class>/*")
    weights: str = Field(
        "imagenet", description="imagenet, none, or a state_dict file (.pth or .safetensors)"
    )
    image_size: int | None = Field(None, ge=32, description="input side instead of the weights' own")
    limit: int | None = Field(None, ge=1, description="use only this many images per class and split")
    batch_size: int = Field(32, ge=1, description="images per batch and process")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # Phase 1: feature extraction.
    feature_epochs: int = Field(
        10, ge=1, description="phase 1: epochs of the new head on the frozen backbone"
    )
    head_lr: float = Field(1e-3, gt=0, description="phase 1 learning rate (x processes)")
    feature_augment: bool = Field(False, description="augment in phase 1 too (no feature cache)")
    # Phase 2: fine-tuning.
    finetune_epochs: int = Field(10, ge=0, description="phase 2: epochs with the top blocks unfrozen")
    unfreeze: int = Field(8, ge=0, description="phase 2: top blocks of the backbone to train")
    lr: float = Field(3e-4, gt=0, description="phase 2 learning rate of the head (x processes)")
    backbone_lr: float = Field(1e-4, gt=0, description="phase 2 learning rate of the unfrozen blocks")
    patience: int = Field(5, ge=1, description="phase 2 early stopping: epochs without improvement")
    # Augmentation (phase 2, and phase 1 with feature_augment).
    augment: bool = Field(True, description="random resized crop, flip and colour jitter")
    min_scale: float = Field(0.35, gt=0, le=1, description="smallest random crop, area fraction")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    jitter: float = Field(0.2, ge=0, le=1, description="brightness, contrast and saturation jitter")
    workers: int = Field(2, ge=0, description="data loading processes")
    seed: int = Field(0, description="random seed: the same seed gives the same run")
    device: str = Field("auto", description="auto, cpu or cuda")


class Loaders:
    """The DataLoaders of one run: augmented training batches per epoch, plain evaluation batches."""

    def __init__(self, config: Config, preprocessing: Preprocessing, session: Session) -> None:
        self.config, self.device, self.world = config, session.device, session.world
        self.eval_transform = preprocessing.eval_transform()
        self.train_transform = (
            PhotoAugment(config.min_scale, config.hflip, config.jitter).transform(preprocessing)
            if config.augment
            else self.eval_transform
        )

    def train(self, split: ImageSplit, epoch: int) -> Batches:
        dataset = split.dataset(self.train_transform)
        return train_loader(
            dataset, self.config.batch_size, epoch_seed(self.config, epoch),
            workers=self.config.workers, device=self.device, world=self.world,
        )  # fmt: skip

    def eval(self, split: ImageSplit, world: World = ONE_PROCESS) -> Batches:
        """Every image of `split` (or, given the world, this process's share)."""
        dataset = split.dataset(self.eval_transform)
        return eval_loader(
            dataset, 2 * self.config.batch_size, workers=self.config.workers, device=self.device, world=world
        )


def epoch_seed(config: Config, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffle and augmentation: a resumed run redraws the same ones."""
    return config.seed * 1000 + epoch


def train(config: Config, out: Path, *, resume: bool = False) -> RunDir:
    """Train both phases and write the run directory; with `resume`, continue an interrupted run exactly,
    in whichever phase it stopped."""
    data_dir = Path(config.data_dir)
    backbone = models.get_backbone(config.arch)
    train_split, val_split = find_splits(data_dir, limit=config.limit)
    state_dict = models.pretrained_state_dict(backbone, config.weights)
    preprocessing = resize(backbone.preprocessing(config.weights == "imagenet"), config.image_size)
    info = RunInfo(
        task=TASK,
        arch=config.arch,
        labels=train_split.classes,
        preprocessing=preprocessing,
        config=config.model_dump(mode="json"),
        data_sha256={"train": train_split.sha256(), "val": val_split.sha256()},
    )
    session = start(info, out, seed=config.seed, device=config.device, resume=resume)
    model = backbone.build(len(train_split.classes), state_dict).to(session.device)
    keep_batchnorm_in_eval_mode(model)
    logger.info(
        "fine-tuning %s (%s weights) on %d photos of %d classes (%d validation) on %s, input %s",
        config.arch, config.weights, len(train_split.samples), len(train_split.classes),
        len(val_split.samples), session.device, preprocessing.input_size,
    )  # fmt: skip

    loaders = Loaders(config, preprocessing, session)
    saved = session.saved
    if saved is not None and (saved.phase != "features" or saved.epoch >= config.feature_epochs):
        # Resumed after phase 1: straight on to phase 2, with the RNG as phase 1 left it.
        best = saved.best_accuracy
        restore_rng(session.run.load_checkpoint())
    else:
        began = time.perf_counter()
        best = train_head(model, config, loaders, train_split, val_split, session)
        logger.info(
            "feature extraction: best validation accuracy %.4f, %.0fs", best, time.perf_counter() - began
        )
    if config.finetune_epochs > 0:
        began = time.perf_counter()
        session.run.load_weights(model)  # from the best head (a resumed phase 2 loads its own checkpoint)
        best = train_top_blocks(model, config, loaders, train_split, val_split, session, best)
        logger.info("fine-tuning: best validation accuracy %.4f, %.0fs", best, time.perf_counter() - began)

    if (data_dir / "test").is_dir():
        return finish(session, "test", lambda: eval_batches(info, data_dir, "test", session.device))
    return finish(session, "val", lambda: loaders.eval(val_split))  # the validation photos it used (--limit)


def train_head(
    model: nn.Module,
    config: Config,
    loaders: Loaders,
    train_split: ImageSplit,
    val_split: ImageSplit,
    session: Session,
) -> float:
    """Phase 1: only the new head learns."""
    world = session.world
    _, head = models.head(model)
    set_trainable(model, [head])
    lr = world.scale_lr(config.head_lr)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(train_split.samples) / (config.batch_size * world.size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.feature_epochs * steps)
    phase = Phase(
        "features", config.feature_epochs, steps, optimizer, scheduler, label_smoothing=config.label_smoothing
    )
    if config.feature_augment:
        return fit(
            model, phase, lambda epoch: loaders.train(train_split, epoch), loaders.eval(val_split, world),
            session.run, session.precision, world, resume=session.saved,
        )  # fmt: skip

    # Every process extracts the features of every photo (a pass of the frozen backbone), then trains
    # the head on its share of them.
    cpu = torch.device("cpu")
    features = TensorDataset(*extract_features(model, head, loaders.eval(train_split), session.precision))
    val_features = TensorDataset(*extract_features(model, head, loaders.eval(val_split), session.precision))
    return fit(
        model,
        phase,
        lambda epoch: train_loader(
            features, config.batch_size, epoch_seed(config, epoch), workers=0, device=cpu, world=world
        ),
        eval_loader(val_features, 1024, workers=0, device=cpu, world=world),
        session.run,
        session.precision,
        world,
        learner=nn.Sequential(head, nn.Flatten(1)),  # a 1x1 convolution head returns (N, K, 1, 1)
        resume=session.saved,
    )


def train_top_blocks(
    model: nn.Module,
    config: Config,
    loaders: Loaders,
    train_split: ImageSplit,
    val_split: ImageSplit,
    session: Session,
    best_accuracy: float,
) -> float:
    """Phase 2: the head and the top `config.unfreeze` blocks learn, the blocks at `backbone_lr`."""
    world = session.world
    _, head = models.head(model)
    top = models.top_blocks(model, config.unfreeze)
    set_trainable(model, [head, *top])
    groups = [{"params": list(head.parameters()), "lr": world.scale_lr(config.lr)}]
    if top:
        groups.append(
            {
                "params": [p for block in top for p in block.parameters()],
                "lr": world.scale_lr(config.backbone_lr),
            }
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = math.ceil(len(train_split.samples) / (config.batch_size * world.size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.finetune_epochs * steps)
    logger.info("fine-tuning the head and the top %d blocks", len(top))
    phase = Phase(
        "finetune",
        config.finetune_epochs,
        steps,
        optimizer,
        scheduler,
        config.patience,
        config.label_smoothing,
    )
    return fit(
        model,
        phase,
        lambda epoch: loaders.train(train_split, epoch),
        loaders.eval(val_split, world),
        session.run,
        session.precision,
        world,
        resume=session.saved,
        best_accuracy=best_accuracy,
    )


def extract_features(
    model: nn.Module, head: nn.Module, batches: Batches, precision: MixedPrecision
) -> tuple[Tensor, Tensor]:
    """What the frozen network feeds its head (the pooled features), for every image, with the labels."""
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0].float().cpu()))
    try:
        _, targets = predict(model, batches, precision, description="features")
    finally:
        hook.remove()
    return torch.cat(captured), targets  # outside inference mode: tensors that autograd may use


def set_trainable(model: nn.Module, trainable: list[nn.Module]) -> None:
    """Freeze every parameter of `model` except those of the `trainable` modules."""
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)


def keep_batchnorm_in_eval_mode(model: nn.Module) -> None:
    """Make BatchNorm use (and keep) its running statistics even when the model is in train mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_eval_mode)


def _eval_mode(module: nn.Module, _args: object) -> None:
    module.training = False


def eval_batches(
    info: RunInfo, data_dir: Path, split: str, device: torch.device, workers: int = 2
) -> Batches:
    """The photos of DIR/<split> with the run's eval preprocessing; their classes must be the run's."""
    images = find_split(data_dir, split)
    if images.classes != info.labels:
        raise UserError(f"{images.folder} has the classes {images.classes}, the model {info.labels}")
    return eval_loader(
        images.dataset(info.preprocessing.eval_transform()), 64, workers=workers, device=device
    )
