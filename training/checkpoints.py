"""Resumable training state and the shipped weights format of the torchvision models."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def save_run(run: Path, model, opt, sched, epochs_done: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / "last.pt.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "epochs_done": epochs_done,
        },
        tmp,
    )
    tmp.replace(run / "last.pt")


def load_run(run: Path, model, opt, sched) -> int:
    """Restore the last checkpoint if any; returns the number of epochs already done."""
    last = run / "last.pt"
    if not last.exists():
        return 0
    state = torch.load(last, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    log.info("resumed from %s after %d epochs", last, state["epochs_done"])
    return int(state["epochs_done"])


def write_weights(out: Path, model, *, arch: str, classes: list[str], image_size: int) -> None:
    """The shipped file: fp16 weights (half the size; loaded back as fp32) and metadata."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"arch": arch, "classes": classes, "image_size": image_size, "state_dict": state}, out
    )
    log.info("wrote %s", out)
