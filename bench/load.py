"""Load test: N users submit for a fixed time; every accepted task must reach done.

Usage: ``python -m bench.load --users 20 --seconds 120`` (``make load``). Starts its own local
platform on a scratch PostgreSQL database (or targets ``--url`` with ``--user``/``--password``
accounts ``load0..``), prints accepted, done, failed, rejected and latency percentiles, and exits
non-zero if an accepted task was lost, failed, or a request answered 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from bench.run import percentile

log = logging.getLogger("load")


async def user_loop(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    images: list[bytes],
    until: float,
    stats: dict[str, Any],
) -> None:
    i = 0
    while time.monotonic() < until:
        start = time.perf_counter()
        response = await client.post(
            "/api/tasks",
            content=images[i % len(images)],
            headers={**headers, "Content-Type": "image/jpeg"},
        )
        i += 1
        stats["codes"][response.status_code] += 1
        if response.status_code != 200:
            stats["rejected"] += 1
            retry = float(response.headers.get("retry-after", "1"))
            await asyncio.sleep(min(retry, 5))
            continue
        stats["accepted"].append(response.json()["id"])
        stats["post_ms"].append((time.perf_counter() - start) * 1000)
        task_id = response.json()["id"]
        while True:
            body = (await client.get(f"/tasks/{task_id}/result?wait=30", headers=headers)).json()
            if body["status"] in ("done", "failed"):
                break
        stats[body["status"]] += 1
        stats["e2e_ms"].append((time.perf_counter() - start) * 1000)


async def run_load(
    base: str, tokens: list[str], images: list[bytes], seconds: float
) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "accepted": [],
        "done": 0,
        "failed": 0,
        "rejected": 0,
        "post_ms": [],
        "e2e_ms": [],
        "codes": Counter(),
    }
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=len(tokens) * 2 + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                user_loop(client, {"Authorization": f"Bearer {t}"}, images, until, stats)
                for t in tokens
            )
        )
        elapsed = time.perf_counter() - started
    return {
        "users": len(tokens),
        "seconds": round(elapsed, 1),
        "accepted": len(stats["accepted"]),
        "done": stats["done"],
        "failed": stats["failed"],
        "rejected": stats["rejected"],
        "status_codes": dict(stats["codes"]),
        "done_per_s": round(stats["done"] / elapsed, 2),
        "post_ms_p50": percentile(stats["post_ms"], 50),
        "post_ms_p95": percentile(stats["post_ms"], 95),
        "e2e_ms_p50": percentile(stats["e2e_ms"], 50),
        "e2e_ms_p95": percentile(stats["e2e_ms"], 95),
        "e2e_ms_p99": percentile(stats["e2e_ms"], 99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--url", help="an already running platform (default: start one)")
    parser.add_argument("--password", default="load-test-pw")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from training.render import render_jpeg

    images = [render_jpeg(20_000 + i)[0] for i in range(16)]
    env: dict[str, str] = {}
    url = None
    try:
        if args.url:
            base = args.url
        else:
            from harness.local_platform import start_local_platform
            from harness.scratch_db import create_scratch_database
            from storage.database import make_engine, make_session_factory
            from storage.users import create_user

            url = create_scratch_database("primitives_load")
            env = {
                "PRIMITIVES_DATABASE_URL": url,
                "PRIMITIVES_ENVIRONMENT": "production",
                "PRIMITIVES_JWT_SECRET": secrets.token_urlsafe(48),
                "PRIMITIVES_QUEUE_ACTOR_NAME": f"load_queue_{uuid.uuid4().hex[:6]}",
            }
            base = start_local_platform(env, namespace="primitives-load")
            engine = make_engine(url)
            with make_session_factory(engine)() as db:
                for i in range(args.users):
                    create_user(db=db, username=f"load{i}", password=args.password)
            engine.dispose()
        tokens = [
            httpx.post(
                f"{base}/oauth/login", data={"username": f"load{i}", "password": args.password}
            ).json()["access_token"]
            for i in range(args.users)
        ]
        report = asyncio.run(run_load(base, tokens, images, args.seconds))
    finally:
        if env:
            from harness.local_platform import stop_local_platform
            from harness.scratch_db import drop_scratch_database

            stop_local_platform(env)
            if url:
                drop_scratch_database(url)
    print(json.dumps(report, indent=2))
    lost = report["accepted"] - report["done"] - report["failed"]
    server_errors = sum(n for code, n in report["status_codes"].items() if code >= 500)
    ok = lost == 0 and report["failed"] == 0 and server_errors == 0 and report["done"] > 0
    print(
        f"load: accepted {report['accepted']}, done {report['done']}, lost {lost}, "
        f"failed {report['failed']}, 5xx {server_errors}: {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
