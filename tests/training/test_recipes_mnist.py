"""The MNIST-style recipe: a short real-MNIST run learns; on generated IDX data, a run is deterministic,
resumes exactly, and takes its class names from a preset or a names file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training import engine
from training.engine import MixedPrecision
from training.models import create_model
from training.recipes import mnist
from training.rundir import RunDir

GENERATED = {"val_size": 200, "batch_size": 64, "lr": 5e-3, "epochs": 2, "device": "cpu"}


def generated_config(idx_dir: Path, **changes: object) -> mnist.Config:
    return mnist.Config(data_dir=str(idx_dir), **{**GENERATED, **changes})


def logits(run: RunDir) -> torch.Tensor:
    model = create_model("mnist_cnn", len(run.read_info().labels))
    run.load_weights(model)
    return model.eval()(torch.linspace(-1, 2, 4 * 784).reshape(4, 1, 28, 28))


def test_short_run_on_real_mnist_clearly_beats_chance(quick_mnist_run: RunDir) -> None:
    report = quick_mnist_run.read_evaluation("test")
    assert report is not None and report["images"] == 10_000
    assert report["accuracy"] > 0.85  # chance is 0.10


def test_run_directory_holds_every_artifact(quick_mnist_run: RunDir) -> None:
    run = quick_mnist_run
    for path in (run.weights, run.info_file, run.progress_file, run.checkpoint, run.metrics, run.curves,
                 run.confusion_matrix, run.evaluation("test")):  # fmt: skip
        assert path.is_file() and path.stat().st_size > 0, path
    assert run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = run.metrics.read_text().splitlines()
    assert rows[0] == "phase,epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds"
    assert len(rows) == 3
    assert run.read_progress().finished  # type: ignore[union-attr]
    info = run.read_info()
    assert mnist.Config.model_validate(info.config).train_limit == 3000
    assert info.labels == list("0123456789")
    assert set(info.data_sha256) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }  # fmt: skip


def test_same_seed_gives_the_same_weights_and_resume_continues_exactly(
    idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = generated_config(idx_dir)
    straight = mnist.train(config, tmp_path / "straight")
    again = mnist.train(config, tmp_path / "again")

    # Interrupt the same run during epoch 2's validation (as Ctrl-C would), then resume it.
    real_evaluate, calls = engine.evaluate, []

    def interrupted_evaluate(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupted_evaluate)
    with pytest.raises(KeyboardInterrupt):
        mnist.train(config, tmp_path / "resumed")
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    assert not RunDir(tmp_path / "resumed").read_progress().finished  # type: ignore[union-attr]
    resumed = mnist.train(config, tmp_path / "resumed", resume=True)

    assert straight.read_evaluation("test")["accuracy"] > 0.5  # type: ignore[index]  # learnable data
    assert torch.equal(logits(straight), logits(again))
    torch.testing.assert_close(logits(resumed), logits(straight), atol=1e-6, rtol=0)
    assert [r.val_accuracy for r in resumed.read_metrics()] == [
        r.val_accuracy for r in straight.read_metrics()
    ]


def test_class_names_come_from_the_preset_or_a_names_file(idx_dir: Path, tmp_path: Path) -> None:
    fashion = generated_config(idx_dir, dataset="fashion-mnist", epochs=1, train_limit=128)
    assert (fashion.rotation, fashion.hflip) == (5.0, 0.5)  # the preset's, resolved into the config
    run = mnist.train(fashion, tmp_path / "fashion")
    assert run.read_info().labels[:2] == ["T-shirt/top", "Trouser"]
    assert run.read_info().config["hflip"] == 0.5
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"glyph {i}" for i in range(10)) + "\n")
    own = mnist.train(
        generated_config(idx_dir, labels_file=str(names), epochs=1, train_limit=128), tmp_path / "own"
    )
    assert own.read_info().labels[9] == "glyph 9"
    assert "names.txt" in own.read_info().data_sha256
    report = json.loads(own.evaluation("test").read_text())
    assert [c["label"] for c in report["per_class"]][:2] == ["glyph 0", "glyph 1"]


def test_flags_override_the_preset_and_bad_values_are_refused(idx_dir: Path) -> None:
    assert generated_config(idx_dir, rotation=0, hflip=0.25).augmentation().rotation == 0  # type: ignore[union-attr]
    assert generated_config(idx_dir, augment=False).augmentation() is None
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        generated_config(idx_dir, dataset="cifar")


def test_eval_batches_rebuild_the_validation_split_from_the_record(
    quick_mnist_run: RunDir, mnist_dir: Path
) -> None:
    info = quick_mnist_run.read_info()
    val = mnist.eval_batches(info, mnist_dir, "val", torch.device("cpu"))
    assert sum(len(labels) for _, labels in val) == 1000


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision(mnist_dir: Path, tmp_path: Path) -> None:
    from tests.training.conftest import QUICK_MNIST

    config = mnist.Config(data_dir=str(mnist_dir), device="cuda", **QUICK_MNIST)
    assert MixedPrecision(torch.device("cuda")).enabled
    run = mnist.train(config, tmp_path / "cuda")
    assert run.read_evaluation("test")["accuracy"] > 0.85  # type: ignore[index]
