"""The task API's bodies, as the OpenAPI schema shows them: what routes take and answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from storage.database import as_utc
from storage.models import TaskStatus


def _iso_millis_z(value: datetime) -> str:
    value = as_utc(value).astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


UtcMillis = Annotated[datetime, PlainSerializer(_iso_millis_z, return_type=str)]


class TaskCreated(BaseModel):
    id: int


class TaskDeleted(BaseModel):
    id: int


class TasksCreated(BaseModel):
    """A batch submission: the ids of its tasks, in the order of the files."""

    ids: list[int]


class TaskSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: TaskStatus
    created_at: UtcMillis = Field(examples=["2012-04-23T18:25:43.511Z"])
    input_path: str = Field(examples=["img_1.jpeg"])


class TaskList(BaseModel):
    tasks: list[TaskSummary]


class TaskStatusOut(BaseModel):
    id: int
    status: TaskStatus


class Primitive(BaseModel):
    primitive_class: str = Field(examples=["sphere"])
    x: float = Field(ge=0, le=1, description="box centre x / image width")
    y: float = Field(ge=0, le=1, description="box centre y / image height")
    width: float = Field(ge=0, le=1, description="side along the rotated x axis / image width")
    height: float = Field(ge=0, le=1, description="other side / image height")
    rotation: float = Field(
        ge=0,
        lt=1,
        description="angle in [0, pi) divided by pi; growing turns the box clockwise on screen",
    )
    probability: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    model_config = ConfigDict(extra="allow")

    image_class: str = Field(
        examples=["office"],
        description=(
            'the scene class, or "unknown" when the classifier\'s calibrated top probability '
            "is under its configured threshold (class_probabilities still says what it saw)"
        ),
    )
    primitives: list[Primitive]


class TaskResultOut(BaseModel):
    id: int
    status: TaskStatus
    result: Prediction | None
    error: str | None = Field(default=None, description="only when status is failed")
    priority: int = Field(default=5, description="the task's priority (0 to 9)")
    deadline_s: int | None = Field(
        default=None, description="seconds it had to start in; null for none"
    )


class Message(BaseModel):
    detail: str


# What most task routes may answer besides their own body, for the OpenAPI schema.
NOT_FOUND = {"model": Message, "description": "No such task among the caller's tasks"}
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}


class TaskCanceled(BaseModel):
    id: int
    status: TaskStatus = Field(examples=["canceled"])


class WebhookAttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    started_at: UtcMillis
    duration_ms: float
    status_code: int | None = Field(description="the receiver's answer; null when none came")
    error: str | None = Field(description="why the attempt failed; null when delivered")


class WebhookDeliveryOut(BaseModel):
    webhook_id: str = Field(description="the webhook-id header, the same on every attempt")
    url: str
    state: str = Field(examples=["delivered"], description="pending, delivered or gave_up")
    next_attempt_at: UtcMillis | None = Field(description="when pending: the next attempt")
    attempts: list[WebhookAttemptOut]


class WebhookLog(BaseModel):
    deliveries: list[WebhookDeliveryOut]


# The submission's body as the OpenAPI schema shows it (the UploadedImages dependency reads it:
# raw, multipart or a JSON image URL).
IMAGE_BODY = {
    "required": True,
    "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image_url"],
                "additionalProperties": False,
                "properties": {
                    "image_url": {
                        "type": "string",
                        "maxLength": 2048,
                        "description": "An http(s) URL of a JPEG or PNG the platform fetches "
                        "(public addresses only; redirects checked; size and time limits)",
                    }
                },
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": 'one image (answered {"id"}), or several (one task '
                        'each, answered {"ids"}, all or none)',
                    }
                },
            }
        },
    },
}

# How storing tasks may be refused (serve_app/tasks/errors.py), on every route that stores
# some.
STORE_REFUSALS: dict[int | str, dict[str, Any]] = {
    429: {"model": Message, "description": "Too many tasks waiting, or too many requests"},
    503: {
        "model": Message,
        "description": "The platform's queue is full, or nearly full and you hold your share "
        "of it (Retry-After)",
    },
}
