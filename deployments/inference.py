"""Pure pre- and post-processing shared by the model deployments (no Ray, no GPU needed)."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from config.registry import ModelSpec


class WeightsError(RuntimeError):
    """The configured weights file is missing or unreadable: the replica must not start."""


def require_weights(spec: ModelSpec) -> Path:
    path = spec.weights_path
    if not path.is_file():
        raise WeightsError(f"model {spec.name} (id {spec.id}): weights file {path} does not "
                           "exist; train it (make train) or point `weights` at a real file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise WeightsError(f"model {spec.name} (id {spec.id}): cannot read {path}: {exc}") from exc
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the image as displayed (EXIF orientation applied)."""
    with Image.open(io.BytesIO(data)) as img:
        upright = ImageOps.exif_transpose(img)
        return np.asarray(upright.convert("RGB"))


def _unit(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def primitive(*, class_name: str, cx: float, cy: float, w: float, h: float, angle: float,
              confidence: float, image_w: int, image_h: int) -> dict[str, Any]:
    """One primitive in the contract's normalised form, from a pixel ``xywhr`` box.

    The angle is folded into [0, pi): a rectangle turned by pi is the same rectangle.
    """
    theta = math.fmod(angle, math.pi)
    if theta < 0:
        theta += math.pi
    rotation = theta / math.pi
    if rotation >= 1.0:  # fmod can land a hair under pi
        rotation = 0.0
    return {
        "primitive_class": class_name,
        "x": _unit(cx / image_w),
        "y": _unit(cy / image_h),
        "width": _unit(w / image_w),
        "height": _unit(h / image_h),
        "rotation": rotation,
        "probability": _unit(confidence),
    }


def primitives_from_xywhr(boxes: np.ndarray, confidences: np.ndarray, classes: np.ndarray,
                          names: list[str] | dict[int, str], image_w: int,
                          image_h: int) -> list[dict[str, Any]]:
    """Rows of pixel ``(cx, cy, w, h, angle)`` to primitives, most confident first."""
    order = np.argsort(-confidences, kind="stable")
    return [
        primitive(class_name=names[int(classes[i])], cx=float(boxes[i, 0]),
                  cy=float(boxes[i, 1]), w=float(boxes[i, 2]), h=float(boxes[i, 3]),
                  angle=float(boxes[i, 4]), confidence=float(confidences[i]),
                  image_w=image_w, image_h=image_h)
        for i in order
    ]


def xyxy_to_xywhr(boxes: np.ndarray) -> np.ndarray:
    """Axis-aligned corner boxes to centre/size boxes with angle 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), 5))
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


def load_torchvision_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict, from our checkpoint format ({"state_dict": ...}) or a bare one."""
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and "state_dict" in blob:
        return blob["state_dict"]
    if isinstance(blob, dict):
        return blob
    raise WeightsError(f"{path} is not a torchvision state dict")


def softmax_top(logits: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Per row: the top class and its probability, plus every class's probability."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return [{"image_class": classes[int(row.argmax())],
             "probability": float(row.max()),
             "probabilities": {c: round(float(v), 6) for c, v in zip(classes, row, strict=True)}}
            for row in p]
