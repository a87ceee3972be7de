"""Procedural renderer for synthetic scenes holding shaded 3-D geometric primitives.

Everything is drawn from one ``numpy.random.Generator`` so a seed fixes an image exactly.
Primitives are meshes rotated in 3-D, projected with a pinhole camera and painted back to
front with Lambertian shading; spheres are shaded discs. Each label is the minimum-area
rotated rectangle of the primitive's whole silhouette (occluded parts included), the
convention ultralytics' oriented-box models learn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PRIMITIVE_CLASSES = ("sphere", "cube", "cylinder", "cone", "pyramid")
SCENE_CLASSES = ("office", "kitchen", "bedroom", "street", "forest", "beach")


@dataclass(frozen=True)
class Box:
    """An oriented box in pixels: centre, sides and angle (radians, clockwise on screen)."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def corners(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [self.w / 2, self.h / 2]
        return half @ rot.T + [self.cx, self.cy]


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    scene: int
    boxes: list[Box]


# ---------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------


def _cube_mesh() -> tuple[np.ndarray, list[list[int]]]:
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return v, faces


def _cylinder_mesh(n: int = 28) -> tuple[np.ndarray, list[list[int]]]:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], axis=1)
    top = np.column_stack([ring, np.full(n, -1.0)])
    bottom = np.column_stack([ring, np.full(n, 1.0)])
    v = np.vstack([top, bottom])
    faces = [[i, (i + 1) % n, n + (i + 1) % n, n + i] for i in range(n)]
    faces += [list(range(n))[::-1], list(range(n, 2 * n))]
    return v, faces


def _cone_mesh(n: int = 28) -> tuple[np.ndarray, list[list[int]]]:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    base = np.column_stack([np.cos(a), np.sin(a), np.full(n, 1.0)])
    v = np.vstack([base, [[0.0, 0.0, -1.2]]])
    faces = [[i, n, (i + 1) % n] for i in range(n)] + [list(range(n))]
    return v, faces


def _pyramid_mesh() -> tuple[np.ndarray, list[list[int]]]:
    v = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [0, 0, -1.1]], dtype=float)
    faces = [[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [3, 2, 1, 0]]
    return v, faces


MESHES = {1: _cube_mesh(), 2: _cylinder_mesh(), 3: _cone_mesh(), 4: _pyramid_mesh()}


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ rx @ ry


def _shade(color: np.ndarray, intensity: float) -> tuple[int, int, int]:
    rgb = np.clip(color * intensity, 0, 255)
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _min_area_box(class_id: int, points: np.ndarray) -> Box:
    (cx, cy), (w, h), deg = cv2.minAreaRect(points.astype(np.float32))
    return Box(class_id, float(cx), float(cy), float(w), float(h), math.radians(deg))


def _axis_box(class_id: int, points: np.ndarray, axis: np.ndarray) -> Box:
    """The rectangle around ``points`` with one side along ``axis`` (its ``h`` side)."""
    if np.linalg.norm(axis) < 1e-6:
        return _min_area_box(class_id, points)
    # Angle of the box's own x axis: perpendicular to the symmetry axis, so h runs along it.
    angle = math.atan2(axis[1], axis[0]) - math.pi / 2
    c, s = math.cos(angle), math.sin(angle)
    local = (points - points.mean(axis=0)) @ np.array([[c, -s], [s, c]])
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = points.mean(axis=0) + np.array([[c, -s], [s, c]]) @ ((lo + hi) / 2)
    return Box(
        class_id,
        float(centre[0]),
        float(centre[1]),
        float(hi[0] - lo[0]),
        float(hi[1] - lo[1]),
        angle,
    )


def _draw_mesh(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    class_id: int,
    cx: float,
    cy: float,
    size: float,
    light: np.ndarray,
) -> Box:
    verts, faces = MESHES[class_id]
    stretch = np.ones(3)
    if class_id in (2, 3):  # cylinders and cones come tall or squat
        stretch = np.array([1.0, 1.0, rng.uniform(0.8, 1.8)])
    yaw = rng.uniform(-0.9, 0.9)
    pitch = rng.uniform(-0.9, 0.9)
    roll = rng.uniform(0, 2 * math.pi)
    if class_id in (2, 3, 4):
        # Keep the axis mostly in the image plane so the side profile shows.
        pitch = rng.uniform(math.pi / 2 - 0.7, math.pi / 2 + 0.5)
    rot = _rotation(yaw, pitch, roll)
    world = (verts * stretch) @ rot.T
    depth = 6.0
    focal = rng.uniform(4.5, 9.0)
    z = world[:, 2] + depth
    proj = world[:, :2] * (focal / z)[:, None]
    span = np.ptp(proj, axis=0).max()
    pts = proj / span * size + [cx, cy]
    normals = []
    for face in faces:
        a, b, c = world[face[0]], world[face[1]], world[face[2]]
        n = np.cross(b - a, c - a)
        normals.append(n / (np.linalg.norm(n) + 1e-9))
    base = rng.uniform(40, 230, size=3)
    order = sorted(range(len(faces)), key=lambda i: -world[faces[i], 2].mean())
    for i in order:
        face = faces[i]
        centre = world[face].mean(axis=0) + [0, 0, depth]
        if np.dot(normals[i], centre) >= 0:  # facing away from the camera
            continue
        lambert = max(0.0, float(np.dot(normals[i], -light)))
        draw.polygon([tuple(p) for p in pts[face]], fill=_shade(base, 0.3 + 0.75 * lambert))
    if class_id == 1:
        return _min_area_box(class_id, pts)
    # Bodies of revolution and pyramids: the box follows the projected symmetry axis, so
    # its orientation is defined by what the image shows (the cone's tip, the cylinder's
    # length), not by whichever of several near-equal minimal rectangles wins.
    ends = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]) * stretch @ rot.T
    ends_z = ends[:, 2] + depth
    ends_2d = ends[:, :2] * (focal / ends_z)[:, None] / span * size + [cx, cy]
    return _axis_box(class_id, pts, ends_2d[1] - ends_2d[0])


def _draw_sphere(
    img: Image.Image, rng: np.random.Generator, cx: float, cy: float, size: float, light: np.ndarray
) -> Box:
    r = size / 2
    x0, y0 = int(cx - r), int(cy - r)
    d = int(2 * r) + 1
    yy, xx = np.mgrid[0:d, 0:d].astype(float)
    nx, ny = (xx - r) / r, (yy - r) / r
    inside = nx**2 + ny**2 <= 1.0
    nz = -np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    lambert = np.clip(-(nx * light[0] + ny * light[1] + nz * light[2]), 0, 1)
    spec = np.clip(-(nx * light[0] + ny * light[1] + nz * light[2]), 0, 1) ** 30
    base = rng.uniform(40, 230, size=3)
    rgb = base[None, None, :] * (0.25 + 0.8 * lambert)[..., None] + 200 * spec[..., None]
    patch = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    mask = Image.fromarray((inside * 255).astype(np.uint8))
    img.paste(patch, (x0, y0), mask)
    return Box(0, cx, cy, 2 * r, 2 * r, 0.0)


# ---------------------------------------------------------------------------------------
# Backgrounds
# ---------------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 25):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


# A colour jittered by the scene's generator: j(rgb) or j(rgb, amount).
Jitter = Callable[..., Any]


def _vertical_gradient(w: int, h: int, top, bottom) -> Image.Image:
    t = np.linspace(0, 1, h)[:, None, None]
    arr = np.asarray(top)[None, None, :] * (1 - t) + np.asarray(bottom)[None, None, :] * t
    return Image.fromarray(np.repeat(arr, w, axis=1).astype(np.uint8))


# One function a scene class: the backdrop, before the clutter every scene shares.
def _office(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = _vertical_gradient(w, h, j((205, 205, 200)), j((170, 170, 165)))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 3)):  # windows with blinds
        x = rng.integers(0, w - w // 4)
        d.rectangle([x, h * 0.08, x + w // 4, h * 0.45], fill=j((180, 210, 235)))
        for y in np.arange(h * 0.08, h * 0.45, 8):
            d.line([x, y, x + w // 4, y], fill=j((150, 160, 170)), width=2)
    d.rectangle([0, h * 0.62, w, h], fill=j((120, 85, 55)))  # desk
    for _ in range(rng.integers(1, 3)):  # monitors
        x = rng.integers(0, w - w // 5)
        d.rectangle([x, h * 0.4, x + w // 5, h * 0.6], fill=(25, 25, 30))
    return img


def _kitchen(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), j((235, 235, 225)))
    d = ImageDraw.Draw(img)
    tile = int(rng.integers(14, 28))
    grout = j((170, 170, 160))
    for x in range(0, w, tile):
        d.line([x, 0, x, h * 0.55], fill=grout)
    for y in range(0, int(h * 0.55), tile):
        d.line([0, y, w, y], fill=grout)
    d.rectangle([0, h * 0.55, w, h * 0.62], fill=j((90, 90, 95)))  # counter top
    d.rectangle([0, h * 0.62, w, h], fill=j((200, 170, 120)))  # cabinets
    for x in range(0, w, max(40, w // 6)):
        d.line([x, h * 0.62, x, h], fill=j((120, 90, 60)), width=3)
    return img


def _bedroom(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), j((200, 160, 170)))
    d = ImageDraw.Draw(img)
    stripe = int(rng.integers(10, 24))
    for x in range(0, w, stripe * 2):
        d.rectangle([x, 0, x + stripe, h * 0.5], fill=j((215, 180, 185), 10))
    d.rectangle([w * 0.1, h * 0.35, w * 0.9, h * 0.55], fill=j((110, 70, 50)))  # headboard
    d.rectangle([w * 0.05, h * 0.55, w * 0.95, h], fill=j((235, 235, 250)))  # bed
    d.ellipse([w * 0.15, h * 0.5, w * 0.4, h * 0.62], fill=j((250, 250, 255)))  # pillow
    return img


def _street(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = _vertical_gradient(w, h, j((120, 170, 230)), j((200, 220, 240)))
    d = ImageDraw.Draw(img)
    x = 0
    while x < w:  # buildings
        bw = int(rng.integers(w // 8, w // 3))
        top = int(rng.integers(int(h * 0.1), int(h * 0.4)))
        col = j((130, 120, 115), 40)
        d.rectangle([x, top, x + bw, h * 0.6], fill=col)
        for wy in range(top + 6, int(h * 0.58), 14):
            for wx in range(x + 5, x + bw - 8, 12):
                d.rectangle([wx, wy, wx + 5, wy + 7], fill=j((230, 220, 150), 30))
        x += bw
    d.rectangle([0, h * 0.6, w, h], fill=j((70, 70, 75), 10))  # road
    for x in range(0, w, 60):
        d.rectangle([x, h * 0.79, x + 30, h * 0.81], fill=(240, 240, 240))
    return img


def _forest(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = _vertical_gradient(w, h, j((70, 120, 70)), j((40, 70, 35)))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 14)):
        x = int(rng.integers(0, w))
        tw = int(rng.integers(6, 20))
        d.rectangle([x, h * rng.uniform(0.1, 0.4), x + tw, h], fill=j((90, 60, 35)))
    for _ in range(rng.integers(15, 40)):
        x, y, r = rng.integers(0, w), rng.integers(0, int(h * 0.5)), rng.integers(10, 40)
        d.ellipse([x - r, y - r, x + r, y + r], fill=j((40, 110, 40), 30))
    d.rectangle([0, h * 0.85, w, h], fill=j((60, 80, 30)))
    return img


def _beach(rng: np.random.Generator, j: Jitter, w: int, h: int) -> Image.Image:
    img = _vertical_gradient(w, h, j((90, 160, 235)), j((170, 210, 240)))
    d = ImageDraw.Draw(img)
    d.rectangle([0, h * 0.4, w, h * 0.58], fill=j((30, 110, 170)))  # sea
    d.rectangle([0, h * 0.58, w, h], fill=j((230, 210, 150)))  # sand
    r = int(rng.integers(15, 35))
    sx = int(rng.integers(r, w - r))
    d.ellipse([sx - r, h * 0.08, sx + r, h * 0.08 + 2 * r], fill=(255, 240, 150))
    for y in np.arange(h * 0.42, h * 0.58, 9):
        d.line([0, y, w, y + rng.uniform(-3, 3)], fill=j((200, 220, 240)), width=1)
    return img


SCENES: dict[str, Callable[[np.random.Generator, Jitter, int, int], Image.Image]] = {
    "office": _office,
    "kitchen": _kitchen,
    "bedroom": _bedroom,
    "street": _street,
    "forest": _forest,
    "beach": _beach,
}


def _background(rng: np.random.Generator, scene: int, w: int, h: int) -> Image.Image:
    name = SCENE_CLASSES[scene]
    j = lambda c, a=25: _jitter(rng, c, a)  # noqa: E731
    img = SCENES[name](rng, j, w, h)
    # Clutter shared by every scene so that no single stroke gives a class away.
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 6)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        s = rng.integers(4, 18)
        shape = rng.integers(0, 3)
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if shape == 0:
            d.line(
                [x, y, x + rng.integers(-60, 60), y + rng.integers(-60, 60)],
                fill=col,
                width=int(rng.integers(1, 4)),
            )
        elif shape == 1:
            d.rectangle([x, y, x + s * 2, y + s], fill=col)
        else:
            d.ellipse([x, y, x + s, y + s * 2], outline=col, width=2)
    return img


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller of two boxes' bounding circles' squares (cheap, rough)."""
    ax0, ay0, ax1, ay1 = a.cx - a.w / 2, a.cy - a.h / 2, a.cx + a.w / 2, a.cy + a.h / 2
    bx0, by0, bx1, by1 = b.cx - b.w / 2, b.cy - b.h / 2, b.cx + b.w / 2, b.cy + b.h / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    return iw * ih / max(1e-6, min(a.w * a.h, b.w * b.h))


def render_scene(
    rng: np.random.Generator, *, max_objects: int = 8, size_range: tuple[int, int] = (320, 640)
) -> Sample:
    """Render one scene: background, 0..max_objects primitives, camera degradations."""
    w = int(rng.integers(size_range[0], size_range[1] + 1))
    aspect = rng.uniform(0.6, 1.6)
    h = int(np.clip(w / aspect, size_range[0] * 0.75, size_range[1]))
    scene = int(rng.integers(len(SCENE_CLASSES)))
    img = _background(rng, scene, w, h)
    draw = ImageDraw.Draw(img)
    az, el = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.2)
    # The direction the light travels: into the scene (+z), from a random side.
    light = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    light /= np.linalg.norm(light)
    boxes: list[Box] = []
    n = int(rng.integers(0, max_objects + 1))
    short = min(w, h)
    for _ in range(n * 4):
        if len(boxes) == n:
            break
        class_id = int(rng.integers(len(PRIMITIVE_CLASSES)))
        size = rng.uniform(0.1, 0.35) * short
        cx = rng.uniform(size * 0.6, w - size * 0.6)
        cy = rng.uniform(size * 0.6, h - size * 0.6)
        probe = Box(class_id, cx, cy, size, size, 0.0)
        if any(_overlap(probe, b) > 0.35 for b in boxes):
            continue
        if class_id == 0:
            box = _draw_sphere(img, rng, cx, cy, size, light)
        else:
            box = _draw_mesh(draw, rng, class_id, cx, cy, size, light)
        boxes.append(box)
    img = _degrade(rng, img)
    return Sample(image=img, scene=scene, boxes=boxes)


def _degrade(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.6))))
    arr = np.asarray(img).astype(np.float32)
    arr = arr * rng.uniform(0.7, 1.25) + rng.uniform(-25, 25)  # exposure
    arr += rng.normal(0, rng.uniform(0, 10), size=arr.shape)  # sensor noise
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(35, 96)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render_jpeg(seed: int, **kwargs) -> tuple[bytes, Sample]:
    """Render the scene for ``seed`` and return it encoded as JPEG bytes (for tests and benches)."""
    sample = render_scene(np.random.default_rng(seed), **kwargs)
    buf = io.BytesIO()
    sample.image.save(buf, format="JPEG", quality=92)
    return buf.getvalue(), sample
