"""A run directory has one owner: this module. Every file one training run writes, and how it is read back.

| file | holds |
|---|---|
| `config.json` | `RunInfo`: task, arch, labels, preprocessing, the resolved recipe config, data sha256 |
| `progress.json` | `Progress`: phase, last finished epoch, best validation accuracy, finished or not |
| `model.safetensors` | the whole network at the best validation accuracy so far (never a part of it) |
| `checkpoint.pt` | the latest training state for `--resume`: a plain dict, loaded with `weights_only=True` |
| `metrics.csv` | one row per epoch |
| `curves.png`, `confusion_matrix.png`, `evaluation-<split>.json` | the report |
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from exported.preprocessing import Preprocessing
from training.errors import UserError


class RunInfo(BaseModel):
    """What a run trains: written once at the start, read back by evaluate, export and resume."""

    task: str  # the recipe: "mnist" or "photo"
    arch: str
    labels: list[str]
    preprocessing: Preprocessing
    config: dict[str, Any]  # the resolved recipe config (re-validated by the recipe, never indexed)
    data_sha256: dict[str, str]  # data file name -> sha256, for provenance


class Progress(BaseModel):
    """Where a run stands; written after every epoch, and once more when the run has finished."""

    phase: str = ""
    epoch: int = 0  # the last finished epoch of `phase`
    best_accuracy: float = -1.0  # the best validation accuracy so far, over all phases
    stale_epochs: int = 0  # epochs since the best one, for early stopping
    finished: bool = False


@dataclass(frozen=True)
class EpochRow:
    phase: str
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


METRIC_COLUMNS = [f.name for f in fields(EpochRow)]


@dataclass(frozen=True)
class Checkpoint:
    """The training state of the last finished epoch (torchvision's plain-dict checkpoint, typed)."""

    model: dict[str, torch.Tensor]  # the whole network
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any] | None
    progress: Progress
    rng: torch.Tensor  # the global CPU generator: dropout and in-process augmentation draw from it
    cuda_rng: torch.Tensor | None
    world_size: int  # processes that wrote it; resuming with another number is allowed


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def info_file(self) -> Path:
        return self.path / "config.json"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.json"

    @property
    def weights(self) -> Path:
        """The whole network's best weights (safetensors): what evaluate and export use."""
        return self.path / "model.safetensors"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def confusion_matrix(self) -> Path:
        return self.path / "confusion_matrix.png"

    def evaluation(self, split: str) -> Path:
        return self.path / f"evaluation-{split}.json"

    @classmethod
    def create(cls, path: Path) -> RunDir:
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory with a record and weights; a UserError names what is missing."""
        run = cls(path)
        if not path.is_dir():
            raise UserError(f"run directory not found: {path}")
        for required in (run.info_file, run.weights):
            if not required.is_file():
                raise UserError(f"{path} is not a run directory: {required.name} is missing")
        return run

    @classmethod
    def open_finished(cls, path: Path) -> RunDir:
        """A run that finished training and its final evaluation: what may be exported."""
        run = cls.open(path)
        progress = run.read_progress()
        if progress is None:
            raise UserError(f"{path} is not a finished run: {run.progress_file.name} is missing")
        if not progress.finished:
            where = "before its first epoch"
            if progress.phase:
                where = f"after {progress.phase} epoch {progress.epoch}"
            raise UserError(f"{path} is an unfinished run (stopped {where}); finish it with --resume")
        return run

    # The record and progress ---------------------------------------------------------------------

    def begin(self, info: RunInfo, *, resume: bool, write: bool = True) -> Progress | None:
        """Start a new run (its record, no progress), or check that a resumed run keeps its configuration
        and return where it stopped (None when it never finished an epoch). Only one process `write`s."""
        if resume and self.info_file.is_file() and self.read_info().config != info.config:
            raise UserError(f"cannot resume {self.path}: it was started with a different configuration")
        saved = self.read_progress() if resume else None
        if saved is not None and saved.finished:
            raise UserError(f"nothing to resume: {self.path} has finished")
        if write:
            self.write_info(info)
            if saved is None:
                for stale in (self.metrics, self.checkpoint, self.weights):
                    stale.unlink(missing_ok=True)
                self.write_progress(Progress())
        return saved if saved is not None and saved.phase else None

    def finish(self) -> None:
        progress = self.read_progress() or Progress()
        self.write_progress(progress.model_copy(update={"finished": True}))

    def write_info(self, info: RunInfo) -> None:
        _write_atomically(self.info_file, info.model_dump_json(indent=2) + "\n")

    def read_info(self) -> RunInfo:
        try:
            return RunInfo.model_validate_json(self.info_file.read_text())
        except ValidationError as error:
            raise UserError(f"{self.info_file} is not a valid run record: {error}") from None

    def write_progress(self, progress: Progress) -> None:
        _write_atomically(self.progress_file, progress.model_dump_json(indent=2) + "\n")

    def read_progress(self) -> Progress | None:
        if not self.progress_file.is_file():
            return None
        return Progress.model_validate_json(self.progress_file.read_text())

    # Weights and checkpoint ----------------------------------------------------------------------

    def save_weights(self, network: nn.Module, dtype: torch.dtype | None = None) -> None:
        """With `dtype` (e.g. float16, half the bytes), floating-point tensors are stored in that type;
        loading casts them back to the network's own."""
        tensors = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
            for k, v in network.state_dict().items()
        }
        temporary = self.weights.with_suffix(".tmp")
        save_file(tensors, str(temporary))
        os.replace(temporary, self.weights)

    def load_weights(self, network: nn.Module) -> None:
        try:
            network.load_state_dict(load_file(str(self.weights)))
        except RuntimeError as error:  # shape or key mismatch: the file belongs to another network
            raise UserError(f"{self.weights} does not fit this model: {str(error).splitlines()[0]}") from None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint, then the progress it reached (a crash between leaves the older progress)."""
        state = asdict(checkpoint)
        state["progress"] = checkpoint.progress.model_dump()
        temporary = self.checkpoint.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.checkpoint)
        self.write_progress(checkpoint.progress)

    def load_checkpoint(self) -> Checkpoint:
        if not self.checkpoint.is_file():
            raise UserError(f"nothing to resume in {self.path}: {self.checkpoint.name} is missing")
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        state["progress"] = Progress.model_validate(state["progress"])
        return Checkpoint(**state)

    # Metrics -------------------------------------------------------------------------------------

    def append_metrics(self, row: EpochRow) -> None:
        new = not self.metrics.is_file()
        with self.metrics.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(asdict(row))

    def read_metrics(self) -> list[EpochRow]:
        if not self.metrics.is_file():
            return []
        with self.metrics.open(newline="") as handle:
            return [
                EpochRow(
                    phase=r["phase"],
                    epoch=int(r["epoch"]),
                    **{k: float(r[k]) for k in METRIC_COLUMNS if k not in ("phase", "epoch")},
                )
                for r in csv.DictReader(handle)
            ]

    def truncate_metrics(self, progress: Progress) -> None:
        """Drop the rows written after `progress` (an epoch that ran but was not checkpointed)."""
        keep: list[EpochRow] = []
        for row in self.read_metrics():
            if row.phase == progress.phase and row.epoch > progress.epoch:
                break
            keep.append(row)
        self.metrics.unlink(missing_ok=True)
        for row in keep:
            self.append_metrics(row)

    # Evaluations ---------------------------------------------------------------------------------

    def write_evaluation(self, split: str, report: dict[str, Any]) -> None:
        self.evaluation(split).write_text(json.dumps(report, indent=2) + "\n")

    def read_evaluation(self, split: str) -> dict[str, Any] | None:
        path = self.evaluation(split)
        return json.loads(path.read_text()) if path.is_file() else None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
