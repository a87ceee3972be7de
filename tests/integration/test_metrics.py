"""The platform's metrics (docs/api.md §E6) on the node's Prometheus endpoint, after a few
tasks: what a Prometheus scraping through Ray's service discovery would read."""

from __future__ import annotations

import re
import time

import httpx
import ray

from tests.integration.conftest import wait_finished
from tests.integration.test_platform import queue_actor, submit
from training.render import render_jpeg


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in a Prometheus text page."""
    found = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            found.append((labels, float(match.group(2))))
    return found


def _total(samples, **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == w for k, w in labels.items()))


def _page(platform) -> str:
    return httpx.get(f"http://127.0.0.1:{platform.metrics_port}/metrics", timeout=10).text


def _counts(page: str) -> dict[str, float]:
    """The counters this test moves, as totals: the platform is shared by the whole session,
    so the test reads them before and asserts the difference."""
    tasks = _samples(page, "ray_primitives_tasks_total")
    stages = _samples(page, "ray_primitives_task_seconds_count")
    batches = _samples(page, "ray_primitives_batch_size_count")
    return {
        "done": _total(tasks, outcome="done"),
        "canceled": _total(tasks, outcome="canceled"),
        **{f"stage {s}": _total(stages, stage=s) for s in ("wait", "inference", "total")},
        "batches YOLO": _total(batches, model="YOLO"),
        "batches model_v1": _total(batches, model="model_v1"),
    }


def test_task_counts_stages_backlog_and_batches_are_exported(platform, http, user_headers):
    headers = user_headers()
    before = _counts(_page(platform))
    ray.get(queue_actor().pause.remote())
    try:
        canceled = submit(http, headers, render_jpeg(69)[0])
        assert http.post(f"/api/tasks/{canceled}/cancel", headers=headers).status_code == 200
    finally:
        ray.get(queue_actor().resume.remote())
    done = [submit(http, headers, render_jpeg(70 + i)[0]) for i in range(3)]
    assert set(wait_finished(http, headers, done).values()) == {"done"}
    expected = {
        "done": 3,
        "canceled": 1,
        "stage wait": 3,
        "stage inference": 3,
        "stage total": 3,
        "batches YOLO": 1,
        "batches model_v1": 1,
    }
    deadline = time.monotonic() + 60
    while True:
        page = _page(platform)
        grown = {k: v - before[k] for k, v in _counts(page).items()}
        if all(grown[k] >= n for k, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert grown["done"] == 3 and grown["canceled"] == 1, grown
    assert all(grown[k] >= n for k, n in expected.items()), grown
    depth = _samples(page, "ray_primitives_queue_depth")
    assert {labels["model"] for labels, _ in depth} >= {"YOLO", "SSD", "model_v1"}


def test_prometheus_finds_the_nodes_through_rays_discovery_file(
    platform, tmp_path, http, user_headers
):
    """The shipped observability/prometheus.yml, run by a real Prometheus (as make observe
    does), scrapes the platform's metrics."""
    import shutil
    import subprocess

    from config.settings import REPO_ROOT
    from harness.local_platform import free_port

    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: make test installs it"
    headers = user_headers()
    task = submit(http, headers, render_jpeg(79)[0])
    wait_finished(http, headers, [task])
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={REPO_ROOT / 'observability' / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, result = time.monotonic() + 90, list[dict]()
        while not result and time.monotonic() < deadline:
            time.sleep(2)
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'ray_primitives_tasks_total{outcome="done"}'},
                    timeout=5,
                ).json()
            except httpx.HTTPError:
                continue
            result = answer.get("data", {}).get("result", [])
        assert result, "Prometheus never scraped ray_primitives_tasks_total"
        assert sum(float(r["value"][1]) for r in result) >= 1
    finally:
        server.terminate()
        server.wait(timeout=30)
