"""Turning stored image bytes into the arrays the predictors take."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

from inference.types import ImageUnreadable


def decode_image(data: bytes, *, min_side: int | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the image as displayed (EXIF orientation applied).

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    whose longer side is still at least ``min_side``: the models resize to their input size
    anyway, and a scaled decode costs a fraction of a full one. Boxes are reported relative
    to the image size, so they do not change. Raises ImageUnreadable when the bytes are not a
    decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if min_side and img.format == "JPEG" and max(width, height) > min_side:
                scale = min_side / max(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            upright = ImageOps.exif_transpose(img)
            return np.asarray(upright.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ImageUnreadable(f"could not decode the image: {exc}") from exc
