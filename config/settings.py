"""The platform's settings: one class, read from ``PRIMITIVES_*`` environment variables."""

from __future__ import annotations

import math
import os
import secrets
from collections import Counter
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A JWT secret must be random, not merely long: judged by the entropy its characters show, not
# by a list of known placeholders. secrets.token_urlsafe(48) shows about 340 bits, token_hex(32)
# about 240; a sentence or a repeated word shows far less, and spaces never come from a
# generator.
MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 160
REPEAT_LENGTH = 8  # a run of this many characters seen twice: a pattern, not chance
SECRET_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
REPO_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Everything that differs between deployments and is not scaling (that is serve_config)."""

    # hide_input_in_errors: a refused secret is never echoed in the start-up error.
    model_config = SettingsConfigDict(
        env_prefix="PRIMITIVES_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Development (demo user, loopback webhooks) only where nothing says otherwise: with a
    # PostgreSQL URL it must be set explicitly, and the container image and the manifests set
    # production.
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
    # Failed logins per (client address, user name), and per account from every address
    # together (many addresses guessing one password); password verifies at once per ingress
    # replica (argon2id takes 64 MiB each), on the logins' own threads, and logins queued for
    # them beyond that (more are refused at once, 503); the proxies whose X-Forwarded-For
    # names the client (comma-separated addresses or CIDR blocks; none by default, so the
    # peer's address counts).
    login_failures_per_minute: int = 10
    login_failures_per_account_per_minute: int = 50
    # Failed logins from one client address whatever the user names (made-up names pass the
    # two limits above): enough for a shared office's typos, not for a scan of names.
    login_failures_per_address_per_minute: int = 30
    login_concurrency: int = Field(default=4, ge=1)
    login_queue: int = Field(default=16, ge=0)
    trusted_proxies: str = ""
    # Requests come through the node's HAProxy run by deploy/haproxy, which appends the client
    # address to X-Forwarded-For (config/ray.env sets it with Ray's fast path); honoured only
    # while that fast path is on (``behind_local_haproxy``).
    proxy_appends_client: bool = False
    requests_per_minute: int = 1200
    # Images by URL (docs/api.md §E13): the whole fetch's time limit, the redirects followed
    # (each checked as the first URL), and fetches one user may have under way per replica.
    image_fetch_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    image_fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    image_fetches_per_user: int = Field(default=4, ge=1)
    # API keys one user may hold at once (docs/api.md §E12).
    api_keys_per_user: int = Field(default=20, ge=1)
    max_active_tasks_per_user: int = 200
    # The platform's queue (docs/api.md §E10): beyond this many tasks waiting to start, all
    # users together, a submission is answered 503 with Retry-After and stores nothing.
    max_queued_tasks: int = Field(default=10_000, ge=1)
    # Past 90% of that cap, a user holding this share of it (tasks waiting or running) adds
    # nothing more: the last tenth stays open to the users who hold little (1: no share).
    queue_share_per_user: float = Field(default=0.01, gt=0, le=1)
    queue_full_retry_after_seconds: int = Field(default=10, ge=1)
    # Pictures (GET .../visualization) one user may have drawn at once per ingress replica;
    # each decodes and encodes the whole input.
    drawings_per_user: int = Field(default=2, ge=1)
    # Pictures drawn at once per ingress replica, all users together (120 MB of RGB each at
    # the pixel limit); more than one user's share, so no user holds a replica's drawing.
    drawings_per_replica: int = Field(default=4, ge=2)
    # Requests one user may hold open per ingress replica waiting for a task (?wait=,
    # Prefer: wait); beyond them a request is answered at once with the task as it is.
    waits_per_user: int = Field(default=64, ge=1)
    # Event streams (GET /api/tasks/events) one user may hold open per ingress replica; how
    # often an open stream looks for new events.
    event_streams_per_user: int = Field(default=8, ge=1)
    event_poll_seconds: float = Field(default=0.5, gt=0)
    # An open stream ends after this long (below serve_config.yaml's request_timeout_s, which
    # would cut it); clients reconnect with Last-Event-ID and lose nothing.
    event_stream_seconds: float = Field(default=80.0, gt=0)

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

    # Webhooks (docs/api.md §E4): each attempt's time-out, how many attempts, the back-off
    # between them (doubling from the first, capped), how many are sent at once. Loopback
    # receivers are allowed in development only unless set here.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 2.0
    webhook_backoff_cap_seconds: float = 3600.0
    webhook_concurrency: int = 32
    # One user's deliveries in flight at most (none: a quarter of webhook_concurrency).
    webhook_per_user: int | None = Field(default=None, ge=1)
    # A webhook host's DNS lookup: on this many threads of its own per process (the ingress
    # at submission, the sender before each attempt), given up after this many seconds.
    webhook_dns_threads: int = Field(default=8, ge=1)
    webhook_dns_timeout_seconds: float = Field(default=3.0, gt=0)
    webhook_allow_loopback: bool | None = None

    # Idempotency keys are remembered this long (docs/api.md §E3), delivered or given-up
    # webhook deliveries and their attempt logs this many days; both are purged hourly.
    idempotency_hours: float = 24.0
    webhook_log_days: float = Field(default=7.0, gt=0)
    ray_namespace: str = "primitives"

    @property
    def behind_local_haproxy(self) -> bool:
        """Whether a loopback peer is the node's HAProxy that appended the client's address."""
        return self.proxy_appends_client and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"

    @model_validator(mode="after")
    def _environment_is_chosen(self) -> Settings:
        if "environment" not in self.model_fields_set and not self.database_url.startswith(
            "sqlite"
        ):
            raise ValueError(
                "PRIMITIVES_ENVIRONMENT is not set and the database is not the embedded SQLite "
                "file: set PRIMITIVES_ENVIRONMENT=production (or =development, explicitly, for "
                "a development database; it creates the demo user there)"
            )
        return self

    @model_validator(mode="after")
    def _drawings_leave_room_for_others(self) -> Settings:
        if self.drawings_per_user >= self.drawings_per_replica:
            raise ValueError(
                f"PRIMITIVES_DRAWINGS_PER_USER ({self.drawings_per_user}) must be below "
                f"PRIMITIVES_DRAWINGS_PER_REPLICA ({self.drawings_per_replica}): one user "
                "would hold every drawing of a replica"
            )
        return self

    @model_validator(mode="after")
    def _secret_is_real(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if self.environment is Environment.production:
            weakness = secret_weakness(secret)
            if weakness is not None:
                raise ValueError(
                    f"PRIMITIVES_JWT_SECRET {weakness}; production needs a random "
                    f"value ({SECRET_HINT})"
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
    def environment_is_explicit(self) -> bool:
        return "environment" in self.model_fields_set


def secret_bits(secret: str) -> float:
    """The entropy the secret's characters show: its length times the Shannon entropy of their
    distribution (a lower bound's estimate for a random string, far above it for text)."""
    if not secret:
        return 0.0
    counts = Counter(secret).values()
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts)
    return per_char * len(secret)


def _repeats(secret: str) -> bool:
    runs = [secret[i : i + REPEAT_LENGTH] for i in range(len(secret) - REPEAT_LENGTH + 1)]
    return len(set(runs)) < len(runs)


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` may not sign tokens in production, or None. It is never named."""
    if not secret:
        return "is not set"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if any(c.isspace() for c in secret):
        return "holds whitespace (a sentence, not a generated secret)"
    if secret_bits(secret) < MIN_SECRET_BITS:
        return (
            f"shows about {secret_bits(secret):.0f} bits of entropy, fewer than "
            f"{MIN_SECRET_BITS} (a word, a pattern or a placeholder)"
        )
    if _repeats(secret):
        return f"repeats a run of {REPEAT_LENGTH} characters (a pattern, not random)"
    return None


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
