"""The user's side on the running platform: webhooks from the real sender actor, cancel
through the real queue, the Python client and the CLI."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image

from primitives_client import Client, PrimitivesError
from tests.integration.conftest import wait_finished
from tests.integration.platform_helpers import paused_queue as pause_queue
from tests.integration.platform_helpers import queue_actors, result_rows, submit
from tests.receiver import Receiver
from training.render import render_jpeg
from webhooks import signing


@pytest.fixture
def receiver():
    made = Receiver([200])
    yield made
    made.close()


@pytest.fixture
def paused_queue():
    """The queue claims nothing while the test runs (running tasks finish)."""
    with pause_queue():
        yield


def test_a_finished_task_is_posted_to_its_webhook_signed(http, user_headers, receiver):
    headers = user_headers()
    task_id = http.post(
        "/api/tasks",
        params={"webhook": receiver.url},
        content=render_jpeg(31)[0],
        headers={**headers, "Content-Type": "image/jpeg"},
    ).json()["id"]
    ((received_headers, body),) = receiver.wait_for(1)
    secret = http.get("/api/me", headers=headers).json()["webhook_secret"]
    assert signing.verify(secret, received_headers, body)
    assert json.loads(body) == http.get(f"/tasks/{task_id}/result", headers=headers).json()
    assert json.loads(body)["status"] == "done"
    log = http.get(f"/api/tasks/{task_id}/webhooks", headers=headers).json()["deliveries"]
    assert [d["state"] for d in log] == ["delivered"]


def test_a_hanging_receiver_delays_no_task(http, user_headers):
    """The sender is its own actor: receivers that never answer in time hold its slots for
    their time-out, while tasks, their own and others', finish as usual."""
    hanging = Receiver([200], delay_s=15.0)
    try:
        headers = user_headers()
        hooked = [
            http.post(
                "/api/tasks",
                params={"webhook": hanging.url},
                content=render_jpeg(50 + i)[0],
                headers={**headers, "Content-Type": "image/jpeg"},
            ).json()["id"]
            for i in range(3)
        ]
        plain = [submit(http, headers, render_jpeg(60 + i)[0]) for i in range(3)]
        assert set(wait_finished(http, headers, hooked + plain, timeout=60).values()) == {"done"}
        hanging.wait_for(1)  # the sender got to them, and is still waiting on them
        states = {
            d["state"]
            for t in hooked
            for d in http.get(f"/api/tasks/{t}/webhooks", headers=headers).json()["deliveries"]
        }
        assert states == {"pending"}
    finally:
        hanging.close()


def test_canceled_tasks_never_run_while_others_do(http, user_headers, database_url, paused_queue):
    import ray

    headers = user_headers()
    doomed = submit(http, headers, render_jpeg(32)[0])
    kept = submit(http, headers, render_jpeg(33)[0])
    response = http.post(f"/api/tasks/{doomed}/cancel", headers=headers)
    assert response.json() == {"id": doomed, "status": "canceled"}
    ray.get([d.resume.remote() for d in queue_actors()])
    assert wait_finished(http, headers, [doomed, kept]) == {doomed: "canceled", kept: "done"}
    assert result_rows(database_url, [doomed, kept]) == {kept: 1}
    again = http.post(f"/api/tasks/{kept}/cancel", headers=headers)
    assert again.status_code == 409
    assert again.json() == {"detail": f"Task {kept} is already done."}


def test_the_python_client_submits_waits_draws_lists_cancels_and_deletes(
    platform, account, tmp_path
):
    image, sample = render_jpeg(34)
    path = tmp_path / "scene.jpg"
    path.write_bytes(image)
    with Client(platform.url) as client:
        client.login(*account)
        result = client.submit(path, wait=True)
        assert result["status"] == "done" and result["result"]["primitives"]
        task_id = result["id"]
        picture = client.visualize(task_id, tmp_path / "boxes.png")
        assert Image.open(io.BytesIO(picture)).size == Image.open(path).size
        assert (tmp_path / "boxes.png").read_bytes() == picture
        assert [t["id"] for t in client.list()] == [task_id]
        # A retry with the same key (as after a lost answer) is the same task.
        first = client.submit(image, idempotency_key="once")
        assert client.submit(image, idempotency_key="once") == first
        assert len(client.list()) == 2
        with pytest.raises(PrimitivesError) as ended:
            client.cancel(task_id)
        assert ended.value.status_code == 409
        assert client.delete(task_id) == {"id": task_id}
        with pytest.raises(PrimitivesError) as gone:
            client.result(task_id)
        assert gone.value.status_code == 404
        assert gone.value.detail == f"Task with id {task_id} does not exist."
        token = client.token
        client.logout()
    with Client(platform.url, token) as stale, pytest.raises(PrimitivesError) as refused:
        stale.me()
    assert refused.value.status_code == 401


def test_the_cli_logs_in_keeps_its_token_private_and_runs_tasks(platform, account, tmp_path):
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PRIMITIVES_URL": platform.url,
    }
    env.pop("PRIMITIVES_TOKEN", None)
    cli = [sys.executable, "-m", "primitives_client.cli"]

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], input=stdin, env=env, capture_output=True, text=True, timeout=300
        )

    assert run("list").returncode == 2  # not logged in yet
    login = run("login", "-u", account[0], "--password-stdin", stdin=account[1] + "\n")
    assert login.returncode == 0, login.stderr
    credentials = tmp_path / "config" / "primitives" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    images = []
    for seed in (35, 36):
        images.append(tmp_path / f"{seed}.jpg")
        images[-1].write_bytes(render_jpeg(seed)[0])
    submitted = run("submit", *map(str, images), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    results = [json.loads(line) for line in submitted.stdout.splitlines()]
    assert [r["status"] for r in results] == ["done", "done"]
    out = tmp_path / "boxes.png"
    assert run("visualize", str(results[0]["id"]), "-o", str(out)).returncode == 0
    assert Image.open(out).format == "PNG"
    listed = [json.loads(line)["id"] for line in run("list").stdout.splitlines()]
    assert listed == [r["id"] for r in results]
    assert json.loads(run("delete", str(listed[0])).stdout) == {"id": listed[0]}
    refused = run("result", str(listed[0]))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error 404: Task with id {listed[0]} does not exist."


def test_the_client_is_installed_as_primitives():
    executable = Path(sys.executable).parent / "primitives"
    assert executable.exists()
    shown = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "submit" in shown.stdout


def test_one_tasks_trace_spans_the_ingress_the_queue_the_models_and_the_sender(
    http, user_headers, receiver, span_collector
):
    """Traces (docs/api.md §E15) from the platform's own processes, read from what their real
    OTLP exporters sent: the client's trace continued from the POST to the webhook."""
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = http.post(
        "/api/tasks",
        params={"webhook": receiver.url},
        content=render_jpeg(33)[0],
        headers={
            **user_headers(),
            "Content-Type": "image/jpeg",
            "traceparent": f"00-{trace_id}-{client_span}-01",
        },
    )
    assert response.status_code == 200
    assert response.headers["traceresponse"].split("-")[1] == trace_id
    ((hook_headers, _),) = receiver.wait_for(1)
    assert hook_headers["traceparent"].split("-")[1] == trace_id
    spans = span_collector.wait_for(
        trace_id,
        {
            "POST /api/tasks",
            "store tasks",
            "run task",
            "claim",
            "detector call",
            "classifier call",
            "store result",
            "webhook delivery",
        },
    )
    assert spans["POST /api/tasks"]["parent"] == client_span
    assert spans["run task"]["parent"] == spans["store tasks"]["id"]
    assert spans["detector call"]["parent"] == spans["run task"]["id"]
    assert spans["detector call"]["attributes"]["model.name"].string_value == "YOLO"
    assert {s["service"] for s in spans.values()} == {
        "primitives-api",
        "primitives-queue",
        "primitives-webhooks",
    }
