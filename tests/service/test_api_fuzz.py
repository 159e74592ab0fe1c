"""Hostile clients against the service's HTTP API, in-process (BentoML's `to_asgi()` app with its lifespan,
the same fronts as `bentoml serve`; tests/service/conftest.py), with both models loaded.

schemathesis reads the served OpenAPI document (/docs.json) and sends generated requests to every operation
in it, valid ones (positive) and ones that break the document (negative): no answer may be a server error,
and every answer must be documented (status, content type, headers, body). Hand-made hostile bodies go
where a generator would not. Run with `-s` to see the cases sent and the answers by status.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation, BaseSchema

from service.v2_tensors import HEADER_LENGTH
from tests.service import images
from tests.support.openapi import RESPONSE_CHECKS, undocumented

EXAMPLES = 40  # requests per operation and generation mode, fewer where there are fewer distinct ones
# An exception escaping the fronts leaves BentoML's timeout middleware waiting 60 s, then no answer at all.
ANSWER_TIMEOUT_S = 10
CHECKS = [not_a_server_error, *RESPONSE_CHECKS, negative_data_rejection]
# A request that breaks the document is refused before it reaches a model: these statuses, never a 2xx.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 413, 415]}}}
)
# In-process there is no multiprocess metrics directory (`bentoml serve` makes one); the e2e tests scrape it.
NOT_FUZZED = {"GET /metrics"}
OPERATIONS = {
    *("GET /healthz", "GET /livez", "GET /readyz", "GET /metrics"),
    *(f"POST /classify/{model}{suffix}" for model in ("mnist", "photo", "imagenet")
      for suffix in ("", "/base64")),
    *("GET /models", "GET /models/{model}", "POST /explain/{model}", "POST /features/{model}"),
    *("GET /v2", "GET /v2/health/live", "GET /v2/health/ready"),
    *(f"{method} /v2/models/{{model}}{version}{action}" for version in ("", "/versions/{version}")
      for method, action in (("GET", ""), ("GET", "/ready"), ("POST", "/infer"))),
}  # fmt: skip


@pytest.fixture
def api(asgi_app: Any) -> BaseSchema:
    """The served document. Loading it starts the app's lifespan (the models load), which schemathesis's
    pytest plugin ends with the test."""
    return schemathesis.openapi.from_asgi("/docs.json", asgi_app, config=CONFIG)


def fuzz(operation: APIOperation, mode: GenerationMode, statuses: Counter[int]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: schemathesis.Case) -> None:
        response = case.call(timeout=ANSWER_TIMEOUT_S)
        statuses[int(response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    send()


def negatable(operation: APIOperation) -> bool:
    """Whether the operation takes anything a negative request could break."""
    return any(len(part) for part in (operation.path_parameters, operation.query, operation.body))


def test_every_operation_answers_as_documented(api: BaseSchema) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    assert {operation.label for operation in operations} == OPERATIONS
    answers: dict[str, Counter[int]] = defaultdict(Counter)
    for operation in operations:
        if operation.label in NOT_FUZZED:
            continue
        modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if negatable(operation) else [])]
        for mode in modes:
            fuzz(operation, mode, answers[f"{operation.label} ({mode.value})"])
    for label, statuses in sorted(answers.items()):
        print(f"{label}: {sum(statuses.values())} cases, {dict(sorted(statuses.items()))}")  # noqa: T201
    print(f"{sum(sum(s.values()) for s in answers.values())} cases in all")  # noqa: T201
    assert all(sum(statuses.values()) for statuses in answers.values())


@dataclass(frozen=True)
class Hostile:
    path: str
    content_type: str
    body: bytes
    status: int  # the documented 4xx it must get
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def v2_json(document: dict[str, Any]) -> Hostile:
    return Hostile("/v2/models/mnist/infer", "application/json", json.dumps(document).encode(), 400)


def v2_binary(header: dict[str, Any], blob: bytes, header_length: int | None = None) -> Hostile:
    """An inference request of the binary-data extension: the JSON header, then `blob`."""
    document = json.dumps(header).encode()
    length = str(len(document) if header_length is None else header_length)
    return Hostile(
        "/v2/models/mnist/infer", "application/octet-stream", document + blob, 400, {HEADER_LENGTH: length}
    )


DEEP_JSON = b"[" * 100_000  # nested far past the JSON parser's recursion limit
BOMB = base64.b64encode(images.bomb_png(30_000, 30_000)).decode()
PIXELS = {"name": "pixels", "datatype": "FP32", "shape": [1, 1, 28, 28]}
BYTES_INPUT = {"name": "images", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}
HOSTILE = {
    "nested JSON, base64": Hostile("/classify/mnist/base64", "application/json", DEEP_JSON, 400),
    "nested JSON, v2": Hostile("/v2/models/mnist/infer", "application/json", DEEP_JSON, 400),
    "nested JSON objects": Hostile("/classify/mnist/base64", "application/json", b'{"a":' * 50_000, 400),
    "JSON not in UTF-8": Hostile("/classify/mnist/base64", "application/json", b'{"images": ["\xff"]}', 400),
    "multipart to the base64 route": Hostile(
        "/classify/mnist/base64", "multipart/form-data", b"--x\r\n", 415
    ),
    "multipart without boundary": Hostile("/classify/mnist", "multipart/form-data", b"--x\r\n", 400),
    "multipart part without a name": Hostile(
        "/classify/mnist",
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n",
        400,
    ),
    "decompression bomb in base64": Hostile(
        "/classify/photo/base64", "application/json", json.dumps({"images": [BOMB]}).encode(), 413
    ),
    "pixels nested deeper than numpy goes": v2_json(
        {"inputs": [{**PIXELS, "data": json.loads("[" * 80 + "0.5" + "]" * 80)}]}
    ),
    "a shape of 2**70 elements": v2_json({"inputs": [{**PIXELS, "shape": [2**70], "data": [0.5]}]}),
    "header length past the body": v2_binary({"inputs": [PIXELS]}, b"", header_length=99_999),
    "BYTES element cut short": v2_binary({"inputs": [BYTES_INPUT]}, b"\xff\xff\xff\x7fabcd"),
    "a line break inside a model name": Hostile("/models/a%7C%0A0", "", b"", 404, method="GET"),
    "a line break inside a v2 model name": Hostile("/v2/models/a%7C%0A0/ready", "", b"", 404, method="GET"),
    "FP32 data of the wrong size": v2_binary(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": 3}}]}, b"abc"
    ),
}


def test_hostile_bodies_get_a_documented_4xx(api: BaseSchema) -> None:
    client = asgi.get_client(api.app)
    wrong = []
    for name, hostile in HOSTILE.items():
        operation = api.find_operation_by_path(hostile.method, hostile.path)
        assert operation is not None, name
        headers = {"content-type": hostile.content_type, **hostile.headers}
        try:
            response = client.request(
                hostile.method, hostile.path, data=hostile.body, headers=headers, timeout=ANSWER_TIMEOUT_S
            )
        except requests.RequestException as error:
            wrong.append(f"{name}: no answer ({error})")
            continue
        if response.status_code != hostile.status or undocumented(operation, response):
            wrong.append(f"{name}: {response.status_code} {response.text[:300]}")
    assert not wrong, "\n".join(wrong)
