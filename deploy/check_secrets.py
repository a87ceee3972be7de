"""Refuse to start a production head whose secrets are missing or weak.

    python -m deploy.check_secrets

Run before Ray starts on a cluster's head: by ``deploy/cluster.yaml``'s head start command
and by the KubeRay head pod's init container (``deploy/render.py``). The platform's own
processes refuse a weak JWT secret when they start, but the GCS connects to its Redis before
any of them: with an empty password it would keep the cluster's tables (the code every node
runs) in a Redis anyone on the network may write. Exit status 1, with every reason, when:

- ``PRIMITIVES_JWT_SECRET`` is not a random secret (``config.settings.secret_weakness``);
- ``RAY_REDIS_ADDRESS`` is set (the GCS keeps its tables in Redis) and the Redis password,
  ``RAY_REDIS_PASSWORD``, is empty or not a random secret of at least 16 characters.

No secret is ever printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from config.settings import secret_bits, secret_weakness

MIN_REDIS_PASSWORD_LENGTH = 16  # a managed Redis's auth token: 16 to 128 characters
MIN_REDIS_PASSWORD_BITS = 64


def redis_password_weakness(password: str) -> str | None:
    """Why ``password`` may not guard the GCS's Redis, or None."""
    if not password:
        return "is empty: the GCS would keep the cluster's tables in a Redis without a password"
    if len(password) < MIN_REDIS_PASSWORD_LENGTH:
        return f"is shorter than {MIN_REDIS_PASSWORD_LENGTH} characters"
    if any(c.isspace() for c in password) or secret_bits(password) < MIN_REDIS_PASSWORD_BITS:
        return "is not random (a sentence, a word or a placeholder)"
    return None


def problems(env: Mapping[str, str]) -> list[str]:
    """Every reason the head may not start with ``env``; empty when it may."""
    found = []
    weakness = secret_weakness(env.get("PRIMITIVES_JWT_SECRET", ""))
    if weakness is not None:
        found.append(f"PRIMITIVES_JWT_SECRET {weakness}")
    if env.get("RAY_REDIS_ADDRESS"):
        weakness = redis_password_weakness(env.get("RAY_REDIS_PASSWORD", ""))
        if weakness is not None:
            found.append(f"RAY_REDIS_PASSWORD {weakness}")
    return found


def main(env: Mapping[str, str] | None = None) -> int:
    found = problems(os.environ if env is None else env)
    for problem in found:
        print(f"check_secrets: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
