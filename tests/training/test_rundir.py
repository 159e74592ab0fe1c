"""The run directory's one owner: the record, progress, the plain-dict checkpoint and the metrics file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from exported.preprocessing import MNIST_PREPROCESSING
from training.errors import UserError
from training.rundir import Checkpoint, EpochRow, Progress, RunDir, RunInfo


def info(**config: object) -> RunInfo:
    return RunInfo(
        task="mnist", arch="mnist_cnn", labels=list("0123456789"), preprocessing=MNIST_PREPROCESSING,
        config={"epochs": 2, **config}, data_sha256={},
    )  # fmt: skip


def row(phase: str, epoch: int) -> EpochRow:
    return EpochRow(phase, epoch, 1.0, 0.5, 1.0, 0.5, 0.1, 1.0)


def test_a_new_run_starts_without_progress_and_a_resumed_one_keeps_its_config(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    assert run.begin(info(), resume=False) is None
    assert run.read_progress() == Progress()
    run.write_progress(Progress(phase="train", epoch=1, best_accuracy=0.5))
    assert run.begin(info(), resume=True) == Progress(phase="train", epoch=1, best_accuracy=0.5)
    with pytest.raises(UserError, match="started with a different configuration"):
        run.begin(info(epochs=3), resume=True)
    run.finish()
    with pytest.raises(UserError, match="nothing to resume"):
        run.begin(info(), resume=True)


def test_starting_again_clears_the_previous_run(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    run.begin(info(), resume=False)
    run.append_metrics(row("train", 1))
    run.save_weights(nn.Linear(2, 2))
    run.begin(info(), resume=False)
    assert not run.metrics.exists() and not run.weights.exists()


def test_the_checkpoint_is_a_plain_dict_that_loads_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    progress = Progress(phase="train", epoch=3, best_accuracy=0.75, stale_epochs=1)
    run = RunDir.create(tmp_path)
    run.save_checkpoint(
        Checkpoint(model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), progress,
                   torch.get_rng_state(), None, world_size=2)
    )  # fmt: skip
    raw = torch.load(run.checkpoint, weights_only=True)  # no pickled classes: safe to load
    assert set(raw) == {"model", "optimizer", "lr_scheduler", "progress", "rng", "cuda_rng", "world_size"}
    loaded = run.load_checkpoint()
    assert loaded.progress == progress == run.read_progress()
    assert loaded.world_size == 2
    torch.testing.assert_close(loaded.model["weight"], model.weight.detach())
    assert loaded.optimizer["state"][0]["step"] == 1


def test_a_checkpoint_holding_code_is_refused(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    torch.save({"model": {}, "trap": pickle.loads(pickle.dumps(Path("x")))}, run.checkpoint)
    with pytest.raises(pickle.UnpicklingError):
        run.load_checkpoint()


def test_resume_drops_the_metrics_rows_after_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    for phase, epoch in (("features", 1), ("features", 2), ("finetune", 1), ("finetune", 2)):
        run.append_metrics(row(phase, epoch))
    run.truncate_metrics(Progress(phase="finetune", epoch=1))
    assert [(r.phase, r.epoch) for r in run.read_metrics()] == [
        ("features", 1),
        ("features", 2),
        ("finetune", 1),
    ]


def test_only_a_finished_run_opens_for_export(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run directory not found"):
        RunDir.open_finished(tmp_path / "nowhere")
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(UserError, match="not a run directory: config.json is missing"):
        RunDir.open_finished(run.path)
    run.begin(info(), resume=False)
    run.save_weights(nn.Linear(2, 2))
    with pytest.raises(UserError, match="unfinished run \\(stopped before its first epoch\\)"):
        RunDir.open_finished(run.path)
    run.write_progress(Progress(phase="features", epoch=3))
    with pytest.raises(
        UserError, match="unfinished run \\(stopped after features epoch 3\\); finish it with --resume"
    ):
        RunDir.open_finished(run.path)
    run.progress_file.unlink()
    with pytest.raises(UserError, match="not a finished run: progress.json is missing"):
        RunDir.open_finished(run.path)
    run.finish()
    assert RunDir.open_finished(run.path) == run
