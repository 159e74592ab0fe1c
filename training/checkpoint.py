"""Checkpoints as safetensors (never pickle): the best weights, and the latest state for --resume."""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.errors import UserError
from training.rundir import RunDir


def save_weights(model: nn.Module, path: Any) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path))


def load_weights(model: nn.Module, path: Any) -> None:
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as error:  # shape or key mismatch: the file belongs to another network
        raise UserError(f"{path} does not fit this model: {str(error).splitlines()[0]}") from None


def save_training_state(
    run: RunDir,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    progress: dict[str, Any],
) -> None:
    """Write the model, optimizer and scheduler state plus `progress` (epoch, best metric, phase)."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).contiguous().cpu()
    # Dropout and in-process augmentation draw from the global generators: keep their state too.
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(run.last_weights))
    state = {
        "progress": progress,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    run.last_state.write_text(json.dumps(state, indent=2) + "\n")


def read_progress(run: RunDir) -> dict[str, Any] | None:
    """The `progress` of the last saved state (phase, epoch, best metric), or None if there is none."""
    if not run.last_state.is_file():
        return None
    return json.loads(run.last_state.read_text())["progress"]


def load_training_state(
    run: RunDir,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> dict[str, Any]:
    """Restore what `save_training_state` wrote and return its `progress`."""
    if not (run.last_weights.is_file() and run.last_state.is_file()):
        raise UserError(
            f"nothing to resume in {run.path}: {run.last_weights.name} or {run.last_state.name} is missing"
        )
    tensors = load_file(str(run.last_weights))
    state = json.loads(run.last_state.read_text())
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": state["optimizer_param_groups"]})
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(tensors)
    return state["progress"]


def restore_rng_state(run: RunDir) -> None:
    """Put the global random generators back as they were when the last state was saved."""
    _set_rng_state(load_file(str(run.last_weights)))


def _set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
