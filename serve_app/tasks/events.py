"""``GET /api/tasks/events`` (docs/api.md §E11): the caller's task status changes as
server-sent events, read from the database (storage/events.py), so any ingress replica, or
one restarted meanwhile, serves a stream and resumes it from ``Last-Event-ID`` alike."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from jose import jwt
from pydantic import WithJsonSchema
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from serve_app.auth.callers import Caller, load_caller, load_key_caller
from serve_app.auth.dependencies import CurrentUser, bearer
from serve_app.dependencies import (
    AsyncDb,
    ReadSessionFactory,
    SessionFactory,
    SettingsDep,
    Streams,
)
from serve_app.services import Database
from serve_app.tasks.schemas import Message
from storage import events

router = APIRouter(tags=["tasks"])

KEEP_ALIVE_S = 15.0  # a comment line at least this often, so proxies keep the stream open
RECHECK_S = 15.0  # how often a stream checks that its token was not revoked (logout)
PAGE = 500  # events read at once; a stream with more waiting reads again at once
_EVENT_STREAM = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}


def _last_event_id(raw: str | None) -> int | None:
    """The event id a reconnecting client saw last; 400 for anything but a whole number."""
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdecimal() and len(value) < 19):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="Last-Event-ID must be the id of an event this stream sent (a whole number).",
        )
    return int(value)


def frame(seq: int, task_id: int, task_status: str) -> str:
    """One event as the stream sends it."""
    data = json.dumps({"id": task_id, "status": task_status}, separators=(", ", ": "))
    return f"id: {seq}\nevent: task\ndata: {data}\n\n"


def _lifetime(
    user: Caller,
    credential: str,
    settings: Settings,
    sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
) -> tuple[float, Callable[[], bool]]:
    """When the stream ends (UNIX time) and how it checks that its credential still holds.
    Serve's proxy cuts any request at its request_timeout_s, so the stream ends first,
    cleanly, and the client resumes it from its last event; a token's end may come sooner."""
    ends = time.time() + settings.event_stream_seconds
    if user.key_id is not None:

        def key_not_revoked() -> bool:
            return load_key_caller(sessions, write_sessions, credential) is not None

        return ends, key_not_revoked
    claims = jwt.get_unverified_claims(credential)
    issued_at = float(claims["iat"])

    def not_logged_out() -> bool:  # no logout, no password change since the token
        return load_caller(sessions, user.id, issued_at) is not None

    return min(float(claims["exp"]), ends), not_logged_out


async def _frames(
    request: Request,
    db: Database,
    user_id: int,
    after: int,
    ends: float,
    still_valid: Callable[[], bool],
    settings: Settings,
) -> AsyncIterator[str]:
    """The stream's lines: an opening comment, every event after ``after`` as it is stored,
    keep-alives, until ``ends``, the credential's end or the client's going."""
    seq = after
    sent_at = checked_at = time.monotonic()
    yield ": stream open\n\n"  # the headers and a first byte now, not at the first event
    while time.time() < ends:
        # Checked on a clock, not only when idle: a stream whose events keep coming ends
        # within RECHECK_S of a logout too.
        if time.monotonic() - checked_at > RECHECK_S:
            checked_at = time.monotonic()
            if not await run_in_threadpool(still_valid):
                return  # logged out, the password changed, or the key revoked
        found = await db.read(
            lambda s: events.after(db=s, user_id=user_id, seq=seq, limit=PAGE)  # noqa: B023
        )
        for seq, task_id, task_status in found:  # noqa: B007 - seq: the last sent
            yield frame(seq, task_id, task_status)
        now = time.monotonic()
        if found:
            sent_at = now
            continue  # maybe more than one page waits
        if now - sent_at >= KEEP_ALIVE_S:
            sent_at = now
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(settings.event_poll_seconds, max(ends - time.time(), 0)))


@router.get(
    "/api/tasks/events",
    summary="The caller's task status changes, as server-sent events",
    description="One `task` event per status change of the caller's tasks. Reconnect with "
    "`Last-Event-ID` to receive every event after it (kept for 10 minutes), none twice. "
    "A `: keep-alive` comment at least every 15 s. The stream ends when the token expires, "
    "and after `event_stream_seconds` (80 by default): reconnect with `Last-Event-ID`.",
    response_class=StreamingResponse,
    responses={
        200: _EVENT_STREAM,
        400: {"model": Message, "description": "A malformed Last-Event-ID"},
        401: {"model": Message, "description": "Not authenticated"},
        429: {"model": Message, "description": "Too many streams open for this user"},
    },
)
async def task_events(
    request: Request,
    user: CurrentUser,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: SettingsDep,
    db: AsyncDb,
    sessions: ReadSessionFactory,
    write_sessions: SessionFactory,
    streams: Streams,
    last_event_id: Annotated[
        str | None,
        # Parsed here (a 400 that names it); documented as the whole number it must be.
        WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,18}$"}),
        Header(alias="Last-Event-ID", description="the id of the last event received"),
    ] = None,
) -> StreamingResponse:
    after = _last_event_id(last_event_id)
    if after is None:  # a new stream: what happens from now on
        after = await db.read(lambda s: events.latest(db=s, user_id=user.id))
    # Verified by the authentication above: only its times are read here.
    assert credentials is not None
    ends, still_valid = _lifetime(user, credentials.credentials, settings, sessions, write_sessions)
    if not streams.take(user.id):  # given back when the stream ends
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"You have {settings.event_streams_per_user} event streams open; close one "
            "first.",
            headers={"Retry-After": "5"},
        )
    given_back = False

    def give_back() -> None:
        nonlocal given_back
        if not given_back:
            given_back = True
            streams.give(user.id)

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _frames(request, db, user.id, after, ends, still_valid, settings):
                yield chunk
        finally:
            give_back()

    events_stream = stream()
    # A client gone before the first byte leaves the generator unstarted, so its ``finally``
    # never runs: its place is given back when the generator is collected.
    weakref.finalize(events_stream, give_back)
    return StreamingResponse(
        events_stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
