"""The task routes of the contract, over a real PostgreSQL (no queue behind them)."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from sqlalchemy import select

from harness.no_queue import NoQueue
from storage import claims
from storage.models import Task
from tests.api.conftest import claim_batch

WRONG_MODEL = {
    "detail": "Model id was not correct. Choose from (id, name, type) "
    "[(1, 'YOLO', 'detection_model'), (2, 'SSD', 'detection_model'), "
    "(3, 'model_v1', 'classification_model')]."
}
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def submit(
    client,
    headers,
    image: bytes,
    query="?detection_model_id=1&classification_model_id=3",
    content_type="image/jpeg",
):
    return client.post(
        f"/api/tasks{query}", content=image, headers={**headers, "Content-Type": content_type}
    )


def png_bytes(size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def test_submit_stores_a_queued_task_and_wakes_the_queue(
    client, alice, sample_jpeg, sessions, notifications
):
    response = submit(client, alice, sample_jpeg)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id"} and isinstance(body["id"], int)
    with sessions() as db:
        task = db.get(Task, body["id"])
        assert task.status == "queued"
        assert task.input.data == sample_jpeg
        assert (task.detection_model_id, task.classification_model_id) == (1, 3)
    assert notifications.count == 1


def test_submit_multipart_with_file_or_image_field(client, alice, sample_jpeg):
    for field in ("file", "image"):
        response = client.post(
            "/api/tasks?detection_model_id=2&classification_model_id=3",
            files={field: ("x.jpg", sample_jpeg, "image/jpeg")},
            headers=alice,
        )
        assert response.status_code == 200, response.text
    assert [
        t["input_path"].endswith(".jpeg")
        for t in client.get("/api/tasks", headers=alice).json()["tasks"]
    ] == [True, True]


def test_submit_uses_default_models_when_omitted(client, alice, sample_jpeg, sessions):
    task_id = submit(client, alice, sample_jpeg, query="").json()["id"]
    with sessions() as db:
        task = db.get(Task, task_id)
        assert (task.detection_model_id, task.classification_model_id) == (1, 3)


@pytest.mark.parametrize(
    "query",
    [
        "?detection_model_id=7&classification_model_id=3",
        "?detection_model_id=3&classification_model_id=3",  # a classifier as detector
        "?detection_model_id=1&classification_model_id=1",  # a detector as classifier
        "?detection_model_id=1&classification_model_id=2",
        "?detection_model_id=abc&classification_model_id=3",
        "?detection_model_id=1&classification_model_id=1.5",
        "?detection_model_id=-1&classification_model_id=3",
        "?detection_model_id=0&classification_model_id=3",
        f"?detection_model_id={10**30}&classification_model_id=3",
        "?detection_model_id=&classification_model_id=3",
    ],
)
def test_wrong_model_id_answers_400_with_the_registry(client, alice, sample_jpeg, query, sessions):
    response = submit(client, alice, sample_jpeg, query=query)
    assert response.status_code == 400
    assert response.json() == WRONG_MODEL
    with sessions() as db:
        assert db.scalar(select(Task.id)) is None


def test_png_is_accepted_and_served_back_as_png(client, alice):
    image = png_bytes()
    task_id = submit(client, alice, image, content_type="image/png").json()["id"]
    response = client.get(f"/api/tasks/{task_id}/input", headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == image
    assert (
        client.get("/api/tasks", headers=alice).json()["tasks"][0]["input_path"]
        == f"img_{task_id}.png"
    )


def test_lying_content_type_is_judged_by_the_bytes(client, alice, sample_jpeg):
    for content_type in ("image/png", "application/json", "application/octet-stream"):
        assert submit(client, alice, sample_jpeg, content_type=content_type).status_code == 200


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="GIF")
    return buf.getvalue()


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (4000, 4000)).save(buf, format="PNG")  # 16 MP in a few KB
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,body,status,detail",
    [
        ("empty", lambda j: b"", 400, "empty"),
        ("text", lambda j: b"hello, this is text", 415, "JPEG or PNG"),
        ("gif", lambda j: _gif(), 415, "JPEG or PNG"),
        ("svg", lambda j: b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "JPEG or PNG"),
        ("truncated jpeg", lambda j: j[: len(j) // 2], 400, "truncated or corrupt"),
        ("jpeg header then noise", lambda j: j[:20] + bytes(range(256)) * 40, 400, "decoded"),
        ("bomb", lambda j: _bomb_png(), 413, "pixels"),
        ("too large", lambda j: j[:4] + b"\0" * (3 * 1024 * 1024), 413, "larger than"),
    ],
)
def test_bad_images_answer_4xx_and_store_nothing(
    client, alice, sample_jpeg, sessions, name, body, status, detail
):
    response = submit(client, alice, body(sample_jpeg))
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    with sessions() as db:
        assert db.scalar(select(Task.id)) is None


def test_multipart_with_too_many_parts_is_a_400(client, alice):
    files = [(f"f{i}", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(50)]
    response = client.post("/api/tasks", files=files, headers=alice)
    assert response.status_code == 400
    assert "multipart" in response.json()["detail"].lower()


def test_list_shows_only_own_tasks_in_id_order(client, alice, bob, sample_jpeg):
    ids = [submit(client, alice, sample_jpeg).json()["id"] for _ in range(3)]
    submit(client, bob, sample_jpeg)
    response = client.get("/api/tasks", headers=alice)
    assert response.status_code == 200
    tasks = response.json()["tasks"]
    assert [t["id"] for t in tasks] == ids
    for task in tasks:
        assert set(task) == {"id", "status", "created_at", "input_path"}
        assert task["status"] == "queued"
        assert ISO_MILLIS_Z.match(task["created_at"]), task["created_at"]
        assert task["input_path"] == f"img_{task['id']}.jpeg"
    paged = client.get(f"/api/tasks?after_id={ids[0]}&limit=1", headers=alice).json()["tasks"]
    assert [t["id"] for t in paged] == [ids[1]]
    assert client.get("/api/tasks?status=done", headers=alice).json() == {"tasks": []}


def test_status_input_and_result_of_a_queued_task(client, alice, sample_jpeg):
    task_id = submit(client, alice, sample_jpeg).json()["id"]
    assert client.get(f"/api/tasks/{task_id}/status", headers=alice).json() == {
        "id": task_id,
        "status": "queued",
    }
    response = client.get(f"/api/tasks/{task_id}/input", headers=alice)
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == sample_jpeg
    for path in (f"/tasks/{task_id}/result", f"/api/tasks/{task_id}/result"):
        assert client.get(path, headers=alice).json() == {
            "id": task_id,
            "status": "queued",
            "result": None,
        }


def test_result_of_done_and_failed_tasks(client, alice, sample_jpeg, sessions):
    done_id = submit(client, alice, sample_jpeg).json()["id"]
    failed_id = submit(client, alice, sample_jpeg).json()["id"]
    primitive = {
        "primitive_class": "sphere",
        "x": 0.26,
        "y": 0.3,
        "width": 0.1,
        "height": 0.2,
        "rotation": 0.8,
        "probability": 0.26,
    }
    with sessions() as db:
        done_claim, failed_claim = claim_batch(db=db, limit=2, lease_seconds=30)
        assert claims.complete(
            db=db,
            claim=done_claim,
            image_class="office",
            primitives=[primitive],
            details={"detection_model": "YOLO"},
        )
        assert claims.fail(db=db, claim=failed_claim, error="model error: boom")
    assert client.get(f"/api/tasks/{done_id}/status", headers=alice).json()["status"] == "done"
    body = client.get(f"/tasks/{done_id}/result", headers=alice).json()
    assert body == {
        "id": done_id,
        "status": "done",
        "result": {"image_class": "office", "primitives": [primitive], "detection_model": "YOLO"},
    }
    assert client.get(f"/tasks/{failed_id}/result", headers=alice).json() == {
        "id": failed_id,
        "status": "failed",
        "result": None,
        "error": "model error: boom",
    }


ID_ROUTES = [
    ("get", "/api/tasks/{id}/status"),
    ("get", "/api/tasks/{id}/input"),
    ("get", "/tasks/{id}/result"),
    ("get", "/api/tasks/{id}/result"),
    ("delete", "/api/tasks/{id}"),
]


@pytest.mark.parametrize("method,route", ID_ROUTES)
def test_another_users_task_is_indistinguishable_from_a_missing_one(
    client, alice, bob, sample_jpeg, method, route
):
    task_id = submit(client, alice, sample_jpeg).json()["id"]
    for probe in (task_id, task_id + 1000, 0, -5, 2**63, 10**40):
        response = client.request(method, route.format(id=probe), headers=bob)
        assert response.status_code == 404
        assert response.json() == {"detail": f"Task with id {probe} does not exist."}
    # and alice's task is untouched
    assert client.get(f"/api/tasks/{task_id}/status", headers=alice).status_code == 200


@pytest.mark.parametrize("method,route", ID_ROUTES)
def test_non_integer_task_id_is_422(client, alice, method, route):
    assert client.request(method, route.format(id="abc"), headers=alice).status_code == 422


def test_delete_removes_task_input_and_result(client, alice, sample_jpeg, sessions):
    task_id = submit(client, alice, sample_jpeg).json()["id"]
    keep_id = submit(client, alice, sample_jpeg).json()["id"]
    response = client.delete(f"/api/tasks/{task_id}", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"id": task_id}
    assert client.get(f"/api/tasks/{task_id}/input", headers=alice).status_code == 404
    assert client.delete(f"/api/tasks/{task_id}", headers=alice).status_code == 404
    assert [t["id"] for t in client.get("/api/tasks", headers=alice).json()["tasks"]] == [keep_id]
    with sessions() as db:  # a queued task that was deleted is never claimed
        assert [c.task_id for c in claim_batch(db=db, limit=10, lease_seconds=30)] == [keep_id]


def test_models_listing_matches_the_contract(client, alice):
    response = client.get("/api/models", headers=alice)
    assert response.status_code == 200
    body = response.json()
    assert [{k: m[k] for k in ("model_name", "model_id")} for m in body["detection_models"]] == [
        {"model_name": "YOLO", "model_id": 1},
        {"model_name": "SSD", "model_id": 2},
    ]
    assert [
        {k: m[k] for k in ("model_name", "model_id")} for m in body["classification_models"]
    ] == [{"model_name": "model_v1", "model_id": 3}]


def test_openapi_documents_every_route(client):
    schema = client.get("/openapi.json").json()
    assert {
        "/oauth/login",
        "/api/tasks",
        "/api/tasks/{task_id}/status",
        "/api/tasks/{task_id}/input",
        "/tasks/{task_id}/result",
        "/api/tasks/{task_id}/result",
        "/api/models",
        "/api/tasks/{task_id}",
    } <= set(schema["paths"])
    post = schema["paths"]["/api/tasks"]["post"]
    assert {p["name"] for p in post["parameters"]} == {
        "detection_model_id",
        "classification_model_id",
        "webhook",
        "Idempotency-Key",
        "Prefer",
        "priority",
        "deadline_s",
    }
    assert {"400", "401", "409", "413", "415", "503"} <= set(post["responses"])
    assert {
        "/api/tasks/{task_id}/cancel",
        "/api/tasks/{task_id}/visualization",
        "/api/tasks/{task_id}/webhooks",
        "/api/me",
        "/api/me/webhook-secret",
        "/api/tasks/events",
    } <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_multipart_with_a_megabyte_of_preamble_is_a_clear_400(client, alice, sample_jpeg, sessions):
    boundary = "bnd7f3a"
    body = (
        b"x" * (1024 * 1024)
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + sample_jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/api/tasks",
        content=body,
        headers={**alice, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    # python-multipart refuses a huge preamble (a known denial-of-service shape)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed multipart body")
    with sessions() as db:
        assert db.scalar(select(Task.id)) is None


def test_multipart_without_a_file_is_a_400(client, alice):
    response = client.post("/api/tasks", files={"note": (None, "no image here")}, headers=alice)
    assert response.status_code == 400
    assert "no file" in response.json()["detail"]


def test_a_multipart_body_of_several_files_makes_one_task_each(
    client, alice, sample_jpeg, sessions, notifications
):
    png = png_bytes()
    files = [
        ("file", ("a.jpg", sample_jpeg, "image/jpeg")),
        ("file", ("b.png", png, "image/png")),
        ("image", ("c.jpg", sample_jpeg, "image/jpeg")),
    ]
    response = client.post("/api/tasks?detection_model_id=2", files=files, headers=alice)
    assert response.status_code == 200, response.text
    ids = response.json()["ids"]
    assert set(response.json()) == {"ids"} and len(ids) == 3 and ids == sorted(ids)
    with sessions() as db:
        tasks = [db.get(Task, i) for i in ids]
        assert [t.input.data for t in tasks] == [sample_jpeg, png, sample_jpeg]
        assert [t.input_media_type for t in tasks] == ["image/jpeg", "image/png", "image/jpeg"]
        assert {(t.status, t.detection_model_id, t.classification_model_id) for t in tasks} == {
            ("queued", 2, 3)
        }
    assert notifications.count == 1  # one wake-up for the whole batch


def test_one_bad_file_refuses_the_whole_batch_and_stores_nothing(
    client, alice, sample_jpeg, sessions
):
    files = [
        ("file", ("a.jpg", sample_jpeg, "image/jpeg")),
        ("file", ("b.gif", b"GIF89a....", "image/gif")),
        ("file", ("c.jpg", sample_jpeg, "image/jpeg")),
    ]
    response = client.post("/api/tasks", files=files, headers=alice)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("File 2: Unsupported image format")
    with sessions() as db:
        assert db.scalar(select(Task.id)) is None


def test_a_batch_that_would_pass_the_waiting_limit_is_refused_whole(
    settings, registry, sessions, make_user, sample_jpeg
):
    from fastapi.testclient import TestClient

    from serve_app.main import create_app

    strict = settings.model_copy(update={"max_active_tasks_per_user": 3})
    with TestClient(
        create_app(settings=strict, registry=registry, session_factory=sessions, queue=NoQueue())
    ) as client:
        name, password = make_user()
        token = client.post("/oauth/login", data={"username": name, "password": password})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        files = [("file", (f"{i}.jpg", sample_jpeg, "image/jpeg")) for i in range(4)]
        response = client.post("/api/tasks", files=files, headers=headers)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "5"
        assert len(client.post("/api/tasks", files=files[:3], headers=headers).json()["ids"]) == 3
    with sessions() as db:
        assert len(db.scalars(select(Task.id)).all()) == 3


def test_the_whole_list_is_streamed_a_page_at_a_time_as_fastapi_would_write_it(
    client, alice, bob, sample_jpeg, sessions, monkeypatch
):
    """Found by the outside review: the list without a limit built every task in memory at
    once. It is streamed; a seed client still gets its full list, byte for byte the body
    FastAPI would have written."""
    from serve_app.tasks import router
    from serve_app.tasks.schemas import TaskList, TaskSummary
    from storage import tasks as task_storage
    from storage.users import get_user_by_username

    with sessions() as db:
        alice_user = get_user_by_username(db=db, username="alice")
        assert alice_user is not None
        owner = alice_user.id
        task_storage.create_tasks(
            db=db,
            user_id=owner,
            new=task_storage.NewTasks(
                detection_model_id=1,
                classification_model_id=3,
                images=[(sample_jpeg, "image/jpeg")] * 23,
                webhook_url=None,
            ),
        )
    submit(client, bob, sample_jpeg)
    read: list[int] = []
    real = task_storage.task_summaries
    monkeypatch.setattr(router, "LIST_PAGE", 5)

    def counted(**kw):
        read.append(kw["limit"])
        return real(**kw)

    monkeypatch.setattr(task_storage, "task_summaries", counted)
    response = client.get("/api/tasks", headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with sessions() as db:
        mine = db.scalars(select(Task).where(Task.user_id == owner).order_by(Task.id)).all()
    expected = TaskList(tasks=[TaskSummary.model_validate(t) for t in mine])
    assert response.content == expected.model_dump_json().encode()
    assert len(mine) == 23 and read == [5] * 5  # five pages of at most five rows
    filtered = client.get("/api/tasks?status=done", headers=alice)
    assert filtered.content == b'{"tasks":[]}'
