"""IDX datasets (generated files), their batches split across processes, and ImageFolder photos."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import idx_bytes
from training.data import (
    IDX_PRESETS,
    IdxBatches,
    eval_loader,
    find_split,
    find_splits,
    idx_preset,
    load_idx_split,
    read_labels_file,
    split_train_val,
)
from training.distributed import World
from training.errors import UserError
from training.transforms import AffineAugment


@pytest.fixture
def idx_copy(idx_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the generated IDX folder, to break one file at a time."""
    return Path(shutil.copytree(idx_dir, tmp_path / "idx"))


def test_idx_splits_are_read_whole(idx_dir: Path) -> None:
    train, test = load_idx_split(idx_dir, "train"), load_idx_split(idx_dir, "test")
    assert (len(train), len(test)) == (1200, 200)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (28, 28)
    assert set(train.labels.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("missing", "IDX file not found"),
        ("truncated", "corrupt IDX file"),
        ("labels as images", "not an IDX file of the expected kind"),
        ("32x32", "expected 28x28"),
    ],
)
def test_a_bad_idx_file_is_named(idx_copy: Path, breakage: str, expected: str) -> None:
    images = idx_copy / "t10k-images-idx3-ubyte.gz"
    if breakage == "missing":
        images.unlink()
    elif breakage == "truncated":
        images.write_bytes(images.read_bytes()[:500])
    elif breakage == "labels as images":
        shutil.copy(idx_copy / "t10k-labels-idx1-ubyte.gz", images)
    else:
        images.write_bytes(gzip.compress(idx_bytes(np.zeros((200, 32, 32)))))
    with pytest.raises(UserError, match=expected) as error:
        load_idx_split(idx_copy, "test")
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)


def test_labels_beyond_the_class_names_are_refused(idx_dir: Path) -> None:
    with pytest.raises(UserError, match=r"label 9 but only 5 class names \(labels must be 0-4\)"):
        load_idx_split(idx_dir, "test", num_classes=5)


def test_presets_name_their_classes_and_allow_flips_only_where_the_data_does() -> None:
    assert idx_preset("mnist").labels == tuple("0123456789")
    assert idx_preset("fashion-mnist").labels[9] == "Ankle boot"
    assert {name: preset.augment.hflip > 0 for name, preset in IDX_PRESETS.items()} == {
        "mnist": False, "fashion-mnist": True, "kmnist": False,
    }  # fmt: skip
    assert all(len(preset.labels) == 10 for preset in IDX_PRESETS.values())
    with pytest.raises(
        UserError, match="unknown dataset 'cifar'; choose one of: mnist, fashion-mnist, kmnist"
    ):
        idx_preset("cifar")


def test_labels_file(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\nbird\n")
    assert read_labels_file(names) == ["cat", "dog", "bird"]
    names.write_text("cat\n")
    with pytest.raises(UserError, match="at least two class names, found 1"):
        read_labels_file(names)
    with pytest.raises(UserError, match="labels file not found"):
        read_labels_file(tmp_path / "nowhere.txt")


def test_validation_split_is_fixed_by_the_seed(idx_dir: Path) -> None:
    train = load_idx_split(idx_dir, "train")
    (a, val_a), (_, val_b) = split_train_val(train, 200, 0), split_train_val(train, 200, 0)
    assert torch.equal(val_a.images, val_b.images) and len(a) == 1000
    assert not torch.equal(split_train_val(train, 200, 1)[1].labels, val_a.labels)
    with pytest.raises(UserError, match="--val-size must be between 1 and 1199, got 1200"):
        split_train_val(train, 1200, 0)


def test_processes_share_every_batch_exactly(idx_dir: Path) -> None:
    """Two processes' shards of each global batch are the one-process batch, augmentation included."""
    split = load_idx_split(idx_dir, "train")
    augment = AffineAugment(rotation=10, shift=0.1, zoom=0.1, hflip=0)

    def batches(world: World) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(IdxBatches(split, 64, 0.1, 0.3, seed=3, augment=augment, world=world))

    whole = batches(World())
    halves = [batches(World(rank, 2)) for rank in (0, 1)]
    assert len(whole) == len(halves[0]) == 19  # 1200 = 18 x 64 + 48
    for (images, labels), first, second in zip(whole, *halves, strict=True):
        torch.testing.assert_close(torch.cat([first[0], second[0]]), images)
        assert torch.equal(torch.cat([first[1], second[1]]), labels)


def test_several_processes_leave_out_a_last_batch_too_small_to_share(idx_dir: Path) -> None:
    split = load_idx_split(idx_dir, "test").subset(torch.arange(65))  # 64 + 1
    assert len(IdxBatches(split, 64, 0.0, 1.0)) == 2
    assert len(IdxBatches(split, 64, 0.0, 1.0, world=World(0, 2))) == 1
    assert sum(len(labels) for _, labels in IdxBatches(split, 64, 0.0, 1.0, world=World(1, 2))) == 32


def test_image_folders_skip_the_gif_placeholder(photos: Path) -> None:
    train, val = find_splits(photos)
    assert (len(train.samples), len(val.samples), train.classes) == (244, 153, ["ants", "bees"])
    names = {Path(path).name for path, _ in train.samples}
    assert "imageNotFound.gif" not in names
    assert {"ant photos.jpg", "formica.jpeg"} <= names
    few = find_split(photos, "val", limit=3)
    assert [label for _, label in few.samples] == [0, 0, 0, 1, 1, 1]


def test_image_folder_problems_are_named(fake_photos: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no train/ folder"):
        find_splits(fake_photos / "train")
    with pytest.raises(UserError, match="data directory not found"):
        find_splits(tmp_path / "nowhere")
    broken = Path(shutil.copytree(fake_photos, tmp_path / "broken"))
    (broken / "val" / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        find_splits(broken)
    (broken / "val" / "dogs" / "broken.jpg").unlink()
    shutil.rmtree(broken / "val" / "cats")
    with pytest.raises(UserError, match="different classes"):
        find_splits(broken)


def test_evaluation_shards_cover_every_image_once(fake_photos: Path) -> None:
    dataset = find_split(fake_photos, "val").dataset(lambda image: torch.zeros(1))
    seen = [
        len(labels)
        for rank in (0, 1)
        for _, labels in eval_loader(dataset, 4, workers=0, device=torch.device("cpu"), world=World(rank, 2))
    ]
    assert sum(seen) == len(dataset) == 6
