"""The training history that travels with the weights (``weights/training-log.json``).

A training run on one machine resumes from its checkpoints in ``runs/``; the next machine
starts from the shipped weights, so the curve across machines lives here: one record per
run, appended when the run ends, with where it ran, what it started from, how long it took
and its validation figure after every epoch. The model cards draw their curves from it.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG = Path("weights/training-log.json")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return f"CPU ({os.cpu_count()} cores)"


def record(
    model: str,
    *,
    init: str,
    epochs: list[dict[str, float]],
    seconds: float,
    metric: str,
    log: Path = LOG,
    **extra: Any,
) -> None:
    """Append one run: ``epochs`` is a row per epoch, each holding ``metric`` (the
    validation figure the curve plots). Trainers running side by side append in turn."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with (log.parent / f".{log.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _append(log, model, init, epochs, seconds, metric, extra)


def _append(log, model, init, epochs, seconds, metric, extra) -> None:
    runs = json.loads(log.read_text()) if log.exists() else []
    runs.append(
        {
            "model": model,
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "device": device_name(),
            "init": init,
            "hours": round(seconds / 3600, 2),
            "metric": metric,
            "epochs": epochs,
            **extra,
        }
    )
    tmp = log.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=1) + "\n")
    tmp.replace(log)


def read_curve(run: Path) -> list[dict[str, float]]:
    """A resumable run's curve so far (``RUN/curve.json``), so a resumed run continues it."""
    path = run / "curve.json"
    return json.loads(path.read_text()) if path.exists() else []


def write_curve(run: Path, curve: list[dict[str, float]]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "curve.json").write_text(json.dumps(curve) + "\n")


def runs_of(model: str, log: Path = LOG) -> list[dict[str, Any]]:
    return [r for r in json.loads(log.read_text()) if r["model"] == model] if log.exists() else []
