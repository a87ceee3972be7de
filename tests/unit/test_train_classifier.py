"""The scene classifier's training set: scenes mostly hidden by objects learnt as none."""

from pathlib import Path

import numpy as np
import pytest

from training.dataset import Item
from training.train_classifier import object_coverage, occluded_as_unknown


def item(scene: int, *boxes: tuple[float, float, float, float]) -> Item:
    """An item whose objects are the axis-aligned boxes (x0, y0, x1, y1), normalised."""
    corners = np.array(
        [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, y0, x1, y1 in boxes], dtype=float
    ).reshape(-1, 4, 2)
    return Item(Path("x.jpg"), scene, np.zeros(len(boxes), dtype=int), corners)


def test_coverage_is_the_union_of_the_boxes() -> None:
    assert object_coverage(item(0)) == 0.0
    assert object_coverage(item(0, (0, 0, 0.5, 1))) == pytest.approx(0.5, abs=0.03)
    # two overlapping halves cover three quarters, not their sum
    assert object_coverage(item(0, (0, 0, 0.5, 1), (0.25, 0, 0.75, 1))) == pytest.approx(
        0.75, abs=0.03
    )


def test_only_scenes_covered_past_the_fraction_become_none() -> None:
    hidden, visible, none = item(2, (0, 0, 0.8, 0.8)), item(3, (0, 0, 0.3, 0.3)), item(-1)
    out, changed = occluded_as_unknown([hidden, visible, none], 0.5)
    assert [it.scene for it in out] == [-1, 3, -1]
    assert changed == 1


def test_fraction_zero_changes_nothing() -> None:
    items = [item(2, (0, 0, 1, 1))]
    assert occluded_as_unknown(items, 0.0) == (items, 0)
