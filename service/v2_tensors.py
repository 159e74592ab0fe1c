"""Inference requests and responses of the Open Inference Protocol's REST form: JSON, and the binary-data
extension (Triton's, which `tritonclient` uses by default).

JSON: a tensor's `data` is its elements in row-major order, flat or nested; a BYTES element is a JSON
string (kept as `str`: what it encodes is the model's business). Binary: the header
`Inference-Header-Content-Length` gives the size of the JSON at the start of the body; each tensor
whose `parameters` hold `binary_data_size` has that many bytes after the JSON, in the order of the
tensors. Binary FP32 is little-endian; binary BYTES are, per element, a little-endian uint32 length
and the bytes. Only what this service serves is decoded: BYTES and FP32.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidTensor, MalformedRequest

HEADER_LENGTH = "inference-header-content-length"
BYTES, FP32 = "BYTES", "FP32"
_LENGTH = struct.Struct("<I")

# BYTES elements (str from JSON, bytes from binary data), or a numeric array of the tensor's shape
Data = list[str] | list[bytes] | np.ndarray


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Data


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's `binary_data_output` says
    classification: int | None  # the classification extension: top-k as "score:index:label"


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool  # the request's `binary_data_output` parameter


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's tensors; `MalformedRequest` or `InvalidTensor` (400) name what is wrong."""
    size = len(body) if header_length is None else _header_size(header_length, len(body))
    try:
        document = json.loads(body[:size])
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise MalformedRequest(f"malformed JSON inference request: {error}") from None
    if not isinstance(document, dict):
        raise MalformedRequest("the inference request must be a JSON object with a list of 'inputs'")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedRequest("'id' must be a string")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("the inference request needs a non-empty list of 'inputs'")
    binary = memoryview(body)[size:]
    inputs = []
    for raw in raw_inputs:
        tensor, used = _input(raw, binary)
        inputs.append(tensor)
        binary = binary[used:]
    if len(binary):
        raise MalformedRequest(f"{len(binary)} bytes after the inputs' binary data belong to no input")
    outputs = document.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise MalformedRequest("'outputs' must be a list")
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=None if outputs is None else [_requested_output(raw) for raw in outputs],
        binary_output=_flag(_parameters(document, "the request"), "binary_data_output", "the request"),
    )


def encode_response(
    fields: Mapping[str, Any], outputs: Sequence[tuple[Tensor, bool]]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: `fields` (model_name, ...) and each (output, binary?)."""
    documents, blobs = [], []
    for tensor, binary in outputs:
        document: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            blob = _to_bytes(tensor)
            document["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif tensor.datatype == BYTES:
            document["data"] = [_text(element) for element in tensor.data]
        else:
            document["data"] = np.asarray(tensor.data).ravel().tolist()
        documents.append(document)
    header = json.dumps({**fields, "outputs": documents}, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def _header_size(value: str, body_size: int) -> int:
    if not value.isdigit() or int(value) > body_size:
        raise MalformedRequest(
            f"Inference-Header-Content-Length {value!r} is not a size within the body's {body_size} bytes"
        )
    return int(value)


def _parameters(document: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise MalformedRequest(f"the parameters of {where} must be a JSON object")
    return parameters


def _flag(parameters: Mapping[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise MalformedRequest(f"parameter {name!r} of {where} must be true or false")
    return value


def _input(raw: Any, binary: memoryview) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of the binary section it took."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise MalformedRequest("each input must be a JSON object with a 'name'")
    name = raw["name"]
    datatype, shape = raw.get("datatype"), raw.get("shape")
    if datatype not in (BYTES, FP32):
        raise InvalidTensor(f"input {name!r} has datatype {datatype!r}: expected {BYTES} or {FP32}")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise InvalidTensor(f"input {name!r} needs a 'shape': a list of non-negative integers")
    count = math.prod(shape)
    size = _parameters(raw, f"input {name!r}").get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidTensor(f"input {name!r} has neither 'data' nor binary data")
        data = _json_data(name, datatype, raw["data"], count)
        used = 0
    else:
        if type(size) is not int or not 0 <= size <= len(binary):
            raise InvalidTensor(
                f"input {name!r}: binary_data_size {size!r} is not within the {len(binary)} bytes left"
            )
        data = _binary_data(name, datatype, binary[:size], count)
        used = size
    if isinstance(data, np.ndarray):
        data = data.reshape(shape)
    return Tensor(name=name, datatype=datatype, shape=tuple(shape), data=data), used


def _json_data(name: str, datatype: str, data: Any, count: int) -> Data:
    if datatype == BYTES:
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise InvalidTensor(f"input {name!r}: BYTES data must be a flat list of strings")
        elements: Data = data
    else:
        try:
            array = np.asarray(data)
        except ValueError:  # ragged nesting
            raise InvalidTensor(f"input {name!r}: FP32 data must be a list of numbers") from None
        if array.dtype.kind not in "iuf":
            raise InvalidTensor(f"input {name!r}: FP32 data must be a list of numbers")
        elements = array.astype(np.float32).ravel()
    _check_count(name, len(elements), count)
    return elements


def _binary_data(name: str, datatype: str, blob: memoryview, count: int) -> Data:
    if datatype == FP32:
        if len(blob) != 4 * count:
            raise InvalidTensor(f"input {name!r}: {len(blob)} bytes of FP32 data for {count} elements")
        return np.frombuffer(blob, dtype="<f4")
    elements, offset = [], 0
    while offset < len(blob):
        if offset + _LENGTH.size > len(blob):
            raise InvalidTensor(f"input {name!r}: BYTES element {len(elements)} has a truncated length")
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        if offset + length > len(blob):
            raise InvalidTensor(f"input {name!r}: BYTES element {len(elements)} is cut short")
        elements.append(bytes(blob[offset : offset + length]))
        offset += length
    _check_count(name, len(elements), count)
    return elements


def _check_count(name: str, found: int, count: int) -> None:
    if found != count:
        raise InvalidTensor(f"input {name!r} has {found} elements but its shape holds {count}")


def _requested_output(raw: Any) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise MalformedRequest("each requested output must be a JSON object with a 'name'")
    where = f"output {raw['name']!r}"
    parameters = _parameters(raw, where)
    classification = parameters.get("classification")
    if classification is not None and (type(classification) is not int or classification < 1):
        raise InvalidTensor(f"{where}: 'classification' must be a positive number of classes")
    binary = _flag(parameters, "binary_data", where) if "binary_data" in parameters else None
    return RequestedOutput(name=raw["name"], binary=binary, classification=classification)


def _text(element: str | bytes) -> str:
    return element if isinstance(element, str) else element.decode()


def _to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == BYTES:
        elements = [e.encode() if isinstance(e, str) else e for e in tensor.data]
        return b"".join(_LENGTH.pack(len(element)) + element for element in elements)
    return np.ascontiguousarray(tensor.data, dtype="<f4").tobytes()
