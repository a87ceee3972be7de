"""Train the scene classifier (``model_v1``): a torchvision MobileNetV3-Small.

Images with a scene class are learnt with cross-entropy; images without one (rooms,
photographs, noise, the other renderer: ``scene`` -1) with outlier exposure (Hendrycks et
al., 2019): their target is the uniform distribution, so the model learns to spread its
probability on what is none of the six scenes, which the served ``unknown_threshold`` then
turns into ``"unknown"``.

Usage: ``python -m training.train_classifier --data data/primitives --epochs 8``
(``--init weights/scene_classifier.pt`` fine-tunes the shipped weights). Resumes from
``runs/classifier/last.pt`` unless ``--fresh``; uses CUDA when present. After each epoch:
accuracy on the validation split's images with a scene, and the mean top probability on its
images without one (lower is better: that is what ``"unknown"`` is cut from); the curve goes
to the training history (``training.history``).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from inference.processing import classifier_input
from inference.weights import load_torchvision_checkpoint
from training import history
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
        if self.train and np.random.rand() < 0.5:  # exposure and white balance
            gain = np.random.uniform(0.8, 1.2, size=3) * np.random.uniform(0.8, 1.2)
            arr = np.clip(arr * gain, 0, 255).astype(np.uint8)
        return torch.from_numpy(classifier_input(np.ascontiguousarray(arr), self.size)), item.scene


def object_coverage(item: Item, grid: int = 64) -> float:
    """Share of the frame inside the item's labelled boxes (their union, on a grid)."""
    mask = Image.new("L", (grid, grid), 0)
    draw = ImageDraw.Draw(mask)
    for corners in item.corners:
        draw.polygon([(float(x) * grid, float(y) * grid) for x, y in corners], fill=1)
    return float(np.asarray(mask).mean())


def occluded_as_unknown(items: list[Item], fraction: float) -> tuple[list[Item], int]:
    """The items, those with a scene whose boxes cover at least ``fraction`` of the frame
    learnt as having none (the scene is mostly hidden: a uniform answer, not a guess from
    what is left of it at the edges); how many were changed. ``fraction`` 0 changes none."""
    if fraction <= 0:
        return items, 0
    out = [
        replace(it, scene=-1) if it.scene >= 0 and object_coverage(it) >= fraction else it
        for it in items
    ]
    return out, sum(a.scene != b.scene for a, b in zip(items, out, strict=True))


def scene_loss(logits: torch.Tensor, scene: torch.Tensor, outlier_weight: float) -> torch.Tensor:
    """Cross-entropy on images with a scene; uniform-target cross-entropy on the rest."""
    known = scene >= 0
    loss = logits.new_zeros(())
    if known.any():
        loss = loss + torch.nn.functional.cross_entropy(
            logits[known], scene[known], label_smoothing=0.05
        )
    if (~known).any():
        loss = loss - outlier_weight * torch.log_softmax(logits[~known], dim=1).mean()
    return loss


@torch.inference_mode()
def validate(model, loader: DataLoader, device: str) -> dict[str, float]:
    """Accuracy on images with a scene; mean top probability (T = 1) on those without."""
    model.eval()
    right = known = 0
    top_ood: list[float] = []
    for x, y in loader:
        probs = torch.softmax(model(x.to(device)).float(), dim=1).cpu()
        k = y >= 0
        right += int((probs[k].argmax(1) == y[k]).sum())
        known += int(k.sum())
        top_ood += probs[~k].max(1).values.tolist()
    return {
        "accuracy": round(right / max(1, known), 4),
        "top_probability_out_of_domain": round(float(np.mean(top_ood)) if top_ood else 0.0, 4),
    }


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
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these shipped weights instead of from scratch",
    )
    parser.add_argument(
        "--outlier-weight", type=float, default=1.0, help="weight of the outlier-exposure term"
    )
    parser.add_argument(
        "--occluded-as-unknown",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="learn images whose labelled objects cover this share of the frame as no scene",
    )
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    items = read_split(args.data, "train")
    if args.limit:
        items = items[: args.limit]
    items, hidden = occluded_as_unknown(items, args.occluded_as_unknown)
    if hidden:
        log.info("%d training images with their scene mostly hidden learnt as none", hidden)
    loader = DataLoader(
        Scenes(items, args.size, train=True),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
    )
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=len(SCENE_CLASSES)).to(
        device
    )
    if args.init is not None:
        model.load_state_dict(load_torchvision_checkpoint(args.init))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(loader)
    )
    start = 0 if args.fresh else load_run(args.run, model, opt, sched)
    val_loader = DataLoader(
        Scenes(read_split(args.data, "val"), args.size, train=False),
        batch_size=64,
        num_workers=args.workers,
    )
    curve = history.read_curve(args.run)
    began = time.monotonic() - (curve[-1]["seconds"] if curve else 0.0)
    for epoch in range(start, args.epochs):
        model.train()
        bar = tqdm(loader, desc=f"classifier epoch {epoch + 1}/{args.epochs}", unit="batch")
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            loss = scene_loss(model(x), y, args.outlier_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        scores = validate(model, val_loader, device)
        log.info("epoch %d: %s", epoch + 1, scores)
        curve.append({"epoch": epoch + 1, **scores, "seconds": round(time.monotonic() - began, 1)})
        history.write_curve(args.run, curve)
        save_run(args.run, model, opt, sched, epoch + 1)
    write_weights(
        args.out,
        model,
        arch="mobilenet_v3_small",
        classes=list(SCENE_CLASSES),
        image_size=args.size,
    )
    if curve:
        history.record(
            "model_v1",
            init=str(args.init or "scratch"),
            epochs=curve,
            seconds=curve[-1]["seconds"],
            metric="accuracy",
            images=f"{args.data} (train), size {args.size}"
            + (
                f", scenes covered {args.occluded_as_unknown:g} or more learnt as none"
                if args.occluded_as_unknown
                else ""
            ),
        )


if __name__ == "__main__":
    main()
