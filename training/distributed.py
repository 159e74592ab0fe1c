"""Training on several processes with DistributedDataParallel, started by `torchrun`, or on one without it.

`torchrun --nproc-per-node N -m training train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the same
command without torchrun is a world of one, with no process group. NCCL joins GPUs, gloo joins CPUs.

The rule for the learning rate (the linear scaling rule of Goyal et al., "Accurate, Large Minibatch
SGD", 2017): `--batch-size` is per process, so N processes train on batches of N x batch-size images,
and every learning rate of the recipe is multiplied by N. N processes then follow the same schedule as
one process with N times the batch size and N times the learning rate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, plots, evaluations and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def scale_lr(self, lr: float) -> float:
        """The linear scaling rule (see the module docstring)."""
        return lr * self.size

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DistributedDataParallel (gradients averaged over processes); itself alone."""
        if not self.distributed:
            return module
        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes (float64, so that counts stay exact)."""
        if not self.distributed:
            return list(values)
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else None
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


ONE_PROCESS = World()


def join(device: torch.device) -> World:
    """Join the process group that torchrun describes (a world of one without torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend)
        logger.info("process %d of %d joined (%s)", world.rank, size, backend)
    return world


def process_device(device: torch.device, world: World) -> torch.device:
    """One GPU per process: the local rank's; the CPU is shared."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
