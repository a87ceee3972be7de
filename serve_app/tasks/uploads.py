"""Reading the submitted image from a raw or multipart body, refusing oversized bodies early."""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

MULTIPART_OVERHEAD = 64 * 1024


async def read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of a raw or multipart body, refusing bodies over ``limit`` early: from
    ``Content-Length`` when declared, else as soon as the stream passes it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    cap = limit + (MULTIPART_OVERHEAD if multipart else 0)
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                              detail=f"The image is larger than the limit of {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > cap:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not multipart:
        return body
    request._body = body  # starlette parses the form from the cached body
    try:
        form = await request.form(max_files=1, max_fields=8)
    except (MultiPartException, StarletteHTTPException) as exc:
        reason = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"Malformed multipart body: {reason}") from exc
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                detail="The multipart body has no file: send the image in a "
                                       "field named 'file'.")
        data = await files[0].read()
    finally:
        await form.close()
    if len(data) > limit:
        raise too_large
    return data
