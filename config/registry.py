"""The model registry: which models the platform serves, under which ids, from which files.

It is configuration: the ``models:`` list in ``serve_config.yaml`` (``config.serve_config``
reads it), passed to the application builder. ``GET /api/models`` and the 400 message for a
wrong model id are generated from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from config.settings import REPO_ROOT


class ModelType(StrEnum):
    detection = "detection_model"
    classification = "classification_model"


class Backend(StrEnum):
    ultralytics = "ultralytics"  # any ultralytics checkpoint; oriented boxes when it is -obb
    torchvision_ssd = "torchvision_ssd"
    torchvision_classifier = "torchvision_classifier"
    # No model: a fixed answer for any image, after decoding it as a model's replica would.
    # For measuring the platform's own cost (bench/noop.yaml); refused in production and
    # never in the shipped registry (tests/unit/test_config.py).
    noop = "noop"


# The one type each backend serves; the no-op backend serves either.
BACKEND_TYPES = {
    Backend.ultralytics: ModelType.detection,
    Backend.torchvision_ssd: ModelType.detection,
    Backend.torchvision_classifier: ModelType.classification,
}


class CanarySpec(BaseModel):
    """A second weights file served beside a model's own, for a share of its tasks (README
    "Canary weights"): deployed as ``<name>-canary`` with the model's deployment options.
    Promote it by moving ``weights`` up and deleting this block; drop it by deleting it."""

    weights: Path
    share: float = Field(gt=0.0, lt=1.0)


class ModelSpec(BaseModel):
    """One served model. ``name`` is also its Ray Serve deployment name."""

    id: int = Field(ge=1)
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    type: ModelType
    backend: Backend
    # Required but for the no-op backend, which loads nothing.
    weights: Path | None = None
    # torchvision builder (``ssdlite320_mobilenet_v3_large``, ``mobilenet_v3_small``...);
    # ultralytics checkpoints carry their own architecture.
    arch: str | None = None
    # Class names in output order; ultralytics checkpoints carry their own and may omit it.
    # For torchvision detectors index 0 is the background and is not listed here.
    classes: list[str] | None = None
    image_size: int = Field(default=320, ge=32, le=4096)
    confidence_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    iou_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1, le=1000)
    # Classification models: logits are divided by ``temperature`` (fitted on the validation
    # split by ``make evaluate``) and a calibrated top probability under
    # ``unknown_threshold`` answers "unknown" (docs/api.md §E7). None: never "unknown".
    temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    unknown_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # New weights on trial for a share of this model's tasks, beside ``weights``.
    canary: CanarySpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.backend is Backend.noop:
            return self  # loads nothing; answers with ``classes``, or its own, for either type
        if self.weights is None:
            raise ValueError(f"model {self.name}: `weights` names the weights file to load")
        if BACKEND_TYPES[self.backend] is not self.type:
            raise ValueError(
                f"backend {self.backend} serves {BACKEND_TYPES[self.backend]}, not {self.type}"
            )
        if self.backend is not Backend.ultralytics and not self.classes:
            raise ValueError(f"model {self.name}: torchvision models need `classes`")
        if self.type is not ModelType.classification and (
            self.unknown_threshold is not None or self.temperature != 1.0
        ):
            raise ValueError(
                f"model {self.name}: `temperature` and `unknown_threshold` are "
                "for classification models"
            )
        if self.backend is not Backend.ultralytics and not self.arch:
            raise ValueError(f"model {self.name}: torchvision models need `arch`")
        if self.canary is not None and self.canary.weights == self.weights:
            raise ValueError(f"model {self.name}: the canary's weights are the model's own")
        return self

    @property
    def canary_name(self) -> str:
        """The deployment that serves the canary weights."""
        return f"{self.name}-canary"

    def canary_spec(self) -> ModelSpec | None:
        """This model as its canary deployment serves it (the canary's weights), or None."""
        if self.canary is None:
            return None
        return self.model_copy(update={"weights": self.canary.weights, "canary": None})

    @property
    def weights_path(self) -> Path:
        if self.weights is None:
            raise ValueError(f"model {self.name} ({self.backend}) has no weights file")
        return self.weights if self.weights.is_absolute() else REPO_ROOT / self.weights


class Registry:
    """The configured models, looked up by id and listed in the contract's formats."""

    def __init__(self, models: Iterable[ModelSpec]):
        models = list(models)
        ids = [m.id for m in models]
        names = [m.name for m in models]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError("model ids and names must be unique across the registry")
        self.models = sorted(models, key=lambda m: m.id)
        self._by_id = {m.id: m for m in self.models}

    def get(self, model_id: int, model_type: ModelType) -> ModelSpec | None:
        spec = self._by_id.get(model_id)
        return spec if spec is not None and spec.type is model_type else None

    def by_name(self, name: str) -> ModelSpec:
        """The model with this name; KeyError when there is none."""
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(f"no model named {name!r}; configured: {[m.name for m in self.models]}")

    def of_type(self, model_type: ModelType) -> list[ModelSpec]:
        return [m for m in self.models if m.type is model_type]

    def wrong_id_message(self) -> str:
        choices = ", ".join(f"({m.id}, '{m.name}', '{m.type.value}')" for m in self.models)
        return f"Model id was not correct. Choose from (id, name, type) [{choices}]."
