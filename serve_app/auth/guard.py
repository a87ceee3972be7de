"""What a login may cost before its password is known to be right.

Failed logins are counted per (client address, user name) and per account (every address
together), each attempt counted before its password is checked, in one atomic step per key, so
parallel guesses cannot overshoot a limit; a success gives its count back. Password verifies
(argon2id: 64 MiB and tens of ms each) run a few at a time per replica; past that a login waits
a moment, then is answered 503. The client address is the peer's, or, when the peer is a
configured trusted proxy, the nearest address that proxy chain vouches for (X-Forwarded-For,
read from the right): a header a client sends itself is never believed."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from serve_app.ratelimit import Limiter

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[IPNetwork]:
    """Comma-separated addresses or CIDR blocks (``PRIMITIVES_TRUSTED_PROXIES``)."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def _trusted(host: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(request: Request, trusted: Sequence[IPNetwork]) -> str:
    """The client's address as far as trusted proxies vouch for it."""
    peer = request.client.host if request.client else ""
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy we trust writes addresses; anything else is forged
    return hops[0] if hops else peer


@dataclass(frozen=True)
class LoginKeys:
    pair: tuple[str, str]  # (client address, user name)
    account: str


class LoginGuard:
    def __init__(
        self,
        *,
        failures: Limiter,
        account_failures: Limiter,
        concurrency: int,
        trusted_proxies: Sequence[IPNetwork],
        verify_wait_seconds: float = 5.0,
    ):
        self.failures, self.account_failures = failures, account_failures
        self.trusted_proxies = list(trusted_proxies)
        self.verify_wait_seconds = verify_wait_seconds
        self._verifies = threading.BoundedSemaphore(concurrency)

    def keys(self, request: Request, username: str) -> LoginKeys:
        return LoginKeys(
            pair=(client_address(request, self.trusted_proxies), username), account=username
        )

    def admit(self, keys: LoginKeys) -> None:
        """Count this attempt against both limits at once; 429 when either is spent."""
        wait = max(self.failures.take(keys.pair), self.account_failures.take(keys.account))
        if wait:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"Too many failed logins; try again in {wait} s.",
                headers={"Retry-After": str(wait)},
            )

    @contextmanager
    def verify_slot(self) -> Iterator[None]:
        """One of the replica's few password verifies; 503 when none frees up in time."""
        if not self._verifies.acquire(timeout=self.verify_wait_seconds):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="Too many logins at once; try again in a moment.",
                headers={"Retry-After": "1"},
            )
        try:
            yield
        finally:
            self._verifies.release()

    def succeeded(self, keys: LoginKeys) -> None:
        """A right password: its attempt was no failure."""
        self.failures.clear(keys.pair)
        self.account_failures.give_back(keys.account)
