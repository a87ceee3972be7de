from __future__ import annotations

import numpy as np

from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_jpeg, render_scene


def test_rendering_is_deterministic_per_seed():
    assert render_jpeg(3)[0] == render_jpeg(3)[0]
    assert render_jpeg(3)[0] != render_jpeg(4)[0]


def test_labels_are_inside_the_image_and_well_formed():
    for seed in range(30):
        sample = render_scene(np.random.default_rng(seed))
        w, h = sample.image.size
        assert 320 <= w <= 640 and 240 <= h <= 640
        assert 0 <= sample.scene < len(SCENE_CLASSES)
        assert len(sample.boxes) <= 8
        for box in sample.boxes:
            assert 0 <= box.class_id < len(PRIMITIVE_CLASSES)
            corners = box.corners()
            assert corners.shape == (4, 2)
            assert 0 <= box.cx <= w and 0 <= box.cy <= h
            # the corners are the rectangle the box names
            assert np.allclose(corners.mean(axis=0), [box.cx, box.cy])
            assert box.w > 5 and box.h > 5
