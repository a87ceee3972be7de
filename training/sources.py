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
- ``photo_recoloured``: photographic content in a synthetic scene's colours: one to three
  crops of the training photographs stacked in horizontal bands, their colour statistics
  (mean and spread of each channel in Lab) moved onto those of a scene of the first
  generator; no labels, no scene. A scene class must come from a scene's structure, not from
  its colours: ``grace_hopper.jpg`` was called a street at 0.95 because her dark navy uniform
  has the road's colour and her ribbons sit like lit windows above it (weights/README.md).
- ``photo_on_scene``: one of the six scene backgrounds (no primitives) with a large crop of a
  training photograph standing in front of it, from the bottom edge up, the background
  showing around it; no labels, no scene. What made ``grace_hopper.jpg`` a street is a
  street's layout: blue above, a grid of small bright marks (the flag's stars, the windows),
  a dark lower half (the uniform, the road) with white marks at four fifths of the height
  (her ribbons, the road's dashes). A scene with a photograph in front of it is not that
  scene: the class must come from the background being the picture, not from its layout.
- ``prisms``: randomized scenes whose distractors are all prisms (triangular, pentagonal)
  beside primitives drawn mostly as pyramids and cubes. Of YOLO's 44 confident false boxes
  on the 150 held-out distractor scenes, 27 sat on a prism: a triangular prism taken for a
  pyramid, a pentagonal one for a cube (docs/failures.md). Prisms were one distractor kind
  in eight; here they stand next to the shapes they are taken for.
- ``small_pyramids``: randomized scenes of up to ten small objects (4-30 % of the shorter
  side, against 6-80 %), half the primitives pyramids and a fifth cubes (what pyramids are
  most often taken for). Pyramid was YOLO's weakest class on the randomized split (AP50
  0.655 after the ninth sitting): most of the pyramids it missed were small, dark or low in
  contrast on a busy background, and it found 53 % of those under 1 % of the image against
  65 % of all. The tenth sitting, with these scenes once an epoch: 0.706; `make train`
  draws them twice for YOLO since the twelfth, which ended at 0.704 with the randomized
  split at 0.789 (docs/failures.md).
- ``lookalikes``: randomized scenes of two to five things that are not primitives but are
  taken for them, beside primitives drawn mostly as cubes, pyramids and cones (three scenes
  in ten: one to five of those things alone): prisms, capsules, ellipsoids, tori, and flat outlines
  (triangles, quadrilaterals, ellipses lit evenly: a silhouette without a solid's shading).
  After the twelfth sitting, YOLO's false boxes on the 150 held-out distractor scenes sat
  almost all on prisms (triangular ones taken for pyramids, pentagonal ones for cubes) and
  capsules (for cylinders); on the randomized split its false pyramids sat on prisms and on
  flat triangles, and pyramids, cones and cubes were taken for each other (docs/failures.md).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from training.randomize import NO_SCENE, render_randomized
from training.raycast import raycast_scene
from training.render import SCENE_CLASSES, _background, render_scene

# New sources go at the end: a source's place names its seed stream (training.datagen).
SOURCES = (
    "classic",
    "randomized",
    "raycast",
    "distractors",
    "photo",
    "noise",
    "photo_recoloured",
    "photo_on_scene",
    "prisms",
    "small_pyramids",
    "lookalikes",
)
# Of a ``prisms`` scene's primitives: sphere, cube, cylinder, cone, pyramid.
PRISM_SCENE_CLASS_WEIGHTS = (0.1, 0.35, 0.1, 0.1, 0.35)
# Of a ``small_pyramids`` scene's primitives (cubes: what pyramids are most taken for),
# and the bounds of every object's size there as a share of the image's shorter side.
SMALL_PYRAMID_CLASS_WEIGHTS = (0.1, 0.2, 0.1, 0.1, 0.5)
SMALL_PYRAMID_SCALE = (0.04, 0.3)
# A ``lookalikes`` scene: the things false boxes sit on, beside the primitives they are
# taken for (cubes, pyramids, cones most), or alone in a share of the scenes.
LOOKALIKES = ("prism", "flat", "capsule", "ellipsoid", "torus")
LOOKALIKE_CLASS_WEIGHTS = (0.05, 0.3, 0.15, 0.2, 0.3)
LOOKALIKE_ALONE = 0.3

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


def recolour(image: Image.Image, reference: Image.Image) -> Image.Image:
    """``image`` with the per-channel mean and spread of ``reference`` in Lab (Reinhard et
    al., 2001): the reference's colour statistics, the image's content."""
    src = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(np.asarray(reference), cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src.reshape(-1, 3).mean(0), src.reshape(-1, 3).std(0) + 1e-3
    r_mean, r_std = ref.reshape(-1, 3).mean(0), ref.reshape(-1, 3).std(0)
    out = np.clip((src - s_mean) / s_std * r_std + r_mean, 0, 255).astype(np.uint8)
    return Image.fromarray(cv2.cvtColor(out, cv2.COLOR_LAB2RGB))


def _photo_recoloured(rng: np.random.Generator) -> Image.Image:
    """Photograph crops in a scene's colour layout: each horizontal strip of the collage takes
    the colour statistics of the same strip of a rendered scene (sky, buildings, road)."""
    bands = [_photo_crop(rng) for _ in range(int(rng.integers(1, 4)))]
    w = bands[0].width
    heights = [max(32, int(b.height * w / b.width / len(bands))) for b in bands]
    collage = Image.new("RGB", (w, sum(heights)))
    y = 0
    for band, bh in zip(bands, heights, strict=True):
        collage.paste(band.resize((w, bh)), (0, y))
        y += bh
    if rng.random() < 0.5:  # smooth, as a portrait's backdrop and clothes are: layout alone
        collage = collage.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 8))))
    scene = render_scene(rng).image.resize(collage.size)
    strips = int(rng.integers(2, 5))  # two to four bands, as the scenes are laid out
    cuts = np.linspace(0, collage.height, strips + 1).astype(int)
    out = Image.new("RGB", collage.size)
    for top, bottom in zip(cuts[:-1], cuts[1:], strict=True):
        box = (0, int(top), w, int(bottom))
        out.paste(recolour(collage.crop(box), scene.crop(box)), box[:2])
    return out


def _photo_on_scene(rng: np.random.Generator) -> Image.Image:
    w, h = int(rng.integers(320, 641)), int(rng.integers(320, 641))
    scene = _background(rng, int(rng.integers(len(SCENE_CLASSES))), w, h)
    crop = _photo_crop(rng)
    pw, ph = int(w * rng.uniform(0.35, 0.8)), int(h * rng.uniform(0.45, 0.95))
    x = int(rng.integers(0, w - pw + 1))
    scene.paste(crop.resize((pw, ph)), (x, h - ph))
    return scene


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
    if name == "prisms":
        s = render_randomized(
            rng,
            photo_backgrounds=backgrounds,
            distractors=("prism",),
            distractor_count=(1, 4),
            class_weights=PRISM_SCENE_CLASS_WEIGHTS,
        )
        return (s.image, *_boxes(s.boxes), s.scene)
    if name == "small_pyramids":
        s = render_randomized(
            rng,
            max_objects=10,
            photo_backgrounds=backgrounds,
            class_weights=SMALL_PYRAMID_CLASS_WEIGHTS,
            object_scale=SMALL_PYRAMID_SCALE,
        )
        return (s.image, *_boxes(s.boxes), s.scene)
    if name == "lookalikes":
        s = render_randomized(
            rng,
            distractors_only=rng.random() < LOOKALIKE_ALONE,
            photo_backgrounds=backgrounds,
            distractors=LOOKALIKES,
            distractor_count=(2, 5),
            class_weights=LOOKALIKE_CLASS_WEIGHTS,
        )
        return (s.image, *_boxes(s.boxes), s.scene)
    if name == "raycast":
        r = raycast_scene(rng)
        return (r.image, *_boxes(r.boxes), NO_SCENE)
    if name == "photo":
        return (_photo_crop(rng), *_boxes([]), NO_SCENE)
    if name == "noise":
        return (_noise(rng), *_boxes([]), NO_SCENE)
    if name == "photo_recoloured":
        return (_photo_recoloured(rng), *_boxes([]), NO_SCENE)
    if name == "photo_on_scene":
        return (_photo_on_scene(rng), *_boxes([]), NO_SCENE)
    raise ValueError(f"unknown source {name!r}; choose from {SOURCES}")
