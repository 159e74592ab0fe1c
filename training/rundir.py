"""The layout of a run directory: everything one training run writes, and what export reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from exported.preprocessing import Preprocessing
from training.errors import UserError


class RunInfo(BaseModel):
    """What a run trained: written to config.json, read back by evaluate, export and resume."""

    task: str  # "mnist" or "photo"
    arch: str
    labels: list[str]
    preprocessing: Preprocessing
    config: dict[str, Any]  # the resolved training configuration
    data_sha256: dict[str, str]  # data file name -> sha256, for provenance


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def info_file(self) -> Path:
        return self.path / "config.json"

    @property
    def weights(self) -> Path:
        """Best checkpoint's weights (safetensors): what evaluate and export use."""
        return self.path / "model.safetensors"

    @property
    def last_weights(self) -> Path:
        """Latest model and optimizer tensors, for --resume."""
        return self.path / "last.safetensors"

    @property
    def last_state(self) -> Path:
        """Latest epoch, scheduler and best metric, for --resume."""
        return self.path / "last.json"

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
        """An existing, finished run directory; a UserError names what is missing."""
        run = cls(path)
        if not path.is_dir():
            raise UserError(f"run directory not found: {path}")
        for required in (run.info_file, run.weights):
            if not required.is_file():
                raise UserError(f"{path} is not a run directory: {required.name} is missing")
        return run

    def begin(self, info: RunInfo, *, resume: bool) -> None:
        """Write config.json for a new run, or check that a resumed run keeps its configuration."""
        if resume and self.info_file.is_file() and self.read_info().config != info.config:
            raise UserError(f"cannot resume {self.path}: it was started with a different configuration")
        self.write_info(info)
        if not resume:
            self.metrics.unlink(missing_ok=True)

    def write_info(self, info: RunInfo) -> None:
        self.info_file.write_text(info.model_dump_json(indent=2) + "\n")

    def read_info(self) -> RunInfo:
        try:
            return RunInfo.model_validate_json(self.info_file.read_text())
        except ValidationError as error:
            raise UserError(f"{self.info_file} is not a valid run configuration: {error}") from None

    def read_evaluation(self, split: str) -> dict[str, Any] | None:
        path = self.evaluation(split)
        return json.loads(path.read_text()) if path.is_file() else None
