"""``Client``: the platform's API over httpx, with retries and waiting."""

from __future__ import annotations

import builtins
import ipaddress
import json
import random
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

SETTLED = frozenset({"done", "failed", "canceled"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures of the connection itself: the front door is down or restarting.
RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.RemoteProtocolError,
    httpx.WriteError,
    httpx.PoolTimeout,
)
PREFER_WAIT_MAX_S = 60  # the longest ``Prefer: wait`` the platform honours
MEDIA_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


# An event stream sends at least a comment every 15 s; silence this long means it is gone.
EVENTS_READ_TIMEOUT_S = 45.0


class InsecureTransportWarning(UserWarning):
    """Passwords and tokens would cross the network in plain text."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _server_sent_events(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The events (their ``id`` and ``data`` fields) in a ``text/event-stream``'s lines;
    comments and events without an id or data are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "id" in fields and "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def _unavailable(response: httpx.Response) -> bool:
    """The platform could not answer: 429, 500, 502, 503 and 504, and the plain-text 404 Ray's
    proxy gives while it reloads its routes (every 404 of the API itself is JSON with a
    ``detail``)."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 404 and not response.headers.get("content-type", "").startswith(
        "application/json"
    )


def _backoff(attempt: int) -> float:
    """The pause before try ``attempt + 2``: 0.25 s doubling up to 4 s, with jitter (so that
    clients cut off together do not come back together)."""
    return min(4.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)


class PrimitivesError(Exception):
    """The platform refused a request: its status code and ``detail``."""

    def __init__(self, status_code: int, detail: Any):
        super().__init__(f"{status_code}: {detail}")
        self.status_code, self.detail = status_code, detail


def _media_type(data: bytes) -> str:
    for magic, media_type in MEDIA_TYPES.items():
        if data.startswith(magic):
            return media_type
    return "application/octet-stream"  # the platform answers 415 with its reason


class Client:
    """One platform at ``url``; ``token`` from an earlier ``login`` (or set by it), or an
    ``api_key`` (``prim_...``, from ``create_key``), which is sent the same way."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry_for: float = 60.0,
        retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if token is not None and api_key is not None:
            raise ValueError("give a token or an API key, not both")
        self.url, self.token = url.rstrip("/"), token if api_key is None else api_key
        # How long a call keeps trying while the platform cannot answer (a restarting proxy
        # takes a few seconds), and at most how many more tries (None: as many as fit).
        self.retry_for, self.retries = retry_for, retries
        self.http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        if self.http.base_url.scheme == "http" and not _is_loopback(self.http.base_url.host):
            warnings.warn(
                f"{self.url} is plain http: the password and the token cross the "
                "network unencrypted; use https beyond this machine",
                InsecureTransportWarning,
                stacklevel=2,
            )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, tried again while the platform cannot answer it (connection errors, 500,
        502, 503, 504, 429, and the proxy's plain 404 while its routes load after a restart):
        after the ``Retry-After`` the platform gives, else a pause that doubles up to 4 s, for
        up to ``retry_for`` seconds in all (and ``retries`` more tries, when set). Every POST of a
        task carries an ``Idempotency-Key``, so a retry never makes a second task. Raises
        PrimitivesError for any other 4xx, or for the last answer when time is up."""
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except RETRY_ERRORS:
                pause = _backoff(attempt)
                if not self._may_retry(attempt, deadline, pause):
                    raise
            else:
                if not _unavailable(response):
                    break
                retry_after = response.headers.get("Retry-After", "")
                pause = (
                    min(30.0, float(retry_after)) if retry_after.isdigit() else _backoff(attempt)
                )
                if not self._may_retry(attempt, deadline, pause):
                    break
            time.sleep(pause)
            attempt += 1
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise PrimitivesError(response.status_code, detail)
        return response

    def _may_retry(self, attempt: int, deadline: float, pause: float) -> bool:
        """Whether another try after ``pause`` seconds fits the retry budget."""
        if self.retries is not None and attempt >= self.retries:
            return False
        return time.monotonic() + pause < deadline

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- the API ------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Log in; the token is kept on the client and returned."""
        body = self._json("POST", "/oauth/login", data={"username": username, "password": password})
        self.token = str(body["access_token"])
        return self.token

    def logout(self) -> None:
        """Log out everywhere: every token of this user issued until now stops working."""
        self.request("POST", "/oauth/logout")
        self.token = None

    def me(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/me"))

    def models(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/models"))

    def submit(
        self,
        image: str | Path | bytes | None = None,
        *,
        image_url: str | None = None,
        detection_model_id: int | None = None,
        classification_model_id: int | None = None,
        webhook: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        timeout: float = 600.0,
        priority: int | None = None,
        deadline_s: int | None = None,
    ) -> dict[str, Any]:
        """Submit one image (a path or its bytes). Without ``wait``: ``{"id": ...}``; with
        it, the result route's body once the task is done, failed or canceled: one request
        (``Prefer: wait``) answers most tasks, long polls of the result route the rest;
        TimeoutError after ``timeout`` seconds. A retry of the POST (same idempotency key)
        never makes a second task. ``priority`` (0 to 9, default 5) and ``deadline_s`` (the
        seconds it may wait to start): the queue policy, docs/api.md §E10. ``image_url``
        instead of ``image``: the platform fetches the image from that URL (§E13)."""
        if (image is None) == (image_url is None):
            raise ValueError("give an image or an image_url, one of them")
        if image_url is not None:
            data, content_type = json.dumps({"image_url": image_url}).encode(), "application/json"
        else:
            data = image if isinstance(image, bytes) else Path(image).read_bytes()  # type: ignore[arg-type]
            content_type = _media_type(data)
        params: dict[str, Any] = {}
        if detection_model_id is not None:
            params["detection_model_id"] = detection_model_id
        if classification_model_id is not None:
            params["classification_model_id"] = classification_model_id
        if webhook is not None:
            params["webhook"] = webhook
        if priority is not None:
            params["priority"] = priority
        if deadline_s is not None:
            params["deadline_s"] = deadline_s
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
        }
        if not wait:
            return dict(
                self._json("POST", "/api/tasks", params=params, content=data, headers=headers)
            )
        started = time.monotonic()
        seconds = max(1, min(PREFER_WAIT_MAX_S, int(timeout)))
        body = self._json(
            "POST",
            "/api/tasks",
            params=params,
            content=data,
            headers={**headers, "Prefer": f"wait={seconds}"},
            timeout=self.http.timeout.read + seconds
            if self.http.timeout.read is not None
            else None,
        )
        if body["status"] in SETTLED:
            return dict(body)
        return self.wait(body["id"], timeout=max(0.0, timeout - (time.monotonic() - started)))

    def submit_many(
        self,
        images: Iterable[str | Path | bytes],
        *,
        wait: bool = False,
        timeout: float = 600.0,
        progress: Callable[[int], None] | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Submit each image; with ``wait``, then wait for them all. ``progress(n)`` is
        called as each of the n tasks is submitted (and, with ``wait``, as each settles)."""
        created = []
        for image in images:
            created.append(self.submit(image, **options))
            if progress and not wait:
                progress(1)
        if not wait:
            return created
        deadline = time.monotonic() + timeout
        results = []
        for task in created:
            results.append(self.wait(task["id"], timeout=max(0.0, deadline - time.monotonic())))
            if progress:
                progress(1)
        return results

    def events(
        self, *, last_event_id: int | None = None, reconnect: bool = True
    ) -> Generator[dict[str, Any], None, None]:
        """The caller's task status changes as they happen (``GET /api/tasks/events``):
        ``{"event_id": 12, "id": 7, "status": "done"}`` each. A dropped stream is opened
        again from the last event received (``reconnect``), so none is lost or repeated;
        pass ``last_event_id`` to resume an earlier stream. Runs until the token expires or
        the caller stops iterating."""
        headers = {"Accept": "text/event-stream"}
        while True:
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with self.http.stream(
                    "GET",
                    "/api/tasks/events",
                    headers=headers,
                    timeout=httpx.Timeout(self.http.timeout.connect, read=EVENTS_READ_TIMEOUT_S),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        try:
                            detail = response.json().get("detail")
                        except ValueError:
                            detail = response.text
                        raise PrimitivesError(response.status_code, detail)
                    for event in _server_sent_events(response.iter_lines()):
                        last_event_id = int(event["id"])
                        yield {"event_id": last_event_id, **json.loads(event["data"])}
            except (httpx.TransportError, httpx.StreamError):
                if not reconnect:
                    raise
                time.sleep(1.0)
                continue
            if not reconnect:
                return
            time.sleep(0.2)  # the server ended it (the token expired): the next call says why

    def status(self, task_id: int) -> str:
        return str(self._json("GET", f"/api/tasks/{task_id}/status")["status"])

    def result(self, task_id: int, *, wait: float = 0) -> dict[str, Any]:
        """The result route's body (``result`` is None until done)."""
        params = {"wait": wait} if wait else None
        return dict(self._json("GET", f"/api/tasks/{task_id}/result", params=params))

    def wait(self, task_id: int, *, timeout: float = 600.0) -> dict[str, Any]:
        """The result once the task is done, failed or canceled (long polls of up to 20 s);
        TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            body = self.result(task_id, wait=max(0.0, min(20.0, left)))
            if body["status"] in SETTLED:
                return body
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {body['status']} after {timeout:g} s")

    def list(
        self, *, status: str | None = None, after_id: int = 0, limit: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {"after_id": after_id}
        if status is not None:
            params["status"] = status
        if limit is not None:
            params["limit"] = limit
        return builtins.list(self._json("GET", "/api/tasks", params=params)["tasks"])

    def input(self, task_id: int) -> bytes:
        return self.request("GET", f"/api/tasks/{task_id}/input").content

    def visualize(
        self,
        task_id: int,
        out: str | Path | None = None,
        *,
        min_probability: float = 0.0,
        jpeg: bool = False,
    ) -> bytes:
        """The picture of a done task's result (PNG, or JPEG); written to ``out`` if given."""
        picture = self.request(
            "GET",
            f"/api/tasks/{task_id}/visualization",
            params={"min_probability": min_probability} if min_probability else None,
            headers={"Accept": "image/jpeg" if jpeg else "image/png"},
        ).content
        if out is not None:
            Path(out).write_bytes(picture)
        return picture

    def cancel(self, task_id: int) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/tasks/{task_id}/cancel"))

    def retry(self, task_id: int) -> dict[str, Any]:
        """Run a failed or canceled task again as a new task (same input and options);
        ``{"id": <new task id>}``. The old task is kept. One Idempotency-Key for every try,
        so a try repeated after a lost answer never makes a second task."""
        key = {"Idempotency-Key": str(uuid.uuid4())}
        return dict(self._json("POST", f"/api/tasks/{task_id}/retry", headers=key))

    def delete(self, task_id: int) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/api/tasks/{task_id}"))

    def create_key(self, name: str) -> dict[str, Any]:
        """A new API key (needs a password login's token): ``{"id", "name", "key",
        "created_at"}``; ``key`` is the secret, shown this once."""
        return dict(self._json("POST", "/api/keys", json={"name": name}))

    def list_keys(self) -> builtins.list[dict[str, Any]]:
        """The caller's API keys, without their secrets (needs a password login's token)."""
        return builtins.list(self._json("GET", "/api/keys")["keys"])

    def revoke_key(self, key_id: int) -> None:
        """Revoke an API key: it stops working at once."""
        self.request("DELETE", f"/api/keys/{key_id}")

    def webhooks(self, task_id: int) -> builtins.list[dict[str, Any]]:
        return builtins.list(self._json("GET", f"/api/tasks/{task_id}/webhooks")["deliveries"])
