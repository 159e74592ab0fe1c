"""Export: a finished run becomes a model store entry whose network gives the run's logits; an
unfinished run is refused with one line; `--if-absent` never displaces a model of the same name."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
import torch
from PIL import Image

from exported import load_model
from exported.preprocessing import MNIST_PREPROCESSING
from tests.support.cli import assert_one_line_error, invoke
from tests.support.server import untrained_run
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


def test_if_absent_exports_a_default_that_never_displaces_another_model(tmp_path: Path) -> None:
    """`export --if-absent` (scripts/serve.sh's embedded photo model) before and after a user's export."""

    def run(name: str) -> Path:
        return untrained_run(tmp_path / name, "mnist", "mnist_cnn", list("0123456789"), MNIST_PREPROCESSING)

    default, users, later = run("default"), run("users"), run("later")

    def versions(name: str) -> set[str]:
        return {str(model.tag) for model in bentoml.models.list(name)}

    embedded = export_run(default, "digits-a", if_absent=True)  # an empty store: exported
    assert versions("digits-a") == {str(embedded)}
    fine_tuned = export_run(users, "digits-a")
    assert bentoml.models.get("digits-a:latest").tag == fine_tuned  # the newest export is served
    assert export_run(default, "digits-a", if_absent=True) == fine_tuned  # serve.sh again: nothing changes
    assert bentoml.models.get("digits-a:latest").tag == fine_tuned
    bentoml.models.delete(fine_tuned)  # going back to the default
    assert bentoml.models.get("digits-a:latest").tag == embedded

    fine_tuned = export_run(later, "digits-b")  # the user's export comes first
    result = invoke("export", default, "--name", "digits-b", "--if-absent")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(fine_tuned)
    assert versions("digits-b") == {str(fine_tuned)}
