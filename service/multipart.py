"""A multipart/form-data body, already in memory, split into its parts (RFC 7578 / RFC 2046).

The body is whole in memory already (under the request byte limit), so the parts are found with
`bytes.find` and sliced out once, where python-multipart's streaming parser calls back per chunk:
a one-digit request parses 3.5x faster (29 against 103 µs), 64 digits 1.3x (2.2 against 3.0 ms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.errors import MalformedRequest, NotAFile, UnexpectedField

CRLF = b"\r\n"
# A header's parameters (RFC 9110 section 5.6.6): `; name=token` or `; name="quoted \" string"`.
_PARAMETER = re.compile(rb';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
_QUOTED_PAIR = re.compile(rb"\\(.)")


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None for a plain form value, "" for a file sent without a name
    data: bytes


def parse_form(body: bytes, content_type: str) -> list[Part]:
    """The parts of `body`, in order; a MalformedRequest says what is wrong with it.

    Each part is delimited by CRLF "--boundary" (the first one may follow a preamble), then optional
    transport padding and CRLF, its headers up to an empty line, and its data; "--boundary--" ends
    the body (an epilogue after it is ignored, as the RFC says).
    """
    boundary = _parameters(content_type.encode("latin-1")).get(b"boundary")
    if not boundary:
        raise MalformedRequest("malformed multipart body: no boundary in the Content-Type header")
    delimiter = b"--" + boundary
    separator = CRLF + delimiter
    position = body.find(delimiter)
    if position < 0 or (position > 0 and body[position - 2 : position] != CRLF):
        raise MalformedRequest("malformed multipart body: no boundary delimiter in the body")
    position += len(delimiter)
    parts: list[Part] = []
    while not body.startswith(b"--", position):
        line_end = body.find(CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MalformedRequest("malformed multipart body: a boundary delimiter is not followed by CRLF")
        headers_end = body.find(CRLF + CRLF, line_end)
        if headers_end < 0:
            raise MalformedRequest("malformed multipart body: a part's headers do not end")
        data_end = body.find(separator, headers_end + 4)
        if data_end < 0:
            raise MalformedRequest("malformed multipart body: a part is not closed by the boundary")
        name, filename = _disposition(body[line_end + 2 : headers_end])
        parts.append(Part(name, filename, body[headers_end + 4 : data_end]))
        position = data_end + len(separator)
    return parts


def uploaded_files(body: bytes, content_type: str, field: str) -> list[bytes]:
    """The files of a form whose only field is `field`: another field, or a plain value where a file
    belongs (a URL, which BentoML would fetch), is refused."""
    files: list[bytes] = []
    for part in parse_form(body, content_type):
        if part.name != field:
            raise UnexpectedField(
                f"unexpected form field {part.name!r}: send image files in the field '{field}'"
            )
        if part.filename is None:
            raise NotAFile(
                f"{field}[{len(files)}] is a plain form value, not a file upload; "
                "URLs are never fetched: upload the image file itself"
            )
        files.append(part.data)
    return files


def _disposition(headers: bytes) -> tuple[str, str | None]:
    """The field name and file name of a part, from its Content-Disposition header."""
    for line in headers.split(CRLF):
        header, colon, value = line.partition(b":")
        if colon and header.strip().lower() == b"content-disposition":
            options = _parameters(value)
            if b"name" not in options:
                break
            filename = options.get(b"filename")
            return (
                options[b"name"].decode("utf-8", "replace"),
                None if filename is None else filename.decode("utf-8", "replace"),
            )
    raise MalformedRequest("malformed multipart body: a part's Content-Disposition has no name")


def _parameters(header: bytes) -> dict[bytes, bytes]:
    """The parameters of a header value such as `form-data; name="images"; filename="a.png"`."""
    parameters = {}
    for match in _PARAMETER.finditer(header):
        name, quoted, token = match.groups()
        if quoted is not None and b"\\" in quoted:
            quoted = _QUOTED_PAIR.sub(rb"\1", quoted)
        parameters[name.lower()] = token if quoted is None else quoted
    return parameters
