"""Phase 1 (feature extraction) with and without the feature cache, on the real hymenoptera photos.

    .venv/bin/python -m bench.finetune_bench --arch mobilenet_v2 --epochs 5 --limit 40

Both runs train the head for the same epochs without augmentation; the uncached one runs the frozen
backbone on every image every epoch. Prints the wall time of each phase 1 (feature extraction
included) and the ratio of the mean epoch times, which does not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from training.recipes.finetune import Config, train

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench")


def phase_one(config: Config) -> tuple[float, float]:
    """Wall seconds of the whole run and mean seconds of a phase 1 epoch (train + validation)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = train(config, Path(out))
        wall = time.perf_counter() - start
        epochs = [row.seconds for row in run.read_metrics()]
    return wall, sum(epochs) / len(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    weights = ROOT.parent / "shared/weights/mobilenet_v2_imagenet1k_from_tflite_quant.pth"
    parser.add_argument("--weights", default=str(weights))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/hymenoptera"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=40, help="photos per class and split")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)

    common = dict(
        arch=args.arch,
        weights=args.weights,
        data_dir=args.data_dir,
        limit=args.limit,
        feature_epochs=args.epochs,
        finetune_epochs=0,
        augment=False,
    )
    cached_wall, cached_epoch = phase_one(Config(**common, feature_augment=False))
    uncached_wall, uncached_epoch = phase_one(Config(**common, feature_augment=True))
    logger.info(
        "%s, %d epochs on %d photos/class: cached %.1fs (%.3fs/epoch), uncached %.1fs (%.3fs/epoch); "
        "epoch time ratio uncached/cached %.0fx, whole phase %.1fx",
        args.arch, args.epochs, args.limit, cached_wall, cached_epoch, uncached_wall, uncached_epoch,
        uncached_epoch / cached_epoch, uncached_wall / cached_wall,
    )  # fmt: skip


if __name__ == "__main__":
    main()
