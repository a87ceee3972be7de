"""Evaluate the served models on a held-out split, through the predictors the deployments run.

Prints detection mAP@0.5 per class and overall (rotated IoU for oriented-box models,
axis-aligned IoU for SSD against the axis-aligned hulls it is trained on), classification
accuracy with a confusion matrix, and CPU milliseconds per image (median of 50, batch 1);
writes everything to a JSON file.

The models are the registry in ``serve_config.yaml`` (``--config`` names another file).

Usage::

    python -m training.evaluate --data data/primitives --split test --out weights/metrics.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from config.registry import Backend, ModelType
from config.serve_config import load_app_config
from inference import Classification, Detection, Predictor, build_predictor
from inference.weights import file_sha256
from training.dataset import Item, axis_aligned, read_split
from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES

log = logging.getLogger(__name__)
EVAL_CONFIDENCE = 0.01  # mAP integrates over all confidences; serving uses a higher cut


def rotated_iou(a: tuple, b: tuple) -> float:
    """IoU of two (cx, cy, w, h, angle_radians) boxes."""
    ra = ((a[0], a[1]), (max(a[2], 1e-3), max(a[3], 1e-3)), math.degrees(a[4]))
    rb = ((b[0], b[1]), (max(b[2], 1e-3), max(b[3], 1e-3)), math.degrees(b[4]))
    kind, pts = cv2.rotatedRectangleIntersection(ra, rb)
    if kind == cv2.INTERSECT_NONE or pts is None:
        return 0.0
    inter = cv2.contourArea(cv2.convexHull(pts))
    union = ra[1][0] * ra[1][1] + rb[1][0] * rb[1][1] - inter
    return float(inter / union) if union > 0 else 0.0


def average_precision(scores: list[float], hits: list[bool], n_truth: int) -> float:
    """All-point interpolated AP (the VOC 2010+ definition)."""
    if n_truth == 0:
        return float("nan")
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(hits, dtype=float)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_truth
    precision = ctp / np.maximum(ctp + cfp, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def truth_boxes(item: Item, w: int, h: int, rotated: bool) -> list[tuple]:
    if rotated:
        boxes = []
        for corners in item.corners:
            (cx, cy), (bw, bh), deg = cv2.minAreaRect((corners * [w, h]).astype(np.float32))
            boxes.append((cx, cy, bw, bh, math.radians(deg)))
        return boxes
    return [((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0)
            for x0, y0, x1, y1 in axis_aligned(item.corners, w, h)]


def detection_map(predict, items: list[Item], rotated: bool) -> dict[str, Any]:
    scores: dict[int, list[float]] = {c: [] for c in range(len(PRIMITIVE_CLASSES))}
    hits: dict[int, list[bool]] = {c: [] for c in range(len(PRIMITIVE_CLASSES))}
    n_truth = dict.fromkeys(range(len(PRIMITIVE_CLASSES)), 0)
    for item in tqdm(items, desc="detections", unit="img"):
        arr = np.asarray(Image.open(item.image).convert("RGB"))
        h, w = arr.shape[:2]
        truths = truth_boxes(item, w, h, rotated)
        for c in item.classes:
            n_truth[int(c)] += 1
        used: set[int] = set()
        detection = predict([arr])[0]
        assert isinstance(detection, Detection)
        for p in detection.primitives:  # most confident first
            c = PRIMITIVE_CLASSES.index(p.primitive_class)
            box = (p.x * w, p.y * h, p.width * w, p.height * h, p.rotation * math.pi)
            best, best_j = 0.0, -1
            for j, (t, tc) in enumerate(zip(truths, item.classes, strict=True)):
                if int(tc) != c or j in used:
                    continue
                iou = rotated_iou(box, t)
                if iou > best:
                    best, best_j = iou, j
            hit = best >= 0.5
            if hit:
                used.add(best_j)
            scores[c].append(p.probability)
            hits[c].append(hit)
    per_class = {PRIMITIVE_CLASSES[c]: average_precision(scores[c], hits[c], n_truth[c])
                 for c in scores}
    valid = [v for v in per_class.values() if not math.isnan(v)]
    return {"mAP50": float(np.mean(valid)) if valid else 0.0,
            "AP50_per_class": per_class, "iou": "rotated" if rotated else "axis-aligned",
            "objects": sum(n_truth.values()), "images": len(items)}


def classification_metrics(predict, items: list[Item]) -> dict[str, Any]:
    n = len(SCENE_CLASSES)
    confusion = np.zeros((n, n), dtype=int)
    for item in tqdm(items, desc="scenes", unit="img"):
        arr = np.asarray(Image.open(item.image).convert("RGB"))
        answer = predict([arr])[0]
        assert isinstance(answer, Classification)
        guess = SCENE_CLASSES.index(answer.image_class)
        confusion[item.scene, guess] += 1
    return {"accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
            "classes": list(SCENE_CLASSES), "confusion_matrix_rows_true": confusion.tolist()}


def median_ms(predict, items: list[Item], runs: int = 50) -> float:
    arrays = [np.asarray(Image.open(items[i % len(items)].image).convert("RGB"))
              for i in range(runs)]
    predict(arrays[:2])  # warm-up
    times = []
    for arr in arrays:
        start = time.perf_counter()
        predict([arr])
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None,
                        help="the Serve config whose registry to evaluate (serve_config.yaml)")
    parser.add_argument("--models", nargs="*", default=None,
                        help="model names to evaluate (default: every registered model)")
    parser.add_argument("--out", type=Path, default=Path("weights/metrics.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(2)
    items = read_split(args.data, args.split)
    if args.limit:
        items = items[: args.limit]
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for spec in load_app_config(args.config).registry.models:
        if args.models is not None and spec.name not in args.models:
            continue
        if spec.type is ModelType.detection:
            spec = spec.model_copy(update={"confidence_threshold": EVAL_CONFIDENCE})
        model: Predictor = build_predictor(spec)
        entry: dict[str, Any] = {"weights": str(spec.weights),
                                 "weights_sha256": file_sha256(spec.weights_path),
                                 "split": args.split, "image_size": spec.image_size}
        if spec.type is ModelType.detection:
            entry.update(detection_map(model.predict, items,
                                       rotated=spec.backend is Backend.ultralytics))
        else:
            entry.update(classification_metrics(model.predict, items))
        entry["cpu_ms_per_image_median_of_50"] = median_ms(model.predict, items)
        report[spec.name] = entry
        summary = {k: v for k, v in entry.items() if k not in ("confusion_matrix_rows_true",)}
        log.info("%s: %s", spec.name, json.dumps(summary, indent=1))
        if "confusion_matrix_rows_true" in entry:
            log.info("confusion (rows true, cols predicted) %s:\n%s", SCENE_CLASSES,
                     np.array(entry["confusion_matrix_rows_true"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
