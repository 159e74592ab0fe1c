"""The in-memory multipart parser against python-multipart's streaming parser, on bodies httpx encodes."""

from __future__ import annotations

import random

import httpx
import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import MalformedRequest
from service.multipart import Part, parse_form


def encode(fields: list[tuple[str, tuple[str, bytes, str] | str]]) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://x",
        files=[f for f in fields if not isinstance(f[1], str)],
        data={k: v for k, v in fields if isinstance(v, str)},
    )
    return request.read(), request.headers["content-type"]


def reference(body: bytes, content_type: str) -> list[tuple[bytes, bytes]]:
    """(headers, data) of each part as python-multipart's streaming parser sees them."""
    boundary = parse_options_header(content_type)[1][b"boundary"]
    parts: list[list[bytearray]] = []
    callbacks = {
        "on_part_begin": lambda: parts.append([bytearray(), bytearray()]),
        "on_header_field": lambda data, start, end: parts[-1][0].extend(data[start:end] + b":"),
        "on_header_value": lambda data, start, end: parts[-1][0].extend(data[start:end] + b";"),
        "on_part_data": lambda data, start, end: parts[-1][1].extend(data[start:end]),
    }
    parser = MultipartParser(boundary, callbacks)
    parser.write(body)
    parser.finalize()
    return [(bytes(headers), bytes(data)) for headers, data in parts]


@pytest.mark.parametrize("seed", range(20))
def test_random_files_split_like_python_multipart(seed: int) -> None:
    rng = random.Random(seed)
    noise = [b"\r\n", b"--", b"\r\n--", b"\r\n\r\n", b"\x00", b"\xff"]
    files = [
        (
            "images",
            (
                f"{i}.png",
                b"".join(
                    rng.choice([rng.randbytes(rng.randint(0, 50)), *noise]) for _ in range(rng.randint(0, 40))
                ),
                "image/png",
            ),
        )
        for i in range(rng.randint(1, 5))
    ]
    body, content_type = encode(files)
    parts = parse_form(body, content_type)
    assert [part.data for part in parts] == [data for _, data in reference(body, content_type)]
    assert parts == [Part("images", f"{i}.png", file[1]) for i, (_, file) in enumerate(files)]


def test_plain_values_have_no_filename_and_preamble_and_epilogue_are_ignored() -> None:
    body = (
        b'preamble\r\n--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--b \t\r\ncontent-disposition: form-data; name="images"; filename=""\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--b--\r\nepilogue"
    )
    assert parse_form(body, "multipart/form-data; boundary=b") == [
        Part("note", None, b"hello"),
        Part("images", "", b"\x89PNG"),
    ]


def test_an_empty_form_has_no_parts() -> None:
    assert parse_form(b"--b--\r\n", 'multipart/form-data; boundary="b"') == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "no boundary delimiter"),
        (b"x--b\r\n\r\n", "no boundary delimiter"),
        (b"--bx\r\n", "not followed by CRLF"),
        (b'--b\r\nContent-Disposition: form-data; name="a"', "headers do not end"),
        (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\ndata', "not closed by the boundary"),
        (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\ndata\r\n--b', "not followed by CRLF"),
        (b"--b\r\nContent-Type: image/png\r\n\r\nxx\r\n--b--\r\n", "has no name"),
        (b"--b\r\n\r\nxx\r\n--b--\r\n", "has no name"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(MalformedRequest, match=words):
        parse_form(body, "multipart/form-data; boundary=b")


def test_quoted_parameters_keep_semicolons_and_escaped_quotes() -> None:
    body = b'--b\r\nContent-Disposition: form-data; filename="a; \\"b\\".png" ; NAME=images\r\n\r\nx\r\n--b--'
    assert parse_form(body, "multipart/form-data; charset=utf-8; boundary=b") == [
        Part("images", 'a; "b".png', b"x")
    ]
