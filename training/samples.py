"""Contact sheets of the generators with their labels drawn (``make samples``).

Writes ``docs/samples-<source>.png`` for each source: a grid of rendered scenes, each label
drawn as its rotated box in the class colour with the class name, the ``h`` side (the one
that follows a symmetry axis) marked by a thicker edge; and ``docs/box-convention.png``, one
object of each class from the ray-caster with its box (README "Box convention").

Usage: ``python -m training.samples --out docs --count 12``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.sources import SOURCES, render_source

COLOURS = [(255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 200, 0), (220, 64, 255)]
NAMES = ("sphere", "cube", "cylinder", "cone", "pyramid")


def draw_labels(image: Image.Image, classes: np.ndarray, corners: np.ndarray) -> Image.Image:
    """``corners`` (N, 4, 2) in pixels, in the order the labels store them."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    for c, quad in zip(classes, corners, strict=True):
        pts = [tuple(map(float, p)) for p in quad]
        d.polygon(pts, outline=COLOURS[int(c)], width=2)
        d.line([pts[1], pts[2]], fill=COLOURS[int(c)], width=4)  # an h side
        d.text((pts[0][0] + 2, pts[0][1] + 2), NAMES[int(c)], fill=COLOURS[int(c)])
    return out


def contact_sheet(
    source: str, count: int, seed: int, cell: int = 256, columns: int = 4
) -> Image.Image:
    rows = (count + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i in range(count):
        image, classes, corners, _ = render_source(
            source, np.random.default_rng([seed, i]), photos=False
        )
        drawn = draw_labels(image, classes, corners)
        drawn.thumbnail((cell - 4, cell - 4))
        sheet.paste(drawn, ((i % columns) * cell + 2, (i // columns) * cell + 2))
    return sheet


def convention_sheet(cell: int = 220) -> Image.Image:
    """One labelled object per class, cropped around its box, the h side thick."""
    from training.raycast import raycast_scene

    sheet = Image.new("RGB", (cell * len(NAMES), cell + 24), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for class_id, name in enumerate(NAMES):
        for seed in range(200):
            sample = raycast_scene(np.random.default_rng([31, class_id, seed]))
            w, h = sample.image.size
            boxes = [
                b
                for b in sample.boxes
                if b.class_id == class_id
                and max(b.w, b.h) > 40
                and b.w * b.h > 0.02 * w * h
                and 0 < b.cx - b.w < b.cx + b.w < w
                and 0 < b.cy - b.h < b.cy + b.h < h
            ]
            if boxes:
                break
        box = boxes[0]
        drawn = draw_labels(sample.image, np.array([class_id]), box.corners()[None])
        half = max(box.w, box.h) * 0.85
        crop = drawn.crop(
            (int(box.cx - half), int(box.cy - half), int(box.cx + half), int(box.cy + half))
        ).resize((cell - 8, cell - 8))
        sheet.paste(crop, (class_id * cell + 4, 4))
        d.text((class_id * cell + 8, cell + 4), name, fill=(0, 0, 0))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    # Photographs belong to the packages that ship them: no sheet of them is published.
    parser.add_argument(
        "--sources", nargs="*", default=[s for s in SOURCES if s not in ("photo", "noise")]
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for source in args.sources:
        path = args.out / f"samples-{source}.png"
        contact_sheet(source, args.count, args.seed).quantize(256).save(path, optimize=True)
        print(f"wrote {path}")
    convention_sheet().quantize(256).save(args.out / "box-convention.png", optimize=True)
    print(f"wrote {args.out / 'box-convention.png'}")


if __name__ == "__main__":
    main()
