"""The HTTP ingress: the FastAPI app, hosted by Ray Serve, plus its link to the task queue (found
by name; the keeper, deployments/keeper.py, creates and keeps it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.settings import Settings, get_settings
from deployments import metrics
from serve_app.main import create_app
from storage.database import make_engine, make_session_factory

log = logging.getLogger("ray.serve")

DESCRIBE_TIMEOUT_S = 2.0
# How long the replica counts read from Serve's controller are trusted (describe_models).
REPLICAS_SECONDS = 5.0
# How long the ingress keeps a looked-up queue handle before asking Ray for the name again
# (the keeper may have recreated the actor meanwhile).
LOOKUP_SECONDS = 5.0


class RayQueueLink:
    """The API's ``QueueLink``: the queue actor, found by name (the keeper creates and keeps
    it), and the model deployments' handles (for /api/models and /readyz)."""

    def __init__(
        self,
        settings: Settings,
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
    ):
        self.settings = settings
        self.handles = {**detectors, **classifiers}
        self._actor: ActorHandle | None = None
        self._looked_up = 0.0
        self._described: dict[int, dict[str, Any]] = {}  # the last answer of each model
        self._running: dict[str, int] = {}  # running replicas by deployment name
        self._counted = -REPLICAS_SECONDS

    @property
    def actor(self) -> ActorHandle:
        now = time.monotonic()
        if self._actor is None or now - self._looked_up > LOOKUP_SECONDS:
            try:
                self._actor = ray.get_actor(
                    self.settings.queue_actor_name, namespace=self.settings.ray_namespace
                )
                self._looked_up = now
            except ValueError:  # not there (yet, or being recreated): keep the last one
                if self._actor is None:
                    raise
        return self._actor

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] | None = await self.actor.wait_finished.remote(
                task_id, timeout, notify
            )
            return body
        except Exception:  # noqa: BLE001 - queue restarting: the caller reads the DB anyway
            log.info("long poll for task %d ended early: the queue did not answer", task_id)
            self._actor = None
            return None

    def notify(self) -> None:
        try:
            self.actor.notify.remote()  # fire and forget: the queue also polls
        except ValueError:
            log.info("no task queue to wake; it polls when it is back")

    def cancel(self, task_id: int) -> None:
        metrics.tasks_total().inc(1, tags={"outcome": "canceled"})
        self.forget(task_id)

    def forget(self, task_id: int) -> None:
        with contextlib.suppress(ValueError):  # no queue: lease renewal will find it
            self.actor.abandon.remote(task_id)  # fire and forget

    async def ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.actor.ready.remote(), DESCRIBE_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - restarting, gone or slow: not ready
            self._actor = None
            return False

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        """What each model's replicas say of themselves. A deployment scaled to zero is not
        asked (a request would start a replica: a probe of /readyz would keep it up for
        ever): it is ready, with no replica, and what its last replica said."""
        running = await self._running_replicas()

        async def one(model_id: int, handle: DeploymentHandle) -> tuple[int, dict[str, Any]]:
            if running.get(handle.deployment_name) == 0:
                return model_id, {**self._described.get(model_id, {}), "ready": True, "replicas": 0}
            try:
                answer = await asyncio.wait_for(handle.describe.remote(), DESCRIBE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - not ready yet: say so rather than fail
                return model_id, {"ready": False}
            self._described[model_id] = answer
            return model_id, {**answer, "replicas": running.get(handle.deployment_name)}

        return dict(await asyncio.gather(*(one(i, h) for i, h in self.handles.items())))

    async def _running_replicas(self) -> dict[str, int]:
        """Running replicas by deployment name, from Serve's controller (read at most every
        few seconds); empty when it cannot say."""
        if time.monotonic() - self._counted < REPLICAS_SECONDS:
            return self._running
        self._counted = time.monotonic()
        try:
            app = serve.get_replica_context().app_name
            status = await asyncio.wait_for(asyncio.to_thread(serve.status), DESCRIBE_TIMEOUT_S)
            self._running = {
                name: sum(
                    n
                    for state, n in deployment.replica_states.items()
                    if str(getattr(state, "value", state)) == "RUNNING"
                )
                for name, deployment in status.applications[app].deployments.items()
            }
        except Exception:  # noqa: BLE001 - the controller is busy: ask the replicas
            self._running = {}
        return self._running


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        models: list[dict[str, Any]],
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
        keeper: DeploymentHandle,
    ):
        # ``keeper``: bound so that Serve deploys it with the application; the ingress never
        # calls it (the actors it keeps are found by name).
        self.settings = get_settings()
        self.registry = Registry(ModelSpec.model_validate(m) for m in models)
        self.engine = make_engine(
            self.settings.database_url, pool_size=self.settings.database_pool_size
        )
        self.sessions = make_session_factory(self.engine)
        self.read_sessions = make_session_factory(
            make_engine(
                self.settings.database_url,
                pool_size=self.settings.database_pool_size,
                autocommit=True,
            )
        )
        self.queue = RayQueueLink(self.settings, detectors, classifiers)

    def __serve_build_asgi_app__(self):
        return create_app(
            settings=self.settings,
            registry=self.registry,
            session_factory=self.sessions,
            read_session_factory=self.read_sessions,
            queue=self.queue,
        )
