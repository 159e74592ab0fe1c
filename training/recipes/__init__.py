"""Recipes by task: each module has a pydantic `Config`, `train(config, out, resume=)` and `eval_batches`.

| task | module | trains |
|---|---|---|
| `mnist` | `recipes.mnist` | the MNIST ConvNet on any 28x28 IDX dataset in the MNIST file layout |
| `photo` | `recipes.finetune` | an ImageNet backbone on ImageFolder photos, in two phases |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from training import distributed
from training.distributed import World
from training.engine import Batches, MixedPrecision, resolve_device
from training.errors import UserError
from training.report import evaluate_run, plot_curves
from training.rundir import Progress, RunDir, RunInfo

RECIPES = {"mnist": "training.recipes.mnist", "photo": "training.recipes.finetune"}


def recipe(task: str) -> ModuleType:
    """The recipe module of `task`, imported on demand."""
    if task not in RECIPES:
        raise UserError(f"unknown task {task!r}; choose one of: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[task])


@dataclass(frozen=True)
class Session:
    """Where a run trains: its directory, device, mixed precision, processes, and saved progress."""

    run: RunDir
    device: torch.device
    precision: MixedPrecision
    world: World
    saved: Progress | None  # where a resumed run stopped (None: from the start)


def start(info: RunInfo, out: Path, *, seed: int, device: str, resume: bool) -> Session:
    """Seed, pick the device, join the other processes (if any) and open the run directory.

    The seeding comes first and draws nothing, so the network's initial weights depend on `seed` only.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    resolved = resolve_device(device)
    world = distributed.join(resolved)
    resolved = distributed.process_device(resolved, world)
    run = RunDir.create(out)
    saved = run.begin(info, resume=resume, write=world.is_main)
    world.barrier()
    return Session(run, resolved, MixedPrecision(resolved), world, saved)


def finish(session: Session, split: str, batches: Callable[[], Batches]) -> RunDir:
    """On rank 0: the curves, the final evaluation on `split` (with its confusion matrix), the run
    marked finished. Every process then leaves the process group."""
    if session.world.is_main:
        plot_curves(session.run.read_metrics(), session.run.curves)
        evaluate_run(session.run, batches(), split, session.device, plot=True)
        session.run.finish()
    session.world.barrier()
    distributed.leave()
    return session.run
