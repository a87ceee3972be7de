"""A second, independent renderer: a numpy ray-caster of primitives standing in a 3-D room.

It shares no code with ``training/render.py`` (the painter's-algorithm generator): here a
pinhole camera with a random field of view, elevation and roll casts one ray per pixel (at
twice the output resolution, averaged down) into a world with a textured ground plane, up to
two textured walls and a sky; every object is intersected analytically (quadrics, and convex
polyhedra by clipping the ray against their faces), shaded by one to three coloured lights
with Blinn-Phong highlights and ray-traced shadows, and textured procedurally in its own
frame. Distractors (ellipsoids, capsules, prisms) are rendered the same way and never
labelled.

Labels follow the project's box convention, computed from what the camera sees of each
object's whole silhouette (occluded parts included, the part outside the frame not):

- sphere: the axis-aligned rectangle around the silhouette (``angle`` 0);
- cube: the minimum-area rotated rectangle around the silhouette;
- cylinder, cone, pyramid: the rectangle around the silhouette with its ``h`` side along the
  projected symmetry axis.

An object less than a fifth visible, or smaller than 8x8 pixels, is left unlabelled.

Usage: ``raycast_scene(np.random.default_rng(seed))`` → ``RaySample(image, boxes)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

# The label order of the data set (checked against the other renderer by the tests).
CLASS_NAMES = ("sphere", "cube", "cylinder", "cone", "pyramid")
INF = np.float32(np.inf)


@dataclass(frozen=True)
class RayBox:
    """An oriented label: class index, centre, sides (pixels) and angle (radians, clockwise)."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def corners(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        local = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * [self.w, self.h]
        return local @ np.array([[c, s], [-s, c]]) + [self.cx, self.cy]


@dataclass(frozen=True)
class RaySample:
    image: Image.Image
    boxes: list[RayBox]


# ---------------------------------------------------------------------------------------
# Procedural textures: f(points (N, 3), rng-drawn parameters) -> RGB (N, 3) in [0, 1]
# ---------------------------------------------------------------------------------------


def _lattice_noise(p: np.ndarray, seed: int, scale: float) -> np.ndarray:
    """Smooth value noise in 3-D (trilinear over a hashed integer lattice), in [0, 1]."""
    q = p * scale
    i = np.floor(q).astype(np.int64)
    f = q - i
    f = f * f * (3 - 2 * f)

    def corner(dx: int, dy: int, dz: int) -> np.ndarray:
        h = (i[:, 0] + dx) * 73856093 ^ (i[:, 1] + dy) * 19349663 ^ (i[:, 2] + dz) * 83492791
        h = (h ^ seed * 2654435761) & 0xFFFFFFFF
        h = (h * 1103515245 + 12345) & 0x7FFFFFFF
        return (h % 10007) / 10006.0

    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                wx = f[:, 0] if dx else 1 - f[:, 0]
                wy = f[:, 1] if dy else 1 - f[:, 1]
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out += wx * wy * wz * corner(dx, dy, dz)
    return out


def _fbm(p: np.ndarray, seed: int, scale: float, octaves: int = 3) -> np.ndarray:
    total, amp, norm = np.zeros(len(p)), 1.0, 0.0
    for o in range(octaves):
        total += amp * _lattice_noise(p, seed + o * 17, scale * 2**o)
        norm += amp
        amp *= 0.5
    return total / norm


@dataclass
class Texture:
    kind: str
    a: np.ndarray
    b: np.ndarray
    scale: float
    seed: int
    axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))

    @classmethod
    def random(cls, rng: np.random.Generator, plain_share: float = 0.3) -> Texture:
        kinds = ["checker", "stripes", "noise", "wood", "marble", "fabric", "gradient", "dots"]
        kind = "plain" if rng.random() < plain_share else str(rng.choice(kinds))
        a = rng.uniform(0.05, 0.95, size=3)
        b = np.clip(a + rng.normal(0, 0.35, size=3), 0.02, 0.98)
        axis = rng.normal(size=3)
        return cls(
            kind,
            a,
            b,
            float(rng.uniform(1.5, 9.0)),
            int(rng.integers(1 << 20)),
            axis / np.linalg.norm(axis),
        )

    def __call__(self, p: np.ndarray) -> np.ndarray:
        s, t = self.scale, None
        if self.kind == "plain":
            t = np.zeros(len(p))
        elif self.kind == "checker":
            t = (np.floor(p[:, 0] * s) + np.floor(p[:, 1] * s) + np.floor(p[:, 2] * s)) % 2
        elif self.kind == "stripes":
            t = (np.sin(p @ self.axis * s * math.pi) > 0).astype(float)
        elif self.kind == "noise":
            t = _fbm(p, self.seed, s)
        elif self.kind == "wood":
            r = np.linalg.norm(p - np.outer(p @ self.axis, self.axis), axis=1)
            t = (np.sin((r * s * 4 + 2 * _fbm(p, self.seed, 2.0)) * math.pi) + 1) / 2
        elif self.kind == "marble":
            t = (np.sin((p @ self.axis) * s + 6 * _fbm(p, self.seed, 1.5, 4)) + 1) / 2
        elif self.kind == "fabric":
            u = np.sin(p[:, 0] * s * 12) * np.sin(p[:, 2] * s * 12 + p[:, 1] * s * 12)
            t = 0.5 + 0.5 * u * (0.6 + 0.4 * _lattice_noise(p, self.seed, s))
        elif self.kind == "gradient":
            t = np.clip((p @ self.axis) * 0.5 + 0.5, 0, 1)
        else:  # dots
            q = p * s
            t = (np.linalg.norm(q - np.round(q), axis=1) < 0.3).astype(float)
        return self.a[None, :] * (1 - t[:, None]) + self.b[None, :] * t[:, None]


# ---------------------------------------------------------------------------------------
# Shapes, in their own frame; the world frame has y up and the ground at y = 0
# ---------------------------------------------------------------------------------------


def _halfspaces_cube() -> np.ndarray:
    n = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    return np.column_stack([n, np.ones(6)])  # n·x <= d


def _halfspaces_pyramid(height: float) -> np.ndarray:
    """Square base |x|,|z| <= 1 at y = -height/2, apex at y = +height/2."""
    planes = [[0.0, -1.0, 0.0, height / 2]]
    for nx, nz in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        n = np.array([nx * height, 1.0, nz * height])
        apex = np.array([0.0, height / 2, 0.0])
        planes.append([*n, float(n @ apex)])
    return np.array(planes)


def _halfspaces_prism(sides: int, half_len: float) -> np.ndarray:
    """A ``sides``-gonal prism around the y axis, radius 1, length 2*half_len."""
    planes = [[0.0, 1.0, 0.0, half_len], [0.0, -1.0, 0.0, half_len]]
    for k in range(sides):
        a = 2 * math.pi * k / sides
        planes.append([math.cos(a), 0.0, math.sin(a), math.cos(math.pi / sides)])
    return np.array(planes)


def _hit_convex(o: np.ndarray, d: np.ndarray, planes: np.ndarray):
    """Ray entry into the intersection of half-spaces n·x <= c (Cyrus-Beck clipping)."""
    n, c = planes[:, :3], planes[:, 3]
    num = c[None, :] - o @ n.T  # (N, P)
    den = d @ n.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / den
    entering = den < 0
    t_in = np.where(entering, t, -np.inf).max(axis=1)
    t_out = np.where(den > 0, t, np.inf).min(axis=1)
    parallel_out = ((np.abs(den) < 1e-12) & (num < 0)).any(axis=1)
    hit = (t_in <= t_out) & (t_out > 1e-4) & ~parallel_out & (t_in > 1e-4)
    face = np.where(entering, t, -np.inf).argmax(axis=1)
    return np.where(hit, t_in, np.inf), n[face]


def _solve_quadratic(a, b, c):
    disc = b * b - 4 * a * c
    ok = disc >= 0
    root = np.sqrt(np.where(ok, disc, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (-b - root) / (2 * a)
        t1 = (-b + root) / (2 * a)
    return ok, t0, t1


def _hit_ellipsoid(o, d, radii):
    oo, dd = o / radii, d / radii
    ok, t0, t1 = _solve_quadratic((dd * dd).sum(1), 2 * (oo * dd).sum(1), (oo * oo).sum(1) - 1)
    t = np.where(ok & (t0 > 1e-4), t0, np.where(ok & (t1 > 1e-4), t1, np.inf))
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    return t, p / radii**2


def _hit_cylinder(o, d, half_len):
    """Radius 1 around the y axis, |y| <= half_len, with caps."""
    ok, t0, t1 = _solve_quadratic(
        d[:, 0] ** 2 + d[:, 2] ** 2,
        2 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]),
        o[:, 0] ** 2 + o[:, 2] ** 2 - 1,
    )
    best = np.full(len(o), np.inf)
    normal = np.zeros_like(o)
    for t in (t0, t1):
        y = o[:, 1] + t * d[:, 1]
        good = ok & (t > 1e-4) & (np.abs(y) <= half_len) & (t < best)
        best = np.where(good, t, best)
        p = o + d * np.where(good, t, 0)[:, None]
        normal = np.where(good[:, None], p * [1, 0, 1], normal)
    for sign in (1.0, -1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (sign * half_len - o[:, 1]) / d[:, 1]
        p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
        good = (t > 1e-4) & (p[:, 0] ** 2 + p[:, 2] ** 2 <= 1) & (t < best)
        best = np.where(good, t, best)
        normal = np.where(good[:, None], np.array([0.0, sign, 0.0]), normal)
    return best, normal


def _hit_capsule(o, d, half_len, radius):
    """A rod along y: radius ``radius``, straight part |y| <= half_len, round ends."""
    t_side, n_side = _hit_cylinder(o / radius, d / radius, half_len / radius)
    # _hit_cylinder includes flat caps: drop those hits, the round ends replace them.
    side = np.isfinite(t_side) & (np.abs(n_side[:, 1]) < 0.5)
    best = np.where(side, t_side, np.inf)
    normal = np.where(side[:, None], n_side, 0.0)
    for end in (half_len, -half_len):
        shift = np.array([0.0, end, 0.0])
        t, n = _hit_ellipsoid(o - shift, d, np.full(3, radius))
        good = np.isfinite(t) & (t < best)
        best = np.where(good, t, best)
        normal = np.where(good[:, None], n, normal)
    return best, normal


def _hit_cone(o, d, height):
    """Base radius 1 at y = -height/2, apex at y = +height/2, with its base cap."""
    k = 1.0 / height
    apex = height / 2
    oy = o[:, 1] - apex
    a = d[:, 0] ** 2 + d[:, 2] ** 2 - (k * d[:, 1]) ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2] - k * k * oy * d[:, 1])
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - (k * oy) ** 2
    ok, t0, t1 = _solve_quadratic(a, b, c)
    lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
    best = np.full(len(o), np.inf)
    normal = np.zeros_like(o)
    for t in (lo, hi):
        y = o[:, 1] + t * d[:, 1]
        good = ok & (t > 1e-4) & (y >= -apex) & (y <= apex) & (t < best)
        best = np.where(good, t, best)
        p = o + d * np.where(good, t, 0)[:, None]
        r = np.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) + 1e-9
        n = np.column_stack([p[:, 0] / r, np.full(len(o), k), p[:, 2] / r])
        normal = np.where(good[:, None], n, normal)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-apex - o[:, 1]) / d[:, 1]
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    good = (t > 1e-4) & (p[:, 0] ** 2 + p[:, 2] ** 2 <= 1) & (t < best)
    best = np.where(good, t, best)
    normal = np.where(good[:, None], np.array([0.0, -1.0, 0.0]), normal)
    return best, normal


@dataclass
class Thing:
    """One object: a shape in its own frame placed by ``rot`` (columns = own axes) and
    ``pos``, uniformly scaled by ``scale``; ``label`` is a class index or None (distractor)."""

    kind: str
    label: int | None
    pos: np.ndarray
    rot: np.ndarray
    scale: float
    texture: Texture
    shine: float
    params: dict = field(default_factory=dict)

    def bound(self) -> float:
        return self.scale * self.params.get("bound", 1.8)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t, world normal) for world rays; t is inf where the ray misses."""
        lo = (o - self.pos) @ self.rot / self.scale
        ld = d @ self.rot / self.scale
        kind, prm = self.kind, self.params
        if kind == "capsule":
            t, n = _hit_capsule(lo, ld, prm["half_len"], prm["radius"])
        elif kind == "ellipsoid":
            t, n = _hit_ellipsoid(lo, ld, prm["radii"])
        elif kind == "cylinder":
            t, n = _hit_cylinder(lo, ld, prm["half_len"])
        elif kind == "cone":
            t, n = _hit_cone(lo, ld, prm["height"])
        else:
            t, n = _hit_convex(lo, ld, prm["planes"])
        n = n @ self.rot.T
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        return t, n

    def local(self, p: np.ndarray) -> np.ndarray:
        return (p - self.pos) @ self.rot / self.scale

    def axis_ends(self) -> np.ndarray | None:
        """World end points of the symmetry axis (base centre, top) for axis-following boxes."""
        half = {
            "cylinder": self.params.get("half_len", 1.0),
            "cone": self.params.get("height", 2) / 2,
            "pyramid": self.params.get("height", 2) / 2,
        }.get(self.kind)
        if half is None:
            return None
        ends = np.array([[0.0, -half, 0.0], [0.0, half, 0.0]]) * self.scale
        return ends @ self.rot.T + self.pos


def _random_rotation(rng: np.random.Generator, upright: bool) -> np.ndarray:
    yaw = rng.uniform(0, 2 * math.pi)
    cy, sy = math.cos(yaw), math.sin(yaw)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    if upright:
        return ry
    tilt = rng.uniform(-math.pi / 2, math.pi / 2)
    ct, st = math.cos(tilt), math.sin(tilt)
    rx = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
    return ry @ rx


def _make_thing(
    rng: np.random.Generator, kind: str, label: int | None, x: float, z: float, scale: float
) -> Thing:
    params: dict = {}
    upright = rng.random() < 0.6
    if kind == "sphere":
        kind, params = "ellipsoid", {"radii": np.ones(3), "bound": 1.05}
        upright = True
    elif kind == "cube":
        params = {"planes": _halfspaces_cube(), "bound": 1.75}
    elif kind == "cylinder":
        params = {"half_len": float(rng.uniform(0.5, 1.6))}
        params["bound"] = math.hypot(1, params["half_len"]) + 0.05
    elif kind == "cone":
        params = {"height": float(rng.uniform(1.4, 3.2))}
        params["bound"] = math.hypot(1, params["height"] / 2) + 0.05
    elif kind == "pyramid":
        params = {"height": float(rng.uniform(1.2, 2.6))}
        params["planes"] = _halfspaces_pyramid(params["height"])
        params["bound"] = math.hypot(1.42, params["height"] / 2) + 0.05
    elif kind == "ellipsoid":  # a distractor: clearly not round
        radii = np.array([1.0, rng.uniform(1.7, 3.0), rng.uniform(0.4, 0.7)])
        params = {"radii": rng.permutation(radii), "bound": 3.05}
        upright = False
    elif kind == "prism":
        sides = int(rng.choice([3, 5]))  # more sides would pass for a cylinder
        half_len = float(rng.uniform(0.4, 1.8))
        params = {"planes": _halfspaces_prism(sides, half_len), "bound": math.hypot(1.1, half_len)}
    elif kind == "capsule":  # a rod with round ends: not a cylinder
        params = {"half_len": float(rng.uniform(0.6, 2.0)), "radius": float(rng.uniform(0.3, 0.9))}
        params["bound"] = params["half_len"] + params["radius"] + 0.05
        upright = rng.random() < 0.3
    rot = _random_rotation(rng, upright)
    thing = Thing(
        kind, label, np.zeros(3), rot, scale, Texture.random(rng), float(rng.uniform(0, 1)), params
    )
    # Rest it on the ground: the lowest point of its bounding shape touches y = 0.
    lift = _lowest(thing)
    thing.pos = np.array([x, lift + (rng.uniform(0, 1.5) * scale if rng.random() < 0.1 else 0), z])
    return thing


def _lowest(thing: Thing) -> float:
    """How far below its centre the object reaches: upward rays on a grid under it."""
    thing.pos = np.zeros(3)
    b = thing.bound()
    g = np.linspace(-b, b, 15)
    gx, gz = np.meshgrid(g, g)
    o = np.column_stack([gx.ravel(), np.full(gx.size, -10 * b), gz.ravel()])
    d = np.tile([0.0, 1.0, 0.0], (len(o), 1))
    t, _ = thing.intersect(o, d)
    return float(10 * b - t[np.isfinite(t)].min()) if np.isfinite(t).any() else 0.5 * b


# ---------------------------------------------------------------------------------------
# Camera and scene
# ---------------------------------------------------------------------------------------


@dataclass
class Camera:
    eye: np.ndarray
    forward: np.ndarray
    right: np.ndarray
    up: np.ndarray
    focal: float  # pixels at output resolution
    width: int
    height: int

    def rays(self, ss: int) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.width * ss, self.height * ss
        xs = (np.arange(w) + 0.5) / ss - self.width / 2
        ys = (np.arange(h) + 0.5) / ss - self.height / 2
        gx, gy = np.meshgrid(xs, ys)
        d = (
            self.forward[None, :] * self.focal
            + gx.reshape(-1, 1) * self.right
            - gy.reshape(-1, 1) * self.up
        )
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return np.broadcast_to(self.eye, d.shape).copy(), d

    def project(self, p: np.ndarray) -> np.ndarray:
        rel = p - self.eye
        z = rel @ self.forward
        return np.column_stack(
            [
                rel @ self.right / z * self.focal + self.width / 2,
                -(rel @ self.up) / z * self.focal + self.height / 2,
            ]
        )


def _camera(
    rng: np.random.Generator, width: int, height: int, target: np.ndarray, spread: float
) -> Camera:
    """A camera looking at ``target`` from far enough to see about ``spread`` around it."""
    fov = math.radians(rng.uniform(35, 80))
    elevation = math.radians(rng.uniform(8, 65))
    azimuth = rng.uniform(0, 2 * math.pi)
    distance = rng.uniform(0.8, 1.6) * spread / math.tan(fov / 2) + 1.5
    target = target + rng.normal(0, 0.3, size=3) * [spread, 0, spread]
    eye = target + distance * np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.sin(azimuth),
        ]
    )
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    roll = math.radians(rng.normal(0, 12) if rng.random() < 0.7 else 0.0)
    right, up = (
        math.cos(roll) * right + math.sin(roll) * up,
        -math.sin(roll) * right + math.cos(roll) * up,
    )
    focal = width / 2 / math.tan(fov / 2)
    return Camera(eye, forward, right, up, focal, width, height)


def _trace(
    things: list[Thing], o: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit among ``things``: (t, normal, index, per-object hit masks)."""
    best_t = np.full(len(o), np.inf)
    best_n = np.zeros_like(o)
    best_i = np.full(len(o), -1)
    masks = np.zeros((len(things), len(o)), dtype=bool)
    for i, thing in enumerate(things):
        # Only rays passing within the bounding sphere are intersected exactly.
        oc = o - thing.pos
        b = (oc * d).sum(1)
        near = (b * b - (oc * oc).sum(1) + thing.bound() ** 2 >= 0) & (b < thing.bound())
        idx = np.nonzero(near)[0]
        if len(idx) == 0:
            continue
        t, n = thing.intersect(o[idx], d[idx])
        hit = np.isfinite(t)
        masks[i, idx[hit]] = True
        closer = hit & (t < best_t[idx])
        j = idx[closer]
        best_t[j], best_n[j], best_i[j] = t[closer], n[closer], i
    return best_t, best_n, best_i, masks


def raycast_scene(
    rng: np.random.Generator,
    *,
    size_range: tuple[int, int] = (256, 384),
    max_objects: int = 7,
    supersample: int = 2,
) -> RaySample:
    """Render one room scene and its labels."""
    width = int(rng.integers(size_range[0], size_range[1] + 1))
    height = int(width * rng.uniform(0.62, 1.0))
    things, spread = _place_things(rng, max_objects)
    centre = np.mean([t.pos for t in things], axis=0) if things else np.array([0.0, 0.5, 0.0])
    reach = max([spread * 0.5] + [math.hypot(*(t.pos - centre)[[0, 2]]) + t.scale for t in things])
    cam = _camera(rng, width, height, centre * [1, 0.5, 1], reach)
    ground_tex, walls, sky_top, sky_bottom = _room(rng, cam, centre, spread)
    lights, ambient = _scene_lights(rng)

    o, d = cam.rays(supersample)
    t_obj, n_obj, i_obj, masks = _trace(things, o, d)
    t_plane, n_plane, plane_id = _trace_planes(o, d, walls)
    use_obj = t_obj < t_plane
    t_hit = np.where(use_obj, t_obj, t_plane)
    normal = np.where(use_obj[:, None], n_obj, n_plane)
    hit = np.isfinite(t_hit)
    p = o + d * np.where(hit, t_hit, 0)[:, None]

    albedo = np.zeros_like(o)
    shine = np.zeros(len(o))
    for i, thing in enumerate(things):
        sel = use_obj & (i_obj == i)
        if sel.any():
            albedo[sel] = thing.texture(thing.local(p[sel]))
            shine[sel] = thing.shine
    for k, tex in enumerate([ground_tex] + [w[2] for w in walls]):
        sel = ~use_obj & (plane_id == k)
        if sel.any():
            albedo[sel] = tex(p[sel] * 0.25)
            shine[sel] = 0.1
    colour = _lit(things, albedo, shine, ambient, lights, p, normal, d, hit)
    sky = np.clip(d[:, 1:2], 0, 1) * sky_top + (1 - np.clip(d[:, 1:2], 0, 1)) * sky_bottom
    colour = np.where(hit[:, None], colour, sky)
    # Fog towards the horizon keeps the far ground from aliasing into noise.
    fog = 1 - np.exp(-np.where(hit, t_hit, 1e3) / rng.uniform(25, 60))
    colour = colour * (1 - fog[:, None]) + sky_bottom * fog[:, None]

    ss = supersample
    big = np.clip(colour, 0, 1).reshape(height * ss, width * ss, 3)
    small = cv2.resize(
        (big * 255).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA
    )
    image = _camera_effects(rng, small)

    visible_ids = np.where(use_obj, i_obj, -1).reshape(height * ss, width * ss)
    boxes = []
    for i, thing in enumerate(things):
        if thing.label is None:
            continue
        full = masks[i].reshape(height * ss, width * ss)
        box = _label(thing, full, visible_ids == i, cam, ss)
        if box is not None:
            boxes.append(box)
    return RaySample(Image.fromarray(image), boxes)


def _place_things(rng: np.random.Generator, max_objects: int) -> tuple[list[Thing], float]:
    """The labelled primitives and the distractors, spread on the ground without overlap
    (twelve tries each), and how far they spread."""
    things: list[Thing] = []
    n_labelled = 0 if rng.random() < 0.08 else int(rng.integers(1, max_objects + 1))
    n_distractors = int(rng.integers(0, 4)) if rng.random() < 0.6 else 0
    kinds = [(CLASS_NAMES[c], c) for c in rng.integers(0, 5, size=n_labelled)]
    kinds += [
        (str(rng.choice(["ellipsoid", "prism", "capsule"])), None) for _ in range(n_distractors)
    ]
    spread = rng.uniform(2.5, 5.0)
    for kind, label in kinds:
        scale = float(np.exp(rng.uniform(math.log(0.35), math.log(1.6))))
        for _ in range(12):
            x, z = rng.uniform(-spread, spread, size=2)
            if all(
                math.hypot(x - t.pos[0], z - t.pos[2]) > 0.8 * (scale + t.scale) for t in things
            ):
                break
        things.append(_make_thing(rng, kind, label, float(x), float(z), scale))
    return things, spread


def _room(rng: np.random.Generator, cam: Any, centre: np.ndarray, spread: float) -> tuple:
    """The ground's texture, the walls at the back (planes x = a or z = b facing the camera:
    (axis, position, texture)) and the sky's two colours."""
    ground_tex = Texture.random(rng, plain_share=0.15)
    walls = []
    for axis in (0, 2):
        if rng.random() < 0.55:
            sign = -np.sign(cam.eye[axis] - centre[axis]) or 1.0
            walls.append(
                (
                    axis,
                    float(sign * rng.uniform(spread + 1.5, spread + 5)),
                    Texture.random(rng, plain_share=0.3),
                )
            )
    sky_top = rng.uniform(0.3, 1.0, size=3)
    sky_bottom = np.clip(sky_top + rng.normal(0, 0.2, size=3), 0, 1)
    return ground_tex, walls, sky_top, sky_bottom


def _scene_lights(rng: np.random.Generator) -> tuple[list, float]:
    """One to three directional lights (direction, colour) and the ambient share."""
    lights = []
    for _ in range(int(rng.integers(1, 4))):
        az, el = rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 1.35)
        direction = np.array(
            [math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)]
        )
        colour = np.clip(rng.normal(1.0, 0.15, size=3), 0.6, 1.3) * rng.uniform(0.35, 0.9)
        lights.append((direction, colour))
    ambient = rng.uniform(0.12, 0.4)
    return lights, ambient


def _trace_planes(o: np.ndarray, d: np.ndarray, walls: list) -> tuple:
    """The nearest hit of each ray with the ground (id 0) or a wall (ids from 1): distance,
    normal and plane id (-1: none)."""
    t_plane = np.full(len(o), np.inf)
    n_plane = np.zeros_like(o)
    plane_id = np.full(len(o), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[:, 1] / d[:, 1]
    good = (t > 1e-4) & (t < t_plane)
    t_plane, plane_id = np.where(good, t, t_plane), np.where(good, 0, plane_id)
    n_plane[good] = [0.0, 1.0, 0.0]
    for k, (axis, pos, _) in enumerate(walls, start=1):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (pos - o[:, axis]) / d[:, axis]
        y = o[:, 1] + t * d[:, 1]
        good = (t > 1e-4) & (t < t_plane) & (y >= 0)
        t_plane, plane_id = np.where(good, t, t_plane), np.where(good, k, plane_id)
        normal = np.zeros(3)
        normal[axis] = -np.sign(pos)
        n_plane[good] = normal
    return t_plane, n_plane, plane_id


def _lit(
    things: list[Thing],
    albedo: np.ndarray,
    shine: np.ndarray,
    ambient: float,
    lights: list,
    p: np.ndarray,
    normal: np.ndarray,
    d: np.ndarray,
    hit: np.ndarray,
) -> np.ndarray:
    """The colour of every ray's hit: ambient, plus each light's diffuse and specular share
    where no object shadows it."""
    colour = albedo * ambient
    lit_idx = np.nonzero(hit)[0]
    ph, nh = p[lit_idx] + normal[lit_idx] * 1e-3, normal[lit_idx]
    view = -d[lit_idx]
    for direction, light_colour in lights:
        lambert = np.clip(nh @ direction, 0, None)
        facing = np.nonzero(lambert > 0)[0]
        shadow = np.zeros(len(lit_idx), dtype=bool)
        if len(facing):
            towards = np.broadcast_to(direction, (len(facing), 3)).copy()
            ts, _, _, _ = _trace(things, ph[facing], towards)
            shadow[facing] = np.isfinite(ts)
        half = view + direction
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        spec = np.clip((nh * half).sum(1), 0, None) ** 40 * shine[lit_idx]
        lit = ~shadow
        colour[lit_idx] += lit[:, None] * (
            albedo[lit_idx] * lambert[:, None] * light_colour + spec[:, None] * light_colour
        )
    return colour


def _camera_effects(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    if rng.random() < 0.3:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.4, 1.2)))
    rgb = rgb * rng.uniform(0.85, 1.15, size=3) + rng.normal(0, rng.uniform(0, 6), size=rgb.shape)
    gamma = rng.uniform(0.8, 1.25)
    return (255 * np.clip(rgb / 255, 0, 1) ** gamma).astype(np.uint8)


def _label(
    thing: Thing, full: np.ndarray, visible: np.ndarray, cam: Camera, ss: int
) -> RayBox | None:
    area = int(full.sum())
    if area < 64 * ss * ss or visible.sum() < 0.2 * area:
        return None
    ys, xs = np.nonzero(full)
    pts = np.column_stack([(xs + 0.5) / ss, (ys + 0.5) / ss]).astype(np.float32)
    c = thing.label
    if c == 0:
        x0, y0, x1, y1 = xs.min() / ss, ys.min() / ss, (xs.max() + 1) / ss, (ys.max() + 1) / ss
        return RayBox(0, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0)
    ends = thing.axis_ends()
    if c == 1 or ends is None:
        (cx, cy), (w, h), deg = cv2.minAreaRect(pts)
        return RayBox(c, cx, cy, w + 1 / ss, h + 1 / ss, math.radians(deg))
    a2 = cam.project(ends)
    axis = a2[1] - a2[0]
    if np.linalg.norm(axis) < 1.0:  # seen end-on: the axis has no direction on screen
        (cx, cy), (w, h), deg = cv2.minAreaRect(pts)
        return RayBox(c, cx, cy, w + 1 / ss, h + 1 / ss, math.radians(deg))
    angle = math.atan2(axis[1], axis[0]) - math.pi / 2
    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    centre = pts.mean(axis=0)
    local = (pts - centre) @ rot
    lo, hi = local.min(axis=0) - 0.5 / ss, local.max(axis=0) + 0.5 / ss
    mid = centre + rot @ ((lo + hi) / 2)
    return RayBox(
        c, float(mid[0]), float(mid[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]), angle
    )
