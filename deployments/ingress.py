"""The HTTP ingress: the FastAPI app, hosted by Ray Serve, plus its link to the task queue (found
by name; the keeper, deployments/keeper.py, creates and keeps it)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.settings import Settings, get_settings
from deployments.dispatchers import Dispatchers
from serve_app.main import create_app
from storage.database import make_engine, make_session_factory
from storage.results import ResultBody
from taskqueue.dispatcher import home_of

# Under Serve's logger: its JSON lines and log files, with this module named.
log = logging.getLogger(f"ray.serve.{__name__}")

DESCRIBE_TIMEOUT_S = 2.0
# How long the replica counts read from Serve's controller are trusted (describe_models).
REPLICAS_SECONDS = 5.0


class RayQueueLink:
    """The API's ``QueueLink``: the queue's dispatchers, found by name (the keeper creates
    and keeps them), and the model deployments' handles (for /api/models and /readyz). A
    wait for a task goes to its home dispatcher (whichever dispatcher ends the task tells
    that one); a wake-up goes to the next dispatcher in turn; a cancel or delete to all."""

    def __init__(
        self,
        settings: Settings,
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
        dispatchers: int = 1,
    ):
        self.settings = settings
        self.handles = {**detectors, **classifiers}
        self.dispatchers = Dispatchers(dispatchers)
        self._turn = itertools.count()
        self._described: dict[int, dict[str, Any]] = {}  # the last answer of each model
        self._running: dict[str, int] = {}  # running replicas by deployment name
        self._counted = -REPLICAS_SECONDS

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> ResultBody | None:
        home = home_of(task_id, self.dispatchers.count)
        try:
            # The API waits only for a task it has just stored or read unsettled: the
            # dispatcher need not read it again.
            body: ResultBody | None = await self.dispatchers.get(home).wait_finished.remote(
                task_id, timeout, notify, True
            )
            return body
        except Exception:  # noqa: BLE001 - queue restarting: the caller reads the DB anyway
            log.info("long poll for task %d ended early: the queue did not answer", task_id)
            self.dispatchers.forget(home)
            return None

    def notify(self) -> None:
        index = next(self._turn) % self.dispatchers.count
        try:
            self.dispatchers.get(index).notify.remote()  # fire and forget: they also poll
        except ValueError:
            log.info("no task queue dispatcher %d to wake; it polls when it is back", index)

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        # Any dispatcher may run it, and its home answers its waits: tell them all (fire and
        # forget; one not found now finds out when it renews its leases). The home counts a
        # cancel among the outcomes, as it counts done and failed.
        home = home_of(task_id, self.dispatchers.count)
        for index, dispatcher in self.dispatchers.indexed():
            dispatcher.cancel.remote(task_id, count=not deleted and index == home)

    async def ready(self) -> bool:
        """Every dispatcher answers."""
        try:
            found = self.dispatchers.all()
            if len(found) < self.dispatchers.count:
                return False
            answers: list[bool] = await asyncio.wait_for(
                asyncio.gather(*(d.ready.remote() for d in found)), DESCRIBE_TIMEOUT_S
            )
            return all(answers)
        except Exception:  # noqa: BLE001 - restarting, gone or slow: not ready
            for index in range(self.dispatchers.count):
                self.dispatchers.forget(index)
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
        dispatchers: int = 1,
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
        self.queue = RayQueueLink(self.settings, detectors, classifiers, dispatchers)

    def __serve_build_asgi_app__(self):
        return create_app(
            settings=self.settings,
            registry=self.registry,
            session_factory=self.sessions,
            read_session_factory=self.read_sessions,
            queue=self.queue,
        )
