"""Pure pre- and post-processing: arrays in, arrays or typed results out. No Ray, no model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from inference.types import Classification, DetectedPrimitive

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _unit(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def primitive(
    *,
    class_name: str,
    cx: float,
    cy: float,
    w: float,
    h: float,
    angle: float,
    confidence: float,
    image_w: int,
    image_h: int,
) -> DetectedPrimitive:
    """One primitive in the contract's normalised form, from a pixel ``xywhr`` box.

    The angle is folded into [0, pi): a rectangle turned by pi is the same rectangle.
    """
    theta = math.fmod(angle, math.pi)
    if theta < 0:
        theta += math.pi
    rotation = theta / math.pi
    if rotation >= 1.0:  # fmod can land a hair under pi
        rotation = 0.0
    return DetectedPrimitive(
        primitive_class=class_name,
        x=_unit(cx / image_w),
        y=_unit(cy / image_h),
        width=_unit(w / image_w),
        height=_unit(h / image_h),
        rotation=rotation,
        probability=_unit(confidence),
    )


def primitives_from_xywhr(
    boxes: np.ndarray,
    confidences: np.ndarray,
    classes: np.ndarray,
    names: Sequence[str] | Mapping[int, str],
    image_w: int,
    image_h: int,
) -> tuple[DetectedPrimitive, ...]:
    """Rows of pixel ``(cx, cy, w, h, angle)`` to primitives, most confident first."""
    order = np.argsort(-confidences, kind="stable")
    return tuple(
        primitive(
            class_name=names[int(classes[i])],
            cx=float(boxes[i, 0]),
            cy=float(boxes[i, 1]),
            w=float(boxes[i, 2]),
            h=float(boxes[i, 3]),
            angle=float(boxes[i, 4]),
            confidence=float(confidences[i]),
            image_w=image_w,
            image_h=image_h,
        )
        for i in order
    )


def xyxy_to_xywhr(boxes: np.ndarray) -> np.ndarray:
    """Axis-aligned corner boxes to centre/size boxes with angle 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), 5))
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


UNKNOWN_CLASS = "unknown"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (what serving and calibration share)."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def softmax_top(
    logits: np.ndarray,
    classes: Sequence[str],
    *,
    temperature: float = 1.0,
    unknown_below: float | None = None,
) -> list[Classification]:
    """Per row: the top class and its probability, plus every class's probability.

    ``temperature`` divides the logits first (the calibration fitted on the validation
    split); a top probability under ``unknown_below`` answers ``"unknown"`` (docs/api.md §E7),
    still with the top probability and every class's."""
    out = []
    for row in softmax(logits, temperature):
        top = float(row.max())
        unknown = unknown_below is not None and top < unknown_below
        out.append(
            Classification(
                image_class=UNKNOWN_CLASS if unknown else classes[int(row.argmax())],
                probability=top,
                probabilities={c: round(float(v), 6) for c, v in zip(classes, row, strict=True)},
            )
        )
    return out


def classifier_input(arr: np.ndarray, size: int) -> np.ndarray:
    """CHW float32, resized to ``size`` x ``size`` and normalised as in training."""
    img = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1)


def set_ssd_input_size(model, size: int) -> None:
    """Run a torchvision SSD at ``size`` x ``size`` (SSDlite is built for 320; anchors follow
    the feature maps, so a smaller square input works and costs less)."""
    model.transform.min_size = (size,)
    model.transform.max_size = size
    model.transform.fixed_size = (size, size)
