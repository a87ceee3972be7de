"""The peers the platform is measured against, serving the same predictor classes, weights and
images: the floor (in-process), LitServe, and the smallest synchronous Ray Serve app.

Each peer answers one synchronous request per image with the detector's and the classifier's
answers; the platform answers asynchronously (submit, then long-poll the result) and stores
everything durably.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

DETECTOR, CLASSIFIER = "YOLO", "model_v1"


def load_task_predictors(
    device: str | None = None, overlays: Sequence[str] = ()
) -> tuple[Any, Any]:
    """The detector and classifier of a default task, from serve_config.yaml's registry
    (with ``overlays`` laid over it: bench/noop.yaml for the no-op models)."""
    from config.serve_config import load_app_config
    from inference import build_predictor

    registry = load_app_config(overlays=overlays).registry
    return (
        build_predictor(registry.by_name(DETECTOR), device=device),
        build_predictor(registry.by_name(CLASSIFIER), device=device),
    )


def run_task_batch(detector: Any, classifier: Any, images: Sequence[bytes]) -> list[dict]:
    """Both models on the batch, each decoding the bytes at the scale its input needs, as the
    platform's model replicas do: what a synchronous server does for a batch of requests."""
    detections = detector.predict_encoded(images)
    classes = classifier.predict_encoded(images)
    return [
        {"image_class": c.image_class, "primitives": [p.as_dict() for p in d.primitives]}
        for d, c in zip(detections, classes, strict=True)
    ]


def measure_floor(images: list[bytes], batch: int, overlays: Sequence[str] = ()) -> dict[str, Any]:
    """Decode + both models in this process, nothing around them: batch-1 latency and batched
    throughput."""
    detector, classifier = load_task_predictors(overlays=overlays)
    run_task_batch(detector, classifier, images[:2])
    single = []
    for image in images[:32]:
        start = time.perf_counter()
        run_task_batch(detector, classifier, [image])
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        run_task_batch(detector, classifier, images[i : i + batch])
    elapsed = time.perf_counter() - start
    return {
        "img_per_s": round(len(images) / elapsed, 2),
        "single_image_ms_p50": round(float(np.percentile(single, 50)), 2),
    }


def minimal_serve_app(
    max_batch_size: int,
    batch_wait_s: float,
    torch_threads: int,
    num_gpus: float = 0,
    overlays: Sequence[str] = (),
):
    """An ingress that reads the body and calls, by handle, one batched replica holding both
    models: the least a synchronous Ray Serve app can be."""
    from ray import serve
    from ray.serve import Deployment
    from starlette.requests import Request

    @serve.deployment(
        ray_actor_options={"num_cpus": 1, "num_gpus": num_gpus},
        max_ongoing_requests=4 * max_batch_size,
    )
    class BothModels:
        def __init__(self) -> None:
            import torch

            torch.set_num_threads(torch_threads)
            self.detector, self.classifier = load_task_predictors(overlays=overlays)
            self.inference_cpu_s = 0.0

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def predict(self, images: list[bytes]) -> list[dict]:
            import asyncio

            # Counted as the platform's model replicas count it (deployments/model.py).
            before = time.process_time()
            out = await asyncio.to_thread(run_task_batch, self.detector, self.classifier, images)
            self.inference_cpu_s += time.process_time() - before
            return out

        def stats(self) -> dict[str, float]:
            return {"inference_cpu_s": self.inference_cpu_s}

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
    class Front:
        def __init__(self, models) -> None:
            # The transport of this replica's environment (gRPC on the fast path), not of the
            # driver that built the application, as the platform's queue does.
            from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT

            self.models = models.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)

        async def __call__(self, request: Request) -> dict:
            result: dict = await self.models.predict.remote(await request.body())
            return result

    # mypy does not apply class decorators: these are the Deployments serve.deployment made.
    front, models = cast(Deployment, Front), cast(Deployment, BothModels)
    return front.bind(models.bind())
