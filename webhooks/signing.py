"""Standard Webhooks signatures: ``v1,`` and the base64 HMAC-SHA256 of
``{webhook-id}.{webhook-timestamp}.{body}``, keyed with the base64-decoded part of the
user's ``whsec_`` secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value."""
    message = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three signature headers for one attempt."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, event_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(secret: str, received: dict[str, str], body: bytes, tolerance_s: float = 300) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent. (For the
    tests and the README's receiver; any Standard Webhooks library does the same.)"""
    lowered = {k.lower(): v for k, v in received.items()}
    try:
        timestamp = int(lowered["webhook-timestamp"])
        event_id = lowered["webhook-id"]
        offered = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, event_id, timestamp, body)
    return any(hmac.compare_digest(expected, sig) for sig in offered)
