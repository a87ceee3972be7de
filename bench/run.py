"""The benchmark: the models alone (the floor), the platform over HTTP, and Ray's own cost.

Usage: ``python -m bench.run`` (``make bench``); prints one table and writes JSON to
``bench/out/results.json``. Needs PostgreSQL (as the tests do). Every figure comes from one
run on one machine, so compare the ratios, not the absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

log = logging.getLogger("bench")
DETECTOR, CLASSIFIER = "YOLO", "model_v1"


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


# -- the floor ------------------------------------------------------------------------------

def measure_floor(images: list[bytes], batch: int) -> dict[str, Any]:
    """Each model in this process, nothing around it: batch 1 latency, batch-N throughput."""
    from config.serve_config import load_app_config
    from inference import build_predictor
    from inference.images import decode_image

    arrays = [decode_image(b) for b in images]
    out: dict[str, Any] = {}
    for spec in load_app_config().registry.models:
        model = build_predictor(spec)
        model.predict(arrays[:2])
        single = []
        for arr in arrays:
            start = time.perf_counter()
            model.predict([arr])
            single.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        for i in range(0, len(arrays), batch):
            model.predict(arrays[i:i + batch])
        batched_s = time.perf_counter() - start
        out[spec.name] = {
            "batch1_ms_p50": percentile(single, 50), "batch1_ms_p95": percentile(single, 95),
            "batch1_img_per_s": round(1000 * len(single) / sum(single), 2),
            f"batch{batch}_img_per_s": round(len(arrays) / batched_s, 2),
        }
        del model
    det, clf = out[DETECTOR], out[CLASSIFIER]
    # A task needs both models; in one process they run one after the other.
    out["task_floor"] = {
        "single_image_ms": round(det["batch1_ms_p50"] + clf["batch1_ms_p50"], 2),
        "img_per_s": round(1 / (1 / det[f"batch{batch}_img_per_s"]
                                + 1 / clf[f"batch{batch}_img_per_s"]), 2),
    }
    return out


# -- the platform ---------------------------------------------------------------------------

async def run_clients(base: str, headers: dict[str, str], images: list[bytes],
                      concurrency: int, submit_only: bool = False,
                      path: str = "/api/tasks?detection_model_id=1&classification_model_id=3"
                      ) -> dict[str, Any]:
    """``concurrency`` clients share the images: each submits, long-polls, reads the result."""
    pending = list(enumerate(images))
    post_ms: list[float] = []
    e2e_ms: list[float] = []
    rejected = 0
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal rejected
            while pending:
                _, image = pending.pop()
                start = time.perf_counter()
                response = await client.post(path, content=image,
                                             headers={**headers, "Content-Type": "image/jpeg"})
                post_ms.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    rejected += 1
                    continue
                if submit_only:
                    continue
                task_id = response.json()["id"]
                while True:  # long poll: the answer comes when the task finishes
                    body = (await client.get(f"/tasks/{task_id}/result?wait=30",
                                             headers=headers)).json()
                    if body["status"] in ("done", "failed"):
                        break
                e2e_ms.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    done = len(post_ms) - rejected
    return {
        "concurrency": concurrency, "requests": len(post_ms), "rejected": rejected,
        "img_per_s" if not submit_only else "req_per_s": round(done / elapsed, 2),
        "post_ms_p50": percentile(post_ms, 50), "post_ms_p95": percentile(post_ms, 95),
        **({} if submit_only else {
            "e2e_ms_p50": percentile(e2e_ms, 50), "e2e_ms_p95": percentile(e2e_ms, 95),
            "e2e_ms_p99": percentile(e2e_ms, 99)}),
    }


def ray_memory() -> dict[str, float]:
    """Resident memory of every Ray process on this machine (MiB). PSS (shared pages split
    between the processes that map them) sums to the RAM they really hold; the RSS sum counts
    shared libraries (torch) once per process."""
    import psutil

    rss = uss = pss = 0
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "ray" not in cmd and not (proc.info["name"] or "").startswith("ray"):
                continue
            if "bench.run" in cmd:
                continue
            info = proc.memory_full_info()
            rss += info.rss
            uss += info.uss
            pss += getattr(info, "pss", 0)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {"pss_mib": round(pss / 2**20, 1), "rss_sum_mib": round(rss / 2**20, 1),
            "uss_mib": round(uss / 2**20, 1)}


def trivial_app():
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
    class Trivial:  # sized like the ingress, so that only the work differs
        async def __call__(self, request) -> dict[str, int]:
            await request.body()
            return {"id": 1}

    return Trivial.bind()


def measure_platform(images: list[bytes], concurrencies: list[int]) -> dict[str, Any]:
    import ray

    from serve_app.auth.service import create_user
    from storage.database import make_engine, make_session_factory
    from tests.local_platform import start_local_platform, stop_local_platform
    from tests.scratch_db import create_scratch_database, drop_scratch_database

    url = create_scratch_database("primitives_bench")
    env = {"PRIMITIVES_DATABASE_URL": url, "PRIMITIVES_ENVIRONMENT": "production",
           "PRIMITIVES_JWT_SECRET": uuid.uuid4().hex * 2,
           "PRIMITIVES_MAX_ACTIVE_TASKS_PER_USER": "100000",
           "PRIMITIVES_REQUESTS_PER_MINUTE": "1000000",
           "PRIMITIVES_QUEUE_ACTOR_NAME": f"bench_queue_{uuid.uuid4().hex[:6]}"}
    out: dict[str, Any] = {}
    try:
        base = start_local_platform(env, namespace="primitives-bench",
                                    extra_apps={"/trivial": trivial_app()})
        engine = make_engine(url)
        with make_session_factory(engine)() as db:
            create_user(db=db, username="bench", password="bench-pw")
        engine.dispose()
        token = httpx.post(f"{base}/oauth/login",
                           data={"username": "bench", "password": "bench-pw"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        time.sleep(3)
        out["memory_at_rest"] = ray_memory()
        # One task at a time on an idle system: the latency a single user sees.
        idle = [asyncio.run(run_clients(base, headers, [images[i]], 1))["e2e_ms_p50"]
                for i in range(8)]
        out["idle_single_task_ms_p50"] = round(statistics.median(idle), 2)
        out["runs"] = []
        peak = out["memory_at_rest"]
        for c in concurrencies:
            result = asyncio.run(run_clients(base, headers, images, c))
            mem = ray_memory()
            peak = max(peak, mem, key=lambda m: m["pss_mib"])
            out["runs"].append(result)
            log.info("platform c=%d: %s", c, result)
        out["memory_under_load"] = peak
        # Ingress cost against Ray's own: the same POSTs to a trivial Serve endpoint. The
        # queue is paused meanwhile, so that the models do not compete with the ingress.
        c = max(concurrencies)
        queue = ray.get_actor(env["PRIMITIVES_QUEUE_ACTOR_NAME"], namespace="primitives")
        ray.get(queue.pause.remote())
        out["post_only"] = asyncio.run(run_clients(base, headers, images, c, submit_only=True))
        out["trivial"] = asyncio.run(run_clients(base, headers, images, c, submit_only=True,
                                                 path="/trivial"))
        ray.get(queue.resume.remote())
    finally:
        stop_local_platform(env)
        drop_scratch_database(url)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=Path("bench/out/results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import torch

    from training.render import render_jpeg

    torch.set_num_threads(2)
    images = [render_jpeg(10_000 + i)[0] for i in range(args.images)]
    floor = measure_floor(images, args.batch)
    platform = measure_platform(images, args.concurrency)
    best = max(r["img_per_s"] for r in platform["runs"])
    ratios = {
        "platform_over_floor_throughput": round(best / floor["task_floor"]["img_per_s"], 3),
        "post_over_trivial_throughput": round(platform["post_only"]["req_per_s"]
                                              / platform["trivial"]["req_per_s"], 3),
        "idle_latency_minus_floor_ms": round(platform["idle_single_task_ms_p50"]
                                             - floor["task_floor"]["single_image_ms"], 2),
    }
    report = {"floor": floor, "platform": platform, "ratios": ratios,
              "torch_threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(report))


def render_table(report: dict[str, Any]) -> str:
    floor, platform, ratios = report["floor"], report["platform"], report["ratios"]
    lines = ["| measure | value |", "| --- | --- |"]
    for name, row in floor.items():
        lines += [f"| floor {name} {k} | {v} |" for k, v in row.items()]
    for run in platform["runs"]:
        c = run["concurrency"]
        lines += [f"| platform c={c} {k} | {v} |" for k, v in run.items()
                  if k not in ("concurrency",)]
    lines.append(f"| platform idle single task ms p50 | {platform['idle_single_task_ms_p50']} |")
    for k in ("req_per_s", "post_ms_p50", "post_ms_p95"):
        lines.append(f"| POST /api/tasks only {k} | {platform['post_only'][k]} |")
        lines.append(f"| trivial Serve endpoint {k} | {platform['trivial'][k]} |")
    for when in ("memory_at_rest", "memory_under_load"):
        lines += [f"| Ray processes {when} {k} | {v} |" for k, v in platform[when].items()]
    lines += [f"| ratio {k} | {v} |" for k, v in ratios.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
