"""A Python client for the Primitives platform.

    from primitives_client import Client

    client = Client("http://127.0.0.1:8000")
    client.login("first", "111")
    result = client.submit("scene.jpg", wait=True)      # the result route's body
    client.visualize(result["id"], "scene-boxes.png")   # the picture with the boxes

Every POST carries an ``Idempotency-Key``, so its retries (connection errors, 429, 502, 503,
504, honouring ``Retry-After``) never create a second task.
"""

from primitives_client.client import SETTLED, Client, PrimitivesError

__all__ = ["SETTLED", "Client", "PrimitivesError"]
