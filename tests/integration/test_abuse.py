"""Hostile requests against the running platform (HAProxy, the ingress replicas): what they
may cost the server, measured on the real processes."""

from __future__ import annotations

import contextlib
import select
import socket
import time

import psutil
import pytest

MB = 1024 * 1024


def ingress_rss() -> int:
    """Resident bytes of the platform's ingress replicas, together."""
    total = 0
    for proc in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:primitives:Ingress" in part for part in proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
    assert total, "no ingress replica process found"
    return total


def stream_body(port: int, headers: str, total: int, chunk: bytes) -> tuple[bytes, int]:
    """Send the head, then body chunks until the server answers or ``total`` bytes are out;
    the start of the answer and how many body bytes were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(headers.encode())
    sent, deadline = 0, time.monotonic() + 120
    try:
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.settimeout(30)
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
        return answer, sent
    finally:
        sock.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_400_mb_login_body_is_refused_while_it_streams(platform, framing):
    """CONTRACT.md section 1: 413, and the ingress holds no more than a small, fixed amount
    (measured on ec95f26: 400 MB of JSON took the replica from 184 to 779 MB)."""
    total = 400 * MB
    if framing == "content-length":
        head = (f"POST /oauth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n")
        chunk = b"x" * MB
    else:
        head = ("POST /oauth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = f"{MB:x}\r\n".encode() + b"x" * MB + b"\r\n"
    before = ingress_rss()
    answer, sent = stream_body(platform.port, head, total, chunk)
    grown = ingress_rss() - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert grown < 50 * MB, f"the ingress grew by {grown / MB:.0f} MB"
    assert sent < total, "the server read the whole body before answering"
