"""Detector deployments: ultralytics (oriented boxes) and torchvision SSD.

Each replica loads its weights in ``__init__`` and serves ``detect(image_bytes)`` through
``@serve.batch``; requests are decoded, run as one batch, and answered as plain dicts.
"""

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
    primitives_from_xywhr,
    require_weights,
    xyxy_to_xywhr,
)

log = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class UltralyticsDetector(BatchingModel):
    def __init__(self, spec: dict[str, Any]):
        from ultralytics import YOLO

        self.spec = ModelSpec.model_validate(spec)
        path = require_weights(self.spec)
        self.device = pick_device()
        self.model = YOLO(str(path))
        self.model.to(self.device)
        names = self.model.names
        self.classes = [names[i] for i in sorted(names)]
        self.weights_sha256 = file_sha256(path)
        self._predict([np.zeros((64, 64, 3), dtype=np.uint8)])  # warm-up: first call is slow
        log.info("%s loaded %s on %s (%s)", self.spec.name, path, self.device, self.model.task)

    def _batched_method(self):
        return self.detect

    def _predict(self, arrays: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        results = self.model.predict(
            [a[..., ::-1] for a in arrays],  # ultralytics reads numpy images as BGR
            imgsz=self.spec.image_size, conf=self.spec.confidence_threshold,
            iou=self.spec.iou_threshold, max_det=self.spec.max_detections,
            device=self.device, verbose=False,
        )
        out = []
        for arr, r in zip(arrays, results, strict=True):
            h, w = arr.shape[:2]
            if r.obb is not None:
                boxes = r.obb.xywhr.cpu().numpy()
                conf, cls = r.obb.conf.cpu().numpy(), r.obb.cls.cpu().numpy()
            else:
                boxes = xyxy_to_xywhr(r.boxes.xyxy.cpu().numpy())
                conf, cls = r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()
            out.append(primitives_from_xywhr(boxes, conf, cls, self.classes, w, h))
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect(self, images: list[bytes]) -> list[dict[str, Any]]:
        return await run_batch(self, images, lambda p: {"primitives": p})


def set_input_size(model, size: int) -> None:
    """Run a torchvision SSD at ``size`` x ``size`` (SSDlite is built for 320; anchors follow
    the feature maps, so a smaller square input works and costs less)."""
    model.transform.min_size = (size,)
    model.transform.max_size = size
    model.transform.fixed_size = (size, size)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class SsdDetector(BatchingModel):
    def __init__(self, spec: dict[str, Any]):
        import torch
        import torchvision

        self.spec = ModelSpec.model_validate(spec)
        path = require_weights(self.spec)
        self.device = pick_device()
        self.classes = list(self.spec.classes or [])
        model = torchvision.models.get_model(
            self.spec.arch, weights=None, weights_backbone=None,
            num_classes=len(self.classes) + 1,  # index 0 is the background
        )
        model.load_state_dict(load_torchvision_checkpoint(path))
        set_input_size(model, self.spec.image_size)
        model.score_thresh = self.spec.confidence_threshold
        model.nms_thresh = self.spec.iou_threshold
        model.detections_per_img = self.spec.max_detections
        self.model = model.eval().to(self.device)
        self._torch = torch
        self.weights_sha256 = file_sha256(path)
        self._predict([np.zeros((64, 64, 3), dtype=np.uint8)])
        log.info("%s loaded %s on %s", self.spec.name, path, self.device)

    def _batched_method(self):
        return self.detect

    def _predict(self, arrays: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        torch = self._torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()
                   .div_(255).to(self.device) for a in arrays]
        with torch.inference_mode():
            outputs = self.model(tensors)
        out = []
        for arr, o in zip(arrays, outputs, strict=True):
            h, w = arr.shape[:2]
            labels = o["labels"].cpu().numpy() - 1  # drop the background index
            out.append(primitives_from_xywhr(xyxy_to_xywhr(o["boxes"].cpu().numpy()),
                                             o["scores"].cpu().numpy(), labels, self.classes,
                                             w, h))
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect(self, images: list[bytes]) -> list[dict[str, Any]]:
        return await run_batch(self, images, lambda p: {"primitives": p})
