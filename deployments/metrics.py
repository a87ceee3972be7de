"""The platform's own metrics (docs/api.md §E6), as Ray custom metrics: each process that
records one exports it on its node's Prometheus endpoint with the ``ray_`` prefix, next to
Serve's own (replicas, requests, latencies), so Prometheus through Ray's service discovery
and the Ray dashboard's metrics view pick them up with nothing more to run."""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800]
BATCH_SIZES = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0]


@cache
def tasks_total() -> Counter:
    return Counter(
        "primitives_tasks_total", description="Tasks that ended, by outcome", tag_keys=("outcome",)
    )


@cache
def queue_depth() -> Gauge:
    return Gauge(
        "primitives_queue_depth",
        description="Tasks waiting (queued) for each detection or classification model",
        tag_keys=("model",),
    )


@cache
def task_seconds() -> Histogram:
    return Histogram(
        "primitives_task_seconds",
        description="Seconds per stage: wait (accepted to claimed), inference "
        "(both models), total (accepted to result stored)",
        boundaries=SECONDS,
        tag_keys=("stage",),
    )


@cache
def batch_size() -> Histogram:
    return Histogram(
        "primitives_batch_size",
        description="Images in each batch a model ran",
        boundaries=BATCH_SIZES,
        tag_keys=("model",),
    )


@cache
def model_calls_total() -> Counter:
    return Counter(
        "primitives_model_calls_total",
        description="Model calls the queue made, by model id, weights version (stable or "
        "canary) and outcome (answered, or failed and answered by the stable weights)",
        tag_keys=("model_id", "version", "outcome"),
    )


def version_calls(model_id: int, version: str, outcome: str) -> None:
    """``ServeModels``' counter of calls per weights version, as a Ray metric."""
    model_calls_total().inc(
        1, tags={"model_id": str(model_id), "version": version, "outcome": outcome}
    )


class RayQueueMetrics:
    """The dispatcher's observer (``deployments.task_queue.QueueObserver``) over Ray
    metrics."""

    def ended(self, outcome: str) -> None:
        tasks_total().inc(1, tags={"outcome": outcome})

    def stage(self, stage: str, seconds: float) -> None:
        task_seconds().observe(max(0.0, seconds), tags={"stage": stage})

    def depth(self, model: str, waiting: int) -> None:
        queue_depth().set(waiting, tags={"model": model})
