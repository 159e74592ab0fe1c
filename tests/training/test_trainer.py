"""The epoch loop on a tiny fixed model: resuming picks up the saved phase only."""

from pathlib import Path

import torch
from torch import nn

from training import history
from training.engine import MixedPrecision
from training.rundir import RunDir
from training.trainer import Phase, fit


def test_resume_starts_a_new_phase_afresh_after_the_previous_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    run = RunDir.create(tmp_path)
    precision = MixedPrecision(torch.device("cpu"))
    fit(model, Phase("features", 1, torch.optim.SGD(model.parameters(), lr=0.1)), lambda _: batches,
        batches, run, precision)  # fmt: skip
    # Two parameter groups: the saved SGD state of the first phase would not fit this optimizer.
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-4}]
    finetune = Phase("finetune", 2, torch.optim.AdamW(groups, lr=1e-3))
    fit(model, finetune, lambda _: batches, batches, run, precision, resume=True)
    assert [(row.phase, row.epoch) for row in history.read(run.metrics)] == [
        ("features", 1), ("finetune", 1), ("finetune", 2),
    ]  # fmt: skip
