"""``/api/keys`` (docs/api.md §E12): a user's keys for programs. Made and listed only with a
password login's token; a key may revoke keys (a program can retire its own)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from serve_app.auth.callers import Caller
from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import DbSession, SettingsDep
from serve_app.keys.schemas import KeyCreated, KeyIn, KeyList, KeyOut
from serve_app.tasks.schemas import Message
from storage import keys

router = APIRouter(tags=["keys"])
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}
PASSWORD_ONLY = {"model": Message, "description": "Called with an API key: log in instead"}
NO_SUCH_KEY = HTTPException(status.HTTP_404_NOT_FOUND, detail="No such key.")
_MAX_ID = 2**31 - 1  # the column is a 32-bit integer


def _password_login(user: Caller) -> None:
    if user.key_id is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="API keys are made and listed only with a password login's token, not "
            "with a key.",
        )


@router.post(
    "/api/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    summary="Make an API key (its secret is shown this once)",
    responses={
        401: UNAUTHORIZED,
        403: PASSWORD_ONLY,
        409: {"model": Message, "description": "You hold as many keys as allowed"},
    },
)
def create_key(body: KeyIn, user: CurrentUser, db: DbSession, settings: SettingsDep) -> KeyCreated:
    _password_login(user)
    limit = settings.api_keys_per_user
    try:
        made = keys.create_key(db=db, user_id=user.id, name=body.name, limit=limit)
    except keys.TooManyKeys:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"You have {limit} API keys, the most allowed; revoke one first.",
        ) from None
    return KeyCreated(id=made.id, name=made.name, key=made.key, created_at=made.created_at)


@router.get(
    "/api/keys",
    response_model=KeyList,
    summary="The caller's API keys, without their secrets",
    responses={401: UNAUTHORIZED, 403: PASSWORD_ONLY},
)
def list_keys(user: CurrentUser, db: DbSession) -> KeyList:
    _password_login(user)
    return KeyList(
        keys=[
            KeyOut(id=k.id, name=k.name, created_at=k.created_at, last_used_at=k.last_used_at)
            for k in keys.list_keys(db=db, user_id=user.id)
        ]
    )


@router.delete(
    "/api/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key: it stops working at once, on every replica",
    responses={401: UNAUTHORIZED, 404: {"model": Message, "description": "No such key"}},
)
def revoke_key(key_id: int, user: CurrentUser, db: DbSession) -> Response:
    if not 0 < key_id <= _MAX_ID or not keys.revoke_key(db=db, user_id=user.id, key_id=key_id):
        raise NO_SUCH_KEY
    return Response(status_code=status.HTTP_204_NO_CONTENT)
