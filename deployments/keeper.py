"""The keeper: a one-replica Serve deployment that owns the background actors. It creates the
task queue and the webhook sender (named, detached, on the head node), hands the queue the
model deployments' handles and its settings, and keeps both alive: Ray restarts an actor after
a crash; the keeper recreates one that was killed for good (``ray.kill(no_restart=True)``).
Serve restarts the keeper itself if it dies. The ingress only finds the actors by name."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.settings import get_settings

log = logging.getLogger("ray.serve")

SUPERVISE_SECONDS = 5.0
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
        queue_concurrency: int,
    ):
        self.settings = get_settings()
        registry = Registry(ModelSpec.model_validate(m) for m in models)
        self.queue_args = (
            detectors,
            classifiers,
            queue_concurrency,
            {spec.id: spec.name for spec in registry.models},
        )
        self.queue: ActorHandle = self._queue()
        self.queue.configure.remote(*self.queue_args)  # a queue that outlived a redeploy
        self.sender: ActorHandle = self._sender()
        self._loop: asyncio.Task[None] = asyncio.get_running_loop().create_task(self.supervise())

    def _queue(self) -> ActorHandle:
        from deployments.task_queue import TaskQueue

        return TaskQueue.options(  # type: ignore[attr-defined]
            name=self.settings.queue_actor_name,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            resources=ON_HEAD,
        ).remote(*self.queue_args)

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
            if not await self._answers(self.queue, "task queue"):
                self.queue = self._queue()
                await self.queue.configure.remote(*self.queue_args)
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
