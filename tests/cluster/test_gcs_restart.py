"""The head may restart: Ray's GCS fault tolerance on an external Redis (Debian's redis-server,
started here on a free port, as `make test` starts PostgreSQL). A cluster on this machine (its
GCS, raylet, Serve's controller and proxy, the platform's replicas and actors, each a process)
stores its GCS state in that Redis; the GCS process is killed with tasks in flight and started
again (what a restarted head pod does in KubeRay). The application keeps serving while the GCS
is down, every accepted task, before, during and after, ends done exactly once (one result,
one "done" event), and Serve's controller answers again afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from config.settings import REPO_ROOT
from harness.local_platform import (
    free_port,
    start_local_platform,
    stop_local_platform,
    stop_orphaned_haproxy,
)
from tests.cluster.fake_cluster import wait_for


@pytest.fixture
def redis_server(tmp_path):
    """A Redis of our own on a free loopback port: its address."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: `make test-cluster` installs it"
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                == "PONG"
            ),
            20,
            "redis answering",
        )
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def submit(base: str, headers: dict[str, str], jpeg: bytes, count: int) -> list[int]:
    """``count`` tasks, 30 to a request (multipart): their ids."""
    ids: list[int] = []
    while len(ids) < count:
        files = [
            ("file", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(min(30, count - len(ids)))
        ]
        response = httpx.post(f"{base}/api/tasks", files=files, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        ids += response.json()["ids"]
    return ids


def test_a_killed_gcs_restarts_from_redis_and_every_task_ends_done_once(
    redis_server, platform_env, database_url, timings, sample_jpeg, monkeypatch
):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from storage.database import make_engine, make_session_factory
    from storage.models import Task, TaskEvent, TaskResult
    from storage.users import create_user

    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the nodes' workers import the platform
    # GCS fault tolerance: the GCS keeps its tables in this Redis, under this cluster's
    # namespace (KubeRay sets both from the RayCluster's gcsFaultToleranceOptions).
    monkeypatch.setenv("RAY_REDIS_ADDRESS", redis_server)
    monkeypatch.setenv("RAY_external_storage_namespace", f"primitives-{uuid.uuid4().hex[:8]}")
    platform_env["PRIMITIVES_MAX_ACTIVE_TASKS_PER_USER"] = "1000"
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 4, "include_dashboard": False},
    )
    head = cluster.head_node
    assert head is not None
    started = time.time()
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        base = start_local_platform(
            platform_env, namespace="primitives-gcs", address=cluster.address
        )
        with sessions() as db:
            create_user(db=db, username="gcs", password="gcs-password")
        token = httpx.post(
            f"{base}/oauth/login", data={"username": "gcs", "password": "gcs-password"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def count(ids: list[int], *statuses: str) -> int:
            with sessions() as db:
                return (
                    db.scalar(
                        select(func.count()).where(Task.id.in_(ids), Task.status.in_(statuses))
                    )
                    or 0
                )

        before = submit(base, headers, sample_jpeg, 300)
        wait_for(
            lambda: count(before, "done") >= 20 and count(before, "queued", "in progress") > 0,
            120,
            "tasks done and in flight",
        )
        timings["in_flight_at_kill"] = count(before, "queued", "in progress")
        head.kill_gcs_server()
        killed = time.monotonic()
        # The GCS is down: the API, the queue and the models still serve (they talk to each
        # other directly, and to PostgreSQL).
        during = submit(base, headers, sample_jpeg, 30)
        timings["accepted_while_down"] = len(during)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - killed)))
        head.start_gcs_server()
        timings["gcs_down_s"] = round(time.monotonic() - killed, 1)
        after = submit(base, headers, sample_jpeg, 30)
        everything = before + during + after
        settled = wait_for(
            lambda: count(everything, "queued", "in progress") == 0,
            300,
            "every task settled",
            step=1,
        )
        timings["all_settled_after_restart_s"] = settled
        # Serve's controller answers again, from the state the GCS kept in Redis.
        wait_for(
            lambda: serve.status().applications["primitives"].status == "RUNNING",
            60,
            "the application RUNNING",
        )
        assert sum(n["Alive"] for n in ray.nodes()) == 1
        with sessions() as db:
            statuses = dict(
                db.execute(
                    select(Task.status, func.count())
                    .where(Task.id.in_(everything))
                    .group_by(Task.status)
                ).all()
            )
            results = db.scalar(select(func.count()).where(TaskResult.task_id.in_(everything)))
            done_events = dict(
                db.execute(
                    select(TaskEvent.task_id, func.count())
                    .where(TaskEvent.task_id.in_(everything), TaskEvent.status == "done")
                    .group_by(TaskEvent.task_id)
                ).all()
            )
        assert statuses == {"done": len(everything)}
        assert results == len(everything)
        assert done_events == {task_id: 1 for task_id in everything}  # done once each
    finally:
        engine.dispose()
        stop_local_platform(platform_env)
        cluster.shutdown()
        stop_orphaned_haproxy(since=started)
