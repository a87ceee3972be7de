"""The benchmark: the platform against the floor and its peers, on the same predictors,
weights and images, with CPU accounting per process group.

Usage: ``python -m bench.run`` (``make bench``; ``--config`` names another Serve config, such as
the GPU profile). Prints one table and writes JSON to ``bench/out/results.json``. Needs
PostgreSQL (as the tests do). Every figure comes from one run on one machine, so compare the
ratios, not the absolute numbers across runs.

Rows: the floor (decode + both models in this process, batched); LitServe (a subprocess,
dynamic batching); the smallest synchronous Ray Serve app (an ingress calling one batched
replica of both models by handle), on Ray's defaults and on the fast path of config/ray.env;
the platform on PostgreSQL and on SQLite, each by its contract path (submit, then long-poll
the result) and by its synchronous path (one POST with ``Prefer: wait``); durable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from bench import cpu
from bench.peers import CLASSIFIER, DETECTOR, measure_floor, minimal_serve_app

log = logging.getLogger("bench")


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


# -- clients --------------------------------------------------------------------------------


async def closed_loop(
    images: list[bytes], concurrency: int, one: Callable[[bytes], Awaitable[bool]]
) -> dict[str, Any]:
    """``concurrency`` clients share the images, each sending the next when answered."""
    pending = list(images)
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        while pending:
            image = pending.pop()
            start = time.perf_counter()
            if await one(image):
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "images": len(images),
        "errors": errors,
        "img_per_s": round(len(latencies) / elapsed, 2),
        "ms_p50": percentile(latencies, 50),
        "ms_p95": percentile(latencies, 95),
        "ms_p99": percentile(latencies, 99),
    }


def http_client(base: str, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, timeout=120, limits=httpx.Limits(max_connections=concurrency + 8)
    )


async def sync_peer_load(
    base: str, path: str, images: list[bytes], concurrency: int, as_json: bool
) -> dict[str, Any]:
    async with http_client(base, concurrency) as client:

        async def one(image: bytes) -> bool:
            if as_json:
                response = await client.post(path, json={"image": base64.b64encode(image).decode()})
            else:
                response = await client.post(
                    path, content=image, headers={"Content-Type": "image/jpeg"}
                )
            return response.status_code == 200 and "image_class" in response.json()

        await one(images[0])  # warm the connection and the models
        return await closed_loop(images, concurrency, one)


Headers = dict[str, str] | list[dict[str, str]]


def users_in_turn(headers: Headers) -> Callable[[], dict[str, str]]:
    """The next request's headers: one user's, or each of several users' in turn."""
    turn = itertools.cycle(headers if isinstance(headers, list) else [headers])
    return lambda: next(turn)


async def platform_load(
    base: str, headers: Headers, images: list[bytes], concurrency: int
) -> dict[str, Any]:
    """Submit, then long-poll the result: what a client of the platform does."""
    user = users_in_turn(headers)
    async with http_client(base, concurrency) as client:

        async def one(image: bytes) -> bool:
            headers = user()
            response = await client.post(
                "/api/tasks", content=image, headers={**headers, "Content-Type": "image/jpeg"}
            )
            if response.status_code != 200:
                return False
            task_id = response.json()["id"]
            while True:
                body = (
                    await client.get(f"/tasks/{task_id}/result?wait=30", headers=headers)
                ).json()
                if body["status"] in ("done", "failed"):
                    return body["status"] == "done"

        return await closed_loop(images, concurrency, one)


async def platform_sync_load(
    base: str, headers: Headers, images: list[bytes], concurrency: int
) -> dict[str, Any]:
    """One POST per task with ``Prefer: wait``: the answer is the result (a task not settled
    in time goes on with the result route, as a client would)."""
    user = users_in_turn(headers)
    async with http_client(base, concurrency) as client:

        async def one(image: bytes) -> bool:
            headers = user()
            response = await client.post(
                "/api/tasks",
                content=image,
                headers={**headers, "Content-Type": "image/jpeg", "Prefer": "wait=60"},
            )
            if response.status_code != 200:
                return False
            body = response.json()
            while body["status"] not in ("done", "failed"):
                body = (
                    await client.get(f"/tasks/{body['id']}/result?wait=30", headers=headers)
                ).json()
            return body["status"] == "done"

        return await closed_loop(images, concurrency, one)


async def batch_submit_load(
    base: str, headers: dict[str, str], images: list[bytes], per_request: int, concurrency: int
) -> dict[str, Any]:
    """Multipart submissions of ``per_request`` files each: tasks accepted per second."""
    groups = [images[i : i + per_request] for i in range(0, len(images), per_request)]
    ids: list[int] = []
    async with http_client(base, concurrency) as client:

        async def one(group_index: bytes) -> bool:
            group = groups[int(group_index)]
            files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(group)]
            response = await client.post("/api/tasks", files=files, headers=headers)
            if response.status_code == 200:
                ids.extend(response.json()["ids"])
            return response.status_code == 200

        result = await closed_loop([str(i).encode() for i in range(len(groups))], concurrency, one)
        for task_id in ids:  # let the queue drain before the next measurement
            while (
                await client.get(f"/api/tasks/{task_id}/status?wait=30", headers=headers)
            ).json()["status"] not in ("done", "failed"):
                pass
    return {
        "files_per_request": per_request,
        "requests": len(groups),
        "tasks_accepted": len(ids),
        "tasks_per_s": round(result["img_per_s"] * per_request, 2),
        "request_ms_p50": result["ms_p50"],
    }


# -- the runs -------------------------------------------------------------------------------


def run_litserve(
    images: list[bytes], concurrency: int, batch: int, wait_s: float, threads: int
) -> dict[str, Any]:
    from harness.local_platform import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.litserve_peer",
            "--port",
            str(port),
            "--max-batch-size",
            str(batch),
            "--batch-wait-s",
            str(wait_s),
            "--torch-threads",
            str(threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own process group: LitServe forks workers
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        return asyncio.run(sync_peer_load(base, "/predict", images, concurrency, as_json=True))
    finally:
        # The whole group: terminating the server alone leaves its inference and API
        # workers running, busy-polling their queues (they skewed every later measurement).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the block (Ray's processes, started in
    it, inherit them), then as it was."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_minimal_serve(
    images: list[bytes],
    concurrency: int,
    batch: int,
    wait_s: float,
    threads: int,
    ray_env: dict[str, str],
    overlays: list[str] | None = None,
) -> dict[str, Any]:
    """The smallest app, its Ray started with ``ray_env`` ({} for Ray's defaults), its models
    from serve_config.yaml's registry with ``overlays`` laid over it."""
    import ray
    import torch
    from ray import serve

    from harness.local_platform import free_port

    with environment(ray_env):
        ray.init(num_cpus=4, include_dashboard=False, namespace="bench-minimal")
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        gpus = 1 if torch.cuda.is_available() else 0
        app = minimal_serve_app(batch, wait_s, threads, gpus, overlays=overlays or [])
        serve.run(app, name="minimal", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        asyncio.run(
            sync_peer_load(base, "/", images[:16], 8, as_json=False)
        )  # warm, as the platform
        time.sleep(2)
        return measured_peer(
            sync_peer_load(base, "/", images, concurrency, as_json=False), "BothModels", "minimal"
        )
    finally:
        serve.shutdown()
        ray.shutdown()


def measured_peer(
    load: Awaitable[dict[str, Any]],
    models: str,
    app: str,
    store_cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Run one load on a peer; its figures with the CPU it cost by process group, inside its
    ``models`` deployment's batches and outside them. ``store_cpu_s``: its store's CPU so far
    (Redis), counted in the row; PostgreSQL is not this row's."""
    from ray import serve

    handle = serve.get_deployment_handle(models, app_name=app)
    inference_before = handle.stats.remote().result()["inference_cpu_s"]
    before, store_before = cpu.sample(), store_cpu_s() if store_cpu_s else 0.0
    result: dict[str, Any] = asyncio.run(load)  # type: ignore[arg-type]
    by_group = cpu.cpu_by_group(before, cpu.sample())
    by_group.pop("postgresql", None)
    if store_cpu_s is not None:
        by_group["redis"] = round(store_cpu_s() - store_before, 3)
    inference = handle.stats.remote().result()["inference_cpu_s"] - inference_before
    result["cpu_s_by_group"] = by_group
    _per_task(result, by_group, inference)
    return result


def run_async_inference(
    images: list[bytes],
    concurrency: int,
    threads: int,
    ray_env: dict[str, str],
    overlays: list[str] | None = None,
) -> dict[str, Any]:
    """Ray Serve's asynchronous inference (bench/async_peer.py) on its own Ray, started with
    ``ray_env``; Redis's CPU counts in its row, as PostgreSQL's does in the platform's."""
    import ray
    from ray import serve

    from bench.async_peer import (
        async_inference_app,
        async_inference_load,
        empty_redis_db,
        redis_cpu_s,
    )
    from harness.local_platform import free_port

    empty_redis_db()
    with environment(ray_env):
        ray.init(num_cpus=4, include_dashboard=False, namespace="bench-async")
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = async_inference_app(
            f"bench_{uuid.uuid4().hex[:6]}", threads, concurrency, overlays=overlays or []
        )
        serve.run(app, name="async", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        asyncio.run(async_inference_load(base, images[:16], 8))  # warm, as the platform
        time.sleep(2)
        return measured_peer(
            async_inference_load(base, images, concurrency), "Consumer", "async", redis_cpu_s
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        empty_redis_db()


def model_stats() -> dict[str, dict[str, Any]]:
    """Every model replica's counters, by pid (calls spread over the replicas). Not SSD's:
    the benchmark sends it nothing, and a call would start a replica (it scales to zero)."""
    from ray import serve

    out: dict[str, dict[str, Any]] = {}
    for name in (DETECTOR, CLASSIFIER):
        handle = serve.get_deployment_handle(name, app_name="primitives")
        for _ in range(12):
            stats = handle.stats.remote().result()
            out[f"{name}:{stats['pid']}"] = stats
    return out


def inference_cpu(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> float:
    return sum(
        s["inference_cpu_s"] - before.get(k, {}).get("inference_cpu_s", 0.0)
        for k, s in after.items()
    )


@contextlib.contextmanager
def scratch_database(name: str, database: str) -> Iterator[str]:
    """A migrated, empty database of the kind asked for (``postgresql`` or ``sqlite``, the
    embedded default of ``make run``); its URL, removed afterwards."""
    import tempfile

    from harness.scratch_db import create_scratch_database, drop_scratch_database
    from serve_app.cli import upgrade_database

    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as folder:
            url = f"sqlite:///{folder}/primitives.db"
            upgrade_database(url)
            yield url
        return
    url = create_scratch_database(f"primitives_{name}")
    try:
        yield url
    finally:
        drop_scratch_database(url)


@contextlib.contextmanager
def local_platform(
    name: str,
    config: Path | None = None,
    ray_env: Path | None = None,
    database: str = "postgresql",
    overlays: list[Path] | None = None,
    address: str | None = None,
) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """The platform on a local Ray and a scratch database, with one user logged in:
    ``(base URL, auth headers, PRIMITIVES_* settings)``; everything removed afterwards.
    ``overlays``: config files laid over ``config``; ``address``: a running Ray cluster's."""
    with (
        scratch_database(name, database) as url,
        _platform_on(name, url, config, ray_env, overlays, address) as running,
    ):
        yield running


@contextlib.contextmanager
def _platform_on(
    name: str,
    url: str,
    config: Path | None,
    ray_env: Path | None,
    overlays: list[Path] | None,
    address: str | None,
) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    from config.serve_config import load_ray_env
    from harness.local_platform import start_local_platform, stop_local_platform

    # PRIMITIVES_* settings of this shell reach the platform too.
    env = {
        **{k: v for k, v in os.environ.items() if k.startswith("PRIMITIVES_")},
        "PRIMITIVES_DATABASE_URL": url,
        "PRIMITIVES_ENVIRONMENT": "production",
        "PRIMITIVES_JWT_SECRET": secrets.token_urlsafe(48),
        "PRIMITIVES_MAX_ACTIVE_TASKS_PER_USER": "100000",
        "PRIMITIVES_REQUESTS_PER_MINUTE": "1000000",
        "PRIMITIVES_QUEUE_ACTOR_NAME": f"{name}_queue_{uuid.uuid4().hex[:6]}",
    }
    try:
        base = start_local_platform(
            env,
            namespace=f"primitives-{name}",
            config=config,
            ray_env=load_ray_env(ray_env),
            overlays=overlays,
            address=address,
        )
        yield base, log_in_users(base, url, ["bench"])[0], env
    finally:
        stop_local_platform(env)


def log_in_users(base: str, url: str, names: list[str]) -> list[dict[str, str]]:
    """Create these users in the platform's database; each one's auth headers."""
    from storage.database import make_engine, make_session_factory
    from storage.users import create_user

    engine = make_engine(url)
    with make_session_factory(engine)() as db:
        for name in names:
            create_user(db=db, username=name, password="bench-pw")
    engine.dispose()
    headers = []
    for name in names:
        token = httpx.post(
            f"{base}/oauth/login", data={"username": name, "password": "bench-pw"}
        ).json()
        headers.append({"Authorization": f"Bearer {token['access_token']}"})
    return headers


def _per_task(out: dict[str, Any], by_group: dict[str, float], inference: float) -> None:
    """CPU ms per task by process group, inside the models (each replica's batches: decode and
    predict) and outside them (everything else the row's processes spent, the database's
    included), the same way for every row."""
    tasks = max(1, out["images"] - out["errors"])
    out["cpu_ms_per_task_by_group"] = {g: round(1000 * s / tasks, 2) for g, s in by_group.items()}
    out["inference_cpu_ms_per_task"] = round(1000 * inference / tasks, 2)
    out["platform_cpu_ms_per_task"] = round(1000 * (sum(by_group.values()) - inference) / tasks, 2)


def measured_load(load: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one load on the running platform; its figures with the CPU it cost by process
    group, and how much of that ran outside the models' ``predict``."""
    stats_before, cpu_before = model_stats(), cpu.sample()
    out: dict[str, Any] = asyncio.run(load)  # type: ignore[arg-type]
    by_group = cpu.cpu_by_group(cpu_before, cpu.sample())
    _per_task(out, by_group, inference_cpu(stats_before, model_stats()))
    out["pss_mib"] = cpu.memory_pss_mib()
    return out


def queue_status(name: str) -> dict[str, Any]:
    """The counters of every dispatcher of the queue, added up, and how many there are."""
    import ray

    from deployments.dispatchers import dispatcher_name

    total: dict[str, Any] = {"dispatchers": 0}
    for index in range(64):
        try:
            actor = ray.get_actor(dispatcher_name(name, index), namespace="primitives")
        except ValueError:
            break
        status = cast(dict[str, Any], ray.get(actor.status.remote()))
        total["dispatchers"] += 1
        for key in ("claimed", "done", "failed", "released", "discarded", "model_calls"):
            total[key] = total.get(key, 0) + status.get(key, 0)
        total["coalesce"] = status.get("coalesce", False)
    return total


def dispatchers_overlay(count: int, folder: Path, coalesce: bool = False) -> Path:
    """A config overlay that runs the queue as ``count`` dispatchers; ``coalesce``: each
    sending the images of tasks claimed together as one call per model."""
    path = folder / f"dispatchers-{count}{'-coalesced' if coalesce else ''}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"args:\n  queue:\n    dispatchers: {count}\n    coalesce_calls: {str(coalesce).lower()}\n"
    )
    return path


def run_platform(
    images: list[bytes],
    concurrency: int,
    config: Path | None,
    ray_env: Path | None,
    database: str,
    full: bool = True,
    overlays: list[Path] | None = None,
    users: int = 1,
    address: str | None = None,
) -> dict[str, Any]:
    """Both paths on one platform; with ``full``, also at rest, idle latency and batches.
    ``overlays``: laid over the config (bench/noop.yaml: the no-op models); ``users``: how
    many users share the load's requests, in turn; ``address``: a running Ray cluster's."""

    out: dict[str, Any] = {"database": database, "users": users}
    with local_platform(f"bench_{database}", config, ray_env, database, overlays, address) as (
        base,
        first,
        env,
    ):
        headers: Headers = first
        if users > 1:
            names = [f"bench{i}" for i in range(1, users)]
            headers = [first, *log_in_users(base, env["PRIMITIVES_DATABASE_URL"], names)]
        asyncio.run(platform_load(base, headers, images[:16], 8))  # warm every code path
        asyncio.run(platform_sync_load(base, headers, images[:16], 8))
        time.sleep(5)
        if full:
            rest_s = 10.0
            before = cpu.sample()
            time.sleep(rest_s)
            at_rest = cpu.cpu_by_group(before, cpu.sample())
            out["at_rest"] = {
                "pss_mib": cpu.memory_pss_mib(),
                "core_pct": round(100 * sum(at_rest.values()) / rest_s, 2),
                "core_pct_by_group": {g: round(100 * s / rest_s, 2) for g, s in at_rest.items()},
            }
            idle = [
                asyncio.run(platform_load(base, headers, [image], 1))["ms_p50"]
                for image in images[:10]
            ]
            out["idle_ms_p50"] = round(statistics.median(idle), 2)
            idle_sync = [
                asyncio.run(platform_sync_load(base, headers, [image], 1))["ms_p50"]
                for image in images[:10]
            ]
            out["idle_sync_ms_p50"] = round(statistics.median(idle_sync), 2)
        out["load"] = measured_load(platform_load(base, headers, images, concurrency))
        out["sync"] = measured_load(platform_sync_load(base, headers, images, concurrency))
        if full:
            out["batch_submit"] = asyncio.run(batch_submit_load(base, first, images, 8, 4))
        out["queue"] = queue_status(env["PRIMITIVES_QUEUE_ACTOR_NAME"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="Serve config to deploy (default serve_config.yaml)",
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        action="append",
        default=[],
        help="config overlay to merge over it (e.g. config/gpu.yaml)",
    )
    parser.add_argument(
        "--ray-env",
        type=Path,
        default=None,
        help="environment of Ray's processes (default config/ray.env)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="rows to run: floor litserve minimal platform sqlite ceiling tracing (default "
        "all); "
        "dispatchers: the ceiling's dispatcher rows alone",
    )
    parser.add_argument(
        "--ceiling-images",
        type=int,
        default=1024,
        help="images of the ceiling rows (the no-op models of bench/noop.yaml)",
    )
    parser.add_argument(
        "--dispatchers",
        type=int,
        nargs="*",
        default=[],
        help="ceiling: the platform again with the queue as each of these many dispatchers",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=1,
        help="ceiling: how many users share the load of the dispatcher rows, in turn",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="ceiling: run the dispatcher rows on a local cluster of a head and these many "
        "worker nodes (config/cluster.yaml's layout)",
    )
    parser.add_argument(
        "--coalesce",
        choices=["off", "on", "both"],
        default="off",
        help="ceiling: the dispatcher rows with one handle call per task (off), one per "
        "model for the tasks claimed together (on), or each (both)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import torch

    from config.serve_config import SERVE_CONFIG_PATH, load_app_config
    from training.render import render_jpeg

    config = args.config
    if args.overlay:  # the platform deploys a file: write the merged one
        from config.serve_config import main as write_config

        config = args.out.parent / "serve_config.merged.yaml"
        write_config(
            [
                "--config",
                str(args.config or SERVE_CONFIG_PATH),
                "--out",
                str(config),
                *[a for o in args.overlay for a in ("--overlay", str(o))],
            ]
        )
    app_config = load_app_config(config)
    options = app_config.options_for(DETECTOR).get("user_config", {})
    batch = int(options.get("max_batch_size", 8))
    wait_s = float(options.get("batch_wait_timeout_s", 0.005))
    threads = int(options.get("torch_threads", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    rows = set(
        args.only or ["floor", "litserve", "minimal", "platform", "sqlite", "ceiling", "tracing"]
    )
    images = [render_jpeg(10_000 + i)[0] for i in range(args.images)]
    report: dict[str, Any] = {
        "images": len(images),
        "concurrency": args.concurrency,
        "batch": batch,
        "batch_wait_s": wait_s,
        "torch_threads": threads,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if "floor" in rows:
        report["floor"] = measure_floor(images, batch)
        log.info("floor: %s", report["floor"])
    if "litserve" in rows:
        report["litserve"] = run_litserve(images, args.concurrency, batch, wait_s, threads)
        log.info("litserve: %s", report["litserve"])
    if "minimal" in rows:
        from config.serve_config import load_ray_env

        report["minimal_serve"] = run_minimal_serve(
            images, args.concurrency, batch, wait_s, threads, {}
        )
        log.info("minimal serve, Ray's defaults: %s", report["minimal_serve"])
        report["minimal_serve_fast"] = run_minimal_serve(
            images, args.concurrency, batch, wait_s, threads, load_ray_env(args.ray_env)
        )
        log.info("minimal serve, fast path: %s", report["minimal_serve_fast"])
    if "platform" in rows:
        report["platform"] = run_platform(
            images, args.concurrency, config, args.ray_env, "postgresql"
        )
        log.info("platform: %s", report["platform"])
    if "sqlite" in rows:
        report["platform_sqlite"] = run_platform(
            images, args.concurrency, config, args.ray_env, "sqlite", full=False
        )
        log.info("platform on SQLite: %s", report["platform_sqlite"])
    if "dispatchers" in rows:  # the dispatcher rows alone
        report["ceiling"] = {
            "images": args.ceiling_images,
            "concurrency": args.concurrency,
            **dispatcher_rows(
                [render_jpeg(20_000 + i)[0] for i in range(args.ceiling_images)],
                args.concurrency,
                config,
                args.ray_env,
                args.dispatchers,
                args.users,
                args.nodes,
                COALESCE[args.coalesce],
            ),
        }
        log.info("dispatchers: %s", report["ceiling"])
    if "ceiling" in rows:
        report["ceiling"] = ceiling(
            [render_jpeg(20_000 + i)[0] for i in range(args.ceiling_images)],
            args.concurrency,
            (batch, wait_s, threads),
            config,
            args.ray_env,
            args.dispatchers,
            args.users,
            args.nodes,
            COALESCE[args.coalesce],
        )
        log.info("ceiling: %s", report["ceiling"])
    if "tracing" in rows:  # the request path's cost of traces, off and on (§E15)
        from bench.tracing import measure_tracing

        report["tracing"] = measure_tracing(images[0])
        log.info("tracing: %s", report["tracing"])
    report["ratios"] = ratios(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(report))


NOOP_OVERLAY = Path(__file__).with_name("noop.yaml")
COALESCE = {"off": [False], "on": [True], "both": [False, True]}


def ceiling(
    images: list[bytes],
    concurrency: int,
    batching: tuple[int, float, int],
    config: Path | None,
    ray_env: Path | None,
    dispatchers: list[int] | None = None,
    users: int = 1,
    nodes: int = 0,
    coalesce: list[bool] | None = None,
) -> dict[str, Any]:
    """The platform's own ceiling: every row with the no-op models (bench/noop.yaml: each
    model replica decodes the image at its input's scale and answers a fixed result), so
    what is measured is the platform's cost, not the models'. ``dispatchers``: the platform
    again with the queue as that many dispatchers, for each count (``dispatcher_rows``)."""
    dispatchers = dispatchers or []
    from config.serve_config import load_ray_env

    batch, wait_s, threads = batching
    overlays = [str(NOOP_OVERLAY)]
    out: dict[str, Any] = {"images": len(images), "concurrency": concurrency}
    minimal = (images, concurrency, batch, wait_s, threads)
    out["minimal_serve_fast"] = run_minimal_serve(*minimal, load_ray_env(ray_env), overlays)
    out["minimal_serve"] = run_minimal_serve(*minimal, {}, overlays)
    out["ray_async_inference"] = run_async_inference(
        images, concurrency, threads, load_ray_env(ray_env), overlays
    )
    out["platform"] = run_platform(
        images, concurrency, config, ray_env, "postgresql", full=False, overlays=[NOOP_OVERLAY]
    )
    out.update(
        dispatcher_rows(images, concurrency, config, ray_env, dispatchers, users, nodes, coalesce)
    )
    return out


def dispatcher_rows(
    images: list[bytes],
    concurrency: int,
    config: Path | None,
    ray_env: Path | None,
    dispatchers: list[int],
    users: int = 1,
    nodes: int = 0,
    coalesce: list[bool] | None = None,
) -> dict[str, Any]:
    """The platform with the no-op models and the queue as each count of ``dispatchers``,
    its load shared by ``users`` users; with ``nodes``, on a local cluster of a head and that
    many worker nodes (Ray's ``cluster_utils``: separate raylets on this machine) laid out as
    config/cluster.yaml says (the API and the dispatchers on the head, models on workers);
    ``coalesce``: each row with and/or without coalesced model calls (``QueueOptions``)."""
    out: dict[str, Any] = {}
    for count, coalesced in itertools.product(dispatchers, coalesce or [False]):
        overlays = [NOOP_OVERLAY]
        with local_cluster(nodes) as address:
            if address is not None:
                overlays.append(CLUSTER_OVERLAY)
            overlays.append(dispatchers_overlay(count, Path("bench/out"), coalesced))
            row = run_platform(
                images,
                concurrency,
                config,
                ray_env,
                "postgresql",
                full=False,
                overlays=overlays,
                users=users,
                address=address,
            )
        row["nodes"] = 1 + nodes
        row["coalesced"] = coalesced
        suffix = "_coalesced" if coalesced else ""
        out[f"platform_{count}_dispatchers_{users}_users_{1 + nodes}_nodes{suffix}"] = row
    return out


CLUSTER_OVERLAY = Path(__file__).parents[1] / "config" / "cluster.yaml"


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[str | None]:
    """A head and ``workers`` worker nodes on this machine (each worker offers the models'
    ``model_node`` resource); its address, or None (and no cluster) for no workers."""
    if not workers:
        yield None
        return
    from ray.cluster_utils import Cluster

    from config.settings import REPO_ROOT

    os.environ["PYTHONPATH"] = str(REPO_ROOT)  # the nodes' workers import the platform
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=2, resources={"model_node": 4})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


PEERS = (
    ("floor", "in-process floor (decode + both models, batched)"),
    ("litserve", "LitServe, same predictors, dynamic batching"),
    ("minimal_serve", "smallest Ray Serve app, Ray's defaults"),
    ("minimal_serve_fast", "smallest Ray Serve app, fast path (config/ray.env)"),
)
PATHS = (
    ("platform", "load", "platform, PostgreSQL: submit + long-poll result"),
    ("platform", "sync", "platform, PostgreSQL: one POST with Prefer: wait"),
    ("platform_sqlite", "load", "platform, SQLite: submit + long-poll result"),
    ("platform_sqlite", "sync", "platform, SQLite: one POST with Prefer: wait"),
)


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """Each platform path over each peer, and SQLite over PostgreSQL per path."""
    out: dict[str, float] = {}
    for key, path, _ in PATHS:
        rate = report.get(key, {}).get(path, {}).get("img_per_s")
        for peer, _label in PEERS:
            if rate and peer in report:
                out[f"{key}_{path}_over_{peer}"] = round(rate / report[peer]["img_per_s"], 3)
    for path in ("load", "sync"):
        pg = report.get("platform", {}).get(path, {}).get("img_per_s")
        lite = report.get("platform_sqlite", {}).get(path, {}).get("img_per_s")
        if pg and lite:
            out[f"sqlite_over_postgresql_{path}"] = round(lite / pg, 3)
    ceiling_ = report.get("ceiling", {})
    for path in ("load", "sync"):
        rate = ceiling_.get("platform", {}).get(path, {}).get("img_per_s")
        for peer in ("minimal_serve_fast", "minimal_serve", "ray_async_inference"):
            if rate and peer in ceiling_:
                out[f"ceiling_platform_{path}_over_{peer}"] = round(
                    rate / ceiling_[peer]["img_per_s"], 3
                )
    platform = report.get("platform", {})
    if "floor" in report and "idle_ms_p50" in platform:
        single = report["floor"]["single_image_ms_p50"]
        out["idle_minus_floor_single_ms"] = round(platform["idle_ms_p50"] - single, 2)
        out["idle_sync_minus_floor_single_ms"] = round(platform["idle_sync_ms_p50"] - single, 2)
    return out


def render_table(report: dict[str, Any]) -> str:
    c = report["concurrency"]
    ratios_ = report["ratios"]
    lines = [
        f"{report['images']} images, {c} clients, batch {report['batch']}, "
        f"torch threads {report['torch_threads']}, {report['cpus']} CPUs",
        "",
        "| served by | images/s | p50 ms | p95 ms |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in PEERS:
        if key in report:
            r = report[key]
            p50 = f"{r['single_image_ms_p50']} (one image)" if key == "floor" else r["ms_p50"]
            lines.append(f"| {label} | {r['img_per_s']} | {p50} | {r.get('ms_p95', '')} |")
    for key, path, label in PATHS:
        if key in report:
            r = report[key][path]
            lines.append(f"| {label} | {r['img_per_s']} | {r['ms_p50']} | {r['ms_p95']} |")
    lines += ["", "| ratio (same run) | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in ratios_.items()]
    for key, path, label in PATHS:
        if key not in report:
            continue
        r = report[key][path]
        lines += [
            "",
            f"{label}: CPU ms per task outside the models "
            f"**{r['platform_cpu_ms_per_task']}** (inside "
            f"{r['inference_cpu_ms_per_task']}); by process: "
            + ", ".join(f"{g} {v}" for g, v in r["cpu_ms_per_task_by_group"].items())
            + f"; PSS under load {r['pss_mib']} MiB",
        ]
    p = report.get("platform", {})
    if "at_rest" in p:
        rest = p["at_rest"]
        lines += [
            "",
            "| platform measure | value |",
            "| --- | --- |",
            f"| idle submit-to-result p50 ms (contract path) | {p['idle_ms_p50']} |",
            f"| idle submit-to-result p50 ms (Prefer: wait) | {p['idle_sync_ms_p50']} |",
            f"| at rest: PSS MiB (every process the platform starts) | {rest['pss_mib']} |",
            f"| at rest: % of one core | {rest['core_pct']} |",
        ]
        lines += [
            f"| at rest: % of one core, {g} | {v} |" for g, v in rest["core_pct_by_group"].items()
        ]
        b = p["batch_submit"]
        lines.append(
            f"| batch submit ({b['files_per_request']} files per request, 4 clients): "
            f"tasks accepted/s | {b['tasks_per_s']} |"
        )
    if "ceiling" in report:
        lines += ["", *render_ceiling(report["ceiling"])]
    for key, label in PEERS[2:]:
        if key in report and "cpu_s_by_group" in report[key]:
            m = report[key]
            n = max(1, m["images"] - m["errors"])
            lines += [
                "",
                f"{label}, CPU ms per image by process: "
                + ", ".join(
                    f"{g} {round(1000 * s / n, 2)}" for g, s in m["cpu_s_by_group"].items()
                ),
            ]
    return "\n".join(lines)


def render_ceiling(c: dict[str, Any]) -> list[str]:
    """The ceiling section: rates and CPU per task with the no-op models."""
    rows = [
        ("smallest Ray Serve app, fast path", c.get("minimal_serve_fast")),
        ("smallest Ray Serve app, Ray's defaults", c.get("minimal_serve")),
        (
            "Ray Serve's asynchronous inference (Celery on Redis, clients poll every 20 ms)",
            c.get("ray_async_inference"),
        ),
    ]
    for key, platform in c.items():
        if key.startswith("platform"):
            n = platform.get("queue", {}).get("dispatchers", "?")
            shape = f"{n} dispatchers"
            if platform.get("users", 1) > 1:
                shape += f", {platform['users']} users"
            if platform.get("nodes", 1) > 1:
                shape += f", {platform['nodes']} nodes"
            if platform.get("coalesced"):
                shape += ", coalesced calls"
            rows += [
                (f"platform ({shape}): submit + long-poll result", platform.get("load")),
                (f"platform ({shape}): one POST with Prefer: wait", platform.get("sync")),
            ]
    base = (c.get("minimal_serve_fast") or {}).get("img_per_s")
    lines: list[str] = [
        f"Ceiling: no-op models (bench/noop.yaml), {c['images']} images, "
        f"{c['concurrency']} clients",
        "",
        "| served by | tasks/s | over the smallest app, fast path | p50 ms | CPU ms per task "
        "outside the models | inside | by process |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in rows:
        if not r:
            continue
        ratio = round(r["img_per_s"] / base, 3) if base else ""
        groups = ", ".join(f"{g} {v}" for g, v in r.get("cpu_ms_per_task_by_group", {}).items())
        lines.append(
            f"| {label} | {r['img_per_s']} | {ratio} | {r['ms_p50']} | "
            f"{r.get('platform_cpu_ms_per_task', '')} | {r.get('inference_cpu_ms_per_task', '')} "
            f"| {groups} |"
        )
    return lines


if __name__ == "__main__":
    main()
