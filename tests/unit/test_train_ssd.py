"""The SSD trainer learns the background from images without a primitive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.weights import load_torchvision_checkpoint
from training.render import PRIMITIVE_CLASSES
from training.sources import EVAL_PHOTOS, available_photos
from training.train_ssd import build_model, learn_background

SHIPPED = Path("weights/ssdlite.pt")
NOTHING = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}


def _tensor(path: Path) -> torch.Tensor:
    rgb = np.array(Image.open(path).convert("RGB").resize((256, 256)))
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255


def _surest(model: torch.nn.Module, image: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        scores = model([image])[0]["scores"]
    return float(scores.max()) if len(scores) else 0.0


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = learn_background(build_model(len(PRIMITIVE_CLASSES), 256))
    model.load_state_dict(load_torchvision_checkpoint(SHIPPED))
    return model


def test_an_image_without_primitives_has_a_loss(model: torch.nn.Module) -> None:
    """torchvision's SSD loss takes negatives in proportion to an image's positives: on its
    own it gives a batch of images without primitives a classification loss of 0."""
    torch.manual_seed(0)
    model.train()
    batch = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    losses = model(batch, [NOTHING, NOTHING])
    assert losses["classification"].item() > 0
    assert losses["bbox_regression"].item() == 0


def test_training_on_a_photograph_as_a_negative_stops_the_false_box(
    model: torch.nn.Module,
) -> None:
    """The photograph the shipped weights are surest of a primitive in, trained on with no
    boxes for a few steps, no longer gets a confident box."""
    photos = {name: _tensor(path) for name, path in available_photos(EVAL_PHOTOS)}
    name, image = max(photos.items(), key=lambda item: _surest(model, item[1]))
    before = _surest(model, image)
    assert before >= 0.5, f"the shipped weights find nothing sure in any photograph ({name})"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(8):
        model.train()
        loss = sum(model([image, image.flip(-1)], [NOTHING, NOTHING]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _surest(model, image)
    assert after < before / 2, f"{name}: {before:.3f} -> {after:.3f}"
