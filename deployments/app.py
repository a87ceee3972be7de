"""The application builder: ``serve run serve_config.yaml`` calls ``build_app(args)``."""

from __future__ import annotations

from pydantic import BaseModel, Field
from ray.serve import Application

from config.registry import DEFAULT_MODELS, Backend, ModelSpec, ModelType
from deployments.classifier import SceneClassifier
from deployments.detectors import SsdDetector, UltralyticsDetector
from deployments.ingress import Ingress

DEPLOYMENT_CLASSES = {
    Backend.ultralytics: UltralyticsDetector,
    Backend.torchvision_ssd: SsdDetector,
    Backend.torchvision_classifier: SceneClassifier,
}


class AppArgs(BaseModel):
    """The ``args`` of the application in serve_config.yaml."""

    models: list[ModelSpec] = Field(default_factory=lambda: list(DEFAULT_MODELS))


def build_app(args: dict | None = None) -> Application:
    """One deployment per registered model (named after it), and the ingress over them."""
    parsed = AppArgs.model_validate(args or {})
    detectors, classifiers = {}, {}
    for spec in parsed.models:
        bound = DEPLOYMENT_CLASSES[spec.backend].options(name=spec.name).bind(
            spec.model_dump(mode="json"))
        (detectors if spec.type is ModelType.detection else classifiers)[spec.id] = bound
    return Ingress.bind([m.model_dump(mode="json") for m in parsed.models], detectors,
                        classifiers)
