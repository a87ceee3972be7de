"""What every model deployment shares: batching knobs, health, self-description, and the
decode -> predict -> answer loop of one ``@serve.batch`` call."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from config.registry import ModelSpec
from deployments.inference import decode_image


class BatchingModel:
    """What every model deployment shares: batching knobs, health, self-description."""

    spec: ModelSpec
    device: str
    weights_sha256: str
    classes: list[str]

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config`` from serve_config.yaml: batch size and wait, changeable live."""
        method = self._batched_method()
        if "max_batch_size" in config:
            method.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            method.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    def _batched_method(self):
        raise NotImplementedError

    def _predict(self, arrays: list[np.ndarray]) -> list[Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"classes": self.classes, "weights_sha256": self.weights_sha256,
                "device": self.device, "ready": True}

    def pid(self) -> int:
        """The replica's process id (the fault tests kill it)."""
        return os.getpid()

    def check_health(self) -> None:
        if getattr(self, "model", None) is None:
            raise RuntimeError(f"{self.spec.name}: model not loaded")


def _decode_all(images: list[bytes]) -> tuple[list[np.ndarray | None], list[str | None]]:
    arrays: list[np.ndarray | None] = []
    errors: list[str | None] = []
    for data in images:
        try:
            arrays.append(decode_image(data))
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - one bad image must not sink its batch
            arrays.append(None)
            errors.append(f"could not decode the image: {exc}")
    return arrays, errors


async def run_batch(model: BatchingModel, images: list[bytes],
                    wrap: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Decode, predict the decodable ones as one batch, answer each request on its own.

    A request whose image cannot be decoded gets ``{"error": ...}``; the others are not
    affected.
    """
    started = time.perf_counter()
    arrays, errors = _decode_all(images)
    good = [a for a in arrays if a is not None]
    # In a thread: the replica's event loop keeps answering health checks meanwhile.
    predicted = iter(await asyncio.to_thread(model._predict, good) if good else [])
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    return [{"error": err} if arr is None else
            {**wrap(next(predicted)), "model": model.spec.name, "batch_size": len(good),
             "inference_ms": elapsed_ms}
            for arr, err in zip(arrays, errors, strict=True)]
