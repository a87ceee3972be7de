"""Where a detector fails on one split, class by class: a contact sheet and a table.

Every labelled object of the split is judged against the served detector's answer (the
predictor the deployment runs, at the confidence threshold ``serve_config.yaml`` gives it):

- ``found``: a detection of its class at IoU >= 0.5 (each detection counts once);
- ``confused``: none of its class, but one of another class at IoU >= 0.5 (named);
- ``misplaced``: its class nearby (0.1 <= IoU < 0.5): the box is wrong, not the class;
- ``missed``: nothing there at all.

Every detection matched to no object of its class is a ``false box``: ``confusion`` when it
lies on an object of another class, ``background`` when it lies on none. Recall is also
given by object size (share of the image's area) and for objects cut by the image border,
which is what separates "too small" and "truncated" from "wrong shape".

Writes ``OUT/failures-<model>-<split>.png`` (per class: a row of missed, confused or
misplaced objects, then a row of false boxes; the label in the class colour, the detection
in white with its class and probability) and ``OUT/failures-<model>-<split>.md``.

Usage: ``python -m training.failures --model YOLO --split test_raycast --out docs``
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from config.registry import Backend
from config.serve_config import load_app_config
from inference import Detection, build_predictor
from training.dataset import Item, read_split
from training.evaluate import rotated_iou, truth_boxes
from training.render import PRIMITIVE_CLASSES
from training.samples import COLOURS

MATCH_IOU = 0.5
NEAR_IOU = 0.1
SIZE_BINS = (
    (0.0, 0.01, "< 1 %"),
    (0.01, 0.04, "1-4 %"),
    (0.04, 0.16, "4-16 %"),
    (0.16, 2, "> 16 %"),
)
CELL = 132
PER_ROW = 10


@dataclass
class Case:
    """One failure: an object not found, or a detection matching nothing of its class."""

    image: Path
    box: tuple  # (cx, cy, w, h, angle) in pixels: the object's label, or the false detection
    klass: int
    kind: str  # missed, confused, misplaced, background, confusion
    other: tuple | None = (
        None  # the detection near a missed object, or the object under a false box
    )
    other_class: int = -1
    probability: float = 0.0


@dataclass
class Tally:
    objects: int = 0
    outcome: Counter = field(default_factory=Counter)
    confused_as: Counter = field(default_factory=Counter)
    false_boxes: Counter = field(default_factory=Counter)
    by_size: dict = field(default_factory=lambda: {b[2]: [0, 0] for b in SIZE_BINS})
    cut: list = field(default_factory=lambda: [0, 0])  # [found, objects] cut by the border


def _quad(box: tuple) -> np.ndarray:
    cx, cy, w, h, a = box
    return cv2.boxPoints(((cx, cy), (w, h), math.degrees(a)))


def _cut_by_border(item: Item, j: int) -> bool:
    c = item.corners[j]
    return bool((c <= 0.001).any() or (c >= 0.999).any())


def judge(
    item: Item, detection: Detection, w: int, h: int, rotated: bool, tallies: list[Tally]
) -> list[Case]:
    """Tally one image's objects and detections; return its failures."""
    truths = truth_boxes(item, w, h, rotated)
    classes = [int(c) for c in item.classes]
    dets = [
        (
            PRIMITIVE_CLASSES.index(p.primitive_class),
            (p.x * w, p.y * h, p.width * w, p.height * h, p.rotation * math.pi),
            p.probability,
        )
        for p in detection.primitives
    ]
    iou = np.array([[rotated_iou(d[1], t) for t in truths] for d in dets]).reshape(
        len(dets), len(truths)
    )
    found: dict[int, int] = {}  # object -> detection
    used: set[int] = set()
    for i, (c, _, _) in enumerate(dets):  # most confident first, as mAP matches
        best = [(iou[i, j], j) for j in range(len(truths)) if classes[j] == c and j not in found]
        if best and max(best)[0] >= MATCH_IOU:
            found[max(best)[1]] = i
            used.add(i)
    cases = []
    for j, (t, c) in enumerate(zip(truths, classes, strict=True)):
        tally = tallies[c]
        tally.objects += 1
        share = t[2] * t[3] / (w * h)
        bin_name = next(name for lo, hi, name in SIZE_BINS if lo <= share < hi)
        tally.by_size[bin_name][1] += 1
        cut = _cut_by_border(item, j)
        tally.cut[1] += cut
        if j in found:
            tally.outcome["found"] += 1
            tally.by_size[bin_name][0] += 1
            tally.cut[0] += cut
            continue
        near = [(iou[i, j], i) for i in range(len(dets))]
        best_iou, i = max(near) if near else (0.0, -1)
        same = [iou[k, j] for k in range(len(dets)) if dets[k][0] == c]
        if best_iou >= MATCH_IOU and dets[i][0] != c:
            kind = "confused"
            tally.confused_as[PRIMITIVE_CLASSES[dets[i][0]]] += 1
        elif same and max(same) >= NEAR_IOU:
            kind = "misplaced"
            i = max(range(len(dets)), key=lambda k: iou[k, j] if dets[k][0] == c else -1)
        else:
            kind = "missed"
        tally.outcome[kind] += 1
        other = dets[i] if i >= 0 and best_iou >= NEAR_IOU else None
        cases.append(
            Case(
                item.image,
                t,
                c,
                kind,
                other[1] if other else None,
                other[0] if other else -1,
                other[2] if other else 0.0,
            )
        )
    for i, (c, box, p) in enumerate(dets):
        if i in used:
            continue
        under = [(iou[i, j], j) for j in range(len(truths))]
        best_iou, j = max(under) if under else (0.0, -1)
        kind = "confusion" if best_iou >= MATCH_IOU else "background"
        tallies[c].false_boxes[kind] += 1
        cases.append(
            Case(
                item.image,
                box,
                c,
                kind,
                truths[j] if kind == "confusion" else None,
                classes[j] if kind == "confusion" else -1,
                p,
            )
        )
    return cases


def _cell(case: Case, false_box: bool) -> Image.Image:
    image = Image.open(case.image).convert("RGB")
    d = ImageDraw.Draw(image)
    label, det = (case.other, case.box) if false_box else (case.box, case.other)
    label_class = case.other_class if false_box else case.klass
    if label is not None:
        d.polygon([tuple(p) for p in _quad(label)], outline=COLOURS[label_class], width=3)
    if det is not None:
        d.polygon([tuple(p) for p in _quad(det)], outline=(255, 255, 255), width=1)
    cx, cy, w, h, _ = case.box
    half = max(w, h, 24) * 0.8
    crop = image.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    cell = Image.new("RGB", (CELL, CELL + 14), (255, 255, 255))
    cell.paste(crop.resize((CELL - 4, CELL - 4)), (2, 2))
    if false_box:
        text = f"{case.kind} {case.probability:.2f}"
    elif case.kind == "confused":
        text = f"as {PRIMITIVE_CLASSES[case.other_class]} {case.probability:.2f}"
    else:
        text = case.kind
    ImageDraw.Draw(cell).text((3, CELL - 1), text, fill=(0, 0, 0))
    return cell


def contact_sheet(cases: list[Case], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width = 110 + PER_ROW * CELL
    rows = []
    for c, name in enumerate(PRIMITIVE_CLASSES):
        for false_box, title in ((False, "not found"), (True, "false boxes")):
            pool = [
                k
                for k in cases
                if k.klass == c and (k.kind in ("background", "confusion")) == false_box
            ]
            pick = [pool[i] for i in sorted(rng.permutation(len(pool))[:PER_ROW])]
            row = Image.new("RGB", (width, CELL + 14), (255, 255, 255))
            d = ImageDraw.Draw(row)
            d.text((4, 40), name, fill=COLOURS[c])
            d.text((4, 56), f"{title}\n({len(pool)})", fill=(0, 0, 0))
            for k, case in enumerate(pick):
                row.paste(_cell(case, false_box), (110 + k * CELL, 0))
            rows.append(row)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), (255, 255, 255))
    for k, row in enumerate(rows):
        sheet.paste(row, (0, k * row.height))
    return sheet


def table(model: str, split: str, tallies: list[Tally], threshold: float) -> str:
    lines = [
        f"# Failures of {model} on `{split}` (confidence >= {threshold}, IoU >= {MATCH_IOU})",
        "",
        "| class | objects | found | confused (as) | misplaced | missed | false boxes on "
        "another class | false boxes on background |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in zip(PRIMITIVE_CLASSES, tallies, strict=True):
        n = max(1, t.objects)
        confused = ", ".join(f"{k} {v}" for k, v in t.confused_as.most_common())
        lines.append(
            f"| {name} | {t.objects} | {t.outcome['found'] / n:.0%} | "
            f"{t.outcome['confused'] / n:.0%} ({confused or '-'}) | "
            f"{t.outcome['misplaced'] / n:.0%} | {t.outcome['missed'] / n:.0%} | "
            f"{t.false_boxes['confusion']} | {t.false_boxes['background']} |"
        )
    lines += [
        "",
        "Recall by object size (share of the image) and for objects cut by the border:",
        "",
        "| class | " + " | ".join(b[2] for b in SIZE_BINS) + " | cut by the border |",
        "|---|" + "---|" * (len(SIZE_BINS) + 1),
    ]
    for name, t in zip(PRIMITIVE_CLASSES, tallies, strict=True):
        cells = [
            f"{f / n:.0%} of {n}" if n else "-" for f, n in (t.by_size[b[2]] for b in SIZE_BINS)
        ]
        cut = f"{t.cut[0] / t.cut[1]:.0%} of {t.cut[1]}" if t.cut[1] else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cut} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--model", default="YOLO", help="a detection model of the registry")
    parser.add_argument("--weights", type=Path, default=None, help="other weights than served")
    parser.add_argument("--split", default="test_raycast")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seed", type=int, default=0, help="which failures the sheet shows")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    spec = next(s for s in load_app_config(None).registry.models if s.name == args.model)
    if args.weights is not None:
        spec = spec.model_copy(update={"weights": args.weights})
    model = build_predictor(spec)
    rotated = spec.backend is Backend.ultralytics
    tallies = [Tally() for _ in PRIMITIVE_CLASSES]
    cases: list[Case] = []
    for item in tqdm(read_split(args.data, args.split), desc="judging", unit="img"):
        arr = np.asarray(Image.open(item.image).convert("RGB"))
        detection = model.predict([arr])[0]
        assert isinstance(detection, Detection)
        cases += judge(item, detection, arr.shape[1], arr.shape[0], rotated, tallies)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"failures-{args.model}-{args.split}"
    report = table(args.model, args.split, tallies, spec.confidence_threshold)
    stem.with_suffix(".md").write_text(report)
    contact_sheet(cases, args.seed).quantize(256).save(stem.with_suffix(".png"), optimize=True)
    print(report)
    print(f"wrote {stem}.png and {stem}.md")


if __name__ == "__main__":
    main()
