"""``GET /api/tasks/events`` (docs/api.md §E11) served by two real HTTP servers (uvicorn, two
"ingress replicas") over one PostgreSQL: every status change in order, none missing, a
reconnect on the other server resuming exactly, nobody else's events, keep-alives, and the
stream ending with its token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from jose import jwt
from sqlalchemy import select, update

from harness.api_server import Server
from harness.no_queue import NoQueue
from primitives_client import Client
from serve_app.main import create_app
from serve_app.tasks import events as events_route
from storage import claims as claim_storage
from storage.database import utcnow
from storage.models import User
from tests.api.conftest import JWT_SECRET, claim_batch


@pytest.fixture
def servers(settings, registry, sessions, read_sessions) -> Iterator[tuple[Server, Server]]:
    fast = settings.model_copy(update={"event_poll_seconds": 0.05, "event_streams_per_user": 2})

    def app():
        return create_app(
            settings=fast,
            registry=registry,
            session_factory=sessions,
            read_session_factory=read_sessions,
            queue=NoQueue(),
        )

    with Server(app()) as first, Server(app()) as second:
        yield first, second


def run_all(sessions, count: int) -> None:
    """The queue's side for ``count`` tasks: claim (in progress), then done, in batches."""
    finished = 0
    while finished < count:
        with sessions() as db:
            batch = claim_batch(db=db, limit=7, lease_seconds=60)
            for claim in batch:
                claim_storage.complete(
                    db=db, claim=claim, image_class="office", primitives=[], details={}
                )
        finished += len(batch)


def collect(stream: Iterator[dict], count: int, timeout: float = 30.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    for event in stream:
        got.append(event)
        if len(got) == count:
            return got
        assert time.monotonic() < deadline, f"only {len(got)} events"
    return got


def test_events_of_50_tasks_arrive_in_order_and_a_reconnect_elsewhere_resumes_exactly(
    servers, make_user, sessions, sample_jpeg
):
    first, second = servers
    name, password = make_user("alice")
    alice = Client(first.url)
    alice.login(name, password)
    stream = alice.events(reconnect=False)
    opened = threading.Event()
    received: list[dict] = []

    def read_70() -> None:
        opened.set()
        received.extend(collect(stream, 70))

    reader = threading.Thread(target=read_70)
    reader.start()
    opened.wait()
    time.sleep(0.5)  # the stream is open before the first change
    ids = [alice.submit(sample_jpeg)["id"] for _ in range(50)]
    run_all(sessions, 50)
    reader.join(timeout=60)
    stream.close()
    assert len(received) == 70
    # The rest, from the other server, after the 70th event: exactly the 80 that follow.
    resumed = Client(second.url, alice.token)
    rest = collect(resumed.events(last_event_id=received[-1]["event_id"], reconnect=False), 80)
    everything = received + rest
    ids_seen = [e["event_id"] for e in everything]
    assert ids_seen == sorted(set(ids_seen))  # increasing: none twice
    assert len(ids_seen) == 150  # none missing: 50 tasks, three changes each
    for task_id in ids:
        assert [e["status"] for e in everything if e["id"] == task_id] == [
            "queued",
            "in progress",
            "done",
        ]


def test_another_users_events_never_appear(servers, make_user, sessions, sample_jpeg):
    first, second = servers
    alice, bob = Client(first.url), Client(second.url)
    alice.login(*make_user("alice"))
    bob.login(*make_user("bob"))
    bob_events = bob.events(reconnect=False)
    got: list[dict] = []
    reader = threading.Thread(target=lambda: got.extend(collect(bob_events, 3)))
    reader.start()
    time.sleep(0.5)
    for _ in range(10):
        alice.submit(sample_jpeg)
    run_all(sessions, 10)
    (mine,) = [bob.submit(sample_jpeg)["id"]]
    run_all(sessions, 1)
    reader.join(timeout=30)
    bob_events.close()
    assert [(e["id"], e["status"]) for e in got] == [
        (mine, "queued"),
        (mine, "in progress"),
        (mine, "done"),
    ]


def test_keep_alive_comments_and_the_stream_ends_with_its_token(servers, make_user, monkeypatch):
    first, _ = servers
    monkeypatch.setattr(events_route, "KEEP_ALIVE_S", 0.3)
    name, password = make_user("alice")
    with Client(first.url) as alice:
        alice.login(name, password)
        user_id = int(jwt.get_unverified_claims(alice.token)["sub"])
    now = datetime.now(UTC)
    short = jwt.encode(
        {
            "sub": str(user_id),
            "iat": now.timestamp(),
            # long enough for several keep-alives on a loaded two-core machine (two seconds
            # once saw only two), short enough that the stream must end well inside the bound
            "exp": now + timedelta(seconds=4),
            "type": "access",
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    started = time.monotonic()
    lines = []
    with httpx.stream(
        "GET",
        f"{first.url}/api/tasks/events",
        headers={"Authorization": f"Bearer {short}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():  # ends when the server ends the stream
            lines.append(line)
            if time.monotonic() - started > 10:
                break
    assert time.monotonic() - started < 7, "the stream outlived its token"
    assert lines.count(": keep-alive") >= 3


class Reader:
    """One event stream read in a thread: its status, its lines, and whether it opened (the
    first line came) and ended."""

    def __init__(self, url: str, credential: str) -> None:
        self.url, self.credential = url, credential
        self.opened, self.ended = threading.Event(), threading.Event()
        self.statuses: list[int] = []
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        with httpx.stream(
            "GET",
            f"{self.url}/api/tasks/events",
            headers={"Authorization": f"Bearer {self.credential}"},
            timeout=30,
        ) as response:
            self.statuses.append(response.status_code)
            for line in response.iter_lines():
                self.lines.append(line)
                if line.startswith(": stream open"):
                    self.opened.set()
        self.ended.set()


def test_logout_ends_an_open_stream(servers, make_user, monkeypatch):
    first, _ = servers
    monkeypatch.setattr(events_route, "RECHECK_S", 0.2)
    alice = Client(first.url)
    alice.login(*make_user("alice"))
    reader = Reader(first.url, alice.token or "")
    # The stream is open (200 and its first line), not refused: only then does logout end it.
    assert reader.opened.wait(10), reader.statuses
    assert reader.statuses == [200]
    assert not reader.ended.is_set()
    alice.logout()
    assert reader.ended.wait(5)


def test_a_stream_opened_with_an_api_key_ends_when_the_key_is_revoked(
    servers, make_user, monkeypatch
):
    first, _ = servers
    monkeypatch.setattr(events_route, "RECHECK_S", 0.2)
    alice = Client(first.url)
    alice.login(*make_user("alice"))
    made = httpx.post(
        f"{first.url}/api/keys",
        json={"name": "stream"},
        headers={"Authorization": f"Bearer {alice.token}"},
    ).json()
    reader = Reader(first.url, made["key"])
    assert reader.opened.wait(10), reader.statuses
    assert reader.statuses == [200]
    time.sleep(0.6)
    assert not reader.ended.is_set()  # a key's stream is not cut for want of a token's times
    revoked = httpx.delete(
        f"{first.url}/api/keys/{made['id']}", headers={"Authorization": f"Bearer {alice.token}"}
    )
    assert revoked.status_code == 204
    assert reader.ended.wait(5)


def test_logout_ends_a_stream_whose_events_keep_coming(
    servers, make_user, sessions, sample_jpeg, monkeypatch
):
    """A busy stream, one that finds an event at every read, still checks its token: the
    logout and 100 results commit together, and the stream ends without sending them all."""
    first, _ = servers
    monkeypatch.setattr(events_route, "RECHECK_S", 0.0)
    monkeypatch.setattr(events_route, "PAGE", 1)  # 100 reads in a row that each find one
    alice = Client(first.url)
    alice.login(*make_user("alice"))
    with sessions() as db:
        user_id = db.scalar(select(User.id).where(User.username == "alice"))
    for _ in range(100):
        alice.submit(sample_jpeg)
    with sessions() as db:
        claims = claim_batch(db=db, limit=100, lease_seconds=60)
    assert len(claims) == 100
    reader = Reader(first.url, alice.token or "")
    assert reader.opened.wait(10) and reader.statuses == [200]
    with sessions() as db:  # one commit: the logout and every result
        db.execute(update(User).where(User.id == user_id).values(tokens_valid_after=utcnow()))
        items = [
            claim_storage.Completion(claim=c, image_class="office", primitives=[], details={})
            for c in claims
        ]
        assert all(claim_storage.complete_many(db=db, items=items))
    assert reader.ended.wait(10)
    done = [line for line in reader.lines if '"status": "done"' in line]
    assert len(done) <= 2, f"the stream sent {len(done)} events after its logout"


def test_a_stream_needs_a_token_and_a_whole_last_event_id(servers, make_user):
    first, _ = servers
    assert httpx.get(f"{first.url}/api/tasks/events").status_code == 401
    alice = Client(first.url)
    alice.login(*make_user("alice"))
    response = httpx.get(
        f"{first.url}/api/tasks/events",
        headers={"Authorization": f"Bearer {alice.token}", "Last-Event-ID": "12abc"},
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


def test_a_user_holds_at_most_the_allowed_streams_and_a_closed_one_frees_its_place(
    servers, make_user
):
    first, _ = servers
    alice = Client(first.url)
    alice.login(*make_user("alice"))
    url, headers = f"{first.url}/api/tasks/events", {"Authorization": f"Bearer {alice.token}"}
    with httpx.Client(timeout=10) as http:
        with (
            http.stream("GET", url, headers=headers) as one,
            http.stream("GET", url, headers=headers) as two,
        ):
            assert one.status_code == two.status_code == 200  # the two allowed here
            third = httpx.get(url, headers=headers, timeout=10)
            assert third.status_code == 429 and "2 event streams open" in third.json()["detail"]
        # Both closed by the client: their places come back.
        deadline = time.monotonic() + 5
        while True:
            with http.stream("GET", url, headers=headers) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream kept its place"
            time.sleep(0.1)
