"""The authenticated-user dependency every router but login depends on."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_app.auth.models import User
from serve_app.auth.security import decode_access_token
from serve_app.auth.service import get_user

# auto_error=False: every failure below answers the contract's one 401 body.
bearer = HTTPBearer(auto_error=False, description="A token from POST /oauth/login")

NOT_AUTHENTICATED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="Not authenticated",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NOT_AUTHENTICATED
    settings = request.app.state.settings
    user_id = decode_access_token(
        credentials.credentials,
        secret=settings.jwt_secret.get_secret_value(),
        algorithm=settings.jwt_algorithm,
    )
    valid = user_id is not None and 0 < user_id < 2**31  # the column is a 32-bit integer
    user = None
    if valid:
        # A session of its own, closed at once: a long-polling request must not hold a
        # pooled connection while it waits. The loaded user stays usable, detached.
        with request.app.state.session_factory() as db:
            user = get_user(db=db, user_id=user_id)
    if user is None:
        raise NOT_AUTHENTICATED
    wait = request.app.state.request_rate.retry_after(user.id)
    if wait:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            detail=f"Too many requests; try again in {wait} s.",
                            headers={"Retry-After": str(wait)})
    request.app.state.request_rate.hit(user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
