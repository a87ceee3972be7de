"""What predictors return and how they refuse: small frozen dataclasses that pickle cheaply
across Ray's process boundaries and carry no framework objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DetectedPrimitive:
    """One detected primitive in the contract's normalised form (see docs/api.md §6)."""

    primitive_class: str
    x: float
    y: float
    width: float
    height: float
    rotation: float
    probability: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector's answer for one image, most confident primitive first."""

    primitives: tuple[DetectedPrimitive, ...]


@dataclass(frozen=True, slots=True)
class Classification:
    """A classifier's answer for one image."""

    image_class: str
    probability: float
    probabilities: dict[str, float] = field(default_factory=dict)


ModelOutput = Detection | Classification


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A prediction with what produced it: the deployment's reply for one request."""

    prediction: ModelOutput
    model: str
    batch_size: int
    inference_ms: float
    # The checksum of the weights that answered: a result names the version that made it.
    weights_sha256: str = ""


@dataclass(frozen=True, slots=True)
class PredictorInfo:
    """What a loaded predictor says about itself (GET /api/models shows it)."""

    name: str
    backend: str
    classes: list[str]
    weights_sha256: str
    device: str
    ready: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelRefused(Exception):
    """The model ran and refused this input: a permanent failure for the task, never retried."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self):  # keep the reason when Ray pickles the error to the caller
        return (type(self), (self.reason,))


class ImageUnreadable(ModelRefused):
    """The image bytes could not be decoded."""
