"""Results drawn onto their input (docs/api.md §E1): the image as displayed (EXIF orientation
applied), each primitive's rotated box with its class and probability, the scene class in the
corner where it hides the fewest of their labels. Pillow only; nothing runs a model. Drawn
pictures are named (``picture_etag``) and kept (``PictureCache``) here too."""

from __future__ import annotations

import hashlib
import io
import math
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

# One colour per primitive class (colour-blind-safe, after Okabe and Ito), grey otherwise.
COLOURS = {
    "sphere": (0, 114, 178),
    "cube": (230, 159, 0),
    "cylinder": (0, 158, 115),
    "cone": (204, 121, 167),
    "pyramid": (213, 94, 0),
}
OTHER = (128, 128, 128)
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}


PICTURE_TYPES = ("image/png", "image/jpeg")


def box_corners(p: dict[str, Any], width: int, height: int) -> list[tuple[float, float]]:
    """The four corners in pixels: centre + R(θ)·(±w/2, ±h/2), θ = rotation·π (x right,
    y down, so a growing θ turns clockwise on screen)."""
    cx, cy = p["x"] * width, p["y"] * height
    half_w, half_h = p["width"] * width / 2, p["height"] * height / 2
    theta = p["rotation"] * math.pi
    cos, sin = math.cos(theta), math.sin(theta)
    return [
        (cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
        for dx, dy in ((-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h))
    ]


Box = tuple[float, float, float, float]  # left, top, right, bottom


def _label(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    limit: tuple[int, int],
) -> Box:
    """Draw ``text`` on a ``colour`` patch whose bottom-left is at ``xy`` (kept inside
    ``limit``); the patch's box."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0.0, xy[0]), max(0, limit[0] - w))
    y = min(max(0.0, xy[1] - h), max(0, limit[1] - h))
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 3 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)
    return (x, y, x + w, y + h)


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _free_corner(size: tuple[float, float], taken: Sequence[Box], limit: tuple[int, int]) -> Box:
    """Where a patch of ``size`` goes: the corner (top-left first) that covers least of the
    boxes' labels, so the scene's label never hides a primitive's when a corner is free."""
    w, h = size
    corners = [
        (0.0, 0.0),
        (limit[0] - w, 0.0),
        (0.0, limit[1] - h),
        (limit[0] - w, limit[1] - h),
    ]
    boxes = [(max(0.0, x), max(0.0, y), max(0.0, x) + w, max(0.0, y) + h) for x, y in corners]
    return min(boxes, key=lambda box: sum(_overlap(box, t) for t in taken))


def draw_result(
    image: bytes,
    *,
    image_class: str,
    primitives: Sequence[dict[str, Any]],
    min_probability: float = 0.0,
    media_type: str = "image/png",
) -> bytes:
    """The input with the result drawn on it, encoded as ``media_type`` (PNG or JPEG), at the
    input's displayed size."""
    with Image.open(io.BytesIO(image)) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = picture.size
    scale = max(1.0, min(width, height) / 400)
    font_size = max(11, round(12 * scale))
    font = ImageFont.load_default(size=font_size)
    line = max(2, round(2 * scale))
    draw = ImageDraw.Draw(picture)
    shown = [p for p in primitives if p["probability"] >= min_probability]
    labels: list[Box] = []
    for p in sorted(shown, key=lambda p: p["probability"]):  # strongest drawn last, on top
        colour = COLOURS.get(p["primitive_class"], OTHER)
        corners = box_corners(p, width, height)
        draw.polygon(corners, outline=colour, width=line)
        top_left = min(corners, key=lambda c: (c[1], c[0]))
        labels.append(
            _label(
                draw,
                top_left,
                f"{p['primitive_class']} {p['probability']:.2f}",
                colour,
                font,
                (width, height),
            )
        )
    scene = f"scene: {image_class}"
    left, top, right, bottom = draw.textbbox((0, 0), scene, font=font)
    spot = _free_corner((right - left + 6, bottom - top + 4), labels, (width, height))
    _label(draw, (spot[0], spot[3]), scene, (32, 32, 32), font, (width, height))
    out = io.BytesIO()
    fmt = FORMATS[media_type]
    picture.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 3}))
    return out.getvalue()


def picture_type(accept: str | None) -> str:
    """The picture's media type: PNG unless the Accept header prefers JPEG."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in PICTURE_TYPES:
            return media
    return "image/png"


def picture_etag(task_id: int, result_at: datetime, min_probability: float, media_type: str) -> str:
    """A result never changes, so its picture is named by the task, the options and the
    result's time: clients and proxies may keep it (privately) and revalidate for free."""
    name = f"{task_id}:{result_at.isoformat()}:{min_probability}:{media_type}"
    return '"' + hashlib.sha256(name.encode()).hexdigest()[:32] + '"'


class PictureCache:
    """Drawn pictures by ETag, least recently used first out, within ``max_bytes``: a result
    never changes, so a picture asked for again is sent without decoding or drawing again."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self.max_bytes, self.size = max_bytes, 0
        self._pictures: OrderedDict[str, bytes] = OrderedDict()

    def get(self, etag: str) -> bytes | None:
        picture = self._pictures.get(etag)
        if picture is not None:
            self._pictures.move_to_end(etag)
        return picture

    def put(self, etag: str, picture: bytes) -> None:
        if len(picture) > self.max_bytes // 4 or etag in self._pictures:
            return
        self._pictures[etag] = picture
        self.size += len(picture)
        while self.size > self.max_bytes:
            _, dropped = self._pictures.popitem(last=False)
            self.size -= len(dropped)
