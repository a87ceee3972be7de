"""Model code without Ray: predictors built from a model spec, their typed results, and the
pure pre- and post-processing they share. Training, evaluation, the benchmark and the Serve
deployments all use these classes through their public methods."""

from inference.predictors import Predictor, build_predictor
from inference.types import (
    Classification,
    DetectedPrimitive,
    Detection,
    ImageUnreadable,
    ModelAnswer,
    ModelOutput,
    ModelRefused,
    PredictorInfo,
)

__all__ = [
    "Classification",
    "Detection",
    "ImageUnreadable",
    "ModelAnswer",
    "ModelRefused",
    "ModelOutput",
    "Predictor",
    "PredictorInfo",
    "DetectedPrimitive",
    "build_predictor",
]
