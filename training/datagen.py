"""Generate the synthetic primitives data set (deterministic for a given seed).

Layout, as ultralytics expects for oriented boxes::

    OUT/images/{train,val,test}/000123.jpg
    OUT/labels/{train,val,test}/000123.txt   class x1 y1 x2 y2 x3 y3 x4 y4 (normalised)
    OUT/scenes.csv                            split,file,scene
    OUT/dataset.yaml                          the ultralytics data file

Usage: ``python -m training.datagen --out data/primitives --train 3000 --val 400 --test 400``
"""

from __future__ import annotations

import argparse
import csv
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_scene

log = logging.getLogger(__name__)

# Each split draws from its own seed stream, so growing one split never changes another.
SPLIT_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}


def _write_one(job: tuple[Path, str, int, int]) -> tuple[str, str, int]:
    out, split, index, seed = job
    sample = render_scene(np.random.default_rng([seed, SPLIT_OFFSETS[split] + index]))
    name = f"{index:06d}"
    w, h = sample.image.size
    sample.image.save(out / "images" / split / f"{name}.jpg", quality=95)
    lines = []
    for box in sample.boxes:
        corners = box.corners() / [w, h]
        coords = " ".join(f"{v:.6f}" for v in np.clip(corners, 0, 1).ravel())
        lines.append(f"{box.class_id} {coords}")
    (out / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return split, f"{name}.jpg", sample.scene


def generate(out: Path, counts: dict[str, int], seed: int, workers: int) -> None:
    """Render every split into ``out`` and write the ultralytics data file."""
    for split in counts:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, i, seed) for split, n in counts.items() for i in range(n)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = list(tqdm(pool.map(_write_one, jobs, chunksize=16), total=len(jobs),
                         desc="rendering", unit="img"))
    with (out / "scenes.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "file", "scene"])
        for split, file, scene in rows:
            writer.writerow([split, file, SCENE_CLASSES[scene]])
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(PRIMITIVE_CLASSES))
    (out / "dataset.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\ntest: images/test\n"
        f"names:\n{names}\n"
    )
    log.info("wrote %d images to %s", len(rows), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/primitives"))
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    generate(args.out, {k: v for k, v in counts.items() if v > 0}, args.seed, args.workers)


if __name__ == "__main__":
    main()
