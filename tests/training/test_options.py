"""One declaration per option: flags generated from the recipe configs, recipe files, and their order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from training.errors import UserError
from training.options import click_options, read_recipe_file, resolve
from training.recipes import finetune, mnist

CONFIGS = REPO / "configs"


@pytest.mark.parametrize("config", [mnist.Config, finetune.Config], ids=["mnist", "photo"])
def test_every_setting_is_a_flag_of_the_same_name(config: type) -> None:
    options = click_options(config)
    assert [option.name for option in options] == list(config.model_fields)
    assert all(option.help for option in options)


DOCUMENTED_FLAGS = {
    "mnist": {"--data-dir", "--epochs", "--batch-size", "--lr", "--weight-decay", "--val-size",
              "--train-limit", "--augment", "--no-augment", "--rotation", "--shift", "--zoom", "--seed",
              "--device"},
    "photo": {"--arch", "--weights", "--image-size", "--limit", "--feature-epochs", "--head-lr",
              "--feature-augment", "--finetune-epochs", "--unfreeze", "--backbone-lr", "--patience",
              "--label-smoothing", "--min-scale", "--hflip", "--jitter", "--workers", "--no-augment"},
}  # fmt: skip


@pytest.mark.parametrize(("task", "config"), [("mnist", mnist.Config), ("photo", finetune.Config)])
def test_the_documented_flags_are_generated(task: str, config: type) -> None:
    flags = {flag for option in click_options(config) for flag in option.opts + option.secondary_opts}
    assert DOCUMENTED_FLAGS[task] <= flags


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: mnist\ndata_dir: data\nepochs: 5\nlr: 0.01\n")
    config = resolve(mnist.Config, read_recipe_file(recipe), {"epochs": 7, "seed": None}, str(recipe))
    assert (config.epochs, config.lr, config.seed, config.batch_size) == (7, 0.01, 0, 128)


def test_bad_settings_are_named_with_their_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown setting 'epoch' in x.yaml; valid: data_dir, dataset"):
        resolve(mnist.Config, {"epoch": 3}, {}, "x.yaml")
    with pytest.raises(
        UserError,
        match=r"invalid --batch-size \(or batch_size in x.yaml\): .*greater than or equal to 1, got 0",
    ):
        resolve(mnist.Config, {"data_dir": "d"}, {"batch_size": 0}, "x.yaml")
    with pytest.raises(UserError, match=r"missing --data-dir"):
        resolve(mnist.Config, {}, {}, "the command line")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must map setting names to values, not hold a list"):
        read_recipe_file(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("epochs: [1\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        read_recipe_file(tmp_path / "broken.yaml")


def test_the_mnist_recipe_file_is_the_embedded_models_recorded_config() -> None:
    config = resolve(mnist.Config, read_recipe_file(CONFIGS / "mnist.yaml"), {}, "configs/mnist.yaml")
    recorded = json.loads((REPO / "models" / "mnist" / "config.json").read_text())["config"]
    assert config.model_dump(mode="json") == recorded


def test_the_finetune_recipe_file_is_the_documented_command() -> None:
    """The README's `finetune --arch mobilenet_v2 --weights ../shared/weights/... --data-dir ...`."""
    values = read_recipe_file(CONFIGS / "hymenoptera_mobilenet_v2.yaml")
    assert values["task"] == "photo"
    documented = finetune.Config(
        arch="mobilenet_v2",
        weights="../shared/weights/mobilenet_v2_imagenet1k_from_tflite_quant.pth",
        data_dir="../shared/data/hymenoptera",
    )
    assert resolve(finetune.Config, values, {}, "configs/hymenoptera_mobilenet_v2.yaml") == documented
