"""Which webhook URLs the platform may call. Production refuses every address that is not
globally routable (loopback, private, link-local — which holds the cloud metadata service —,
shared, reserved, multicast), judged on every address the host resolves to, at submission
and again before each attempt; the attempt then connects to the address that was checked, so
a DNS answer that changes in between (rebinding) cannot redirect it. Redirects are never
followed.

The cheap checks (scheme, length, characters, credentials, an address written as the host)
come before any DNS lookup; a lookup runs on the resolver's own few threads, never on a pool
other work shares, and gives up after its deadline, so a name server that never answers holds
only those threads, for at most that long per request (``Resolver``)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# Cloud metadata services outside the link-local range (Alibaba; AWS over IPv6).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)

# IPv6 forms that carry an IPv4 address, which is what the packet reaches in the end: NAT64's
# well-known prefix (RFC 6052), 6to4 (2002::/16), Teredo, IPv4-mapped and IPv4-compatible
# (::a.b.c.d). NAT64 prefixes of local use (RFC 8215) embed as the operator chooses, and
# site-local (fec0::/10, deprecated, still routed by some networks) is private: both refused.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
SITE_LOCAL = ipaddress.ip_network("fec0::/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why (it becomes a 400's detail)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        netloc = f"{host}:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str, what: str = "webhook") -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; UnsafeUrl when it is not one (``what``: the
    URL's use, as its messages name it: "webhook" or "image")."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"The {what} URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeUrl(f"The {what} URL holds a control character.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"The {what} URL is not valid: {exc}.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"The {what} URL must start with http:// or https://.")
    if not parts.hostname:
        raise UnsafeUrl(f"The {what} URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(f"The {what} URL may not carry a user name or password.")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through, or None for a native one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if int(address) >> 32 == 0xFFFF0000:  # IPv4-translated, ::ffff:0:a.b.c.d (RFC 2765)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64_WELL_KNOWN or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal(address: IPAddress, allow_loopback: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL_USE:
            return "an address that is not publicly routable"
        if address in SITE_LOCAL:
            return "a private address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            address = embedded
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address in METADATA_ADDRESSES or address.is_link_local:
        return "a link-local or metadata address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "an address that is not publicly routable"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


def _target(
    url: str,
    scheme: str,
    host: str,
    port: int,
    addresses: list[IPAddress],
    allow_loopback: bool,
    what: str = "webhook",
) -> Target:
    """The target when every address may be reached; UnsafeUrl naming the first that may not."""
    if not addresses:
        raise UnsafeUrl(f"The {what} host {host!r} does not resolve.")
    for address in addresses:
        reason = _refusal(address, allow_loopback)
        if reason is not None:
            # The address only when the URL gave it: a name's private address is the
            # operator's network map, not the caller's to learn.
            given = f" ({address})" if _literal(host) is not None else ""
            raise UnsafeUrl(
                f"The {what} host {host!r} resolves to {reason}{given}; "
                f"the platform calls only public addresses."
            )
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


def _lookup(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class ResolverBusy(Exception):
    """As many lookups as the resolver holds are under way: try again in a moment."""


class Resolver:
    """Checks webhook URLs with DNS lookups on ``threads`` threads of its own, each lookup
    given up after ``timeout_s`` (UnsafeUrl), and at most ``backlog`` lookups in at once, the
    ones still stuck past their deadline included (ResolverBusy beyond them)."""

    def __init__(self, *, threads: int = 8, backlog: int = 64, timeout_s: float = 3.0):
        self.timeout_s, self.backlog = timeout_s, backlog
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dns")
        self._in = 0
        self.lookup = _lookup  # the tests stand a slow name server in here

    async def resolve(self, url: str, *, allow_loopback: bool, what: str = "webhook") -> Target:
        """Check ``url`` and every address its host resolves to; the target to connect to."""
        scheme, host, port = parse(url, what)
        literal = _literal(host)
        if literal is not None:
            return _target(url, scheme, host, port, [literal], allow_loopback, what)
        if self._in >= self.backlog:
            raise ResolverBusy
        self._in += 1
        loop = asyncio.get_running_loop()
        lookup = loop.run_in_executor(self._pool, functools.partial(self.lookup, host, port))
        lookup.add_done_callback(self._done)  # a lookup past its deadline still holds a place
        try:
            addresses = await asyncio.wait_for(asyncio.shield(lookup), self.timeout_s)
        except TimeoutError as exc:
            raise UnsafeUrl(
                f"The {what} host {host!r} did not resolve within {self.timeout_s:g} s."
            ) from exc
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeUrl(f"The {what} host {host!r} does not resolve.") from exc
        return _target(url, scheme, host, port, addresses, allow_loopback, what)

    def _done(self, _: object) -> None:
        self._in -= 1


def resolve(url: str, *, allow_loopback: bool) -> Target:
    """Check ``url`` and every address its host resolves to (blocking: DNS, no deadline; for
    scripts and tests); the target to connect to, or UnsafeUrl."""
    scheme, host, port = parse(url)
    literal = _literal(host)
    if literal is not None:
        return _target(url, scheme, host, port, [literal], allow_loopback)
    try:
        addresses = _lookup(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"The webhook host {host!r} does not resolve.") from exc
    return _target(url, scheme, host, port, addresses, allow_loopback)
