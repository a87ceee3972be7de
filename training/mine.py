"""Hard negatives: the training images without primitives that a detector still finds
primitives in, listed for the next sitting to draw more often (``--mined``, ``mined=W`` in
``--mix``).

Usage: ``python -m training.mine --model YOLO --data data/primitives --out runs/mined-YOLO.txt``

Repeating the same distractor scenes more often did not lower the false boxes on held-out
ones (round 3's fifth sitting, docs/failures.md); what the weights get wrong is a narrower
set: the scenes they fire on. Every training image of a source without labels
(``NEGATIVE_SOURCES``) goes through the weights at ``--at``; an image with any detection at
or above it is listed, highest score first, one path a line (an ultralytics list file).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from inference import Detection
from training.mix import source_of

log = logging.getLogger(__name__)

# The sources whose images hold no primitive (training.sources): any box on them is false.
NEGATIVE_SOURCES = ("distractors", "photo", "photo_recoloured", "photo_on_scene")


def mine(
    predict: Callable[[list[np.ndarray]], list], images: Iterable[Path], at: float
) -> list[tuple[Path, float, str]]:
    """``(image, top score, its class)`` for each image with a detection at ``at`` or more,
    highest score first."""
    found = []
    for image in images:
        detection = predict([np.asarray(Image.open(image).convert("RGB"))])[0]
        assert isinstance(detection, Detection)
        top = max(detection.primitives, key=lambda p: p.probability, default=None)
        if top is not None and top.probability >= at:
            found.append((image, top.probability, top.primitive_class))
    return sorted(found, key=lambda f: -f[1])


def negative_images(data: Path, sources: Iterable[str] = NEGATIVE_SOURCES) -> list[Path]:
    """The training images of these sources."""
    wanted = set(sources)
    images = sorted((data / "images" / "train").glob("*.jpg"))
    return [i for i in images if source_of(i) in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the registered detector, e.g. YOLO")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped ones")
    parser.add_argument("--data", type=Path, default=Path("data/primitives"))
    parser.add_argument("--sources", nargs="*", default=list(NEGATIVE_SOURCES))
    parser.add_argument(
        "--at", type=float, default=0.25, help="a detection this sure makes an image hard"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from config.registry import ModelType
    from config.serve_config import load_app_config
    from inference import build_predictor

    try:
        spec = load_app_config(None).registry.by_name(args.model)
    except KeyError as e:
        raise SystemExit(f"--model: {e.args[0]}") from None
    if spec.type is not ModelType.detection:
        raise SystemExit(f"--model {args.model!r}: not a detector")
    update: dict = {"confidence_threshold": args.at}
    if args.weights is not None:
        update["weights"] = args.weights
    predictor = build_predictor(spec.model_copy(update=update))
    images = negative_images(args.data, args.sources)
    if not images:
        raise SystemExit(f"no training images of {args.sources} in {args.data}")
    found = mine(predictor.predict, tqdm(images, desc="mining", unit="img"), args.at)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{image.resolve()}\n" for image, _, _ in found))
    by_source = Counter(source_of(image) for image, _, _ in found)
    by_class = Counter(c for _, _, c in found)
    log.info(
        "%d of %d images with a detection >= %.2f (by source %s; top class %s): %s",
        len(found),
        len(images),
        args.at,
        dict(by_source),
        dict(by_class),
        args.out,
    )


if __name__ == "__main__":
    main()
