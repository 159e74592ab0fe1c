"""The exported-model contract: save, find, load with verified files, and the ONNX graph's parity."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
import torch
from safetensors.torch import load_file, save_file

from exported import ModelCard, create_model, find_model, load_model, save_model
from exported.onnx import export_onnx
from exported.preprocessing import MNIST_PREPROCESSING
from exported.store import ONNX_FILE, WEIGHTS_FILE, TamperedModel, file_sha256

LABELS = [str(i) for i in range(10)]


def card() -> ModelCard:
    return ModelCard(
        task="mnist",
        arch="mnist_cnn",
        labels=LABELS,
        preprocessing=MNIST_PREPROCESSING,
        training_config={},
        data_sha256={},
    )


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file(create_model("mnist_cnn", 10).state_dict(), path)
    return path


def test_saved_model_is_found_and_loads_the_same_network(weights: Path) -> None:
    tag = save_model("store-test", weights, card())
    assert tag.version == file_sha256(weights)[:16]
    assert save_model("store-test", weights, card()) == tag  # the same weights again: a no-op
    found_tag, found_card = find_model(f"{tag.name}:latest")
    assert found_tag == tag and found_card.labels == LABELS
    assert found_card.files_sha256 == {WEIGHTS_FILE: file_sha256(weights)}
    loaded = load_model(str(tag))
    reference = create_model("mnist_cnn", 10)
    reference.load_state_dict(load_file(weights))
    images = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded.model(images), reference.eval()(images))
    assert find_model("store-test-missing:latest") is None


def test_a_file_changed_after_export_refuses_to_load_naming_the_file(weights: Path, tmp_path: Path) -> None:
    tag = save_model("tampered", weights, card())
    stored = Path(bentoml.models.get(tag).path_of(WEIGHTS_FILE))
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(TamperedModel, match=rf"{stored}.*not the {file_sha256(weights)} recorded at export"):
        load_model(str(tag))


def test_onnx_graph_matches_the_network_and_is_stored_beside_the_weights(
    weights: Path, tmp_path: Path
) -> None:
    model = create_model("mnist_cnn", 10)
    model.load_state_dict(load_file(weights))
    graph = tmp_path / "model.onnx"
    assert export_onnx(model, MNIST_PREPROCESSING, graph) <= 1e-4
    without = save_model("with-onnx", weights, card())
    with_graph = save_model("with-onnx", weights, card(), onnx=graph)  # adds the graph to the same version
    assert with_graph == without
    _, stored_card = find_model(str(with_graph))
    assert stored_card.files_sha256[ONNX_FILE] == file_sha256(graph)
