"""Predictors: one class per backend, built from a model spec, knowing nothing of Ray.

Each turns a batch of arrays into typed results in ``predict`` (the model's own input
preparation, the model, then the backend's output turned into ``Detection`` or
``Classification``); ``predict_encoded`` does the same from image bytes, refusing undecodable
images one by one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from config.registry import Backend, ModelSpec, ModelType
from inference.images import decode_image
from inference.processing import (
    classifier_input,
    primitives_from_xywhr,
    set_ssd_input_size,
    softmax_top,
    xyxy_to_xywhr,
)
from inference.types import (
    Classification,
    DetectedPrimitive,
    Detection,
    ModelOutput,
    ModelRefused,
    PredictorInfo,
)
from inference.weights import (
    file_sha256,
    load_torchvision_checkpoint,
    pick_device,
    require_weights,
)

log = logging.getLogger(__name__)
P = TypeVar("P", Detection, Classification)


class Predictor(ABC, Generic[P]):
    """A loaded model: ``predict(images) -> list of typed results``, ``describe()``."""

    backend: ClassVar[Backend]
    # How the model fits an image to its input side: a detector fits the longer side in it
    # (letterbox), a classifier stretches both sides to it. Image bytes are decoded no larger
    # than that needs (``decode``).
    stretches: bool = False

    def __init__(self, spec: ModelSpec, *, device: str | None = None):
        self.spec = spec
        self.weights_path = require_weights(spec)
        self.device = device or pick_device()
        self.weights_sha256 = file_sha256(self.weights_path)
        self.classes: list[str] = list(spec.classes or [])
        self._load()
        self.predict([np.zeros((64, 64, 3), dtype=np.uint8)])  # warm-up: the first call is slow
        log.info("%s loaded %s on %s", spec.name, self.weights_path, self.device)

    @abstractmethod
    def _load(self) -> None:
        """Build the model from ``self.weights_path`` on ``self.device``."""

    @abstractmethod
    def predict(self, images: Sequence[np.ndarray]) -> list[P]:
        """One result per RGB uint8 (H, W, 3) array, in order, run as one batch."""

    def decode(self, data: bytes) -> np.ndarray:
        """The image's array at the least resolution this model's input needs (a JPEG decoded
        at a reduced scale: a fraction of a full decode's cost); ImageUnreadable when the
        bytes do not decode."""
        return decode_image(data, min_side=self.spec.image_size, cover=self.stretches)

    def predict_encoded(self, images: Sequence[bytes | np.ndarray]) -> list[P | ModelRefused]:
        """Decode (bytes, ``decode``) or take (arrays) each image and predict the good ones as
        one batch; an undecodable image gets its ImageUnreadable, its neighbours are not
        affected."""
        arrays: list[np.ndarray | None] = []
        refusals: list[ModelRefused | None] = []
        for image in images:
            try:
                arrays.append(image if isinstance(image, np.ndarray) else self.decode(image))
                refusals.append(None)
            except ModelRefused as exc:
                arrays.append(None)
                refusals.append(exc)
        good = [a for a in arrays if a is not None]
        predicted = iter(self.predict(good) if good else [])
        return [next(predicted) if refusal is None else refusal for refusal in refusals]

    def describe(self) -> PredictorInfo:
        return PredictorInfo(
            name=self.spec.name,
            backend=self.backend.value,
            classes=list(self.classes),
            weights_sha256=self.weights_sha256,
            device=self.device,
        )

    def timed_predict(
        self, images: Sequence[bytes | np.ndarray]
    ) -> tuple[list[P | ModelRefused], float]:
        """``predict_encoded`` and its wall time in milliseconds."""
        started = time.perf_counter()
        out = self.predict_encoded(images)
        return out, round((time.perf_counter() - started) * 1000, 2)


def set_ultralytics_cpu_threads(threads: int) -> None:
    """Have ultralytics run on ``threads`` CPU threads. Its ``select_device()`` (at the first
    predict, and when training starts) sets torch's threads for the whole process to its own
    choice, ``os.cpu_count() - 1`` and at most 8: one on a two-core machine, where training
    runs about 1.4x slower than on both; up to 8 in a replica, whatever its ``num_cpus``."""
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = threads


class UltralyticsPredictor(Predictor[Detection]):
    """Any ultralytics checkpoint: oriented boxes from an -obb model, axis-aligned otherwise."""

    backend = Backend.ultralytics

    def _load(self) -> None:
        import torch
        from ultralytics import YOLO

        # Keep the process's own threads (Ray's, from the replica's num_cpus, or
        # torch_threads), not ultralytics' choice.
        set_ultralytics_cpu_threads(torch.get_num_threads())
        self.model = YOLO(str(self.weights_path))
        self.model.to(self.device)
        names = self.model.names
        self.classes = [names[i] for i in sorted(names)]

    @staticmethod
    def preprocess(images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [a[..., ::-1] for a in images]  # ultralytics reads numpy images as BGR

    def predict(self, images: Sequence[np.ndarray]) -> list[Detection]:
        results = self.model.predict(
            self.preprocess(images),
            imgsz=self.spec.image_size,
            conf=self.spec.confidence_threshold,
            iou=self.spec.iou_threshold,
            max_det=self.spec.max_detections,
            device=self.device,
            verbose=False,
        )
        return [
            self.postprocess(r, a.shape[1], a.shape[0])
            for a, r in zip(images, results, strict=True)
        ]

    def postprocess(self, result: Any, width: int, height: int) -> Detection:
        if result.obb is not None:
            boxes = result.obb.xywhr.cpu().numpy()
            conf, cls = result.obb.conf.cpu().numpy(), result.obb.cls.cpu().numpy()
        else:
            boxes = xyxy_to_xywhr(result.boxes.xyxy.cpu().numpy())
            conf, cls = result.boxes.conf.cpu().numpy(), result.boxes.cls.cpu().numpy()
        return Detection(primitives_from_xywhr(boxes, conf, cls, self.classes, width, height))


class SsdPredictor(Predictor[Detection]):
    """A torchvision SSD (axis-aligned boxes: rotation is always 0)."""

    backend = Backend.torchvision_ssd

    def _load(self) -> None:
        import torchvision

        model = torchvision.models.get_model(
            self.spec.arch,
            weights=None,
            weights_backbone=None,
            num_classes=len(self.classes) + 1,  # index 0 is the background
        )
        model.load_state_dict(load_torchvision_checkpoint(self.weights_path))
        set_ssd_input_size(model, self.spec.image_size)
        model.score_thresh = self.spec.confidence_threshold
        model.nms_thresh = self.spec.iou_threshold
        model.detections_per_img = self.spec.max_detections
        self.model = model.eval().to(self.device)

    def preprocess(self, images: Sequence[np.ndarray]) -> list[Any]:
        import torch

        return [
            torch.from_numpy(np.ascontiguousarray(a))
            .permute(2, 0, 1)
            .float()
            .div_(255)
            .to(self.device)
            for a in images
        ]

    def predict(self, images: Sequence[np.ndarray]) -> list[Detection]:
        import torch

        with torch.inference_mode():
            outputs = self.model(self.preprocess(images))
        return [
            self.postprocess(o, a.shape[1], a.shape[0])
            for a, o in zip(images, outputs, strict=True)
        ]

    def postprocess(self, output: dict[str, Any], width: int, height: int) -> Detection:
        labels = output["labels"].cpu().numpy() - 1  # drop the background index
        return Detection(
            primitives_from_xywhr(
                xyxy_to_xywhr(output["boxes"].cpu().numpy()),
                output["scores"].cpu().numpy(),
                labels,
                self.classes,
                width,
                height,
            )
        )


class ClassifierPredictor(Predictor[Classification]):
    """A torchvision image classifier (any builder name) from a state dict."""

    backend = Backend.torchvision_classifier
    stretches = True

    def _load(self) -> None:
        import torchvision

        model = torchvision.models.get_model(
            self.spec.arch, weights=None, num_classes=len(self.classes)
        )
        model.load_state_dict(load_torchvision_checkpoint(self.weights_path))
        self.model = model.eval().to(self.device)

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([classifier_input(a, self.spec.image_size) for a in images])

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The raw (uncalibrated) logits, (N, classes): what calibration is fitted on."""
        import torch

        batch = torch.from_numpy(self.preprocess(images)).to(self.device)
        with torch.inference_mode():
            return self.model(batch).float().cpu().numpy()

    def predict(self, images: Sequence[np.ndarray]) -> list[Classification]:
        return self.postprocess(self.logits(images))

    def postprocess(self, logits: np.ndarray) -> list[Classification]:
        return softmax_top(
            logits,
            self.classes,
            temperature=self.spec.temperature,
            unknown_below=self.spec.unknown_threshold,
        )


# The no-op model's answers: one primitive, and the first of its classes (a classifier's).
NOOP_PRIMITIVE = DetectedPrimitive("sphere", 0.5, 0.5, 0.25, 0.25, 0.0, 0.9)
NOOP_CLASSES = ["office"]


class NoopPredictor(Predictor[Any]):
    """No model and no weights: the same answer for any image, after the image was decoded
    as a real model of its type decodes it. The platform's own cost is measured with it
    (``make bench``'s ceiling rows), through the platform's code, not a patch of it."""

    backend = Backend.noop

    def __init__(self, spec: ModelSpec, *, device: str | None = None):
        self.spec = spec
        self.device = device or "cpu"
        self.weights_sha256 = hashlib.sha256(b"noop").hexdigest()
        self.classes = list(spec.classes or NOOP_CLASSES)
        self.stretches = spec.type is ModelType.classification
        log.info("%s: no-op model (fixed answers, no weights)", spec.name)

    def _load(self) -> None:
        return None

    def predict(self, images: Sequence[np.ndarray]) -> list[Any]:
        if self.spec.type is ModelType.classification:
            probabilities = {c: (1.0 if i == 0 else 0.0) for i, c in enumerate(self.classes)}
            return [Classification(self.classes[0], 1.0, probabilities) for _ in images]
        return [Detection((NOOP_PRIMITIVE,)) for _ in images]


PREDICTORS: dict[Backend, type[Predictor[Any]]] = {
    Backend.ultralytics: UltralyticsPredictor,
    Backend.torchvision_ssd: SsdPredictor,
    Backend.torchvision_classifier: ClassifierPredictor,
    Backend.noop: NoopPredictor,
}


def build_predictor(spec: ModelSpec, *, device: str | None = None) -> Predictor[Any]:
    """The predictor for the spec's backend, loaded and warmed up."""
    return PREDICTORS[spec.backend](spec, device=device)


__all__ = [
    "ClassifierPredictor",
    "ModelOutput",
    "NoopPredictor",
    "Predictor",
    "SsdPredictor",
    "UltralyticsPredictor",
    "build_predictor",
    "set_ultralytics_cpu_threads",
]
