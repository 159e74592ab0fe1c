"""Per-epoch metrics, appended to metrics.csv as training goes."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path


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


COLUMNS = [f.name for f in fields(EpochRow)]


def append(path: Path, row: EpochRow) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))


def read(path: Path) -> list[EpochRow]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            EpochRow(
                phase=r["phase"],
                epoch=int(r["epoch"]),
                **{k: float(r[k]) for k in COLUMNS if k not in ("phase", "epoch")},
            )
            for r in csv.DictReader(handle)
        ]


def truncate(path: Path, phase: str, last_epoch: int) -> None:
    """Drop rows written after the checkpoint being resumed (phase `phase`, epoch `last_epoch`)."""
    rows = read(path)
    keep: list[EpochRow] = []
    for row in rows:
        if row.phase == phase and row.epoch > last_epoch:
            break
        keep.append(row)
    path.unlink(missing_ok=True)
    for row in keep:
        append(path, row)
