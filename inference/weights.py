"""Finding, checking and loading weight files; choosing the device."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from config.registry import ModelSpec


class WeightsError(RuntimeError):
    """The configured weights file is missing or unreadable: the model must not start."""


def require_weights(spec: ModelSpec) -> Path:
    """The spec's weights path, checked to exist and be readable."""
    path = spec.weights_path
    if not path.is_file():
        raise WeightsError(
            f"model {spec.name} (id {spec.id}): weights file {path} does not "
            "exist; train it (make train) or point `weights` at a real file"
        )
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


def load_torchvision_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict, from our checkpoint format ({"state_dict": ...}) or a bare one."""
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and "state_dict" in blob:
        return blob["state_dict"]
    if isinstance(blob, dict):
        return blob
    raise WeightsError(f"{path} is not a torchvision state dict")
