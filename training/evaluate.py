"""Evaluate the served models beyond their own renderer, through the predictors the
deployments run, with the options ``serve_config.yaml`` gives them.

Per detector: mAP@0.5 per class and overall (rotated IoU for oriented-box models,
axis-aligned IoU for SSD against the axis-aligned hulls it is trained on) on the original
generator's held-out split (``test``), on randomized scenes (``test_randomized``) and on the
independent ray-caster's scenes (``test_raycast``); false detections at probability >= 0.5
per image on background-only images: the photographs of ``training.sources.EVAL_PHOTOS``
(never trained on) and rendered scenes holding only distractors (``test_background``).

Per classifier: accuracy and confusion matrix, expected calibration error (15 bins) with the
configured temperature and without, a reliability diagram PNG, how often in-domain images
answer ``"unknown"``, and what out-of-domain inputs answer (photographs, noise, the other
renderer's scenes).

CPU milliseconds per image (median of 50, batch 1) for every model. Everything goes to a
JSON file (``weights/metrics.json``); ``--section baseline --weights NAME=PATH`` evaluates
other weights under the same names (the model card's "trained on one renderer" column).

Usage::

    python -m training.evaluate --data data/primitives --out weights/metrics.json
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
from training.calibrate import (
    classifier_logits,
    fit_temperature,
    reliability,
    reliability_png,
    softmax,
)
from training.dataset import Item, axis_aligned, read_split
from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES
from training.sources import EVAL_PHOTOS, available_photos, render_source

log = logging.getLogger(__name__)
EVAL_CONFIDENCE = 0.01  # mAP integrates over all confidences; serving uses a higher cut
FALSE_POSITIVE_AT = 0.5  # background-only images: detections at or above this count
DETECTION_SPLITS = {
    "own": "test",
    "randomized": "test_randomized",
    "other_renderer": "test_raycast",
}
NOISE_IMAGES = 100


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
    return [
        ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0)
        for x0, y0, x1, y1 in axis_aligned(item.corners, w, h)
    ]


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
    per_class = {
        PRIMITIVE_CLASSES[c]: average_precision(scores[c], hits[c], n_truth[c]) for c in scores
    }
    valid = [v for v in per_class.values() if not math.isnan(v)]
    return {
        "mAP50": float(np.mean(valid)) if valid else 0.0,
        "AP50_per_class": per_class,
        "iou": "rotated" if rotated else "axis-aligned",
        "objects": sum(n_truth.values()),
        "images": len(items),
    }


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def false_positives(predict, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Detections at probability >= FALSE_POSITIVE_AT on images that hold no primitive."""
    per_image: dict[str, list] = {}
    for name, arr in tqdm(images, desc="background", unit="img"):
        detection = predict([arr])[0]
        assert isinstance(detection, Detection)
        per_image[name] = [
            [p.primitive_class, round(p.probability, 3)]
            for p in detection.primitives
            if p.probability >= FALSE_POSITIVE_AT
        ]
    counts = [len(v) for v in per_image.values()]
    return {
        "images": len(images),
        "per_image": float(np.mean(counts)) if counts else 0.0,
        "max_in_one_image": max(counts, default=0),
        "found": per_image,
    }


def detector_report(model: Predictor, spec, data: Path, limit: int) -> dict[str, Any]:
    rotated = spec.backend is Backend.ultralytics
    entry: dict[str, Any] = {}
    for key, split in DETECTION_SPLITS.items():
        if not (data / "images" / split).exists():
            log.warning("no split %s in %s: skipped", split, data)
            continue
        items = read_split(data, split)[: limit or None]
        entry[key] = {"split": split, **detection_map(model.predict, items, rotated)}
    photos = [(name, _rgb(path)) for name, path in available_photos(EVAL_PHOTOS)]
    entry["background_photos"] = false_positives(model.predict, photos)
    if (data / "images" / "test_background").exists():
        rendered = [
            (i.image.name, _rgb(i.image))
            for i in read_split(data, "test_background")[: limit or None]
        ]
        fp = false_positives(model.predict, rendered)
        fp["found"] = {k: v for k, v in fp["found"].items() if v}  # only the ones with any
        entry["background_rendered"] = fp
    return entry


def _answers(model: Predictor, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    out = {}
    for name, arr in images:
        answer = model.predict([arr])[0]
        assert isinstance(answer, Classification)
        out[name] = [answer.image_class, round(answer.probability, 3)]
    return out


def classifier_report(
    model: Predictor, spec, data: Path, limit: int, figure: Path
) -> dict[str, Any]:
    """Accuracy, calibration and out-of-domain answers with the served temperature and
    threshold (``spec``); the temperature the validation split would pick, for comparison."""
    t, threshold = spec.temperature, spec.unknown_threshold
    known = [i for i in read_split(data, "test") if i.scene >= 0][: limit or None]
    logits, labels = classifier_logits(model, known)
    probs = softmax(logits, t)
    n = len(SCENE_CLASSES)
    confusion = np.zeros((n, n), dtype=int)
    for truth, guess in zip(labels, probs.argmax(axis=1), strict=True):
        confusion[truth, guess] += 1
    ece, table = reliability(probs, labels)
    ece_raw, _ = reliability(softmax(logits), labels)
    reliability_png(
        table,
        figure,
        f"{spec.name} on the held-out split ({len(known)} images), T = {t:.2f}: ECE {ece:.3f}",
    )
    has = lambda split: (data / "images" / split).exists()  # noqa: E731
    val = read_split(data, "val") if has("val") else []  # with its out-of-domain images
    entry: dict[str, Any] = {
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "classes": list(SCENE_CLASSES),
        "confusion_matrix_rows_true": confusion.tolist(),
        "temperature": t,
        "unknown_threshold": threshold,
        "ece": ece,
        "ece_uncalibrated": ece_raw,
        "reliability": table,
        "reliability_png": str(figure),
        "unknown_rate_in_domain": float((probs.max(axis=1) < threshold).mean())
        if threshold is not None
        else 0.0,
    }
    if val:
        v_logits, v_labels = classifier_logits(model, val)
        entry["temperature_fitted_on_val"] = round(fit_temperature(v_logits, v_labels), 3)
    randomized = (
        [i for i in read_split(data, "test_randomized") if i.scene >= 0]
        if has("test_randomized")
        else []
    )
    if randomized:
        r_logits, r_labels = classifier_logits(model, randomized[: limit or None])
        r_probs = softmax(r_logits, t)
        entry["randomized"] = {
            "images": len(r_labels),
            "accuracy": float((r_probs.argmax(1) == r_labels).mean()),
            "ece": reliability(r_probs, r_labels)[0],
        }
    # Out of domain: what comes back for photographs, noise and the other renderer's scenes.
    photos = [(name, _rgb(path)) for name, path in available_photos(EVAL_PHOTOS)]
    noise = [
        (f"noise-{i}", np.asarray(render_source("noise", np.random.default_rng([99, i]))[0]))
        for i in range(NOISE_IMAGES)
    ]
    ood: dict[str, Any] = {"photos": _answers(model, photos)}
    for name, images in (("noise", noise),):
        answers = _answers(model, images)
        ood[name] = {
            "images": len(answers),
            "unknown_rate": float(np.mean([a[0] == "unknown" for a in answers.values()])),
        }
    if has("test_raycast"):
        items = read_split(data, "test_raycast")[: limit or None]
        answers = _answers(model, [(i.image.name, _rgb(i.image)) for i in items])
        ood["other_renderer"] = {
            "images": len(answers),
            "unknown_rate": float(np.mean([a[0] == "unknown" for a in answers.values()])),
        }
    photo_answers = [a[0] == "unknown" for a in ood["photos"].values()]
    ood["photos_unknown_rate"] = float(np.mean(photo_answers)) if photo_answers else 0.0
    entry["out_of_domain"] = ood
    return entry


def median_ms(predict, items: list[Item], runs: int = 50) -> float:
    arrays = [
        np.asarray(Image.open(items[i % len(items)].image).convert("RGB")) for i in range(runs)
    ]
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
    parser.add_argument("--limit", type=int, default=0, help="images per split (0: all)")
    parser.add_argument(
        "--section", default=None, help="write under this key of the JSON (e.g. baseline)"
    )
    parser.add_argument(
        "--weights",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="evaluate these weights instead of the configured ones",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the Serve config whose registry to evaluate (serve_config.yaml)",
    )
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="model names to evaluate (default: every registered model)",
    )
    parser.add_argument("--out", type=Path, default=Path("weights/metrics.json"))
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only re-measure CPU ms per image into the existing entries",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(2)
    overrides = dict(w.split("=", 1) for w in args.weights)
    timing_items = read_split(args.data, "test")
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    section = report.setdefault(args.section, {}) if args.section else report
    for spec in load_app_config(args.config).registry.models:
        if args.models is not None and spec.name not in args.models:
            continue
        if spec.name in overrides:
            spec = spec.model_copy(update={"weights": Path(overrides[spec.name])})
        if spec.type is ModelType.detection:
            spec = spec.model_copy(update={"confidence_threshold": EVAL_CONFIDENCE})
        model: Predictor = build_predictor(spec)
        if args.timing_only:
            section[spec.name]["cpu_ms_per_image_median_of_50"] = median_ms(
                model.predict, timing_items
            )
            print(
                f"{spec.name}: {section[spec.name]['cpu_ms_per_image_median_of_50']} ms", flush=True
            )
            continue
        entry: dict[str, Any] = {
            "weights": str(spec.weights),
            "weights_sha256": file_sha256(spec.weights_path),
            "weights_mb": round(spec.weights_path.stat().st_size / 2**20, 2),
            "image_size": spec.image_size,
        }
        if spec.type is ModelType.detection:
            entry["iou"] = "rotated" if spec.backend is Backend.ultralytics else "axis-aligned"
            entry.update(detector_report(model, spec, args.data, args.limit))
        else:
            suffix = f"-{args.section}" if args.section else ""
            figure = args.out.parent / f"reliability-{spec.name}{suffix}.png"
            entry.update(classifier_report(model, spec, args.data, args.limit, figure))
        entry["cpu_ms_per_image_median_of_50"] = median_ms(model.predict, timing_items)
        section[spec.name] = entry
        print(summary(spec.name, entry), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each model
    if args.timing_only:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)


def summary(name: str, e: dict[str, Any]) -> str:
    """The lines ``make evaluate`` prints for one model."""
    lines = [
        f"== {name} ({e['weights']}, {e['weights_mb']} MB, "
        f"{e['cpu_ms_per_image_median_of_50']} ms/image on CPU)"
    ]
    for key in DETECTION_SPLITS:
        if "iou" in e and key in e:
            per = ", ".join(f"{k} {v:.3f}" for k, v in e[key]["AP50_per_class"].items())
            lines.append(
                f"  mAP@0.5 {key:<15} {e[key]['mAP50']:.3f}  ({e[key]['images']} images; {per})"
            )
    for key in ("background_photos", "background_rendered"):
        if key in e:
            lines.append(
                f"  false detections >= {FALSE_POSITIVE_AT} per image, {key[11:]}: "
                f"{e[key]['per_image']:.3f} ({e[key]['images']} images, at most "
                f"{e[key]['max_in_one_image']} in one)"
            )
    if "background_photos" in e:
        found = e["background_photos"]["found"]
        lines.append("    " + "; ".join(f"{k}: {len(v)}" for k, v in found.items()))
    if "accuracy" in e:
        lines.append(
            f"  accuracy (held-out split) {e['accuracy']:.3f}; ECE {e['ece']:.3f} at "
            f"T={e['temperature']} ({e['ece_uncalibrated']:.3f} uncalibrated; the "
            f"validation split fits T={e.get('temperature_fitted_on_val')})"
        )
        if "randomized" in e:
            r = e["randomized"]
            lines.append(
                f"  randomized scenes with a scene class: accuracy {r['accuracy']:.3f}, "
                f"ECE {r['ece']:.3f} ({r['images']} images)"
            )
        ood = e["out_of_domain"]
        lines.append(
            f"  'unknown' below {e['unknown_threshold']}: in-domain "
            f"{e['unknown_rate_in_domain']:.3f}; photos {ood['photos_unknown_rate']:.3f}, "
            f"noise {ood['noise']['unknown_rate']:.3f}, other renderer "
            f"{ood.get('other_renderer', {}).get('unknown_rate', float('nan')):.3f}"
        )
        lines.append("    " + "; ".join(f"{k}: {v[0]} {v[1]}" for k, v in ood["photos"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
