"""Train the SSD detector: torchvision SSDlite320 (MobileNetV3-Large, reduced tail).

SSD predicts axis-aligned boxes, so the served SSD reports rotation 0; its targets are the
axis-aligned hulls of the oriented labels.

Images without labels (photographs, distractor-only scenes) teach it the background: through
``learn_background``, since torchvision's SSD loss takes its negatives in proportion to an
image's positives and so learns nothing from an image without any.

Usage: ``python -m training.train_ssd --data data/primitives --epochs 8`` (``--init
weights/ssdlite.pt`` fine-tunes the shipped weights; ``--mix`` and ``--val-sources`` as for
``training.train_yolo``)
Resumes from ``runs/ssd/last.pt`` unless ``--fresh``; uses CUDA when present. After each
epoch the served predictor (``inference``) measures mAP@0.5 on the validation split's
labelled images; the best epoch's weights are the ones written to ``--out``, and the curve
goes to the training history (``training.history``).
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from inference.processing import set_ssd_input_size
from inference.weights import load_torchvision_checkpoint
from training import history
from training.checkpoints import load_run, save_run, write_weights
from training.dataset import Item, axis_aligned, read_split
from training.mix import (
    add_arguments,
    by_source,
    describe,
    draw,
    only,
    parse_mix,
    with_mined,
)
from training.render import PRIMITIVE_CLASSES

if TYPE_CHECKING:
    from config.registry import ModelSpec

log = logging.getLogger(__name__)
ARCH = "ssdlite320_mobilenet_v3_large"


class Boxes(Dataset):
    """Images resized to size x size (SSDlite's own input size) with xyxy targets."""

    def __init__(self, items: list[Item], size: int, train: bool):
        self.items, self.size, self.train = items, size, train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        img = (
            Image.open(item.image)
            .convert("RGB")
            .resize((self.size, self.size), Image.Resampling.BILINEAR)
        )
        arr = np.asarray(img, dtype=np.float32) / 255.0
        boxes = axis_aligned(item.corners, self.size, self.size)
        if self.train and np.random.rand() < 0.5:
            arr = arr[:, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.size - boxes[:, [2, 0]]
        if self.train and np.random.rand() < 0.5:  # exposure, white balance, saturation
            grey = arr.mean(axis=2, keepdims=True)
            arr = grey + (arr - grey) * np.random.uniform(0.5, 1.4)
            arr = np.clip(
                arr * np.random.uniform(0.8, 1.2, size=3) * np.random.uniform(0.75, 1.25), 0, 1
            ).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        target = {
            "boxes": torch.from_numpy(boxes).reshape(-1, 4),
            "labels": torch.from_numpy(item.classes + 1),
        }  # 0 is the background
        return x, target


def _image(item: Item) -> Path:
    return item.image


def training_items(
    items: list[Item], mix: dict[str, float], limit: int = 0, mined: Path | None = None
) -> list[Item]:
    """An epoch's training images: each source's drawn by its weight in ``mix``, the images
    ``mined`` lists as the source ``mined``; with ``limit``, a sample of that, every source
    in its share."""
    drawn = draw(with_mined(by_source(items, _image), mined, _image), mix)
    return random.Random(0).sample(drawn, min(limit, len(drawn))) if limit else drawn


def build_model(num_classes: int, size: int):
    model = torchvision.models.get_model(
        ARCH, weights=None, weights_backbone=None, num_classes=num_classes + 1
    )
    set_ssd_input_size(model, size)
    return model


def learn_background(model: torchvision.models.detection.SSD) -> torchvision.models.detection.SSD:
    """Give ``model``'s training loss the images without a primitive.

    torchvision's SSD loss classifies ``neg_to_pos_ratio`` background anchors for each
    foreground anchor of the same image (the hardest ones), so an image with no foreground
    adds nothing: distractor scenes and photographs drawn as negatives were never learned,
    and the weights fired on more of them after a sitting that drew them than before. This
    adds, for each such image, the background loss of its hardest anchors, as many as a
    labelled image of the batch gets on average (``neg_to_pos_ratio`` times its foreground
    anchors), normalised like the rest of the loss by the batch's foreground anchors.
    """
    standard = model.compute_loss

    def compute_loss(targets, head_outputs, anchors, matched_idxs):
        losses = standard(targets, head_outputs, anchors, matched_idxs)
        foreground = torch.stack([(m >= 0).sum() for m in matched_idxs])
        empty = foreground == 0
        if not empty.any():
            return losses
        labelled = int((~empty).sum())
        per_image = foreground.sum().item() / labelled if labelled else 1.0
        hardest = max(1, round(model.neg_to_pos_ratio * per_image))
        # cross-entropy against class 0 (background) for every anchor of those images
        background = -head_outputs["cls_logits"][empty].log_softmax(-1)[..., 0]
        worst = background.topk(min(hardest, background.shape[1]), dim=1).values.sum()
        losses["classification"] = losses["classification"] + worst / max(1, int(foreground.sum()))
        return losses

    model.compute_loss = compute_loss
    return model


def served_spec() -> ModelSpec:
    """The SSD model that serve_config.yaml registers."""
    from config.serve_config import load_app_config

    return next(m for m in load_app_config(None).registry.models if m.arch == ARCH)


def validation_map(weights: Path, items: list[Item], device: str, size: int) -> float:
    """mAP@0.5 of these weights through the predictor the SSD deployment serves, at the
    input size they were trained at (the served size may not have caught up yet)."""
    from inference import build_predictor
    from training.evaluate import EVAL_CONFIDENCE, detection_map

    spec = served_spec().model_copy(
        update={"weights": weights, "confidence_threshold": EVAL_CONFIDENCE, "image_size": size}
    )
    predictor = build_predictor(spec, device=device)
    return round(detection_map(predictor.predict, items, rotated=False)["mAP50"], 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--size", type=int, default=None, help="input side; default: the served one"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit", type=int, default=0, help="use only this many train images")
    parser.add_argument("--run", type=Path, default=Path("runs/ssd"))
    parser.add_argument("--out", type=Path, default=Path("weights/ssdlite.pt"))
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these shipped weights instead of from scratch",
    )
    add_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = served_spec().image_size
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    items = training_items(
        read_split(args.data, "train"), parse_mix(args.mix), args.limit, args.mined
    )
    loader = DataLoader(
        Boxes(items, args.size, train=True),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        collate_fn=lambda batch: tuple(zip(*batch, strict=True)),
    )
    model = learn_background(build_model(len(PRIMITIVE_CLASSES), args.size)).to(device)
    if args.init is not None:
        model.load_state_dict(load_torchvision_checkpoint(args.init))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(loader), pct_start=0.15
    )
    start = 0 if args.fresh else load_run(args.run, model, opt, sched)
    val = read_split(args.data, "val")
    if args.val_sources:
        val = only(by_source(val, _image), args.val_sources)
    val = [i for i in val if len(i.classes)]
    log.info("%d training images an epoch, %d validation images", len(items), len(val))
    curve = history.read_curve(args.run)
    began = time.monotonic() - (curve[-1]["seconds"] if curve else 0.0)
    for epoch in range(start, args.epochs):
        model.train()
        bar = tqdm(loader, desc=f"ssd epoch {epoch + 1}/{args.epochs}", unit="batch")
        for images, targets in bar:
            images = [x.to(device) for x in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        epoch_weights = args.run / f"epoch-{epoch + 1}.pt"
        write_weights(
            epoch_weights, model, arch=ARCH, classes=list(PRIMITIVE_CLASSES), image_size=args.size
        )
        score = validation_map(epoch_weights, val, device, args.size)
        log.info("epoch %d: validation mAP@0.5 %.4f", epoch + 1, score)
        curve.append(
            {"epoch": epoch + 1, "mAP50": score, "seconds": round(time.monotonic() - began, 1)}
        )
        history.write_curve(args.run, curve)
        save_run(args.run, model, opt, sched, epoch + 1)
    if not curve:  # nothing trained in this call and no curve on record
        write_weights(
            args.out, model, arch=ARCH, classes=list(PRIMITIVE_CLASSES), image_size=args.size
        )
        return
    best = max(curve, key=lambda row: row["mAP50"])
    shutil.copyfile(args.run / f"epoch-{best['epoch']}.pt", args.out)
    log.info("wrote %s (epoch %d of %d)", args.out, best["epoch"], len(curve))
    history.record(
        "SSD",
        init=str(args.init or "scratch"),
        epochs=curve,
        seconds=curve[-1]["seconds"],
        metric="mAP50",
        val_sources=args.val_sources,
        images=f"{args.data} (train{describe(args)}), size {args.size}",
        best_epoch=best["epoch"],
    )


if __name__ == "__main__":
    main()
