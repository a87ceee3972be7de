"""Readers for the generated data set, shared by the torchvision trainers and the evaluator."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.render import SCENE_CLASSES


@dataclass(frozen=True)
class Item:
    image: Path
    scene: int  # index in SCENE_CLASSES, or -1: no scene class (rooms, photos, noise...)
    classes: np.ndarray  # (N,) int
    corners: np.ndarray  # (N, 4, 2) normalised to [0, 1]


def read_split(root: Path, split: str) -> list[Item]:
    scenes = {}
    with (root / "scenes.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["split"] == split:
                scene = row["scene"]
                scenes[row["file"]] = SCENE_CLASSES.index(scene) if scene != "none" else -1
    items = []
    for image in sorted((root / "images" / split).glob("*.jpg")):
        label = root / "labels" / split / (image.stem + ".txt")
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        classes = np.array([int(r[0]) for r in rows], dtype=np.int64)
        corners = np.array([[float(v) for v in r[1:9]] for r in rows], dtype=np.float32).reshape(
            -1, 4, 2
        )
        items.append(Item(image=image, scene=scenes[image.name], classes=classes, corners=corners))
    return items


def axis_aligned(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4, 2) normalised corners to (N, 4) pixel xyxy boxes."""
    if len(corners) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    pts = corners * [width, height]
    return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1).astype(np.float32)
