"""Login guessing (found by the outside review): parallel guesses must not overshoot the limit,
many addresses must not guess one account without limit, a proxy's forwarded address is
believed only from a trusted proxy, and password verifies are bounded."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from serve_app.auth.guard import LoginGuard, parse_networks
from serve_app.main import create_app
from serve_app.ratelimit import SlidingWindow


@pytest.fixture
def app_with(settings, registry, sessions):
    def make(**limits):
        return create_app(
            settings=settings.model_copy(update=limits), registry=registry, session_factory=sessions
        )

    return make


def guess(
    client: TestClient, username: str = "victim", password: str = "wrong", **headers: str
) -> int:
    return client.post(
        "/oauth/login", data={"username": username, "password": password}, headers=headers
    ).status_code


def test_parallel_guesses_cannot_overshoot_the_limit(app_with, make_user):
    """On ec95f26 the limit was read before the verify and counted after it: 24 guesses at
    once all got a verify (24 x 422)."""
    make_user("victim", "right-password")
    with (
        TestClient(app_with(login_failures_per_minute=3)) as client,
        ThreadPoolExecutor(12) as pool,
    ):
        codes = list(pool.map(lambda _: guess(client), range(24)))
    assert codes.count(422) == 3 and codes.count(429) == 21


def test_many_addresses_cannot_guess_one_account_without_limit(app_with, make_user):
    make_user("victim", "right-password")
    app = app_with(login_failures_per_minute=3, login_failures_per_account_per_minute=5)
    codes = []
    for i in range(8):  # a new address for every guess: the per-address limit never bites
        with TestClient(app, client=(f"203.0.113.{i}", 40000)) as client:
            codes.append(guess(client))
    assert codes == [422] * 5 + [429] * 3
    # Other accounts are not affected; a right password does not count as a failure.
    make_user("other", "other-password")
    with TestClient(app, client=("203.0.113.99", 40000)) as client:
        for _ in range(6):
            assert guess(client, "other", "other-password") == 200


def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(app_with, make_user):
    make_user("victim", "right-password")
    app = app_with(
        login_failures_per_minute=2,
        login_failures_per_account_per_minute=100,
        trusted_proxies="10.9.9.0/24",
    )
    with TestClient(app, client=("10.9.9.1", 40000)) as proxy:
        # Behind the trusted proxy, each client has its own count.
        assert [guess(proxy, **{"X-Forwarded-For": "198.51.100.1"}) for _ in range(3)] == [
            422,
            422,
            429,
        ]
        assert guess(proxy, **{"X-Forwarded-For": "198.51.100.2"}) == 422
        # The proxy appends the peer it saw: what the client wrote to the left is not read.
        assert guess(proxy, **{"X-Forwarded-For": "198.51.100.7, 198.51.100.1"}) == 429
    with TestClient(app, client=("192.0.2.50", 40000)) as direct:
        # An untrusted peer forging the header is counted as itself.
        codes = [guess(direct, **{"X-Forwarded-For": f"198.51.100.{100 + i}"}) for i in range(3)]
    assert codes == [422, 422, 429]


def test_password_verifies_are_bounded_and_the_rest_answered_503():
    guard = LoginGuard(
        failures=SlidingWindow(100),
        account_failures=SlidingWindow(100),
        concurrency=2,
        trusted_proxies=parse_networks(""),
        verify_wait_seconds=0.2,
    )
    inside, release = threading.Semaphore(0), threading.Event()

    def hold() -> None:
        with guard.verify_slot():
            inside.release()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    inside.acquire(timeout=5), inside.acquire(timeout=5)
    with pytest.raises(HTTPException) as refused, guard.verify_slot():
        pass
    assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
    release.set()
    for thread in holders:
        thread.join()
    with guard.verify_slot():  # free again
        pass


def test_parse_networks_reads_addresses_and_blocks():
    assert [str(n) for n in parse_networks(" 10.0.0.0/8, 127.0.0.1 ,::1")] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]
