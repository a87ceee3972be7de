"""Validation as dependencies: the task id of a path, and what needs the registry or the
settings (the model ids of a new task, its uploaded image). Each raises the contract's 4xx;
the route gets checked values, and the OpenAPI schema documents the parameters as they are
declared here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from config.registry import ModelType, Registry
from config.settings import Settings
from serve_app.auth.dependencies import CurrentUser
from serve_app.bodies import read_capped, too_large
from serve_app.dependencies import RegistryDep, Services, SettingsDep
from serve_app.services import AppServices
from serve_app.tasks.fetch import FetchRefused
from serve_app.tasks.images import JPEG_MAGIC, ImageRejected, validate_image
from serve_app.tasks.uploads import read_uploads
from storage import tasks
from webhooks.urls import MAX_URL_LENGTH, ResolverBusy, UnsafeUrl

# Small JPEG uploads, at most this many bytes together, are checked on the event loop.
INLINE_VALIDATION_BYTES = 128 * 1024
PREFER_MAX_WAIT_S = 60  # the longest ``Prefer: wait`` honoured (docs/api.md)


def not_found(task_id: int) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=f"Task with id {task_id} does not exist."
    )


async def task_id_of(task_id: Annotated[int, Path(description="The task's id")]) -> int:
    """The path's task id; 404 for one no task can have (the one place the range is
    checked: the storage functions take it as given)."""
    if not 0 < task_id <= tasks.MAX_TASK_ID:
        raise not_found(task_id)
    return task_id


TaskId = Annotated[int, Depends(task_id_of)]

# Read as text so that a non-number answers the contract's 400 with the registry message
# (FastAPI's int parsing would answer 422), documented as the integer it must be.
_ModelIdText = Annotated[str | None, WithJsonSchema({"type": "integer", "minimum": 1})]


def _parse_model_id(
    raw: str | None, default: int, model_type: ModelType, registry: Registry
) -> int:
    value = str(default) if raw is None else raw.strip()
    model_id = int(value) if value.isascii() and value.isdecimal() and len(value) < 19 else -1
    if registry.get(model_id, model_type) is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=registry.wrong_id_message())
    return model_id


async def detection_model_id(
    registry: RegistryDep,
    settings: SettingsDep,
    detection_model_id: Annotated[
        _ModelIdText,
        Query(
            description="A detection model's id (GET /api/models lists them); when omitted, "
            "the platform's default detection model"
        ),
    ] = None,
) -> int:
    """The checked detection model id; 400 with the registry's message otherwise."""
    return _parse_model_id(
        detection_model_id, settings.default_detection_model_id, ModelType.detection, registry
    )


async def classification_model_id(
    registry: RegistryDep,
    settings: SettingsDep,
    classification_model_id: Annotated[
        _ModelIdText,
        Query(
            description="A classification model's id (GET /api/models lists them); when "
            "omitted, the platform's default classification model"
        ),
    ] = None,
) -> int:
    """The checked classification model id; 400 with the registry's message otherwise."""
    return _parse_model_id(
        classification_model_id,
        settings.default_classification_model_id,
        ModelType.classification,
        registry,
    )


@dataclass(frozen=True)
class Upload:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class Uploads:
    """The request's images, all valid; ``batch`` when they came as a multipart body of
    several files (answered with ``{"ids": [...]}``)."""

    images: list[Upload]
    batch: bool


def _validate_all(images: list[bytes], max_pixels: int) -> list[Upload]:
    out = []
    for number, data in enumerate(images, start=1):
        try:
            info = validate_image(data, max_pixels=max_pixels)
        except ImageRejected as exc:
            detail = exc.detail if len(images) == 1 else f"File {number}: {exc.detail}"
            raise HTTPException(exc.status_code, detail=detail) from exc
        out.append(Upload(data=data, media_type=info.media_type))
    return out


async def uploaded_images(
    request: Request, settings: SettingsDep, services: Services, user: CurrentUser
) -> Uploads:
    """The request's images, read within the byte limits and every one validated (413, 415,
    400): one bad file refuses the whole request. A JSON body names one image by URL, which
    is fetched (docs/api.md §E13; every refusal a 400)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" and (await _json_body(request, settings)) is not None:
        data = await _fetched_image(request, settings, services, user.id)
        try:
            info = await run_in_threadpool(
                validate_image, data, max_pixels=settings.max_image_pixels
            )
        except ImageRejected as exc:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, detail=f"The image at the URL: {exc.detail}"
            ) from exc
        return Uploads(images=[Upload(data=data, media_type=info.media_type)], batch=False)
    images, multipart = await read_uploads(
        request,
        file_limit=settings.max_upload_bytes,
        body_limit=settings.max_request_bytes,
        max_files=settings.max_files_per_request,
    )
    # Decoding can take a while for a large PNG: off the event loop. Small JPEGs are checked
    # in place (decoded at 1/8 scale, work bounded by their bytes): less than the hand-off to
    # a thread costs. A small PNG may still hold 40 MP to inflate, so it goes to a thread.
    if sum(len(data) for data in images) <= INLINE_VALIDATION_BYTES and all(
        data.startswith(JPEG_MAGIC) for data in images
    ):
        uploads = _validate_all(images, settings.max_image_pixels)
    else:
        uploads = await run_in_threadpool(_validate_all, images, settings.max_image_pixels)
    return Uploads(images=uploads, batch=multipart and len(uploads) > 1)


async def _json_body(request: Request, settings: Settings) -> bytes | None:
    """The body when it is JSON (an object); None for image bytes sent under a JSON type,
    which are judged by their bytes as before."""
    body = await read_capped(
        request, settings.max_upload_bytes, too_large(settings.max_upload_bytes, "The image")
    )
    return body if body.lstrip()[:1] == b"{" else None


def _lookups_busy(what: str) -> HTTPException:
    """The resolver holds as many lookups as it may (webhooks.urls.Resolver): 503."""
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"Too many {what} hosts are being looked up; try again in a moment.",
        headers={"Retry-After": "2"},
    )


class ImageUrlIn(BaseModel):
    """The JSON body that names an image by URL."""

    model_config = ConfigDict(extra="forbid")
    image_url: str = Field(max_length=MAX_URL_LENGTH)


async def _fetched_image(
    request: Request, settings: Settings, services: AppServices, user_id: int
) -> bytes:
    try:
        image_url = ImageUrlIn.model_validate_json(await request.body()).image_url
    except ValidationError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail='A JSON body must be {"image_url": "https://..."} and nothing else.',
        ) from None
    with services.fetches.slot(user_id) as granted:
        if not granted:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"You have {settings.image_fetches_per_user} images being fetched at "
                "once; wait for one to finish.",
                headers={"Retry-After": "1"},
            )
        try:
            return await services.fetcher.fetch(
                image_url, allow_loopback=settings.allows_loopback_webhooks
            )
        except FetchRefused as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
        except ResolverBusy:
            raise _lookups_busy("image") from None


async def idempotency_key(  # async: no thread-pool hop for a string check
    key: Annotated[
        str | None,
        # Checked here (a 400 that says so); documented as what it must be.
        WithJsonSchema({"type": "string", "pattern": "^[ -~]{1,255}$"}),
        Header(
            alias="Idempotency-Key",
            description="Retries with the same key (within 24 hours) get the first answer and "
            "create nothing; 1 to 255 printable ASCII characters",
        ),
    ] = None,
) -> str | None:
    """The checked key, or None; 400 when it is empty, too long or not printable ASCII."""
    if key is None:
        return None
    if not 0 < len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )
    return key


async def webhook_url(
    settings: SettingsDep,
    services: Services,
    webhook: Annotated[
        str | None,
        Query(
            max_length=MAX_URL_LENGTH,
            description="An http(s) URL the platform POSTs the signed result to when the task "
            "ends (done, failed or canceled)",
        ),
    ] = None,
) -> str | None:
    """The checked webhook URL, or None; 400 when it is not http(s) or its host resolves to
    an address webhooks may not reach (loopback allowed in development)."""
    if webhook is None:
        return None
    try:
        await services.resolver.resolve(webhook, allow_loopback=settings.allows_loopback_webhooks)
    except UnsafeUrl as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
    except ResolverBusy:
        raise _lookups_busy("webhook") from None
    return webhook


async def prefer_wait(  # async: no thread-pool hop for a header's parsing
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description="`wait=N` (RFC 7240): answer when the task settles or after N seconds "
            "(1 to 60; more is taken as 60), with the result route's body",
        ),
    ] = None,
) -> int | None:
    """The seconds a ``Prefer: wait=N`` header asks to wait (capped at 60), or None when it
    asks for none. Preferences this server does not know, or a malformed ``wait``, are
    ignored, as RFC 7240 says."""
    if prefer is None:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if value.isascii() and value.isdecimal() and len(value) < 10 and int(value) > 0:
            return min(int(value), PREFER_MAX_WAIT_S)
    return None


DetectionModelId = Annotated[int, Depends(detection_model_id)]
ClassificationModelId = Annotated[int, Depends(classification_model_id)]
UploadedImages = Annotated[Uploads, Depends(uploaded_images)]
IdempotencyKeyHeader = Annotated[str | None, Depends(idempotency_key)]
WebhookUrl = Annotated[str | None, Depends(webhook_url)]
PreferWait = Annotated[int | None, Depends(prefer_wait)]
