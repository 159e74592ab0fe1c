"""Export: a finished run becomes a model store entry whose network gives the run's logits; an
unfinished run is refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from exported import load_model
from tests.support.cli import assert_one_line_error, invoke
from training import engine
from training.data import load_idx_split
from training.export import export_run
from training.models import create_model
from training.recipes import mnist
from training.rundir import RunDir


def test_export_then_load_gives_identical_logits(quick_mnist_run: RunDir, mnist_dir: Path) -> None:
    tag = export_run(quick_mnist_run.path)
    assert tag.name == "mnist-convnet"
    exported = load_model(str(tag))
    card = exported.card
    assert card.labels == [str(d) for d in range(10)]
    assert card.preprocessing.input_size == (28, 28) and card.preprocessing.channels == 1
    assert card.test_accuracy == quick_mnist_run.read_evaluation("test")["accuracy"]  # type: ignore[index]
    best_val = max(row.val_accuracy for row in quick_mnist_run.read_metrics())
    assert card.val_accuracy == pytest.approx(best_val, abs=1e-6)
    assert card.training_config["train_limit"] == 3000
    assert len(card.data_sha256) == 4

    trained = create_model("mnist_cnn", 10).eval()
    quick_mnist_run.load_weights(trained)
    test = load_idx_split(mnist_dir, "test")
    pictures = [Image.fromarray(image.numpy(), mode="L") for image in test.images[:64]]
    images = torch.stack([card.preprocessing.eval_transform()(picture) for picture in pictures])
    with torch.inference_mode():
        assert torch.equal(exported.model(images), trained(images))
    assert export_run(quick_mnist_run.path) == tag  # exporting again is a no-op


def test_the_card_carries_the_datasets_class_names(idx_dir: Path, tmp_path: Path) -> None:
    config = mnist.Config(data_dir=str(idx_dir), dataset="kmnist", epochs=1, train_limit=64, val_size=100)
    result = invoke("export", mnist.train(config, tmp_path / "kmnist").path, "--name", "kmnist-convnet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("kmnist-convnet:")
    assert load_model(result.stdout.strip()).card.labels[:3] == ["o", "ki", "su"]


def test_an_unfinished_run_is_refused_with_one_line(
    idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_evaluate, calls = engine.evaluate, []

    def second_validation_interrupted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", second_validation_interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist.train(
            mnist.Config(data_dir=str(idx_dir), epochs=2, train_limit=64, val_size=100), tmp_path / "stopped"
        )
    assert (tmp_path / "stopped" / "model.safetensors").is_file()  # the best epoch so far exists...
    result = invoke("export", tmp_path / "stopped")  # ...but is not a finished model
    assert_one_line_error(result, "unfinished run (stopped after train epoch 1)", "finish it with --resume")
