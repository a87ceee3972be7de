"""The one model deployment: wraps any predictor (``inference.build_predictor``) in Ray Serve,
with dynamic batching whose size and wait come from ``user_config`` in serve_config.yaml,
a health check and self-description. One deployment per registry entry, named after it."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
from ray import serve

from config.registry import ModelSpec
from deployments import metrics
from deployments.autoscaling import BACKLOG
from inference import ModelAnswer, ModelRefused, build_predictor

# Under Serve's logger: its JSON lines and log files, with this module named.
log = logging.getLogger(f"ray.serve.{__name__}")

# Used only until ``reconfigure`` applies the deployment's user_config.
INITIAL_MAX_BATCH_SIZE = 8
INITIAL_BATCH_WAIT_S = 0.005
BACKLOG_TIMEOUT_S = 2.0
# For a model that serve_config.yaml gives no ``deployments:`` block (a model brought by the
# user); the file's block, when there is one, replaces these.
FALLBACK_OPTIONS = {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 32}


@serve.deployment
class ModelDeployment:
    def __init__(self, spec: dict[str, Any]):
        self.spec = ModelSpec.model_validate(spec)
        self.predictor = build_predictor(self.spec)
        self.batches = self.images = 0
        self.inference_cpu_s = 0.0
        self.backlog = 0.0
        self._queue: Any = None
        log.info(
            "%s ready on %s (torch threads: %s)",
            self.spec.name,
            self.predictor.device,
            _torch_threads(),
        )

    def check_health(self) -> None:
        """Serve's periodic probe. On a GPU, a CUDA error (an illegal memory access, a lost
        device) leaves the context broken and every later call failing: the probe surfaces
        it, and Serve replaces the replica. On the CPU there is nothing that can break so."""
        device = str(self.predictor.device)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(device)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: batch size and wait, and torch's thread count (Ray sets it from
        ``num_cpus``, one thread below a whole CPU), changeable on a running deployment."""
        if "torch_threads" in config:
            import torch

            torch.set_num_threads(int(config["torch_threads"]))
        batched: Any = self._predict_batch  # serve.batch adds the setters
        if "max_batch_size" in config:
            batched.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    async def predict(self, image: bytes | np.ndarray) -> ModelAnswer:
        """The model's answer for one image (batched with concurrent calls); raises
        ModelRefused (ImageUnreadable for bytes that do not decode) for a refused input."""
        answer = await self._predict_batch(image)
        if isinstance(answer, ModelRefused):
            raise answer
        return answer

    async def predict_many(
        self, images: list[bytes | np.ndarray]
    ) -> list[ModelAnswer | ModelRefused]:
        """The model's answers for several images in one call (each joins the batches as a
        ``predict`` call would); an image refused alone comes back as its ModelRefused."""
        return list(await asyncio.gather(*(self._predict_batch(image) for image in images)))

    @serve.batch(max_batch_size=INITIAL_MAX_BATCH_SIZE, batch_wait_timeout_s=INITIAL_BATCH_WAIT_S)
    async def _predict_batch(
        self, images: list[bytes | np.ndarray]
    ) -> list[ModelAnswer | ModelRefused]:
        # In a thread: the replica's event loop keeps answering health checks meanwhile.
        cpu_before = time.process_time()
        outputs, elapsed_ms = await asyncio.to_thread(self.predictor.timed_predict, images)
        self.inference_cpu_s += time.process_time() - cpu_before
        size = sum(not isinstance(o, ModelRefused) for o in outputs)
        self.batches += 1
        self.images += len(images)
        metrics.batch_size().observe(len(images), tags={"model": self.spec.name})
        return [
            o
            if isinstance(o, ModelRefused)
            else ModelAnswer(
                prediction=o,
                model=self.spec.name,
                batch_size=size,
                inference_ms=elapsed_ms,
                weights_sha256=self.predictor.weights_sha256,
            )
            for o in outputs
        ]

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric: this model's backlog, as the task queue last
        counted it (``deployments.autoscaling.backlog_policy`` uses it). The last known
        count while the queue does not answer."""
        try:
            if self._queue is None:
                self._queue = await asyncio.to_thread(_queue_actor)
            self.backlog = float(
                await asyncio.wait_for(
                    self._queue.backlog.remote(self.spec.name), BACKLOG_TIMEOUT_S
                )
            )
        except Exception:  # noqa: BLE001 - restarting or not there yet: look it up again
            self._queue = None
        return {BACKLOG: self.backlog}

    def describe(self) -> dict[str, Any]:
        return self.predictor.describe().as_dict()

    def stats(self) -> dict[str, Any]:
        """Batches and images run, and the CPU seconds spent running them (the benchmark
        separates the platform's own cost from the models' with it)."""
        return {
            "batches": self.batches,
            "images": self.images,
            "inference_cpu_s": round(self.inference_cpu_s, 4),
            "torch_threads": _torch_threads(),
            "pid": os.getpid(),
        }

    def pid(self) -> int:
        """The replica's process id (the fault tests kill it)."""
        return os.getpid()


def _queue_actor() -> Any:
    """The dispatcher that keeps the books (the first): it counts the backlog."""
    from deployments.dispatchers import Dispatchers

    return Dispatchers(1).get(0)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
