"""The failure analysis (training.failures): what counts as found, confused, misplaced,
missed, and as a false box, on one image whose answer is written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inference import Detection
from inference.types import DetectedPrimitive
from training.dataset import Item
from training.failures import Tally, contact_sheet, judge, table
from training.render import PRIMITIVE_CLASSES

pytestmark = pytest.mark.unit
SPHERE, CUBE, CYLINDER, CONE, PYRAMID = range(5)


def _square(x0: float, y0: float, side: float) -> np.ndarray:
    """Normalised corners of an axis-aligned square on a 100x100 image."""
    x1, y1 = x0 + side, y0 + side
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) / 100


def _det(klass: int, x0: float, y0: float, side: float, p: float) -> DetectedPrimitive:
    c = (x0 + side / 2) / 100
    return DetectedPrimitive(
        PRIMITIVE_CLASSES[klass], c, (y0 + side / 2) / 100, side / 100, side / 100, 0.0, p
    )


def test_each_object_and_detection_is_judged_once(tmp_path):
    image = tmp_path / "scene.jpg"
    Image.new("RGB", (100, 100), (90, 90, 90)).save(image)
    item = Item(
        image=image,
        scene=-1,
        classes=np.array([CUBE, CYLINDER, PYRAMID, SPHERE]),
        corners=np.stack(
            [_square(10, 10, 20), _square(50, 10, 20), _square(10, 50, 20), _square(60, 60, 30)]
        ),
    )
    detection = Detection(
        (
            _det(CUBE, 10, 10, 20, 0.9),  # found
            _det(CUBE, 50, 10, 20, 0.8),  # the cylinder, called a cube
            _det(PYRAMID, 20, 55, 20, 0.7),  # near the pyramid: IoU about 0.3
            _det(CONE, 0, 80, 10, 0.6),  # on nothing
        )
    )
    tallies = [Tally() for _ in PRIMITIVE_CLASSES]
    cases = judge(item, detection, 100, 100, True, tallies)

    assert tallies[CUBE].outcome == {"found": 1}
    assert tallies[CYLINDER].outcome == {"confused": 1}
    assert tallies[CYLINDER].confused_as == {"cube": 1}
    assert tallies[PYRAMID].outcome == {"misplaced": 1}
    assert tallies[SPHERE].outcome == {"missed": 1}
    assert tallies[CUBE].false_boxes == {"confusion": 1}
    assert tallies[PYRAMID].false_boxes == {"background": 1}
    assert tallies[CONE].false_boxes == {"background": 1}
    assert sorted((c.kind, PRIMITIVE_CLASSES[c.klass]) for c in cases) == [
        ("background", "cone"),
        ("background", "pyramid"),
        ("confused", "cylinder"),
        ("confusion", "cube"),
        ("misplaced", "pyramid"),
        ("missed", "sphere"),
    ]
    assert tallies[SPHERE].by_size["4-16 %"] == [0, 1]  # 30x30 of 100x100: 9 %

    report = table("YOLO", "test_raycast", tallies, 0.25)
    assert "| cylinder | 1 | 0% | 100% (cube 1) | 0% | 0% | 0 | 0 |" in report
    sheet = contact_sheet(cases, seed=0)
    assert sheet.height == 2 * len(PRIMITIVE_CLASSES) * 146
