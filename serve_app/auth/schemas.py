from __future__ import annotations

from pydantic import BaseModel, Field

# No NUL characters: PostgreSQL text cannot hold them (the driver refuses the query).
NO_NUL = r"^[^\x00]*$"


class LoginForm(BaseModel):
    """OAuth2 password grant fields, as a form or as JSON."""

    grant_type: str | None = Field(default=None, pattern="^password$")
    username: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=1024, pattern=NO_NUL)
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class Token(BaseModel):
    access_token: str
    token_type: str = "Bearer"
