"""One epoch of training, one pass of evaluation: the inner loops shared by every task."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sized
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.errors import UserError

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
    with _progress(batches, description) as bar:
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
    return EpochResult(total_loss / max(seen, 1), correct / max(seen, 1), seen, time.perf_counter() - start)


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Batches, precision: MixedPrecision, description: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for every image of `batches`, on the CPU."""
    model.eval()
    all_logits, all_targets = [], []
    with _progress(batches, description) as bar:
        for images, targets in batches:
            with precision.autocast():
                logits = model(images.to(precision.device, non_blocking=True))
            all_logits.append(logits.float().cpu())
            all_targets.append(targets)
            bar.update(len(targets))
    return torch.cat(all_logits), torch.cat(all_targets)


def evaluate(
    model: nn.Module, batches: Batches, precision: MixedPrecision, description: str = "eval"
) -> EpochResult:
    start = time.perf_counter()
    logits, targets = predict(model, batches, precision, description)
    loss = F.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(1) == targets).float().mean().item()
    return EpochResult(loss, accuracy, len(targets), time.perf_counter() - start)


def _progress(batches: Batches, description: str) -> tqdm:
    """A bar counting images (so its rate reads as images/s), with loss and accuracy beside it."""
    dataset = getattr(batches, "dataset", None)
    total = getattr(batches, "num_images", None) or (len(dataset) if isinstance(dataset, Sized) else None)
    return tqdm(total=total, desc=description, unit="img", unit_scale=True, mininterval=1.0, leave=False)
