"""The epoch loop: validation, metrics.csv, best and latest checkpoints, resume, early stopping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from training import history
from training.checkpoint import load_training_state, read_progress, save_training_state, save_weights
from training.engine import Batches, MixedPrecision, evaluate, train_one_epoch
from training.rundir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class Phase:
    """One stretch of training with one optimizer (MNIST has one; fine-tuning has two)."""

    name: str
    epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped every batch
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    label_smoothing: float = 0.0


def fit(
    model: nn.Module,
    phase: Phase,
    train_batches: Callable[[int], Batches],
    val_batches: Batches,
    run: RunDir,
    precision: MixedPrecision,
    *,
    resume: bool = False,
    best_accuracy: float = -1.0,
) -> float:
    """Train `phase.epochs` epochs (epoch e's batches come from `train_batches(e)`, so a resumed run
    sees the same data order); keep the best validation accuracy's weights in run.weights.
    Returns the best validation accuracy so far."""
    start_epoch, stale = 1, 0
    saved = read_progress(run) if resume else None
    if saved is not None and saved["phase"] == phase.name:  # another phase's state does not fit
        progress = load_training_state(run, model, phase.optimizer, phase.scheduler)
        start_epoch, stale = progress["epoch"] + 1, progress["stale_epochs"]
        best_accuracy = progress["best_accuracy"]
        history.truncate(run.metrics, phase.name, progress["epoch"])
        logger.info("resuming %s at epoch %d", phase.name, start_epoch)
    for epoch in range(start_epoch, phase.epochs + 1):
        if phase.patience is not None and stale >= phase.patience:
            logger.info("%s: early stop, no better validation accuracy for %d epochs", phase.name, stale)
            break
        lr = phase.optimizer.param_groups[0]["lr"]
        tag = f"{phase.name} {epoch}/{phase.epochs}"
        train = train_one_epoch(
            model,
            train_batches(epoch),
            phase.optimizer,
            precision,
            scheduler=phase.scheduler,
            label_smoothing=phase.label_smoothing,
            description=tag,
        )
        val = evaluate(model, val_batches, precision, description=f"{tag} val")
        history.append(
            run.metrics,
            history.EpochRow(
                phase.name,
                epoch,
                train.loss,
                train.accuracy,
                val.loss,
                val.accuracy,
                lr,
                train.seconds + val.seconds,
            ),
        )
        improved = val.accuracy > best_accuracy
        if improved:
            best_accuracy, stale = val.accuracy, 0
            save_weights(model, run.weights)
        else:
            stale += 1
        logger.info(
            "%s: loss %.4f acc %.4f | val loss %.4f acc %.4f%s | %.0f img/s, %.1fs",
            tag,
            train.loss,
            train.accuracy,
            val.loss,
            val.accuracy,
            " (best)" if improved else "",
            train.images / train.seconds,
            train.seconds + val.seconds,
        )
        progress = {
            "phase": phase.name,
            "epoch": epoch,
            "best_accuracy": best_accuracy,
            "stale_epochs": stale,
        }
        save_training_state(run, model, phase.optimizer, phase.scheduler, progress)
    return best_accuracy
