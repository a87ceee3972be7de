"""The webhook sender: a named, detached, self-restarting Ray actor around
``webhooks.sender.WebhookSender``. It shares nothing with the task queue but the database,
so a slow receiver never delays a task; deliveries are stored, so a restart loses none."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from typing import Any

import ray

from config.settings import Settings, get_settings
from storage.database import make_engine, make_session_factory
from webhooks.sender import DeliveryStore, WebhookSender
from webhooks.urls import Resolver

log = logging.getLogger(__name__)


@ray.remote(
    num_cpus=0,
    max_restarts=-1,
    max_task_retries=-1,  # type: ignore[call-overload]
    max_concurrency=100,
)
class WebhookSenderActor:
    def __init__(self) -> None:
        from deployments.logs import json_logging

        json_logging(__name__, "webhooks.sender", file_name="webhook_sender.log")
        from observability import tracing

        tracing.configure("primitives-webhooks")  # OTEL_* set: a span per attempt (§E15)
        settings: Settings = get_settings()
        engine = make_engine(settings.database_url, pool_size=4)
        self.sender = WebhookSender(
            DeliveryStore(make_session_factory(engine)),
            allow_loopback=settings.allows_loopback_webhooks,
            concurrency=settings.webhook_concurrency,
            per_user=settings.webhook_per_user,
            timeout_s=settings.webhook_timeout_seconds,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_seconds,
            backoff_cap_s=settings.webhook_backoff_cap_seconds,
            resolver=Resolver(
                threads=settings.webhook_dns_threads, timeout_s=settings.webhook_dns_timeout_seconds
            ),
        )
        self._loop = asyncio.get_running_loop().create_task(self.sender.run())
        log.info(
            "webhook sender started (%d at once, %d attempts)",
            settings.webhook_concurrency,
            settings.webhook_max_attempts,
        )

    def status(self) -> dict[str, Any]:
        return {**asdict(self.sender.stats), "sending": len(self.sender.running)}

    async def ready(self) -> bool:
        # An async method: it makes this an async actor, whose event loop runs the sender.
        return not self._loop.done()

    def pid(self) -> int:
        return os.getpid()
