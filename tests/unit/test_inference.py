"""Pre- and post-processing of the predictors, without Ray or models."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from inference import DetectedPrimitive, ImageUnreadable
from inference.images import decode_image
from inference.processing import primitive, primitives_from_xywhr, softmax_top, xyxy_to_xywhr
from inference.weights import WeightsError, require_weights


def test_primitive_normalises_by_image_size_and_folds_the_angle():
    p = primitive(
        class_name="cube",
        cx=100,
        cy=50,
        w=40,
        h=20,
        angle=-math.pi / 4,
        confidence=0.9,
        image_w=200,
        image_h=100,
    )
    assert isinstance(p, DetectedPrimitive)
    assert p.as_dict() == pytest.approx(
        {
            "primitive_class": "cube",
            "x": 0.5,
            "y": 0.5,
            "width": 0.2,
            "height": 0.2,
            "rotation": 0.75,
            "probability": 0.9,
        }
    )
    assert (
        primitive(
            class_name="c",
            cx=0,
            cy=0,
            w=1,
            h=1,
            angle=math.pi,
            confidence=1,
            image_w=10,
            image_h=10,
        ).rotation
        == 0.0
    )
    assert primitive(
        class_name="c",
        cx=0,
        cy=0,
        w=1,
        h=1,
        angle=7 * math.pi / 2,
        confidence=1,
        image_w=10,
        image_h=10,
    ).rotation == pytest.approx(0.5)


def test_values_are_clipped_into_the_unit_interval():
    p = primitive(
        class_name="sphere",
        cx=-5,
        cy=130,
        w=300,
        h=10,
        angle=0,
        confidence=1.2,
        image_w=100,
        image_h=100,
    )
    assert (p.x, p.y, p.width, p.probability) == (0.0, 1.0, 1.0, 1.0)


def test_primitives_are_sorted_by_confidence_and_named():
    boxes = np.array([[10, 10, 4, 4, 0], [20, 20, 4, 4, 0.5]])
    out = primitives_from_xywhr(
        boxes,
        np.array([0.3, 0.8]),
        np.array([0, 4]),
        ["sphere", "cube", "cylinder", "cone", "pyramid"],
        40,
        40,
    )
    assert [p.primitive_class for p in out] == ["pyramid", "sphere"]


def test_xyxy_to_xywhr():
    assert xyxy_to_xywhr(np.array([[0, 0, 10, 20]])).tolist() == [[5, 10, 10, 20, 0]]
    assert xyxy_to_xywhr(np.zeros((0, 4))).shape == (0, 5)


def test_softmax_top():
    out = softmax_top(np.array([[0.0, 5.0, 0.0]]), ["a", "b", "c"])
    assert out[0].image_class == "b"
    assert out[0].probability == pytest.approx(0.9867, abs=1e-3)
    assert out[0].probabilities == pytest.approx({"a": 0.0066, "b": 0.9867, "c": 0.0066}, abs=1e-3)


def test_a_low_calibrated_probability_answers_unknown_with_the_probabilities():
    logits = np.array([[0.0, 2.0, 0.0], [0.0, 9.0, 0.0]])
    plain = softmax_top(logits, ["a", "b", "c"])
    assert [c.image_class for c in plain] == ["b", "b"]
    hotter = softmax_top(logits, ["a", "b", "c"], temperature=2.0, unknown_below=0.6)
    first, second = hotter
    assert first.image_class == "unknown"
    assert first.probability == pytest.approx(first.probabilities["b"], abs=1e-5)
    assert first.probability < 0.6
    assert first.probability < plain[0].probability  # a temperature above 1 softens
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert second.image_class == "b" and second.probability >= 0.6


def test_only_classification_models_take_a_temperature_or_threshold(registry):
    from config.registry import ModelSpec

    yolo = registry.by_name("YOLO").model_dump()
    with pytest.raises(ValueError, match="for classification models"):
        ModelSpec(**{**yolo, "unknown_threshold": 0.5})
    classifier = registry.by_name("model_v1")
    assert classifier.unknown_threshold is not None  # the shipped config sets one


def test_exif_orientation_is_applied_before_inference():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (40, 20, 3)


def test_undecodable_bytes_are_refused_as_unreadable():
    with pytest.raises(ImageUnreadable, match="could not decode"):
        decode_image(b"\xff\xd8\xff" + b"\x00" * 32)


def test_missing_weights_stop_start_up_with_a_clear_message(tmp_path, registry):
    spec = registry.models[0].model_copy(update={"weights": tmp_path / "nope.pt"})
    with pytest.raises(WeightsError, match="does not exist"):
        require_weights(spec)


def test_a_scaled_decode_keeps_the_longer_side_at_least_the_asked_size():
    img = Image.new("RGB", (640, 480), (10, 200, 30))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    assert decode_image(buf.getvalue()).shape == (480, 640, 3)
    assert decode_image(buf.getvalue(), min_side=256).shape == (240, 320, 3)  # scale 1/2
    assert decode_image(buf.getvalue(), min_side=80).shape == (60, 80, 3)  # scale 1/8
    assert decode_image(buf.getvalue(), min_side=1000).shape == (480, 640, 3)
    assert (
        np.abs(
            decode_image(buf.getvalue(), min_side=256).astype(int).mean(axis=(0, 1)) - [10, 200, 30]
        ).max()
        < 3
    )


@pytest.mark.parametrize("orientation", [None, 6, 3])
def test_a_large_png_is_reduced_at_once_and_still_shown_upright(orientation):
    """Found by the outside review: the queue kept a 40 MP PNG at full size through every copy;
    it is reduced right after decoding, by a whole factor that keeps the asked side."""
    img = Image.new("RGB", (3000, 1000), (10, 200, 30))
    img.paste((255, 0, 0), (0, 0, 300, 100))  # a red corner to tell the orientation
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    img.save(buf, format="PNG", exif=exif.tobytes())
    full = decode_image(buf.getvalue())
    reduced = decode_image(buf.getvalue(), min_side=640)  # 3000 // 640: by 4
    assert full.shape[:2] == ((1000, 3000) if orientation in (None, 3) else (3000, 1000))
    assert reduced.shape == (full.shape[0] // 4, full.shape[1] // 4, 3)
    assert max(reduced.shape[:2]) >= 640
    red = np.argwhere((full[..., 0] > 200) & (full[..., 1] < 50)).mean(axis=0) / full.shape[:2]
    red_small = (
        np.argwhere((reduced[..., 0] > 200) & (reduced[..., 1] < 50)).mean(axis=0)
        / reduced.shape[:2]
    )
    assert np.abs(red - red_small).max() < 0.02  # the same corner, the same way up
