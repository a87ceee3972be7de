"""Reading the submitted images from a raw or multipart body, refusing oversized bodies early."""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from serve_app.bodies import read_capped, too_large

MULTIPART_OVERHEAD = 64 * 1024


async def read_uploads(
    request: Request, *, file_limit: int, body_limit: int, max_files: int
) -> tuple[list[bytes], bool]:
    """The image bytes of a raw body (one image) or of every file of a multipart body, and
    whether the body was multipart. Bodies over the limit are refused early: from
    ``Content-Length`` when declared, else as soon as the stream passes it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    if not multipart or body_limit <= file_limit:
        cap = file_limit + (MULTIPART_OVERHEAD if multipart else 0)
        refusal = too_large(file_limit, "The image")
    else:
        cap = body_limit
        refusal = too_large(body_limit, "The request body")
    body = await read_capped(request, cap, refusal)
    if not multipart:
        return [body], False
    try:  # starlette parses the form from the body cached on the request
        form = await request.form(max_files=max_files, max_fields=max_files + 8)
    except (MultiPartException, StarletteHTTPException) as exc:
        reason = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"Malformed multipart body: {reason}"
        ) from exc
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail="The multipart body has no file: send the image in a field named 'file'.",
            )
        images = [await f.read() for f in files]
    finally:
        await form.close()
    if any(len(data) > file_limit for data in images):
        raise too_large(file_limit, "The image")
    return images, True
