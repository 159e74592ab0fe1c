"""One MNIST training epoch through the project's loop against a plain PyTorch loop of the same work.

    .venv/bin/python -m bench.train_bench [--repeats 3]

Both train the MNIST ConvNet (AdamW, one-cycle learning rate, batches of 128, no augmentation) for
one epoch on the recipe's 55,000 real training images, on the same cores, alternately. The project's
epoch is `engine.train_one_epoch` over `recipes.mnist.batches` (progress bar, metrics, the shuffled
in-memory batches); the plain loop slices a shuffled tensor and steps. Epochs are timed in CPU seconds
of this process (all its threads), which other programs on the machine disturb far less than wall
time. The ratio of the best epochs (project / plain) is the loop's overhead; the target is at most 1.2.
Results go to bench/results/train_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from training.data import IdxSplit, load_idx_split, split_train_val
from training.distributed import World
from training.engine import MixedPrecision, train_one_epoch
from training.models import create_model
from training.recipes import mnist

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH = 128
TARGET = 1.2
logger = logging.getLogger("bench")


def optimizer_and_schedule(
    steps: int,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = create_model("mnist_cnn", 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    return model, optimizer, scheduler


def project_epoch(split: IdxSplit) -> float:
    batches = mnist.batches(split, BATCH, seed=1)
    model, optimizer, scheduler = optimizer_and_schedule(len(batches))
    start = time.process_time()
    train_one_epoch(
        model, batches, optimizer, MixedPrecision(torch.device("cpu")), World(), scheduler=scheduler
    )
    return time.process_time() - start


def plain_epoch(split: IdxSplit) -> float:
    """The textbook loop: shuffle, slice, normalise, forward, backward, step."""
    images, labels = split.images, split.labels
    steps = -(-len(labels) // BATCH)
    model, optimizer, scheduler = optimizer_and_schedule(steps)
    model.train()
    start = time.process_time()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    for first in range(0, len(labels), BATCH):
        index = order[first : first + BATCH]
        batch = (images[index].unsqueeze(1).float().div_(255) - 0.1307) / 0.3081
        loss = F.cross_entropy(model(batch), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each loop, alternately")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)

    train, _ = split_train_val(load_idx_split(args.data_dir, "train"), 5000, 0)
    small = train.subset(torch.arange(4096))
    plain_epoch(small), project_epoch(small)  # warm up the allocator and the kernels
    times: dict[str, list[float]] = {"plain": [], "project": []}
    for repeat in range(args.repeats):
        times["plain"].append(plain_epoch(train))
        times["project"].append(project_epoch(train))
        logger.info(
            "repeat %d: plain %.2f CPU s, project %.2f CPU s",
            repeat + 1,
            times["plain"][-1],
            times["project"][-1],
        )
    ratio = min(times["project"]) / min(times["plain"])
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_average_after": round(os.getloadavg()[0], 2),
        "images": len(train),
        "batch_size": BATCH,
        "seconds": times,
        "images_per_cpu_second": {k: round(len(train) / min(v), 1) for k, v in times.items()},
        "ratio_project_to_plain": round(ratio, 3),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "train_bench.md").write_text(markdown(result))
    logger.info("ratio project/plain %.3f (target <= %.1f)", ratio, TARGET)


def markdown(result: dict) -> str:
    rows = "\n".join(
        f"| {name} | {', '.join(f'{s:.2f}' for s in seconds)} | {min(seconds):.2f} | "
        f"{result['images_per_cpu_second'][name]:.0f} |"
        for name, seconds in result["seconds"].items()
    )
    return (
        f"# Training loop benchmark: one MNIST epoch, project vs plain PyTorch\n\n"
        f"{result['when']} on {result['machine']}; load average {result['load_average_after']} at the end.\n"
        f"{result['images']:,} real MNIST training images, batches of {result['batch_size']}, "
        f"AdamW + one-cycle, no augmentation, the same network and cores, alternately.\n\n"
        f"| loop | epoch CPU seconds | best | images per CPU second |\n|---|---|---|---|\n{rows}\n\n"
        f"Ratio (best project epoch / best plain epoch): **{result['ratio_project_to_plain']:.3f}** "
        f"(target <= {result['target']}).\n\nCommand: `python -m bench.train_bench`\n"
    )


if __name__ == "__main__":
    main()
