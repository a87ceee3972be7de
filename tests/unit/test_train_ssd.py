"""The SSD trainer learns the background from images without a primitive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.weights import load_torchvision_checkpoint
from training.dataset import Item
from training.render import PRIMITIVE_CLASSES
from training.sources import render_source
from training.train_ssd import Boxes, build_model, learn_background

SHIPPED = Path("weights/ssdlite.pt")
Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


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


@pytest.fixture
def unlabelled(tmp_path: Path) -> Sample:
    """A rendered scene with primitives in it, as the trainer loads an image listed with none
    (what a distractor scene or a photograph is)."""
    image, classes, _, _ = render_source("classic", np.random.default_rng(0))
    assert len(classes), "the scene should hold primitives for the model to be sure of"
    image.save(tmp_path / "scene.png")
    item = Item(tmp_path / "scene.png", -1, np.zeros(0, dtype=int), np.zeros((0, 4, 2)))
    return Boxes([item], 256, train=False)[0]


def test_an_image_without_primitives_has_a_loss(model: torch.nn.Module, unlabelled: Sample) -> None:
    """torchvision's SSD loss takes negatives in proportion to an image's positives: on its
    own it gives a batch of images without primitives a classification loss of 0."""
    torch.manual_seed(0)
    model.train()
    _, nothing = unlabelled
    batch = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    losses = model(batch, [nothing, nothing])
    assert losses["classification"].item() > 0
    assert losses["bbox_regression"].item() == 0


def test_training_on_an_image_as_a_negative_stops_its_confident_boxes(
    model: torch.nn.Module, unlabelled: Sample
) -> None:
    """An image the shipped weights are sure of a primitive in, trained on with no boxes for
    a few steps, no longer gets a confident box: the trainer learns from such images."""
    image, nothing = unlabelled
    before = _surest(model, image)
    assert before >= 0.5, "the shipped weights find no primitive in a rendered scene"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(8):
        model.train()
        loss = sum(model([image, image.flip(-1)], [nothing, nothing]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _surest(model, image)
    assert after < before / 2, f"{before:.3f} -> {after:.3f}"
