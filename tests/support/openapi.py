"""Whether an HTTP answer is what the served OpenAPI document says, by schemathesis's response checks."""

from __future__ import annotations

import httpx
import requests
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation

RESPONSE_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def undocumented(operation: APIOperation, response: httpx.Response | requests.Response) -> str | None:
    """None when the status, content type, headers and body of `response` are documented for
    `operation`; otherwise what is not."""
    try:
        operation.Case().validate_response(response, checks=RESPONSE_CHECKS)
    except FailureGroup as failures:
        return str(failures)
    return None
