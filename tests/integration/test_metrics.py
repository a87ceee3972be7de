"""The platform's metrics (docs/api.md §E6) on the node's Prometheus endpoint, after a few
tasks: what a Prometheus scraping through Ray's service discovery would read."""

from __future__ import annotations

import re
import threading
import time

import httpx

from tests.integration.conftest import wait_finished
from tests.integration.platform_helpers import paused_queue, submit
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


def _series(samples, **labels: str) -> dict[frozenset, float]:
    """The samples carrying these labels, by their whole label set (one series each)."""
    return {
        frozenset(got.items()): v
        for got, v in samples
        if all(got.get(k) == w for k, w in labels.items())
    }


def _page(platform) -> str:
    return httpx.get(f"http://127.0.0.1:{platform.metrics_port}/metrics", timeout=10).text


def _counts(page: str) -> dict[str, dict[frozenset, float]]:
    """The counters this test moves, series by series (a series is one process's, told apart
    by its labels): the platform is shared by the whole session, so the test asserts how far
    they grow (``_Growth``)."""
    tasks = _samples(page, "ray_primitives_tasks_total")
    stages = _samples(page, "ray_primitives_task_seconds_count")
    batches = _samples(page, "ray_primitives_batch_size_count")
    return {
        "done": _series(tasks, outcome="done"),
        "canceled": _series(tasks, outcome="canceled"),
        **{f"stage {s}": _series(stages, stage=s) for s in ("wait", "inference", "total")},
        "batches YOLO": _series(batches, model="YOLO"),
        "batches model_v1": _series(batches, model="model_v1"),
    }


def _increase(before: dict[frozenset, float], now: dict[frozenset, float]) -> float:
    """How far a counter grew between two reads, series by series, as Prometheus reads it: a
    series that fell was reset and grew by all it holds now, a series first seen grew from 0,
    and a series gone (its process dead) adds nothing."""
    grown = 0.0
    for key, value in now.items():
        last = before.get(key, 0.0)
        grown += value - last if value >= last else value
    return grown


# What one cancelled and three finished tasks add to the counters of ``_counts``.
EXPECTED = {
    "done": 3,
    "canceled": 1,
    "stage wait": 3,
    "stage inference": 3,
    "stage total": 3,
    "batches YOLO": 1,
    "batches model_v1": 1,
}


class _Growth:
    """How far each counter of ``_counts`` grows while this runs, read every 0.2 s in a
    thread, series by series (``_increase``): Ray's metrics agent stops exporting a dead
    process's series 120 s after its last report (RAY_WORKER_TIMEOUT_S), and the queue actor
    that test_faults kills drops its series mid-test; a sum over the series would fall then,
    hiding what the other series grew in the same 0.2 s."""

    def __init__(self, platform) -> None:
        self._platform = platform
        self.page = _page(platform)
        self._last = _counts(self.page)
        self.grown = dict.fromkeys(self._last, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                page = _page(self._platform)
            except httpx.HTTPError:
                continue  # the next read counts what this one missed
            now = _counts(page)
            self.grown = {k: g + _increase(self._last[k], now[k]) for k, g in self.grown.items()}
            # A series missing from one page keeps its last value (Prometheus compares with the
            # series' last sample, not with 0, when it comes back).
            self._last = {k: {**self._last[k], **now[k]} for k in now}
            self.page = page

    def __enter__(self) -> _Growth:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _quiet(database_url: str, timeout: float = 180.0) -> None:
    """Until no task of any test is queued or running, and one export interval more: the
    counters then grow by this test's tasks alone (earlier tests leave work that finishes
    later, the more so on a busy machine)."""
    from sqlalchemy import func, select

    from storage.database import make_engine, make_session_factory
    from storage.models import Task, TaskStatus

    engine = make_engine(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with make_session_factory(engine)() as db:
                unsettled = db.scalar(
                    select(func.count())
                    .select_from(Task)
                    .where(Task.status.in_([TaskStatus.queued.value, TaskStatus.in_progress.value]))
                )
            if not unsettled:
                break
            assert time.monotonic() < deadline, f"{unsettled} tasks of earlier tests still run"
            time.sleep(0.5)
    finally:
        engine.dispose()
    time.sleep(2.5)  # RAY_metrics_report_interval_ms is 2000 on the tests' platform


def test_task_counts_stages_backlog_and_batches_are_exported(
    platform, http, user_headers, database_url
):
    headers = user_headers()
    _quiet(database_url)
    with _Growth(platform) as growth:
        _cancel_one_and_finish_three(http, headers)
        _wait_for(growth)
    grown, page = growth.grown, growth.page
    assert grown["done"] == 3 and grown["canceled"] == 1, grown
    assert all(grown[k] >= n for k, n in EXPECTED.items()), grown
    depth = _samples(page, "ray_primitives_queue_depth")
    assert {labels["model"] for labels, _ in depth} >= {"YOLO", "SSD", "model_v1"}


def _cancel_one_and_finish_three(http, headers) -> None:
    with paused_queue():
        canceled = submit(http, headers, render_jpeg(69)[0])
        assert http.post(f"/api/tasks/{canceled}/cancel", headers=headers).status_code == 200
    done = [submit(http, headers, render_jpeg(70 + i)[0]) for i in range(3)]
    assert set(wait_finished(http, headers, done).values()) == {"done"}


def _wait_for(growth: _Growth) -> None:
    """Until every counter grew as far as expected (Ray exports every few seconds), 60 s at
    most."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(growth.grown[k] >= n for k, n in EXPECTED.items()):
            break
        time.sleep(0.5)


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
