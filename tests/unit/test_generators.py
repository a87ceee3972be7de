"""The randomized renderer, the independent ray-caster, the data set plan and calibration."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training import calibrate
from training.datagen import generate
from training.dataset import read_split
from training.randomize import NO_SCENE, _lights, _object_layer, render_randomized
from training.raycast import CLASS_NAMES, raycast_scene
from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_scene
from training.sources import SOURCES, recolour, render_source

pytestmark = pytest.mark.unit


def _well_formed(image: Image.Image, classes: np.ndarray, corners: np.ndarray) -> None:
    w, h = image.size
    assert len(classes) == len(corners)
    for c, quad in zip(classes, corners, strict=True):
        assert 0 <= c < len(PRIMITIVE_CLASSES)
        # The rectangle's centre is in the frame and its sides are at least 8 pixels.
        cx, cy = quad.mean(axis=0)
        assert -1 <= cx <= w + 1 and -1 <= cy <= h + 1
        sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
        assert sides.min() >= 7.5
        assert np.allclose(sides[0], sides[2], atol=1e-3) and np.allclose(
            sides[1], sides[3], atol=1e-3
        )


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_is_deterministic_and_labels_are_rectangles_in_the_frame(source):
    for i in range(4):
        a = render_source(source, np.random.default_rng([5, i]))
        b = render_source(source, np.random.default_rng([5, i]))
        assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
        assert np.array_equal(a[2], b[2])
        _well_formed(a[0], a[1], a[2])
        assert a[3] == NO_SCENE or 0 <= a[3] < len(SCENE_CLASSES)


def test_randomized_scenes_hold_primitives_and_empty_ones_exist():
    counts = [len(render_randomized(np.random.default_rng([1, i])).boxes) for i in range(40)]
    assert sum(counts) / len(counts) >= 2  # occlusion and the border drop some, not most
    assert 0 in counts  # empty scenes happen
    assert all(
        not render_randomized(np.random.default_rng([2, i]), distractors_only=True).boxes
        for i in range(10)
    )


def test_prism_scenes_set_mostly_pyramids_and_cubes_beside_the_prisms():
    # The shapes the detectors take prisms for (training.sources): 70 % of the primitives.
    classes = np.concatenate(
        [render_source("prisms", np.random.default_rng([3, i]))[1] for i in range(30)]
    )
    assert len(classes) >= 60
    cube, pyramid = PRIMITIVE_CLASSES.index("cube"), PRIMITIVE_CLASSES.index("pyramid")
    assert np.isin(classes, [cube, pyramid]).mean() >= 0.55


def test_small_pyramid_scenes_hold_mostly_small_pyramids():
    # Pyramids are half the primitives there, and the objects far smaller than randomized ones.
    def boxes(source):
        samples = [render_source(source, np.random.default_rng([4, i])) for i in range(30)]
        classes = np.concatenate([s[1] for s in samples])
        areas = [
            cv2.contourArea(corners) / (image.width * image.height)
            for image, _, quads, _ in samples
            for corners in quads
        ]
        return classes, np.array(areas)

    classes, areas = boxes("small_pyramids")
    _, randomized_areas = boxes("randomized")
    assert len(classes) >= 60
    assert (classes == PRIMITIVE_CLASSES.index("pyramid")).mean() >= 0.4
    assert np.median(areas) < 0.4 * np.median(randomized_areas)


def test_lookalike_scenes_set_cubes_pyramids_and_cones_beside_what_is_taken_for_them():
    samples = [render_source("lookalikes", np.random.default_rng([6, i])) for i in range(40)]
    classes = np.concatenate([s[1] for s in samples])
    assert len(classes) >= 60
    confused = [PRIMITIVE_CLASSES.index(c) for c in ("cube", "pyramid", "cone")]
    assert np.isin(classes, confused).mean() >= 0.65
    # About three scenes in ten hold only the lookalikes, which carry no label.
    assert 5 <= sum(len(s[1]) == 0 for s in samples) <= 20


def test_a_flat_outline_is_a_solid_silhouette_lit_evenly():
    rng = np.random.default_rng(8)
    for _ in range(12):
        mask, light, spec, axis = _object_layer(
            rng, "d", "flat", 200, 160, 100.0, 80.0, 80.0, _lights(rng), 0.3
        )
        # A triangle, quadrilateral or ellipse of about the size asked for, in one piece.
        assert 0.15 * 80**2 <= mask.sum() <= 0.8 * 80**2
        assert cv2.connectedComponents(mask.astype(np.uint8))[0] == 2
        # No highlight and at most a gentle ramp of light across it: nothing makes it a solid.
        assert not spec.any() and axis is None
        assert np.ptp(light[mask]) <= 0.31


def test_a_sphere_is_labelled_axis_aligned_and_a_cylinder_along_its_axis():
    found = {0: 0, 2: 0}
    for i in range(12):
        sample = raycast_scene(np.random.default_rng([11, i]))
        for box in sample.boxes:
            if box.class_id == 0:
                assert box.angle == 0.0
                found[0] += 1
            if box.class_id == 2:
                found[2] += 1
    assert found[0] and found[2]


def test_the_ray_caster_shares_no_code_with_the_first_renderer():
    source = Path("training/raycast.py").read_text()
    imported = {
        node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
    }
    imported |= {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name and name.startswith("training") for name in imported), imported
    assert CLASS_NAMES == PRIMITIVE_CLASSES  # the same label order, written down twice


def test_the_data_set_keeps_the_original_held_out_split(tmp_path):
    generate(
        tmp_path,
        {
            "test": {"classic": 3},
            "test_raycast": {"raycast": 1},
            "train": {"photo": 1, "classic": 1},
        },
        seed=0,
        workers=1,
    )
    items = read_split(tmp_path, "test")
    assert [i.image.name for i in items] == [f"classic-{i:06d}.jpg" for i in range(3)]
    # Exactly the images the original generator's test split held (seed 0, its offsets).
    original = render_scene(np.random.default_rng([0, 20_000_000 + 1]))
    assert items[1].scene == original.scene
    assert len(items[1].classes) == len(original.boxes)
    assert [i.scene for i in read_split(tmp_path, "test_raycast")] == [-1]
    photo = [i for i in read_split(tmp_path, "train") if i.image.name.startswith("photo")]
    assert photo and len(photo[0].classes) == 0 and photo[0].scene == -1


def test_growing_one_source_renders_only_its_new_images(tmp_path):
    generate(tmp_path, {"train": {"classic": 2, "photo": 1}}, seed=0, workers=1)
    first = tmp_path / "images" / "train" / "classic-000000.jpg"
    first.write_bytes(first.read_bytes() + b"kept")  # marks the file: re-rendering drops it
    generate(tmp_path, {"train": {"classic": 3}}, seed=0, workers=1)
    assert first.read_bytes().endswith(b"kept")
    names = [i.image.name for i in read_split(tmp_path, "train")]
    assert names == [
        "classic-000000.jpg",
        "classic-000001.jpg",
        "classic-000002.jpg",
        "photo-000000.jpg",
    ]  # the other source's rows stay in scenes.csv
    grown = render_scene(np.random.default_rng([0, 2]))  # the third image of the stream
    assert read_split(tmp_path, "train")[2].scene == grown.scene


def test_a_recoloured_photograph_takes_the_scenes_colour_statistics():
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    scene = render_scene(np.random.default_rng(4)).image
    out = recolour(photo, scene)
    assert out.size == photo.size

    def lab_stats(image):
        import cv2

        lab = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
        return lab.mean(0), lab.std(0)

    (m_out, s_out), (m_ref, s_ref), (m_in, _) = lab_stats(out), lab_stats(scene), lab_stats(photo)
    assert np.abs(m_out - m_ref).max() < 6 < np.abs(m_in - m_ref).max()
    assert np.abs(s_out - s_ref).max() < 6


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 6))
    p = calibrate.softmax(true_logits)
    labels = np.array([rng.choice(6, p=row) for row in p])
    overconfident = true_logits * 3
    t = calibrate.fit_temperature(overconfident, labels)
    assert 2.6 < t < 3.4
    before = calibrate.expected_calibration_error(calibrate.softmax(overconfident), labels)
    after = calibrate.expected_calibration_error(calibrate.softmax(overconfident, t), labels)
    assert after < 0.03 < before


def test_the_unknown_threshold_keeps_the_asked_share():
    probs = calibrate.softmax(np.random.default_rng(1).normal(0, 3, size=(1000, 6)))
    threshold = calibrate.unknown_threshold(probs, keep=0.9)
    kept = (probs.max(axis=1) >= threshold).mean()
    assert 0.9 <= kept <= 0.93


def test_the_separating_threshold_refuses_what_is_out_of_domain():
    top = np.array([0.95, 0.9, 0.92, 0.4, 0.3, 0.88, 0.5, 0.35])
    known = np.array([True, True, True, False, False, True, False, False])
    threshold = calibrate.separating_threshold(top, known)
    assert 0.5 < threshold <= 0.88
    # Out-of-domain images are scored against the uniform distribution by the NLL.
    logits = np.zeros((2, 6))
    assert calibrate.nll(logits, np.array([-1, -1]), 1.0) == pytest.approx(np.log(6))
