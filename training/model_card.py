"""Write weights/README.md (the model cards) from weights/metrics.json.

Usage: ``python -m training.model_card`` after ``make evaluate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CARDS = {
    "YOLO": {
        "what": "Ultralytics YOLOv8n-OBB (oriented boxes), built from `yolov8n-obb.yaml`, "
                "trained from scratch (no downloaded weights).",
        "command": "python -m training.train_yolo --epochs 20 --fraction 0.67 (20 epochs from "
                   "scratch, on labels that were then the minimal-area rectangles), then "
                   "python -m training.train_yolo --model weights/yolo_obb.pt --name yolo_ft "
                   "--epochs 5 --close-mosaic 2 --fraction 0.67 (5 epochs on the current "
                   "labels, whose boxes follow the symmetry axis of cylinders, cones and "
                   "pyramids; the images are the same)",
        "notes": "Predicts rotated boxes: `rotation` is meaningful. mAP uses exact rotated "
                 "IoU (polygon intersection), stricter than ultralytics' own probIoU-based "
                 "validation figure.",
    },
    "SSD": {
        "what": "torchvision SSDlite320 with a MobileNetV3-Large backbone (reduced tail), run "
                "at 256x256, trained from scratch.",
        "command": "python -m training.train_ssd --data data/primitives --epochs 7 --size 256",
        "notes": "SSD predicts axis-aligned boxes: the API reports `rotation` 0 for it, and its "
                 "mAP is measured with axis-aligned IoU against the axis-aligned hulls of the "
                 "oriented labels (what it is trained on).",
    },
    "model_v1": {
        "what": "torchvision MobileNetV3-Small scene classifier at 160x160, trained from "
                "scratch.",
        "command": "python -m training.train_classifier --data data/primitives --epochs 8",
        "notes": "Six synthetic scene classes; meaningless on photographs.",
    },
}

DATA = """All three are trained on the synthetic data set of `python -m training.datagen --out
data/primitives --train 3000 --val 300 --test 400 --seed 0` (`make data`): procedurally drawn
scenes (office, kitchen, bedroom, street, forest, beach) holding 0-8 shaded 3-D primitives
(sphere, cube, cylinder, cone, pyramid) with random pose, perspective, colour, lighting,
occlusion, blur, noise and JPEG artefacts. Figures are on the held-out `test` split (400 images,
never seen in training), from `python -m training.evaluate` (`make evaluate`), which runs the
predictor classes the deployments serve (`inference/`). CPU times: median of 50 single images
on the 2-core build machine."""


def render(metrics: dict) -> str:
    out = ["# Shipped weights: model cards", "", DATA, ""]
    for name, card in CARDS.items():
        m = metrics.get(name)
        out += [f"## {name}", "", card["what"], "", f"- Training: `{card['command']}`"]
        if m:
            out.append(f"- Weights: `{m['weights']}`, sha256 `{m['weights_sha256']}`")
            if "mAP50" in m:
                per_class = ", ".join(f"{k} {v:.3f}" for k, v in m["AP50_per_class"].items())
                out.append(f"- mAP@0.5 ({m['iou']} IoU, {m['images']} images, {m['objects']} "
                           f"objects): **{m['mAP50']:.3f}** — per class: {per_class}")
            if "accuracy" in m:
                out.append(f"- Accuracy ({sum(map(sum, m['confusion_matrix_rows_true']))} "
                           f"images): **{m['accuracy']:.3f}**; confusion matrix (rows true, "
                           f"columns predicted, order {', '.join(m['classes'])}): "
                           f"`{m['confusion_matrix_rows_true']}`")
            out.append(f"- CPU ms per image (batch 1, median of 50): "
                       f"{m['cpu_ms_per_image_median_of_50']}")
        out += [f"- {card['notes']}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=Path("weights/metrics.json"))
    parser.add_argument("--out", type=Path, default=Path("weights/README.md"))
    args = parser.parse_args(argv)
    args.out.write_text(render(json.loads(args.metrics.read_text())))


if __name__ == "__main__":
    main()
