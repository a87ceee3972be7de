"""Which images a training sitting draws, by source: the mix of training images and the
sources whose validation images pick the epoch that ships. Both detectors' trainers use it.

Images are named ``<source>-<index>.jpg`` (``training.datagen``), so an image's source is
its name up to the last dash. Hard negatives listed by ``training.mine`` are one more
group, ``mined``, drawn on top of their own source's share.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A trainer's ``--mix`` and ``--val-sources``."""
    parser.add_argument(
        "--mix",
        nargs="*",
        default=[],
        metavar="SOURCE=WEIGHT",
        help="how often each source's training images are drawn per epoch (2: every image "
        "twice, 0.5: half of them, 1 for sources not named)",
    )
    parser.add_argument(
        "--val-sources",
        nargs="*",
        default=[],
        metavar="SOURCE",
        help="validate (and pick the epoch that ships) on these sources' validation images "
        "only, e.g. the ones the targets are measured on (default: the whole split)",
    )
    parser.add_argument(
        "--mined",
        type=Path,
        default=None,
        metavar="FILE",
        help="training images listed one a line (python -m training.mine: the hard "
        "negatives) drawn as one more source, 'mined', by its weight in --mix (default 1)",
    )


def describe(args: argparse.Namespace) -> str:
    """What a sitting drew, for the training log's ``images`` line: ``, drawn raycast=2 ...,
    mined FILE; validated on raycast ...`` (``training.model_card`` reads the sources after
    "validated on")."""
    return (
        (f", drawn {' '.join(args.mix)}" if args.mix else "")
        + (f", mined {args.mined}" if args.mined else "")
        + (f"; validated on {' '.join(args.val_sources)}" if args.val_sources else "")
    )


def parse_mix(items: list[str]) -> dict[str, float]:
    """``["raycast=2", "classic=0.5"]`` -> ``{"raycast": 2.0, "classic": 0.5}``."""
    mix = {}
    for item in items:
        source, _, weight = item.partition("=")
        try:
            mix[source] = float(weight)
        except ValueError:
            raise SystemExit(f"--mix {item!r}: expected SOURCE=WEIGHT, e.g. raycast=2") from None
        if mix[source] < 0:
            raise SystemExit(f"--mix {item!r}: a weight is 0 or more")
    return mix


def source_of(image: Path) -> str:
    return image.name.rpartition("-")[0]


def by_source(items: Iterable[T], image_of: Callable[[T], Path]) -> dict[str, list[T]]:
    """``items`` grouped by the source of their image, each group in the given order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(source_of(image_of(item)), []).append(item)
    return groups


def with_mined(
    groups: dict[str, list[T]], listed: Path | None, image_of: Callable[[T], Path]
) -> dict[str, list[T]]:
    """``groups`` and, when ``listed`` names a file, one more group ``mined``: the items
    whose image that file lists (``training.mine``), so that ``draw`` can weight them."""
    if listed is None:
        return groups
    if not listed.is_file():
        raise SystemExit(f"--mined {listed}: no such file (python -m training.mine writes it)")
    names = {Path(line).name for line in listed.read_text().split()}
    mined = [item for items in groups.values() for item in items if image_of(item).name in names]
    missing = len(names) - len({image_of(item).name for item in mined})
    if missing:
        raise SystemExit(f"--mined {listed}: {missing} of its images are not training images")
    return {**groups, "mined": mined}


def draw(groups: dict[str, list[T]], mix: dict[str, float]) -> list[T]:
    """Each source's items scaled by its weight in ``mix`` (1 for sources not named): the
    whole source ``int(weight)`` times, then its first part for the fraction left (a
    source's images are alike, so its first ones are as good as any)."""
    unknown = sorted(set(mix) - set(groups))
    if unknown:
        raise SystemExit(f"--mix names {unknown}, not among the sources {sorted(groups)}")
    drawn: list[T] = []
    for source, items in groups.items():
        weight = mix.get(source, 1.0)
        drawn += items * int(weight)
        drawn += items[: round(len(items) * (weight % 1))]
    return drawn


def only(groups: dict[str, list[T]], sources: list[str]) -> list[T]:
    """The items of these sources (``--val-sources``), in the order the sources are named."""
    unknown = sorted(set(sources) - set(groups))
    if unknown:
        raise SystemExit(
            f"--val-sources names {unknown}, not among the validation sources {sorted(groups)}"
        )
    return [item for source in sources for item in groups[source]]
