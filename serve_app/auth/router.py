"""POST /oauth/login: the one public route."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from serve_app.auth.dependencies import CurrentUser
from serve_app.auth.schemas import LoginForm, Token
from serve_app.auth.security import create_access_token
from serve_app.bodies import read_capped, too_large
from serve_app.dependencies import DbSession, LoginGuardDep, ReadSessionFactory, SettingsDep
from storage.users import authenticate, revoke_tokens

router = APIRouter(tags=["auth"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_LOGIN_BODY_SCHEMA = LoginForm.model_json_schema()
# A login form is a few hundred bytes; no body over this is ever held (docs/api.md §1).
MAX_LOGIN_BODY = 16 * 1024


async def read_login_form(request: Request) -> LoginForm:
    """Accept the OAuth2 password form, or the same fields as a JSON object (as the seed shows)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_capped(request, MAX_LOGIN_BODY, too_large(MAX_LOGIN_BODY, "The login body"))
    if content_type == "application/json":
        try:
            data = json.loads(body or b"null")
        # ValueError: a number of over 4300 digits; RecursionError: arrays nested thousands
        # deep (both fit in 16 KiB; both were a 500).
        except (ValueError, RecursionError) as exc:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": str(exc)},
                    }
                ]
            ) from exc
    elif content_type in _FORM_TYPES:
        form = await request.form(max_files=0, max_fields=16)
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        data = None
    if not isinstance(data, dict):
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return LoginForm.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/oauth/login",
    response_model=Token,
    summary="Log in with a user name and password; returns a bearer token",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": _LOGIN_BODY_SCHEMA},
                "application/json": {"schema": _LOGIN_BODY_SCHEMA},
            },
        }
    },
    responses={
        400: {"description": "A malformed form body (e.g. more than 16 fields)"},
        413: {"description": "A body over 16 KiB (refused while it streams in)"},
        429: {
            "description": "Too many failed logins from this client for this user, for "
            "this user from every client, or from this client whatever the names"
        },
        503: {"description": "Too many logins at once; retry after a moment"},
        422: {
            "description": "Incorrect username or password, or missing fields",
            "content": {
                "application/json": {"example": {"detail": "Incorrect username or password"}}
            },
        },
    },
)
async def login(
    request: Request,
    sessions: ReadSessionFactory,
    settings: SettingsDep,
    guard: LoginGuardDep,
    form: Annotated[LoginForm, Depends(read_login_form)],
) -> Token:
    keys = guard.keys(request, form.username)

    def check() -> int | None:
        """On the logins' own threads: count the attempt (before the verify: parallel
        guesses cannot overshoot), verify, give the count back when right; the user's id."""
        guard.admit(keys)
        with sessions() as db:
            user = authenticate(db=db, username=form.username, password=form.password)
            if user is None:
                return None
            guard.succeeded(keys)
            return int(user.id)

    user_id = await guard.run(check)
    if user_id is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Incorrect username or password"
        )
    token = create_access_token(
        user_id=user_id,
        secret=settings.jwt_secret.get_secret_value(),
        algorithm=settings.jwt_algorithm,
        expires_minutes=settings.access_token_expire_minutes,
    )
    return Token(access_token=token)


@router.post(
    "/oauth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out everywhere: every token issued until now is refused",
    responses={401: {"description": "Not authenticated"}},
)
def logout(user: CurrentUser, db: DbSession) -> None:
    revoke_tokens(db=db, user_id=user.id)
