"""The Open Inference Protocol on a real `bentoml serve`, called with NVIDIA's `tritonclient` (PyPI), a
client this project did not write: health, metadata and inference with real MNIST digits and real
photos, in the JSON form and the binary-data extension, against the answers of `/classify`.

The server serves the embedded MNIST model (ONNX Runtime) and an untrained MobileNetV2 photo model
(PyTorch, 64 px): the photo checks compare the two routes, not accuracy. The `kserve` SDK's client is
not used: kserve 0.21 requires protobuf<7 (this environment has 7, for onnx), grpcio-tools, kubernetes,
pandas and fastapi; see the README's Open Inference Protocol section.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from exported import Preprocessing
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images
from tests.support.server import EMBEDDED_MNIST, Server, mnist_run, untrained_run

pytestmark = pytest.mark.e2e

TRAINED = (EMBEDDED_MNIST / "config.json").is_file()
BINARY = pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home-v2")
    server = Server(home, log=home / "serve.log", device="cpu", workers="1", photo_max_batch_size="4")
    server.export(mnist_run(home / "mnist"), "--onnx")
    server.export(untrained_run(home / "photo", "photo", "mobilenet_v2", ["ant", "bee"], images.SMALL_PHOTO))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[list[bytes], list[int]]:
    pixels, labels = images.mnist_test_digits(mnist_dir, 8)
    return [images.png(p) for p in pixels], labels


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    paths = sorted(HYMENOPTERA_DIR.glob("val/*/*.jpg"))[::40][:3]  # ants and bees
    assert len(paths) == 3, f"real photos are expected under {HYMENOPTERA_DIR}"
    return [path.read_bytes() for path in paths]


def classify(server: Server, model: str, files: list[bytes]) -> list[dict]:
    upload = [("images", (f"{i}", data, "application/octet-stream")) for i, data in enumerate(files)]
    response = httpx.post(f"{server.url}/classify/{model}", files=upload, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def images_input(files: list[bytes], binary: bool) -> triton.InferInput:
    """Raw files in the binary-data extension; base64 text in JSON, whose strings cannot hold bytes."""
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    elements = files if binary else [base64.b64encode(data).decode() for data in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def probabilities(
    client: triton.InferenceServerClient, model: str, tensor: triton.InferInput, binary: bool
) -> np.ndarray:
    output = triton.InferRequestedOutput("probabilities", binary_data=binary)
    return client.infer(model, [tensor], outputs=[output]).as_numpy("probabilities")


def test_health_and_metadata(server: Server, client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert {"binary_tensor_data", "classification"} <= set(client.get_server_metadata()["extensions"])
    assert client.is_model_ready("mnist") and client.is_model_ready("photo")
    assert not client.is_model_ready("cifar")
    metadata = client.get_model_metadata("mnist")
    assert metadata["versions"] == [httpx.get(f"{server.url}/models/mnist").json()["version"]]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in metadata["inputs"]} == {
        ("images", "BYTES", (-1,)),
        ("pixels", "FP32", (-1, 1, 28, 28)),
    }
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata("photo")["inputs"][1]["shape"] == [-1, 3, 64, 64]


@BINARY
def test_digits_get_the_top1_and_scores_of_classify(
    server: Server,
    client: triton.InferenceServerClient,
    digits: tuple[list[bytes], list[int]],
    binary: bool,
) -> None:
    files, labels = digits
    result = probabilities(client, "mnist", images_input(files, binary), binary)
    assert result.dtype == np.float32 and result.shape == (len(files), 10)
    np.testing.assert_allclose(result.sum(axis=1), 1, atol=1e-5)
    answers = classify(server, "mnist", files)
    assert [str(i) for i in result.argmax(axis=1)] == [a["predictions"][0]["label"] for a in answers]
    np.testing.assert_allclose(result.max(axis=1), [a["predictions"][0]["score"] for a in answers], atol=1e-5)
    if TRAINED:
        assert result.argmax(axis=1).tolist() == labels


@BINARY
def test_classification_extension_answers_score_index_label(
    server: Server, client: triton.InferenceServerClient, photos: list[bytes], binary: bool
) -> None:
    output = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
    result = client.infer("photo", [images_input(photos, binary)], outputs=[output])
    top = result.as_numpy("probabilities")
    assert top.shape == (len(photos), 2)
    answers = classify(server, "photo", photos)
    for row, answer in zip(top, answers, strict=True):
        decoded = [
            (element.decode() if isinstance(element, bytes) else element).split(":") for element in row
        ]
        expected = [p["label"] for p in answer["predictions"]]
        assert [label for _, _, label in decoded] == expected
        assert [["ant", "bee"][int(index)] for _, index, _ in decoded] == expected
        assert float(decoded[0][0]) == pytest.approx(answer["predictions"][0]["score"], abs=1e-5)


def test_default_outputs_come_back_as_binary_data(
    server: Server, client: triton.InferenceServerClient, photos: list[bytes]
) -> None:
    """Without `outputs`, tritonclient asks for every output in binary (`binary_data_output`)."""
    result = client.infer("photo", [images_input(photos, binary=True)])
    assert result.get_output("probabilities")["parameters"]["binary_data_size"] == len(photos) * 2 * 4
    top1 = [["ant", "bee"][i] for i in result.as_numpy("probabilities").argmax(axis=1)]
    assert top1 == [a["predictions"][0]["label"] for a in classify(server, "photo", photos)]


@BINARY
@pytest.mark.parametrize("model", ["mnist", "photo"], ids=["mnist-onnxruntime", "photo-pytorch"])
def test_preprocessed_pixels_give_the_probabilities_of_the_files(
    server: Server,
    client: triton.InferenceServerClient,
    digits: tuple[list[bytes], list[int]],
    photos: list[bytes],
    model: str,
    binary: bool,
) -> None:
    """FP32 pixels made with the served model card's own eval transform, client side. The photos go
    as PNG: the server decodes large JPEGs at a reduced DCT scale, which a full decode would not match."""
    if model == "mnist":
        files = digits[0]
    else:
        files = [images.encode(Image.open(io.BytesIO(data)).convert("RGB")) for data in photos]
    card = Preprocessing.model_validate(httpx.get(f"{server.url}/models/{model}").json()["preprocessing"])
    transform = card.eval_transform()
    pixels = np.stack([transform(Image.open(io.BytesIO(data))).numpy() for data in files])
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    from_pixels = probabilities(client, model, tensor, binary)
    from_files = probabilities(client, model, images_input(files, binary=True), binary=True)
    np.testing.assert_allclose(from_pixels, from_files, atol=1e-5)


def test_errors_reach_the_client_with_status_and_message(
    server: Server, client: triton.InferenceServerClient, digits: tuple[list[bytes], list[int]]
) -> None:
    def rejected() -> float:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "convnet_rejected_inputs_total" and sample.labels["model"] == "mnist"
        )

    before = rejected()
    wrong_shape = triton.InferInput("pixels", [1, 3, 28, 28], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3, 28, 28), np.float32))
    not_an_image = images_input([b"hello"], binary=True)
    for model, tensor, status, words in [
        ("mnist", wrong_shape, "400", "this model takes [N, 1, 28, 28]"),
        ("mnist", not_an_image, "400", "images[0]: not an image"),
        ("cifar", not_an_image, "404", "unknown model 'cifar'"),
    ]:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [tensor])
        assert caught.value.status() == status and words in caught.value.message()
    assert rejected() == before + 2  # not the unknown model: no label for a name outside the table
    assert probabilities(client, "mnist", images_input(digits[0][:1], True), True).shape == (1, 10)
