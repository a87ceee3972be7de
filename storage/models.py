"""The ORM classes: users, the model catalog, tasks with their inputs and results.

Both the API and the task queue import this module; it knows nothing of HTTP.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.database import Base, utcnow

# Ids are never reused, on any database: a token names a user id, a webhook log a task id.
# PostgreSQL's sequences never go back; SQLite reuses the largest id after its row is deleted
# unless the table is declared AUTOINCREMENT.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class User(Base):
    __tablename__ = "user_account"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Signs the user's webhooks ("whsec_" + base64 of 24 random bytes); made on first use.
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    # Tokens issued before this moment are refused: set by a password change and by logout.
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # SQLite: the id of the user's latest task event (docs/api.md §E11), raised under the
    # row's lock by the transaction that stores events (PostgreSQL numbers them otherwise:
    # storage/events.py).
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The user's tasks waiting (queued or in progress) and the bytes their stored images take,
    # with the user's ``usage_delta`` rows added (storage/events.py): a submission checks its
    # quotas on them without counting rows.
    active_tasks: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The highest priority the user may ask for (docs/api.md §E10), set by an operator with
    # primitives-admin; the default lets no one ahead of anyone else's default tasks.
    max_priority: Mapped[int] = mapped_column(SmallInteger, default=5, server_default="5")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MlModel(Base):
    """A row per registry entry ever served, so tasks keep pointing at what ran them."""

    __tablename__ = "ml_model"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class TaskStatus(StrEnum):
    queued = "queued"
    in_progress = "in progress"
    done = "done"
    failed = "failed"
    canceled = "canceled"


# A task in one of these never changes again (it is only deleted).
SETTLED_STATUSES = (TaskStatus.done.value, TaskStatus.failed.value, TaskStatus.canceled.value)
# A task in one of these is waiting: it counts against the user's quota and may still run.
UNSETTLED_STATUSES = (TaskStatus.queued.value, TaskStatus.in_progress.value)
MEDIA_EXTENSIONS = {"image/jpeg": "jpeg", "image/png": "png"}
STATUS_VALUES = ", ".join(f"'{s.value}'" for s in TaskStatus)
PRIORITIES = range(10)
DEFAULT_PRIORITY = 5


class Task(Base):
    __tablename__ = "task"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
        Index("ix_task_user_id_id", "user_id", "id"),
        Index("ix_task_status_id", "status", "id"),
        Index("ix_task_finished_at", "finished_at"),
        # The claim's order (docs/api.md §E10), over the waiting tasks only.
        Index(
            "ix_task_queued_order",
            text("priority DESC"),
            "turn",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index("ix_task_user_priority_turn", "user_id", "priority", "turn"),
        Index(
            "ix_task_queued_deadline",
            "deadline_at",
            postgresql_where=text("status = 'queued' AND deadline_at IS NOT NULL"),
            sqlite_where=text("status = 'queued' AND deadline_at IS NOT NULL"),
        ),
        NEVER_REUSE_IDS,
    )

    # BIGINT on PostgreSQL; SQLite only autoincrements a column declared INTEGER.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    detection_model_id: Mapped[int] = mapped_column(ForeignKey("ml_model.id"))
    classification_model_id: Mapped[int] = mapped_column(ForeignKey("ml_model.id"))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.queued.value)
    input_media_type: Mapped[str] = mapped_column(String(32))
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A claim: who runs the task now (a fresh token per claim) and until when, unless renewed.
    claim_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Where to POST the result when the task settles (docs/api.md §E4); None for no webhook.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # The W3C traceparent of the span that stored the task (docs/api.md §E15): the queue and
    # the webhook sender continue its trace. Null when traces are off.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    # Queue policy (docs/api.md §E10): started highest priority first; within a priority by
    # turn (users take turns, see storage/tasks.py), then by id. A task still queued at its
    # deadline is never started.
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=DEFAULT_PRIORITY, server_default="5"
    )
    turn: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    deadline_s: Mapped[int | None] = mapped_column(Integer)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    input: Mapped[TaskInput] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )
    result: Mapped[TaskResult | None] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def input_path(self) -> str:
        """The name the input is stored under, as the contract shows it (``img_1.jpeg``)."""
        return input_path(self.id, self.input_media_type)


def input_path(task_id: int, media_type: str) -> str:
    return f"img_{task_id}.{MEDIA_EXTENSIONS.get(media_type, 'bin')}"


class TaskInput(Base):
    """The submitted image, kept in the database so any replica on any node can read it."""

    __tablename__ = "task_input"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("task.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)

    task: Mapped[Task] = relationship(back_populates="input")


class TaskResult(Base):
    """Exactly one per finished task: the primary key is the task's id."""

    __tablename__ = "task_result"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("task.id", ondelete="CASCADE"), primary_key=True
    )
    image_class: Mapped[str] = mapped_column(String(64))
    primitives: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    task: Mapped[Task] = relationship(back_populates="result")


class ApiKey(Base):
    """A user's key for programs (docs/api.md §E12): used like a token, stored as its
    SHA-256 only (a key is 256 random bits, so a fast digest cannot be reversed or guessed).
    Revoking deletes the row: every replica's next lookup misses."""

    __tablename__ = "api_key"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Written at most once a minute per key: a request does not pay a write.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """A user's ``Idempotency-Key``: the request it was first sent with (a digest of the body
    and parameters) and the answer given. The primary key makes racing retries wait for the
    first one's transaction, then find its row."""

    __tablename__ = "idempotency_key"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event to deliver: the body is fixed when the task settles; it outlives the task
    (a task deleted after it settled still has its event delivered)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "state", "next_attempt_at"),
        Index("ix_webhook_delivery_task_id", "task_id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)  # the webhook-id header
    task_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    # pending -> delivered | gave_up
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A sender that took the delivery holds it until then (another takes it after a crash).
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookAttempt(Base):
    """The log of one delivery attempt, as the task's owner reads it."""

    __tablename__ = "webhook_attempt"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column()
    status_code: Mapped[int | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)


class RateCounter(Base):
    """Events per key in one fixed window (requests per user, failed logins per client and
    name): counted here so that every ingress replica shares one count."""

    __tablename__ = "rate_counter"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class QueueTurn(Base):
    """The queue's clock, one per priority: the turn of the latest task started. A new task
    takes its turn from it (storage/tasks.py), so a user who waited gets the next one."""

    __tablename__ = "queue_turn"

    priority: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    turn: Mapped[int] = mapped_column(BigInteger, default=0)


class TaskEvent(Base):
    """A status change of one of the user's tasks (docs/api.md §E11), its id increasing in
    the order readers see them (storage/events.py); kept for the events window, then purged."""

    __tablename__ = "task_event"
    __table_args__ = (Index("ix_task_event_created_at", "created_at"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageDelta(Base):
    """A change to a user's counters not yet folded into them (PostgreSQL): what a settled,
    deleted or purged task took off, written without locking the user's row
    (storage/events.py)."""

    __tablename__ = "usage_delta"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    tasks: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


# The hot statements (every submit, claim and result) are written against the tables (Core):
# SQLAlchemy's ORM bulk and unit-of-work paths cost more CPU than the statements themselves.
TASKS, INPUTS = cast(Table, Task.__table__), cast(Table, TaskInput.__table__)
TURNS = cast(Table, QueueTurn.__table__)
RESULTS = cast(Table, TaskResult.__table__)
TASK = TASKS.c
