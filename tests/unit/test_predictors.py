"""The predictors' public interface on the shipped weights (no Ray)."""

from __future__ import annotations

import pytest

from inference import Classification, Detection, ImageUnreadable, build_predictor
from inference.images import decode_image
from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_jpeg


@pytest.fixture(scope="module")
def scenes():
    return [render_jpeg(seed) for seed in (31, 32)]


@pytest.mark.parametrize("name", ["YOLO", "model_v1"])
def test_one_bad_image_in_a_batch_does_not_fail_its_neighbours(registry, scenes, name):
    predictor = build_predictor(registry.by_name(name), device="cpu")
    (first, _), (second, _) = scenes
    out = predictor.predict_encoded([first, b"\xff\xd8\xffnot a jpeg", second])
    assert isinstance(out[1], ImageUnreadable)
    alone = predictor.predict([predictor.decode(first), predictor.decode(second)])
    assert [out[0], out[2]] == alone  # the same answers as without the bad one


def test_detections_and_classes_match_what_was_drawn(registry, scenes):
    yolo = build_predictor(registry.by_name("YOLO"), device="cpu")
    classifier = build_predictor(registry.by_name("model_v1"), device="cpu")
    for data, sample in scenes:
        image = decode_image(data)
        (detection,) = yolo.predict([image])
        (scene,) = classifier.predict([image])
        assert isinstance(detection, Detection) and isinstance(scene, Classification)
        assert scene.image_class == SCENE_CLASSES[sample.scene]
        assert sum(scene.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        drawn = sorted(PRIMITIVE_CLASSES[b.class_id] for b in sample.boxes)
        found = [p.primitive_class for p in detection.primitives]
        assert found, "drawn primitives must be found"
        assert [p.probability for p in detection.primitives] == sorted(
            (p.probability for p in detection.primitives), reverse=True
        )
        assert set(found) <= set(PRIMITIVE_CLASSES) and set(found) & set(drawn)


def test_describe_names_the_weights_and_device(registry):
    info = build_predictor(registry.by_name("SSD"), device="cpu").describe()
    assert info.name == "SSD" and info.backend == "torchvision_ssd" and info.device == "cpu"
    assert info.classes == ["sphere", "cube", "cylinder", "cone", "pyramid"]
    assert len(info.weights_sha256) == 64


def test_loading_yolo_keeps_the_process_torch_threads(registry, monkeypatch):
    """ultralytics would set them to os.cpu_count() - 1 on its first predict (one of two cores
    here, up to 8 on a large node whatever the replica's num_cpus)."""
    import torch
    from ultralytics import utils
    from ultralytics.utils import torch_utils

    monkeypatch.setattr(torch_utils, "NUM_THREADS", torch_utils.NUM_THREADS)  # put back after
    before = torch.get_num_threads()
    wanted = utils.NUM_THREADS + 1  # never ultralytics' own choice
    try:
        torch.set_num_threads(wanted)
        build_predictor(registry.by_name("YOLO"), device="cpu")  # warms up: one predict
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_each_model_decodes_bytes_at_the_scale_its_input_needs(registry):
    """The replicas decode (not the queue): a detector keeps the longer side at its input
    size, a classifier (which stretches both sides to its input) the shorter side. A wide
    scene: kept by its longer side, its shorter would fall far under the classifier's."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(render_jpeg(33)[0])).resize((1280, 320)).save(buf, format="JPEG")
    data = buf.getvalue()
    full = decode_image(data)
    yolo = build_predictor(registry.by_name("YOLO"), device="cpu")
    classifier = build_predictor(registry.by_name("model_v1"), device="cpu")
    for predictor, side in ((yolo, max), (classifier, min)):
        decoded = predictor.decode(data)
        size = predictor.spec.image_size
        assert side(decoded.shape[:2]) >= size
        assert side(decoded.shape[:2]) < 2 * size or side(full.shape[:2]) < 2 * size
    with pytest.raises(ImageUnreadable):
        yolo.decode(b"not an image")


@pytest.mark.parametrize("name", ["YOLO", "SSD", "model_v1"])
def test_the_noop_model_decodes_like_its_model_and_answers_the_same_for_any_image(name):
    """bench/noop.yaml's models: no weights, the real model's decoding, a fixed answer."""
    from config.serve_config import load_app_config
    from config.settings import REPO_ROOT

    spec = load_app_config(overlays=[REPO_ROOT / "bench" / "noop.yaml"]).registry.by_name(name)
    predictor = build_predictor(spec)
    assert predictor.describe().backend == "noop"
    (first, _), (second, _) = render_jpeg(34), render_jpeg(35)
    out = predictor.predict_encoded([first, b"\xff\xd8\xffnot a jpeg", second])
    assert isinstance(out[1], ImageUnreadable)  # it decodes: a bad image is refused
    assert out[0] == out[2]
    assert isinstance(out[0], Classification if name == "model_v1" else Detection)
    assert (
        predictor.decode(first).shape
        == build_predictor(load_app_config().registry.by_name(name), device="cpu")
        .decode(first)
        .shape
    )
