"""What a login may cost before its password is known to be right.

Failed logins are counted per (client address, user name) and per account (every address
together), each attempt counted before its password is checked, in one atomic step per key, so
parallel guesses cannot overshoot a limit; a success gives its count back. A login's blocking
work (the limits, the user's row, the password verify: argon2id, 64 MiB and tens of ms each)
runs on the logins' own few threads, never on the pool every other route shares, and a login
that finds them all busy and their short queue full is answered 503 at once: a flood of logins
delays only logins. The client address is the peer's, or, when the peer is a configured
trusted proxy, the nearest address that proxy chain vouches for (X-Forwarded-For, read from the
right): a header a client sends itself is never believed."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from fastapi import HTTPException, Request, status

from serve_app.ratelimit import Limiter

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


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
        queue: int,
        trusted_proxies: Sequence[IPNetwork],
    ):
        self.failures, self.account_failures = failures, account_failures
        self.trusted_proxies = list(trusted_proxies)
        # The logins' own threads, and how many logins may be in (running or queued for one).
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="login")
        self._capacity = concurrency + queue
        self._in = 0

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

    async def run(self, work: Callable[[], T]) -> T:
        """Run a login's blocking ``work`` on the logins' own threads; 503 at once when as
        many logins as they run and queue are already in this replica."""
        if self._in >= self._capacity:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="Too many logins at once; try again in a moment.",
                headers={"Retry-After": "1"},
            )
        self._in += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        finally:
            self._in -= 1

    def succeeded(self, keys: LoginKeys) -> None:
        """A right password: its attempt was no failure."""
        self.failures.clear(keys.pair)
        self.account_failures.give_back(keys.account)
