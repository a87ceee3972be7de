"""Turning stored image bytes into the arrays the predictors take."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from inference.types import ImageUnreadable


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the image as displayed (EXIF orientation applied).

    Raises ImageUnreadable when the bytes are not a decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            upright = ImageOps.exif_transpose(img)
            return np.asarray(upright.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ImageUnreadable(f"could not decode the image: {exc}") from exc
