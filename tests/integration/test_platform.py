"""The whole platform: HTTP through the Serve proxy, the queue actor, the real models."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
from sqlalchemy import select

from storage.database import make_engine, make_session_factory
from storage.models import Task, TaskResult
from tests.integration.conftest import wait_finished
from tests.integration.platform_helpers import (
    queue_actors,
    result_rows,
    submit,
)
from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_jpeg
from training.sources import EVAL_PHOTOS

CONTRACT_KEYS = {"primitive_class", "x", "y", "width", "height", "rotation", "probability"}


def test_prefer_wait_answers_the_result_in_one_request(http, user_headers):
    headers = user_headers()
    image, sample = render_jpeg(12)
    started = time.monotonic()
    response = http.post(
        "/api/tasks",
        content=image,
        headers={**headers, "Content-Type": "image/jpeg", "Prefer": "wait=30"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=30"
    body = response.json()
    assert body["status"] == "done", body
    assert body["result"]["image_class"] == SCENE_CLASSES[sample.scene]
    assert body["result"]["primitives"]
    # Woken by the finish, not by the end of the wait.
    assert time.monotonic() - started < 20
    assert http.get(f"/tasks/{body['id']}/result", headers=headers).json() == body


@pytest.mark.parametrize("detection", [1, 2], ids=["YOLO", "SSD"])
def test_a_task_runs_to_done_with_a_result_of_the_contracts_shape(http, user_headers, detection):
    headers = user_headers()
    image, sample = render_jpeg(11)
    task_id = submit(http, headers, image, detection=detection)
    assert wait_finished(http, headers, [task_id]) == {task_id: "done"}
    body = http.get(f"/tasks/{task_id}/result", headers=headers).json()
    assert body["id"] == task_id and body["status"] == "done"
    result = body["result"]
    assert result["image_class"] == SCENE_CLASSES[sample.scene]
    drawn = {PRIMITIVE_CLASSES[b.class_id] for b in sample.boxes}
    assert result["primitives"], "the scene holds primitives: the model must find some"
    assert drawn & {p["primitive_class"] for p in result["primitives"]}
    assert result["detection_model"] == ("YOLO" if detection == 1 else "SSD")
    for p in result["primitives"]:
        assert set(p) >= CONTRACT_KEYS
        assert p["primitive_class"] in PRIMITIVE_CLASSES
        for key in ("x", "y", "width", "height", "probability"):
            assert 0.0 <= p[key] <= 1.0
        assert 0.0 <= p["rotation"] < 1.0
        if detection == 2:
            assert p["rotation"] == 0.0  # SSD predicts axis-aligned boxes
    assert http.get(f"/api/tasks/{task_id}/result", headers=headers).json() == body
    assert http.get(f"/api/tasks/{task_id}/status", headers=headers).json() == {
        "id": task_id,
        "status": "done",
    }


def test_models_report_their_deployments(http, user_headers):
    body = http.get("/api/models", headers=user_headers()).json()
    models = body["detection_models"] + body["classification_models"]
    assert [(m["model_name"], m["model_id"]) for m in models] == [
        ("YOLO", 1),
        ("SSD", 2),
        ("MyYOLO", 4),
        ("model_v1", 3),
        ("my_scenes", 5),
    ]
    for model in models:
        assert model["ready"] is True
        assert len(model["weights_sha256"]) == 64
        assert model["device"] in ("cpu", "cuda")


def test_routes_over_http_keep_users_apart(http, user_headers):
    alice, bob = user_headers(), user_headers()
    task_id = submit(http, alice, render_jpeg(12)[0])
    for path in (
        f"/api/tasks/{task_id}/status",
        f"/api/tasks/{task_id}/input",
        f"/tasks/{task_id}/result",
        f"/api/tasks/{task_id}/result",
    ):
        response = http.get(path, headers=bob)
        assert response.status_code == 404
        assert response.json() == {"detail": f"Task with id {task_id} does not exist."}
        assert http.get(path).status_code == 401
    assert http.delete(f"/api/tasks/{task_id}", headers=bob).status_code == 404
    assert http.get("/api/tasks", headers=bob).json() == {"tasks": []}
    assert http.get(f"/api/tasks/{task_id}/input", headers=alice).content == render_jpeg(12)[0]


def test_killing_the_queue_actor_loses_no_task(http, user_headers, database_url):
    headers = user_headers()
    image = render_jpeg(13)[0]
    ids = [submit(http, headers, image, detection=1 + i % 2) for i in range(12)]
    for dispatcher in queue_actors():
        ray.kill(dispatcher, no_restart=False)  # Ray restarts it; it claims again
    assert set(wait_finished(http, headers, ids).values()) == {"done"}
    assert result_rows(database_url, ids) == {i: 1 for i in ids}


def test_a_queue_killed_for_good_is_recreated(http, user_headers, database_url):
    headers = user_headers()
    image = render_jpeg(14)[0]
    for dispatcher in queue_actors():
        ray.kill(dispatcher, no_restart=True)
    ids = [submit(http, headers, image) for _ in range(4)]
    assert set(wait_finished(http, headers, ids).values()) == {"done"}
    assert result_rows(database_url, ids) == {i: 1 for i in ids}


def test_a_deleted_task_never_produces_a_result(http, user_headers, database_url):
    headers = user_headers()
    image = render_jpeg(15)[0]
    ids = [submit(http, headers, image) for _ in range(6)]
    doomed = ids[-1]
    assert http.delete(f"/api/tasks/{doomed}", headers=headers).json() == {"id": doomed}
    wait_finished(http, headers, ids[:-1])
    time.sleep(1.0)
    assert http.get(f"/tasks/{doomed}/result", headers=headers).status_code == 404
    engine = make_engine(database_url)
    with make_session_factory(engine)() as db:
        assert db.get(Task, doomed) is None
        assert db.get(TaskResult, doomed) is None
    engine.dispose()


def test_a_model_brought_by_the_user_serves_tasks(http, user_headers):
    headers = user_headers()
    task_id = submit(http, headers, render_jpeg(16)[0], detection=4, classification=5)
    assert wait_finished(http, headers, [task_id]) == {task_id: "done"}
    result = http.get(f"/tasks/{task_id}/result", headers=headers).json()["result"]
    assert result["detection_model"] == "MyYOLO"
    assert result["classification_model"] == "my_scenes"
    assert result["image_class"] in ("indoor", "outdoor")


def test_a_task_whose_model_cannot_run_fails_and_the_queue_goes_on(
    http, user_headers, database_url
):
    """A task queued for a model that was since removed from the registry: it ends failed
    with the reason, and the tasks after it still run."""
    from sqlalchemy.dialects.postgresql import insert

    from storage.models import MlModel
    from storage.tasks import NewTasks, create_tasks

    headers = user_headers()
    good = submit(http, headers, render_jpeg(17)[0])
    engine = make_engine(database_url)
    with make_session_factory(engine)() as db:
        db.execute(
            insert(MlModel)
            .values(id=50, name="Retired", type="detection_model")
            .on_conflict_do_nothing()
        )
        user = db.scalar(select(Task.user_id).where(Task.id == good))
        assert user is not None
        (doomed,) = create_tasks(
            db=db,
            user_id=user,
            new=NewTasks(
                detection_model_id=50,
                classification_model_id=3,
                images=[(render_jpeg(17)[0], "image/jpeg")],
            ),
        )
    engine.dispose()
    after = submit(http, headers, render_jpeg(18)[0])
    assert wait_finished(http, headers, [good, doomed, after]) == {
        good: "done",
        doomed: "failed",
        after: "done",
    }
    body = http.get(f"/tasks/{doomed}/result", headers=headers).json()
    assert body == {
        "id": doomed,
        "status": "failed",
        "result": None,
        "error": "the model this task asked for is no longer configured",
    }


def test_long_poll_answers_when_the_task_finishes(http, user_headers):
    headers = user_headers()
    task_id = submit(http, headers, render_jpeg(19)[0])
    started = time.monotonic()
    body = http.get(f"/api/tasks/{task_id}/status?wait=25", headers=headers).json()
    elapsed = time.monotonic() - started
    assert body == {"id": task_id, "status": "done"}
    assert elapsed < 20  # told at completion, not at the end of the wait
    result = http.get(f"/tasks/{task_id}/result?wait=5", headers=headers).json()
    assert result["status"] == "done" and result["result"] is not None


def test_generated_scenes_come_back_with_the_primitives_they_hold(http, user_headers):
    """The shipped YOLO finds what the generator drew: over ten scenes, at least 85 % of the
    drawn primitives are matched by a returned one of the same class whose centre lies
    within a tenth of the image of it (the model finds about 95 %; one scene alone can
    lose two of eight objects, so the figure is over all ten)."""
    headers = user_headers()
    scenes = [render_jpeg(seed) for seed in range(2025, 2035)]
    task_ids = [submit(http, headers, image, detection=1) for image, _ in scenes]
    assert set(wait_finished(http, headers, task_ids).values()) == {"done"}
    matched = drawn = 0
    for task_id, (_, sample) in zip(task_ids, scenes, strict=True):
        found = http.get(f"/tasks/{task_id}/result", headers=headers).json()["result"]["primitives"]
        w, h = sample.image.size
        drawn += len(sample.boxes)
        for box in sample.boxes:
            name = PRIMITIVE_CLASSES[box.class_id]
            matched += any(
                p["primitive_class"] == name
                and abs(p["x"] - box.cx / w) < 0.1
                and abs(p["y"] - box.cy / h) < 0.1
                for p in found
            )
    assert drawn >= 20
    assert matched >= 0.85 * drawn, (matched, drawn)


def test_health_routes_answer_without_a_token(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}


def test_every_log_line_about_a_task_carries_its_task_and_user_ids(http, user_headers):
    import json
    from pathlib import Path

    headers = user_headers()
    task_id = submit(http, headers, render_jpeg(81)[0])
    assert wait_finished(http, headers, [task_id]) == {task_id: "done"}
    logs = Path("/tmp/ray/session_latest/logs")
    needle = f'"task": {task_id}'
    deadline = time.monotonic() + 30
    while True:  # log files are flushed on their own schedule
        lines = [
            found
            for found in (
                json.loads(line)
                for path in logs.rglob("*")
                if path.is_file() and path.suffix in (".log", ".err", ".out")
                for line in path.read_text(errors="replace").splitlines()
                if needle in line and line.startswith("{")
            )
            if found.get("task") == task_id
        ]
        messages = {line["message"] for line in lines}
        if {f"task {task_id} accepted"} <= messages and any(
            m.startswith(f"task {task_id} done") for m in messages
        ):
            break
        assert time.monotonic() < deadline, f"log lines for task {task_id}: {messages}"
        time.sleep(1)
    assert {line["user"] for line in lines} == {lines[0]["user"]}
    assert isinstance(lines[0]["user"], int)


PORTRAITS = [
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("ultralytics", "assets/zidane.jpg"),
]


def _portrait_results(http, headers, detection: int, photos=PORTRAITS) -> dict[str, dict]:
    from training.sources import photo_path

    task_ids = {}
    for package, relative in photos:
        path = photo_path(package, relative)
        assert path is not None, f"{package} ships {relative}"
        task_ids[path.name] = submit(http, headers, path.read_bytes(), detection=detection)
    assert set(wait_finished(http, headers, list(task_ids.values())).values()) == {"done"}
    return {
        name: http.get(f"/api/tasks/{task_id}/result", headers=headers).json()["result"]
        for name, task_id in task_ids.items()
    }


@pytest.mark.parametrize("detection", [1, 2], ids=["YOLO", "SSD"])
def test_a_portrait_holds_at_most_one_primitive(http, user_headers, detection):
    """Real photographs of people (shipped with matplotlib and ultralytics, never trained
    on): at most one primitive at probability >= 0.5 each."""
    for name, result in _portrait_results(http, user_headers(), detection).items():
        strong = [
            (p["primitive_class"], p["probability"])
            for p in result["primitives"]
            if p["probability"] >= 0.5
        ]
        assert len(strong) <= 1, (name, strong)


@pytest.mark.parametrize(
    "photo",
    [
        pytest.param(
            photo,
            id=Path(photo[1]).name,
            marks=[
                pytest.mark.xfail(
                    strict=True,
                    reason="missed: model_v1 calls it street at 0.98 calibrated: its layout is "
                    "a street's (weights/README.md); strict, so a fix shows up here",
                )
            ]
            if photo[1].endswith("grace_hopper.jpg")
            else [],
        )
        for photo in EVAL_PHOTOS
    ],
)
def test_a_photograph_is_no_known_scene(http, user_headers, photo):
    """Every evaluation photograph (portraits, a bus, a cat, coffee, a camera man, a temple;
    never trained on) answers the scene "unknown", and the result still carries the
    classifier's probabilities (docs/api.md §E7)."""
    [result] = _portrait_results(http, user_headers(), 1, [photo]).values()
    assert set(result["class_probabilities"]) == set(SCENE_CLASSES)
    assert result["class_probability"] == pytest.approx(
        max(result["class_probabilities"].values()), abs=1e-5
    )
    assert result["image_class"] == "unknown", result["class_probabilities"]


def test_the_builder_knows_the_address_serve_listens_on(platform):
    """What the builder's refusal to serve the network in unchosen development mode reads."""
    from deployments.app import serve_http_host

    assert serve_http_host() == "127.0.0.1"
