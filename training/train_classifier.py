"""Train the scene classifier (``model_v1``): a torchvision MobileNetV3-Small from scratch.

Usage: ``python -m training.train_classifier --data data/primitives --epochs 8``
Resumes from ``runs/classifier/last.pt`` unless ``--fresh``; uses CUDA when present.
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

from inference.processing import classifier_input
from training.checkpoints import load_run, save_run, write_weights
from training.dataset import Item, read_split
from training.render import SCENE_CLASSES

log = logging.getLogger(__name__)


class Scenes(Dataset):
    def __init__(self, items: list[Item], size: int, train: bool):
        self.items, self.size, self.train = items, size, train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        arr = np.asarray(Image.open(item.image).convert("RGB"))
        if self.train and np.random.rand() < 0.5:
            arr = arr[:, ::-1]
        return torch.from_numpy(classifier_input(np.ascontiguousarray(arr), self.size)), item.scene


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--limit", type=int, default=0, help="use only this many train images")
    parser.add_argument("--run", type=Path, default=Path("runs/classifier"))
    parser.add_argument("--out", type=Path, default=Path("weights/scene_classifier.pt"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    items = read_split(args.data, "train")
    if args.limit:
        items = items[: args.limit]
    loader = DataLoader(Scenes(items, args.size, train=True), batch_size=args.batch,
                        shuffle=True, num_workers=2, drop_last=True)
    model = torchvision.models.mobilenet_v3_small(weights=None,
                                                  num_classes=len(SCENE_CLASSES)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=len(loader))
    start = 0 if args.fresh else load_run(args.run, model, opt, sched)
    for epoch in range(start, args.epochs):
        model.train()
        bar = tqdm(loader, desc=f"classifier epoch {epoch + 1}/{args.epochs}", unit="batch")
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        save_run(args.run, model, opt, sched, epoch + 1)
    write_weights(args.out, model, arch="mobilenet_v3_small", classes=list(SCENE_CLASSES),
                  image_size=args.size)


if __name__ == "__main__":
    main()
