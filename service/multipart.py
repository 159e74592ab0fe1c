"""A multipart/form-data body, already in memory, split into its parts (python-multipart's parser).

Leaner than Starlette's form parser, which spools every file part into a temporary file object: the
whole body is in memory already, under the request byte limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import MalformedRequest


@dataclass
class Part:
    name: str = ""
    filename: str | None = None  # None for a plain form value, "" for a file sent without a name
    data: bytearray = field(default_factory=bytearray)


def parse_form(body: bytes, content_type: str) -> list[Part]:
    """The parts of `body`, in order; a MalformedRequest says what is wrong with it."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequest("malformed multipart body: no boundary in the Content-Type header")
    parts: list[Part] = []
    header_name, header_value, disposition = bytearray(), bytearray(), bytearray()

    def on_header_end() -> None:
        if header_name.lower() == b"content-disposition":
            disposition[:] = header_value
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(bytes(disposition))
        disposition.clear()
        if b"name" not in options:
            raise MalformedRequest("malformed multipart body: a part's Content-Disposition has no name")
        filename = options.get(b"filename")
        parts.append(
            Part(
                name=options[b"name"].decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
            )
        )

    callbacks = {
        "on_header_field": lambda data, start, end: header_name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: header_value.extend(data[start:end]),
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise MalformedRequest(f"malformed multipart body: {error}") from None
    return parts
