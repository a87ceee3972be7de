"""The training history that carries a model's curve from one machine to the next."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from training import history

pytestmark = pytest.mark.unit


def test_runs_append_and_each_model_reads_its_own(tmp_path):
    log = tmp_path / "training-log.json"
    curve = [
        {"epoch": 1, "mAP50": 0.5, "seconds": 60.0},
        {"epoch": 2, "mAP50": 0.6, "seconds": 120.0},
    ]

    def record(model: str) -> None:
        history.record(
            model, init="weights/x.pt", epochs=curve, seconds=120, metric="mAP50", log=log
        )

    with ThreadPoolExecutor(4) as pool:  # trainers side by side (training/gpu.sh)
        list(pool.map(record, ["SSD", "YOLO", "SSD", "YOLO"]))
    runs = history.runs_of("SSD", log)
    assert len(runs) == 2 and len(history.runs_of("YOLO", log)) == 2
    assert runs[0]["epochs"] == curve and runs[0]["hours"] == 0.03
    assert runs[0]["device"].startswith(("CPU (", "GPU ("))


def test_a_resumed_run_continues_its_curve(tmp_path):
    history.write_curve(tmp_path, [{"epoch": 1, "accuracy": 0.9, "seconds": 10.0}])
    assert history.read_curve(tmp_path)[-1]["epoch"] == 1
    assert history.read_curve(tmp_path / "elsewhere") == []
