"""Short training runs on real MNIST: learning, determinism, resume, checkpoints, evaluation, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from exported import load_model
from training import history, mnist_task, trainer
from training.__main__ import app
from training.augment import AffineAugment
from training.checkpoint import load_weights, save_weights
from training.engine import MixedPrecision
from training.export import export_run
from training.mnist import load_split
from training.models import create_model
from training.rundir import RunDir

QUICK = {"train_limit": 3000, "val_size": 1000, "batch_size": 64, "lr": 5e-3}


def quick_config(mnist_dir: Path, epochs: int) -> mnist_task.MnistConfig:
    return mnist_task.MnistConfig(data_dir=str(mnist_dir), epochs=epochs, **QUICK)


@pytest.fixture(scope="module")
def quick_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """Two epochs on 3,000 real training images, evaluated on the 10,000 test images."""
    return mnist_task.train(quick_config(mnist_dir, epochs=2), tmp_path_factory.mktemp("quick"))


def test_short_run_clearly_beats_chance(quick_run: RunDir) -> None:
    report = quick_run.read_evaluation("test")
    assert report is not None
    assert report["images"] == 10_000
    assert report["accuracy"] > 0.85  # chance is 0.10


def test_run_directory_holds_every_artifact(quick_run: RunDir) -> None:
    for path in (
        quick_run.weights,
        quick_run.info_file,
        quick_run.metrics,
        quick_run.curves,
        quick_run.confusion_matrix,
        quick_run.evaluation("test"),
    ):
        assert path.is_file() and path.stat().st_size > 0, path
    assert quick_run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = quick_run.metrics.read_text().splitlines()
    assert rows[0] == "phase,epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds"
    assert len(rows) == 3
    info = quick_run.read_info()
    assert info.config["train_limit"] == 3000
    assert set(info.data_sha256) == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    assert not list(quick_run.path.glob("*.pt*")), "checkpoints are safetensors only"


def test_same_seed_gives_the_same_weights_and_resume_continues_exactly(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = mnist_task.train(quick_config(mnist_dir, epochs=2), tmp_path / "straight")
    again = mnist_task.train(quick_config(mnist_dir, epochs=2), tmp_path / "again")

    # Interrupt the same run during epoch 2's validation (as Ctrl-C would), then resume it.
    real_evaluate, calls = trainer.evaluate, []

    def interrupted_evaluate(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", interrupted_evaluate)
    with pytest.raises(KeyboardInterrupt):
        mnist_task.train(quick_config(mnist_dir, epochs=2), tmp_path / "resumed")
    monkeypatch.setattr(trainer, "evaluate", real_evaluate)
    resumed = mnist_task.train(quick_config(mnist_dir, epochs=2), tmp_path / "resumed", resume=True)

    def logits(run: RunDir) -> torch.Tensor:
        model = create_model("mnist_cnn", 10)
        load_weights(model, run.weights)
        return model.eval()(torch.linspace(-1, 2, 4 * 784).reshape(4, 1, 28, 28))

    assert torch.equal(logits(straight), logits(again))
    assert torch.allclose(logits(straight), logits(resumed), atol=1e-6)
    assert resumed.metrics.read_text().count("\ntrain,") == 2


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_model("mnist_cnn", 10).eval()
    save_weights(model, tmp_path / "w.safetensors")
    loaded = create_model("mnist_cnn", 10).eval()
    load_weights(loaded, tmp_path / "w.safetensors")
    images = torch.randn(8, 1, 28, 28)
    assert torch.equal(model(images), loaded(images))


def test_evaluate_command_on_the_validation_slice(quick_run: RunDir, mnist_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(quick_run.path), "--data-dir", str(mnist_dir), "--split", "val"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(quick_run.evaluation("val").read_text())
    assert report["images"] == QUICK["val_size"]
    assert sum(c["support"] for c in report["per_class"]) == QUICK["val_size"]
    diagonal = sum(report["confusion_matrix"][i][i] for i in range(10))
    assert report["accuracy"] == pytest.approx(diagonal / QUICK["val_size"])
    assert f"accuracy {report['accuracy']:.4f}" in result.output
    assert "precision" in result.output and "recall" in result.output


def test_export_then_load_gives_identical_logits(quick_run: RunDir, mnist_dir: Path) -> None:
    tag = export_run(quick_run.path)
    assert tag.name == "mnist-convnet"
    exported = load_model(str(tag))
    card = exported.card
    assert card.labels == [str(d) for d in range(10)]
    assert card.preprocessing.input_size == (28, 28) and card.preprocessing.channels == 1
    assert card.test_accuracy == quick_run.read_evaluation("test")["accuracy"]
    best_val = max(row.val_accuracy for row in history.read(quick_run.metrics))
    assert card.val_accuracy == pytest.approx(best_val, abs=1e-6)
    assert card.training_config["train_limit"] == 3000
    assert len(card.data_sha256) == 4

    trained = create_model("mnist_cnn", 10).eval()
    load_weights(trained, quick_run.weights)
    test = load_split(mnist_dir, "test")
    images = torch.stack([card.preprocessing.eval_transform()(_to_pil(img)) for img in test.images[:64]])
    with torch.inference_mode():
        assert torch.equal(exported.model(images), trained(images))
    assert export_run(quick_run.path) == tag  # exporting again is a no-op


def test_augmentation_keeps_digits_recognisable() -> None:
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    out = AffineAugment()(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    assert 0.6 < out.sum() / images.sum() < 1.5  # moved and turned a little, not lost


def _to_pil(image: torch.Tensor):  # noqa: ANN202
    from PIL import Image

    return Image.fromarray(image.numpy(), mode="L")


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision(mnist_dir: Path, tmp_path: Path) -> None:
    config = quick_config(mnist_dir, epochs=2).model_copy(update={"device": "cuda"})
    assert MixedPrecision(torch.device("cuda")).enabled
    run = mnist_task.train(config, tmp_path / "cuda")
    assert run.read_evaluation("test")["accuracy"] > 0.85
