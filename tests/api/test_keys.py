"""API keys (docs/api.md §E12) through the real API over PostgreSQL: made after a password
login and shown once, stored hashed, listed without secrets, used like a token on every
route, revoked at once on every replica, and refused (401, 403, 404) as the contract says."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select, update

from harness.no_queue import NoQueue
from serve_app.main import create_app
from storage.models import ApiKey
from tests.api.conftest import submit

NOT_AUTHENTICATED = {"detail": "Not authenticated"}


def make_key(client, headers, name: str = "batch") -> dict:
    response = client.post("/api/keys", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_shown_once_stored_hashed_and_acts_as_its_owner(
    client, alice, sessions, sample_jpeg
):
    made = make_key(client, alice, "nightly batch")
    assert made["name"] == "nightly batch" and made["key"].startswith("prim_")
    assert len(made["key"]) == 48
    datetime.fromisoformat(made["created_at"])
    key = bearer(made["key"])
    # Everywhere a token works, as Alice.
    assert client.get("/api/me", headers=key).json()["username"] == "alice"
    task_id = submit(client, key, sample_jpeg)
    assert [t["id"] for t in client.get("/api/tasks", headers=alice).json()["tasks"]] == [task_id]
    assert client.get(f"/api/tasks/{task_id}/status", headers=key).status_code == 200
    # Listed without the secret; marked used.
    listed = client.get("/api/keys", headers=alice)
    assert listed.status_code == 200 and made["key"] not in listed.text
    (row,) = listed.json()["keys"]
    assert row["id"] == made["id"] and row["name"] == "nightly batch"
    assert set(row) == {"id", "name", "created_at", "last_used_at"}
    assert row["last_used_at"] is not None
    # Only its SHA-256 is kept.
    with sessions() as db:
        (stored,) = db.scalars(select(ApiKey)).all()
        columns = [str(getattr(stored, c.key)) for c in ApiKey.__table__.columns]
    assert made["key"] not in " ".join(columns)
    assert stored.digest == hashlib.sha256(made["key"].encode()).hexdigest()


def test_a_key_is_marked_used_at_most_once_a_minute(client, alice, sessions):
    """The lookup only reads; the mark is written when it is a minute old, not per request."""
    key = bearer(make_key(client, alice)["key"])

    def last_used() -> datetime | None:
        stamp = client.get("/api/keys", headers=alice).json()["keys"][0]["last_used_at"]
        return None if stamp is None else datetime.fromisoformat(stamp)

    assert last_used() is None
    assert client.get("/api/me", headers=key).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/me", headers=key).status_code == 200
    assert last_used() == first  # used again within the minute: not written again
    with sessions() as db:  # the mark is two minutes old now
        db.execute(update(ApiKey).values(last_used_at=ApiKey.last_used_at - timedelta(minutes=2)))
        db.commit()
    aged = last_used()
    assert aged is not None and aged < first
    assert client.get("/api/me", headers=key).status_code == 200
    renewed = last_used()
    assert renewed is not None and renewed > first


def test_a_revoked_key_stops_at_once_on_every_replica(
    client, alice, settings, registry, sessions, read_sessions
):
    made = make_key(client, alice)
    other = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=NoQueue(),
    )
    from fastapi.testclient import TestClient

    with TestClient(other) as replica:
        assert replica.get("/api/me", headers=bearer(made["key"])).status_code == 200
        response = client.delete(f"/api/keys/{made['id']}", headers=alice)
        assert response.status_code == 204 and response.content == b""
        for app in (client, replica):
            refused = app.get("/api/tasks", headers=bearer(made["key"]))
            assert refused.status_code == 401 and refused.json() == NOT_AUTHENTICATED
    assert client.get("/api/keys", headers=alice).json() == {"keys": []}
    assert client.delete(f"/api/keys/{made['id']}", headers=alice).status_code == 404


def test_unknown_and_malformed_keys_are_refused_like_a_bad_token(client, alice):
    made = make_key(client, alice)
    for key in (
        made["key"][:-1] + ("A" if made["key"][-1] != "A" else "B"),  # one character off
        "prim_" + "x" * 43,
        "prim_short",
        made["key"] + "x",
        "prim_" + "%" * 43,
    ):
        response = client.get("/api/me", headers=bearer(key))
        assert response.status_code == 401 and response.json() == NOT_AUTHENTICATED, key


def test_a_key_cannot_make_or_list_keys_but_may_revoke_one(client, alice):
    first, second = make_key(client, alice, "one"), make_key(client, alice, "two")
    key = bearer(first["key"])
    made = client.post("/api/keys", json={"name": "escalate"}, headers=key)
    assert made.status_code == 403 and "password login" in made.json()["detail"]
    assert client.get("/api/keys", headers=key).status_code == 403
    assert client.delete(f"/api/keys/{second['id']}", headers=key).status_code == 204
    assert [k["name"] for k in client.get("/api/keys", headers=alice).json()["keys"]] == ["one"]


def test_another_users_key_is_404_and_keeps_working(client, alice, bob):
    made = make_key(client, alice)
    assert client.delete(f"/api/keys/{made['id']}", headers=bob).status_code == 404
    assert client.get("/api/keys", headers=bob).json() == {"keys": []}
    assert client.get("/api/me", headers=bearer(made["key"])).json()["username"] == "alice"
    for key_id in ("0", "-1", str(2**31), "99999999999999999999"):
        assert client.delete(f"/api/keys/{key_id}", headers=alice).status_code == 404, key_id


def test_names_are_checked_and_a_user_holds_at_most_the_allowed_keys(
    client, alice, settings, monkeypatch
):
    for name in ("", "x" * 65, "tab\there"):
        response = client.post("/api/keys", json={"name": name}, headers=alice)
        assert response.status_code == 422, name
    assert client.post("/api/keys", json={}, headers=alice).status_code == 422
    assert client.post("/api/keys", json={"name": "x"}).status_code == 401
    for i in range(settings.api_keys_per_user):
        make_key(client, alice, f"k{i}")
    refused = client.post("/api/keys", json={"name": "one more"}, headers=alice)
    assert refused.status_code == 409
    assert f"You have {settings.api_keys_per_user} API keys" in refused.json()["detail"]
    assert len(client.get("/api/keys", headers=alice).json()["keys"]) == settings.api_keys_per_user
