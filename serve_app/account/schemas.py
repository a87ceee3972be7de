from __future__ import annotations

from pydantic import BaseModel, Field


class Me(BaseModel):
    username: str = Field(examples=["first"])
    webhook_secret: str = Field(
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        description="Signs your webhooks: the HMAC-SHA256 key is the base64-decoded part "
        "after whsec_",
    )
