"""What a login may cost before its password is known to be right.

Failed logins are counted per (client address, user name), per account (every address
together) and per client address (whatever the names it tries), each attempt counted before
its password is checked, in one atomic step per key, so parallel guesses cannot overshoot a
limit; a success gives its count back. A login's blocking
work (the limits, the user's row, the password verify: argon2id, 64 MiB and tens of ms each)
runs on the logins' own few threads, never on the pool every other route shares, and a login
that finds them all busy and their short queue full is answered 503 at once: a flood of logins
delays only logins. The client address is the peer's: behind the node's own HAProxy, the
address it appended to X-Forwarded-For; and when that is a configured trusted proxy, the
nearest address the proxy chain vouches for (read from the right): a header a client sends
itself is never believed."""

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


def client_address(
    request: Request, trusted: Sequence[IPNetwork], *, local_proxy: bool = False
) -> str:
    """The client's address as far as trusted proxies vouch for it. ``local_proxy``: requests
    come through the node's own HAProxy (Ray's fast path, run by deploy/haproxy), which
    appends the address it accepted to X-Forwarded-For: from a loopback peer, the header's
    last entry is the client (then, while that is a trusted proxy, the one before it)."""
    peer = request.client.host if request.client else ""
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    if local_proxy and _loopback(peer):
        if not hops:
            return peer
        *hops, peer = hops  # what HAProxy saw: the last entry, whatever came before it
        try:
            peer = str(ipaddress.ip_address(peer))
        except ValueError:
            return request.client.host if request.client else ""
    if not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy we trust writes addresses; anything else is forged
    return hops[0] if hops else peer


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LoginKeys:
    pair: tuple[str, str]  # (client address, user name)
    account: str
    address: str


class LoginGuard:
    def __init__(
        self,
        *,
        failures: Limiter,
        account_failures: Limiter,
        address_failures: Limiter | None = None,
        concurrency: int,
        queue: int,
        trusted_proxies: Sequence[IPNetwork],
        local_proxy: bool = False,
    ):
        self.failures, self.account_failures = failures, account_failures
        self.address_failures = address_failures
        self.trusted_proxies = list(trusted_proxies)
        self.local_proxy = local_proxy
        # The logins' own threads, and how many logins may be in (running or queued for one).
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="login")
        self._capacity = concurrency + queue
        self._in = 0

    def keys(self, request: Request, username: str) -> LoginKeys:
        address = client_address(request, self.trusted_proxies, local_proxy=self.local_proxy)
        return LoginKeys(pair=(address, username), account=username, address=address)

    def admit(self, keys: LoginKeys) -> None:
        """Count this attempt against every limit at once (the address and name, the account,
        the address whatever the name); 429 when any is spent."""
        wait = max(
            self.failures.take(keys.pair),
            self.account_failures.take(keys.account),
            self.address_failures.take(keys.address) if self.address_failures else 0,
        )
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
        if self.address_failures:
            self.address_failures.give_back(keys.address)
