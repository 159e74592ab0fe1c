"""The command line (`training/__main__.py`): the documented commands and flags, `--config`, and user
mistakes ending with one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.cli import assert_one_line_error, invoke, run_cli
from training.rundir import RunDir

# Layer, output shape, parameters: the Keras book's MNIST ConvNet.
KERAS_ROWS = [
    ("conv2d (Conv2D)", "(None, 26, 26, 32)", "320"),
    ("max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)", "0"),
    ("conv2d_1 (Conv2D)", "(None, 11, 11, 64)", "18,496"),
    ("max_pooling2d_1 (MaxPooling2D)", "(None, 5, 5, 64)", "0"),
    ("conv2d_2 (Conv2D)", "(None, 3, 3, 64)", "36,928"),
    ("flatten (Flatten)", "(None, 576)", "0"),
    ("dense (Dense)", "(None, 64)", "36,928"),
    ("dense_1 (Dense)", "(None, 10)", "650"),
]


def test_summary_of_the_mnist_network_is_the_keras_table() -> None:
    result = invoke("summary", "mnist")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if "(None" in line]
    assert len(rows) == len(KERAS_ROWS)
    for line, (layer, shape, params) in zip(rows, KERAS_ROWS, strict=True):
        assert line.startswith(layer) and shape in line and line.split()[-1] == params
    assert "Total params: 93,322" in lines and "Trainable params: 93,322" in lines


@pytest.mark.parametrize(
    ("arch", "first_row"),
    [("resnet18", "(None, 112, 112, 64)"), ("timm/mobilenetv1_100", "(None, 112, 112, 32)")],
)
def test_summary_of_any_registered_arch(arch: str, first_row: str) -> None:
    result = invoke("summary", arch, "--num-classes", "2")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "(None" in line]
    assert first_row in rows[0] and "BatchNormalization" in rows[1]
    assert rows[-1].split()[1:4] == ["(Dense)", "(None,", "2)"]


def test_train_with_the_documented_flags(idx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "train", "mnist", "--data-dir", idx_dir, "--out", out, "--epochs", "1", "--batch-size", "64",
        "--val-size", "200", "--rotation", "5", "--shift", "0.05", "--zoom", "0", "--no-augment",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and f"run directory: {out}" in result.stdout
    config = RunDir(out).read_info().config
    assert (config["rotation"], config["shift"], config["zoom"], config["augment"]) == (5.0, 0.05, 0.0, False)


def test_train_from_a_recipe_file_with_flags_on_top(idx_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: mnist\ndata_dir: {idx_dir}\nepochs: 3\nval_size: 200\nbatch_size: 128\n")
    result = invoke("train", "--config", recipe, "--epochs", "1", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    config = RunDir(tmp_path / "run").read_info().config
    assert (config["epochs"], config["batch_size"]) == (1, 128)


def test_finetune_is_train_photo_and_evaluate_rescores_a_split(fake_photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet"
    result = invoke(
        "finetune", "--arch", "resnet18", "--weights", "none", "--data-dir", fake_photos, "--out", out,
        "--image-size", "32", "--limit", "2", "--feature-epochs", "1", "--finetune-epochs", "1",
        "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "evaluation-val.json").read_text())["images"] == 4  # --limit 2, two classes
    evaluated = invoke("evaluate", out, "--data-dir", fake_photos, "--split", "val", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "on 6 images" in evaluated.stdout  # the whole val folder
    assert json.loads((out / "evaluation-val.json").read_text())["images"] == 6


def test_list_archs() -> None:
    result = invoke("list-archs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.split()[:3] == ["mobilenet_v2", "224", "MobileNet_V2_Weights.IMAGENET1K_V2"] for line in lines
    )
    assert any(line.split()[:2] == ["inception_v3", "299"] for line in lines)
    assert any(line.split()[:2] == ["timm/nasnetalarge", "331"] for line in lines)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "lenet", "--out", "x"), ["unknown task 'lenet'", "mnist, photo"]),
        (("train", "--out", "x"), ["name the task"]),
        (
            ("train", "mnist", "--out", "x", "--data-dir", "d", "--epoch", "3"),
            ["No such option '--epoch'. Did you mean '--epochs'?"],
        ),
        (
            ("train", "mnist", "--out", "x", "--data-dir", "d", "--batch-size", "0"),
            ["invalid --batch-size", "got 0"],
        ),
        (
            ("train", "mnist", "--out", "x", "--data-dir", "d", "--dataset", "cifar"),
            ["unknown dataset 'cifar'", "kmnist"],
        ),
        (("train", "mnist", "--out", "x"), ["missing --data-dir"]),
        (
            ("train", "photo", "--out", "x", "--config", REPO / "configs" / "mnist.yaml"),
            ["is a 'mnist' recipe, not 'photo'"],
        ),
        (("summary", "lenet"), ["unknown arch 'lenet'", "list-archs"]),
        (("export", "nowhere"), ["run directory not found"]),
        (
            ("finetune", "--arch", "resnet19", "--data-dir", "d", "--out", "x"),
            ["unknown arch 'resnet19'", "list-archs"],
        ),
    ],
)
def test_mistakes_end_with_one_line(args: tuple[str, ...], expected: list[str]) -> None:
    assert_one_line_error(invoke(*args), *expected)


def test_a_missing_data_file_from_the_shell(idx_dir: Path, tmp_path: Path) -> None:
    """One real `python -m training` process: the entry point itself."""
    result = run_cli("train", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "run")
    assert_one_line_error(result, "IDX file not found", "train-images-idx3-ubyte.gz")


def test_evaluate_and_export_name_what_is_wrong(idx_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("export", tmp_path / "empty"), "not a run directory", "config.json")
    assert_one_line_error(
        invoke("evaluate", tmp_path / "empty", "--data-dir", idx_dir), "not a run directory"
    )


def test_no_command_prints_the_commands() -> None:
    result = invoke()
    assert result.returncode == 0 and not result.stderr
    assert {"train", "finetune", "evaluate", "export", "summary", "list-archs"} <= {
        line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")
    }
