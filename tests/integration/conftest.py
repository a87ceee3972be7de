"""A real local Ray cluster running the real Serve application against a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import REPO_ROOT
from harness.otlp_receiver import Collector

# SSD at zero as it ships, idle 10 s instead of 300 (test_scale_to_zero.py).
OVERLAY = REPO_ROOT / "config" / "short-idle.yaml"
SECRET = "integration-" + uuid.uuid4().hex + uuid.uuid4().hex


def _own_checkpoints(folder: Path) -> list[dict]:
    """Bring-your-own models, as a user would: an ultralytics .pt and a torchvision state dict,
    made here, registered through the builder's args only."""
    import torch
    import torchvision
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(str(folder / "my_yolo.pt"))
    classifier = torchvision.models.get_model("shufflenet_v2_x0_5", weights=None, num_classes=2)
    torch.save(classifier.state_dict(), folder / "my_scenes.pt")
    return [
        {
            "id": 4,
            "name": "MyYOLO",
            "type": "detection_model",
            "backend": "ultralytics",
            "weights": str(folder / "my_yolo.pt"),
            "image_size": 128,
        },
        {
            "id": 5,
            "name": "my_scenes",
            "type": "classification_model",
            "backend": "torchvision_classifier",
            "arch": "shufflenet_v2_x0_5",
            "weights": str(folder / "my_scenes.pt"),
            "classes": ["indoor", "outdoor"],
            "image_size": 64,
        },
    ]


class Platform:
    """The running platform; ``restart()`` stops the whole Ray cluster and starts it again on
    the same port and database."""

    def __init__(self, env: dict[str, str], models: list[dict]):
        from harness.local_platform import free_ports

        self.env, self.models = env, models
        self.port, self.metrics_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from harness.local_platform import start_local_platform

        start_local_platform(
            self.env,
            models=self.models,
            namespace="primitives-tests",
            port=self.port,
            metrics_port=self.metrics_port,
            dashboard_port=self._another_port(),
            overlays=[OVERLAY],
        )

    def stop(self) -> None:
        from harness.local_platform import stop_local_platform

        stop_local_platform(self.env)

    def _another_port(self) -> int:
        """A free port that is neither of ours (they are free too while Ray is down)."""
        from harness.local_platform import free_ports

        while True:
            (port,) = free_ports(1)
            if port not in (self.port, self.metrics_port):
                return port

    def restart(self) -> None:
        self.stop()
        self.start()

    def rollout(self, models: list[dict]) -> None:
        """Apply a new registry to the running application (as ``serve deploy`` of an edited
        serve_config.yaml does); returns when the application runs it everywhere."""
        from harness.local_platform import deploy

        self.models = models
        deploy(models=models, overlays=[OVERLAY])


@pytest.fixture(scope="session")
def span_collector() -> Iterator[Collector]:
    """Where the platform's processes send their spans (docs/api.md §E15)."""
    running = Collector()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def platform(
    database_url: str, registry, tmp_path_factory, span_collector: Collector
) -> Iterator[Platform]:
    """Start Ray, deploy the application; tear everything down after the run."""
    env = {
        # Traces on, to a receiver in this process, sent every half second.
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": span_collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "PRIMITIVES_DATABASE_URL": database_url,
        "PRIMITIVES_ENVIRONMENT": "production",
        "PRIMITIVES_JWT_SECRET": SECRET,
        "PRIMITIVES_QUEUE_LEASE_SECONDS": "4",
        "PRIMITIVES_QUEUE_POLL_SECONDS": "0.5",
        "PRIMITIVES_QUEUE_ACTOR_NAME": f"queue_{uuid.uuid4().hex[:8]}",
        "PRIMITIVES_WEBHOOK_ACTOR_NAME": f"hooks_{uuid.uuid4().hex[:8]}",
        # The tests' receivers listen on loopback, which production otherwise refuses.
        "PRIMITIVES_WEBHOOK_ALLOW_LOOPBACK": "true",
        "PRIMITIVES_WEBHOOK_BACKOFF_SECONDS": "0.2",
        # Metrics reach the node's endpoint every 2 s rather than 10 (the metrics test).
        "RAY_metrics_report_interval_ms": "2000",
        "PRIMITIVES_MAX_ACTIVE_TASKS_PER_USER": "100000",
        "PRIMITIVES_REQUESTS_PER_MINUTE": "1000000",
        # Every test client is 127.0.0.1: the failures of one test's hostile logins must not
        # spend the next one's budget (the per-address and name limit stays at 10).
        "PRIMITIVES_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE": "100000",
    }
    models = [m.model_dump(mode="json") for m in registry.models]
    models += _own_checkpoints(tmp_path_factory.mktemp("byo"))
    running = Platform(env, models)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def http(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def user_headers(database_url: str, http: httpx.Client):
    """Create a user with the CLI's service and log in through the real endpoint."""
    from storage.database import make_engine, make_session_factory
    from storage.users import create_user

    engine = make_engine(database_url)

    def make() -> dict[str, str]:
        name = f"u_{uuid.uuid4().hex[:8]}"
        with make_session_factory(engine)() as db:
            create_user(db=db, username=name, password="pw-integration")
        response = http.post("/oauth/login", data={"username": name, "password": "pw-integration"})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    yield make
    engine.dispose()


@pytest.fixture
def account(database_url, http):
    """A fresh user: (username, password)."""
    from storage.database import make_engine, make_session_factory
    from storage.users import create_user

    name, password = f"c_{uuid.uuid4().hex[:8]}", "pw-client-1"
    engine = make_engine(database_url)
    with make_session_factory(engine)() as db:
        create_user(db=db, username=name, password=password)
    engine.dispose()
    return name, password


def wait_finished(
    http: httpx.Client, headers: dict[str, str], task_ids: list[int], timeout: float = 180.0
) -> dict[int, str]:
    """Poll until every task is done, failed or canceled; returns the final statuses."""
    deadline = time.monotonic() + timeout
    final: dict[int, str] = {}
    while time.monotonic() < deadline and len(final) < len(task_ids):
        for task_id in task_ids:
            if task_id in final:
                continue
            response = http.get(f"/api/tasks/{task_id}/status", headers=headers)
            if response.status_code == 503:  # the database restarting: retry, as told
                assert response.headers["retry-after"]
                continue
            assert response.status_code == 200, response.text
            status = response.json()["status"]
            if status in ("done", "failed", "canceled"):
                final[task_id] = status
        time.sleep(0.25)
    missing = set(task_ids) - set(final)
    assert not missing, f"tasks never finished: {sorted(missing)}"
    return final
