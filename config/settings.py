"""The platform's settings: one class, read from ``PRIMITIVES_*`` environment variables."""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "secret"})
REPO_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Everything that differs between deployments and is not scaling (that is serve_config)."""

    model_config = SettingsConfigDict(env_prefix="PRIMITIVES_", env_file=".env", extra="ignore")

    environment: Environment = Environment.development
    # SQLite file in var/ is the embedded default for the quick start; production sets a
    # postgresql+psycopg2:// URL.
    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'primitives.db'}"
    # Connections each ingress replica keeps open (as many again may be opened at peaks);
    # FastAPI runs up to 40 blocking calls at once, so fewer means connections made and
    # closed under load.
    database_pool_size: int = 20

    jwt_secret: SecretStr = SecretStr("")
    jwt_algorithm: str = "HS256"
    access_token_expire_minutes: int = 60
    # The development quick start creates this user; production never does.
    demo_user: str = "first"
    demo_password: SecretStr = SecretStr("111")

    max_upload_bytes: int = 10 * 1024 * 1024  # one image
    max_image_pixels: int = 40_000_000
    # Batch submit: a multipart body of several files makes one task per file.
    max_files_per_request: int = 32
    max_request_bytes: int = 64 * 1024 * 1024  # a whole multipart body

    # Abuse limits: failed logins per client and user name, requests per user (per minute),
    # and tasks a user may have waiting (queued or in progress) at once. The first two are
    # counted in the database, shared by every ingress replica, unless ``limits_storage`` is
    # "memory" (each replica counts alone: no database write per request). The waiting tasks
    # are always counted in the database.
    limits_storage: Literal["database", "memory"] = "database"
    # The request rate is counted in each replica's memory and added to the shared count in
    # the database every this many seconds (0: a database write per request). Other replicas'
    # requests are seen up to this late: with R replicas a user may pass the limit by at
    # most (R - 1) x the requests one replica accepts in this time.
    limits_flush_seconds: float = Field(default=0.25, ge=0, le=10)
    login_failures_per_minute: int = 10
    requests_per_minute: int = 1200
    max_active_tasks_per_user: int = 200

    # Storage: a user's stored images may take this many bytes (0: no limit); settled tasks
    # (done, failed, canceled) older than this many days are purged with their inputs and
    # results, hourly, by the task queue (0: kept until deleted).
    max_stored_bytes_per_user: int = 1024 * 1024 * 1024
    retention_days: float = 0

    default_detection_model_id: int = 1
    default_classification_model_id: int = 3

    # Queue: how long a claim lasts without renewal, how often the queue looks for work it
    # was not told about. (How many tasks it runs at once is scaling: serve_config.yaml.)
    queue_lease_seconds: float = 30.0
    queue_poll_seconds: float = 2.0
    queue_max_attempts: int = 3
    queue_actor_name: str = "primitives_task_queue"
    webhook_actor_name: str = "primitives_webhook_sender"

    # Webhooks (CONTRACT.md E4): each attempt's time-out, how many attempts, the back-off
    # between them (doubling from the first, capped), how many are sent at once. Loopback
    # receivers are allowed in development only unless set here.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 2.0
    webhook_backoff_cap_seconds: float = 3600.0
    webhook_concurrency: int = 32
    webhook_allow_loopback: bool | None = None

    # Idempotency keys are remembered this long (CONTRACT.md E3).
    idempotency_hours: float = 24.0
    ray_namespace: str = "primitives"

    @model_validator(mode="after")
    def _secret_is_real(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if self.environment is Environment.production:
            if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
                raise ValueError(
                    "PRIMITIVES_JWT_SECRET must be set to a random value of at least 32 "
                    "characters in production (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')"
                )
        elif not secret:
            # Development only: a per-machine secret kept in var/ so tokens survive restarts
            # and every replica on this machine agrees.
            self.jwt_secret = SecretStr(_development_secret())
        return self

    @property
    def allows_loopback_webhooks(self) -> bool:
        if self.webhook_allow_loopback is not None:
            return self.webhook_allow_loopback
        return self.environment is Environment.development

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _development_secret() -> str:
    path = REPO_ROOT / "var" / "dev-jwt-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = path.open("x")
    except FileExistsError:
        return path.read_text().strip()
    with fd:
        fd.write(secrets.token_urlsafe(48))
    path.chmod(0o600)
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()


