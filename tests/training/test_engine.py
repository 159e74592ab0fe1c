"""The loops on tiny fixed models: a phase resumes from its own checkpoint only, and another number of
processes resumes on the new schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.distributed import World
from training.engine import MixedPrecision, Phase, evaluate, fit, train_one_epoch
from training.rundir import RunDir

CPU = MixedPrecision(torch.device("cpu"))


def batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator))
        for _ in range(3)
    ]


def test_one_epoch_counts_every_image_and_learns() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = evaluate(model, batches(), CPU, World())
    result = train_one_epoch(model, batches(), optimizer, CPU, World())
    after = evaluate(model, batches(), CPU, World())
    assert result.images == before.images == 24
    assert after.loss < before.loss


def test_resume_starts_a_new_phase_afresh_after_the_previous_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = batches()
    run = RunDir.create(tmp_path)
    first = Phase("features", 1, 3, torch.optim.SGD(model.parameters(), lr=0.1))
    fit(model, first, lambda _: data, data, run, CPU, World())
    # Two parameter groups: the saved SGD state of the first phase would not fit this optimizer.
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-4}]
    second = Phase("finetune", 2, 3, torch.optim.AdamW(groups, lr=1e-3))
    fit(model, second, lambda _: data, data, run, CPU, World(), resume=run.read_progress())
    assert [(row.phase, row.epoch) for row in run.read_metrics()] == [
        ("features", 1), ("finetune", 1), ("finetune", 2),
    ]  # fmt: skip


def one_cycle_phase(model: nn.Module, world_size: int, steps: int) -> Phase:
    lr = World(0, world_size).scale_lr(0.01)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=4, steps_per_epoch=steps)
    return Phase("train", 4, steps, optimizer, scheduler)


@pytest.mark.parametrize("scheduler", ["one-cycle", "cosine"])
def test_resuming_with_another_world_size_follows_the_new_schedule(tmp_path: Path, scheduler: str) -> None:
    """A checkpoint of 2 processes (3 steps an epoch) resumed by 1 (6 steps an epoch, half the learning
    rate): the scheduler stands where a 1-process run would after the same epochs."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    run = RunDir.create(tmp_path)

    def phase(world_size: int, steps: int) -> Phase:
        if scheduler == "one-cycle":
            return one_cycle_phase(model, world_size, steps)
        optimizer = torch.optim.AdamW(model.parameters(), lr=World(0, world_size).scale_lr(0.01))
        return Phase(
            "train", 4, steps, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4 * steps)
        )

    two = phase(2, 3)
    data = batches()
    two.epochs = 2  # stop after 2 of the 4 epochs, as an interruption would
    fit(model, two, lambda _: data, data, run, CPU, _pretend_world(2))
    straight = phase(1, 6)
    for _ in range(2 * 6):
        straight.optimizer.step()
        straight.scheduler.step()  # type: ignore[union-attr]
    resumed = phase(1, 6)
    resumed.epochs = 2  # nothing left to train: only the restore runs
    fit(model, resumed, lambda _: data, data, run, CPU, World(), resume=run.read_progress())
    assert resumed.scheduler.last_epoch == 12  # type: ignore[union-attr]
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(straight.optimizer.param_groups[0]["lr"])
    assert resumed.scheduler.get_last_lr() == pytest.approx(straight.scheduler.get_last_lr())  # type: ignore[union-attr]
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 6  # AdamW's moments came along


def _pretend_world(size: int) -> World:
    """A rank 0 of `size` processes without a process group: it only changes what the checkpoint records."""

    class Pretend(World):
        def wrap(self, module: nn.Module) -> nn.Module:
            return module

        def sum(self, *values: float) -> list[float]:
            return list(values)

        def barrier(self) -> None:
            pass

    return Pretend(0, size)
