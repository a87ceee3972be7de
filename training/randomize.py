"""Domain randomization for the painter's-algorithm renderer (``training/render.py``).

``render_randomized(rng)`` draws the same five primitives as ``render_scene`` but makes
everything a model could use instead of the shapes vary: objects and surfaces carry
procedural textures (noise, stripes, checkerboards, gradients, wood, marble, fabric, dots);
half the backgrounds are rooms with a textured ground plane in perspective, walls and
corners (the other half the six scene backgrounds, so the scene label stays meaningful);
one to three coloured lights give shading, specular highlights and cast shadows; the
camera's field of view (the mesh's perspective), roll (the horizon) and elevation vary;
objects overlap strongly, are cut by the border and range from tiny to most of the frame;
distractors that are not primitives (tori, ellipsoids, capsules, prisms, blobs, text,
lines, people-like silhouettes) are drawn and never labelled; some scenes are empty; the
camera adds motion blur, defocus, colour jitter, noise and JPEG artefacts.

Labels follow the project's convention (README "Box convention"), computed from each
object's silhouette inside the frame, occluded parts included: spheres an axis-aligned
rectangle, cubes the minimum-area rectangle, cylinders, cones and pyramids the rectangle
whose ``h`` side follows the projected symmetry axis. Objects under a fifth visible or
smaller than 8x8 pixels are left unlabelled.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.render import (
    MESHES,
    PRIMITIVE_CLASSES,
    SCENE_CLASSES,
    Box,
    Sample,
    _background,
    _rotation,
)

NO_SCENE = -1  # rooms: not one of the six scene classes

# ---------------------------------------------------------------------------------------
# Textures over plane coordinates (u, v): arrays of any shape -> RGB float in [0, 1]
# ---------------------------------------------------------------------------------------

TEXTURES = ("plain", "noise", "stripes", "checker", "gradient", "wood", "marble", "fabric", "dots")


def _value_noise(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cells: float
) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice sampled bilinearly at (u, v) * cells."""
    n = 64
    grid = rng.random((n, n)).astype(np.float32)
    x = (u * cells) % (n - 1)
    y = (v * cells) % (n - 1)
    return cv2.remap(
        grid,
        x.astype(np.float32),
        y.astype(np.float32),
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_WRAP,
    ).clip(0, 1)


def _texture(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, kind: str | None = None
) -> np.ndarray:
    kind = kind or str(rng.choice(TEXTURES, p=[0.22] + [0.78 / 8] * 8))
    a = rng.uniform(0.05, 0.95, size=3)
    b = np.clip(a + rng.normal(0, 0.35, size=3), 0, 1)
    freq = float(np.exp(rng.uniform(math.log(3), math.log(30))))
    angle = rng.uniform(0, math.pi)
    along = u * math.cos(angle) + v * math.sin(angle)
    across = -u * math.sin(angle) + v * math.cos(angle)
    if kind == "plain":
        t = np.zeros_like(u)
    elif kind == "noise":
        t = _value_noise(rng, u, v, freq) * 0.7 + _value_noise(rng, u, v, freq * 3) * 0.3
    elif kind == "stripes":
        t = (np.sin(along * freq * math.pi) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    elif kind == "checker":
        t = ((np.floor(along * freq / 2) + np.floor(across * freq / 2)) % 2).astype(np.float32)
    elif kind == "gradient":
        t = np.clip(along * 0.7 + 0.5, 0, 1)
    elif kind == "wood":
        warp = _value_noise(rng, u, v, 4) * 2
        t = (np.sin((np.hypot(along - 0.3, across * 0.15) * freq + warp) * math.pi) + 1) / 2
    elif kind == "marble":
        turb = _value_noise(rng, u, v, 5) * 4 + _value_noise(rng, u, v, 11) * 2
        t = (np.sin(along * freq * 0.5 + turb) + 1) / 2
    elif kind == "fabric":
        t = 0.5 + 0.25 * np.sin(along * freq * 8) + 0.25 * np.sin(across * freq * 8)
        t *= 0.7 + 0.3 * _value_noise(rng, u, v, freq)
    else:  # dots
        gu, gv = along * freq / 2, across * freq / 2
        t = (np.hypot(gu - np.round(gu), gv - np.round(gv)) < 0.28).astype(np.float32)
    t = t[..., None]
    return (a * (1 - t) + b * t).astype(np.float32)


def _flat_texture(rng: np.random.Generator, w: int, h: int, kind: str | None = None) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) / max(w, h)
    return _texture(rng, u, v, kind)


# ---------------------------------------------------------------------------------------
# Backgrounds: rooms in perspective, or the six scene backgrounds
# ---------------------------------------------------------------------------------------


def _room(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A ground plane in perspective under a horizon (camera elevation), walls and a corner."""
    horizon = h * rng.uniform(-0.2, 0.55)  # high elevation puts the horizon above the frame
    focal = w / 2 / math.tan(math.radians(rng.uniform(30, 80)) / 2)
    cam_h = 1.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    below = ys > horizon + 1
    depth = np.where(below, focal * cam_h / np.maximum(ys - horizon, 1), 1e3)
    gu = (xs - w / 2) * depth / focal
    ground = _texture(rng, gu * 0.4, depth * 0.4)
    fade = np.clip(depth / rng.uniform(15, 40), 0, 1)[..., None]
    sky = _texture(rng, xs / w, ys / h, str(rng.choice(["gradient", "plain", "noise"])))
    img = np.where(below[..., None], ground * (1 - fade) + sky.mean(axis=(0, 1)) * fade, sky)
    # Walls: one or two vertical planes meeting at a corner, standing on the ground.
    if rng.random() < 0.7:
        corner = rng.uniform(-0.2, 1.2) * w
        base = horizon + h * rng.uniform(0.05, 0.35)
        top = base - h * rng.uniform(0.5, 1.2)
        for side in (-1, 1):
            if rng.random() < 0.3:
                continue
            slope = rng.uniform(0.0, 0.35) * side
            wall_base = base + (xs - corner) * slope
            on_side = (xs - corner) * side >= 0
            inside = on_side & (ys <= wall_base) & (ys >= top - (xs - corner) * slope * 0.5)
            wall = _texture(rng, (xs - corner) / w, ys / h)
            shade = rng.uniform(0.6, 1.1)
            img = np.where(inside[..., None], wall * shade, img)
            edge = np.abs(ys - wall_base) < 1.5
            img = np.where((edge & on_side)[..., None], img * 0.6, img)
    return np.clip(img, 0, 1)


def _rolled(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera roll on the background only: rotate and scale up so no border shows."""
    deg = rng.normal(0, 10)
    h, w = img.shape[:2]
    rad = math.radians(abs(deg))
    scale = math.cos(rad) + math.sin(rad) * max(w / h, h / w)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


# ---------------------------------------------------------------------------------------
# Lights and shading
# ---------------------------------------------------------------------------------------


def _lights(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(int(rng.integers(1, 4))):
        az, el = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.3)
        direction = np.array(
            [math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)]
        )  # travelling into the scene (+z)
        colour = np.clip(rng.normal(1, 0.15, size=3), 0.6, 1.3) * rng.uniform(0.4, 0.9)
        out.append((direction / np.linalg.norm(direction), colour))
    return out


def _shade_normals(normals: np.ndarray, lights, ambient: float, shine: float) -> np.ndarray:
    """RGB light factor (…, 3) and a specular term for unit normals (…, 3) facing -z."""
    out = np.full(normals.shape[:-1] + (3,), ambient, dtype=np.float32)
    spec = np.zeros(normals.shape[:-1], dtype=np.float32)
    view = np.array([0.0, 0.0, -1.0])
    for direction, colour in lights:
        lambert = np.clip(-(normals @ direction), 0, None)
        out += lambert[..., None] * colour
        half = view - direction
        half /= np.linalg.norm(half)
        spec += np.clip(normals @ half, 0, None) ** 30 * shine * float(colour.mean())
    return out, spec


# ---------------------------------------------------------------------------------------
# Objects: each returns (mask, rgb, extra) on the full canvas
# ---------------------------------------------------------------------------------------


def _mesh_layer(rng, w, h, verts, faces, cx, cy, size, lights, ambient, stretch=None):
    """Rasterise a rotated mesh: (mask, per-pixel light (h, w, 3), specular, pts, rot)."""
    stretch = np.ones(3) if stretch is None else stretch
    rot = _rotation(rng.uniform(-0.9, 0.9), rng.uniform(-0.9, 0.9), rng.uniform(0, 2 * math.pi))
    return _mesh_with(rng, w, h, verts, faces, cx, cy, size, lights, ambient, stretch, rot)


def _mesh_with(rng, w, h, verts, faces, cx, cy, size, lights, ambient, stretch, rot):
    world = (verts * stretch) @ rot.T
    depth = 6.0
    focal = rng.uniform(3.0, 12.0)  # field of view: strong to weak perspective
    z = world[:, 2] + depth
    proj = world[:, :2] * (focal / z)[:, None]
    span = float(np.ptp(proj, axis=0).max())
    pts = proj / span * size + [cx, cy]
    face_img = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(face_img)
    order = sorted(range(len(faces)), key=lambda i: -world[faces[i], 2].mean())
    normals = np.zeros((len(faces) + 1, 3))
    normals[0] = [0, 0, -1]
    for i in order:
        face = faces[i]
        a, b, c = world[face[0]], world[face[1]], world[face[2]]
        n = np.cross(b - a, c - a)
        n /= np.linalg.norm(n) + 1e-9
        if np.dot(n, world[face].mean(axis=0) + [0, 0, depth]) >= 0:
            continue
        normals[i + 1] = n
        draw.polygon([tuple(p) for p in pts[face]], fill=i + 1)
    ids = np.asarray(face_img)
    light, spec = _shade_normals(normals, lights, ambient, rng.uniform(0, 1))
    return ids > 0, light[ids], spec[ids], pts, (world, rot, focal, span, depth, stretch)


def _sphere_layer(rng, w, h, cx, cy, rx, ry, angle, lights, ambient):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    lx = ((xs - cx) * c + (ys - cy) * s) / rx
    ly = (-(xs - cx) * s + (ys - cy) * c) / ry
    r2 = lx**2 + ly**2
    mask = r2 <= 1
    nz = -np.sqrt(np.clip(1 - r2, 0, 1))
    normals = np.stack([lx * c - ly * s, lx * s + ly * c, nz], axis=-1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-9
    light, spec = _shade_normals(normals, lights, ambient, rng.uniform(0.2, 1))
    return mask, light, spec


def _torus_layer(rng, w, h, cx, cy, size, lights, ambient):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, tilt = rng.uniform(0, math.pi), rng.uniform(0.25, 1.0)
    c, s = math.cos(angle), math.sin(angle)
    lx = ((xs - cx) * c + (ys - cy) * s) / (size / 2)
    ly = (-(xs - cx) * s + (ys - cy) * c) / (size / 2 * tilt)
    rho = np.hypot(lx, ly)
    tube = rng.uniform(0.18, 0.35)
    t = (rho - (1 - tube)) / tube
    mask = np.abs(t) <= 1
    nz = -np.sqrt(np.clip(1 - t**2, 0, 1))
    radial = np.stack([lx / (rho + 1e-6), ly / (rho + 1e-6)], -1) * t[..., None]
    normals = np.concatenate([radial, nz[..., None]], -1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-9
    light, spec = _shade_normals(normals, lights, ambient, rng.uniform(0, 1))
    return mask, light, spec


def _capsule_layer(rng, w, h, cx, cy, size, lights, ambient):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    half, r = size / 2, size * rng.uniform(0.08, 0.2)
    lx = (xs - cx) * c + (ys - cy) * s
    ly = -(xs - cx) * s + (ys - cy) * c
    dx = np.clip(np.abs(lx) - (half - r), 0, None)
    d = np.hypot(dx, ly) / r
    mask = d <= 1
    nz = -np.sqrt(np.clip(1 - d**2, 0, 1))
    n = np.stack([np.sign(lx) * dx / r, ly / r, nz], -1)
    n = np.stack([n[..., 0] * c - n[..., 1] * s, n[..., 0] * s + n[..., 1] * c, n[..., 2]], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-9
    light, spec = _shade_normals(n, lights, ambient, rng.uniform(0, 1))
    return mask, light, spec


def _prism_mesh(sides: int, length: float):
    a = np.linspace(0, 2 * math.pi, sides, endpoint=False)
    ring = np.column_stack([np.cos(a), np.sin(a)])
    v = np.vstack(
        [
            np.column_stack([ring, np.full(sides, -length)]),
            np.column_stack([ring, np.full(sides, length)]),
        ]
    )
    faces = [[i, (i + 1) % sides, sides + (i + 1) % sides, sides + i] for i in range(sides)]
    faces += [list(range(sides))[::-1], list(range(sides, 2 * sides))]
    return v, faces


def _blob_mask(rng, w, h, cx, cy, size) -> np.ndarray:
    k = int(rng.integers(7, 14))
    a = np.sort(rng.uniform(0, 2 * math.pi, size=k))
    r = size / 2 * rng.uniform(0.45, 1.0, size=k)
    pts = np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)]).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [pts], 255)
    blur = max(3, int(size * 0.15) | 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0) > 127


def _flat_mask(rng, w, h, cx, cy, size) -> np.ndarray:
    """A flat outline: a triangle, a quadrilateral or an ellipse, turned at random. With flat
    light it is a primitive's silhouette without the shading that makes it a solid."""
    kind = int(rng.integers(3))
    mask = np.zeros((h, w), np.uint8)
    turn = rng.uniform(0, 2 * math.pi)
    if kind == 2:
        axes = (max(1, int(size / 2)), max(1, int(size / 2 * rng.uniform(0.4, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, math.degrees(turn), 0, 360, 255, -1)
        return mask > 0
    corners = 3 + kind
    a = turn + np.arange(corners) * 2 * math.pi / corners + rng.uniform(-0.3, 0.3, corners)
    r = size / 2 * rng.uniform(0.7, 1.0, size=corners)
    pts = np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)]).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255)
    return mask > 0


SKIN = [(224, 172, 140), (198, 134, 100), (141, 85, 54), (255, 219, 172), (110, 70, 45)]


def _person(rng, canvas: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """A people-like silhouette: round head with hair and face, neck, shoulders, torso."""
    h, w = canvas.shape[:2]
    img = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    skin = np.array(SKIN[int(rng.integers(len(SKIN)))]) * rng.uniform(0.8, 1.1)
    skin = tuple(int(v) for v in np.clip(skin, 0, 255))
    cloth = tuple(int(v) for v in rng.integers(0, 256, size=3))
    hair = tuple(int(v) for v in rng.integers(0, 90, size=3))
    head = size * rng.uniform(0.16, 0.26)
    top = cy - size / 2
    hx, hy = cx, top + head
    # torso and shoulders
    d.rounded_rectangle(
        [cx - size * 0.4, hy + head * 1.5, cx + size * 0.4, cy + size],
        radius=int(size * 0.15),
        fill=cloth,
    )
    d.rectangle([cx - head * 0.35, hy + head * 0.6, cx + head * 0.35, hy + head * 1.7], fill=skin)
    # head with hair and a face
    d.ellipse([hx - head * 0.85, hy - head, hx + head * 0.85, hy + head], fill=skin)
    if rng.random() < 0.8:
        d.chord(
            [hx - head * 0.9, hy - head * 1.1, hx + head * 0.9, hy + head * 0.6],
            180,
            360,
            fill=hair,
        )
    eye = max(1, int(head * 0.12))
    for ex in (-0.35, 0.35):
        d.ellipse(
            [hx + ex * head - eye, hy - eye, hx + ex * head + eye, hy + eye], fill=(30, 30, 30)
        )
    d.line(
        [hx - head * 0.3, hy + head * 0.5, hx + head * 0.3, hy + head * 0.5],
        fill=(120, 40, 40),
        width=max(1, int(head * 0.08)),
    )
    return np.asarray(img).astype(np.float32) / 255


def _text(rng, canvas: np.ndarray) -> np.ndarray:
    img = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    words = ["SALE", "OPEN", "exit", "Cafe", "42", "STOP", "hello", "Ray", "OK", "No. 7"]
    font = ImageFont.load_default(size=float(rng.uniform(10, 60)))
    x, y = rng.uniform(0, canvas.shape[1] * 0.8), rng.uniform(0, canvas.shape[0] * 0.9)
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    d.text((x, y), str(rng.choice(words)), fill=colour, font=font)
    return np.asarray(img).astype(np.float32) / 255


def _lines(rng, canvas: np.ndarray) -> np.ndarray:
    img = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    h, w = canvas.shape[:2]
    for _ in range(int(rng.integers(1, 6))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        pts = [
            (float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(rng.integers(2, 5))
        ]
        d.line(pts, fill=colour, width=int(rng.integers(1, 8)))
    return np.asarray(img).astype(np.float32) / 255


# ---------------------------------------------------------------------------------------
# Labels from silhouettes
# ---------------------------------------------------------------------------------------


def _label(class_id: int, mask: np.ndarray, axis: np.ndarray | None) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) < 64:
        return None
    pts = np.column_stack([xs + 0.5, ys + 0.5]).astype(np.float32)
    if class_id == 0:
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return Box(0, (x0 + x1) / 2, (y0 + y1) / 2, float(x1 - x0), float(y1 - y0), 0.0)
    if axis is None or np.linalg.norm(axis) < 1.0:
        (cx, cy), (bw, bh), deg = cv2.minAreaRect(pts)
        return Box(class_id, float(cx), float(cy), bw + 1, bh + 1, math.radians(deg))
    angle = math.atan2(axis[1], axis[0]) - math.pi / 2
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    centre = pts.mean(axis=0)
    local = (pts - centre) @ rot
    lo, hi = local.min(axis=0) - 0.5, local.max(axis=0) + 0.5
    mid = centre + rot @ ((lo + hi) / 2)
    return Box(
        class_id, float(mid[0]), float(mid[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]), angle
    )


# ---------------------------------------------------------------------------------------
# The scene
# ---------------------------------------------------------------------------------------

DISTRACTORS = ("torus", "ellipsoid", "capsule", "prism", "blob", "person", "text", "lines")


def render_randomized(
    rng: np.random.Generator,
    *,
    max_objects: int = 8,
    size_range: tuple[int, int] = (320, 512),
    distractors_only: bool = False,
    photo_backgrounds: Sequence[Image.Image] = (),
    distractors: Sequence[str] = DISTRACTORS,
    distractor_count: tuple[int, int] = (0, 3),
    class_weights: Sequence[float] | None = None,
    object_scale: tuple[float, float] = (0.06, 0.8),
) -> Sample:
    """One randomized scene; ``scene`` is ``NO_SCENE`` for rooms and photographs.

    ``photo_backgrounds``: photographs a share of the scenes use as their background (a
    random crop); pass only photographs set aside for training. ``distractors`` are the kinds
    drawn, ``distractor_count`` how many (inclusive) beside primitives, and
    ``class_weights`` how often each primitive class is (default: equally often);
    ``object_scale`` bounds each object's size as a share of the shorter side (log-uniform)."""
    w = int(rng.integers(size_range[0], size_range[1] + 1))
    h = int(np.clip(w / rng.uniform(0.6, 1.6), size_range[0] * 0.75, size_range[1]))
    scene, canvas = _scene_canvas(rng, w, h, photo_backgrounds)
    if rng.random() < 0.5:
        canvas = _rolled(rng, canvas)
    lights = _lights(rng)
    ambient = float(rng.uniform(0.15, 0.45))
    short = min(w, h)

    n_prim = 0 if distractors_only or rng.random() < 0.1 else int(rng.integers(1, max_objects + 1))
    low, high = distractor_count
    n_dis = int(rng.integers(1, 6)) if distractors_only else int(rng.integers(low, high + 1))
    plan = [("p", _primitive_class(rng, class_weights)) for _ in range(n_prim)]
    plan += [("d", str(rng.choice(distractors))) for _ in range(n_dis)]
    order = rng.permutation(len(plan))

    ids = np.full((h, w), -1, dtype=np.int32)
    objects: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # (class, mask, axis)
    low_size, high_size = math.log(object_scale[0]), math.log(object_scale[1])
    for k in order:
        what, which = plan[k]
        size = float(np.exp(rng.uniform(low_size, high_size))) * short
        cut = rng.random() < 0.2
        margin = -0.3 * size if cut else 0.5 * size
        cx = rng.uniform(margin, w - margin) if w > 2 * margin else w / 2
        cy = rng.uniform(margin, h - margin) if h > 2 * margin else h / 2
        if what == "d" and which in ("person", "text", "lines"):
            before = canvas = np.round(np.clip(canvas, 0, 1) * 255) / 255
            if which == "person":
                canvas = _person(rng, canvas, cx, cy, size * 1.5)
            elif which == "text":
                canvas = _text(rng, canvas)
            else:
                canvas = _lines(rng, canvas)
            ids[np.any(np.abs(canvas - before) > 0.5 / 255, axis=-1)] = -2
            continue
        mask, light, spec, axis = _object_layer(
            rng, what, which, w, h, cx, cy, size, lights, ambient
        )
        if not mask.any():
            continue
        # Cast shadow: the silhouette pushed away from the light, darkening what is below.
        if rng.random() < 0.7:
            direction = lights[0][0]
            shift = np.array([direction[0], direction[1]]) * size * rng.uniform(0.1, 0.5)
            m = np.float32([[1, 0, shift[0]], [0, 1, shift[1] + size * 0.1]])
            shadow = cv2.warpAffine(mask.astype(np.float32), m, (w, h))
            shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, size * 0.05))
            canvas = canvas * (1 - rng.uniform(0.25, 0.6) * shadow[..., None])
        texture = _flat_texture(rng, w, h)
        colour = texture * light + spec[..., None]
        canvas = np.where(mask[..., None], colour, canvas)
        ids[mask] = len(objects) if what == "p" else -2
        objects.append((which if what == "p" else -1, mask, axis))

    boxes = _visible_boxes(objects, ids)
    return Sample(image=_camera(rng, canvas), scene=scene, boxes=boxes)


def _primitive_class(rng: np.random.Generator, weights: Sequence[float] | None) -> int:
    if weights is None:
        return int(rng.integers(len(PRIMITIVE_CLASSES)))
    p = np.asarray(weights, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def _scene_canvas(
    rng: np.random.Generator, w: int, h: int, photo_backgrounds: Sequence[Image.Image]
) -> tuple[int, np.ndarray]:
    """The scene class and the float canvas behind the objects: a photograph's crop, a
    scene of the first renderer, or a room (neither of them a scene class)."""
    if photo_backgrounds and rng.random() < 0.15:
        scene = NO_SCENE
        photo = photo_backgrounds[int(rng.integers(len(photo_backgrounds)))]
        pw, ph = photo.size
        share = rng.uniform(0.3, 1.0)
        cw, ch = max(16, int(pw * share)), max(16, int(ph * share))
        x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        crop = photo.crop((x, y, x + cw, y + ch)).resize((w, h))
        canvas = np.asarray(crop).astype(np.float32) / 255
    elif rng.random() < 0.5:
        scene = int(rng.integers(len(SCENE_CLASSES)))
        canvas = np.asarray(_background(rng, scene, w, h)).astype(np.float32) / 255
    else:
        scene = NO_SCENE
        canvas = _room(rng, w, h).astype(np.float32)
    return scene, canvas


def _object_layer(
    rng: np.random.Generator,
    what: str,
    which: Any,
    w: int,
    h: int,
    cx: float,
    cy: float,
    size: float,
    lights: Any,
    ambient: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One object (``what`` "p": primitive class ``which``; "d": a distractor) drawn alone:
    its mask, light, specular and, for a cylinder, cone or pyramid, its axis on screen."""
    axis = None
    if what == "p" and which == 0:
        r = size / 2
        mask, light, spec = _sphere_layer(rng, w, h, cx, cy, r, r, 0.0, lights, ambient)
    elif what == "p":
        verts, faces = MESHES[which]
        stretch = np.array([1.0, 1.0, rng.uniform(0.8, 1.8)]) if which in (2, 3) else None
        if which in (2, 3, 4):
            rot = _rotation(
                rng.uniform(-0.9, 0.9),
                rng.uniform(math.pi / 2 - 0.8, math.pi / 2 + 0.6),
                rng.uniform(0, 2 * math.pi),
            )
            mask, light, spec, _, geo = _mesh_with(
                rng,
                w,
                h,
                verts,
                faces,
                cx,
                cy,
                size,
                lights,
                ambient,
                np.ones(3) if stretch is None else stretch,
                rot,
            )
            world, rot, focal, span, depth, st = geo
            ends = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]) * st @ rot.T
            ends_2d = ends[:, :2] * (focal / (ends[:, 2] + depth))[:, None] / span * size
            axis = ends_2d[1] - ends_2d[0]
        else:
            mask, light, spec, _, _ = _mesh_layer(
                rng, w, h, verts, faces, cx, cy, size, lights, ambient
            )
    elif which == "torus":
        mask, light, spec = _torus_layer(rng, w, h, cx, cy, size, lights, ambient)
    elif which == "ellipsoid":
        mask, light, spec = _sphere_layer(
            rng,
            w,
            h,
            cx,
            cy,
            size / 2,
            size / 2 / rng.uniform(1.7, 3.0),
            rng.uniform(0, math.pi),
            lights,
            ambient,
        )
    elif which == "capsule":
        mask, light, spec = _capsule_layer(rng, w, h, cx, cy, size, lights, ambient)
    elif which == "prism":
        verts, faces = _prism_mesh(int(rng.choice([3, 5])), rng.uniform(0.5, 2.0))
        mask, light, spec, _, _ = _mesh_layer(
            rng, w, h, verts, faces, cx, cy, size, lights, ambient
        )
    elif which == "flat":  # lit evenly, or along one direction
        mask = _flat_mask(rng, w, h, cx, cy, size)
        v, u = np.mgrid[0:h, 0:w].astype(np.float32) / max(size, 1.0)
        turn = rng.uniform(0, 2 * math.pi)
        ramp = (u * math.cos(turn) + v * math.sin(turn)) * rng.uniform(0.0, 0.3)
        ramp -= ramp[mask].mean() if mask.any() else 0.0
        light = np.repeat((0.5 + ambient + ramp)[..., None], 3, axis=-1)
        spec = np.zeros((h, w), np.float32)
    else:  # blob
        mask = _blob_mask(rng, w, h, cx, cy, size)
        light = np.full((h, w, 3), 0.5 + ambient, np.float32)
        spec = np.zeros((h, w), np.float32)
    return mask, light, spec, axis


def _visible_boxes(
    objects: list[tuple[int, np.ndarray, np.ndarray | None]], ids: np.ndarray
) -> list[Box]:
    """Labels of the primitives still visible enough (a fifth of their pixels) after the
    objects drawn over them."""
    boxes: list[Box] = []
    for k, (class_id, mask, axis) in enumerate(objects):
        if class_id < 0:
            continue
        visible = int((ids == k).sum())
        if visible < 0.2 * mask.sum():
            continue
        box = _label(class_id, mask, axis)
        if box is not None:
            boxes.append(box)
    return boxes


def _camera(rng: np.random.Generator, canvas: np.ndarray) -> Image.Image:
    img = np.clip(canvas, 0, 1) * 255
    if rng.random() < 0.2:  # motion blur
        k = int(rng.integers(3, 12))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.8)))
    # Colour jitter: white balance, saturation, exposure, gamma; sometimes grey.
    img = img * rng.uniform(0.8, 1.2, size=3)
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (img - grey) * (0.0 if rng.random() < 0.08 else rng.uniform(0.5, 1.4))
    img = img * rng.uniform(0.7, 1.25) + rng.uniform(-25, 25)
    img = 255 * np.clip(img / 255, 0, 1) ** rng.uniform(0.75, 1.35)
    img += rng.normal(0, rng.uniform(0, 9), size=img.shape)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(35, 96)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")
