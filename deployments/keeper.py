"""The keeper: a one-replica Serve deployment that owns the background actors. It creates the
task queue's dispatchers and the webhook sender (named, detached, on the head node), hands
the dispatchers the model deployments' handles and their settings, and keeps them all alive:
Ray restarts an actor after a crash; the keeper recreates one that was killed for good
(``ray.kill(no_restart=True)``) and kills the ones past a count that shrank. Serve restarts
the keeper itself if it dies. The ingress only finds the actors by name."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.serve_config import QueueOptions
from config.settings import get_settings
from deployments.dispatchers import QueueSetup, dispatcher_name, find_dispatcher

# Under Serve's logger: its JSON lines and log files, with this module named.
log = logging.getLogger(f"ray.serve.{__name__}")

SUPERVISE_SECONDS = 5.0
# Dispatchers past the configured count looked for (and killed) when the count shrinks.
MAX_RETIRED = 64
# The queue, the sender and the keeper run on the head node, as Serve's controller does: a
# worker node that held one could never be removed by the cluster autoscaler.
ON_HEAD = {"node:__internal_head__": 0.001}


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0, "resources": ON_HEAD},
    health_check_period_s=10,
)
class Keeper:
    def __init__(
        self,
        models: list[dict[str, Any]],
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
        queue: dict[str, Any],
        canaries: dict[int, DeploymentHandle] | None = None,
    ):
        self.settings = get_settings()
        registry = Registry(ModelSpec.model_validate(m) for m in models)
        options = QueueOptions.model_validate(queue)
        self.setup = QueueSetup(
            detectors=detectors,
            classifiers=classifiers,
            concurrency=options.per_dispatcher,
            count=options.dispatchers,
            model_names={spec.id: spec.name for spec in registry.models},
            coalesce=options.coalesce_calls,
            canaries={
                spec.id: (canaries[spec.id], spec.canary.share)
                for spec in registry.models
                if spec.canary is not None and canaries and spec.id in canaries
            },
        )
        self.queues: list[ActorHandle] = []
        for index in range(self.setup.count):
            self.queues.append(self._queue(index))
            # A dispatcher that outlived a redeploy takes the new deployments and scaling.
            self.queues[index].configure.remote(self.setup, index)
        self._retire_beyond(self.setup.count)
        self.sender: ActorHandle = self._sender()
        self._loop: asyncio.Task[None] = asyncio.get_running_loop().create_task(self.supervise())

    def _queue(self, index: int) -> ActorHandle:
        from deployments.task_queue import TaskQueue

        return TaskQueue.options(  # type: ignore[attr-defined]
            name=dispatcher_name(self.settings.queue_actor_name, index),
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            resources=ON_HEAD,
        ).remote(self.setup, index)

    def _retire_beyond(self, count: int) -> None:
        """Kill the dispatchers a larger deployment had (their leases lapse and the others
        claim their tasks again)."""
        for index in range(count, count + MAX_RETIRED):
            actor = find_dispatcher(
                index, self.settings.queue_actor_name, self.settings.ray_namespace
            )
            if actor is None:
                continue
            log.info("retiring task queue dispatcher %d (now %d)", index, count)
            ray.kill(actor, no_restart=True)

    def _sender(self) -> ActorHandle:
        from deployments.webhook_sender import WebhookSenderActor

        return WebhookSenderActor.options(  # type: ignore[attr-defined]
            name=self.settings.webhook_actor_name,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            resources=ON_HEAD,
        ).remote()

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            for index, queue in enumerate(self.queues):
                if not await self._answers(queue, f"task queue dispatcher {index}"):
                    self.queues[index] = self._queue(index)
                    await self.queues[index].configure.remote(self.setup, index)
            if not await self._answers(self.sender, "webhook sender"):
                self.sender = self._sender()

    async def _answers(self, actor: ActorHandle, what: str) -> bool:
        """False only when the actor is gone for good (Ray will not restart it)."""
        try:
            await asyncio.wait_for(actor.ready.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            log.warning("%s actor is gone; creating it again", what)
            return False
        except Exception:  # noqa: BLE001 - restarting or slow: look again next round
            log.info("%s did not answer; it may be restarting", what)
        return True

    def check_health(self) -> None:
        if self._loop.done():
            raise RuntimeError("the keeper's supervision stopped")
