"""The service's OpenAPI document (`GET /docs.json`): BentoML's, completed with what the service answers.

BentoML documents each `@bentoml.api` route with its request body, its 200 answer and BentoML's own
error bodies, and knows nothing of the routes answered outside its API handling. `amend` corrects and
completes that document:
- each `/classify` operation answers the refusals of `front.ClassifyFront`: `{"error", "reason"}` under
  the statuses and reasons of `errors.py`, with `Retry-After` where the error sends it;
- `GET /models` and `GET /models/{model}`, the explanation routes (`explain_front.ExplainFront`) and the
  Open Inference Protocol's routes under `/v2` (`v2.V2Front`, errors `{"error"}` only) are added.
`DocumentFront` answers `GET /docs.json` with the amended document, built on first use.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import (
    BodyTooLarge,
    CorruptImage,
    EmptyImage,
    InputRejected,
    InvalidBase64,
    InvalidTensor,
    MalformedRequest,
    ModelNotLoaded,
    MoreThanOneImage,
    NoImages,
    NotAFile,
    NotAnImage,
    NotExplainable,
    Overloaded,
    TooBusy,
    TooManyImages,
    TooManyPixels,
    UnexpectedField,
    UnknownLayer,
    UnknownModel,
    UnknownTarget,
    UnsupportedImageMode,
    UnsupportedMediaType,
)
from service.explain_front import EXPLAIN, FEATURES, FILE_FIELD, LAYER, TARGET
from service.front import BASE64_SUFFIX, PREFIX
from service.schemas import Explanation, FeatureMaps, ModelInfo
from service.v2 import EXTENSIONS, IMAGES, INPUT_DATATYPES, PIXELS, PROBABILITIES
from service.v2 import PREFIX as V2_PREFIX
from service.v2_tensors import BYTES, FP32, HEADER_LENGTH

DOCUMENT_PATH = "/docs.json"
EXAMPLE_IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="  # 1x1 PNG
)
MODELS_TAG, EXPLAIN_TAG, V2_TAG = "Models", "Explanations", "Open Inference Protocol"
REF = "#/components/schemas/{model}"
Schema = dict[str, Any]
Errors = Iterable[type[InputRejected]]

# What can go wrong with a request that sends images, on every route that takes them.
_IMAGE_ERRORS: tuple[type[InputRejected], ...] = (
    MalformedRequest,
    BodyTooLarge,
    UnsupportedMediaType,
    NoImages,
    TooManyImages,
    EmptyImage,
    NotAnImage,
    CorruptImage,
    UnsupportedImageMode,
    TooManyPixels,
    TooBusy,
    Overloaded,
)
UPLOAD_ERRORS = (*_IMAGE_ERRORS, NotAFile, UnexpectedField)
BASE64_ERRORS = (*_IMAGE_ERRORS, InvalidBase64)
# One image file in the field `image`, on a queue of its own (no latency budget: never `Overloaded`).
_EXPLANATION_ERRORS = (
    *(error for error in UPLOAD_ERRORS if error is not Overloaded),
    MoreThanOneImage,
    NotExplainable,
    UnknownModel,
    ModelNotLoaded,
)
V2_MODEL_ERRORS = (UnknownModel, ModelNotLoaded)
V2_INFER_ERRORS = (*_IMAGE_ERRORS, *V2_MODEL_ERRORS, InvalidBase64, InvalidTensor)


def amend(document: Mapping[str, Any], *, served: Mapping[str, str]) -> dict[str, Any]:
    """A copy of BentoML's `document` with the service's errors and routes; `served`: the loaded models'
    route names and versions."""
    document = json.loads(json.dumps(document))
    for path, item in document["paths"].items():
        if path.startswith(PREFIX):
            operation = item["post"]
            operation["requestBody"]["required"] = True
            errors = UPLOAD_ERRORS
            if path.endswith(BASE64_SUFFIX):
                errors = BASE64_ERRORS
                operation["requestBody"]["content"]["application/json"]["example"] = {
                    "images": [EXAMPLE_IMAGE]
                }
            operation["responses"] = {
                "200": operation["responses"]["200"],
                **_responses(_by_status(errors), _rejection, retry_after=True),
                "500": operation["responses"]["500"],
            }
    model_info = ModelInfo.model_json_schema(ref_template=REF)
    document["components"]["schemas"].update({**model_info.pop("$defs"), "ModelInfo": model_info})
    document["components"]["schemas"].update(V2_SCHEMAS)
    explanations = models_json_schema(
        [(model, "serialization") for model in (Explanation, FeatureMaps)], ref_template=REF
    )[1]
    document["components"]["schemas"].update(explanations["$defs"])
    document["paths"].update(_models_paths(served))
    document["paths"].update(_explanation_paths(served))
    document["paths"].update(_v2_paths(served))
    document["tags"] += [
        {"name": MODELS_TAG, "description": "The loaded models' cards."},
        {"name": EXPLAIN_TAG, "description": "What a model sees in one image: Grad-CAM, feature maps."},
        {"name": V2_TAG, "description": "KServe v2 REST: every loaded model, through the same batchers."},
    ]
    return document


class DocumentFront:
    """ASGI middleware: `GET /docs.json` is `document()`, computed once; anything else goes on."""

    def __init__(self, app: ASGIApp, *, document: Callable[[], Mapping[str, Any]]) -> None:
        self.app = app
        self.document = document
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != DOCUMENT_PATH:
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(self.document(), separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})


def _by_status(errors: Errors) -> dict[int, list[type[InputRejected]]]:
    statuses: dict[int, list[type[InputRejected]]] = defaultdict(list)
    for error in errors:
        statuses[int(error.error_code)].append(error)
    return statuses


def _responses(
    statuses: Mapping[int, Sequence[type[InputRejected]]],
    body: Callable[[list[str]], Schema],
    *,
    retry_after: bool,
) -> dict[str, Schema]:
    """One response per status: its reasons and the error body; with `retry_after` (a front that sends
    the errors' headers), `Retry-After` where its errors send it."""
    responses = {}
    for status in sorted(statuses):
        reasons = [error.reason for error in statuses[status]]
        response: Schema = {
            "description": f"{HTTPStatus(status).phrase}: {', '.join(reasons)}",
            "content": {"application/json": {"schema": body(reasons)}},
        }
        retry = [("Retry-After" in error.headers) for error in statuses[status]]
        if retry_after and any(retry):
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before trying again",
                    "required": all(retry),
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[str(status)] = response
    return responses


def _rejection(reasons: list[str]) -> Schema:
    """The body of an `InputRejected` (`errors.InputRejected.to_response`)."""
    return _object(error={"type": "string"}, reason={"type": "string", "enum": reasons})


def _v2_error(_: list[str]) -> Schema:
    """The Open Inference Protocol's error body."""
    return _object(error={"type": "string"})


def _object(optional: Sequence[str] = (), **properties: Schema) -> Schema:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties}


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _json(schema: Schema) -> Schema:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _get(tag: str, summary: str, ok: Schema, errors: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    return {"get": {"tags": [tag], "summary": summary, "responses": {"200": ok, **(errors or {})}, **extra}}


def _path_parameter(name: str, values: Iterable[str]) -> Schema:
    """A path parameter that takes `values` (or any string when there are none)."""
    schema: Schema = {"type": "string"}
    if values := sorted(set(values)):
        schema["enum"] = values
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _models_paths(served: Mapping[str, str]) -> dict[str, Schema]:
    not_found = _responses({404: [UnknownModel, ModelNotLoaded]}, _rejection, retry_after=True)
    return {
        "/models": _get(
            MODELS_TAG, "The loaded models", _json({"type": "array", "items": _ref("ModelInfo")})
        ),
        "/models/{model}": _get(
            MODELS_TAG,
            "One model's card: labels, preprocessing, accuracy",
            _json(_ref("ModelInfo")),
            not_found,
            parameters=[_path_parameter("model", served)],
        ),
    }


def _explanation_paths(served: Mapping[str, str]) -> dict[str, Schema]:
    """`POST /explain/{model}` and `POST /features/{model}`: one image, one optional query parameter."""
    image = {"type": "string", "format": "binary", "description": "one image file"}
    body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": [FILE_FIELD], "properties": {FILE_FIELD: image}}
            }
        },
    }
    paths = {}
    for prefix, name, summary, (parameter, meaning), answer, error in (
        (
            EXPLAIN,
            "explain",
            "Grad-CAM of one image for a class: where in the image the evidence for it lies",
            (TARGET, "a class label or index (default: the top class)"),
            Explanation,
            UnknownTarget,
        ),
        (
            FEATURES,
            "features",
            "One convolution's feature maps of one image, beside the Sobel edge maps of the same input",
            (LAYER, "module path of one of the model's convolutions (default: the first)"),
            FeatureMaps,
            UnknownLayer,
        ),
    ):
        query = {"name": parameter, "in": "query", "required": False, "schema": {"type": "string"}}
        paths[f"{prefix}{{model}}"] = {
            "post": {
                "tags": [EXPLAIN_TAG],
                "operationId": f"ImageClassifier__{name}",
                "summary": summary,
                "parameters": [_path_parameter("model", served), {**query, "description": meaning}],
                "requestBody": body,
                "responses": {
                    "200": _json(_ref(answer.__name__)),
                    **_responses(_by_status((*_EXPLANATION_ERRORS, error)), _rejection, retry_after=True),
                },
            }
        }
    return paths


def _v2_paths(served: Mapping[str, str]) -> dict[str, Schema]:
    """The protocol's routes; `V2Front` answers errors without their headers (no `Retry-After`)."""
    model_errors = _responses(_by_status(V2_MODEL_ERRORS), _v2_error, retry_after=False)
    ready = _json(_object(name={"type": "string"}, ready={"type": "boolean"}))
    inferred = _json(_ref("V2InferenceResponse"))
    inferred["content"]["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    inferred["headers"] = {
        HEADER_LENGTH: {
            "description": "binary outputs: the size of the JSON at the start of the body",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    example = {"inputs": [{"name": IMAGES, "datatype": BYTES, "shape": [1], "data": [EXAMPLE_IMAGE]}]}
    infer = {
        "summary": "Inference: class probabilities, or top-k with the classification extension",
        "tags": [V2_TAG],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("V2InferenceRequest"), "example": example}},
        },
        "responses": {
            "200": inferred,
            **_responses(_by_status(V2_INFER_ERRORS), _v2_error, retry_after=False),
        },
    }
    paths = {
        V2_PREFIX: _get(V2_TAG, "Server metadata", _json(_ref("V2ServerMetadata"))),
        f"{V2_PREFIX}/health/live": _get(V2_TAG, "Liveness", _json(_object(live={"type": "boolean"}))),
        f"{V2_PREFIX}/health/ready": _get(V2_TAG, "Readiness", _json(_object(ready={"type": "boolean"}))),
    }
    model = _path_parameter("model", served)
    for base, parameters in (
        (f"{V2_PREFIX}/models/{{model}}", [model]),
        (
            f"{V2_PREFIX}/models/{{model}}/versions/{{version}}",
            [model, _path_parameter("version", served.values())],
        ),
    ):
        metadata = _json(_ref("V2ModelMetadata"))
        paths[base] = _get(V2_TAG, "Model metadata", metadata, model_errors, parameters=parameters)
        paths[f"{base}/ready"] = _get(V2_TAG, "Model readiness", ready, model_errors, parameters=parameters)
        paths[f"{base}/infer"] = {"post": {**infer, "parameters": parameters}}
    return paths


_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_TENSOR_METADATA = _object(
    name={"type": "string"},
    datatype={"type": "string"},
    shape={"type": "array", "items": {"type": "integer"}},
)
V2_SCHEMAS: dict[str, Schema] = {
    "V2ServerMetadata": _object(
        name={"type": "string"},
        version={"type": "string"},
        extensions={"type": "array", "items": {"type": "string", "enum": EXTENSIONS}},
    ),
    "V2ModelMetadata": _object(
        name={"type": "string"},
        versions={"type": "array", "items": {"type": "string"}},
        platform={"type": "string"},
        inputs={"type": "array", "items": _TENSOR_METADATA},
        outputs={"type": "array", "items": _TENSOR_METADATA},
    ),
    "V2InferenceRequest": _object(
        ["id", "parameters", "outputs"],
        id={"type": "string"},
        parameters=_object(["binary_data_output"], binary_data_output={"type": "boolean"}),
        inputs={"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("V2InputTensor")},
        outputs={"type": "array", "items": _ref("V2RequestedOutput")},
    ),
    "V2InputTensor": {
        **_object(
            ["parameters"],
            name={"type": "string", "enum": list(INPUT_DATATYPES)},
            datatype={"type": "string", "enum": [BYTES, FP32]},
            shape=_SHAPE,
            data={"type": "array"},
            parameters=_object(["binary_data_size"], binary_data_size={"type": "integer", "minimum": 0}),
        ),
        "description": (
            f"`{IMAGES}` {BYTES} [N]: image files as base64 strings; `{PIXELS}` {FP32} [N, C, H, W]: "
            "preprocessed pixels, flat or nested in row-major order"
        ),
    },
    "V2RequestedOutput": _object(
        ["parameters"],
        name={"type": "string", "enum": [PROBABILITIES]},
        parameters=_object(
            ["classification", "binary_data"],
            classification={"type": "integer", "minimum": 1},
            binary_data={"type": "boolean"},
        ),
    ),
    "V2InferenceResponse": _object(
        ["id"],
        model_name={"type": "string"},
        model_version={"type": "string"},
        id={"type": "string"},
        outputs={
            "type": "array",
            "items": _object(
                ["data", "parameters"],
                name={"type": "string"},
                datatype={"type": "string", "enum": [BYTES, FP32]},
                shape=_SHAPE,
                data={"type": "array"},
                parameters=_object(binary_data_size={"type": "integer", "minimum": 0}),
            ),
        },
    ),
}
