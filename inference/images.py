"""Turning stored image bytes into the arrays the predictors take."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

from inference.types import ImageUnreadable

ORIENTATION = 0x0112  # the EXIF tag


def decode_image(data: bytes, *, min_side: int | None = None, cover: bool = False) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the image as displayed (EXIF orientation applied).

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    whose longer side (with ``cover``, both sides) is still at least ``min_side``: the models
    resize to their input size anyway (a detector fits the longer side in it, a classifier
    stretches both sides to it), and a scaled decode costs a fraction of a full one. Other
    formats decode whole and are reduced at once by the largest whole factor that keeps that
    side. Boxes are reported relative to the image size, so they do not change. Raises
    ImageUnreadable when the bytes are not a decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            side = min(width, height) if cover else max(width, height)
            if min_side and img.format == "JPEG" and side > min_side:
                scale = min_side / side
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            factor = side // min_side if min_side else 1
            if img.format != "JPEG" and factor >= 2:
                # A PNG decodes whole; reduced at once (box filter, by a whole factor that
                # keeps the side at least min_side), the copies after it (upright, RGB,
                # array) are small.
                reduced = img.reduce(factor)
                reduced.getexif()[ORIENTATION] = img.getexif().get(ORIENTATION, 1)
                return np.asarray(ImageOps.exif_transpose(reduced).convert("RGB"))
            upright = ImageOps.exif_transpose(img)
            return np.asarray(upright.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ImageUnreadable(f"could not decode the image: {exc}") from exc
