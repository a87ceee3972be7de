"""A model rollout under load on the running platform, through canary weights: one model's
new weights go out as a canary for half its tasks while 200 tasks are in flight and more
arrive, then are promoted, then rolled back. Nothing is lost or failed, no request gets a
5xx, each result names exactly one of the two weights' checksums (a task runs on one
version), every task accepted while the canary ran went to the version its id's share says,
and every task accepted after the promotion ran on the new one. The new registry is applied
through Serve's Python API, as ``serve deploy`` of an edited serve_config.yaml applies it:
Serve derives the application's version from its arguments, so every deployment rolls (new
replicas, old ones drained), the API's included."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from deployments.task_queue import takes_canary
from inference.weights import file_sha256
from tests.integration.conftest import wait_finished

MODEL_ID, MODEL = 4, "MyYOLO"  # a model brought by the tests (conftest): ours to change


def submit(http, headers, jpeg: bytes, codes: list[int]) -> int | None:
    response = http.post(
        "/api/tasks",
        params={"detection_model_id": MODEL_ID},
        content=jpeg,
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    codes.append(response.status_code)
    return response.json()["id"] if response.status_code == 200 else None


def checksums(http, headers, ids: list[int]) -> dict[int, str]:
    out = {}
    for task_id in ids:
        body = http.get(f"/api/tasks/{task_id}/result", headers=headers).json()
        assert body["status"] == "done", body
        out[task_id] = body["result"]["detection_weights_sha256"]
    return out


def test_a_canary_rollout_under_load_loses_nothing_and_switches_versions_cleanly(
    platform, http, user_headers, sample_jpeg, tmp_path
):
    from ultralytics import YOLO

    headers = user_headers()
    before = [dict(m) for m in platform.models]
    (old,) = [m for m in before if m["name"] == MODEL]
    new_weights = tmp_path / "my_yolo_v2.pt"
    YOLO("yolov8n.yaml").save(str(new_weights))  # another version: other weights
    old_sha, new_sha = file_sha256(Path(old["weights"])), file_sha256(new_weights)
    assert old_sha != new_sha
    after = [{**m, "weights": str(new_weights)} if m["name"] == MODEL else m for m in before]
    share = 0.5
    canary = [
        {**m, "canary": {"weights": str(new_weights), "share": share}} if m["name"] == MODEL else m
        for m in before
    ]

    codes: list[int] = []
    in_flight = [i for i in (submit(http, headers, sample_jpeg, codes) for _ in range(200)) if i]
    during: list[int | None] = []
    rolled = threading.Event()

    def keep_submitting() -> None:
        while not rolled.is_set():
            during.append(submit(http, headers, sample_jpeg, codes))
            time.sleep(0.05)

    feeder = threading.Thread(target=keep_submitting)
    feeder.start()
    # The rollout must begin while tasks are waiting or running, or it proves nothing.
    unsettled = next(
        (
            i
            for i in reversed(in_flight)  # the last submitted are the likeliest to wait
            if http.get(f"/api/tasks/{i}/status", headers=headers).json()["status"]
            in ("queued", "in progress")
        ),
        None,
    )
    assert unsettled is not None, "every task had finished before the rollout began"
    try:
        platform.rollout(canary)  # the new weights beside the old, for half the tasks
    finally:
        rolled.set()
        feeder.join()
    with_canary = [i for i in (submit(http, headers, sample_jpeg, codes) for _ in range(20)) if i]
    wait_finished(http, headers, with_canary, timeout=300)
    platform.rollout(after)  # promoted: one edit, the canary's weights become the model's
    later = [i for i in (submit(http, headers, sample_jpeg, codes) for _ in range(5)) if i]

    assert all(code == 200 for code in codes), sorted(set(codes))  # no 5xx, nothing refused
    everything = in_flight + [i for i in during if i is not None] + with_canary + later
    assert len(everything) == len(codes)
    statuses = wait_finished(http, headers, everything, timeout=300)
    assert set(statuses.values()) == {"done"}  # none failed, none lost
    named = checksums(http, headers, everything)
    assert set(named.values()) <= {old_sha, new_sha}  # one version each, never a mix
    # While the canary ran, each task went where its id's share sent it.
    for task_id in with_canary:
        assert named[task_id] == (new_sha if takes_canary(task_id, share) else old_sha)
    assert {named[i] for i in with_canary} == {old_sha, new_sha}
    assert {named[i] for i in later} == {new_sha}
    assert old_sha in {named[i] for i in in_flight}  # the rollout came while these ran

    # Rolling back is the same step with the old file.
    platform.rollout(before)
    back = submit(http, headers, sample_jpeg, codes)
    assert back is not None
    wait_finished(http, headers, [back])
    assert checksums(http, headers, [back]) == {back: old_sha}
