"""Which webhook URLs are refused, and the signature a receiver checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time

import pytest

from webhooks import signing
from webhooks.urls import Resolver, ResolverBusy, UnsafeUrl, resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "must start with http"),
        ("http:///path", "has no host"),
        ("http://user:pw@93.184.216.34/", "user name or password"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:0:127.0.0.1]/hook", "loopback"),  # IPv4-translated
        ("http://[::ffff:0:a9fe:a9fe]/", "link-local or metadata"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://172.16.5.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local or metadata"),
        ("http://100.100.100.200/", "link-local or metadata"),
        ("http://[fd00:ec2::254]/", "link-local or metadata"),
        ("http://0.0.0.0/", "private"),
        ("http://100.64.0.1/", "not publicly routable"),
        ("http://224.0.0.1/", "not publicly routable"),
        ("http://" + "a" * 2100 + ".com/", "longer than"),
        ("http://93.184.216.34/ho\x00ok", "control character"),  # a 500 on PostgreSQL before
        ("http://93.184.216.34/\r\nX-Injected: 1", "control character"),
        # IPv6 forms that carry an IPv4 address are judged by the address they reach.
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local or metadata"),  # NAT64 of 169.254.169.254
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
        ("http://[64:ff9b:1::a9fe:a9fe]/", "not publicly routable"),  # NAT64, local use
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
        ("http://[2002:a9fe:a9fe::1]/", "link-local or metadata"),  # 6to4 of 169.254.169.254
        ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
        ("http://[::a9fe:a9fe]/", "link-local or metadata"),
        ("http://[fec0::1]/", "private"),  # site-local
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "private"),  # Teredo
    ],
)
def test_unsafe_urls_are_refused_with_the_reason(url, reason):
    with pytest.raises(UnsafeUrl, match=reason):
        resolve(url, allow_loopback=False)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1"])
def test_an_ipv6_form_of_a_public_ipv4_address_is_allowed(address):
    target = resolve(f"http://[{address}]/hook", allow_loopback=False)
    assert str(target.address) == address


def test_loopback_is_allowed_only_when_asked_and_the_target_is_pinned():
    target = resolve("http://127.0.0.1:8123/hook?x=1", allow_loopback=True)
    assert target.pinned_url() == "http://127.0.0.1:8123/hook?x=1"
    assert target.host_header() == "127.0.0.1:8123"
    with pytest.raises(UnsafeUrl, match="private"):
        resolve("http://10.0.0.1/", allow_loopback=True)  # loopback only, not private


def test_a_public_address_passes_and_is_connected_to_as_checked():
    target = resolve("https://93.184.216.34/hooks/primitives", allow_loopback=False)
    assert str(target.address) == "93.184.216.34"
    assert target.pinned_url() == "https://93.184.216.34:443/hooks/primitives"
    assert target.host_header() == "93.184.216.34"


def test_a_host_that_does_not_resolve_is_refused():
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        resolve("http://no-such-host.invalid/hook", allow_loopback=False)


def test_the_signature_is_standard_webhooks_hmac_over_id_timestamp_and_body():
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = b'{"id":1,"status":"done"}'
    headers = signing.headers(secret, "msg_1", body, now=1_700_000_000)
    expected = base64.b64encode(
        hmac.new(b"k" * 24, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert headers["webhook-signature"] == "v1," + expected
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == "1700000000"
    assert not signing.verify(secret, headers, body)  # 1700000000 is long past
    fresh = signing.headers(secret, "msg_1", body)
    assert signing.verify(secret, fresh, body)
    assert not signing.verify(secret, fresh, body + b" ")
    assert not signing.verify("whsec_" + base64.b64encode(b"x" * 24).decode(), fresh, body)


class NameServer:
    """A stand-in for the resolver's lookup: answers a public address, or hangs on ``gate``."""

    def __init__(self, hang: bool = False) -> None:
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.hang = hang

    def __call__(self, host: str, port: int) -> list:
        import ipaddress

        self.calls.append(host)
        self.threads.add(threading.current_thread().name)
        if self.hang:
            self.gate.wait(10)
        return [ipaddress.ip_address("93.184.216.34")]


def test_cheap_checks_come_before_any_lookup_and_literals_need_none():
    """Review finding 4: the lookup ran first, on a request thread, with no time limit."""
    names = NameServer()
    resolver = Resolver(timeout_s=1)
    resolver.lookup = names

    async def scenario() -> None:
        for url in ("ftp://example.com/", "http://u:p@example.com/", "http://ex\x01ample.com/"):
            with pytest.raises(UnsafeUrl):
                await resolver.resolve(url, allow_loopback=False)
        target = await resolver.resolve("http://93.184.216.34:8080/h", allow_loopback=False)
        assert str(target.address) == "93.184.216.34"
        assert names.calls == []  # none of these asked a name server
        await resolver.resolve("https://hooks.example.com/h", allow_loopback=False)
        assert names.calls == ["hooks.example.com"]
        assert all(name.startswith("dns") for name in names.threads)  # its own threads

    asyncio.run(scenario())


def test_a_name_server_that_never_answers_costs_one_deadline_and_a_bounded_backlog():
    names = NameServer(hang=True)
    resolver = Resolver(threads=1, backlog=2, timeout_s=0.2)
    resolver.lookup = names

    async def scenario() -> None:
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(UnsafeUrl, match="did not resolve within 0.2 s"):
                await resolver.resolve("https://slow.example/h", allow_loopback=False)
        assert time.monotonic() - started < 5  # each gave up at its deadline, not the lookup's
        with pytest.raises(ResolverBusy):  # both still hang: no third place
            await resolver.resolve("https://slow.example/h", allow_loopback=False)
        names.gate.set()
        names.hang = False
        await asyncio.sleep(0.3)  # the hung lookups end and give their places back
        target = await resolver.resolve("https://fine.example/h", allow_loopback=False)
        assert target.host == "fine.example"

    asyncio.run(scenario())
