"""Command line: `python -m training {train,finetune,evaluate,export,import-weights,summary,list-archs}`.

`train TASK` takes the flags of its recipe's config (see `training.options`), or `--config FILE` with
flags on top. It runs unchanged under `torchrun --nproc-per-node N` (see `training.distributed`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from training.errors import UserError
from training.options import TASK_KEY, click_options, read_recipe_file, resolve

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "convnet-serve"
SUMMARY_ALIASES = {"mnist": "mnist_cnn"}  # `summary mnist`: the network the mnist recipe trains
logger = logging.getLogger("training")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train convolutional image classifiers and export them for serving."""


# train ------------------------------------------------------------------------------------------------

PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@cli.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Train TASK (mnist or photo) into --out: `train TASK [--config FILE] --out DIR [flags]`.

    `train TASK --help` lists the task's flags."""
    from training.recipes import RECIPES

    task = args[0] if args and not args[0].startswith("-") else None
    rest = list(args[1:] if task else args)
    config_file = _config_file(rest)
    file_values = read_recipe_file(config_file) if config_file else {}
    file_task = file_values.get(TASK_KEY)
    if task and file_task and task != file_task:
        raise UserError(f"{config_file} is a {file_task!r} recipe, not {task!r}")
    task = task or file_task
    if task is None:
        if set(rest) & {"-h", "--help"}:
            click.echo(click.get_current_context().get_help())
            return
        raise UserError(f"name the task: train {{{','.join(RECIPES)}}} ..., or a --config file with `task:`")
    _run_recipe(task, rest, f"train {task}")


@cli.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def finetune(args: tuple[str, ...]) -> None:
    """Fine-tune an ImageNet backbone on your photos: the same as `train photo` (see `train photo --help`)."""
    _run_recipe("photo", list(args), "finetune")


def _config_file(args: list[str]) -> Path | None:
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            return Path(args[index + 1])
        if arg.startswith("--config="):
            return Path(arg.removeprefix("--config="))
    return None


def _run_recipe(task: str, args: list[str], name: str) -> None:
    """Parse the recipe's flags (generated from its Config), resolve the config and train."""
    from training.recipes import recipe

    module = recipe(task)
    extra: list[click.Option] = []
    if task == "mnist":
        extra = [
            click.Option(["--download"], is_flag=True, help="fetch MNIST with torchvision into --cache-dir"),
            click.Option(
                ["--cache-dir"], type=click.Path(path_type=Path), default=DEFAULT_CACHE_DIR,
                show_default=True, help="where --download puts MNIST",
            ),
        ]  # fmt: skip

    def run(out: Path, resume: bool, config: Path | None, **flags: Any) -> None:
        from training.report import format_report

        if flags.pop("download", False):
            flags["data_dir"] = str(_download_mnist(flags.pop("cache_dir")))
        flags.pop("cache_dir", None)
        values = read_recipe_file(config) if config else {}
        resolved = resolve(module.Config, values, flags, str(config) if config else "the command line")
        run_dir = module.train(resolved, out, resume=resume)
        if int(os.environ.get("RANK", "0")) == 0:
            split = next(s for s in module.SPLITS if run_dir.evaluation(s).is_file())
            click.echo(format_report(run_dir.read_evaluation(split)))
            click.echo(f"run directory: {run_dir.path}")

    command = click.Command(
        name,
        callback=run,
        help=(module.__doc__ or "").strip(),
        params=[
            click.Option(
                ["--out"], type=click.Path(path_type=Path), required=True, help="run directory to write"
            ),
            click.Option(["--resume"], is_flag=True, help="continue the run in --out from its last epoch"),
            click.Option(
                ["--config"], type=click.Path(path_type=Path), help="a recipe file (configs/*.yaml)"
            ),
            *click_options(module.Config),
            *extra,
        ],
    )
    command.main(args, prog_name=f"python -m training {name}", standalone_mode=False)


def _download_mnist(cache_dir: Path) -> Path:
    from training.data import download_mnist

    return download_mnist(cache_dir)


# evaluate, export -------------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--data-dir", type=click.Path(path_type=Path), required=True, help="the data the run was trained on"
)
@click.option("--split", default="test", show_default=True, help="test, val or train")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
def evaluate(run_dir: Path, data_dir: Path, split: str, device: str) -> None:
    """Print accuracy and per-class precision/recall; write them to RUN_DIR/evaluation-SPLIT.json."""
    from training.engine import resolve_device
    from training.recipes import recipe
    from training.report import evaluate_run, format_report
    from training.rundir import RunDir

    run = RunDir.open(run_dir)
    info = run.read_info()
    module = recipe(info.task)
    if split not in module.SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(module.SPLITS)}")
    resolved = resolve_device(device)
    report = evaluate_run(
        run, module.eval_batches(info, data_dir, split, resolved), split, resolved, plot=split == "test"
    )
    click.echo(format_report(report))
    click.echo(f"written: {run.evaluation(split)}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--name", help="model name in the store (default: mnist-convnet or photo-classifier)")
@click.option("--onnx", is_flag=True, help="also store the weights as an ONNX graph (ONNX Runtime serves it)")
@click.option(
    "--if-absent", is_flag=True,
    help="only when the store holds no model of this name yet (a default that never displaces one)",
)  # fmt: skip
def export(run_dir: Path, name: str | None, onnx: bool, if_absent: bool) -> None:
    """Save a finished run's best model into the BentoML model store and print its tag."""
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone exports
        return
    from training.export import export_run

    click.echo(str(export_run(run_dir, name, onnx=onnx, if_absent=if_absent)))


@cli.command("import-weights")
@click.argument("arch")
@click.argument("weights_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory to write")
@click.option(
    "--dtype", default="float32", show_default=True,
    help="stored type of the floating-point tensors, e.g. float16: half the bytes, loaded back as float32",
)  # fmt: skip
@click.option(
    "--labels-from", "entry", metavar="WEIGHTS",
    help="the torchvision weights entry (e.g. IMAGENET1K_V1) whose class names and eval preprocessing "
    "the file follows  [default: the arch's first]",
)  # fmt: skip
def import_weights(arch: str, weights_file: Path, out: Path, dtype: str, entry: str | None) -> None:
    """Write a torchvision state_dict file of ARCH as a finished run directory that `export` takes."""
    from training.importing import import_weights as import_run

    run = import_run(arch, weights_file, out, dtype=dtype, entry=entry)
    click.echo(f"run directory: {run.path}")


# summary, list-archs ----------------------------------------------------------------------------------


@cli.command()
@click.argument("arch")
@click.option("--num-classes", type=int, help="outputs of the head [default: 10 for mnist_cnn, else 1000]")
def summary(arch: str, num_classes: int | None) -> None:
    """Print a Keras-style table of ARCH's layers, output shapes and parameters (any arch of list-archs)."""
    from training.models import create_model, input_shape
    from training.report import format_summary, layer_rows

    arch = SUMMARY_ALIASES.get(arch, arch)
    classes = num_classes or (10 if arch == "mnist_cnn" else 1000)
    network = create_model(arch, classes)
    click.echo(format_summary(arch, network, layer_rows(network, input_shape(arch))))


@cli.command("list-archs")
def list_archs() -> None:
    """List the architectures by name, their input size and the weights `--weights imagenet` loads."""
    from training.models import MNIST_CNN, get_backbone
    from training.models import list_archs as names

    click.echo(f"{'arch':<28} {'input':>5}  imagenet weights")
    click.echo(f"{MNIST_CNN:<28} {28:>5}  (trained here: train mnist)")
    for name in names():
        if name == MNIST_CNN:
            continue
        try:
            backbone = get_backbone(name)
        except UserError as missing:  # timm not installed
            click.echo(f"{name:<28} {'':>5}  {missing}")
            continue
        click.echo(f"{name:<28} {backbone.preprocessing(True).input_size[0]:>5}  {backbone.weights_name}")


def main() -> None:
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cli.main(prog_name="python -m training", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as help_page:  # plain `python -m training`
        click.echo(help_page.format_message())
    except (UserError, click.ClickException) as error:
        message = error.format_message() if isinstance(error, click.ClickException) else str(error)
        click.echo(f"error: {' '.join(message.split())}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
