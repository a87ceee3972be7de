"""Ray Serve's own asynchronous inference, as the platform's peer (built as Ray Serve's
documentation shows it): an ingress deployment that enqueues each image on Celery, with Redis
as broker and result store, and answers the task's id; a ``@task_consumer`` deployment whose
``@task_handler`` runs both predictors (the same classes, weights and decoding as every other
row); clients that poll the task until it has a result.

Needs Redis on 127.0.0.1:6379 (the benchmark uses a database number of its own and empties
it) and the bench extra (``celery[redis]``, ``tornado``: Ray's serve extra brings neither).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from typing import Any, cast

from bench.peers import load_task_predictors, run_task_batch

REDIS_DB = 7
# How often a client asks for its task's result: what a client of an asynchronous API does.
POLL_SECONDS = 0.02


def redis_url(db: int = REDIS_DB) -> str:
    return f"redis://127.0.0.1:6379/{db}"


def async_inference_app(
    queue_name: str, torch_threads: int, consumers: int, overlays: Sequence[str] = ()
) -> Any:
    """The two deployments; ``consumers`` tasks run at once in the consumer replica (Celery's
    worker threads: it calls the handler one task at a time per thread, no batching)."""
    from ray import serve
    from ray.serve import Deployment
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig
    from ray.serve.task_consumer import (
        instantiate_adapter_from_config,
        task_consumer,
        task_handler,
    )
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    config = TaskProcessorConfig(
        queue_name=queue_name,
        adapter_config=CeleryAdapterConfig(broker_url=redis_url(), backend_url=redis_url()),
    )

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=consumers)
    @task_consumer(task_processor_config=config)
    class Consumer:
        def __init__(self) -> None:
            import torch

            torch.set_num_threads(torch_threads)
            self.detector, self.classifier = load_task_predictors(overlays=overlays)
            self.inference_cpu_s = 0.0

        @task_handler(name="predict")
        def predict(self, image_b64: str) -> dict:
            # This thread's CPU only: Celery runs handlers on several threads at once.
            before = time.thread_time()
            image = base64.b64decode(image_b64)
            out = run_task_batch(self.detector, self.classifier, [image])[0]
            self.inference_cpu_s += time.thread_time() - before
            return out

        def stats(self) -> dict[str, float]:
            return {"inference_cpu_s": self.inference_cpu_s}

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
    class Front:
        def __init__(self, consumer: Any) -> None:
            # ``consumer``: bound so that Serve deploys it; tasks reach it through Redis.
            self.adapter = instantiate_adapter_from_config(config)

        async def __call__(self, request: Request) -> JSONResponse:
            if request.method == "POST":
                body = base64.b64encode(await request.body()).decode()
                task = await asyncio.to_thread(
                    self.adapter.enqueue_task_sync, "predict", args=[body]
                )
                return JSONResponse({"id": task.id})
            task_id = request.url.path.rsplit("/", 1)[-1]
            status = await asyncio.to_thread(self.adapter.get_task_status_sync, task_id)
            done = status.status == "SUCCESS"
            return JSONResponse(
                {"status": status.status, "result": status.result if done else None}
            )

    front, consumer = cast(Deployment, Front), cast(Deployment, Consumer)
    return front.bind(consumer.bind())


async def async_inference_load(base: str, images: list[bytes], concurrency: int) -> dict[str, Any]:
    """Submit, then poll the task every POLL_SECONDS until it has a result."""
    from bench.run import closed_loop, http_client

    async with http_client(base, concurrency) as client:

        async def one(image: bytes) -> bool:
            response = await client.post(
                "/tasks", content=image, headers={"Content-Type": "image/jpeg"}
            )
            if response.status_code != 200:
                return False
            task_id = response.json()["id"]
            while True:
                body = (await client.get(f"/tasks/{task_id}")).json()
                if body["status"] == "FAILURE":
                    return False
                # Ray's adapter reads the result, then the status, from the backend: a task
                # that finished in between is SUCCESS with no result yet. Ask again.
                if body["status"] == "SUCCESS" and body["result"] is not None:
                    return "image_class" in body["result"]
                await asyncio.sleep(POLL_SECONDS)

        await one(images[0])  # warm the queue, the connection and the models
        return await closed_loop(images, concurrency, one)


def empty_redis_db() -> None:
    import redis

    redis.Redis.from_url(redis_url()).flushdb()


def redis_cpu_s() -> float:
    """CPU seconds of the Redis server so far (its broker and result store)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("redis-server"):
            times = proc.cpu_times()
            total += times.user + times.system
    return total
