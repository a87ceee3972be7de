"""Validation of submitted images: judged by their bytes, decoded only as far as needed."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageRejected(Exception):
    status_code: int
    detail: str


@dataclass(frozen=True)
class ImageInfo:
    media_type: str
    width: int
    height: int


def sniff_media_type(data: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` by the leading bytes, else None."""
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(PNG_MAGIC):
        return "image/png"
    return None


def validate_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Accept a complete JPEG or PNG of at most ``max_pixels``; raise ImageRejected otherwise."""
    if not data:
        raise ImageRejected(400, "The request body is empty: send a JPEG or PNG image.")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise ImageRejected(
            415,
            "Unsupported image format: send a JPEG or PNG image (the body's bytes are neither).",
        )
    kind = "JPEG" if media_type == "image/jpeg" else "PNG"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=[kind])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(
                413, f"The image has too many pixels (limit {max_pixels})."
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, ImportError) as exc:
            # ImportError: once ultralytics is imported in the process, it wraps Image.open
            # and tries to load a HEIF plugin for bytes PIL cannot identify.
            raise ImageRejected(
                400, f"The {kind} image could not be decoded: its header is corrupt."
            ) from exc
        with img:
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageRejected(400, f"The {kind} image has no pixels.")
            if width * height > max_pixels:
                raise ImageRejected(
                    413,
                    f"The image is {width}x{height} = {width * height} "
                    f"pixels; the limit is {max_pixels}.",
                )
            if kind == "JPEG":
                # Decode at 1/8 scale: every scan is still read, so truncation shows, at a
                # fraction of a full decode's cost.
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            try:
                if kind == "PNG":
                    # No reduced decode exists for PNG: a full one of a small file of 40 MP
                    # took 0.48 s and 120 MB. Every chunk's CRC and the end chunk are checked
                    # instead (truncation and damaged bytes show); a stream made to pass
                    # those and not inflate fails its task at the model, with the reason.
                    img.verify()
                else:
                    img.load()
            except (
                OSError,
                ValueError,
                SyntaxError,
                Image.DecompressionBombError,
                Image.DecompressionBombWarning,
            ) as exc:
                raise ImageRejected(
                    400, f"The {kind} image could not be decoded: it is truncated or corrupt."
                ) from exc
    return ImageInfo(media_type=media_type, width=width, height=height)
