"""Housekeeping the queue runs every hour: old settled tasks (when a retention is set),
expired idempotency keys, finished webhook deliveries (storage.retention)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from config.settings import Settings
from storage.database import utcnow

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0


async def retention_loop(sessions: Any, settings: Settings) -> None:
    """Hourly: purge settled tasks older than ``retention_days`` (when set), idempotency keys
    past their hours and webhook deliveries finished over ``webhook_log_days`` ago."""
    from datetime import timedelta

    from storage import retention

    def purge() -> tuple[int, int, int]:
        now = utcnow()
        with sessions() as db:
            tasks = (
                retention.purge_settled_before(
                    db=db, moment=now - timedelta(days=settings.retention_days)
                )
                if settings.retention_days > 0
                else 0
            )
            keys = retention.purge_expired_keys(
                db=db, moment=now - timedelta(hours=settings.idempotency_hours)
            )
            hooks = retention.purge_finished_deliveries(
                db=db, moment=now - timedelta(days=settings.webhook_log_days)
            )
            return tasks, keys, hooks

    while True:
        try:
            tasks, keys, hooks = await asyncio.to_thread(purge)
            if tasks or keys or hooks:
                log.info(
                    "retention: purged %d settled tasks, %d idempotency keys, %d webhook "
                    "deliveries",
                    tasks,
                    keys,
                    hooks,
                )
        except Exception:  # noqa: BLE001 - the database may be restarting: next round
            log.exception("retention: purge failed; trying again in an hour")
        await asyncio.sleep(RETENTION_EVERY_S)
