"""The caller's account: who they are and the secret their webhooks are signed with."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.account.schemas import Me
from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import DbSession
from serve_app.tasks.schemas import Message
from storage import webhooks

router = APIRouter(tags=["account"])
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}


@router.get(
    "/api/me",
    response_model=Me,
    summary="The caller's user name and webhook signing secret",
    responses={401: UNAUTHORIZED},
)
def get_me(user: CurrentUser, db: DbSession) -> Me:
    return Me(username=user.username, webhook_secret=webhooks.ensure_secret(db=db, user_id=user.id))


@router.post(
    "/api/me/webhook-secret",
    response_model=Me,
    summary="Replace the webhook signing secret (later attempts use the new one)",
    responses={401: UNAUTHORIZED},
)
def rotate_webhook_secret(user: CurrentUser, db: DbSession) -> Me:
    return Me(username=user.username, webhook_secret=webhooks.rotate_secret(db=db, user_id=user.id))
