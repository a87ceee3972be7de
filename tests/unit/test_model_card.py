"""The model cards show each model's training history: every run, where it ran, its curve."""

from __future__ import annotations

import pytest

from training import history, model_card

pytestmark = pytest.mark.unit


def test_the_card_lists_every_run_and_draws_the_curve(tmp_path):
    log = tmp_path / "training-log.json"
    for init, curve, images, val_sources in (
        ("weights/a.pt", [0.5, 0.6], "data/primitives (train), size 256", []),
        (
            "weights/b.pt",
            [0.62, 0.66, 0.67],
            "x (train; validated on raycast randomized), size 1",  # logs before val_sources
            [],
        ),
        ("weights/c.pt", [0.7], "x (train; validated on raycast distractors)", ["raycast"]),
    ):
        epochs = [
            {"epoch": i + 1, "mAP50": v, "seconds": 600.0 * (i + 1)} for i, v in enumerate(curve)
        ]
        history.record(
            "YOLO",
            init=init,
            epochs=epochs,
            seconds=epochs[-1]["seconds"],
            metric="mAP50",
            images=images,
            val_sources=val_sources,
            log=log,
        )
    card = model_card.render({}, log, tmp_path)
    # Each run's curve says which validation images it is measured on.
    assert "| `weights/a.pt` | 2 | 0.33 | the whole split | 0.500 → 0.600 |" in card
    assert "| `weights/b.pt` | 3 | 0.5 | raycast randomized | 0.620 → 0.660 → 0.670 |" in card
    assert "| `weights/c.pt` | 1 | 0.17 | raycast | 0.700 |" in card  # the recorded field
    assert "![YOLO validation curve](curve-YOLO.png)" in card
    assert (tmp_path / "curve-YOLO.png").stat().st_size > 1000
    assert "curve-SSD.png" not in card  # no run of SSD recorded: no curve
