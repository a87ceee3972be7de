"""The webhook sender: takes due deliveries from the database, POSTs each signed body to its
(checked, pinned) address, logs the attempt and schedules a retry with exponential back-off
and jitter. Deliveries run concurrently and each is bounded by a time-out, so a slow or dead
receiver holds one slot for at most that long and never the task queue, which only stores
the delivery. The time-out bounds the whole attempt (resolving, connecting, the answer's head),
not each read: a receiver that sends a byte every few seconds is cut off all the same, long
before the delivery's lock lapses, so no delivery is ever taken twice at once. Knows nothing
of Ray: the ``WebhookSenderActor`` (deployments/webhook_sender.py) runs it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from opentelemetry.trace import SpanKind

from observability import tracing
from storage import webhooks as deliveries
from storage.database import Sessions, utcnow
from webhooks import signing
from webhooks.urls import Resolver, UnsafeUrl

log = logging.getLogger(__name__)
USER_AGENT = "primitives-webhooks/1"
# Endpoints whose failures are counted at once (the oldest forgotten beyond).
MAX_ENDPOINTS_KEPT = 10_000


def retry_delay(attempt: int, *, base_s: float, cap_s: float) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from ``base_s``, capped, with
    jitter (between half and all of it) so that retries of many events spread out."""
    return min(cap_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class DeliveryStore(Sessions):
    """The delivery functions, one short session per call."""

    def take_due(
        self,
        *,
        limit: int,
        lock_seconds: float,
        per_user: int | None = None,
        running: dict[int, int] | None = None,
    ) -> list[deliveries.DueDelivery]:
        return self.run(
            lambda db: deliveries.take_due(
                db=db, limit=limit, lock_seconds=lock_seconds, per_user=per_user, running=running
            )
        )

    def postpone_url(self, *, url: str, until: datetime) -> int:
        return self.run(lambda db: deliveries.postpone_url(db=db, url=url, until=until))

    def secret(self, *, user_id: int) -> str:
        return self.run(lambda db: deliveries.ensure_secret(db=db, user_id=user_id))

    def record_attempt(
        self,
        *,
        delivery: deliveries.DueDelivery,
        started_at: datetime,
        duration_ms: float,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        self.run(
            lambda db: deliveries.record_attempt(
                db=db,
                delivery=delivery,
                started_at=started_at,
                duration_ms=duration_ms,
                status_code=status_code,
                error=error,
                next_attempt_at=next_attempt_at,
            )
        )


@dataclass
class SenderStats:
    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    paused: int = 0  # endpoints paused


@dataclass
class WebhookSender:
    store: DeliveryStore
    allow_loopback: bool
    concurrency: int = 32
    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_cap_s: float = 3600.0
    poll_seconds: float = 1.0
    stats: SenderStats = field(default_factory=SenderStats)
    resolver: Resolver = field(default_factory=Resolver)
    # At most this many of one user's deliveries in flight (None: a quarter of the slots), so
    # one user's receivers that never answer leave the others' slots free.
    per_user: int | None = None
    # An endpoint (URL) whose attempts failed this many times in a row is paused: its pending
    # deliveries wait (no attempt spent) for a minute, twice as long each time it fails again
    # after a pause, up to ``pause_cap_s``; a success ends it (as Standard Webhooks senders
    # disable and retry a failing endpoint).
    pause_after: int = 5
    pause_s: float = 60.0
    pause_cap_s: float = 3600.0

    def __post_init__(self) -> None:
        self.running: set[asyncio.Task[None]] = set()
        self.share = self.per_user or max(1, self.concurrency // 4)
        self.by_user: Counter[int] = Counter()  # deliveries in flight, by user
        # By URL: (failed attempts in a row, pauses since the last success).
        self.failing: dict[str, tuple[int, int]] = {}
        self.wake = asyncio.Event()
        # No proxies from the environment (they would bypass the address check), no
        # redirects (a 3xx is a failed attempt).
        self.client = httpx.AsyncClient(
            timeout=self.timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    @property
    def lock_seconds(self) -> float:
        return self.timeout_s * 3 + 30

    def notify(self) -> None:
        self.wake.set()

    async def close(self) -> None:
        for task in list(self.running):
            task.cancel()
        await self.client.aclose()

    async def send_once(self) -> int:
        """Take what fits in the free slots and start sending it; how many were started."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return 0
        # Locked for far longer than an attempt may take (its deadline), so no other sender
        # takes it meanwhile.
        due = await asyncio.to_thread(
            self.store.take_due,
            limit=free,
            lock_seconds=self.lock_seconds,
            per_user=self.share,
            running={u: n for u, n in self.by_user.items() if n},
        )
        for delivery in due:
            task = asyncio.create_task(self.deliver(delivery))
            self.running.add(task)
            self.by_user[delivery.user_id] += 1
            task.add_done_callback(functools.partial(self._finished, delivery.user_id))
        return len(due)

    def _finished(self, user_id: int, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.by_user[user_id] -= 1
        if not self.by_user[user_id]:
            del self.by_user[user_id]
        self.wake.set()

    def _pause_until(self, url: str, delivered: bool) -> datetime | None:
        """Count the attempt's outcome for its endpoint; when it fails ``pause_after`` times in
        a row, the moment its deliveries wait until."""
        if delivered:
            self.failing.pop(url, None)
            return None
        failures, pauses = self.failing.get(url, (0, 0))
        failures += 1
        if failures < self.pause_after:
            self.failing[url] = (failures, pauses)
            return None
        self.failing[url] = (0, pauses + 1)
        if len(self.failing) > MAX_ENDPOINTS_KEPT:
            del self.failing[next(iter(self.failing))]
        return utcnow() + timedelta(seconds=min(self.pause_cap_s, self.pause_s * 2**pauses))

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                if not await self.send_once():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), timeout=self.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be restarting: retry
                log.exception("taking webhook deliveries failed; retrying")
                await asyncio.sleep(1.0)

    async def post(self, delivery: deliveries.DueDelivery) -> int:
        """One signed POST to the checked address; the status code."""
        target = await self.resolver.resolve(delivery.url, allow_loopback=self.allow_loopback)
        secret = await asyncio.to_thread(self.store.secret, user_id=delivery.user_id)
        body = delivery.body.encode()
        headers = {
            **signing.headers(secret, delivery.event_id, body),
            "host": target.host_header(),
            "user-agent": USER_AGENT,
        }
        traceparent = tracing.current_traceparent()  # the receiver may continue the trace
        if traceparent is not None:
            headers["traceparent"] = traceparent
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with self.client.stream(
            "POST", target.pinned_url(), content=body, headers=headers, extensions=extensions
        ) as response:
            return response.status_code

    async def deliver(self, delivery: deliveries.DueDelivery) -> None:
        """One attempt, logged; with traces on, under a span continuing its task's trace."""
        if not tracing.on():
            await self._deliver(delivery)
            return
        with tracing.span(
            "webhook delivery",
            parent=delivery.traceparent,
            kind=SpanKind.CLIENT,
            attributes={"task.id": delivery.task_id, "webhook.attempt": delivery.attempt},
        ):
            await self._deliver(delivery)

    async def _deliver(self, delivery: deliveries.DueDelivery) -> None:
        started_at, started = utcnow(), time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole attempt, not each read
                status_code = await self.post(delivery)
            if not 200 <= status_code < 300:
                error = (
                    f"answered {status_code}; redirects are not followed"
                    if 300 <= status_code < 400
                    else f"answered {status_code}"
                )
        except UnsafeUrl as exc:
            error = str(exc)
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivered = error is None
        next_at = None
        if not delivered and delivery.attempt < self.max_attempts:
            next_at = utcnow() + timedelta(
                seconds=retry_delay(
                    delivery.attempt, base_s=self.backoff_s, cap_s=self.backoff_cap_s
                )
            )
        paused_until = self._pause_until(delivery.url, delivered)
        if next_at is not None and paused_until is not None:
            next_at = max(next_at, paused_until)
        if delivered:
            self.stats.delivered += 1
        elif next_at is None:
            self.stats.gave_up += 1
            log.warning(
                "webhook %s: gave up after %d attempts (%s)",
                delivery.event_id,
                delivery.attempt,
                error,
                extra=delivery.log_extra(),
            )
        else:
            self.stats.failed_attempts += 1
        try:
            await asyncio.to_thread(
                self.store.record_attempt,
                delivery=delivery,
                started_at=started_at,
                duration_ms=(time.perf_counter() - started) * 1000,
                status_code=status_code,
                error=error,
                next_attempt_at=next_at,
            )
            if paused_until is not None:
                moved = await asyncio.to_thread(
                    self.store.postpone_url, url=delivery.url, until=paused_until
                )
                self.stats.paused += 1
                log.warning(
                    "webhook endpoint paused until %s after %d failed attempts in a row "
                    "(%d deliveries wait)",
                    paused_until.isoformat(timespec="seconds"),
                    self.pause_after,
                    moved,
                    extra=delivery.log_extra(),
                )
        except Exception:  # noqa: BLE001 - the lock lapses and the attempt is made again
            log.exception(
                "webhook %s: could not record the attempt",
                delivery.event_id,
                extra=delivery.log_extra(),
            )
