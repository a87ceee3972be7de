"""Traces (docs/api.md §E15): OpenTelemetry spans for one task, from the POST that stores it
through its claim, both model calls and its result write to its webhook delivery, under one
trace id, continuing a client's W3C ``traceparent``.

The trace crosses processes through the database: the task row keeps the ``traceparent`` of
the span that stored it, and the queue and the webhook sender start their spans as its
children. Spans go out over OTLP (HTTP and protobuf) as OpenTelemetry's standard variables
say (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``...). With no
exporter set (or ``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``) nothing is
installed: no middleware, no span objects, no stored ``traceparent``; each hook below is one
boolean test.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_on: bool | None = None  # decided once per process, by ``configure``
# This module's own provider, not OpenTelemetry's global one (which may be set only once
# and may belong to whoever embeds us).
_provider: Any = None


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or exporter == "otlp"
    )


def configure(service: str, *, again: bool = False) -> bool:
    """Install the OTLP exporter in this process when the variables ask for it (once; later
    calls answer the first's decision, unless ``again``: a test that changed them); whether
    traces are on. ``service``: the ``service.name`` unless OTEL_SERVICE_NAME names one."""
    global _on, _provider
    with _lock:
        if again:
            if _provider is not None:
                _provider.shutdown()  # sends what it holds
            _provider, _on = None, None
        if _on is None:
            _on = wanted()
            if _on:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.resources import SERVICE_NAME, Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
                _provider = TracerProvider(resource=Resource.create(attributes))
                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return _on


def on() -> bool:
    return bool(_on)


def flush(timeout_s: float = 5.0) -> None:
    """Send the spans still batched (a process about to end, a test about to read them)."""
    if _on and _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def _tracer() -> trace.Tracer:
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer("primitives")


def parent_of(traceparent: str | None) -> Context | None:
    """The context a stored ``traceparent`` names (None: none stored)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    """The current span's ``traceparent`` (to store with a task), or None when off."""
    if not _on:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time_ns: int | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span, current within the block, child of the current one or of the stored
    ``parent``; nothing when traces are off."""
    if not _on:
        yield None
        return
    context = parent_of(parent) if parent is not None else None
    with _tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        start_time=start_time_ns,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
    ) as current:
        yield current


def traceresponse(current: Span) -> str:
    """The W3C ``traceresponse`` header (Trace Context level 2) naming ``current``."""
    context = current.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class TraceMiddleware:
    """ASGI: a server span per HTTP request, continuing the request's ``traceparent``, named
    by its route, and a ``traceresponse`` header on the answer. Installed only when on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", [])
            if key in (b"traceparent", b"tracestate")
        }
        method = scope.get("method", "GET")
        with _tracer().start_as_current_span(
            method,
            context=_PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as current:
            header = traceresponse(current).encode()

            async def send_with_header(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"traceresponse", header)]
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_with_header)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
