"""The ImageNet MobileNetV2 shipped in models/mobilenet-v2-imagenet: what `import-weights` makes of the
weights beside the project, stored in float16, and what that costs on the real ant and bee photos."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.models import MobileNet_V2_Weights

from exported.store import file_sha256
from tests.service.images import IMAGENET
from tests.support.cli import invoke
from tests.support.server import EMBEDDED_PHOTO as EMBEDDED
from training.models import create_model
from training.rundir import RunDir

IMAGENET_ANT, IMAGENET_BEE = 310, 309
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def embedded() -> RunDir:
    return RunDir.open_finished(EMBEDDED)


def test_the_run_is_an_imagenet_classifier_in_float16(embedded: RunDir, mobilenet_file: Path) -> None:
    info = embedded.read_info()
    assert info.task == "photo" and info.arch == "mobilenet_v2"  # exported as photo-classifier
    assert info.labels == MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # torchvision's order
    assert len(info.labels) == 1000
    assert (info.labels[IMAGENET_ANT], info.labels[IMAGENET_BEE]) == ("ant", "bee")
    assert info.preprocessing == IMAGENET  # resize 256, centre crop 224, ImageNet mean and std
    assert info.config["weights_sha256"] == file_sha256(mobilenet_file)
    weights = load_file(embedded.weights)
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert embedded.weights.stat().st_size < 7.5e6
    assert (EMBEDDED / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]


def test_the_committed_run_is_what_the_command_writes(mobilenet_file: Path, tmp_path: Path) -> None:
    result = invoke(
        "import-weights", "mobilenet_v2", mobilenet_file, "--dtype", "float16",
        "--labels-from", "IMAGENET1K_V1", "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "progress.json"):
        assert file_sha256(tmp_path / "run" / name) == file_sha256(EMBEDDED / name), name


@pytest.mark.slow
def test_float16_storage_costs_nothing_measurable_on_the_ant_and_bee_photos(
    embedded: RunDir, mobilenet_file: Path, photos: Path
) -> None:
    """fp32 source weights against the stored fp16 ones loaded back, on the 153 validation photos."""
    paths = sorted((photos / "val").glob("*/*.jpg"))
    targets = torch.tensor([IMAGENET_ANT if p.parent.name == "ants" else IMAGENET_BEE for p in paths])
    transform = IMAGENET.eval_transform()
    pixels = torch.stack([transform(Image.open(path)) for path in paths])

    def probabilities(state_dict: dict[str, torch.Tensor] | None) -> torch.Tensor:
        network = create_model("mobilenet_v2", 1000)
        if state_dict is None:
            embedded.load_weights(network)
        else:
            network.load_state_dict(state_dict)
        with torch.inference_mode():
            return torch.cat([network.eval()(batch).softmax(1) for batch in pixels.split(32)])

    fp32 = probabilities(torch.load(mobilenet_file, weights_only=True))
    fp16 = probabilities(None)
    top5 = {name: p.topk(5, dim=1).indices for name, p in (("fp32", fp32), ("fp16", fp16))}
    top1_correct = {name: int((t[:, 0] == targets).sum()) for name, t in top5.items()}
    top5_correct = {name: int((t == targets[:, None]).any(1).sum()) for name, t in top5.items()}
    agreement = int((fp32.argmax(1) == fp16.argmax(1)).sum())
    largest = float((fp32 - fp16).abs().max())
    logger.info(
        "%d photos: top-1 %s, top-5 %s, top-1 agreement %d, max |Δp| %.4f",
        len(paths), top1_correct, top5_correct, agreement, largest,
    )  # fmt: skip

    assert len(paths) == 153
    assert top1_correct["fp32"] >= 0.75 * len(paths) and top5_correct["fp32"] >= 0.9 * len(paths)
    assert abs(top1_correct["fp16"] - top1_correct["fp32"]) <= 1
    assert abs(top5_correct["fp16"] - top5_correct["fp32"]) <= 1
    assert agreement >= len(paths) - 1
    assert largest < 0.05
