"""`import-weights`: a torchvision state_dict file becomes a finished run that loads back and exports,
with torchvision's class names and eval preprocessing; what does not fit is refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchvision.models import MobileNet_V3_Small_Weights

from exported import load_model
from tests.service.images import IMAGENET
from tests.support.cli import assert_one_line_error, invoke
from training.export import export_run
from training.models import create_model
from training.rundir import RunDir

ARCH = "mobilenet_v3_small"  # the smallest torchvision network with ImageNet weights (2.5 M parameters)


@pytest.fixture(scope="module")
def state_dict_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict of ARCH with random weights and BatchNorm statistics, as torch.save writes it."""
    torch.manual_seed(0)
    network = create_model(ARCH, 1000)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("weights") / "weights.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_state_dict_round_trips_in_the_chosen_dtype(
    state_dict_file: Path, tmp_path: Path, dtype: torch.dtype
) -> None:
    name = str(dtype).removeprefix("torch.")
    result = invoke("import-weights", ARCH, state_dict_file, "--out", tmp_path / "run", "--dtype", name)
    assert result.returncode == 0, result.stderr
    run = RunDir.open_finished(tmp_path / "run")  # finished: export takes it
    info = run.read_info()
    assert info.task == "photo" and info.arch == ARCH
    assert info.labels == MobileNet_V3_Small_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(info.labels) == 1000 and info.labels[309:311] == ["bee", "ant"]
    assert info.preprocessing == IMAGENET
    assert info.config["weights_file"] == "weights.pth" and info.config["dtype"] == name

    original = torch.load(state_dict_file, weights_only=True)
    stored = load_file(run.weights)
    assert stored.keys() == original.keys()
    for key, tensor in original.items():
        expected = tensor.to(dtype) if tensor.is_floating_point() else tensor
        assert stored[key].dtype == expected.dtype and torch.equal(stored[key], expected), key

    network = create_model(ARCH, 1000)
    run.load_weights(network)  # float16 on disk, float32 in the network
    for key, tensor in network.state_dict().items():
        assert tensor.dtype == original[key].dtype, key
        assert torch.equal(tensor, stored[key].to(tensor.dtype)), key

    exported = load_model(str(export_run(run.path)))
    assert exported.tag.name == "photo-classifier"
    assert exported.card.labels == info.labels and exported.card.preprocessing == IMAGENET
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(exported.model(pixels), network.eval()(pixels))


def test_importing_the_same_file_again_rewrites_the_same_run(state_dict_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    for _ in range(2):
        assert invoke("import-weights", ARCH, state_dict_file, "--out", out).returncode == 0
    assert_one_line_error(
        invoke("import-weights", ARCH, state_dict_file, "--out", out, "--dtype", "float16"),
        f"{out} already holds another run",
    )


@pytest.mark.parametrize(
    ("arch", "options", "expected"),
    [
        ("resnet18", [], "does not fit resnet18 with 1000 classes"),
        ("mnist_cnn", [], "'mnist_cnn' is not a torchvision classification architecture"),
        (ARCH, ["--labels-from", "IMAGENET1K_V9"], "no torchvision weights 'IMAGENET1K_V9'; choose one of"),
        (ARCH, ["--dtype", "int8"], "unknown dtype 'int8'; choose one of: float32, float16, bfloat16"),
    ],
)
def test_what_does_not_fit_is_refused_with_one_line(
    state_dict_file: Path, tmp_path: Path, arch: str, options: list[str], expected: str
) -> None:
    result = invoke("import-weights", arch, state_dict_file, "--out", tmp_path / "run", *options)
    assert_one_line_error(result, expected)
    assert not (tmp_path / "run").exists()
