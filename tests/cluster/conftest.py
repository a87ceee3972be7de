"""Clusters of several Ray nodes on this machine (make test-cluster, a step of CI): each test
starts and stops its own, so these run apart from the other tests."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import REPO_ROOT

TIMINGS = REPO_ROOT / "var" / "cluster-timings.json"

# Token authentication, Ray's default for clusters started with `ray start`: the head, its
# worker nodes and this driver share the token in ~/.ray (made if missing). Ray reads the mode
# once, when it is first used in a process, so it is set before anything touches Ray.
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture
def platform_env(database_url: str) -> dict[str, str]:
    return {"PRIMITIVES_DATABASE_URL": database_url, "PRIMITIVES_ENVIRONMENT": "production",
            "PRIMITIVES_JWT_SECRET": uuid.uuid4().hex * 2,
            "PRIMITIVES_QUEUE_POLL_SECONDS": "0.5", "PRIMITIVES_QUEUE_LEASE_SECONDS": "6",
            "PRIMITIVES_QUEUE_ACTOR_NAME": f"cluster_queue_{uuid.uuid4().hex[:6]}",
            "PRIMITIVES_WEBHOOK_ACTOR_NAME": f"cluster_hooks_{uuid.uuid4().hex[:6]}"}


@pytest.fixture
def timings(request) -> Iterator[dict[str, float]]:
    """What the test measured, kept in var/cluster-timings.json (by test) for the record."""
    measured: dict[str, float] = {}
    yield measured
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    known[request.node.name] = measured
    TIMINGS.write_text(json.dumps(known, indent=2))
    print(f"\n{request.node.name}: {measured}")


def write_overlay(folder: Path, deployments: list[dict]) -> Path:
    import yaml

    path = folder / f"overlay-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"deployments": deployments}))
    return path
