"""Train the oriented-box YOLO detector from its model yaml (no downloaded weights).

Usage: ``python -m training.train_yolo --data data/primitives/dataset.yaml --epochs 20``
Resumes from ``runs/yolo/weights/last.pt`` when it exists (``--fresh`` starts over), uses
CUDA when present, and copies the best checkpoint to ``--out``. ``--hours H`` fits the run
to H hours: after the first epoch, ultralytics sets the number of epochs (and the learning
rate schedule with it) to what the time allows. The run's validation curve is appended to
the training history (``training.history``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import torch
import yaml

from inference.predictors import set_ultralytics_cpu_threads
from training import history
from training.mix import (
    add_arguments,
    by_source,
    describe,
    draw,
    only,
    parse_mix,
    with_mined,
)

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives/dataset.yaml"))
    parser.add_argument(
        "--model",
        default="yolov8n-obb.yaml",
        help="a model yaml (from scratch) or a .pt to fine-tune from",
    )
    parser.add_argument("--close-mosaic", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--hours", type=float, default=0.0, help="fit the run to this time (0: --epochs)"
    )
    parser.add_argument(
        "--imgsz", type=int, default=None, help="input side; default: the served one"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--optimizer",
        default="auto",
        help="ultralytics' choice: 'auto' picks by the planned iterations, so a long --epochs "
        "or an --hours budget gets SGD at lr 0.01; fine-tuning wants AdamW at --lr0 1e-3",
    )
    parser.add_argument("--lr0", type=float, default=0.01)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of train images used")
    add_arguments(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--project", type=Path, default=Path("runs"))
    parser.add_argument("--name", default="yolo")
    parser.add_argument("--out", type=Path, default=Path("weights/yolo_obb.pt"))
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads for training (every core; ultralytics alone keeps one core idle)",
    )
    args = parser.parse_args(argv)
    if args.imgsz is None:
        args.imgsz = served_image_size()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ultralytics import YOLO

    set_ultralytics_cpu_threads(args.threads)

    run_dir = args.project.resolve() / args.name
    last = run_dir / "weights" / "last.pt"
    data = args.data
    if args.mix or args.val_sources or args.mined:
        data = mixed_dataset(args.data, parse_mix(args.mix), run_dir, args.val_sources, args.mined)
        if args.mix:
            log.info("training images drawn by source: %s (%s)", " ".join(args.mix), data)
        if args.val_sources:
            log.info("validation on %s only", " ".join(args.val_sources))
    device = 0 if torch.cuda.is_available() else "cpu"
    if last.exists() and not args.fresh:
        log.info("resuming from %s", last)
        model = YOLO(str(last))
        model.train(resume=True, device=device)
    else:
        model = YOLO(args.model)
        model.train(
            data=str(data.resolve()),
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            optimizer=args.optimizer,
            lr0=args.lr0,
            fraction=args.fraction,
            workers=args.workers,
            device=device,
            project=str(args.project.resolve()),
            name=args.name,
            exist_ok=True,
            plots=False,
            pretrained=args.model.endswith(".pt"),  # fine-tuning keeps the weights
            warmup_epochs=0.5 if args.model.endswith(".pt") else 3.0,
            amp=torch.cuda.is_available(),
            degrees=0.0,  # the renderer already rotates; OBB rotation augment is costly on CPU
            mosaic=1.0,
            close_mosaic=args.close_mosaic,
            patience=100,
            time=args.hours or None,
            seed=0,
            deterministic=False,
            verbose=False,
        )
    best = run_dir / "weights" / "best.pt"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best if best.exists() else last, args.out)
    log.info("wrote %s", args.out)
    curve = read_curve(run_dir / "results.csv")
    history.record(
        "YOLO",
        init=str(args.model),
        epochs=curve,
        seconds=curve[-1]["seconds"] if curve else 0.0,
        metric="mAP50",
        val_sources=args.val_sources,
        images=f"{args.data} (train, fraction {args.fraction}{describe(args)}), imgsz {args.imgsz}",
    )


def served_image_size() -> int:
    """The input side of the YOLO model that serve_config.yaml registers."""
    from config.registry import Backend
    from config.serve_config import load_app_config

    models = load_app_config(None).registry.models
    return next(m for m in models if m.backend is Backend.ultralytics).image_size


def _by_source(folder: Path) -> dict[str, list[Path]]:
    """A split's images by source."""
    return by_source(sorted(folder.glob("*.jpg")), lambda image: image)


def class_balance(images: list[Path], names: dict[int, str]) -> dict[str, tuple[float, float]]:
    """Per class, over the drawn images (each copy counted): its share of the labelled objects
    and the share of the images that show it. An image's labels are the file ultralytics reads
    for it (``img2label_paths``); an image without one shows nothing."""
    from ultralytics.data.utils import img2label_paths

    unique = sorted(set(images))
    paths: list[str | Path] = list(unique)
    ids: dict[Path, list[int]] = {}
    for image, label in zip(unique, map(Path, img2label_paths(paths)), strict=True):
        lines = label.read_text().splitlines() if label.is_file() else []
        ids[image] = [int(line.split()[0]) for line in lines if line.strip()]
    objects = Counter(k for image in images for k in ids[image])
    showing = Counter(k for image in images for k in set(ids[image]))
    total = max(1, sum(objects.values()))
    return {names[k]: (objects[k] / total, showing[k] / max(1, len(images))) for k in names}


def mixed_dataset(
    data_yaml: Path,
    mix: dict[str, float],
    run_dir: Path,
    val_sources: list[str] | None = None,
    mined: Path | None = None,
) -> Path:
    """Write ``run_dir/dataset.yaml`` whose train split is a list of the training images with
    each source's share scaled by ``mix``: the whole source ``int(weight)`` times, then the
    first part of it for the fraction left (a source's images are alike, so its first ones
    are as good as any), and the images ``mined`` lists (``training.mine``) as the source
    ``mined``. The validation split, which picks the epoch that ships, is the data
    set's own, or only its images from ``val_sources`` when given; the test split is the
    data set's own."""
    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec["path"])
    groups = with_mined(_by_source(root / spec["train"]), mined, lambda image: image)
    drawn = draw(groups, mix)
    lines = [str(i) for i in drawn]
    names = spec.get("names", {})
    names = dict(enumerate(names)) if isinstance(names, list) else names
    log.info(
        "drawn per epoch, by class (share of the objects, share of the images showing it): %s",
        ", ".join(f"{c} {o:.1%} {i:.1%}" for c, (o, i) in class_balance(drawn, names).items()),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.txt").write_text("\n".join(lines) + "\n")
    val = str(root / spec["val"])
    if val_sources:
        val_lines = [str(i) for i in only(_by_source(root / spec["val"]), val_sources)]
        (run_dir / "val.txt").write_text("\n".join(val_lines) + "\n")
        val = str(run_dir / "val.txt")
    spec.update(
        path=str(root),
        train=str(run_dir / "train.txt"),
        val=val,
        test=str(root / spec["test"]),
    )
    out = run_dir / "dataset.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def read_curve(results: Path) -> list[dict[str, float]]:
    """Ultralytics' per-epoch results: the validation mAP (probIoU-based) and the time."""
    if not results.exists():
        return []
    with results.open() as fh:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    return [
        {
            "epoch": int(float(r["epoch"])),
            "mAP50": round(float(r["metrics/mAP50(B)"]), 4),
            "mAP50-95": round(float(r["metrics/mAP50-95(B)"]), 4),
            "seconds": round(float(r.get("time", 0) or 0), 1),
        }
        for r in rows
    ]


if __name__ == "__main__":
    main()
