"""What traces cost on the request path (docs/api.md §E15): the API in this process over a
SQLite file, the same submissions and status reads with traces off (no OTEL_* set) and on
(exporting over OTLP/HTTP to a local receiver that drops what it gets). Reported as CPU
milliseconds per request and their ratio, measured in one run.

    python -m bench.run --only tracing
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient

from config.serve_config import load_app_config
from config.settings import Settings
from harness.no_queue import NoQueue
from observability import tracing
from serve_app.cli import upgrade_database
from serve_app.main import create_app
from storage.catalog import sync_models
from storage.database import make_engine, make_session_factory
from storage.users import create_user

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


class _Drop(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _requests(client: TestClient, headers: dict[str, str], image: bytes, count: int) -> float:
    """CPU seconds of ``count`` submissions, each followed by a status read."""
    started = time.process_time()
    for _ in range(count):
        created = client.post(
            "/api/tasks", content=image, headers={**headers, "Content-Type": "image/jpeg"}
        )
        assert created.status_code == 200, created.text
        status = client.get(f"/api/tasks/{created.json()['id']}/status", headers=headers)
        assert status.status_code == 200
    return time.process_time() - started


def measure_tracing(image: bytes, count: int = 300) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="bench-tracing-")
    url = f"sqlite:///{folder}/bench.db"
    upgrade_database(url)
    settings = Settings(
        database_url=url,
        environment="development",
        jwt_secret=secrets.token_urlsafe(48),
        requests_per_minute=10**7,
        max_active_tasks_per_user=10**7,
        max_queued_tasks=10**7,
        limits_storage="memory",
    )
    sessions = make_session_factory(make_engine(url))
    registry = load_app_config().registry
    with sessions() as db:
        sync_models(db=db, registry=registry)
        create_user(db=db, username="bench", password="bench-password")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Drop)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    saved = os.environ.get(ENDPOINT_VARIABLE)
    cpu: dict[str, float] = {}
    try:
        for mode in ("off", "on", "off again"):
            if mode == "on":
                os.environ[ENDPOINT_VARIABLE] = f"http://127.0.0.1:{receiver.server_port}/v1/traces"
            else:
                os.environ.pop(ENDPOINT_VARIABLE, None)
            assert tracing.configure("bench", again=True) == (mode == "on")
            app = create_app(
                settings=settings, registry=registry, session_factory=sessions, queue=NoQueue()
            )
            with TestClient(app) as client:
                login = client.post(
                    "/oauth/login", data={"username": "bench", "password": "bench-password"}
                )
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                _requests(client, headers, image, 20)  # warm
                cpu[mode] = _requests(client, headers, image, count) / count
            tracing.flush()
    finally:
        if saved is None:
            os.environ.pop(ENDPOINT_VARIABLE, None)
        else:
            os.environ[ENDPOINT_VARIABLE] = saved
        tracing.configure("bench", again=True)
        receiver.shutdown()
    off = (cpu["off"] + cpu["off again"]) / 2
    return {
        "requests": count * 2,
        "cpu_ms_per_submit_and_status_off": round(off * 1000, 3),
        "cpu_ms_per_submit_and_status_on": round(cpu["on"] * 1000, 3),
        "on_over_off": round(cpu["on"] / off, 3),
        "off_runs_differ_by": round(abs(cpu["off"] - cpu["off again"]) / off, 3),
    }
