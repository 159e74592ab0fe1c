"""Command line: `python -m training {summary,train,finetune,list-archs,evaluate,export}`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from training.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train convolutional image classifiers and export them for serving.",
)
logger = logging.getLogger("training")

# Default input shape (C, H, W) of each model for `summary`.
SUMMARY_INPUTS = {"mnist": ("mnist_cnn", (1, 28, 28))}
TRAINABLE = ("mnist",)
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "convnet-serve"

# Options shared by the commands that train or evaluate.
Seed = Annotated[int, typer.Option(help="random seed: the same seed gives the same run")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda")]
Resume = Annotated[bool, typer.Option(help="continue the run in --out from its last epoch")]


@app.command()
def summary(model: Annotated[str, typer.Argument(help="mnist")]) -> None:
    """Print a Keras-style table of a model's layers, output shapes and parameters."""
    from training.models import create_model
    from training.summary import format_summary, layer_rows

    if model not in SUMMARY_INPUTS:
        raise UserError(f"unknown model {model!r}; choose one of: {', '.join(SUMMARY_INPUTS)}")
    arch, input_shape = SUMMARY_INPUTS[model]
    network = create_model(arch, 10)
    typer.echo(format_summary(arch, network, layer_rows(network, input_shape)))


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="what to train: mnist")],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    data_dir: Annotated[Path | None, typer.Option(help="folder with the four MNIST IDX .gz files")] = None,
    download: Annotated[bool, typer.Option(help="fetch MNIST with torchvision into --cache-dir")] = False,
    cache_dir: Annotated[Path, typer.Option(help="where --download puts MNIST")] = DEFAULT_CACHE_DIR,
    epochs: int = 30,
    batch_size: int = 128,
    lr: Annotated[float, typer.Option(help="peak learning rate (one-cycle schedule)")] = 3e-3,
    weight_decay: float = 1e-2,
    val_size: Annotated[int, typer.Option(help="validation images carved from the 60,000")] = 5000,
    train_limit: Annotated[int | None, typer.Option(help="train on only this many images")] = None,
    augment: Annotated[bool, typer.Option(help="random rotations, shifts and zoom")] = True,
    rotation: Annotated[float, typer.Option(help="max rotation, degrees")] = 10.0,
    shift: Annotated[float, typer.Option(help="max shift, fraction of the side")] = 0.1,
    zoom: Annotated[float, typer.Option(help="max zoom in or out, fraction")] = 0.1,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Resume = False,
) -> None:
    """Train a model and write its run directory (weights, config, metrics, plots, test evaluation)."""
    from training import mnist, mnist_task
    from training.augment import AffineAugment
    from training.report import format_report

    if model not in TRAINABLE:
        raise UserError(f"unknown model {model!r}; choose one of: {', '.join(TRAINABLE)}")
    if download:
        data_dir = mnist.download(cache_dir)
    if data_dir is None:
        raise UserError("pass --data-dir DIR (the four MNIST IDX .gz files) or --download")
    try:
        config = mnist_task.MnistConfig(
            data_dir=str(data_dir),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            val_size=val_size,
            train_limit=train_limit,
            seed=seed,
            device=device,
            augment=AffineAugment(enabled=augment, degrees=rotation, translate=shift, zoom=zoom),
        )
    except ValueError as error:
        raise UserError(f"invalid option: {error}") from None
    run = mnist_task.train(config, out, resume=resume)
    report = run.read_evaluation("test")
    assert report is not None
    typer.echo(format_report(report))
    typer.echo(f"run directory: {run.path}")


@app.command()
def finetune(
    arch: Annotated[str, typer.Option(help="backbone, e.g. mobilenet_v2 or resnet50 (see list-archs)")],
    data_dir: Annotated[
        Path, typer.Option(help="ImageFolder photos: DIR/train/<class>/*, DIR/val/<class>/*")
    ],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    weights: Annotated[
        str, typer.Option(help="imagenet (torchvision's), none, or a state_dict file")
    ] = "imagenet",
    image_size: Annotated[int | None, typer.Option(help="input side instead of the weights' own")] = None,
    limit: Annotated[int | None, typer.Option(help="use only this many images per class and split")] = None,
    batch_size: int = 32,
    feature_epochs: Annotated[
        int, typer.Option(help="phase 1: epochs of the new head on the frozen backbone")
    ] = 10,
    head_lr: Annotated[float, typer.Option(help="phase 1 learning rate")] = 1e-3,
    feature_augment: Annotated[bool, typer.Option(help="augment in phase 1 too (no feature cache)")] = False,
    finetune_epochs: Annotated[int, typer.Option(help="phase 2: epochs with the top blocks unfrozen")] = 10,
    unfreeze: Annotated[int, typer.Option(help="phase 2: top blocks of the backbone to train")] = 8,
    lr: Annotated[float, typer.Option(help="phase 2 learning rate of the head")] = 3e-4,
    backbone_lr: Annotated[float, typer.Option(help="phase 2 learning rate of the unfrozen blocks")] = 1e-4,
    patience: Annotated[int, typer.Option(help="phase 2 early stopping: epochs without improvement")] = 5,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.1,
    augment: Annotated[bool, typer.Option(help="random resized crop, flip and colour jitter")] = True,
    min_scale: Annotated[float, typer.Option(help="smallest random crop, area fraction")] = 0.35,
    hflip: Annotated[float, typer.Option(help="probability of a horizontal flip")] = 0.5,
    jitter: Annotated[float, typer.Option(help="brightness, contrast and saturation jitter")] = 0.2,
    workers: Annotated[int, typer.Option(help="data loading processes")] = 2,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Resume = False,
) -> None:
    """Fine-tune an ImageNet backbone on your photos: a new head on frozen features, then the top blocks."""
    from training import finetune as recipe
    from training.photo_data import PhotoAugment
    from training.report import format_report

    try:
        config = recipe.FinetuneConfig(
            arch=arch,
            weights=weights,
            data_dir=str(data_dir),
            image_size=image_size,
            limit=limit,
            batch_size=batch_size,
            weight_decay=weight_decay,
            label_smoothing=label_smoothing,
            feature_epochs=feature_epochs,
            head_lr=head_lr,
            feature_augment=feature_augment,
            finetune_epochs=finetune_epochs,
            unfreeze=unfreeze,
            lr=lr,
            backbone_lr=backbone_lr,
            patience=patience,
            augment=PhotoAugment(enabled=augment, min_scale=min_scale, hflip=hflip, jitter=jitter),
            workers=workers,
            seed=seed,
            device=device,
        )
    except ValueError as error:
        raise UserError(f"invalid option: {' '.join(str(error).split())}") from None
    run = recipe.finetune(config, out, resume=resume)
    report = run.read_evaluation("test") or run.read_evaluation("val")
    assert report is not None
    typer.echo(format_report(report))
    typer.echo(f"run directory: {run.path}")


@app.command("list-archs")
def list_archs() -> None:
    """List the backbones that finetune accepts, with their input size and ImageNet weights."""
    from training.backbones import BACKBONES

    typer.echo(f"{'arch':<28} {'input':>5}  imagenet weights")
    for name, backbone in sorted(BACKBONES.items()):
        size = backbone.preprocessing(True).input_size[0]
        typer.echo(f"{name:<28} {size:>5}  {backbone.weights_name}")
    if not any(b.source == "timm" for b in BACKBONES.values()):
        typer.echo("(Xception, InceptionResNetV2 and NASNet need timm: pip install 'convnet-serve[timm]')")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by train")],
    data_dir: Annotated[Path, typer.Option(help="the data the run was trained on")],
    split: Annotated[str, typer.Option(help="test, val or train (photos: the DIR/<split>/ folder)")] = "test",
    device: Device = "auto",
) -> None:
    """Print accuracy and per-class precision/recall; write them to RUN_DIR/evaluation-SPLIT.json."""
    from training import finetune, mnist_task
    from training.engine import resolve_device
    from training.evaluation import evaluate_run
    from training.report import format_report
    from training.rundir import RunDir

    if split not in ("test", "val", "train"):
        raise UserError(f"unknown split {split!r}; choose test, val or train")
    run = RunDir.open(run_dir)
    info = run.read_info()
    resolved = resolve_device(device)
    if info.task == "photo":
        batches = finetune.evaluation_batches(info, data_dir, split, resolved)
    else:
        batches = mnist_task.evaluation_batches(info, data_dir, split)
    report = evaluate_run(run, batches, split, resolved, plot=split == "test")
    typer.echo(format_report(report))
    typer.echo(f"written: {run.evaluation(split)}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by train")],
    name: Annotated[str | None, typer.Option(help="model name in the store (default by task)")] = None,
    onnx: Annotated[bool, typer.Option(help="also store the weights as an ONNX graph")] = False,
) -> None:
    """Save the run's best model into the BentoML model store and print its tag."""
    from training.export import export_run

    typer.echo(str(export_run(run_dir, name, onnx=onnx)))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
