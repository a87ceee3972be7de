"""Hard-negative mining (training.mine) on the shipped YOLO weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from inference import build_predictor
from training.mine import main, mine, negative_images
from training.render import render_jpeg


def test_the_negative_images_a_detector_fires_on_are_listed_surest_first(
    tmp_path: Path, registry
) -> None:
    """Scenes with primitives stand in for distractor scenes the weights get wrong; the same
    kind of scene from a labelled source is not a negative, and a flat photograph-source
    image holds nothing to find."""
    train = tmp_path / "images" / "train"
    train.mkdir(parents=True)
    for name, seed in (
        ("distractors-000000", 31),
        ("distractors-000001", 32),
        ("raycast-000000", 33),
    ):
        (train / f"{name}.jpg").write_bytes(render_jpeg(seed)[0])
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(train / "photo-000000.jpg")
    out = tmp_path / "mined.txt"

    main(["--model", "YOLO", "--data", str(tmp_path), "--out", str(out)])

    listed = [Path(line).name for line in out.read_text().split()]
    assert sorted(listed) == ["distractors-000000.jpg", "distractors-000001.jpg"]
    assert all(Path(line).is_file() for line in out.read_text().split())

    yolo = build_predictor(
        registry.by_name("YOLO").model_copy(update={"confidence_threshold": 0.25}), device="cpu"
    )
    found = mine(yolo.predict, negative_images(tmp_path), 0.25)
    assert [image.name for image, _, _ in found] == listed  # the file's order: surest first
    scores = [score for _, score, _ in found]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.25

    main(["--model", "YOLO", "--data", str(tmp_path), "--out", str(out), "--at", "1.0"])
    assert out.read_text() == ""  # no score reaches 1.0
