"""Traces (docs/api.md §E15), read from what the real OTLP exporter sends to a local OTLP/HTTP
receiver: one task's spans (the POST, storing it, the claim, both model calls, the result
write, the webhook delivery) under the client's trace id, each where the trace says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from deployments.task_queue import ServeModels
from harness.otlp_receiver import Collector
from inference import Classification, Detection, ModelAnswer
from observability import tracing
from tests.api.conftest import run_queue_until_done, serving
from tests.receiver import Receiver
from webhooks.sender import DeliveryStore, WebhookSender

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def collector(monkeypatch) -> Iterator[Collector]:
    running = Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", running.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "primitives-test")
    assert tracing.configure("primitives-test", again=True)
    yield running
    monkeypatch.undo()
    assert not tracing.configure("primitives-test", again=True)  # off again for other tests
    running.server.shutdown()


class Handle:
    """A stand-in Serve handle: ``predict.remote(image)`` answers as a model replica would."""

    def __init__(self, answer: ModelAnswer) -> None:
        self.answer = answer
        self.predict = self

    def options(self, **_: object) -> Handle:
        return self

    def remote(self, image: bytes):
        async def answer() -> ModelAnswer:
            await asyncio.sleep(0.01)
            return self.answer

        return answer()


def run_queue_once(sessions) -> None:
    """The real dispatcher over ServeModels, until the one task is done."""
    models = ServeModels(
        {1: Handle(ModelAnswer(Detection(()), "YOLO", 1, 4.0))},  # type: ignore[dict-item]
        {3: Handle(ModelAnswer(Classification("office", 0.9, {"office": 0.9}), "rn", 3, 2.0))},  # type: ignore[dict-item]
    )
    run_queue_until_done(sessions, models, 1)


def test_one_tasks_spans_share_the_clients_trace_from_post_to_webhook(
    collector, settings, registry, sessions, read_sessions, notifications, make_user, sample_jpeg
):
    receiver = Receiver([200])
    try:
        with serving(settings, registry, sessions, read_sessions, notifications) as client:
            name, password = make_user("alice")
            token = client.post("/oauth/login", data={"username": name, "password": password})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            response = client.post(
                "/api/tasks",
                params={"webhook": receiver.url},
                content=sample_jpeg,
                headers={
                    **headers,
                    "Content-Type": "image/jpeg",
                    "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                },
            )
            assert response.status_code == 200
            # The answer names the trace it continued (W3C Trace Context level 2).
            version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
            assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
            fresh = client.get("/api/tasks", headers=headers).headers["traceresponse"]
            assert fresh.split("-")[1] != CLIENT_TRACE  # no traceparent: a trace of its own
        run_queue_once(sessions)
        sender = WebhookSender(DeliveryStore(sessions), allow_loopback=True)

        async def send() -> None:
            deadline = time.monotonic() + 30
            while not receiver.received:
                assert time.monotonic() < deadline, "no webhook was sent"
                await sender.send_once()
                await asyncio.sleep(0.05)
            await sender.close()

        asyncio.run(send())
        (delivered_headers, _), *_ = receiver.wait_for(1)
    finally:
        receiver.close()
    tracing.flush()

    post = collector.named("POST /api/tasks")
    assert post["id"] == span_id and post["parent"] == CLIENT_SPAN
    stored = collector.named("store tasks")
    run = collector.named("run task")
    spans = {
        "POST /api/tasks": post,
        "store tasks": stored,
        "run task": run,
        "claim": collector.named("claim"),
        "detector call": collector.named("detector call"),
        "classifier call": collector.named("classifier call"),
        "store result": collector.named("store result"),
        "webhook delivery": collector.named("webhook delivery"),
    }
    assert {s["trace"] for s in spans.values()} == {CLIENT_TRACE}
    assert stored["parent"] == post["id"]
    assert run["parent"] == stored["id"]  # across processes, through the task's row
    for child in ("claim", "detector call", "classifier call", "store result"):
        assert spans[child]["parent"] == run["id"], child
    assert spans["webhook delivery"]["parent"] == stored["id"]
    assert spans["detector call"]["attributes"]["model.name"].string_value == "YOLO"
    assert post["service"] == "primitives-test"
    # The receiver may continue the trace too.
    assert delivered_headers["traceparent"].split("-")[1] == CLIENT_TRACE


def test_with_no_exporter_set_nothing_is_traced(client, alice, sample_jpeg, sessions):
    assert not tracing.on()
    response = client.post(
        "/api/tasks",
        content=sample_jpeg,
        headers={
            **alice,
            "Content-Type": "image/jpeg",
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        },
    )
    assert response.status_code == 200 and "traceresponse" not in response.headers
    from sqlalchemy import select

    from storage.models import Task

    with sessions() as db:
        assert db.scalar(select(Task.traceparent)) is None
