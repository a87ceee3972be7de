"""An image by URL (docs/api.md §E13), fetched from a real local HTTP server that serves good,
huge, slow, redirecting and non-image answers: each good one becomes a task as an upload
would, each refusal is a 400 that says why and stores nothing."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from sqlalchemy import func, select

from harness.local_platform import free_port
from harness.no_queue import NoQueue
from storage.models import Task
from tests.api.conftest import serving

LIMIT = 200_000  # the image byte limit in these tests


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """The origin's answers, by path (``server.origin``: the Origin serving them)."""

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def endless(self) -> None:  # no length: refused as the stream passes the limit
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"\xff" * 10_000)
        except OSError:
            pass  # the platform hung up: what is wanted

    def slow(self, jpeg: bytes, release: threading.Event) -> None:  # headers, then nothing
        self.send_response(200)
        self.send_header("Content-Length", str(len(jpeg)))
        self.end_headers()
        self.wfile.write(jpeg[:100])
        self.wfile.flush()
        release.wait(30)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        origin: Origin = self.server.origin  # type: ignore[attr-defined]
        origin.requests.append(self.path)
        jpeg = origin.jpeg
        answers = {
            "/good.jpg": lambda: self.send(200, jpeg, Content_Type="image/jpeg"),
            "/good.png": lambda: self.send(200, origin.png, Content_Type="image/png"),
            # Declared too large.
            "/huge.jpg": lambda: self.send(200, jpeg + b"\0" * LIMIT, Content_Type="image/jpeg"),
            "/endless.jpg": self.endless,
            "/slow.jpg": lambda: self.slow(jpeg, origin.release),
            "/to-good": lambda: self.send(302, Location="/good.jpg"),
            "/to-private": lambda: self.send(302, Location="http://10.0.0.7/x.jpg"),
            "/to-metadata": lambda: self.send(
                301, Location="http://169.254.169.254/latest/meta-data/"
            ),
            "/loop": lambda: self.send(302, Location="/loop"),
            "/page.html": lambda: self.send(
                200, b"<html>not an image</html>", Content_Type="text/html"
            ),
        }
        answers.get(self.path, lambda: self.send(404, b"no"))()


class Origin:
    """A real HTTP server on a free loopback port; ``requests`` lists the paths asked for."""

    def __init__(self, jpeg: bytes) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()  # lets the held answers go
        self.jpeg, self.png = jpeg, _png()
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
        self.server.origin = self  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self) -> Origin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin(sample_jpeg) -> Iterator[Origin]:
    with Origin(sample_jpeg) as running:
        yield running


@pytest.fixture
def fetching(settings, registry, sessions, read_sessions, notifications):
    """The API in development (loopback allowed, as for webhooks) with small limits."""
    small = settings.model_copy(
        update={"max_upload_bytes": LIMIT, "image_fetch_timeout_seconds": 1.0}
    )
    with serving(small, registry, sessions, read_sessions, notifications) as client:
        yield client


def post_url(client, headers, url: str, **params):
    return client.post("/api/tasks", params=params, json={"image_url": url}, headers=headers)


def stored(sessions) -> int:
    with sessions() as db:
        return int(db.scalar(select(func.count()).select_from(Task)))


def test_a_good_url_becomes_a_task_with_the_fetched_bytes(
    fetching, make_user, login, origin, sessions, sample_jpeg
):
    alice = login(*make_user("alice"))
    jpeg = post_url(fetching, alice, origin.url("/good.jpg"), priority="3")
    png = post_url(fetching, alice, origin.url("/to-good"))  # a redirect, checked, followed
    assert jpeg.status_code == png.status_code == 200, (jpeg.text, png.text)
    task_id = jpeg.json()["id"]
    got = fetching.get(f"/api/tasks/{task_id}/input", headers=alice)
    assert got.content == sample_jpeg and got.headers["content-type"] == "image/jpeg"
    assert fetching.get(f"/api/tasks/{task_id}/result", headers=alice).json()["priority"] == 3
    as_png = post_url(fetching, alice, origin.url("/good.png"))
    assert as_png.status_code == 200
    assert (
        fetching.get(f"/api/tasks/{as_png.json()['id']}/input", headers=alice).headers[
            "content-type"
        ]
        == "image/png"
    )
    assert origin.requests == ["/good.jpg", "/to-good", "/good.jpg", "/good.png"]
    assert stored(sessions) == 3


def test_idempotency_key_and_prefer_wait_work_as_for_an_upload(
    fetching, make_user, login, origin, sessions
):
    alice = login(*make_user("alice"))
    headers = {**alice, "Idempotency-Key": "by-url-1"}
    first = post_url(fetching, headers, origin.url("/good.jpg"))
    again = post_url(fetching, headers, origin.url("/good.jpg"))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    waited = post_url(fetching, {**alice, "Prefer": "wait=1"}, origin.url("/good.jpg"))
    assert waited.status_code == 200 and waited.headers["Preference-Applied"] == "wait=1"
    assert waited.json()["status"] == "queued"  # no queue runs here: the task as it is
    assert stored(sessions) == 2


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/huge.jpg", f"larger than {LIMIT} bytes"),
        ("/endless.jpg", f"larger than {LIMIT} bytes"),
        ("/slow.jpg", "did not answer in full within 1 s"),
        ("/to-private", "resolves to a private address (10.0.0.7)"),
        ("/to-metadata", "resolves to a link-local or metadata address"),
        ("/loop", "redirected more than 3 times"),
        ("/page.html", "The image at the URL: "),
        ("/missing.jpg", "answered 404, not 200"),
    ],
)
def test_each_bad_answer_is_a_400_that_says_why_and_stores_nothing(
    fetching, make_user, login, origin, sessions, path, says
):
    alice = login(*make_user("alice"))
    started = time.monotonic()
    response = post_url(fetching, alice, origin.url(path))
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]
    assert time.monotonic() - started < 5
    assert stored(sessions) == 0
    if path in ("/to-private", "/to-metadata"):  # refused before any request went there
        assert origin.requests == [path]


def test_bad_urls_and_bodies_are_400_before_anything_is_fetched(
    fetching, make_user, login, origin, sessions
):
    alice = login(*make_user("alice"))
    closed = f"http://127.0.0.1:{free_port()}/x.jpg"
    for url, says in (
        ("file:///etc/passwd", "The image URL must start with http:// or https://"),
        ("http://user:pw@127.0.0.1/x.jpg", "may not carry a user name or password"),
        ("http://10.1.2.3/x.jpg", "resolves to a private address"),
        ("http://no-such-host.invalid/x.jpg", "does not resolve"),
        (closed, "could not be reached"),
    ):
        response = post_url(fetching, alice, url)
        assert response.status_code == 400 and says in response.json()["detail"], (
            url,
            response.text,
        )
    for body in ('{"image_url": 7}', '{"image_url": "http://x/a.jpg", "extra": 1}', "{nope"):
        response = fetching.post(
            "/api/tasks",
            content=body,
            headers={**alice, "Content-Type": "application/json"},
        )
        assert response.status_code == 400 and "image_url" in response.json()["detail"], body
    assert origin.requests == [] and stored(sessions) == 0


def test_production_refuses_a_loopback_image_url(
    settings, registry, sessions, read_sessions, notifications, make_user, origin
):
    production = settings.model_copy(update={"environment": "production"})
    with serving(production, registry, sessions, read_sessions, notifications) as client:
        name, password = make_user("alice")
        token = client.post("/oauth/login", data={"username": name, "password": password})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        response = post_url(client, headers, origin.url("/good.jpg"))
    assert response.status_code == 400
    assert "resolves to a loopback address" in response.json()["detail"]
    assert origin.requests == [] and stored(sessions) == 0


def test_a_user_has_at_most_four_fetches_under_way(fetching, make_user, login, origin, sessions):
    alice, bob = login(*make_user("alice")), login(*make_user("bob"))
    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(post_url, fetching, alice, origin.url("/slow.jpg")) for _ in range(4)]
        deadline = time.monotonic() + 5
        while origin.requests.count("/slow.jpg") < 4:
            assert time.monotonic() < deadline, origin.requests
            time.sleep(0.01)
        fifth = post_url(fetching, alice, origin.url("/good.jpg"))
        assert fifth.status_code == 429 and fifth.headers["Retry-After"] == "1"
        assert "4 images being fetched" in fifth.json()["detail"]
        assert post_url(fetching, bob, origin.url("/good.jpg")).status_code == 200
        assert [f.result().status_code for f in held] == [400] * 4  # timed out
    assert post_url(fetching, alice, origin.url("/good.jpg")).status_code == 200
    assert stored(sessions) == 2


def test_the_client_and_the_cli_submit_by_url(
    settings, registry, sessions, read_sessions, make_user, origin, sample_jpeg, tmp_path
):
    import json
    import os
    import subprocess
    import sys

    from config.settings import REPO_ROOT
    from harness.api_server import Server
    from primitives_client import Client
    from serve_app.main import create_app

    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=NoQueue(),
    )
    with Server(app) as server:
        client = Client(server.url)
        client.login(*make_user("alice"))
        task = client.submit(image_url=origin.url("/good.jpg"))
        assert client.input(task["id"]) == sample_jpeg
        with pytest.raises(ValueError):
            client.submit(sample_jpeg, image_url=origin.url("/good.jpg"))

        def primitives(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "primitives_client.cli", "--url", server.url, *args],
                env={
                    "PATH": os.environ["PATH"],
                    "PYTHONPATH": str(REPO_ROOT),
                    "XDG_CONFIG_HOME": str(tmp_path),
                    "PRIMITIVES_TOKEN": client.token or "",
                },
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        ran = primitives("submit", "--image-url", origin.url("/to-good"))
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["id"] > task["id"]
        refused = primitives("submit", "--image-url", origin.url("/page.html"))
        assert refused.returncode == 1 and "error 400: The image at the URL" in refused.stderr


def test_the_fetchers_connections_close_with_the_app(settings, registry, sessions):
    from fastapi.testclient import TestClient

    from serve_app.main import create_app

    app = create_app(
        settings=settings, registry=registry, session_factory=sessions, queue=NoQueue()
    )
    fetcher = app.state.services.fetcher
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert not fetcher.client.is_closed
    assert fetcher.client.is_closed
