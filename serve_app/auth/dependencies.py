"""Two chained dependencies: who is calling (authentication), then whether they may call
again now (the per-user request rate). Every router but login depends on the second."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from serve_app.auth.callers import Caller, load_caller, load_key_caller
from serve_app.auth.security import read_access_token
from serve_app.dependencies import ReadSessionFactory, RequestRate, SessionFactory, SettingsDep
from storage.keys import looks_like_key

# auto_error=False: every failure below answers the contract's one 401 body.
bearer = HTTPBearer(
    auto_error=False, description="A token from POST /oauth/login, or an API key (prim_...)"
)

NOT_AUTHENTICATED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="Not authenticated",
    headers={"WWW-Authenticate": "Bearer"},
)


async def authenticated_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: SettingsDep,
    sessions: ReadSessionFactory,
    write_sessions: SessionFactory,
) -> Caller:
    """The user the bearer token or API key names; 401 for anything else."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NOT_AUTHENTICATED
    if looks_like_key(credentials.credentials):
        # Looked up on every request, so a revoked key fails at once on every replica (read
        # on the read sessions; marked used on the main ones once a minute).
        caller = await run_in_threadpool(
            load_key_caller, sessions, write_sessions, credentials.credentials
        )
        if caller is None:
            raise NOT_AUTHENTICATED
        return caller
    token = read_access_token(
        credentials.credentials,
        secret=settings.jwt_secret.get_secret_value(),
        algorithm=settings.jwt_algorithm,
    )
    if token is None or not 0 < token[0] < 2**31:  # the column is a 32-bit integer
        raise NOT_AUTHENTICATED
    # A session of its own, closed at once: a long-polling request must not hold a pooled
    # connection while it waits.
    user = await run_in_threadpool(load_caller, sessions, *token)
    if user is None:
        raise NOT_AUTHENTICATED
    return user


async def rate_limited_user(
    user: Annotated[Caller, Depends(authenticated_user)], request_rate: RequestRate
) -> Caller:
    """The authenticated user, counted against their request rate; 429 past it."""
    wait = (
        await run_in_threadpool(request_rate.take, user.id)
        if request_rate.blocking
        else request_rate.take(user.id)
    )
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"Too many requests; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    return user


CurrentUser = Annotated[Caller, Depends(rate_limited_user)]
