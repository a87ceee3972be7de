"""Reading a request body within a byte limit: refused from ``Content-Length`` when declared,
else as soon as the stream passes the limit, so an oversized body is never held whole."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


def too_large(limit: int, what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"{what} is larger than the limit of {limit} bytes.",
    )


async def read_capped(request: Request, cap: int, refusal: HTTPException) -> bytes:
    """The whole body, or ``refusal`` (a 413) once it is known to pass ``cap`` bytes. The body
    is cached on the request, so Starlette's form parser reads it from there."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > cap:
        raise refusal
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise refusal
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body
