"""A Python client for the Primitives platform.

    from primitives_client import Client

    client = Client("http://127.0.0.1:8000")
    client.login("first", "111")
    result = client.submit("scene.jpg", wait=True)      # the result route's body
    client.visualize(result["id"], "scene-boxes.png")   # the picture with the boxes

Every call is tried again while the platform cannot answer (connection errors, 500, 502, 503,
504, 429 honouring ``Retry-After``, the proxy's plain 404 while its routes reload), for up to
``retry_for`` seconds (60 by default); every POST of a task carries an ``Idempotency-Key``,
so its retries never create a second task.
"""

from primitives_client.client import SETTLED, Client, PrimitivesError

__all__ = ["SETTLED", "Client", "PrimitivesError"]
