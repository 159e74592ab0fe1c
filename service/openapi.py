"""OpenAPI entries for the explanation routes, which an ASGI front answers without a `@bentoml.api`
method, added to the document BentoML serves (GET /docs.json, read by its Swagger UI at /)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.explain_front import EXPLAIN, FEATURES, FILE_FIELD, LAYER, TARGET
from service.schemas import Explanation, FeatureMaps, RejectedInput

DOCUMENT = "/docs.json"
SCHEMAS = "#/components/schemas/{model}"
TAG = "Service APIs"  # BentoML's tag of its API routes
REFUSALS = {
    400: "no image, more than one, a plain value, another field or query parameter, a corrupt image",
    404: "a model that is not in the table",
    413: "a body or an image over the limits",
    415: "not multipart/form-data, or a file that is not an image",
    422: "an unknown target class or layer, or a model without a convolutional feature map",
    429: "the worker's explanation queue is full (Retry-After)",
    503: "a model of the table that is not loaded",
}


def explanation_paths(models: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The path items of /explain/{model} and /features/{model}, and the schemas they refer to."""
    _, definitions = models_json_schema(
        [(model, "serialization") for model in (Explanation, FeatureMaps, RejectedInput)],
        ref_template=SCHEMAS,
    )
    paths = {
        f"{EXPLAIN}{{model}}": _operation(
            "explain",
            "Grad-CAM of one image for a class: where in the image the evidence for it lies.",
            (TARGET, "a class label or index (default: the top class)"),
            Explanation.__name__,
            models,
        ),
        f"{FEATURES}{{model}}": _operation(
            "features",
            "One convolution's feature maps of one image, beside the Sobel edge maps of the same input.",
            (LAYER, "module path of one of the model's convolutions (default: the first)"),
            FeatureMaps.__name__,
            models,
        ),
    }
    return paths, definitions["$defs"]


def _operation(
    name: str, description: str, parameter: tuple[str, str], answer: str, models: Sequence[str]
) -> dict[str, Any]:
    image = {"type": "string", "format": "binary", "description": "one image file"}
    refused = {"application/json": {"schema": {"$ref": SCHEMAS.format(model=RejectedInput.__name__)}}}
    return {
        "post": {
            "tags": [TAG],
            "operationId": f"ImageClassifier__{name}",
            "description": description,
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(models)},
                },
                {
                    "name": parameter[0],
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": parameter[1],
                },
            ],  # fmt: skip
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": [FILE_FIELD],
                            "properties": {FILE_FIELD: image},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Successful Response",
                    "content": {"application/json": {"schema": {"$ref": SCHEMAS.format(model=answer)}}},
                },
                **{str(status): {"description": why, "content": refused} for status, why in REFUSALS.items()},
            },
        }
    }


class OpenApiAddendum:
    """Adds `paths` and `schemas` to BentoML's OpenAPI document on its way out."""

    def __init__(self, app: ASGIApp, *, paths: Mapping[str, Any], schemas: Mapping[str, Any]) -> None:
        self.app = app
        self.paths = dict(paths)
        self.schemas = dict(schemas)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DOCUMENT or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message = {}
        body = bytearray()

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.app(scope, receive, keep)
        if start.get("status") == 200:
            document = json.loads(body)
            document["paths"].update(self.paths)
            document.setdefault("components", {}).setdefault("schemas", {}).update(self.schemas)
            body = bytearray(json.dumps(document).encode())
        headers = [(key, value) for key, value in start["headers"] if key.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": bytes(body)})
