"""Reading the uploaded image from the request body: raw, multipart, and over the limit."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from serve_app.tasks.uploads import read_uploads


def request_with(
    body: bytes, content_type: str, *, declared: int | None = None, chunk: int = 1000
) -> Request:
    headers = [(b"content-type", content_type.encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    received: list[int] = []

    async def receive():
        received.append(1)
        return messages.pop(0)

    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/api/tasks",
            "headers": headers,
            "query_string": b"",
        },
        receive,
    )
    request.state.received = received
    return request


def multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def read(request: Request, limit: int) -> bytes:
    """The one image of a raw or single-file multipart body."""
    images, _ = asyncio.run(read_uploads(request, file_limit=limit, body_limit=limit, max_files=1))
    return images[0]


def test_a_raw_body_is_the_image():
    assert (
        read(request_with(b"\xff\xd8\xff" + b"x" * 5000, "image/jpeg"), 10_000)
        == b"\xff\xd8\xff" + b"x" * 5000
    )


def test_the_file_of_a_multipart_body_is_the_image():
    body, content_type = multipart(b"\x89PNG\r\n\x1a\nrest")
    assert read(request_with(body, content_type), 10_000) == b"\x89PNG\r\n\x1a\nrest"
    body, content_type = multipart(b"abc", field="image")
    assert read(request_with(body, content_type), 10_000) == b"abc"


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    request = request_with(b"x" * 50, "image/jpeg", declared=20_000)
    with pytest.raises(HTTPException) as refused:
        read(request, 10_000)
    assert refused.value.status_code == 413
    assert refused.value.detail == "The image is larger than the limit of 10000 bytes."
    assert request.state.received == []  # not one chunk was read


def test_an_undeclared_stream_is_cut_as_soon_as_it_passes_the_limit():
    request = request_with(b"x" * 50_000, "image/jpeg", chunk=1000)
    with pytest.raises(HTTPException) as refused:
        read(request, 10_000)
    assert refused.value.status_code == 413
    assert len(request.state.received) == 11  # stopped at the chunk that crossed the limit


def test_a_multipart_body_without_a_file_or_malformed_is_a_400():
    body = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--XyZ--\r\n'
    with pytest.raises(HTTPException) as refused:
        read(request_with(body, "multipart/form-data; boundary=XyZ"), 10_000)
    assert refused.value.status_code == 400
    assert "no file" in refused.value.detail
    with pytest.raises(HTTPException) as refused:
        read(request_with(b"garbage", "multipart/form-data"), 10_000)
    assert refused.value.status_code == 400
    assert refused.value.detail.startswith("Malformed multipart body")


def test_a_multipart_file_over_the_limit_is_refused():
    body, content_type = multipart(b"y" * 12_000)
    with pytest.raises(HTTPException) as refused:
        read(request_with(body, content_type), 10_000)
    assert refused.value.status_code == 413
