"""The task queue's dispatchers: named, detached Ray actors, ``count`` of them, the first named
after ``PRIMITIVES_QUEUE_ACTOR_NAME`` and the others after it with their index. The keeper
creates them with a ``QueueSetup``; the ingress, the keeper, the model replicas and the
dispatchers themselves find them here by name, each handle kept a few seconds (the keeper may
recreate an actor)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from config.settings import get_settings

# How long a looked-up handle is used before Ray is asked for the name again.
LOOKUP_SECONDS = 5.0


@dataclass(frozen=True)
class QueueSetup:
    """What the keeper hands every dispatcher when it creates one and after each redeploy:
    the model deployments to call (by model id), the share of tasks each model's canary
    weights take (README "Canary weights"), and the queue's scaling."""

    detectors: dict[int, DeploymentHandle]
    classifiers: dict[int, DeploymentHandle]
    concurrency: int  # tasks each dispatcher runs at once
    count: int = 1  # dispatchers
    model_names: dict[int, str] = field(default_factory=dict)  # the backlog is by name
    coalesce: bool = False  # one model call for the tasks that wait together
    canaries: dict[int, tuple[DeploymentHandle, float]] = field(default_factory=dict)


def dispatcher_name(base: str, index: int) -> str:
    """The actor name of dispatcher ``index`` (the first keeps the base name)."""
    return base if index == 0 else f"{base}-{index}"


def find_dispatcher(index: int, base: str, namespace: str) -> ActorHandle | None:
    """Dispatcher ``index``, asked of Ray by name now; None when there is none."""
    try:
        return ray.get_actor(dispatcher_name(base, index), namespace=namespace)
    except ValueError:
        return None


class Dispatchers:
    """Handles to the queue's dispatchers by index, looked up by name and kept a while."""

    def __init__(self, count: int, base: str | None = None, namespace: str | None = None):
        settings = get_settings()
        self.count = count
        self.base = base or settings.queue_actor_name
        self.namespace = namespace or settings.ray_namespace
        self._handles: dict[int, tuple[ActorHandle, float]] = {}

    def get(self, index: int) -> ActorHandle:
        """Dispatcher ``index``; ValueError when it does not exist (yet, or being recreated)
        and was never found before (else the last handle found)."""
        now = time.monotonic()
        known = self._handles.get(index)
        if known is None or now - known[1] > LOOKUP_SECONDS:
            handle = find_dispatcher(index, self.base, self.namespace)
            if handle is not None:
                known = (handle, now)
                self._handles[index] = known
            elif known is None:
                raise ValueError(f"no task queue dispatcher {index}")
        return known[0]

    def forget(self, index: int) -> None:
        """Look dispatcher ``index`` up again next time (a call to it failed)."""
        self._handles.pop(index, None)

    def all(self) -> list[ActorHandle]:
        """Every dispatcher that can be found now."""
        return [handle for _, handle in self.indexed()]

    def indexed(self) -> list[tuple[int, ActorHandle]]:
        """(index, handle) of every dispatcher that can be found now."""
        found = []
        for index in range(self.count):
            try:
                found.append((index, self.get(index)))
            except ValueError:
                continue
        return found
