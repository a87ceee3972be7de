"""Calibration of a scene classifier: temperature scaling and the ``unknown`` threshold.

``fit_temperature`` picks the temperature that minimises the negative log-likelihood of the
validation split (Guo et al., 2017: one scalar dividing the logits; it changes no prediction,
only the confidence); images without a scene class (label -1: photographs, noise, rooms, the
other renderer) count with the uniform target, as in training, so the temperature is fitted
on what the model will meet, not only on the six scenes. ``expected_calibration_error`` bins
the top probability (15 equal-width bins) and averages |accuracy - confidence| weighted by
each bin's share. ``separating_threshold`` is the ``unknown`` threshold that best separates
the validation split's in-domain images from its out-of-domain ones (the most in-domain kept
plus out-of-domain refused, Youden's J); ``unknown_threshold`` the one that keeps a given
share of in-domain images.

Usage (prints what to put in ``serve_config.yaml``)::

    python -m training.calibrate --data data/primitives --model model_v1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from inference.processing import softmax

log = logging.getLogger(__name__)
BINS = 15


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL; rows labelled -1 are scored against the uniform distribution."""
    logp = np.log(np.clip(softmax(logits, temperature), 1e-12, 1))
    known = labels >= 0
    terms = np.concatenate([-logp[known, labels[known]], -logp[~known].mean(axis=1)])
    return float(terms.mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] with the lowest NLL (log-spaced grid, then refined)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 200))
    best = min(grid, key=lambda t: nll(logits, labels, t))
    fine = best * np.exp(np.linspace(-0.05, 0.05, 41))
    return float(min(fine, key=lambda t: nll(logits, labels, t)))


def reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> tuple[float, list[dict]]:
    """(ECE, per-bin {lo, hi, count, confidence, accuracy}) for top-1 predictions."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        n = int(inside.sum())
        if n:
            gap = abs(correct[inside].mean() - conf[inside].mean())
            ece += n / len(conf) * gap
            table.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "count": n,
                    "confidence": float(conf[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return float(ece), table


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float:
    return reliability(probs, labels)[0]


def separating_threshold(top: np.ndarray, known: np.ndarray) -> float:
    """The threshold (0.01 steps) maximising in-domain kept + out-of-domain refused."""
    grid = np.round(np.arange(0.05, 1.0, 0.01), 2)
    return float(max(grid, key=lambda th: (top[known] >= th).mean() + (top[~known] < th).mean()))


def unknown_threshold(probs: np.ndarray, keep: float = 0.99) -> float:
    """The threshold under which ``1 - keep`` of these in-domain images fall."""
    return float(np.floor(np.quantile(probs.max(axis=1), 1 - keep) * 100) / 100)


def reliability_png(table: list[dict], path: Path, title: str) -> None:
    """The reliability diagram: accuracy against confidence per bin, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5.5), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    centres = [(b["lo"] + b["hi"]) / 2 for b in table]
    width = 1 / BINS
    ax.bar(
        centres,
        [b["accuracy"] for b in table],
        width=width * 0.9,
        color="#4a7ab0",
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in table],
        [b["accuracy"] for b in table],
        "o",
        color="#c0392b",
        label="mean confidence",
    )
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    hist.bar(centres, [b["count"] for b in table], width=width * 0.9, color="#7f8c8d")
    hist.set_yscale("log")
    hist.set_xlabel("top probability (calibrated)")
    hist.set_ylabel("images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def classifier_logits(model, items) -> tuple[np.ndarray, np.ndarray]:
    """(logits, scene labels) of a ClassifierPredictor over data set items, 32 at a time."""
    logits, labels = [], []
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        arrays = [np.asarray(Image.open(i.image).convert("RGB")) for i in chunk]
        logits.append(model.logits(arrays))
        labels += [i.scene for i in chunk]
    return np.concatenate(logits), np.asarray(labels)


def main(argv: list[str] | None = None) -> None:
    from config.serve_config import load_app_config
    from inference import build_predictor
    from training.dataset import read_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--model", default="model_v1")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument(
        "--keep",
        type=float,
        default=None,
        help="instead of separating: the share of in-domain validation images "
        "that must stay classified",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = load_app_config(args.config).registry.by_name(args.model)
    model = build_predictor(spec.model_copy(update={"temperature": 1.0, "unknown_threshold": None}))
    items = read_split(args.data, "val")
    logits, labels = classifier_logits(model, items)
    known = labels >= 0
    t = fit_temperature(logits, labels)
    probs = softmax(logits, t)
    top = probs.max(axis=1)
    threshold = (
        unknown_threshold(probs[known], args.keep)
        if args.keep is not None
        else separating_threshold(top, known)
    )
    print(
        f"validation: {known.sum()} images with a scene, {(~known).sum()} without; NLL "
        f"{nll(logits, labels, 1.0):.4f} at T=1, {nll(logits, labels, t):.4f} at T={t:.3f}; "
        f"ECE (scenes) {expected_calibration_error(softmax(logits[known]), labels[known]):.4f}"
        f" -> {expected_calibration_error(probs[known], labels[known]):.4f}; below "
        f"{threshold:.2f}: {(top[known] < threshold).mean():.3f} of the scenes, "
        f"{(top[~known] < threshold).mean():.3f} of the rest"
    )
    print(
        f"serve_config.yaml, model {args.model}:\n  temperature: {t:.3f}\n"
        f"  unknown_threshold: {threshold:.2f}"
    )


if __name__ == "__main__":
    main()
