"""Where training and evaluation images come from, behind one call.

``render_source(name, rng)`` → ``(image, classes (N,), corners (N, 4, 2) in pixels, scene)``
where ``scene`` indexes ``SCENE_CLASSES`` or is ``NO_SCENE`` (-1, no scene class: rooms,
the other renderer, photographs, noise).

Sources:

- ``classic``: the original generator (``training/render.py``), six scene backgrounds.
- ``randomized``: the same renderer with domain randomization (``training/randomize.py``).
- ``raycast``: the independent ray-caster (``training/raycast.py``).
- ``distractors``: randomized scenes holding only things that are not primitives.
- ``photo``: crops of the photographs set aside for training (``TRAIN_PHOTOS``), flipped,
  scaled and colour-jittered; no labels. The photographs in ``EVAL_PHOTOS`` are never used
  for training: they are the background-only evaluation set.
- ``noise``: random noise and smooth colour fields (out-of-domain inputs for the classifier).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.randomize import NO_SCENE, render_randomized
from training.raycast import raycast_scene
from training.render import render_scene

SOURCES = ("classic", "randomized", "raycast", "distractors", "photo", "noise")

# Photographs without primitives shipped inside installed packages: (package, path in it).
EVAL_PHOTOS = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("ultralytics", "assets/zidane.jpg"),
    ("ultralytics", "assets/bus.jpg"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("sklearn", "datasets/images/china.jpg"),
)
TRAIN_PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/horse.png"),
    ("skimage", "data/page.png"),
    ("skimage", "data/text.png"),
    ("skimage", "data/ihc.png"),
    ("sklearn", "datasets/images/flower.jpg"),
)


def photo_path(package: str, relative: str) -> Path | None:
    """The file inside an installed package, or None when the package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.exists() else None


@cache
def _photos(which: tuple[tuple[str, str], ...]) -> tuple[Image.Image, ...]:
    found = [photo_path(p, r) for p, r in which]
    return tuple(Image.open(p).convert("RGB") for p in found if p is not None)


def available_photos(which=EVAL_PHOTOS) -> list[tuple[str, Path]]:
    return [(Path(r).name, p) for pk, r in which if (p := photo_path(pk, r)) is not None]


def _photo_crop(rng: np.random.Generator) -> Image.Image:
    photos = _photos(TRAIN_PHOTOS)
    if not photos:
        raise RuntimeError(
            "no training photographs: install scikit-image and scikit-learn "
            "(pip install -e '.[training]')"
        )
    photo = photos[int(rng.integers(len(photos)))]
    w, h = photo.size
    share = rng.uniform(0.35, 1.0)
    cw, ch = int(w * share), int(h * share * rng.uniform(0.75, 1.33))
    ch = min(ch, h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    target = int(rng.integers(320, 513))
    img = img.resize((target, max(64, int(target * ch / cw))))
    arr = np.asarray(img).astype(np.float32) * rng.uniform(0.8, 1.2, size=3)
    return Image.fromarray(np.clip(arr + rng.uniform(-20, 20), 0, 255).astype(np.uint8))


def _noise(rng: np.random.Generator) -> Image.Image:
    w, h = int(rng.integers(256, 513)), int(rng.integers(256, 513))
    cells = int(rng.integers(2, 64))
    small = rng.uniform(0, 255, size=(cells, max(2, int(cells * w / h)), 3))
    arr = np.asarray(
        Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    arr += rng.normal(0, rng.uniform(0, 40), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _boxes(boxes) -> tuple[np.ndarray, np.ndarray]:
    if not boxes:
        return np.zeros(0, np.int64), np.zeros((0, 4, 2), np.float32)
    return (
        np.array([b.class_id for b in boxes], np.int64),
        np.stack([b.corners() for b in boxes]).astype(np.float32),
    )


def render_source(
    name: str, rng: np.random.Generator, *, photos: bool = True
) -> tuple[Image.Image, np.ndarray, np.ndarray, int]:
    """One image of ``name``; ``photos=False`` keeps photographs out of the randomized
    backgrounds (pictures we publish show only what we drew)."""
    backgrounds = _photos(TRAIN_PHOTOS) if photos else ()
    if name == "classic":
        s = render_scene(rng)
        return (s.image, *_boxes(s.boxes), s.scene)
    if name == "randomized":
        s = render_randomized(rng, photo_backgrounds=backgrounds)
        return (s.image, *_boxes(s.boxes), s.scene)
    if name == "distractors":
        s = render_randomized(rng, distractors_only=True, photo_backgrounds=backgrounds)
        return (s.image, *_boxes(s.boxes), s.scene)  # its background may be a scene
    if name == "raycast":
        r = raycast_scene(rng)
        return (r.image, *_boxes(r.boxes), NO_SCENE)
    if name == "photo":
        return (_photo_crop(rng), *_boxes([]), NO_SCENE)
    if name == "noise":
        return (_noise(rng), *_boxes([]), NO_SCENE)
    raise ValueError(f"unknown source {name!r}; choose from {SOURCES}")
