"""The scene classifier deployment: a torchvision image classifier, batched."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve

from config.registry import ModelSpec
from deployments.batching import BatchingModel, run_batch
from deployments.inference import (
    file_sha256,
    load_torchvision_checkpoint,
    pick_device,
    require_weights,
    softmax_top,
)

log = logging.getLogger("ray.serve")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def classifier_input(arr: np.ndarray, size: int) -> np.ndarray:
    """CHW float32, resized to ``size`` x ``size`` and normalised as in training."""
    from PIL import Image

    img = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class SceneClassifier(BatchingModel):
    def __init__(self, spec: dict[str, Any]):
        import torch
        import torchvision

        self.spec = ModelSpec.model_validate(spec)
        path = require_weights(self.spec)
        self.device = pick_device()
        self.classes = list(self.spec.classes or [])
        model = torchvision.models.get_model(self.spec.arch, weights=None,
                                             num_classes=len(self.classes))
        model.load_state_dict(load_torchvision_checkpoint(path))
        self.model = model.eval().to(self.device)
        self._torch = torch
        self.weights_sha256 = file_sha256(path)
        self._predict([np.zeros((64, 64, 3), dtype=np.uint8)])
        log.info("%s loaded %s on %s", self.spec.name, path, self.device)

    def _batched_method(self):
        return self.classify

    def _predict(self, arrays: list[np.ndarray]) -> list[dict[str, Any]]:
        torch = self._torch
        batch = np.stack([classifier_input(a, self.spec.image_size) for a in arrays])
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return softmax_top(logits, self.classes)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[bytes]) -> list[dict[str, Any]]:
        return await run_batch(self, images, lambda p: p)
