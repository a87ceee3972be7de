from __future__ import annotations

from pydantic import BaseModel, Field


class LoginForm(BaseModel):
    """OAuth2 password grant fields, as a form or as JSON."""

    grant_type: str | None = Field(default=None, pattern="^password$")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class Token(BaseModel):
    access_token: str
    token_type: str = "Bearer"
