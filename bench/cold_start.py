"""Scale to zero, measured: how long a task for a model at zero replicas takes (accepted →
result, the task waiting for its replica to start), against the same task on a warm replica,
and the platform's memory with the model at zero and with its replica up.

Usage: ``python -m bench.cold_start`` (``make bench-cold``). Runs the platform as
serve_config.yaml ships it (SSD at zero), with config/short-idle.yaml's short idle delay so that
several cold starts fit in a few minutes. Prints a table and writes bench/out/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import cpu
from bench.run import local_platform
from config.settings import REPO_ROOT
from harness.local_platform import replicas, wait_for
from training.render import render_jpeg

MODEL = "SSD"
MODEL_ID = 2
OVERLAY = REPO_ROOT / "config" / "short-idle.yaml"


def one_task(base: str, headers: dict[str, str], image: bytes) -> tuple[float, dict[str, Any]]:
    """Submit one task for the model, answered when it settles (Prefer: wait); the seconds
    from the POST to its answer, and the body."""
    started = time.perf_counter()
    response = httpx.post(
        f"{base}/api/tasks",
        params={"detection_model_id": MODEL_ID},
        content=image,
        headers={**headers, "Content-Type": "image/jpeg", "Prefer": "wait=60"},
        timeout=90,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "done", body
    return elapsed, body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="cold starts to measure")
    parser.add_argument("--out", type=Path, default=Path("bench/out/cold_start.json"))
    args = parser.parse_args(argv)
    images = [render_jpeg(seed)[0] for seed in range(args.starts + 5)]
    report: dict[str, Any] = {"model": MODEL, "cold_s": [], "warm_s": []}
    with local_platform("cold", overlays=[OVERLAY]) as (base, headers, _env):
        wait_for(lambda: replicas(MODEL) == 0, 60, "SSD at zero")
        time.sleep(10)  # everything else settles
        report["pss_mib_at_zero"] = cpu.memory_pss_mib()
        for n in range(args.starts):
            wait_for(
                lambda: replicas(MODEL, ("RUNNING", "STARTING", "UPDATING")) == 0,
                120,
                "SSD at zero",
            )
            cold, _ = one_task(base, headers, images[n])
            report["cold_s"].append(round(cold, 2))
            warm = [one_task(base, headers, images[args.starts + i])[0] for i in range(3)]
            report["warm_s"].append(round(statistics.median(warm), 3))
            if n == 0:
                report["pss_mib_with_replica"] = cpu.memory_pss_mib()
            report.setdefault("back_to_zero_s", []).append(
                wait_for(lambda: replicas(MODEL) == 0, 120, "SSD back at zero", step=0.25)
            )
    report["cold_s_median"] = statistics.median(report["cold_s"])
    report["warm_s_median"] = statistics.median(report["warm_s"])
    report["replica_mib"] = round(report["pss_mib_with_replica"] - report["pss_mib_at_zero"], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        f"{MODEL} at zero replicas: a task took {report['cold_s_median']:.2f} s "
        f"(median of {args.starts} cold starts: {report['cold_s']}) against "
        f"{report['warm_s_median']:.3f} s on a warm replica; back at zero "
        f"{report['back_to_zero_s']} s after its last task (idle delay 10 s here). "
        f"Platform memory (PSS) {report['pss_mib_at_zero']:.0f} MiB at zero, "
        f"{report['pss_mib_with_replica']:.0f} MiB with the replica up "
        f"({report['replica_mib']:+.0f} MiB)."
    )


if __name__ == "__main__":
    main()
