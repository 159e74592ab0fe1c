"""A classifier trained elsewhere, as a finished run directory: `python -m training import-weights`.

The weights are a torchvision state_dict file that fits the architecture with its ImageNet head (a
port of another framework's weights, a checkpoint of another project). The class names and the eval
preprocessing come from the torchvision weights entry the file follows (read from torchvision's meta:
nothing is downloaded). `dtype` stores the floating-point tensors in a smaller type (float16 halves
the file); evaluation, export and the service load them into the float32 network. `export` then
stores the run like a trained one, as a photo model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from exported.store import file_sha256
from training.errors import UserError
from training.models import create_model, read_state_dict, weights_preprocessing
from training.rundir import RunDir, RunInfo

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

TASK = "photo"  # exported as photo-classifier, served at /classify/photo
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torchvision_weights(arch: str, entry: str | None = None) -> WeightsEnum:
    """The torchvision weights entry of `arch` named `entry` (e.g. IMAGENET1K_V1); default: the first,
    the recipe a ported or local file is expected to follow (as `finetune` assumes for a file)."""
    from torchvision.models import get_model_weights

    try:
        entries = get_model_weights(arch)
    except ValueError:
        raise UserError(
            f"{arch!r} is not a torchvision classification architecture with weights "
            "(`python -m training list-archs` shows them)"
        ) from None
    if entry is None:
        return next(iter(entries))
    try:
        return entries[entry]
    except KeyError:
        names = ", ".join(weights.name for weights in entries)
        raise UserError(f"{arch} has no torchvision weights {entry!r}; choose one of: {names}") from None


def import_weights(
    arch: str, weights_file: Path, out: Path, *, dtype: str = "float32", entry: str | None = None
) -> RunDir:
    """Write `weights_file` (a state_dict of `arch`) into the finished run directory `out`."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    weights = torchvision_weights(arch, entry)
    labels = list(weights.meta["categories"])
    network = create_model(arch, len(labels))
    try:
        network.load_state_dict(read_state_dict(weights_file))
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors: another network
        message = " ".join(str(error).split())[:300]
        raise UserError(f"{weights_file} does not fit {arch} with {len(labels)} classes: {message}") from None
    info = RunInfo(
        task=TASK,
        arch=arch,
        labels=labels,
        preprocessing=weights_preprocessing(weights),
        config={
            "weights_file": weights_file.name,
            "weights_sha256": file_sha256(weights_file),
            "labels_and_preprocessing": str(weights),
            "dtype": dtype,
        },
        data_sha256={},
    )
    run = RunDir.create(out)
    if run.info_file.is_file() and run.read_info() != info:  # the same import again rewrites the same files
        raise UserError(f"{out} already holds another run; choose a new --out or remove it")
    run.write_info(info)
    run.save_weights(network, DTYPES[dtype])
    run.finish()
    return run
