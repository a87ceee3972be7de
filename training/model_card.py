"""Write weights/README.md (the model cards) from weights/metrics.json.

The ``baseline`` section of the metrics (the previous weights, trained on the original
renderer only, evaluated by the same command) is the "renderer A only" column.

Usage: ``python -m training.model_card`` after ``make evaluate``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from training.datagen import PLAN

# Targets of issue 10, as (metric path, comparison, value) rows of the tables.
COST_BOUND = 1.5
BASELINE_MS = {"YOLO": 22.8, "SSD": 29.6, "model_v1": 5.7}

CARDS: dict[str, dict[str, Any]] = {
    "YOLO": {
        "what": "Ultralytics YOLOv8n-OBB (oriented boxes) at 256x256, first trained from "
        "scratch (no downloaded weights) on the original renderer, then fine-tuned on "
        "the mixed data set.",
        "commands": [
            "python -m training.train_yolo --epochs 20 --fraction 0.67   # the original "
            "data set: renderer A only (git history, weights before issue 10)",
            "python -m training.train_yolo --model weights/yolo_obb.pt --name yolo_ft "
            "--epochs 5 --close-mosaic 2 --fraction 0.67",
            "python -m training.train_yolo --model weights/yolo_obb.pt --name yolo_mixed "
            "--epochs 4 --close-mosaic 1   # the mixed data set (make data)",
        ],
        "targets": {"own": 0.92, "other_renderer": 0.80},
        "notes": "Predicts rotated boxes: `rotation` is meaningful. mAP uses exact rotated "
        "IoU (polygon intersection), stricter than ultralytics' own probIoU-based "
        "validation figure.",
    },
    "SSD": {
        "what": "torchvision SSDlite320 with a MobileNetV3-Large backbone (reduced tail), run "
        "at 256x256, first trained from scratch on the original renderer, then "
        "fine-tuned on the mixed data set.",
        "commands": [
            "python -m training.train_ssd --epochs 7 --size 256   # renderer A only (before)",
            "python -m training.train_ssd --init weights/ssdlite.pt --run runs/ssd_mixed "
            "--epochs 2 --lr 1e-3   # the mixed data set",
        ],
        "targets": {"own": 0.83, "other_renderer": 0.65},
        "notes": "SSD predicts axis-aligned boxes: the API reports `rotation` 0 for it, and its "
        "mAP is measured with axis-aligned IoU against the axis-aligned hulls of the "
        "oriented labels (what it is trained on).",
    },
    "model_v1": {
        "what": "torchvision MobileNetV3-Small scene classifier at 160x160, trained from "
        "scratch on renderer A's six scene backgrounds, then fine-tuned on the mixed "
        "data set with outlier exposure (images without a scene class learn a uniform "
        "answer), then temperature-scaled on the validation split.",
        "commands": [
            "python -m training.train_classifier --epochs 8   # renderer A only (before)",
            "python -m training.train_classifier --init weights/scene_classifier.pt "
            "--run runs/classifier_mixed --epochs 3 --lr 1e-3   # the mixed data set",
            "python -m training.calibrate --model model_v1   # temperature and threshold "
            "for serve_config.yaml",
        ],
        "notes": "Six synthetic scene classes. On anything else (photographs, noise, rooms, "
        "the other renderer's scenes) it should answer `unknown`.",
    },
}


def _data_section() -> str:
    rows = ["| split | " + " | ".join(sorted({s for p in PLAN.values() for s in p})) + " |"]
    sources = sorted({s for p in PLAN.values() for s in p})
    rows.append("|---|" + "---|" * len(sources))
    for split, plan in PLAN.items():
        rows.append(f"| `{split}` | " + " | ".join(str(plan.get(s, "")) for s in sources) + " |")
    return "\n".join(
        [
            "All three models are fine-tuned on the mixed data set of `python -m training.datagen "
            "--out data/primitives` (`make data`, deterministic), whose sources are "
            "(`training/sources.py`):",
            "",
            "- `classic`: the original generator (`training/render.py`), six scene backgrounds;",
            "- `randomized`: the same renderer with domain randomization (`training/randomize.py`: "
            "textures on objects and surfaces, rooms in perspective with walls and corners, "
            "several coloured lights with highlights and cast shadows, field of view, camera roll "
            "and elevation, strong occlusion, objects cut by the border, sizes from 6 % to 80 % "
            "of the frame, motion blur, colour jitter, unlabelled distractors: tori, ellipsoids, "
            "capsules, prisms, blobs, text, lines, people-like silhouettes; empty scenes; a share "
            "over crops of the training photographs);",
            "- `raycast`: an independent ray-caster (`training/raycast.py`, no shared code): "
            "primitives standing on textured ground planes before textured walls, analytic "
            "intersections, 1-3 lights with ray-traced shadows, random field of view, elevation "
            "and roll;",
            "- `distractors`: randomized scenes with distractors only; `photo`: crops of the "
            "photographs set aside for training; `noise`: noise and colour fields (no labels).",
            "",
            "Images per split and source:",
            "",
            *rows,
            "",
            "`test` is exactly the original generator's held-out split (the same 400 images the "
            "weights before were measured on). Background-only photographs for evaluation are "
            "never trained on: `grace_hopper.jpg` (matplotlib), `zidane.jpg` and `bus.jpg` "
            "(ultralytics), `camera.png`, `chelsea.png`, `coffee.png` (scikit-image), `china.jpg` "
            "(scikit-learn). Photographs set aside for training: scikit-image's `astronaut`, "
            "`rocket`, `motorcycle_left`, `brick`, `grass`, `gravel`, `horse`, `page`, `text`, "
            "`ihc`, scikit-learn's `flower`.",
            "",
            "Figures below come from `make evaluate` (`python -m training.evaluate`), which runs "
            "the predictor classes the deployments serve (`inference/`) with the options in "
            '`serve_config.yaml`; the "before" column is the same command on the previous weights '
            "(`--section baseline --weights NAME=PATH`). CPU times: median of 50 single images on "
            "the 2-core build machine, both columns measured in one run.",
        ]
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _detector(name: str, m: dict, base: dict | None, card: dict) -> list[str]:
    targets = card["targets"]
    before = base or {}
    bound = before.get("cpu_ms_per_image_median_of_50", BASELINE_MS[name]) * COST_BOUND
    rows = [
        "| | renderer A only (before) | mixed (shipped) | target |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("own", "mAP@0.5, own held-out split (`test`)"),
        ("randomized", "mAP@0.5, randomized scenes"),
        ("other_renderer", "mAP@0.5, the other renderer (ray-caster)"),
    ):
        target = f"≥ {targets[key]:.2f}" if key in targets else ""
        rows.append(
            f"| {label} | {_fmt(before.get(key, {}).get('mAP50'))} | "
            f"**{_fmt(m.get(key, {}).get('mAP50'))}** | {target} |"
        )
    for key, label in (
        ("background_photos", "false detections ≥ 0.5 per photograph"),
        ("background_rendered", "false detections ≥ 0.5 per distractor scene"),
    ):
        rows.append(
            f"| {label} | {_fmt(before.get(key, {}).get('per_image'))} | "
            f"**{_fmt(m.get(key, {}).get('per_image'))}** | ≤ 0.10 |"
        )
    ms = "cpu_ms_per_image_median_of_50"
    rows.append(
        f"| CPU ms per image (batch 1) | {_fmt(before.get(ms), 1)} | "
        f"**{_fmt(m.get(ms), 1)}** | ≤ {bound:.1f} (1.5 × before, same run) |"
    )
    out = rows + ["", "Per class, mAP@0.5 (before → shipped):", ""]
    for key in ("own", "randomized", "other_renderer"):
        if key not in m:
            continue
        per = ", ".join(
            f"{c} {_fmt(before.get(key, {}).get('AP50_per_class', {}).get(c))} → {_fmt(v)}"
            for c, v in m[key]["AP50_per_class"].items()
        )
        out.append(f"- {key} ({m[key]['images']} images, {m[key]['objects']} objects): {per}")
    found = m.get("background_photos", {}).get("found", {})
    if found:
        out.append(
            "- detections ≥ 0.5 on each photograph: "
            + "; ".join(
                f"`{k}` {len(v)}" + (f" ({', '.join(f'{c} {p}' for c, p in v)})" if v else "")
                for k, v in found.items()
            )
        )
    return out


def _classifier(m: dict, base: dict | None) -> list[str]:
    before = base or {}
    ood, bood = m.get("out_of_domain", {}), before.get("out_of_domain", {})
    rows = [
        "| | renderer A only (before) | mixed, calibrated (shipped) | target |",
        "|---|---|---|---|",
        f"| accuracy, held-out split | {_fmt(before.get('accuracy'))} | "
        f"**{_fmt(m.get('accuracy'))}** | |",
        f"| expected calibration error (15 bins) | {_fmt(before.get('ece'))} | "
        f"**{_fmt(m.get('ece'))}** (uncalibrated {_fmt(m.get('ece_uncalibrated'))}) | ≤ 0.05 |",
        f"| `unknown` on in-domain images | — | {_fmt(m.get('unknown_rate_in_domain'))} | |",
        f"| `unknown` on photographs | {_fmt(bood.get('photos_unknown_rate'))} | "
        f"**{_fmt(ood.get('photos_unknown_rate'))}** | portraits: 1.0 |",
        f"| `unknown` on noise | {_fmt(bood.get('noise', {}).get('unknown_rate'))} | "
        f"{_fmt(ood.get('noise', {}).get('unknown_rate'))} | |",
        f"| `unknown` on the other renderer | "
        f"{_fmt(bood.get('other_renderer', {}).get('unknown_rate'))} | "
        f"{_fmt(ood.get('other_renderer', {}).get('unknown_rate'))} | |",
        f"| CPU ms per image (batch 1) | {_fmt(before.get('cpu_ms_per_image_median_of_50'), 1)} | "
        f"**{_fmt(m.get('cpu_ms_per_image_median_of_50'), 1)}** | "
        f"≤ {before.get('cpu_ms_per_image_median_of_50', BASELINE_MS['model_v1']) * COST_BOUND:.1f}"
        " (1.5 × before, same run) |",
        "",
        f"- Served with `temperature: {m.get('temperature')}` and `unknown_threshold: "
        f"{m.get('unknown_threshold')}` (serve_config.yaml); the validation split alone fits "
        f"T = {m.get('temperature_fitted_on_val')}.",
    ]
    if "randomized" in m:
        r = m["randomized"]
        rows.append(
            f"- Randomized scenes over the six backgrounds: accuracy "
            f"{_fmt(r['accuracy'])}, ECE {_fmt(r['ece'])} ({r['images']} images)."
        )
    if ood.get("photos"):
        rows.append(
            "- Each photograph (before → shipped): "
            + "; ".join(
                f"`{k}` {' '.join(map(str, bood.get('photos', {}).get(k, ['—'])))} → "
                f"{' '.join(map(str, v))}"
                for k, v in ood["photos"].items()
            )
        )
    rows.append(
        f"- Confusion matrix (rows true, columns predicted, order "
        f"{', '.join(m.get('classes', []))}): `{m.get('confusion_matrix_rows_true')}`"
    )
    if m.get("reliability_png"):
        rows += ["", f"![reliability diagram]({Path(m['reliability_png']).name})"]
    return rows


def render(metrics: dict) -> str:
    base = metrics.get("baseline", {})
    total = sum(metrics[n]["weights_mb"] for n in CARDS if n in metrics)
    out = [
        "# Shipped weights: model cards",
        "",
        _data_section(),
        "",
        f"Weights together: {total:.1f} MB (bound 40 MB).",
        "",
    ]
    for name, card in CARDS.items():
        m = metrics.get(name)
        out += [
            f"## {name}",
            "",
            card["what"],
            "",
            "Reproduce:",
            "",
            "```sh",
            *card["commands"],
            "```",
            "",
        ]
        if m:
            out.append(
                f"Weights: `{m['weights']}` ({m['weights_mb']} MB), sha256 `{m['weights_sha256']}`"
            )
            out.append("")
            if "accuracy" in m:
                out += _classifier(m, base.get(name))
            else:
                out += _detector(name, m, base.get(name), card)
        out += ["", card["notes"], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=Path("weights/metrics.json"))
    parser.add_argument("--out", type=Path, default=Path("weights/README.md"))
    args = parser.parse_args(argv)
    args.out.write_text(render(json.loads(args.metrics.read_text())))


if __name__ == "__main__":
    main()
