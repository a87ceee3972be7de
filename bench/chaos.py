"""Chaos: every process of the platform SIGKILLed in turn under load (``make chaos``, issue 49).

Usage: ``python -m bench.chaos [--rounds 3] [--max-gap 5]``. Starts the platform as ``make
run`` does (one node, the shipped models, Ray's fast path from config/ray.env) on a scratch
PostgreSQL database. While clients submit through the Python client and a probe asks ``GET
/api/models`` every 0.1 s, it kills each process of ``TARGETS`` in turn, ``--rounds`` times,
then once more with Ray's Python proxy in place of HAProxy (``PYTHON_PROXY_TARGETS``).

For each kill it records the **gap**: from the kill to the last probe that failed (0 when
none did), and waits for the process to be back before the next. At the end every accepted
task must be done with exactly one result, and the clients must have seen no error (they
retry through gaps). Prints a table; exits 1 when a gap passes ``--max-gap`` seconds or a
task is lost, failed, or done twice, or a client saw an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from primitives_client import Client, PrimitivesError

log = logging.getLogger("bench.chaos")

PROBE_EVERY_S = 0.1
# Longer than the ingress's own 2 s limit on asking a model replica about itself, so that an
# answer saying a model is not ready counts as an answer.
PROBE_TIMEOUT_S = 5.0
# After a kill: the API must have answered this long in a row before the gap is read.
STEADY_S = 3.0
# A process not back this long after its kill is a failure of its own.
BACK_WITHIN_S = 120.0
SUBMITTERS = 3
SUBMIT_EVERY_S = 0.25  # per submitter: about 12 tasks/s in all, within the models' capacity


def _actors(class_suffix: str) -> list[dict[str, Any]]:
    """The live actors whose class name ends with ``class_suffix`` (the GCS's actor table)."""
    from ray._private.state import actors

    return [
        a
        for a in actors().values()
        if a["State"] == "ALIVE" and a["ActorClassName"].endswith(class_suffix) and a["Pid"]
    ]


def _actor_pid(class_suffix: str) -> Callable[[], int | None]:
    def find() -> int | None:
        found = _actors(class_suffix)
        return int(found[0]["Pid"]) if found else None

    return find


def _haproxy_pid() -> int | None:
    """The ``haproxy`` binary HAProxy's manager actor runs."""
    for manager in _actors("HAProxyManager"):
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(int(manager["Pid"])).children(recursive=True):
                if "haproxy" in child.name():
                    return int(child.pid)
    return None


# (what, how to find its pid now), in the order they are killed.
TARGETS: list[tuple[str, Callable[[], int | None]]] = [
    ("haproxy binary", _haproxy_pid),
    ("HAProxy manager actor", _actor_pid("HAProxyManager")),
    ("Serve controller", _actor_pid("ServeController")),
    ("keeper", _actor_pid(":Keeper")),
    ("ingress replica", _actor_pid(":Ingress")),
    ("dispatcher", _actor_pid("TaskQueue")),
    ("model replica (YOLO)", _actor_pid(":YOLO")),
    ("webhook sender", _actor_pid("WebhookSenderActor")),
]
PYTHON_PROXY_TARGETS: list[tuple[str, Callable[[], int | None]]] = [
    ("Python proxy actor", _actor_pid("ProxyActor")),
]


@dataclass
class Probe:
    """``GET /api/models`` every 0.1 s: when each answer came and whether it was good."""

    base: str
    headers: dict[str, str]
    seen: list[tuple[float, bool]] = field(default_factory=list)
    why: list[str] = field(default_factory=list)  # the latest failures, why
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(
            base_url=self.base, headers=self.headers, timeout=PROBE_TIMEOUT_S
        ) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = http.get("/api/models")
                    ok = response.status_code == 200 and "detection_models" in response.json()
                    why = f"{response.status_code} {response.text[:80]}"
                except (httpx.HTTPError, ValueError) as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                self.seen.append((started, ok))
                if not ok:
                    self.why = [*self.why[-4:], why]
                self.stop.wait(max(0.0, PROBE_EVERY_S - (time.monotonic() - started)))

    def gap_after(self, moment: float) -> tuple[float, int]:
        """Seconds from ``moment`` to the last failed probe after it, and how many failed."""
        failed = [t for t, ok in self.seen if t >= moment and not ok]
        return (round(max(failed) - moment, 2) if failed else 0.0), len(failed)

    def steady_since(self, moment: float, seconds: float) -> bool:
        """Every probe of the last ``seconds`` (all after ``moment``) answered."""
        now = time.monotonic()
        recent = [ok for t, ok in self.seen if t >= max(moment, now - seconds)]
        return now - moment >= seconds and bool(recent) and all(recent)


@dataclass
class Submitters:
    """Clients submitting through the Python client (which retries through gaps)."""

    base: str
    token: str
    images: list[bytes]
    accepted: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, index: int) -> None:
        with Client(self.base, self.token, retry_for=120) as client:
            n = index
            while not self.stop.is_set():
                try:
                    task = client.submit(self.images[n % len(self.images)])
                    self.accepted.append(int(task["id"]))
                except (PrimitivesError, httpx.HTTPError) as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                n += SUBMITTERS
                self.stop.wait(SUBMIT_EVERY_S)


@contextlib.contextmanager
def running(target: Callable[..., None], *args: Any) -> Iterator[None]:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=150)


@dataclass
class CliSubmission:
    """``primitives submit IMAGE --wait`` started into a gap: the CLI must ride it out."""

    base: str
    token: str
    image: Path

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "primitives_client.cli", "submit", str(self.image), "--wait"],
            env={**os.environ, "PRIMITIVES_URL": self.base, "PRIMITIVES_TOKEN": self.token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def outcome(process: subprocess.Popen[str]) -> dict[str, Any]:
        """Its exit status and the task it printed (the result of a done task)."""
        try:
            out, err = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            return {"cli_error": "still running after 180 s"}
        if process.returncode != 0:
            return {"cli_error": f"exit {process.returncode}: {err.strip()[-300:]}"}
        body = json.loads(out)
        return {"cli_task": body["id"], "cli_status": body["status"]}


def kill_and_watch(
    what: str,
    find: Callable[[], int | None],
    probe: Probe,
    cli: CliSubmission | None = None,
) -> dict[str, Any]:
    """SIGKILL the process, wait for the API to be steady and the process back; the gap.
    ``cli``: a CLI submission started just after the kill, into the gap."""
    pid = find()
    if pid is None:
        return {"what": what, "error": "not found"}
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    submission = cli.start() if cli is not None else None
    back: float | None = None
    while time.monotonic() - killed < BACK_WITHIN_S:
        if back is None:
            with contextlib.suppress(Exception):
                now = find()
                if now is not None and now != pid:
                    back = round(time.monotonic() - killed, 1)
        if back is not None and probe.steady_since(killed, STEADY_S):
            break
        time.sleep(0.5)
    gap, failed = probe.gap_after(killed)
    row = {"what": what, "gap_s": gap, "failed_probes": failed, "back_s": back}
    if submission is not None:
        row.update(CliSubmission.outcome(submission))
    log.info("%s", row)
    return row


def settle(database_url: str, ids: list[int], within: float = 300.0) -> dict[str, Any]:
    """Wait for the accepted tasks to settle; how they ended, and any done twice."""
    from sqlalchemy import func, select

    from storage.database import make_engine, make_session_factory
    from storage.models import Task, TaskResult

    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    deadline = time.monotonic() + within
    try:
        while True:
            with sessions() as db:
                statuses = dict(
                    db.execute(
                        select(Task.status, func.count())
                        .where(Task.id.in_(ids))
                        .group_by(Task.status)
                    ).all()
                )
                results = dict(
                    db.execute(
                        select(TaskResult.task_id, func.count())
                        .where(TaskResult.task_id.in_(ids))
                        .group_by(TaskResult.task_id)
                    ).all()
                )
            unsettled = statuses.get("queued", 0) + statuses.get("in progress", 0)
            if not unsettled or time.monotonic() > deadline:
                return {
                    "accepted": len(ids),
                    "statuses": statuses,
                    "missing": len(ids) - sum(statuses.values()),
                    "done_twice": sum(1 for n in results.values() if n > 1),
                }
            time.sleep(2)
    finally:
        engine.dispose()


def chaos_run(
    targets: list[tuple[str, Callable[[], int | None]]],
    rounds: int,
    ray_env: Path | None,
    name: str,
) -> dict[str, Any]:
    """One platform, ``rounds`` rounds of killing each target in turn under load."""
    from bench.run import local_platform
    from harness.local_platform import stop_orphaned_haproxy
    from training.render import render_jpeg

    images = [render_jpeg(30_000 + i)[0] for i in range(16)]
    kills: list[dict[str, Any]] = []
    started = time.time()
    with (
        contextlib.ExitStack() as cleanup,
        local_platform(name, ray_env=ray_env) as (base, headers, env),
    ):
        cleanup.callback(stop_orphaned_haproxy, since=started)
        token = headers["Authorization"].removeprefix("Bearer ")
        probe = Probe(base, headers)
        load = Submitters(base, token, images)
        with contextlib.ExitStack() as stack:
            stack.enter_context(running(probe.run))
            for index in range(SUBMITTERS):
                stack.enter_context(running(load.run, index))
            # Unwound first: the threads are told to stop before they are joined.
            stack.callback(probe.stop.set)
            stack.callback(load.stop.set)
            time.sleep(10)  # the load runs before the first kill
            if not probe.steady_since(0.0, 5.0):
                raise RuntimeError(
                    f"the API does not answer the probe before any kill: {probe.why}"
                )
            image = Path("bench/out") / f"{name}-cli.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(images[0])
            cli = CliSubmission(base, token, image)
            for round_ in range(rounds):
                for what, find in targets:
                    # Into each proxy's gap, a submission from the CLI as well.
                    during = cli if "proxy" in what.lower() else None
                    kill = kill_and_watch(what, find, probe, during)
                    kills.append({"round": round_ + 1, **kill})
                    if "cli_task" in kill:
                        load.accepted.append(int(kill["cli_task"]))
            time.sleep(5)
            load.stop.set()
        tasks = settle(env["PRIMITIVES_DATABASE_URL"], list(load.accepted))
    return {"kills": kills, "tasks": tasks, "client_errors": load.errors}


def ray_env_file(base: Path | None, folder: Path, **changes: str) -> Path:
    """``base`` (config/ray.env by default) with ``changes`` (NAME=value lines replaced or
    added)."""
    from config.settings import REPO_ROOT

    lines = [
        line
        for line in (base or REPO_ROOT / "config" / "ray.env").read_text().splitlines()
        if line.partition("=")[0] not in changes
    ]
    path = folder / "ray.env"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in changes.items())]) + "\n")
    return path


def render(report: dict[str, Any]) -> str:
    lines = [
        "| process killed | gap, each round (s) | failed probes | back after (s) |",
        "| --- | --- | --- | --- |",
    ]
    by_what: dict[str, list[dict[str, Any]]] = {}
    for run in report["runs"]:
        for kill in run["kills"]:
            by_what.setdefault(kill["what"], []).append(kill)
    for what, kills in by_what.items():
        gaps = " / ".join(str(k.get("gap_s", k.get("error"))) for k in kills)
        failed = sum(k.get("failed_probes", 0) for k in kills)
        backs = [k["back_s"] for k in kills if k.get("back_s") is not None]
        back = statistics.median(backs) if backs else "never"
        lines.append(f"| {what} | {gaps} | {failed} | {back} |")
    for run in report["runs"]:
        cli = [k for k in run["kills"] if "cli_status" in k or "cli_error" in k]
        done = sum(1 for k in cli if k.get("cli_status") == "done")
        lines.append("")
        lines.append(
            f"{run['name']}: tasks {run['tasks']}, client errors {len(run['client_errors'])}, "
            f"CLI submissions into the proxy's gaps {len(cli)} ({done} done)"
        )
    return "\n".join(lines)


def failures(report: dict[str, Any], max_gap: float) -> list[str]:
    out = []
    for run in report["runs"]:
        for kill in run["kills"]:
            if "error" in kill:
                out.append(f"{kill['what']}: {kill['error']}")
            elif "cli_error" in kill:
                out.append(f"{kill['what']} (round {kill['round']}): CLI {kill['cli_error']}")
            elif kill.get("cli_status", "done") != "done":
                out.append(f"{kill['what']} (round {kill['round']}): CLI task {kill['cli_status']}")
            elif kill["gap_s"] > max_gap:
                out.append(f"{kill['what']} (round {kill['round']}): API gone {kill['gap_s']} s")
            elif kill["back_s"] is None:
                out.append(f"{kill['what']} (round {kill['round']}): not back")
        tasks = run["tasks"]
        settled_badly = {s: n for s, n in tasks["statuses"].items() if s != "done"}
        if tasks["missing"] or tasks["done_twice"] or settled_badly:
            out.append(f"{run['name']}: tasks {tasks}")
        if run["client_errors"]:
            out.append(f"{run['name']}: client errors {run['client_errors'][:5]}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-gap", type=float, default=5.0)
    parser.add_argument(
        "--ray-env", type=Path, default=None, help="Ray's environment (default config/ray.env)"
    )
    parser.add_argument(
        "--no-python-proxy", action="store_true", help="skip the run on Ray's Python proxy"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="kill only the processes whose name contains one of these words",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/chaos.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from config.settings import REPO_ROOT

    def chosen(
        targets: list[tuple[str, Callable[[], int | None]]],
    ) -> list[tuple[str, Callable[[], int | None]]]:
        if args.only is None:
            return targets
        return [t for t in targets if any(w.lower() in t[0].lower() for w in args.only)]

    runs = [{"name": "fast path", **chaos_run(chosen(TARGETS), args.rounds, args.ray_env, "chaos")}]
    if not args.no_python_proxy:
        python_proxy = ray_env_file(
            args.ray_env,
            args.out.parent / "chaos-python-proxy",
            RAY_SERVE_ENABLE_HA_PROXY="0",
            RAY_SERVE_THROUGHPUT_OPTIMIZED="0",
        )
        runs.append(
            {
                "name": "Python proxy",
                **chaos_run(chosen(PYTHON_PROXY_TARGETS), args.rounds, python_proxy, "chaos_py"),
            }
        )
    report = {"runs": runs, "max_gap_s": args.max_gap, "repo": str(REPO_ROOT)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    problems = failures(report, args.max_gap)
    for problem in problems:
        print(f"FAIL {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
