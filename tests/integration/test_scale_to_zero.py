"""Scale to zero on the running platform: SSD ships with no replica at rest (serve_config.yaml;
the tests' overlay shortens its idle delay to 10 s). A task for it waits for a replica to
start and completes; idle, the replica goes again; asking the platform about its models (as a
readiness probe does every few seconds) never starts one."""

from __future__ import annotations

import time

from harness.local_platform import replicas, wait_for
from tests.integration.conftest import wait_finished

SSD = 2


def ssd_replicas() -> int:
    return replicas("SSD", ("RUNNING", "STARTING", "UPDATING", "RECOVERING"))


def test_a_task_for_a_model_at_zero_starts_a_replica_which_goes_again_when_idle(
    http, user_headers, sample_jpeg
):
    headers = user_headers()
    # At rest: none (the replica of earlier SSD tasks gone).
    wait_for(lambda: ssd_replicas() == 0, 120, "SSD at zero")
    # Probes and catalog reads in the meantime ask nothing of a model at zero.
    for _ in range(8):
        assert http.get("/readyz").status_code == 200
        models = http.get("/api/models", headers=headers).json()["detection_models"]
        (ssd,) = [m for m in models if m["model_id"] == SSD]
        assert ssd["ready"] is True and ssd["replicas"] == 0
        time.sleep(1)
    assert ssd_replicas() == 0

    response = http.post(
        "/api/tasks",
        params={"detection_model_id": SSD},
        content=sample_jpeg,
        headers={**headers, "Content-Type": "image/jpeg", "Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    if body["status"] == "in progress":  # a cold start past the 60 s wait (a loaded machine)
        assert wait_finished(http, headers, [body["id"]], timeout=120) == {body["id"]: "done"}
        body = http.get(f"/api/tasks/{body['id']}/result", headers=headers).json()
    assert body["status"] == "done", body  # it waited for the replica, it did not fail
    assert body["result"]["detection_model"] == "SSD"
    assert replicas("SSD") == 1
    # Idle for the delay (10 s here), it is at zero again.
    wait_for(lambda: ssd_replicas() == 0, 60, "SSD back at zero")
