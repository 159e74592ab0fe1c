"""The loops every recipe shares: train one epoch, evaluate, predict, and `fit` a phase of epochs.

`fit` keeps the run directory up to date after every epoch (metrics row, best weights, checkpoint) and
resumes a phase exactly where its checkpoint left it. With several processes (see `distributed`), each
trains on its shard of every batch, the gradients are averaged by DistributedDataParallel, the epoch's
metrics are summed over processes, and only rank 0 writes files.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sized
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.distributed import ONE_PROCESS, World
from training.errors import UserError
from training.rundir import Checkpoint, EpochRow, Progress, RunDir

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; a UserError for an unusable name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


class MixedPrecision:
    """Autocast on CUDA (bfloat16 where supported, else float16 with a gradient scaler); off on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager[object]:
        if not self.enabled:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    precision: MixedPrecision,
    world: World,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    label_smoothing: float = 0.0,
    description: str = "train",
) -> EpochResult:
    """Train over `batches` once; `scheduler` (if any) steps after every batch."""
    model.train()
    device = precision.device
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    with _progress(batches, description, world) as bar:
        for images, targets in batches:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with precision.autocast():
                logits = model(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
            if scheduler is not None:
                scheduler.step()
            n = len(targets)
            total_loss += loss.item() * n
            correct += (logits.argmax(1) == targets).sum().item()
            seen += n
            bar.update(n)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
    total_loss, correct, seen = world.sum(total_loss, correct, seen)
    return EpochResult(
        total_loss / max(seen, 1), correct / max(seen, 1), int(seen), time.perf_counter() - start
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, precision: MixedPrecision, world: World, description: str = "eval"
) -> EpochResult:
    """Mean loss and accuracy over `batches` (this process's shard), summed over every process."""
    model.eval()
    start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    with _progress(batches, description, world) as bar:
        for images, targets in batches:
            with precision.autocast():
                logits = model(images.to(precision.device, non_blocking=True)).float().cpu()
            total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
            bar.update(len(targets))
    total_loss, correct, seen = world.sum(total_loss, correct, seen)
    return EpochResult(
        total_loss / max(seen, 1), correct / max(seen, 1), int(seen), time.perf_counter() - start
    )


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Batches, precision: MixedPrecision, description: str = "predict"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for every image of `batches`, on the CPU (one process)."""
    model.eval()
    all_logits, all_targets = [], []
    with _progress(batches, description, ONE_PROCESS) as bar:
        for images, targets in batches:
            with precision.autocast():
                logits = model(images.to(precision.device, non_blocking=True))
            all_logits.append(logits.float().cpu())
            all_targets.append(targets)
            bar.update(len(targets))
    return torch.cat(all_logits), torch.cat(all_targets)


@dataclass
class Phase:
    """One stretch of training with one optimizer (MNIST has one; fine-tuning has two)."""

    name: str
    epochs: int
    steps_per_epoch: int  # optimizer steps per epoch, to place the scheduler when the world size changes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped every batch
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    label_smoothing: float = 0.0


def fit(
    network: nn.Module,
    phase: Phase,
    train_batches: Callable[[int], Batches],
    val_batches: Batches,
    run: RunDir,
    precision: MixedPrecision,
    world: World,
    *,
    learner: nn.Module | None = None,
    resume: Progress | None = None,
    best_accuracy: float = -1.0,
) -> float:
    """Train `phase.epochs` epochs and return the best validation accuracy so far.

    `learner` is the module that runs forward (by default `network`; the head alone when it learns
    from cached features); the weights file and the checkpoint always hold the whole `network`.
    Epoch e's batches come from `train_batches(e)`, so a resumed run sees the same data. With
    `resume` (the run's saved progress) in this phase, the phase continues from its checkpoint.
    """
    learner = network if learner is None else learner
    start_epoch, stale = 1, 0
    if resume is not None and resume.phase == phase.name:  # another phase's state does not fit
        progress = _restore(network, phase, run, world)
        start_epoch, stale, best_accuracy = progress.epoch + 1, progress.stale_epochs, progress.best_accuracy
        if world.is_main:
            run.truncate_metrics(progress)
        logger.info("resuming %s at epoch %d", phase.name, start_epoch)
    trained = world.wrap(learner)
    for epoch in range(start_epoch, phase.epochs + 1):
        if phase.patience is not None and stale >= phase.patience:
            logger.info("%s: early stop, no better validation accuracy for %d epochs", phase.name, stale)
            break
        lr = phase.optimizer.param_groups[0]["lr"]
        tag = f"{phase.name} {epoch}/{phase.epochs}"
        train = train_one_epoch(
            trained,
            train_batches(epoch),
            phase.optimizer,
            precision,
            world,
            scheduler=phase.scheduler,
            label_smoothing=phase.label_smoothing,
            description=tag,
        )
        val = evaluate(learner, val_batches, precision, world, description=f"{tag} val")
        improved = val.accuracy > best_accuracy
        best_accuracy, stale = (val.accuracy, 0) if improved else (best_accuracy, stale + 1)
        progress = Progress(phase=phase.name, epoch=epoch, best_accuracy=best_accuracy, stale_epochs=stale)
        if world.is_main:
            seconds = train.seconds + val.seconds
            run.append_metrics(
                EpochRow(phase.name, epoch, train.loss, train.accuracy, val.loss, val.accuracy, lr, seconds)
            )
            if improved:
                run.save_weights(network)
            run.save_checkpoint(_checkpoint(network, phase, progress, world))
        logger.info(
            "%s: loss %.4f acc %.4f | val loss %.4f acc %.4f%s | %.0f img/s, %.1fs",
            tag, train.loss, train.accuracy, val.loss, val.accuracy, " (best)" if improved else "",
            train.images / train.seconds, train.seconds + val.seconds,
        )  # fmt: skip
    world.barrier()  # the other processes read the weights file rank 0 has just written
    return best_accuracy


def _checkpoint(network: nn.Module, phase: Phase, progress: Progress, world: World) -> Checkpoint:
    return Checkpoint(
        model={k: v.detach().cpu() for k, v in network.state_dict().items()},
        optimizer=phase.optimizer.state_dict(),
        lr_scheduler=phase.scheduler.state_dict() if phase.scheduler is not None else None,
        progress=progress,
        rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        world_size=world.size,
    )


def _restore(network: nn.Module, phase: Phase, run: RunDir, world: World) -> Progress:
    """Load the checkpoint into the network, optimizer and scheduler; return its progress.

    Resumed by another number of processes, the optimizer keeps its state (moments, steps) but takes
    the learning rates of the new world size, and the scheduler is placed at the start of the next
    epoch of the new schedule (the batches per epoch changed with the global batch)."""
    checkpoint = run.load_checkpoint()
    network.load_state_dict(checkpoint.model)
    restore_rng(checkpoint)
    if checkpoint.world_size == world.size:
        phase.optimizer.load_state_dict(checkpoint.optimizer)
        if phase.scheduler is not None and checkpoint.lr_scheduler is not None:
            phase.scheduler.load_state_dict(checkpoint.lr_scheduler)
        return checkpoint.progress
    hyperparameters = [{k: v for k, v in g.items() if k != "params"} for g in phase.optimizer.param_groups]
    phase.optimizer.load_state_dict(checkpoint.optimizer)
    for group, values in zip(phase.optimizer.param_groups, hyperparameters, strict=True):
        group.update(values)
    if phase.scheduler is not None:
        _move_scheduler(phase.scheduler, checkpoint.progress.epoch * phase.steps_per_epoch)
    logger.info("resuming with %d processes a checkpoint of %d", world.size, checkpoint.world_size)
    return checkpoint.progress


def restore_rng(checkpoint: Checkpoint) -> None:
    torch.set_rng_state(checkpoint.rng)
    if checkpoint.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint.cuda_rng)


def _move_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, step: int) -> None:
    """Set a per-step scheduler to `step` steps from its start (OneCycle and cosine have closed forms)."""
    scheduler.last_epoch = step
    with warnings.catch_warnings():  # get_lr() outside step() warns; here it is the closed form
        warnings.simplefilter("ignore", UserWarning)
        closed_form = getattr(scheduler, "_get_closed_form_lr", None)
        lrs = closed_form() if closed_form is not None else scheduler.get_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)  # what get_last_lr() reports


def _progress(batches: Batches, description: str, world: World) -> tqdm:
    """A bar counting images (so its rate reads as images/s), on rank 0 only."""
    dataset = getattr(batches, "dataset", None)
    total = getattr(batches, "num_images", None) or (len(dataset) if isinstance(dataset, Sized) else None)
    return tqdm(
        total=total, desc=description, unit="img", unit_scale=True, mininterval=1.0, leave=False,
        disable=not world.is_main,
    )  # fmt: skip
