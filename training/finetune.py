"""Transfer learning on the user's photos, in the two phases of the classic recipe.

1. Feature extraction: the ImageNet backbone is frozen (BatchNorm in eval mode) and a new head is
   trained. Without augmentation in this phase, the backbone's pooled features are computed once
   and the head is trained on them: every epoch then costs a few matrix products.
2. Fine-tuning: the top blocks are unfrozen and trained with the head, the backbone at a lower
   learning rate (parameter groups), on augmented images, with early stopping on validation.

BatchNorm stays in eval mode in both phases (the Keras guide's advice): with small batches of a small
dataset, batch statistics would be noisier than the ImageNet ones.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from exported.preprocessing import Preprocessing
from training import backbones, history, photo_data
from training.checkpoint import load_weights, read_progress, restore_rng_state, save_weights
from training.engine import Batches, MixedPrecision, predict, resolve_device
from training.errors import UserError
from training.evaluation import evaluate_run
from training.photo_data import ImageSplit, PhotoAugment
from training.plots import plot_curves
from training.rundir import RunDir, RunInfo
from training.trainer import Phase, fit

logger = logging.getLogger(__name__)


class FinetuneConfig(BaseModel):
    """The recipe's settings; the defaults fine-tune MobileNetV2 on a few hundred photos."""

    arch: str
    weights: str = Field(
        "imagenet", description="imagenet, none, or a state_dict file (.pth or .safetensors)"
    )
    data_dir: str
    image_size: int | None = Field(
        None, ge=32, description="input side instead of the weights' own (quick runs)"
    )
    limit: int | None = Field(None, ge=1, description="use only this many images per class and split")
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # Phase 1: feature extraction.
    feature_epochs: int = Field(10, ge=1)
    head_lr: float = Field(1e-3, gt=0)
    feature_augment: bool = Field(False, description="augment in phase 1 too (no feature cache)")
    # Phase 2: fine-tuning.
    finetune_epochs: int = Field(10, ge=0)
    unfreeze: int = Field(8, ge=0, description="top blocks of the backbone to train")
    lr: float = Field(3e-4, gt=0, description="the head's learning rate")
    backbone_lr: float = Field(1e-4, gt=0, description="the unfrozen blocks' learning rate")
    patience: int = Field(
        5, ge=1, description="stop after this many epochs without a better validation accuracy"
    )
    augment: PhotoAugment = PhotoAugment()
    workers: int = Field(2, ge=0, description="data loading processes")
    seed: int = 0
    device: str = "auto"


def finetune(config: FinetuneConfig, out: Path, *, resume: bool = False) -> RunDir:
    """Train both phases and write the run directory (weights, config, metrics, plots, evaluation).

    With `resume`, an interrupted run continues from its last epoch, in whichever phase it was."""
    data_dir = Path(config.data_dir)
    backbone = backbones.get_backbone(config.arch)
    train_split, val_split = photo_data.find_splits(data_dir, limit=config.limit)
    state_dict = pretrained_state_dict(backbone, config.weights)
    preprocessing = resize(backbone.preprocessing(config.weights == "imagenet"), config.image_size)

    run = RunDir.create(out)
    info = RunInfo(
        task="photo",
        arch=config.arch,
        labels=train_split.classes,
        preprocessing=preprocessing,
        config=config.model_dump(mode="json"),
        data_sha256={"train": train_split.sha256(), "val": val_split.sha256()},
    )
    run.begin(info, resume=resume)
    saved = read_progress(run) if resume else None

    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(config.device)
    precision = MixedPrecision(device)
    model = backbones.build(backbone, len(train_split.classes), state_dict).to(device)
    keep_batchnorm_in_eval_mode(model)
    logger.info(
        "fine-tuning %s (%s weights) on %d photos of %d classes (%d validation) on %s, input %s",
        config.arch,
        config.weights,
        len(train_split.samples),
        len(train_split.classes),
        len(val_split.samples),
        device,
        preprocessing.input_size,
    )

    loaders = Loaders(config, preprocessing, device)
    val_batches = loaders.eval(val_split)
    head_trained = saved is not None and (
        saved["phase"] != "features" or saved["epoch"] >= config.feature_epochs
    )
    best = saved["best_accuracy"] if head_trained else -1.0
    if head_trained:  # a run resumed after phase 1 goes straight on to phase 2, RNG as it was then
        restore_rng_state(run)
    else:
        start = time.perf_counter()
        best = train_head(model, config, loaders, train_split, val_batches, run, precision, resume=resume)
        logger.info(
            "feature extraction: best validation accuracy %.4f, %.0fs", best, time.perf_counter() - start
        )
    if config.finetune_epochs > 0:
        start = time.perf_counter()
        load_weights(model, run.weights)  # fine-tune from the best head (a resumed phase 2 loads its own)
        best = train_top_blocks(
            model, config, loaders, train_split, val_batches, run, precision, best, resume=resume
        )
        logger.info("fine-tuning: best validation accuracy %.4f, %.0fs", best, time.perf_counter() - start)

    plot_curves(history.read(run.metrics), run.curves)
    split = "test" if (data_dir / "test").is_dir() else "val"
    split_batches = (
        val_batches if split == "val" else evaluation_batches(run.read_info(), data_dir, split, device)
    )
    evaluate_run(run, split_batches, split, device, plot=True)
    return run


def train_head(
    model: nn.Module,
    config: FinetuneConfig,
    loaders: Loaders,
    train_split: ImageSplit,
    val_batches: Batches,
    run: RunDir,
    precision: MixedPrecision,
    *,
    resume: bool = False,
) -> float:
    """Phase 1: only the new head learns; run.weights ends with the whole network's best weights."""
    _, head = backbones.head(model)
    set_trainable(model, [head])
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(train_split.samples) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.feature_epochs * steps)
    phase = Phase(
        "features", config.feature_epochs, optimizer, scheduler, label_smoothing=config.label_smoothing
    )
    if config.feature_augment:
        return fit(
            model, phase, lambda epoch: loaders.train(train_split, epoch), val_batches, run, precision,
            resume=resume,
        )  # fmt: skip

    features = TensorDataset(*extract_features(model, head, loaders.eval(train_split), precision))
    val_features = TensorDataset(*extract_features(model, head, val_batches, precision))
    best = fit(
        head,
        phase,
        lambda epoch: DataLoader(
            features,
            batch_size=config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(config.seed * 1000 + epoch),
        ),
        DataLoader(val_features, batch_size=1024),
        run,
        precision,
        resume=resume,
    )
    load_weights(head, run.weights)  # fit kept the best head alone: store the whole network instead
    save_weights(model, run.weights)
    return best


def train_top_blocks(
    model: nn.Module,
    config: FinetuneConfig,
    loaders: Loaders,
    train_split: ImageSplit,
    val_batches: Batches,
    run: RunDir,
    precision: MixedPrecision,
    best_accuracy: float,
    *,
    resume: bool = False,
) -> float:
    """Phase 2: the head and the top `config.unfreeze` blocks learn, the blocks at `backbone_lr`."""
    _, head = backbones.head(model)
    top = backbones.top_blocks(model, config.unfreeze)
    set_trainable(model, [head, *top])
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    if top:
        groups.append({"params": [p for block in top for p in block.parameters()], "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = math.ceil(len(train_split.samples) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.finetune_epochs * steps)
    logger.info("fine-tuning the head and the top %d blocks", len(top))
    return fit(
        model,
        Phase(
            "finetune", config.finetune_epochs, optimizer, scheduler, config.patience, config.label_smoothing
        ),
        lambda epoch: loaders.train(train_split, epoch),
        val_batches,
        run,
        precision,
        resume=resume,
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


def pretrained_state_dict(backbone: backbones.Backbone, weights: str) -> dict[str, Tensor] | None:
    """`imagenet` (torchvision's weights: the torch cache, else a download), `none`, or a local file."""
    if weights == "none":
        return None
    if weights == "imagenet":
        try:
            return backbone.imagenet_state_dict()
        except OSError as error:  # URLError and HTTPError included
            raise UserError(
                f"cannot get the ImageNet weights of {backbone.name} ({backbone.weights_name}): not in the "
                f"local cache ({torch.hub.get_dir()}) and the download failed ({error}); "
                "pass --weights FILE or none"
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (--weights takes imagenet, none or a file)")
    try:
        state_dict = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path} is not a state_dict file (loaded with weights_only=True): {message}"
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise UserError(f"{path} is not a state_dict: expected a dict of tensors")
    return state_dict


def resize(preprocessing: Preprocessing, image_size: int | None) -> Preprocessing:
    """The same recipe at another input side, the resize scaled alike (e.g. 256/224 -> 73/64)."""
    if image_size is None:
        return preprocessing
    ratio = (preprocessing.resize_size or preprocessing.input_size[0]) / preprocessing.input_size[0]
    return preprocessing.model_copy(
        update={"input_size": (image_size, image_size), "resize_size": round(image_size * ratio)}
    )


class Loaders:
    """DataLoaders of one run: augmented training batches per epoch, plain evaluation batches."""

    def __init__(self, config: FinetuneConfig, preprocessing: Preprocessing, device: torch.device) -> None:
        self.config, self.device = config, device
        self.eval_transform = preprocessing.eval_transform()
        self.train_transform = config.augment.transform(preprocessing)

    def train(self, split: ImageSplit, epoch: int) -> DataLoader:
        return photo_data.batches(
            split.dataset(self.train_transform),
            self.config.batch_size,
            workers=self.config.workers,
            device=self.device,
            seed=self.config.seed * 1000 + epoch,
        )

    def eval(self, split: ImageSplit) -> DataLoader:
        return photo_data.batches(
            split.dataset(self.eval_transform),
            2 * self.config.batch_size,
            workers=self.config.workers,
            device=self.device,
        )


def evaluation_batches(
    info: RunInfo, data_dir: Path, split: str, device: torch.device, workers: int = 2
) -> Batches:
    """The photos of DIR/<split> with the run's eval preprocessing; their classes must be the run's."""
    images = photo_data.find_split(data_dir, split)
    if images.classes != info.labels:
        raise UserError(f"{images.folder} has the classes {images.classes}, the model {info.labels}")
    return photo_data.batches(
        images.dataset(info.preprocessing.eval_transform()), 64, workers=workers, device=device
    )
