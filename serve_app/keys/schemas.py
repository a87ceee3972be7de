from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class KeyIn(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="What the key is for (1 to 64 characters, no control characters)",
        examples=["nightly batch"],
    )


class KeyOut(BaseModel):
    id: int = Field(examples=[3])
    name: str = Field(examples=["nightly batch"])
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When a request last used it (to the minute); null: never"
    )


class KeyCreated(BaseModel):
    id: int = Field(examples=[3])
    name: str = Field(examples=["nightly batch"])
    key: str = Field(
        description="The secret, shown this once: send it as `Authorization: Bearer <key>`",
        examples=["prim_3q2-7wEXAMPLEnotarealkey0000000000000000000000"],
    )
    created_at: datetime


class KeyList(BaseModel):
    keys: list[KeyOut]
