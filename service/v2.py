"""ASGI front of the Open Inference Protocol (KServe "v2" REST) for every served model.

Like `front.ClassifyFront`, it answers its routes itself, in one pass, in the worker process:
- `GET /v2`: server metadata; `GET /v2/health/live`, `GET /v2/health/ready` (a worker answers only
  once its models are loaded and warmed up, as for `/readyz`);
- `GET /v2/models/{name}[/versions/{version}]`: model metadata; `GET .../ready`; `POST .../infer`.

An inference request has exactly one input:
- `images`: BYTES [N], one encoded image file per element (base64 in the JSON form, where a string
  cannot hold raw bytes; the file itself in the binary-data extension); decoded and preprocessed
  exactly as for `/classify`;
- `pixels`: FP32 [N, C, H, W], already preprocessed: resized and normalised as the model card says.
Either joins the model's batcher, as `/classify` does. The output `probabilities` is FP32 [N, classes];
requested with the classification extension (`"parameters": {"classification": k}`), it is BYTES
[N, k] of "score:index:label", best first. Errors are `{"error": "..."}` with the `InputRejected`
status; an inference's are counted in `convnet_rejected_inputs_total` like `/classify`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.catalog import CatalogEntry
from service.errors import (
    InputRejected,
    InvalidTensor,
    MethodNotAllowed,
    ModelNotLoaded,
    UnknownModel,
    UnknownRoute,
    UnsupportedMediaType,
)
from service.front import read_base64, read_body
from service.v2_tensors import (
    BYTES,
    FP32,
    HEADER_LENGTH,
    InferRequest,
    Tensor,
    encode_response,
    parse_request,
)

logger = logging.getLogger(__name__)

PREFIX = "/v2"
IMAGES, PIXELS, PROBABILITIES = "images", "pixels", "probabilities"
INPUT_DATATYPES = {IMAGES: BYTES, PIXELS: FP32}
EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORM = "bentoml"

# (model, image files or preprocessed float32 pixels (N, C, H, W)) -> probabilities (N, classes)
Infer = Callable[[str, Sequence[bytes] | np.ndarray], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class ServedModel:
    """What the protocol tells about a served model."""

    version: str
    labels: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W

    @classmethod
    def of(cls, entry: CatalogEntry) -> ServedModel:
        spec = entry.card.preprocessing
        return cls(
            version=entry.tag.version or "",
            labels=tuple(entry.card.labels),
            input_shape=(spec.channels, *spec.input_size),
        )

    def metadata(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [
                {"name": IMAGES, "datatype": BYTES, "shape": [-1]},
                {"name": PIXELS, "datatype": FP32, "shape": [-1, *self.input_shape]},
            ],
            "outputs": [{"name": PROBABILITIES, "datatype": FP32, "shape": [-1, len(self.labels)]}],
        }


@dataclass(frozen=True)
class _Route:
    action: str  # server, live, ready, metadata, model_ready or infer
    model: str | None = None
    version: str | None = None


class V2Front:
    def __init__(
        self,
        app: ASGIApp,
        *,
        served: Mapping[str, ServedModel],
        table: Sequence[str],
        max_bytes: int,
        infer: Infer,
        server: Mapping[str, str],
    ) -> None:
        """`served`: the loaded models; `table`: every route name of the model table (a name there but
        not in `served` is answered 503); `server`: the name and version for `GET /v2`."""
        self.app = app
        self.served = dict(served)
        self.table = frozenset(table)
        self.max_bytes = max_bytes
        self.infer = infer
        self.server = {**server, "extensions": EXTENSIONS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or (path != PREFIX and not path.startswith(f"{PREFIX}/")):
            await self.app(scope, receive, send)
            return
        route: _Route | None = None
        try:
            route = _route(path)
            status, body, headers = 200, *await self._answer(route, scope, receive)
        except InputRejected as error:
            if route is not None and route.action == "infer" and route.model in self.table:
                metrics.rejected_inputs_total.labels(route.model, error.reason).inc()
            logger.info("rejected %s %s: %s", scope["method"], path, error)
            status, body, headers = error.error_code, _json({"error": str(error)}), {}
        await _send(send, status, body, headers)

    async def _answer(self, route: _Route, scope: Scope, receive: Receive) -> tuple[bytes, dict[str, str]]:
        method = "POST" if route.action == "infer" else "GET"
        if scope["method"] != method:
            raise MethodNotAllowed(f"{scope['path']} takes {method}, not {scope['method']}")
        if route.action == "server":
            return _json(self.server), {}
        if route.action in ("live", "ready"):
            return _json({route.action: True}), {}
        assert route.model is not None
        model = self._model(route.model, route.version)
        if route.action == "metadata":
            return _json(model.metadata(route.model)), {}
        if route.action == "model_ready":
            return _json({"name": route.model, "ready": True}), {}
        body = await read_body(scope, receive, self.max_bytes)
        headers = Headers(scope=scope)
        encoding = headers.get("content-encoding", "identity")
        if encoding != "identity":
            raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported: send the body as is")
        request = parse_request(body, headers.get(HEADER_LENGTH))
        outputs = _requested_outputs(request)
        probabilities = await self.infer(route.model, _model_input(request))
        fields = {"model_name": route.model, "model_version": model.version}
        if request.id is not None:
            fields["id"] = request.id
        return encode_response(fields, [(_output(probabilities, model, k), binary) for k, binary in outputs])

    def _model(self, name: str, version: str | None) -> ServedModel:
        if name not in self.served:
            if name in self.table:
                raise ModelNotLoaded(f"no {name} model is loaded")
            raise UnknownModel(f"unknown model {name!r}; choose one of: {', '.join(sorted(self.table))}")
        model = self.served[name]
        if version is not None and version != model.version:
            raise UnknownModel(f"model {name!r} has no version {version!r}; it serves {model.version!r}")
        return model


def _route(path: str) -> _Route:
    parts = [part for part in path.removeprefix(PREFIX).split("/") if part]
    match parts:
        case []:
            return _Route("server")
        case ["health", ("live" | "ready") as probe]:
            return _Route(probe)
        case ["models", name, *rest]:
            version = None
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
            action = {(): "metadata", ("ready",): "model_ready", ("infer",): "infer"}.get(tuple(rest))
            if action is not None:
                return _Route(action, name, version)
    raise UnknownRoute(f"no route {path}: see the Open Inference Protocol's REST paths under {PREFIX}")


def _model_input(request: InferRequest) -> Sequence[bytes] | np.ndarray:
    """The image files or pixels of the request's one input."""
    inputs = ", ".join(f"{name!r} ({datatype})" for name, datatype in INPUT_DATATYPES.items())
    if len(request.inputs) != 1:
        raise InvalidTensor(f"{len(request.inputs)} inputs: send exactly one of {inputs}")
    (tensor,) = request.inputs
    if tensor.name not in INPUT_DATATYPES:
        raise InvalidTensor(f"unknown input {tensor.name!r}: send one of {inputs}")
    if tensor.datatype != INPUT_DATATYPES[tensor.name]:
        raise InvalidTensor(
            f"input {tensor.name!r} must be {INPUT_DATATYPES[tensor.name]}, not {tensor.datatype}"
        )
    if tensor.name == PIXELS:
        assert isinstance(tensor.data, np.ndarray)
        return tensor.data  # its shape is the model's to check
    if len(tensor.shape) != 1:
        raise InvalidTensor(
            f"input {IMAGES!r} has shape {list(tensor.shape)}: expected [N], one file per element"
        )
    files = []
    for index, element in enumerate(tensor.data):
        try:
            files.append(read_base64(element) if isinstance(element, str) else element)
        except InputRejected as error:
            raise type(error)(f"{IMAGES}[{index}]: {error}") from None
    return files


def _requested_outputs(request: InferRequest) -> list[tuple[int | None, bool]]:
    """(classification k or None, binary?) of each requested output; by default the probabilities."""
    if request.outputs is None:
        return [(None, request.binary_output)]
    for output in request.outputs:
        if output.name != PROBABILITIES:
            raise InvalidTensor(f"unknown output {output.name!r}: the model's output is {PROBABILITIES!r}")
    return [
        (output.classification, request.binary_output if output.binary is None else output.binary)
        for output in request.outputs
    ]


def _output(probabilities: np.ndarray, model: ServedModel, classification: int | None) -> Tensor:
    if classification is None:
        return Tensor(PROBABILITIES, FP32, probabilities.shape, probabilities)
    k = min(classification, len(model.labels))
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    elements = [
        f"{row[index]:f}:{index}:{model.labels[index]}"
        for row, indices in zip(probabilities, best, strict=True)
        for index in indices
    ]
    return Tensor(PROBABILITIES, BYTES, (len(probabilities), k), elements)


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def _send(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    headers = {"content-type": "application/json", **headers, "content-length": str(len(body))}
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})
