"""The Python client rides out a front door that is down or restarting (issue 49): a real HTTP
server on loopback that is not listening yet, then drops a connection, then answers as Ray's
proxy does while its routes reload, then as the platform does. What a user of the client sees:
one answer, and one task (every try carried the same ``Idempotency-Key``)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from primitives_client import Client, PrimitivesError

# What the server does with each request in turn (the last one repeats): drop the connection,
# or answer (status, content type, body).
DROP = None
ROUTES_LOADING = (404, "text/plain", b"Path '/api/tasks' not found.")
UNAVAILABLE = (503, "application/json", b'{"detail": "The task queue is not ready."}')
ACCEPTED = (200, "application/json", b'{"id": 7}')
DONE = (200, "application/json", b'{"status": "done"}')
NO_SUCH_TASK = (404, "application/json", b'{"detail": "Task 7 not found."}')


class FrontDoor:
    """A loopback HTTP server that starts listening after ``listen_after`` seconds and then
    answers each request with the next scripted answer."""

    def __init__(self, script: list[tuple[int, str, bytes] | None], listen_after: float = 0.0):
        self.script = list(script)
        self.server: ThreadingHTTPServer | None = None
        self.requests: list[dict[str, str]] = []
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        door = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                door.requests.append({k.lower(): v for k, v in self.headers.items()})
                step = door.script.pop(0) if len(door.script) > 1 else door.script[0]
                if step is DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, media_type, body = step
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - the http.server API

            def log_message(self, *args: object) -> None:
                pass

        def serve() -> None:
            time.sleep(listen_after)
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self.server.serve_forever(poll_interval=0.05)

        threading.Thread(target=serve, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        while self.server is None:
            time.sleep(0.01)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front_door(request):
    door = FrontDoor(*request.param)
    yield door
    door.close()


@pytest.mark.parametrize(
    "front_door", [([DROP, ROUTES_LOADING, UNAVAILABLE, ACCEPTED], 1.0)], indirect=True
)
def test_a_submission_through_a_restarting_front_door_is_one_task(front_door):
    with Client(front_door.url, "token", retry_for=20) as client:
        started = time.monotonic()
        assert client.submit(b"\xff\xd8\xff image") == {"id": 7}
    assert time.monotonic() - started >= 1.0  # it waited for the server to listen
    assert len(front_door.requests) == 4
    keys = {r["idempotency-key"] for r in front_door.requests}
    assert len(keys) == 1 and keys != {""}


@pytest.mark.parametrize("front_door", [([DROP, ROUTES_LOADING, DONE], 0.0)], indirect=True)
def test_reads_are_retried_too(front_door):
    with Client(front_door.url, "token") as client:
        assert client.status(7) == "done"
    assert len(front_door.requests) == 3


@pytest.mark.parametrize("front_door", [([NO_SUCH_TASK], 0.0)], indirect=True)
def test_the_apis_own_404_is_an_answer_not_a_gap(front_door):
    with Client(front_door.url, "token") as client, pytest.raises(PrimitivesError) as refused:
        client.result(7)
    assert refused.value.status_code == 404 and refused.value.detail == "Task 7 not found."
    assert len(front_door.requests) == 1


@pytest.mark.parametrize("front_door", [([UNAVAILABLE], 0.0)], indirect=True)
def test_retries_stop_at_the_deadline_with_the_last_answer(front_door):
    with Client(front_door.url, "token", retry_for=1.5) as client:
        started = time.monotonic()
        with pytest.raises(PrimitivesError) as refused:
            client.submit(b"\xff\xd8\xff image")
    assert refused.value.status_code == 503
    assert refused.value.detail == "The task queue is not ready."
    # It stops once the next pause (jittered: 0.5 to 1 times 0.25, 0.5, 1 s ...) would pass
    # the deadline, which may be well before it: at least two pauses, never much after it.
    assert 0.3 < time.monotonic() - started < 3.0
    assert len(front_door.requests) > 2
