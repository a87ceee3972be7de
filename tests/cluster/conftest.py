"""Clusters of several Ray nodes on this machine (make test-cluster, a step of CI): each test
starts and stops its own, so these run apart from the other tests."""

from __future__ import annotations

import json
import os
import secrets
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
    return {
        "PRIMITIVES_DATABASE_URL": database_url,
        "PRIMITIVES_ENVIRONMENT": "production",
        "PRIMITIVES_JWT_SECRET": secrets.token_urlsafe(48),
        "PRIMITIVES_QUEUE_POLL_SECONDS": "0.5",
        "PRIMITIVES_QUEUE_LEASE_SECONDS": "6",
        "PRIMITIVES_QUEUE_ACTOR_NAME": f"cluster_queue_{uuid.uuid4().hex[:6]}",
        "PRIMITIVES_WEBHOOK_ACTOR_NAME": f"cluster_hooks_{uuid.uuid4().hex[:6]}",
    }


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


def add_backlog(sessions, *, username: str, count: int, seed: int) -> list[int]:
    """A new user's ``count`` queued tasks, stored in one transaction (they land at once)."""
    from storage.tasks import NewTasks, create_tasks
    from storage.users import create_user
    from training.render import render_jpeg

    images = [render_jpeg(seed + i)[0] for i in range(8)]
    with sessions() as db:
        user = create_user(db=db, username=username, password=f"{username}-pw")
        return create_tasks(
            db=db,
            user_id=user.id,
            new=NewTasks(
                detection_model_id=1,
                classification_model_id=3,
                images=[(images[i % 8], "image/jpeg") for i in range(count)],
            ),
        )


def write_overlay(folder: Path, deployments: list[dict]) -> Path:
    import yaml

    path = folder / f"overlay-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"deployments": deployments}))
    return path
