"""Generate the primitives data set from every source (deterministic for a given seed).

Layout, as ultralytics expects for oriented boxes::

    OUT/images/<split>/<source>-000123.jpg
    OUT/labels/<split>/<source>-000123.txt   class x1 y1 x2 y2 x3 y3 x4 y4 (normalised)
    OUT/scenes.csv                            split,file,source,scene ("none": no scene class)
    OUT/dataset.yaml                          the ultralytics data file (train, val)

The splits and what each holds are ``PLAN`` (``--scale`` multiplies every count). ``test`` is
exactly the original generator's held-out split (the same 400 images as before domain
randomization); ``test_randomized``, ``test_raycast`` (the independent renderer) and
``test_background`` (distractors only) are the other evaluation splits. Each (source, split)
draws from its own seed stream, so growing one never changes another.

Usage: ``python -m training.datagen --out data/primitives``
"""

from __future__ import annotations

import argparse
import csv
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES
from training.sources import SOURCES, render_source

log = logging.getLogger(__name__)

PLAN: dict[str, dict[str, int]] = {
    "train": {
        "classic": 1500,
        "randomized": 2200,
        "raycast": 2200,
        "distractors": 1200,
        "photo": 250,
        "noise": 100,
        "photo_recoloured": 800,
        "photo_on_scene": 400,
        "prisms": 1500,
        "small_pyramids": 1500,
        "lookalikes": 1500,
    },
    "val": {
        "classic": 100,
        "randomized": 150,
        "raycast": 100,
        "distractors": 30,
        "photo": 20,
        "noise": 20,
        "photo_recoloured": 20,
        "photo_on_scene": 20,
        "prisms": 30,
        "small_pyramids": 30,
        "lookalikes": 30,
    },
    "test": {"classic": 400},
    "test_randomized": {"randomized": 300},
    "test_raycast": {"raycast": 200},
    "test_background": {"distractors": 150},
}
# The original generator's seed streams, kept so that its splits stay the same images.
CLASSIC_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}


def _rng(seed: int, source: str, split: str, index: int) -> np.random.Generator:
    if source == "classic":
        return np.random.default_rng([seed, CLASSIC_OFFSETS[split] + index])
    return np.random.default_rng(
        [seed, SOURCES.index(source) + 1, sorted(PLAN).index(split), index]
    )


def _write_one(job: tuple[Path, str, str, int, int]) -> tuple[str, str, str, int]:
    out, split, source, index, seed = job
    image, classes, corners, scene = render_source(source, _rng(seed, source, split, index))
    name = f"{source}-{index:06d}"
    w, h = image.size
    image.save(out / "images" / split / f"{name}.jpg", quality=95)
    lines = []
    for c, quad in zip(classes, corners, strict=True):
        coords = " ".join(f"{v:.6f}" for v in np.clip(quad / [w, h], 0, 1).ravel())
        lines.append(f"{int(c)} {coords}")
    (out / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return split, f"{name}.jpg", source, scene


def _rendered(out: Path) -> dict[tuple[str, str], list[str]]:
    """The rows of ``scenes.csv`` whose image and label are on disk, by (split, file)."""
    if not (out / "scenes.csv").exists():
        return {}
    with (out / "scenes.csv").open() as fh:
        rows = [r for r in csv.reader(fh) if r[0] != "split"]
    return {
        (r[0], r[1]): r
        for r in rows
        if (out / "images" / r[0] / r[1]).exists()
        and (out / "labels" / r[0] / (Path(r[1]).stem + ".txt")).exists()
    }


def generate(out: Path, plan: dict[str, dict[str, int]], seed: int, workers: int) -> None:
    """Render every (split, source) of ``plan`` into ``out`` and write the ultralytics data
    file. Images already on disk with their row are kept (rendering is deterministic), so
    growing one count renders only the new images."""
    for split in plan:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    done = _rendered(out)
    wanted = {
        (split, f"{source}-{i:06d}.jpg"): (out, split, source, i, seed)
        for split, sources in plan.items()
        for source, n in sources.items()
        for i in range(n)
    }
    jobs = [job for key, job in wanted.items() if key not in done]
    log.info("%d images to render, %d already there", len(jobs), len(wanted) - len(jobs))
    # Slow sources first, so the pool does not end on a straggler.
    jobs.sort(key=lambda j: j[2] != "raycast")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = list(
            tqdm(
                pool.map(_write_one, jobs, chunksize=8),
                total=len(jobs),
                desc="rendering",
                unit="img",
            )
        )
    table = [
        [split, file, source, SCENE_CLASSES[scene] if scene >= 0 else "none"]
        for split, file, source, scene in rows
    ]
    # Keep what was there: this plan's images rendered before, and every other source.
    table += [r for key, r in done.items() if key in wanted or r[2] not in plan.get(key[0], {})]
    table.sort()
    with (out / "scenes.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "file", "source", "scene"])
        writer.writerows(table)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(PRIMITIVE_CLASSES))
    (out / "dataset.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\ntest: images/test\n"
        f"names:\n{names}\n"
    )
    log.info("wrote %d images to %s", len(rows), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/primitives"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every count")
    parser.add_argument("--splits", nargs="*", default=list(PLAN), help="splits to render")
    parser.add_argument("--sources", nargs="*", default=list(SOURCES), help="sources to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = {
        split: {
            source: max(1, round(n * args.scale))
            for source, n in PLAN[split].items()
            if source in args.sources
        }
        for split in args.splits
    }
    generate(args.out, plan, args.seed, args.workers)


if __name__ == "__main__":
    main()
