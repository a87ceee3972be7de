"""An image by URL (docs/api.md §E13): ``POST /api/tasks`` with a JSON body
``{"image_url": "https://..."}`` has the platform fetch the image under the webhook URL rules.

Every hop is checked before it is called: the URL's form, then every address its host
resolves to (``webhooks.urls.Resolver``: public addresses only, loopback in development, on
the resolver's own threads with a deadline); the request goes to the address that was
checked, so a DNS answer that changes in between cannot redirect it. A redirect is followed
only after its target passes the same checks, at most ``max_redirects`` times. The answer
must be a 200 whose body fits in ``max_bytes`` (refused from ``Content-Length`` when given,
else as soon as the stream passes it), all within ``timeout_s`` from the first lookup to the
last byte. No proxy from the environment, no cookies, no credentials. Each refusal is
``FetchRefused`` with a message that says why; it becomes a 400.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import httpx

from webhooks.urls import Resolver, UnsafeUrl

USER_AGENT = "primitives-image-fetch/1"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchRefused(ValueError):
    """The image could not be fetched; the message says why (a 400's detail)."""


class ImageFetcher:
    """Fetches images for submissions, over one connection pool per ingress replica."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        max_bytes: int,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        connections: int = 32,
    ):
        self.resolver, self.max_bytes = resolver, max_bytes
        self.timeout_s, self.max_redirects = timeout_s, max_redirects
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=connections),
        )

    async def fetch(self, url: str, *, allow_loopback: bool) -> bytes:
        """The body of the 200 that ``url`` (or a checked redirect of it) answers with."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url, allow_loopback)
        except TimeoutError:
            raise FetchRefused(
                f"The image URL did not answer in full within {self.timeout_s:g} s."
            ) from None
        except UnsafeUrl as exc:
            raise FetchRefused(str(exc)) from None
        except httpx.HTTPError as exc:
            raise FetchRefused(
                f"The image URL could not be reached ({type(exc).__name__})."
            ) from None

    async def _follow(self, url: str, allow_loopback: bool) -> bytes:
        for hop in range(self.max_redirects + 1):
            target = await self.resolver.resolve(url, allow_loopback=allow_loopback, what="image")
            headers = {
                "host": target.host_header(),
                "user-agent": USER_AGENT,
                "accept": "image/jpeg, image/png",
                "accept-encoding": "identity",  # the bytes counted are the bytes kept
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            async with self.client.stream(
                "GET", target.pinned_url(), headers=headers, extensions=extensions
            ) as response:
                if response.status_code in REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchRefused("The image URL redirected without a Location.")
                    if hop == self.max_redirects:
                        raise FetchRefused(
                            f"The image URL redirected more than {self.max_redirects} times."
                        )
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise FetchRefused(f"The image URL answered {response.status_code}, not 200.")
                return await self._read(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _read(self, response: httpx.Response) -> bytes:
        too_large = FetchRefused(f"The image at the URL is larger than {self.max_bytes} bytes.")
        declared = response.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > self.max_bytes:
            raise too_large
        chunks, size = [], 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        await self.client.aclose()
