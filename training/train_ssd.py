"""Train the SSD detector: torchvision SSDlite320 (MobileNetV3-Large, reduced tail).

SSD predicts axis-aligned boxes, so the served SSD reports rotation 0; its targets are the
axis-aligned hulls of the oriented labels.

Images without labels (photographs, distractor-only scenes) teach it the background.

Usage: ``python -m training.train_ssd --data data/primitives --epochs 8`` (``--init
weights/ssdlite.pt`` fine-tunes the shipped weights)
Resumes from ``runs/ssd/last.pt`` unless ``--fresh``; uses CUDA when present.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from inference.processing import set_ssd_input_size
from inference.weights import load_torchvision_checkpoint
from training.checkpoints import load_run, save_run, write_weights
from training.dataset import Item, axis_aligned, read_split
from training.render import PRIMITIVE_CLASSES

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


def build_model(num_classes: int, size: int):
    model = torchvision.models.get_model(
        ARCH, weights=None, weights_backbone=None, num_classes=num_classes + 1
    )
    set_ssd_input_size(model, size)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
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
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    items = read_split(args.data, "train")
    if args.limit:
        items = items[: args.limit]
    loader = DataLoader(
        Boxes(items, args.size, train=True),
        batch_size=args.batch,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        collate_fn=lambda batch: tuple(zip(*batch, strict=True)),
    )
    model = build_model(len(PRIMITIVE_CLASSES), args.size).to(device)
    if args.init is not None:
        model.load_state_dict(load_torchvision_checkpoint(args.init))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(loader), pct_start=0.15
    )
    start = 0 if args.fresh else load_run(args.run, model, opt, sched)
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
        save_run(args.run, model, opt, sched, epoch + 1)
    write_weights(args.out, model, arch=ARCH, classes=list(PRIMITIVE_CLASSES), image_size=args.size)


if __name__ == "__main__":
    main()
