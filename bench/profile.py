"""Where the platform's CPU goes under load: py-spy samples every platform process while 32
clients submit and long-poll, and the hottest frames of each group are printed.

Usage: ``python -m bench.profile [--seconds 20]`` (needs py-spy, in the bench extra, and
permission to ptrace the processes: run as root or with CAP_SYS_PTRACE). Collapsed stacks go
to ``bench/out/profile/<group>.txt`` (load them in speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench import cpu
from bench.run import NOOP_OVERLAY, local_platform, platform_load, platform_sync_load


def platform_pids() -> dict[str, list[int]]:
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for proc in psutil.process_iter(["cmdline", "name"]):
        group = cpu.group_of(" ".join(proc.info["cmdline"] or []), proc.info["name"] or "")
        if group not in (None, "postgresql"):
            groups[group].append(proc.pid)
    return dict(groups)


def summarize(path: Path, top: int) -> list[str]:
    """Self time and inclusive time of the hottest functions in a collapsed-stack file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{path.stem}: {total} samples"]
    lines += [f"  self {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += [
        f"  incl {100 * n / total:5.1f}%  {f}"
        for f, n in inclusive.most_common(top)
        if "<module>" not in f
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("bench/out/profile"))
    parser.add_argument(
        "--noop", action="store_true", help="the no-op models (bench/noop.yaml): the platform alone"
    )
    parser.add_argument(
        "--sync", action="store_true", help="one POST with Prefer: wait per task, not two requests"
    )
    parser.add_argument(
        "--gil", action="store_true", help="sample only threads holding the GIL (Python's CPU)"
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise SystemExit("py-spy is not installed (pip install -e '.[bench]')")
    from training.render import render_jpeg

    images = [render_jpeg(10_000 + i)[0] for i in range(64)]
    args.out.mkdir(parents=True, exist_ok=True)
    overlays = [NOOP_OVERLAY] if args.noop else None
    run_load = platform_sync_load if args.sync else platform_load
    with local_platform("profile", overlays=overlays) as (base, headers, _env):
        asyncio.run(run_load(base, headers, images[:16], 8))
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                asyncio.run(run_load(base, headers, images, 32))

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(3)
        recorders = []
        for group, pids in platform_pids().items():
            for pid in pids:
                name = f"{group.replace(' ', '_')}-{pid}"
                recorders.append(
                    (
                        name,
                        subprocess.Popen(
                            [
                                py_spy,
                                "record",
                                "--pid",
                                str(pid),
                                "--duration",
                                str(args.seconds),
                                "--rate",
                                "50",
                                "--format",
                                "raw",
                                "--nonblocking",
                                *(["--gil"] if args.gil else []),
                                "--output",
                                str(args.out / f"{name}.txt"),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        ),
                    )
                )
        for _, rec in recorders:
            rec.wait()
        stop.set()
        loader.join(120)
    for name, _ in recorders:
        path = args.out / f"{name}.txt"
        if path.exists() and path.stat().st_size:
            print("\n".join(summarize(path, args.top)))


if __name__ == "__main__":
    main()
