"""`python -m training` under torchrun: 2 CPU processes joined by gloo train on real MNIST what 1 process
trains with the same global batch (the linear scaling rule: half the batch, the same learning rate x 2),
and a fine-tuning run stopped on 1 process resumes on 2.

Tolerance: the runs differ only in float summation order (the gradient is averaged over processes
instead of within one batch), which early, high-learning-rate AdamW steps amplify. The 1-process run
itself moves that much with its thread count (1 vs 2 threads: train loss 1.7242 vs 1.7235 then 0.5857 vs
0.5826, validation 84.7/89.7 % vs 84.4/90.3 %, test 90.68 vs 91.12 %). Measured for 2 processes vs 1:
train loss 1.7254 vs 1.7235 then 0.5903 vs 0.5826, validation 83.8/89.3 % vs 84.4/90.3 % (validation loss
0.541/0.300 vs 0.517/0.280), test 90.11 vs 91.12 %. So: the training loss (a mean over 2,048 images)
within 2 % per epoch, the validation loss (1,000 images, early in training) within 10 %, accuracies
within 1.5 points.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from training.distributed import World, join
from training.recipes import mnist
from training.rundir import RunDir

SUBSET = {"train_limit": 2048, "val_size": 1000, "epochs": 2, "device": "cpu"}  # 32 global batches of 64
LR_OF_ONE_PROCESS = 4e-3


def test_the_learning_rate_scales_with_the_processes() -> None:
    assert World(0, 4).scale_lr(1e-3) == pytest.approx(4e-3)
    assert World().scale_lr(1e-3) == 1e-3
    assert World(1, 2).is_main is False


def test_without_torchrun_the_world_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    import torch

    assert join(torch.device("cpu")) == World()


def test_two_gloo_processes_match_one_process_of_the_same_global_batch(
    mnist_dir: Path, tmp_path: Path
) -> None:
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SUBSET.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "training", "train", "mnist", f"--data-dir={mnist_dir}", *flags,
         "--batch-size=32", f"--lr={LR_OF_ONE_PROCESS / 2}", f"--out={tmp_path / 'two'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run directory:") == 1  # rank 0 alone reports (and writes)
    one = mnist.train(
        mnist.Config(data_dir=str(mnist_dir), batch_size=64, lr=LR_OF_ONE_PROCESS, **SUBSET), tmp_path / "one"
    )
    distributed = RunDir(tmp_path / "two")
    one_rows, two_rows = one.read_metrics(), distributed.read_metrics()
    assert len(two_rows) == len(one_rows) == 2
    for single, pair in zip(one_rows, two_rows, strict=True):
        assert pair.lr == pytest.approx(single.lr)
        assert pair.train_loss == pytest.approx(single.train_loss, rel=0.02)
        assert pair.val_loss == pytest.approx(single.val_loss, rel=0.10)
        assert pair.train_accuracy == pytest.approx(single.train_accuracy, abs=0.015)
        assert pair.val_accuracy == pytest.approx(single.val_accuracy, abs=0.015)
    accuracy = one.read_evaluation("test")["accuracy"]  # type: ignore[index]
    assert distributed.read_evaluation("test")["accuracy"] == pytest.approx(accuracy, abs=0.015)  # type: ignore[index]
    assert distributed.load_checkpoint().world_size == 2


def test_a_photo_run_stopped_on_one_process_resumes_on_two(
    fake_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning (DistributedSampler, the cached head under DDP, frozen blocks) resumed by torchrun."""
    from training import engine
    from training.recipes import finetune

    settings = {"arch": "resnet18", "weights": "none", "image_size": 32, "batch_size": 2, "feature_epochs": 2,
                "finetune_epochs": 2, "unfreeze": 1, "workers": 0, "device": "cpu"}  # fmt: skip
    real_evaluate, calls = engine.evaluate, []

    def interrupted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 4:  # fine-tuning's 2nd validation
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune.train(finetune.Config(data_dir=str(fake_photos), **settings), tmp_path / "run")
    monkeypatch.undo()
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "training", "train", "photo", f"--data-dir={fake_photos}", *flags,
         f"--out={tmp_path / 'run'}", "--resume"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = RunDir(tmp_path / "run")
    assert [(row.phase, row.epoch) for row in run.read_metrics()] == [
        ("features", 1), ("features", 2), ("finetune", 1), ("finetune", 2),
    ]  # fmt: skip
    assert run.read_progress().finished and run.load_checkpoint().world_size == 2  # type: ignore[union-attr]
