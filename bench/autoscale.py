"""Step load for the autoscaler: a backlog of N tasks lands at once; YOLO's replicas, the
backlog and the tasks done are sampled over time until the backlog drains and YOLO is back at
its minimum.

    python -m bench.autoscale [--tasks 600] [--check] [--plot bench/out/autoscale.png]
    python -m bench.autoscale --policy default    # Serve's own policy, for comparison

Starts its own local platform (serve_config.yaml with config/autoscale-step.yaml laid over:
the backlog policy with short delays) on a scratch PostgreSQL database. ``--check`` (make
autoscale, CI) fails unless YOLO reached its maximum within the upscale delay plus
``--load-allowance`` seconds of replica start-up, and returned to its minimum within the
downscale delay plus that allowance after the backlog drained; and it checks that reaching the
maximum proves the backlog policy: Serve's default policy, which sees only the requests in
flight (never more than the queue's width), could not have asked for that many replicas.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from config.serve_config import SERVE_CONFIG_PATH, load_app_config, read_config
from config.settings import REPO_ROOT

OVERLAY = REPO_ROOT / "config" / "autoscale-step.yaml"
MODEL = "YOLO"
POLICIES = {
    "backlog": "deployments.autoscaling:backlog_policy",
    "default": "ray.serve.autoscaling_policy:replica_queue_length_autoscaling_policy",
}


def counts(sessions: Any) -> tuple[int, int]:
    """(tasks queued or in progress, tasks done)."""
    from sqlalchemy import func, select

    from storage.models import Task

    with sessions() as db:
        rows = dict(db.execute(select(Task.status, func.count()).group_by(Task.status)).all())
    return rows.get("queued", 0) + rows.get("in progress", 0), rows.get("done", 0)


def run(tasks: int, seconds_max: float, policy: str = "backlog") -> dict[str, Any]:
    from harness.local_platform import replicas, start_local_platform, stop_local_platform
    from harness.scratch_db import create_scratch_database, drop_scratch_database
    from storage.database import make_engine, make_session_factory
    from storage.tasks import NewTasks, create_tasks
    from storage.users import create_user
    from training.render import render_jpeg

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as chosen:
        yaml.safe_dump(
            {
                "deployments": [
                    {
                        "name": MODEL,
                        "autoscaling_config": {"policy": {"policy_function": POLICIES[policy]}},
                    }
                ]
            },
            chosen,
        )
    overlays = [OVERLAY, Path(chosen.name)]
    app = load_app_config(SERVE_CONFIG_PATH, overlays=overlays)
    scaling = app.deployments[MODEL]["autoscaling_config"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as merged:
        yaml.safe_dump(read_config(SERVE_CONFIG_PATH, overlays), merged, sort_keys=False)
    url = create_scratch_database("primitives_autoscale")
    env = {
        "PRIMITIVES_DATABASE_URL": url,
        "PRIMITIVES_ENVIRONMENT": "production",
        "PRIMITIVES_JWT_SECRET": secrets.token_urlsafe(48),
        "PRIMITIVES_QUEUE_POLL_SECONDS": "0.5",
        "PRIMITIVES_QUEUE_ACTOR_NAME": f"autoscale_queue_{uuid.uuid4().hex[:6]}",
    }
    samples: list[dict[str, float]] = []
    try:
        start_local_platform(env, namespace="primitives-autoscale", config=Path(merged.name))
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        images = [render_jpeg(30_000 + i)[0] for i in range(16)]
        with sessions() as db:
            user = create_user(db=db, username="step", password="step-load-pw")
            # One transaction: the whole backlog lands at one moment.
            create_tasks(
                db=db,
                user_id=user.id,
                new=NewTasks(
                    detection_model_id=1,
                    classification_model_id=3,
                    images=[(images[i % len(images)], "image/jpeg") for i in range(tasks)],
                ),
            )
        started = time.monotonic()
        drained_at = None
        while time.monotonic() - started < seconds_max:
            waiting, done = counts(sessions)
            samples.append(
                {
                    "t": round(time.monotonic() - started, 2),
                    "waiting": waiting,
                    "done": done,
                    "replicas": replicas(MODEL, ("RUNNING", "STARTING")),
                    "running": replicas(MODEL),
                }
            )
            if waiting == 0 and drained_at is None:
                drained_at = samples[-1]["t"]
            if drained_at is not None and samples[-1]["replicas"] <= scaling["min_replicas"]:
                break
            time.sleep(0.5)
        engine.dispose()
    finally:
        stop_local_platform(env)
        drop_scratch_database(url)
        Path(merged.name).unlink(missing_ok=True)
        Path(chosen.name).unlink(missing_ok=True)
    # Serve's default policy sees only the requests in flight, and the queue never has more
    # than its width in flight: the most replicas it could ask for, whatever the backlog.
    width = app.args.queue.concurrency
    default_most = math.ceil(width / scaling["target_ongoing_requests"])
    return {
        "policy": policy,
        "queue_width": width,
        "target_ongoing_requests": scaling["target_ongoing_requests"],
        "default_policy_most_replicas": default_most,
        **summarize(samples, scaling, tasks, drained_at),
    }


def summarize(
    samples: list[dict[str, float]], scaling: dict[str, Any], tasks: int, drained_at: float | None
) -> dict[str, Any]:
    top = scaling["max_replicas"]
    reached_max = next((s["t"] for s in samples if s["running"] >= top), None)
    back_to_min = next(
        (
            s["t"]
            for s in samples
            if drained_at is not None
            and s["t"] >= drained_at
            and s["replicas"] <= scaling["min_replicas"]
        ),
        None,
    )
    # Throughput by how many YOLO replicas ran: tasks done between samples, per second.
    by_replicas: dict[int, list[float]] = {}
    for a, b in zip(samples, samples[1:], strict=False):
        if drained_at is not None and a["t"] >= drained_at:
            break
        by_replicas.setdefault(int(a["running"]), []).extend(
            [(b["done"] - a["done"]) / max(1e-6, b["t"] - a["t"])]
        )
    return {
        "tasks": tasks,
        "min_replicas": scaling["min_replicas"],
        "max_replicas": top,
        "upscale_delay_s": scaling["upscale_delay_s"],
        "downscale_delay_s": scaling["downscale_delay_s"],
        "max_running_at_s": reached_max,
        "drained_at_s": drained_at,
        "back_to_min_at_s": back_to_min,
        "back_to_min_after_drain_s": None
        if back_to_min is None or drained_at is None
        else round(back_to_min - drained_at, 2),
        "done_per_s_by_running_replicas": {
            k: round(sum(v) / len(v), 2) for k, v in sorted(by_replicas.items())
        },
        "samples": samples,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.step(
        t, [s["replicas"] for s in samples], where="post", label="YOLO replicas starting or running"
    )
    top.step(t, [s["running"] for s in samples], where="post", label="YOLO replicas running")
    top.set_ylabel("replicas")
    top.legend(loc="upper right")
    bottom.plot(t, [s["waiting"] for s in samples], label="tasks waiting")
    rate = [0.0] + [
        (b["done"] - a["done"]) / max(1e-6, b["t"] - a["t"])
        for a, b in zip(samples, samples[1:], strict=False)
    ]
    twin = bottom.twinx()
    twin.plot(t, rate, color="tab:green", alpha=0.6, label="done per second")
    bottom.set_xlabel("seconds after the backlog landed")
    bottom.set_ylabel("tasks waiting")
    twin.set_ylabel("done per second")
    bottom.legend(loc="upper left")
    twin.legend(loc="upper right")
    fig.suptitle(f"Step load: {report['tasks']} tasks at once ({report['policy']} policy)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument(
        "--load-allowance",
        type=float,
        default=90.0,
        help="seconds a replica may take to start (model load on a busy box)",
    )
    parser.add_argument("--policy", choices=sorted(POLICIES), default="backlog")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out" / "autoscale.json")
    args = parser.parse_args(argv)
    report = run(args.tasks, args.seconds, args.policy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if not args.check:
        return 0
    up_limit = report["upscale_delay_s"] + args.load_allowance
    down_limit = report["downscale_delay_s"] + args.load_allowance
    problems = []
    if report["default_policy_most_replicas"] >= report["max_replicas"]:
        problems.append(
            f"inconclusive: with the queue's width {report['queue_width']} and a target of "
            f"{report['target_ongoing_requests']} ongoing requests, Serve's default policy "
            f"alone could reach {report['max_replicas']} replicas; raise the target or the "
            "maximum so that only the backlog can"
        )
    if report["max_running_at_s"] is None or report["max_running_at_s"] > up_limit:
        problems.append(
            f"YOLO did not reach {report['max_replicas']} running replicas within {up_limit:g} s"
        )
    if (
        report["back_to_min_after_drain_s"] is None
        or report["back_to_min_after_drain_s"] > down_limit
    ):
        problems.append(
            f"YOLO was not back to {report['min_replicas']} within "
            f"{down_limit:g} s of the backlog draining"
        )
    print("autoscale: " + ("; ".join(problems) if problems else "OK"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
